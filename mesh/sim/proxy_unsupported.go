package sim

import (
	"fmt"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
)

// Unsupported lists, by configuration field path, each configured feature of cfg that the proxy model
// would ignore, so that the runner refuses it by name (plan.Unsupported) instead of dropping it:
// HTTP/2 and TLS, the HTTP filters before the router (fault injection, local rate limit), mirrors,
// hedging, the rate-limited retry back-off, per-try idle timeouts, header mutations and rewrites,
// stream durations and idle timeouts that could end a request first, an upstream connection idle
// timeout, HTTP/2 health checks, access logs, tracing, local reply rewriting, slow start, xDS. (Internal
// requests' x-envoy-* router headers are honoured, as the live router's.) An empty list: the model runs the configuration as the live proxy does, to the limits its
// documentation gives.
func Unsupported(cfg *config.Bootstrap) []string {
	if cfg == nil {
		return nil
	}
	var out []string
	add := func(path, what string) { out = append(out, path+": "+what) }
	if cfg.Dynamic != nil {
		add("dynamic_resources", "xDS is not simulated")
	}
	if cfg.Tracing != nil {
		add("tracing.http", "the simulator records no spans")
	}
	for i := range cfg.Listeners {
		l := &cfg.Listeners[i]
		lp := fmt.Sprintf("static_resources.listeners[%d]", i)
		if i > 0 {
			add(lp, "the simulated proxy has one listener (the first)")
			continue
		}
		hcm := lp + ".filter_chains[0].filters[0].typed_config"
		if l.RDS != nil {
			add(hcm+".rds", "xDS is not simulated")
		}
		if l.TLS != nil {
			add(lp+".filter_chains[0].transport_socket", "TLS is not simulated")
		}
		if l.Codec == config.CodecHTTP2 {
			add(hcm+".codec_type", "downstream HTTP/2 is not simulated")
		}
		if l.Fault != nil || len(l.HTTPFilters) > 0 {
			add(hcm+".http_filters", "only the router filter is simulated (no fault or local rate limit filter)")
		}
		if l.ConnectionLimit != nil {
			add(lp+".filter_chains[0].filters", "the connection_limit filter is not simulated")
		}
		if l.MaxRequestsPerConnection > 0 {
			add(hcm+".common_http_protocol_options.max_requests_per_connection", "downstream connections are not simulated")
		}
		if l.MaxStreamDuration > 0 {
			add(hcm+".common_http_protocol_options.max_stream_duration", "stream durations are not simulated")
		}
		if l.XffNumTrustedHops > 0 {
			add(hcm+".xff_num_trusted_hops", "trusted proxies in x-forwarded-for are not simulated")
		}
		if l.UseRemoteAddress && !(l.XffNumTrustedHops == 0 && internalAddr(l, loopback)) {
			// Its callers (on loopback) would be edge requests, which get a new random x-request-id.
			add(hcm+".use_remote_address", "edge requests are not simulated (only a loopback peer held internal)")
		}
		if l.LocalReply != nil {
			add(hcm+".local_reply_config", "local reply rewriting is not simulated")
		}
		if len(l.AccessLogs) > 0 {
			add(hcm+".access_log", "the simulator writes no access log")
		}
		if l.StripPort != config.StripNoPort {
			add(hcm+".strip_port_mode", "not simulated")
		}
		out = append(out, unsupportedRoutes(&l.Routes, hcm+".route_config", l.StreamIdleTimeout)...)
	}
	for i := range cfg.Clusters {
		out = append(out, unsupportedCluster(&cfg.Clusters[i], fmt.Sprintf("static_resources.clusters[%d]", i))...)
	}
	return out
}

