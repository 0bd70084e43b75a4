package config

import (
	"fmt"
	"maps"
	"math"
	"net"
	"net/http"
	"net/netip"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	faultv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	connlimitv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// Envoy's defaults for the fields the internal form fills in, as its API documents them:
// RouteAction.timeout (15s) and RetryPolicy.num_retries (1), RetryBackOff.base_interval (25ms) and
// max_interval (10 × base_interval) in api/envoy/config/route/v3/route_components.proto;
// Cluster.connect_timeout (5s) in api/envoy/config/cluster/v3/cluster.proto;
// HttpProtocolOptions.idle_timeout (1h) in api/envoy/config/core/v3/protocol.proto;
// Listener.per_connection_buffer_limit_bytes (1 MiB) in api/envoy/config/listener/v3/listener.proto.
const (
	defaultRouteTimeout   = 15 * time.Second
	defaultNumRetries     = 1
	defaultBaseInterval   = 25 * time.Millisecond
	maxIntervalFactor     = 10 // default max_interval = 10 × base_interval
	defaultConnectTimeout = 5 * time.Second
	defaultIdleTimeout    = time.Hour // core.v3.HttpProtocolOptions.idle_timeout
	// defaultStreamIdleTimeout is the HCM stream_idle_timeout's (StreamIdleTimeoutMs,
	// source/extensions/filters/network/http_connection_manager/config.h).
	defaultStreamIdleTimeout = 5 * time.Minute
	defaultBufferLimit       = 1 << 20 // listener.v3.Listener.per_connection_buffer_limit_bytes
	defaultWeight            = 1
	maxPort                  = 65535
)

// converter turns a bootstrap that passed the subset and PGV checks into the internal form, collecting
// semantic errors by path.
type converter struct {
	errs []*Error
	// ads is whether resources may come over ADS (rds, EDS clusters): the bootstrap has
	// dynamic_resources.ads_config, or the resource came over xDS.
	ads bool
}

func (c *converter) fail(path, format string, args ...any) {
	c.errs = append(c.errs, &Error{Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (c *converter) bootstrap(b *bootstrapv3.Bootstrap) *Bootstrap {
	out := &Bootstrap{Admin: c.admin(b.GetAdmin(), "admin")}
	// Envoy deprecates the bootstrap's tracing for the HCM's tracing.provider, but still honours it; it is
	// the one tracer configuration meshproof reads (the proxy has a single exporter).
	//lint:ignore SA1019 see above
	out.Tracing = c.tracing(b.GetTracing(), "tracing")
	if n := b.GetNode(); n != nil {
		out.Node = &Node{ID: n.GetId(), Cluster: n.GetCluster()}
	}
	resources := b.GetStaticResources()
	c.ads = b.GetDynamicResources().GetAdsConfig() != nil
	out.Clusters = c.clusters(resources.GetClusters(), "static_resources.clusters")
	out.Dynamic = c.dynamicResources(b.GetDynamicResources(), "dynamic_resources", out.Clusters)
	names := map[string]bool{}
	for _, cl := range out.Clusters {
		names[cl.Name] = true
	}
	for i, l := range resources.GetListeners() {
		out.Listeners = append(out.Listeners, c.listener(l, indexPath("static_resources.listeners", i), names))
	}
	c.uniqueListeners(out.Listeners, "static_resources.listeners")
	return out
}

// admin converts the admin section; as in Envoy, an admin without an address is disabled.
func (c *converter) admin(a *bootstrapv3.Admin, path string) *Admin {
	if a.GetAddress() == nil {
		return nil
	}
	return &Admin{Address: c.address(a.GetAddress(), joinPath(path, "address"))}
}

// address converts a socket address to host:port. Like Envoy for listeners and STATIC clusters, it
// wants an IP address: names are not resolved.
func (c *converter) address(a *corev3.Address, path string) string {
	sa := a.GetSocketAddress()
	if sa == nil {
		c.fail(path, "required: a socket_address")
		return ""
	}
	path = joinPath(path, "socket_address")
	ip, err := netip.ParseAddr(sa.GetAddress())
	if err != nil {
		c.fail(joinPath(path, "address"), "%q is not an IP address (names are not resolved here)", sa.GetAddress())
		return ""
	}
	port := sa.GetPortValue()
	if port > maxPort {
		c.fail(joinPath(path, "port_value"), "%d is out of range 0..%d (0 picks a free port)", port, maxPort)
		return ""
	}
	return net.JoinHostPort(ip.String(), strconv.FormatUint(uint64(port), 10))
}

func (c *converter) uniqueListeners(ls []Listener, path string) {
	first := map[string]int{}
	for i, l := range ls {
		if l.Name == "" {
			continue
		}
		if j, dup := first[l.Name]; dup {
			c.fail(joinPath(indexPath(path, i), "name"), "duplicate listener name %q (also listeners[%d])", l.Name, j)
			continue
		}
		first[l.Name] = i
	}
}

// listener converts a listener: one filter chain whose only network filter is the HCM.
func (c *converter) listener(l *listenerv3.Listener, path string, clusters map[string]bool) Listener {
	out := Listener{Name: l.GetName(), BufferLimit: defaultBufferLimit}
	if v := l.GetPerConnectionBufferLimitBytes(); v != nil {
		out.BufferLimit = v.GetValue()
	}
	if l.GetAddress() == nil {
		c.fail(joinPath(path, "address"), "required")
	} else {
		out.Address = c.address(l.GetAddress(), joinPath(path, "address"))
	}
	chains := l.GetFilterChains()
	if len(chains) != 1 {
		c.fail(joinPath(path, "filter_chains"), "want exactly one filter chain, got %d", len(chains))
		return out
	}
	out.TLS = c.downstreamTLS(chains[0].GetTransportSocket(), joinPath(indexPath(joinPath(path, "filter_chains"), 0), "transport_socket"))
	path = joinPath(indexPath(joinPath(path, "filter_chains"), 0), "filters")
	filters := chains[0].GetFilters()
	if n := len(filters); n == 0 || n > 2 {
		c.fail(path, "want the HTTP connection manager, optionally after a connection_limit filter, got %d network filters", n)
		return out
	}
	if len(filters) == 2 {
		lpath := joinPath(indexPath(path, 0), "typed_config")
		if cl, ok := unpack[*connlimitv3.ConnectionLimit](c, filters[0].GetTypedConfig(), lpath); ok {
			if cl.GetMaxConnections() == nil {
				c.fail(joinPath(lpath, "max_connections"), "required: the most connections the listener holds (at least 1)")
			}
			out.ConnectionLimit = &ConnectionLimit{StatPrefix: cl.GetStatPrefix(), MaxConnections: cl.GetMaxConnections().GetValue()}
		}
	}
	path = joinPath(indexPath(path, len(filters)-1), "typed_config")
	hcm, ok := unpack[*hcmv3.HttpConnectionManager](c, filters[len(filters)-1].GetTypedConfig(), path)
	if !ok {
		return out
	}
	out.StatPrefix = hcm.GetStatPrefix()
	out.RequestTimeout = c.duration(hcm.GetRequestTimeout(), 0, joinPath(path, "request_timeout"))
	out.LocalReply = c.localReplyConfig(hcm.GetLocalReplyConfig(), joinPath(path, "local_reply_config"))
	out.AccessLogs = c.accessLogs(hcm.GetAccessLog(), joinPath(path, "access_log"))
	out.RequestHeadersTimeout = c.duration(hcm.GetRequestHeadersTimeout(), 0, joinPath(path, "request_headers_timeout"))
	out.IdleTimeout = c.duration(hcm.GetCommonHttpProtocolOptions().GetIdleTimeout(), defaultIdleTimeout,
		joinPath(joinPath(path, "common_http_protocol_options"), "idle_timeout"))
	out.StreamIdleTimeout = c.duration(hcm.GetStreamIdleTimeout(), defaultStreamIdleTimeout, joinPath(path, "stream_idle_timeout"))
	// max_stream_duration: unset or 0, none (HttpConnectionManagerConfig, PROTOBUF_GET_OPTIONAL_MS; a 0
	// disables it in ActiveStream::refreshDurationTimeout).
	out.MaxStreamDuration = c.duration(hcm.GetCommonHttpProtocolOptions().GetMaxStreamDuration(), 0,
		joinPath(joinPath(path, "common_http_protocol_options"), "max_stream_duration"))
	out.MaxRequestsPerConnection = hcm.GetCommonHttpProtocolOptions().GetMaxRequestsPerConnection().GetValue()
	switch {
	case hcm.GetStripMatchingHostPort() && hcm.GetStripAnyHostPort():
		// Envoy's HttpConnectionManagerConfig refuses both too.
		c.fail(joinPath(path, "strip_any_host_port"), "only one of strip_matching_host_port and strip_any_host_port may be set")
	case hcm.GetStripMatchingHostPort():
		out.StripPort = StripMatchingPort
	case hcm.GetStripAnyHostPort():
		out.StripPort = StripAnyPort
	}
	out.UnderscoresAction = UnderscoresAction(hcm.GetCommonHttpProtocolOptions().GetHeadersWithUnderscoresAction())
	// max_request_headers_kb: at most 8192 (the proto's own rule); unset, 0 stands for Envoy's 60 KiB.
	if v := hcm.GetMaxRequestHeadersKb(); v != nil {
		out.MaxRequestHeadersBytes = int(v.GetValue()) << 10
	}
	out.HTTPFilters = c.httpFilters(hcm.GetHttpFilters(), joinPath(path, "http_filters"))
	for _, f := range out.HTTPFilters {
		if f.Fault != nil {
			out.Fault = f.Fault
		}
	}
	out.Tracing = c.hcmTracing(hcm.GetTracing())
	out.UseRemoteAddress = hcm.GetUseRemoteAddress().GetValue()
	out.XffNumTrustedHops = hcm.GetXffNumTrustedHops()
	out.SkipXffAppend = hcm.GetSkipXffAppend()
	if iac := hcm.GetInternalAddressConfig(); iac != nil {
		out.InternalAddresses = c.cidrRanges(iac.GetCidrRanges(), joinPath(joinPath(path, "internal_address_config"), "cidr_ranges"))
		if len(iac.GetCidrRanges()) == 0 {
			out.InternalAddresses = RFC1918Internal()
		}
	}
	if rds := hcm.GetRds(); rds != nil {
		out.RDS = c.rds(rds, joinPath(path, "rds"))
		return out
	}
	if hcm.GetRouteConfig() == nil {
		c.fail(joinPath(path, "route_config"), "required: an inline route_config, or rds")
		return out
	}
	out.Routes = c.routeConfig(hcm.GetRouteConfig(), joinPath(path, "route_config"), clusters)
	return out
}

// rfc1918Internal are the addresses an internal_address_config without cidr_ranges holds internal:
// Envoy's InternalAddressConfig::isInternalAddress then falls back to Network::Utility::isInternalAddress
// (source/common/network/utility.cc): RFC 1918, 127.0.0.1 (that address only), fd00::/8 and ::1.
var rfc1918Internal = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("172.16.0.0/12"), netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("127.0.0.1/32"), netip.MustParsePrefix("fd00::/8"), netip.MustParsePrefix("::1/128"),
}

// RFC1918Internal is a copy of Envoy's internal addresses for an internal_address_config without
// cidr_ranges.
func RFC1918Internal() []netip.Prefix { return slices.Clone(rfc1918Internal) }

// cidrRanges converts CIDR ranges (Envoy's CidrRange, source/common/network/cidr_range.cc): an IP
// address and a prefix length of at most 32 (IPv4) or 128 (IPv6), default 0; the address is masked to
// its prefix.
func (c *converter) cidrRanges(ranges []*corev3.CidrRange, path string) []netip.Prefix {
	var out []netip.Prefix
	for i, r := range ranges {
		rpath := indexPath(path, i)
		ip, err := netip.ParseAddr(r.GetAddressPrefix())
		if err != nil {
			c.fail(joinPath(rpath, "address_prefix"), "%q is not an IP address", r.GetAddressPrefix())
			continue
		}
		ip = ip.Unmap()
		n := r.GetPrefixLen().GetValue()
		if n > uint32(ip.BitLen()) {
			c.fail(joinPath(rpath, "prefix_len"), "%d is out of range 0..%d for %s", n, ip.BitLen(), ip)
			continue
		}
		out = append(out, netip.PrefixFrom(ip, int(n)).Masked())
	}
	return out
}

// unpack unpacks a typed_config of type T and checks it with its own validation rules.
func unpack[T proto.Message](c *converter, a *anypb.Any, path string) (T, bool) {
	var zero T
	if a == nil {
		c.fail(path, "required: a typed_config of type %s", zero.ProtoReflect().Descriptor().FullName())
		return zero, false
	}
	msg, err := a.UnmarshalNew()
	if err != nil {
		c.fail(path, "cannot unpack %s: %v", a.GetTypeUrl(), err)
		return zero, false
	}
	typed, ok := msg.(T)
	if !ok {
		c.fail(path, "want a typed_config of type %s, got %s",
			zero.ProtoReflect().Descriptor().FullName(), msg.ProtoReflect().Descriptor().FullName())
		return zero, false
	}
	if v, ok := msg.(interface{ ValidateAll() error }); ok {
		if errs := pgvErrors(v.ValidateAll(), msg.ProtoReflect().Descriptor(), path); len(errs) > 0 {
			c.errs = append(c.errs, errs...)
			return zero, false
		}
	}
	return typed, true
}

// httpFilters checks the HTTP filter chain — fault and local rate limit filters (at most one fault
// filter), then the router, last — and returns the filters before the router, in order.
func (c *converter) httpFilters(filters []*hcmv3.HttpFilter, path string) []HTTPFilter {
	if len(filters) == 0 {
		c.fail(path, "want at least the router filter (%s)", routerType)
		return nil
	}
	var (
		out   []HTTPFilter
		fault bool
	)
	for i, f := range filters {
		fpath := joinPath(indexPath(path, i), "typed_config")
		if f.GetTypedConfig() == nil {
			c.fail(fpath, "required")
			continue
		}
		last := i == len(filters)-1
		switch f.GetTypedConfig().GetTypeUrl() {
		case "type.googleapis.com/" + faultType:
			hf, ok := unpack[*faultv3.HTTPFault](c, f.GetTypedConfig(), fpath)
			switch {
			case !ok:
			case fault:
				c.fail(indexPath(path, i), "only one fault filter is supported")
			case last:
				c.fail(indexPath(path, i), "the fault filter must come before the router")
			default:
				fault = true
				out = append(out, HTTPFilter{Fault: c.faultFilter(hf, fpath)})
			}
		case "type.googleapis.com/" + localRateLimitType:
			lr, ok := unpack[*lrlv3.LocalRateLimit](c, f.GetTypedConfig(), fpath)
			switch {
			case !ok:
			case last:
				c.fail(indexPath(path, i), "the local rate limit filter must come before the router")
			default:
				out = append(out, HTTPFilter{LocalRateLimit: c.localRateLimit(lr, fpath)})
			}
		default:
			if _, ok := unpack[*routerv3.Router](c, f.GetTypedConfig(), fpath); ok && !last {
				c.fail(indexPath(path, i), "the router must be the last HTTP filter")
			}
		}
	}
	return out
}

func (c *converter) routeConfig(rc *routev3.RouteConfiguration, path string, clusters map[string]bool) RouteConfig {
	out := RouteConfig{Name: rc.GetName(), IgnorePortInHostMatching: rc.GetIgnorePortInHostMatching(),
		RequestHeaders:  c.headerMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove(), path, "request"),
		ResponseHeaders: c.headerMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove(), path, "response"),
	}
	path = joinPath(path, "virtual_hosts")
	firstUse := map[string]int{}
	for i, vh := range rc.GetVirtualHosts() {
		vpath := indexPath(path, i)
		for j, domain := range vh.GetDomains() {
			if k, dup := firstUse[domain]; dup {
				c.fail(indexPath(joinPath(vpath, "domains"), j), "duplicate domain %q (first in virtual_hosts[%d]); domains must be unique", domain, k)
				continue
			}
			firstUse[domain] = i
		}
		out.VirtualHosts = append(out.VirtualHosts, c.virtualHost(vh, vpath, clusters))
	}
	return out
}

func (c *converter) virtualHost(vh *routev3.VirtualHost, path string, clusters map[string]bool) VirtualHost {
	out := VirtualHost{
		Name:                          vh.GetName(),
		Domains:                       slices.Clone(vh.GetDomains()),
		RetryPolicy:                   c.retryPolicy(vh.GetRetryPolicy(), joinPath(path, "retry_policy")),
		IncludeRequestAttemptCount:    vh.GetIncludeRequestAttemptCount(),
		IncludeAttemptCountInResponse: vh.GetIncludeAttemptCountInResponse(),
		//lint:ignore SA1019 Envoy deprecates it for request_body_buffer_limit but still honours it
		PerRequestBufferLimit: uint32Value(vh.GetPerRequestBufferLimitBytes()),
		RequestHeaders:        c.headerMutation(vh.GetRequestHeadersToAdd(), vh.GetRequestHeadersToRemove(), path, "request"),
		ResponseHeaders:       c.headerMutation(vh.GetResponseHeadersToAdd(), vh.GetResponseHeadersToRemove(), path, "response"),
	}
	out.HedgePolicy = c.hedgePolicy(vh.GetHedgePolicy(), joinPath(path, "hedge_policy"))
	for i, r := range vh.GetRoutes() {
		out.Routes = append(out.Routes, c.route(r, indexPath(joinPath(path, "routes"), i), clusters))
	}
	out.VirtualClusters = c.virtualClusters(vh.GetVirtualClusters(), joinPath(path, "virtual_clusters"))
	return out
}

// virtualClusters converts a virtual host's virtual_clusters. As in Envoy, two of the same name, or one
// named "other" (the catch-all's name), share their stats.
func (c *converter) virtualClusters(vcs []*routev3.VirtualCluster, path string) []VirtualCluster {
	var out []VirtualCluster
	for i, vc := range vcs {
		vpath := indexPath(path, i)
		v := VirtualCluster{Name: vc.GetName()}
		for k, h := range vc.GetHeaders() {
			v.Headers = append(v.Headers, c.headerMatcher(h, indexPath(joinPath(vpath, "headers"), k)))
		}
		out = append(out, v)
	}
	return out
}

func (c *converter) route(r *routev3.Route, path string, clusters map[string]bool) Route {
	out := Route{Name: r.GetName(), Match: c.match(r.GetMatch(), joinPath(path, "match")),
		//lint:ignore SA1019 Envoy deprecates it for request_body_buffer_limit but still honours it
		PerRequestBufferLimit: uint32Value(r.GetPerRequestBufferLimitBytes()),
		RequestHeaders:        c.headerMutation(r.GetRequestHeadersToAdd(), r.GetRequestHeadersToRemove(), path, "request"),
		ResponseHeaders:       c.headerMutation(r.GetResponseHeadersToAdd(), r.GetResponseHeadersToRemove(), path, "response"),
	}
	switch a := r.GetAction().(type) {
	case *routev3.Route_DirectResponse:
		out.DirectResponse = c.directResponse(a.DirectResponse, joinPath(path, "direct_response"))
		return out
	case *routev3.Route_Redirect:
		out.Redirect = c.redirect(a.Redirect, joinPath(path, "redirect"))
		return out
	}
	action := r.GetRoute()
	if action == nil {
		c.fail(path, "required: one of route, redirect, direct_response")
		return out
	}
	path = joinPath(path, "route")
	out.Action = RouteAction{
		Timeout:     c.duration(action.GetTimeout(), defaultRouteTimeout, joinPath(path, "timeout")),
		RetryPolicy: c.retryPolicy(action.GetRetryPolicy(), joinPath(path, "retry_policy")),
		HashHeaders: c.hashHeaders(action.GetHashPolicy(), joinPath(path, "hash_policy")),
	}
	c.rewrites(action, path, &out.Action)
	if code := action.GetClusterNotFoundResponseCode(); code != routev3.RouteAction_SERVICE_UNAVAILABLE {
		out.Action.ClusterNotFoundCode = clusterNotFoundCodes[code] // else 0: the default, 503
	}
	if msd := action.GetMaxStreamDuration(); msd != nil {
		// Envoy's RouteEntryImplBase sets using_new_timeouts_ when max_stream_duration is present, and
		// FilterUtility::finalTimeout (router.cc) then leaves the route timeout unset: `timeout` no
		// longer applies (x-envoy-upstream-rq-timeout-ms still does).
		out.Action.Timeout, out.Action.NewTimeouts = 0, true
		mpath := joinPath(path, "max_stream_duration")
		optional := func(d *durationpb.Duration, name string) *time.Duration {
			if d == nil {
				return nil
			}
			v := c.duration(d, 0, joinPath(mpath, name))
			return &v
		}
		out.Action.MaxStreamDuration = optional(msd.GetMaxStreamDuration(), "max_stream_duration")
		out.Action.GrpcTimeoutHeaderMax = optional(msd.GetGrpcTimeoutHeaderMax(), "grpc_timeout_header_max")
		out.Action.GrpcTimeoutHeaderOffset = optional(msd.GetGrpcTimeoutHeaderOffset(), "grpc_timeout_header_offset")
	}
	if d := action.GetIdleTimeout(); d != nil {
		// idle_timeout: set, it replaces the HCM's stream_idle_timeout, 0 disabling it
		// (RouteEntryImplBase idle_timeout_, ActiveStream::refreshIdleTimeout).
		v := c.duration(d, 0, joinPath(path, "idle_timeout"))
		out.Action.IdleTimeout = &v
	}
	out.Action.HedgePolicy = c.hedgePolicy(action.GetHedgePolicy(), joinPath(path, "hedge_policy"))
	out.Action.MirrorPolicies = c.mirrorPolicies(action.GetRequestMirrorPolicies(), joinPath(path, "request_mirror_policies"), clusters)
	switch spec := action.GetClusterSpecifier().(type) {
	case *routev3.RouteAction_WeightedClusters:
		out.Action.WeightedClusters = c.weightedClusters(spec.WeightedClusters, joinPath(path, "weighted_clusters"), clusters)
	case *routev3.RouteAction_ClusterHeader:
		out.Action.ClusterHeader = c.clusterHeader(spec.ClusterHeader, joinPath(path, "cluster_header"))
	default:
		out.Action.Cluster = action.GetCluster()
		c.knownCluster(action.GetCluster(), joinPath(path, "cluster"), clusters)
	}
	return out
}

// rewrites converts prefix_rewrite, regex_rewrite and host_rewrite_literal. As in Envoy's
// RouteEntryImplBase (source/common/router/config_impl.cc), a route rewrites its path one way only.
func (c *converter) rewrites(a *routev3.RouteAction, path string, out *RouteAction) {
	out.PrefixRewrite, out.HostRewrite = a.GetPrefixRewrite(), a.GetHostRewriteLiteral()
	rr := a.GetRegexRewrite()
	if rr == nil {
		return
	}
	rpath := joinPath(path, "regex_rewrite")
	if out.PrefixRewrite != "" {
		c.fail(rpath, "only one of prefix_rewrite and regex_rewrite may be set")
	}
	out.RegexRewrite = c.regexRewrite(rr, rpath)
}

// regexRewrite converts a RegexMatchAndSubstitute (nil when it is invalid).
func (c *converter) regexRewrite(rr *matcherv3.RegexMatchAndSubstitute, path string) *RegexRewrite {
	pattern := rr.GetPattern().GetRegex()
	re, err := regexp.Compile(pattern)
	if err != nil {
		c.fail(joinPath(joinPath(path, "pattern"), "regex"), "invalid RE2 regex %q: %v", pattern, err)
		return nil
	}
	sub, err := goSubstitution(rr.GetSubstitution(), re.NumSubexp())
	if err != nil {
		c.fail(joinPath(path, "substitution"), "%v", err)
		return nil
	}
	return &RegexRewrite{Pattern: re, Substitution: sub}
}

// goSubstitution turns an RE2 rewrite string (RE2::GlobalReplace, as Envoy's regex_rewrite takes it:
// "\N" a capture group, "\\" a backslash) into Go's Regexp.Expand template, checking that each group
// exists, as RE2::CheckRewriteString does.
func goSubstitution(sub string, groups int) (string, error) {
	var b strings.Builder
	for i := 0; i < len(sub); i++ {
		switch ch := sub[i]; {
		case ch == '$':
			b.WriteString("$$")
		case ch != '\\':
			b.WriteByte(ch)
		case i+1 == len(sub):
			return "", fmt.Errorf("substitution %q ends in a lone backslash", sub)
		case sub[i+1] == '\\':
			b.WriteByte('\\')
			i++
		case sub[i+1] >= '0' && sub[i+1] <= '9':
			if n := int(sub[i+1] - '0'); n > groups {
				return "", fmt.Errorf("substitution %q uses group \\%d; the pattern has %d", sub, n, groups)
			}
			fmt.Fprintf(&b, "${%c}", sub[i+1])
			i++
		default:
			return "", fmt.Errorf("substitution %q: a backslash must be followed by a digit or a backslash", sub)
		}
	}
	return b.String(), nil
}

// headerMutation converts one level's <dir>_headers_to_add and <dir>_headers_to_remove (dir "request"
// or "response"), as Envoy's HeaderParser::configure (source/common/router/header_parser.cc): a pseudo
// header (":path") or host may be neither added nor removed; append and append_action exclude each
// other. A value with substitution commands is parsed as Envoy's substitution formatter parses it
// (ParseFormat): an unknown command is an error naming it.
func (c *converter) headerMutation(add []*corev3.HeaderValueOption, remove []string, path, dir string) HeaderMutation {
	out := HeaderMutation{Add: c.headerOptions(add, joinPath(path, dir+"_headers_to_add"))}
	rpath := joinPath(path, dir+"_headers_to_remove")
	for i, name := range remove {
		if restrictedHeader(name) {
			c.fail(indexPath(rpath, i), "%q may not be removed (pseudo-headers and host are not)", name)
			continue
		}
		out.Remove = append(out.Remove, http.CanonicalHeaderKey(name))
	}
	return out
}

// headerOptions converts a list of headers to add at apath (see headerMutation).
func (c *converter) headerOptions(add []*corev3.HeaderValueOption, apath string) []HeaderValueOption {
	var out []HeaderValueOption
	for i, o := range add {
		opath := indexPath(apath, i)
		key := o.GetHeader().GetKey()
		if restrictedHeader(key) {
			c.fail(joinPath(joinPath(opath, "header"), "key"), "%q may not be modified (pseudo-headers and host are not)", key)
			continue
		}
		format, value, err := ParseFormat(o.GetHeader().GetValue())
		if err != nil {
			c.fail(joinPath(joinPath(opath, "header"), "value"), "%v", err)
			continue
		}
		action := AppendAction(o.GetAppendAction())
		//lint:ignore SA1019 Envoy deprecates append for append_action but still honours it
		if ap := o.GetAppend(); ap != nil {
			if o.GetAppendAction() != corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD {
				c.fail(joinPath(opath, "append"), "only one of append and append_action may be set")
			}
			action = AppendIfExistsOrAdd
			if !ap.GetValue() {
				action = OverwriteIfExistsOrAdd
			}
		}
		out = append(out, HeaderValueOption{Key: http.CanonicalHeaderKey(key),
			Value: value, Format: format, Action: action, KeepEmpty: o.GetKeepEmptyValue()})
	}
	return out
}

// restrictedHeader reports whether a header may not be mutated by headers_to_add or _remove.
func restrictedHeader(name string) bool {
	return strings.HasPrefix(name, ":") || strings.EqualFold(name, "host")
}

// maxDirectResponseBody is Envoy's default max_direct_response_body_size_bytes (RouteConfiguration).
const maxDirectResponseBody = 4096

// directResponse converts a DirectResponseAction whose body, if any, is inline.
func (c *converter) directResponse(d *routev3.DirectResponseAction, path string) *DirectResponse {
	out := &DirectResponse{Status: int(d.GetStatus())}
	c.inlineOnly(d.GetBody(), joinPath(path, "body"))
	switch b := d.GetBody().GetSpecifier().(type) {
	case *corev3.DataSource_InlineString:
		out.Body = b.InlineString
	case *corev3.DataSource_InlineBytes:
		out.Body = string(b.InlineBytes)
	}
	if len(out.Body) > maxDirectResponseBody {
		c.fail(joinPath(path, "body"), "%d bytes exceed Envoy's max_direct_response_body_size_bytes default, %d", len(out.Body), maxDirectResponseBody)
	}
	return out
}

// redirectCodes are RedirectAction.response_code's values, in the enum's order.
var redirectCodes = []int{http.StatusMovedPermanently, http.StatusFound, http.StatusSeeOther,
	http.StatusTemporaryRedirect, http.StatusPermanentRedirect}

// redirect converts a RedirectAction (path_redirect, prefix_rewrite and regex_rewrite are a oneof).
func (c *converter) redirect(r *routev3.RedirectAction, path string) *Redirect {
	out := &Redirect{Scheme: r.GetSchemeRedirect(), Host: r.GetHostRedirect(), Path: r.GetPathRedirect(),
		PrefixRewrite: r.GetPrefixRewrite(), StripQuery: r.GetStripQuery(), Code: http.StatusMovedPermanently,
		Port: r.GetPortRedirect()}
	if out.Port > maxPort {
		c.fail(joinPath(path, "port_redirect"), "%d is out of range 1..%d (0: the request's port)", out.Port, maxPort)
	}
	if rr := r.GetRegexRewrite(); rr != nil {
		out.RegexRewrite = c.regexRewrite(rr, joinPath(path, "regex_rewrite"))
	}
	if r.GetHttpsRedirect() {
		out.Scheme = "https"
	}
	if i := int(r.GetResponseCode()); i < len(redirectCodes) {
		out.Code = redirectCodes[i]
	}
	return out
}

// clusterNotFoundCodes are RouteAction.cluster_not_found_response_code's values, in the enum's order
// (ConfigUtility::parseClusterNotFoundResponseCode, source/common/router/config_utility.cc).
var clusterNotFoundCodes = map[routev3.RouteAction_ClusterNotFoundResponseCode]int{
	routev3.RouteAction_SERVICE_UNAVAILABLE:   http.StatusServiceUnavailable,
	routev3.RouteAction_NOT_FOUND:             http.StatusNotFound,
	routev3.RouteAction_INTERNAL_SERVER_ERROR: http.StatusInternalServerError,
}

// clusterHeader checks a cluster_header's name: a header the request may carry, not a pseudo-header
// (which an HTTP/1.1 request has no header for) or host.
func (c *converter) clusterHeader(name, path string) string {
	if restrictedHeader(name) {
		c.fail(path, "%q: want a request header other than a pseudo-header or host", name)
	}
	return http.CanonicalHeaderKey(name)
}

// knownCluster checks that a route names a cluster of the bootstrap.
func (c *converter) knownCluster(name, path string, clusters map[string]bool) {
	// nil: a route configuration from RDS, whose clusters are not checked (Envoy's
	// RouteConfiguration.validate_clusters defaults to false for RDS); a request routed to a cluster
	// that does not exist gets 503 (NC).
	if clusters != nil && !clusters[name] {
		c.fail(path, "unknown cluster %q (clusters: %s)", name, strings.Join(slices.Sorted(maps.Keys(clusters)), ", "))
	}
}

// weightedClusters converts a WeightedCluster as Envoy's WeightedClusterSpecifierPlugin does
// (source/common/router/weighted_cluster_specifier.cc): the total is the sum of the weights, which must
// be more than 0 and fit in a uint32. total_weight is deprecated in the v3 API ("the client will use the
// sum of all cluster weights"), which still says that the sum must equal it when it is more than 0: a
// total_weight that disagrees is an error here, so that a config written for an older Envoy is not
// split otherwise than its author meant.
func (c *converter) weightedClusters(wc *routev3.WeightedCluster, path string, clusters map[string]bool) *WeightedClusters {
	out := &WeightedClusters{HeaderName: wc.GetHeaderName()}
	for i, cw := range wc.GetClusters() {
		cpath := indexPath(joinPath(path, "clusters"), i)
		cwOut := ClusterWeight{Name: cw.GetName(), Weight: cw.GetWeight().GetValue()}
		switch h := cw.GetClusterHeader(); {
		case cw.GetName() != "" && h != "":
			c.fail(joinPath(cpath, "cluster_header"), "only one of name and cluster_header may be set")
		case h != "":
			cwOut.ClusterHeader = c.clusterHeader(h, joinPath(cpath, "cluster_header"))
		case cw.GetName() == "":
			c.fail(joinPath(cpath, "name"), "required: a cluster name, or a cluster_header")
		default:
			c.knownCluster(cw.GetName(), joinPath(cpath, "name"), clusters)
		}
		out.Clusters = append(out.Clusters, cwOut)
		out.TotalWeight += uint64(cw.GetWeight().GetValue())
	}
	switch {
	case out.TotalWeight == 0:
		c.fail(joinPath(path, "clusters"), "the sum of the weights must be more than 0")
	case out.TotalWeight > math.MaxUint32:
		c.fail(joinPath(path, "clusters"), "the sum of the weights, %d, exceeds %d", out.TotalWeight, uint32(math.MaxUint32))
	}
	//lint:ignore SA1019 deprecated, still checked: see above
	if tw := wc.GetTotalWeight(); tw != nil && tw.GetValue() > 0 && uint64(tw.GetValue()) != out.TotalWeight {
		c.fail(joinPath(path, "total_weight"), "the weights of clusters add up to %d, not total_weight %d", out.TotalWeight, tw.GetValue())
	}
	return out
}

// match converts a RouteMatch (route_components.proto): one path specifier, case_sensitive (default
// true), and the headers and query_parameters that must all match as well.
func (c *converter) match(m *routev3.RouteMatch, path string) RouteMatch {
	var out RouteMatch
	switch spec := m.GetPathSpecifier().(type) {
	case *routev3.RouteMatch_Prefix:
		out.Prefix = spec.Prefix
	case *routev3.RouteMatch_Path:
		out.Path, out.IsPath = spec.Path, true
	case *routev3.RouteMatch_SafeRegex:
		out.Regex = c.regex(spec.SafeRegex.GetRegex(), joinPath(joinPath(path, "safe_regex"), "regex"))
	case *routev3.RouteMatch_PathSeparatedPrefix:
		out.Prefix, out.Separated = spec.PathSeparatedPrefix, true
	default:
		c.fail(path, "required: prefix, path, safe_regex or path_separated_prefix")
		return out
	}
	if cs := m.GetCaseSensitive(); cs != nil && !cs.GetValue() {
		out.IgnoreCase = true
	}
	for i, h := range m.GetHeaders() {
		out.Headers = append(out.Headers, c.headerMatcher(h, indexPath(joinPath(path, "headers"), i)))
	}
	for i, q := range m.GetQueryParameters() {
		out.QueryParameters = append(out.QueryParameters, c.queryMatcher(q, indexPath(joinPath(path, "query_parameters"), i)))
	}
	return out
}

// regex compiles an RE2 pattern (Go's regexp is RE2) anchored at both ends: Envoy's safe_regex matches
// the whole input (RegexMatcher, api/envoy/type/matcher/v3/regex.proto; Regex::Utility::regexMatch).
func (c *converter) regex(pattern, path string) *regexp.Regexp {
	if _, err := regexp.Compile(pattern); err != nil { // the error shows the pattern as written
		c.fail(path, "invalid RE2 regex %q: %v", pattern, err)
		return nil
	}
	return regexp.MustCompile(`^(?:` + pattern + `)$`)
}

// queryMatcher converts a QueryParameterMatcher: string_match or present_match.
func (c *converter) queryMatcher(q *routev3.QueryParameterMatcher, path string) HeaderMatcher {
	switch t := q.GetQueryParameterMatchSpecifier().(type) {
	case *routev3.QueryParameterMatcher_PresentMatch:
		present := t.PresentMatch
		return HeaderMatcher{Name: q.GetName(), Present: &present}
	case *routev3.QueryParameterMatcher_StringMatch:
		out := c.stringMatch(t.StringMatch, joinPath(path, "string_match"))
		out.Name = q.GetName()
		return out
	default:
		c.fail(path, "required: string_match or present_match")
		return HeaderMatcher{Name: q.GetName()}
	}
}

// retryPolicy converts a retry policy, applying Envoy's defaults; nil stays nil.
func (c *converter) retryPolicy(p *routev3.RetryPolicy, path string) *RetryPolicy {
	if p == nil {
		return nil
	}
	out := &RetryPolicy{
		RetryOn:       c.retryOn(p.GetRetryOn(), joinPath(path, "retry_on")),
		NumRetries:    defaultNumRetries,
		PerTryTimeout: c.duration(p.GetPerTryTimeout(), 0, joinPath(path, "per_try_timeout")),
		BaseInterval:  defaultBaseInterval,
		// per_try_idle_timeout: 0 or unset disables it (route_components.proto).
		PerTryIdleTimeout: c.duration(p.GetPerTryIdleTimeout(), 0, joinPath(path, "per_try_idle_timeout")),
	}
	if n := p.GetNumRetries(); n != nil {
		out.NumRetries = n.GetValue()
	}
	if b := p.GetRetryBackOff(); b != nil {
		bpath := joinPath(path, "retry_back_off")
		out.BaseInterval = c.duration(b.GetBaseInterval(), defaultBaseInterval, joinPath(bpath, "base_interval"))
		out.MaxInterval = c.duration(b.GetMaxInterval(), maxIntervalFactor*out.BaseInterval, joinPath(bpath, "max_interval"))
		if out.MaxInterval < out.BaseInterval {
			c.fail(joinPath(bpath, "max_interval"), "%v is less than base_interval %v", out.MaxInterval, out.BaseInterval)
		}
	} else {
		out.MaxInterval = maxIntervalFactor * out.BaseInterval
	}
	c.retryExtras(p, out, path)
	return out
}

// retryOn splits retry_on into its conditions and checks each against Envoy's vocabulary and the
// conditions meshproof implements.
func (c *converter) retryOn(value, path string) []string {
	var out []string
	for cond := range strings.SplitSeq(value, ",") {
		cond = strings.TrimSpace(cond)
		implemented, known := retryOn[cond]
		switch {
		case cond == "":
		case !known:
			c.fail(path, "unknown retry condition %q (Envoy's conditions: %s)", cond, retryConditions(true))
		case !implemented:
			c.fail(path, "retry condition %q is not supported yet (supported: %s)", cond, retryConditions(false))
		default:
			out = append(out, cond)
		}
	}
	return out
}

// retryConditions lists, sorted, Envoy's whole retry_on vocabulary (all) or the part meshproof implements.
func retryConditions(all bool) string {
	var names []string
	for name, implemented := range retryOn {
		if all || implemented {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return strings.Join(names, ", ")
}

// clusters converts the static clusters; names must be unique.
func (c *converter) clusters(cs []*clusterv3.Cluster, path string) []Cluster {
	var out []Cluster
	first := map[string]int{}
	for i, cl := range cs {
		cpath := indexPath(path, i)
		if j, dup := first[cl.GetName()]; dup {
			c.fail(joinPath(cpath, "name"), "duplicate cluster name %q (also clusters[%d])", cl.GetName(), j)
		} else {
			first[cl.GetName()] = i
		}
		out = append(out, c.cluster(cl, cpath))
	}
	return out
}

func (c *converter) cluster(cl *clusterv3.Cluster, path string) Cluster {
	out := Cluster{
		Name:           cl.GetName(),
		ConnectTimeout: c.duration(cl.GetConnectTimeout(), defaultConnectTimeout, joinPath(path, "connect_timeout")),
		LbPolicy:       cl.GetLbPolicy().String(),
	}
	c.resilience(cl, &out, path)
	out.TLS = c.upstreamTLS(cl.GetTransportSocket(), joinPath(path, "transport_socket"))
	out.HTTP = c.upstreamHTTP(cl, path)
	out.HealthCheckHTTP2 = healthCheckHTTP2(cl)
	if out.HTTP.Protocol == UpstreamAuto && out.TLS == nil {
		// Envoy refuses ALPN on a transport socket without it (ClusterInfoImpl,
		// source/common/upstream/upstream_impl.cc: "ALPN configured for cluster ... which has a
		// non-ALPN transport socket").
		c.fail(joinPath(path, "typed_extension_protocol_options["+httpProtocolOptionsType+"].auto_config"),
			"needs a TLS transport_socket: the protocol is chosen by ALPN")
	}
	if cl.GetType() == clusterv3.Cluster_EDS {
		out.EDS = c.eds(cl, path)
		return out
	}
	if cl.GetEdsClusterConfig() != nil {
		c.fail(joinPath(path, "eds_cluster_config"), "only for a cluster of type EDS")
	}
	la := cl.GetLoadAssignment()
	if la == nil {
		c.fail(joinPath(path, "load_assignment"), "required: a STATIC cluster lists its endpoints in load_assignment")
		return out
	}
	path = joinPath(path, "load_assignment")
	for i, locality := range la.GetEndpoints() {
		lpath := joinPath(indexPath(joinPath(path, "endpoints"), i), "lb_endpoints")
		for j, lb := range locality.GetLbEndpoints() {
			out.Endpoints = append(out.Endpoints, c.endpoint(lb, indexPath(lpath, j)))
		}
	}
	if len(out.Endpoints) == 0 {
		c.fail(joinPath(path, "endpoints"), "want at least one endpoint")
	}
	return out
}

func (c *converter) endpoint(lb *endpointv3.LbEndpoint, path string) Endpoint {
	out := Endpoint{Weight: defaultWeight}
	if w := lb.GetLoadBalancingWeight(); w != nil {
		out.Weight = w.GetValue()
	}
	if lb.GetEndpoint().GetAddress() == nil {
		c.fail(joinPath(path, "endpoint.address"), "required")
		return out
	}
	out.Address = c.address(lb.GetEndpoint().GetAddress(), joinPath(path, "endpoint.address"))
	return out
}

// duration converts d, def when unset; negative or malformed durations are errors.
func (c *converter) duration(d *durationpb.Duration, def time.Duration, path string) time.Duration {
	if d == nil {
		return def
	}
	if err := d.CheckValid(); err != nil {
		c.fail(path, "invalid duration: %v", err)
		return def
	}
	if d.AsDuration() < 0 {
		c.fail(path, "%v is negative", d.AsDuration())
		return def
	}
	return d.AsDuration()
}

// uint32Value is an optional UInt32Value's value (nil: unset).
func uint32Value(v *wrapperspb.UInt32Value) *uint32 {
	if v == nil {
		return nil
	}
	n := v.GetValue()
	return &n
}
