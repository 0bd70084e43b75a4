// Package config turns Envoy v3 configuration (a static bootstrap, or the route and cluster fragments a
// scenario embeds) into the proxy's validated internal configuration. It decodes YAML straight into
// go-control-plane's generated types, so that any valid Envoy YAML of the supported subset loads as-is,
// and rejects every field outside that subset by its full field path, with file and line.
package config

import (
	"net/netip"
	"regexp"
	"time"

	"github.com/meshproof/meshproof/proxy/policy"
)

// Bootstrap is the validated form of an Envoy v3 static bootstrap.
type Bootstrap struct {
	Admin     *Admin // nil when the bootstrap has no admin section
	Listeners []Listener
	Clusters  []Cluster
	Tracing   *Tracing // the bootstrap's tracing.http provider; nil: none
	Node      *Node    // the bootstrap's node; nil: none
	// Dynamic is dynamic_resources: where listeners and clusters come from over xDS (see package
	// proxy/xds); nil: a static bootstrap. Listeners with RDS and clusters with EDS hold no routes or
	// endpoints until an xDS client fills them in.
	Dynamic *DynamicResources
}

// Node identifies the proxy to a control plane (Envoy's config.core.v3.Node).
type Node struct {
	ID      string // id
	Cluster string // cluster
}

// DynamicResources is the bootstrap's dynamic_resources: one ADS stream over gRPC to a static cluster,
// carrying CDS and LDS (when configured) and the RDS and EDS they name.
type DynamicResources struct {
	// Delta is ads_config.api_type DELTA_GRPC (incremental xDS); false: GRPC (state of the world).
	Delta bool
	// ADSCluster is ads_config.grpc_services[0].envoy_grpc.cluster_name: a static cluster, the control
	// plane's address.
	ADSCluster string
	// RateLimit is ads_config.rate_limit_settings: a token bucket on the discovery requests sent; nil:
	// none (Envoy's default).
	RateLimit *RateLimit
	CDS       *ConfigSource // cds_config; nil: no CDS (static clusters only)
	LDS       *ConfigSource // lds_config; nil: no LDS (static listeners only)
}

// RateLimit is Envoy's RateLimitSettings for discovery requests.
type RateLimit struct {
	MaxTokens uint32  // max_tokens, default 100: the bucket's size, full at first
	FillRate  float64 // fill_rate, default 10: tokens per second (at least one a year)
}

// ConfigSource is a config_source with ads {}: the resources come over the ADS stream.
type ConfigSource struct {
	// InitialFetchTimeout is initial_fetch_timeout: how long the first fetch may take before the
	// resource is used without it (a listener without routes, a cluster without endpoints). Default
	// 15s (Envoy's); 0 = wait for ever.
	InitialFetchTimeout time.Duration
}

// RDS is an HTTP connection manager's rds: its route configuration comes over ADS by name.
type RDS struct {
	RouteConfigName string
	Source          ConfigSource
}

// EDS is a cluster's eds_cluster_config: its endpoints come over ADS by service name.
type EDS struct {
	ServiceName string // service_name, else the cluster's name
	Source      ConfigSource
}

// Tracing is the bootstrap's tracing provider: envoy.tracers.opentelemetry exporting over OTLP/HTTP.
type Tracing struct {
	Endpoint    string        // http_service.http_uri.uri, e.g. "http://127.0.0.1:4318/v1/traces"
	Timeout     time.Duration // http_service.http_uri.timeout; 0 = the exporter's default
	ServiceName string        // service_name; "" = "meshproof"
}

// HCMTracing is an HTTP connection manager's tracing: the share of requests that start a trace.
type HCMTracing struct {
	RandomSampling float64 // random_sampling as a fraction in [0, 1]; default 1 (Envoy's 100%)
}

// Admin is the admin interface's listen address.
type Admin struct {
	Address string // host:port; port 0 picks a free port
}