func unsupportedRoutes(rc *config.RouteConfig, path string, streamIdle time.Duration) []string {
	var out []string
	add := func(path, what string) { out = append(out, path+": "+what) }
	if !rc.RequestHeaders.Empty() || !rc.ResponseHeaders.Empty() {
		add(path, "header mutations are not simulated")
	}
	for v := range rc.VirtualHosts {
		vh := &rc.VirtualHosts[v]
		vp := fmt.Sprintf("%s.virtual_hosts[%d]", path, v)
		if !vh.RequestHeaders.Empty() || !vh.ResponseHeaders.Empty() {
			add(vp, "header mutations are not simulated")
		}
		if vh.HedgePolicy != nil && vh.HedgePolicy.OnPerTryTimeout {
			add(vp+".hedge_policy", "hedging is not simulated")
		}
		if len(vh.VirtualClusters) > 0 {
			add(vp+".virtual_clusters", "virtual cluster stats are not simulated")
		}
		if vh.RetryPolicy != nil {
			out = append(out, unsupportedRetry(vh.RetryPolicy, vp+".retry_policy")...)
		}
		for r := range vh.Routes {
			rt := &vh.Routes[r]
			rp := fmt.Sprintf("%s.routes[%d]", vp, r)
			if len(rt.Match.QueryParameters) > 0 {
				add(rp+".match.query_parameters", "query parameter matching is not simulated")
			}
			if !rt.RequestHeaders.Empty() || !rt.ResponseHeaders.Empty() {
				add(rp, "header mutations are not simulated")
			}
			if rt.DirectResponse != nil || rt.Redirect != nil {
				continue
			}
			a := &rt.Action
			ap := rp + ".route"
			if a.PrefixRewrite != "" || a.RegexRewrite != nil {
				add(ap, "path rewrites are not simulated")
			}
			if a.HedgePolicy != nil && a.HedgePolicy.OnPerTryTimeout {
				add(ap+".hedge_policy", "hedging is not simulated")
			}
			if len(a.MirrorPolicies) > 0 {
				add(ap+".request_mirror_policies", "mirrors are not simulated")
			}
			if a.MaxStreamDuration != nil || a.GrpcTimeoutHeaderMax != nil {
				add(ap+".max_stream_duration", "stream durations are not simulated")
			}
			idle := streamIdle
			if a.IdleTimeout != nil {
				idle = *a.IdleTimeout
			}
			// A stream idle timeout can end a request (no body, nothing received) only when no shorter
			// route timeout ends it first (proxy/conn_manager.go idleTimerMoot).
			if idle > 0 && (a.Timeout == 0 || a.Timeout > idle) {
				add(ap+".idle_timeout", "a stream idle timeout that can fire before the route timeout is not simulated")
			}
			if a.RetryPolicy != nil {
				out = append(out, unsupportedRetry(a.RetryPolicy, ap+".retry_policy")...)
			}
		}
	}
	return out
}

func unsupportedRetry(rp *config.RetryPolicy, path string) []string {
	var out []string
	if rp.RateLimited != nil {
		out = append(out, path+".rate_limited_retry_back_off: not simulated")
	}
	if rp.PerTryIdleTimeout > 0 {
		out = append(out, path+".per_try_idle_timeout: not simulated")
	}
	if len(rp.RetriableRequestHeaders) > 0 {
		out = append(out, path+".retriable_request_headers: not simulated")
	}
	for _, c := range rp.RetryOn {
		if _, grpc := grpcRetryOn[c]; grpc {
			out = append(out, path+".retry_on: "+c+": gRPC statuses are not simulated")
		}
	}
	return out
}

// grpcRetryOn are the retry_on conditions on a response's grpc-status, which the model does not read.
var grpcRetryOn = map[string]struct{}{"cancelled": {}, "deadline-exceeded": {}, "internal": {}, "resource-exhausted": {}, "unavailable": {}}

func unsupportedCluster(c *config.Cluster, path string) []string {
	var out []string
	add := func(path, what string) { out = append(out, path+": "+what) }
	if c.EDS != nil {
		add(path+".eds_cluster_config", "xDS is not simulated")
	}
	if c.TLS != nil {
		add(path+".transport_socket", "TLS is not simulated")
	}
	if c.HTTP.Protocol != config.UpstreamHTTP1 {
		add(path+".typed_extension_protocol_options", "only HTTP/1.1 upstreams are simulated")
	}
	if c.HTTP.MaxRequestsPerConnection > 0 {
		add(path+".typed_extension_protocol_options.common_http_protocol_options.max_requests_per_connection", "not simulated")
	}
	if c.HTTP.IdleTimeout > 0 && c.HTTP.IdleTimeout != time.Hour {
		// The model keeps an idle connection until the instance closes it; the live pool closes it
		// after idle_timeout (h1 client, idleAt). Envoy's default (1 h, filled in by proxy/config) is
		// treated as never: no connection of a scenario stays idle that long.
		add(path+".typed_extension_protocol_options.common_http_protocol_options.idle_timeout", "connection idle timeouts are not simulated")
	}
	if c.HealthCheckHTTP2 {
		add(path+".health_checks.http_health_check.codec_client_type", "HTTP/2 health checks are not simulated")
	}
	if c.SlowStart != nil && c.SlowStart.Enabled() {
		add(path+".slow_start_config", "slow start is not simulated")
	}
	return out
}