// Listener is one listener with an HTTP connection manager whose last filter is the router.
type Listener struct {
	Name       string
	Address    string // host:port; port 0 picks a free port
	StatPrefix string // the HTTP connection manager's stat_prefix
	Routes     RouteConfig
	// RDS is set when the HTTP connection manager names its routes by rds: Routes are the route
	// configuration of that name (empty until it arrives).
	RDS            *RDS
	RequestTimeout time.Duration // HCM request_timeout; 0 = none (Envoy's default)
	IdleTimeout    time.Duration // HCM common_http_protocol_options.idle_timeout; default 1h (Envoy's), 0 = none
	// MaxStreamDuration is HCM common_http_protocol_options.max_stream_duration: how long a request may
	// last from its start when its route sets no max_stream_duration.max_stream_duration (0: none,
	// Envoy's default).
	MaxStreamDuration time.Duration
	// StreamIdleTimeout is the HCM stream_idle_timeout: a request whose stream moves in neither direction
	// for that long is ended ("stream timeout"); a route's idle_timeout overrides it. Default 5 minutes
	// (Envoy's), 0 = none.
	StreamIdleTimeout time.Duration
	// ConnectionLimit is the envoy.filters.network.connection_limit filter before the HCM; nil: none.
	ConnectionLimit *ConnectionLimit
	// MaxRequestsPerConnection is HCM common_http_protocol_options.max_requests_per_connection: after
	// that many requests a downstream connection closes (its last response says Connection: close);
	// 0 = no limit (Envoy's default).
	MaxRequestsPerConnection uint32
	// BufferLimit is per_connection_buffer_limit_bytes: the most of a request body held for a retry
	// (a larger body streams and is not retried); default 1 MiB (Envoy's). 0 in a Listener built in
	// code means the default.
	BufferLimit uint32
	// StripPort is the HCM strip_port_mode: the port stripped from the Host before routing and
	// forwarding (StripNoPort: none, Envoy's default).
	StripPort StripPort
	Fault     *FaultFilter // the HTTP fault filter, when the filter chain has one before the router
	// HTTPFilters are the HTTP filters before the router, in order (the fault filter among them). nil
	// in a Listener built in code: Fault alone, if set.
	HTTPFilters []HTTPFilter
	Tracing     *HCMTracing // HCM tracing; nil when unset (traced at 100% when the proxy has a tracer)
	// UseRemoteAddress is the HCM use_remote_address: the trusted client address is the connection's
	// peer (or, with XffNumTrustedHops, the address that many hops from the right of x-forwarded-for),
	// and the peer is appended to x-forwarded-for. false (Envoy's default): the trusted client address
	// is read from x-forwarded-for.
	UseRemoteAddress bool
	// XffNumTrustedHops is the HCM xff_num_trusted_hops: how many proxies in front of this one are
	// trusted to have appended to x-forwarded-for (default 0).
	XffNumTrustedHops uint32
	// SkipXffAppend is the HCM skip_xff_append: the peer is not appended to x-forwarded-for.
	SkipXffAppend bool
	// InternalAddresses are the HCM internal_address_config.cidr_ranges: a request whose trusted client
	// address is in one of them (and is x-forwarded-for's only address) is internal; without cidr_ranges,
	// Envoy's RFC 1918 list. nil (no internal_address_config): no address is internal, Envoy's default
	// since 1.33.
	InternalAddresses []netip.Prefix
	// MaxRequestHeadersBytes is the HCM max_request_headers_kb in bytes: a larger request head is
	// answered 431. 0 (unset): Envoy's default, 60 KiB.
	MaxRequestHeadersBytes int
	// RequestHeadersTimeout is the HCM request_headers_timeout: a request head not whole this long
	// after its first byte is answered 408 "request header timeout". 0 (unset): meshproof's own bound,
	// 1 minute, answered 408 "Request Timeout" (Envoy has none).
	RequestHeadersTimeout time.Duration
	// LocalReply is the HCM local_reply_config; nil: local replies as they are.
	LocalReply *LocalReplyConfig
	// AccessLogs are the HCM access_log entries: one line per downstream request for each.
	AccessLogs []AccessLog
	// UnderscoresAction is common_http_protocol_options.headers_with_underscores_action.
	UnderscoresAction UnderscoresAction
	// TLS is the filter chain's transport_socket (envoy.transport_sockets.tls, a DownstreamTlsContext);
	// nil: clear text.
	TLS *TLS
}

// StripPort is the HCM's strip_port_mode.
type StripPort int

// The strip port modes: none; strip_matching_host_port (a port equal to the listener's); strip_any_host_port.
const (
	StripNoPort StripPort = iota
	StripMatchingPort
	StripAnyPort
)

// UnderscoresAction is what the connection manager does with a request header whose name has an
// underscore (Envoy's HttpProtocolOptions.HeadersWithUnderscoresAction).
type UnderscoresAction int

// The actions, with Envoy's values.
const (
	UnderscoresAllow         UnderscoresAction = iota // ALLOW, the default
	UnderscoresRejectRequest                          // REJECT_REQUEST: 400 and the connection closed
	UnderscoresDropHeader                             // DROP_HEADER: the header removed
)

// ConnectionLimit is Envoy's connection_limit network filter: a listener holds at most MaxConnections
// downstream connections; one over it is closed as soon as it is accepted.
type ConnectionLimit struct {
	StatPrefix     string // stats connection_limit.<StatPrefix>.{limited_connections,active_connections}
	MaxConnections uint64 // at least 1
}

// FaultFilter is envoy.extensions.filters.http.fault.v3.HTTPFault: delays and aborts injected by the
// proxy itself. Its aborts are local replies: the router never sees them (no retry, no outlier signal).
type FaultFilter struct {
	Delay           *FaultDelay
	Abort           *FaultAbort
	RateLimit       *FaultRateLimit
	UpstreamCluster string          // only requests routed to this cluster; "" = all
	Headers         []HeaderMatcher // only requests matching all of them
	MaxActiveFaults *uint32         // nil = unlimited
}

// FaultDelay delays a share of requests by Fixed, or by the x-envoy-fault-delay-request header (ms).
type FaultDelay struct {
	Fixed      time.Duration
	FromHeader bool
	Percent    Fraction
}

// FaultAbort aborts a share of requests with HTTPStatus or GRPCStatus, or with the status in the
// x-envoy-fault-abort-request / x-envoy-fault-abort-grpc-request header.
type FaultAbort struct {
	HTTPStatus int
	GRPCStatus *uint32
	FromHeader bool
	Percent    Fraction
}

// FaultRateLimit throttles a share of response bodies to KiBps, or to the x-envoy-fault-throughput-response
// header (KiB/s).
type FaultRateLimit struct {
	KiBps      uint64
	FromHeader bool
	Percent    Fraction
}

// Fraction is Envoy's FractionalPercent: Numerator out of Denominator (100, 10000 or 1000000).
type Fraction struct {
	Numerator, Denominator uint32
}

// HeaderMatcher matches one request header (Envoy's HeaderMatcher subset): exactly one of the match
// kinds; Present alone tests presence.
type HeaderMatcher struct {
	Name                            string
	Exact, Prefix, Suffix, Contains *string
	// Regex is string_match.safe_regex, anchored: RE2 must match the whole value, as Envoy's
	// RegexMatcher does (ignore_case does not apply to it).
	Regex      *regexp.Regexp
	IgnoreCase bool
	Present    *bool
	// Range is range_match: the value, a base-10 int64, lies in [Start, End).
	Range  *Int64Range
	Invert bool
	// MissingAsEmpty is treat_missing_header_as_empty: an absent header is matched as the empty value
	// (else it matches only an absent present_match, or an inverted present_match: true).
	MissingAsEmpty bool
}

// Int64Range is Envoy's type.v3.Int64Range: Start inclusive, End exclusive.
type Int64Range struct {
	Start, End int64
}

// RouteConfig is an Envoy RouteConfiguration.
type RouteConfig struct {
	Name         string
	VirtualHosts []VirtualHost
	// IgnorePortInHostMatching is ignore_port_in_host_matching: virtual hosts are matched on the
	// authority without its port (else with it, Envoy's default).
	IgnorePortInHostMatching bool
	// RequestHeaders and ResponseHeaders are request_headers_to_add/_remove and
	// response_headers_to_add/_remove: applied after the virtual host's and the route's.
	RequestHeaders, ResponseHeaders HeaderMutation
}

// HeaderMutation is one level's headers_to_add and headers_to_remove (Envoy's HeaderParser): the
// removals first, then the additions, each decided against the headers as they were before this
// level's additions; overwrites are applied before appends.
type HeaderMutation struct {
	Add    []HeaderValueOption
	Remove []string // canonical names
}

// Empty reports whether the mutation changes nothing.
func (m HeaderMutation) Empty() bool { return len(m.Add) == 0 && len(m.Remove) == 0 }

// HeaderValueOption is one header to add, Envoy's core.v3.HeaderValueOption.
type HeaderValueOption struct {
	Key    string // canonical
	Value  string // the value when it has no substitution command ("%%" resolved)
	Format Format // the value's substitution commands (nil: Value)
	Action AppendAction
	// KeepEmpty is keep_empty_value: an empty Value is still applied (else the option does nothing).
	KeepEmpty bool
}

// AppendAction is HeaderValueOption.append_action, in Envoy's enum order.
type AppendAction int

// The append actions: APPEND_IF_EXISTS_OR_ADD (the default) adds a value; ADD_IF_ABSENT adds it only
// when the header is absent; OVERWRITE_IF_EXISTS_OR_ADD replaces the header's values or adds it;
// OVERWRITE_IF_EXISTS replaces them only when the header is present.
const (
	AppendIfExistsOrAdd AppendAction = iota
	AddIfAbsent
	OverwriteIfExistsOrAdd
	OverwriteIfExists
)

// VirtualHost is matched on the request's :authority against Domains ("*", "*.suffix", "prefix.*", exact).
type VirtualHost struct {
	Name    string
	Domains []string
	Routes  []Route
	// RetryPolicy applies to routes without their own (a route-level policy replaces it entirely).
	RetryPolicy                   *RetryPolicy
	IncludeRequestAttemptCount    bool
	IncludeAttemptCountInResponse bool
	// PerRequestBufferLimit is per_request_buffer_limit_bytes for routes without their own: it lowers
	// the listener's BufferLimit for their requests (nil: unset).
	PerRequestBufferLimit *uint32
	// RequestHeaders and ResponseHeaders apply after the route's, before the route configuration's.
	RequestHeaders, ResponseHeaders HeaderMutation
	// HedgePolicy applies to routes without their own (nil: none).
	HedgePolicy *HedgePolicy
	// VirtualClusters are virtual_clusters: named request classes with stats of their own.
	VirtualClusters []VirtualCluster
}

// VirtualCluster is Envoy's VirtualCluster: requests whose headers all match (the pseudo-headers
// :path and :method included) count in vhost.<virtual host>.vcluster.<Name>. stats.
type VirtualCluster struct {
	Name    string
	Headers []HeaderMatcher
}

// Route is one route: a match and its action — a RouteAction (Action), a DirectResponse or a Redirect.
type Route struct {
	Name   string
	Match  RouteMatch
	Action RouteAction
	// PerRequestBufferLimit is per_request_buffer_limit_bytes: it lowers the listener's BufferLimit for
	// this route's requests, replacing the virtual host's (nil: unset).
	PerRequestBufferLimit *uint32
	// RequestHeaders and ResponseHeaders apply first, before the virtual host's.
	RequestHeaders, ResponseHeaders HeaderMutation
	// DirectResponse and Redirect are the route's action when it does not forward (Action unused):
	// the connection manager answers itself. nil: not this action.
	DirectResponse *DirectResponse
	Redirect       *Redirect
}

// DirectResponse is Envoy's DirectResponseAction: a response of Status with Body (text/plain when
// not empty).
type DirectResponse struct {
	Status int
	Body   string
}

// Redirect is Envoy's RedirectAction: a response of Code with a Location made from the request's
// URL with the scheme, host, path or matched prefix replaced, and its query dropped when StripQuery.
type Redirect struct {
	Scheme        string // scheme_redirect, or "https" for https_redirect ("": the request's)
	Host          string // host_redirect ("": the request's)
	Port          uint32 // port_redirect (0: none): replaces the request's port
	Path          string // path_redirect ("": none); a query in it replaces the request's
	PrefixRewrite string // prefix_rewrite: the matched prefix swapped ("": none)
	// RegexRewrite is regex_rewrite: every match in the path without its query replaced (nil: none).
	RegexRewrite *RegexRewrite
	Code         int // 301 (the default), 302, 303, 307 or 308
	StripQuery   bool
}

// RouteMatch is a route's match: its path specifier (exact Path when IsPath, else Regex when set, else
// Prefix, path-separated when Separated), then every one of Headers and QueryParameters. The path
// specifiers apply to the path without its query string.
type RouteMatch struct {
	Prefix string
	Path   string
	IsPath bool // true: exact match on Path; false: prefix match on Prefix
	// Regex is safe_regex, anchored: the whole path must match (Envoy's full match). case_sensitive
	// does not apply to it.
	Regex *regexp.Regexp
	// Separated is path_separated_prefix (in Prefix): the path equals Prefix or continues it with "/".
	Separated bool
	// IgnoreCase is case_sensitive: false, for prefix, path and path_separated_prefix.
	IgnoreCase bool
	Headers    []HeaderMatcher // all must match
	// QueryParameters must all match, each applied to the first value of its parameter, URL-decoded
	// (Envoy's QueryParameterMatcher: string_match, or present_match as Present).
	QueryParameters []HeaderMatcher
}

// RouteAction forwards to a cluster: Cluster, the cluster named by the request's ClusterHeader, or one
// of WeightedClusters per request.
type RouteAction struct {
	Cluster          string            // "" when ClusterHeader or WeightedClusters is set
	WeightedClusters *WeightedClusters // nil: Cluster or ClusterHeader
	// ClusterHeader is cluster_header: the cluster is the first value of this request header (canonical
	// name; "": not this specifier). A cluster the proxy does not have is answered ClusterNotFoundCode.
	ClusterHeader string
	// ClusterNotFoundCode is cluster_not_found_response_code: the status of a request whose cluster
	// (from a cluster_header) does not exist; 0: Envoy's default, 503.
	ClusterNotFoundCode int
	Timeout             time.Duration // route timeout across all attempts; Envoy's default 15s; 0 disables
	RetryPolicy         *RetryPolicy  // nil: the virtual host's, if any; else no retries
	// HashHeaders are the hash_policy headers (in order) whose values feed RING_HASH and MAGLEV.
	HashHeaders []string
	// PrefixRewrite is prefix_rewrite: the matched prefix (or the matched path) is swapped for it
	// upstream ("": none).
	PrefixRewrite string
	// RegexRewrite is regex_rewrite: every match of the pattern in the path (without the query string)
	// is replaced by the substitution upstream (nil: none).
	RegexRewrite *RegexRewrite
	// HostRewrite is host_rewrite_literal: the Host sent upstream ("": the downstream's).
	HostRewrite string
	// MaxStreamDuration is max_stream_duration.max_stream_duration: how long a request on the route may
	// last from its start, else it is ended with "downstream duration timeout" (nil: unset; 0: none).
	// A route with the max_stream_duration message set applies no Timeout (see convert). Unset, the
	// HCM's max_stream_duration applies.
	MaxStreamDuration *time.Duration
	// IdleTimeout is idle_timeout: the route's stream idle timeout, in place of the HCM's
	// stream_idle_timeout (nil: unset; 0: none).
	IdleTimeout *time.Duration
	// NewTimeouts: the route's max_stream_duration message is set (Envoy's usingNewTimeouts), so a gRPC
	// request goes upstream with its stream's max duration as its grpc-timeout.
	NewTimeouts bool
	// GrpcTimeoutHeaderMax and GrpcTimeoutHeaderOffset are max_stream_duration's
	// grpc_timeout_header_max and grpc_timeout_header_offset (nil: unset). With the first set, a
	// request's grpc-timeout header replaces MaxStreamDuration, capped by it (0: no cap), less the
	// offset.
	GrpcTimeoutHeaderMax, GrpcTimeoutHeaderOffset *time.Duration
	// HedgePolicy is hedge_policy (nil: the virtual host's, if any).
	HedgePolicy *HedgePolicy
	// MirrorPolicies are request_mirror_policies: each request drawn by a policy's fraction is also sent,
	// fire and forget, to its cluster (Envoy's shadowing).
	MirrorPolicies []MirrorPolicy
}

// HedgePolicy is Envoy's HedgePolicy: only hedge_on_per_try_timeout (initial_requests 1 and
// additional_request_chance 0, the defaults, are the only values Envoy implements).
type HedgePolicy struct {
	// OnPerTryTimeout: a per-try timeout does not reset its attempt; a retry is sent alongside it and
	// the first good response wins.
	OnPerTryTimeout bool
}

// MirrorPolicy is Envoy's RouteAction.RequestMirrorPolicy (the supported subset): a copy of the request
// goes to Cluster, its Host suffixed "-shadow", for the requests drawn by Fraction (runtime_fraction's
// default_value; 100% when runtime_fraction is unset). TraceSampled is trace_sampled (default true):
// whether the mirror's span is sampled.
type MirrorPolicy struct {
	Cluster      string
	Fraction     Fraction
	TraceSampled bool
}

// RegexRewrite is Envoy's RegexMatchAndSubstitute: Pattern (RE2, unanchored) and Substitution in Go's
// Regexp.Expand form (Envoy's "\1" written "${1}", a "$" written "$$").
type RegexRewrite struct {
	Pattern      *regexp.Regexp
	Substitution string
}

// WeightedClusters is Envoy's WeightedCluster: each request goes to one of Clusters, drawn by weight
// (a cluster of weight 0 is never drawn).
type WeightedClusters struct {
	Clusters    []ClusterWeight
	TotalWeight uint64 // the sum of the weights, more than 0
	// HeaderName is random_value_specifier.header_name: a request with exactly one value of it, a
	// base-10 uint64, draws that value instead of a random one ("": always random).
	HeaderName string
}

// ClusterWeight is one cluster of a WeightedClusters and its relative weight: Name, or, when
// ClusterHeader is set, the cluster named by the first value of that request header.
type ClusterWeight struct {
	Name          string
	ClusterHeader string // cluster_header, canonical ("": Name)
	Weight        uint32
}

// RetryPolicy is Envoy's route RetryPolicy (the supported subset).
type RetryPolicy struct {
	RetryOn       []string      // the comma-separated retry_on conditions, in order, trimmed
	NumRetries    uint32        // default 1
	PerTryTimeout time.Duration // 0 = none
	BaseInterval  time.Duration // retry_back_off.base_interval, default 25ms
	MaxInterval   time.Duration // retry_back_off.max_interval, default 10 × base
	// RetriableStatusCodes are retried under retriable-status-codes.
	RetriableStatusCodes []int
	// PreviousHosts: the envoy.retry_host_predicates.previous_hosts predicate, re-picking up to
	// HostSelectionMaxAttempts times (default 1) to avoid hosts already tried.
	PreviousHosts            bool
	HostSelectionMaxAttempts int64
	// RetriableHeaders are retried under retriable-headers when one matches the response.
	RetriableHeaders []HeaderMatcher
	// RateLimited is rate_limited_retry_back_off (nil: none).
	RateLimited *RateLimitedBackOff
	// PerTryIdleTimeout is per_try_idle_timeout: an attempt whose upstream sends nothing for this long
	// is reset, as for a per-try timeout (0 = none).
	PerTryIdleTimeout time.Duration
	// RetriableRequestHeaders is retriable_request_headers: when set, a request is retried only if one
	// of them matches its headers.
	RetriableRequestHeaders []HeaderMatcher
}

// RateLimitedBackOff paces retries by the response's reset headers (Retry-After, X-RateLimit-Reset).
type RateLimitedBackOff struct {
	ResetHeaders []policy.ResetHeader
	MaxInterval  time.Duration // default 300s
}

// Cluster is a STATIC cluster with its endpoints.
type Cluster struct {
	Name           string
	ConnectTimeout time.Duration // default 5s
	LbPolicy       string        // ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH or MAGLEV
	Endpoints      []Endpoint
	// EDS is set for a cluster of type EDS: Endpoints come from its ClusterLoadAssignment (empty
	// until then).
	EDS *EDS
	// TLS is the cluster's transport_socket (envoy.transport_sockets.tls, an UpstreamTlsContext); nil:
	// clear text.
	TLS *TLS
	// HTTP is the protocol spoken to the hosts and its options (typed_extension_protocol_options'
	// HttpProtocolOptions; see upstream_http.go). Zero: HTTP/1.1 with Envoy's defaults.
	HTTP UpstreamHTTP
	// HealthCheckHTTP2 is the health check's http_health_check.codec_client_type HTTP2: checks speak
	// HTTP/2 (h2c, or h2 over the cluster's TLS); default HTTP1, whatever the cluster speaks.
	HealthCheckHTTP2 bool

	Outlier      *policy.OutlierConfig // nil: no outlier detection
	Breakers     Breakers
	HealthChecks []policy.HealthCheckConfig
	// IgnoreHealthOnHostRemoval is ignore_health_on_host_removal: with health checks, a host an EDS
	// update removed leaves at once; without it (the default) a host the checks find healthy stays,
	// pending removal, until they fail it (Envoy's PENDING_DYNAMIC_REMOVAL).
	IgnoreHealthOnHostRemoval bool
	// HealthyPanicThreshold is common_lb_config.healthy_panic_threshold in percent (default 50; 0
	// disables panic mode).
	HealthyPanicThreshold float64
	LeastRequest          policy.LeastRequestConfig
	// SlowStart is the slow_start_config of round_robin_lb_config (ROUND_ROBIN) or
	// least_request_lb_config (LEAST_REQUEST); nil: none.
	SlowStart       *policy.SlowStartConfig
	RingHash        policy.RingHashConfig
	MaglevTableSize uint64 // default 65537
}

// Breakers are the cluster's circuit breakers per routing priority, with Envoy's defaults filled in.
type Breakers struct {
	Default, High  policy.CircuitBreakerThresholds
	TrackRemaining bool // publish the remaining_* gauges
}

// Endpoint is one upstream host.
type Endpoint struct {
	Address string // host:port
	Weight  uint32 // load_balancing_weight, default 1
}

// The entry points (implemented in decode.go / bootstrap.go):
//
//	ParseBootstrap(data []byte, file string) (*Bootstrap, *bootstrapv3.Bootstrap, error)
//	LoadBootstrap(path string) (*Bootstrap, *bootstrapv3.Bootstrap, error)
//	DecodeNode(node ast.Node, msg proto.Message, file, path string) error
//	FromProto(b *bootstrapv3.Bootstrap) (*Bootstrap, error)
//
// Errors are *Error values (file:line:col: path: msg), several joined with errors.Join; Errors(err)
// flattens them. SupportedFields and SupportedValues (supported.go) expose the supported subset.
