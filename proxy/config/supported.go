package config

import (
	"maps"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"

	// Register the typed_config types meshproof accepts in google.protobuf.Any, so that
	// protoregistry.GlobalTypes resolves their @type.
	_ "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/fault/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/connection_limit/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	_ "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
)

// Message and type names used by the conversion, spelled once.
const (
	hcmType    = "envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
	routerType = "envoy.extensions.filters.http.router.v3.Router"
	faultType  = "envoy.extensions.filters.http.fault.v3.HTTPFault"
	// localRateLimitType is the local rate limit HTTP filter's configuration.
	localRateLimitType = "envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit"
	prevHosts          = "envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate"
	otelType           = "envoy.config.trace.v3.OpenTelemetryConfig"
	cxLimType          = "envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit"
)

// supported is the subset of Envoy's v3 API that meshproof implements: message full name → proto field
// name → restriction. A nil restriction accepts every value of the field. For an enum field the
// restriction lists the accepted value names; for a google.protobuf.Any field it lists the accepted
// message full names of the packed typed_config. A message absent from the table supports no field;
// a field absent from its message's entry is rejected by its full path, never ignored.
//
// To support a new field, add it here (and convert it in bootstrap.go); nothing else decides.
var supported = map[protoreflect.FullName]map[protoreflect.Name][]string{
	"envoy.config.bootstrap.v3.Bootstrap": {
		"admin":             nil,
		"dynamic_resources": nil,
		"static_resources":  nil,
		"node":              nil,
		"tracing":           nil,
	},

	// xDS: LDS and CDS over one ADS stream (gRPC, state of the world or delta) to a static cluster;
	// RDS and EDS over the same stream (see dynamic.go).
	"envoy.config.bootstrap.v3.Bootstrap.DynamicResources": {
		"ads_config": nil,
		"cds_config": nil,
		"lds_config": nil,
	},
	"envoy.config.core.v3.ApiConfigSource": {
		"api_type":              {"GRPC", "DELTA_GRPC"},
		"transport_api_version": {"V3"},
		"grpc_services":         nil,
		"rate_limit_settings":   nil,
	},
	"envoy.config.core.v3.RateLimitSettings": {
		"max_tokens": nil,
		"fill_rate":  nil,
	},
	"envoy.config.core.v3.GrpcService": {
		"envoy_grpc": nil,
	},
	"envoy.config.core.v3.GrpcService.EnvoyGrpc": {
		"cluster_name": nil,
	},
	"envoy.config.core.v3.ConfigSource": {
		"ads":                   nil,
		"initial_fetch_timeout": nil,
		"resource_api_version":  {"V3"},
	},
	"envoy.config.cluster.v3.Cluster.EdsClusterConfig": {
		"eds_config":   nil,
		"service_name": nil,
	},
	"envoy.extensions.filters.network.http_connection_manager.v3.Rds": {
		"config_source":     nil,
		"route_config_name": nil,
	},

	// Tracing: the OpenTelemetry tracer exporting over OTLP/HTTP (see tracing.go).
	"envoy.config.trace.v3.Tracing": {
		"http": nil,
	},
	"envoy.config.trace.v3.Tracing.Http": {
		"name":         nil,
		"typed_config": {otelType},
	},
	otelType: {
		"http_service": nil,
		"service_name": nil,
	},
	"envoy.config.core.v3.HttpService": {
		"http_uri": nil,
	},
	"envoy.config.core.v3.HttpUri": {
		"uri":     nil,
		"cluster": nil,
		"timeout": nil,
	},
	hcmType + ".Tracing": {
		"random_sampling": nil,
	},
	"envoy.config.bootstrap.v3.Admin": {
		"address": nil,
	},
	"envoy.config.bootstrap.v3.Bootstrap.StaticResources": {
		"listeners": nil,
		"clusters":  nil,
	},
	"envoy.config.core.v3.Node": {
		"id":      nil,
		"cluster": nil,
	},
	"envoy.config.core.v3.Address": {
		"socket_address": nil,
	},
	"envoy.config.core.v3.SocketAddress": {
		"address":    nil,
		"port_value": nil,
		"protocol":   {"TCP"},
	},

	// Listeners: one filter chain whose network filters are an optional connection limit, then the HTTP
	// connection manager.
	"envoy.config.listener.v3.Listener": {
		"name":          nil,
		"address":       nil,
		"filter_chains": nil,
		// How much of a request body is held for a retry (default 1 MiB).
		"per_connection_buffer_limit_bytes": nil,
	},
	"envoy.config.listener.v3.FilterChain": {
		"filters":          nil,
		"transport_socket": nil,
	},
	"envoy.config.listener.v3.Filter": {
		"name":         nil,
		"typed_config": {cxLimType, hcmType},
	},
	// The listener's downstream connection limit: connections over it are closed at once (no delay).
	cxLimType: {
		"stat_prefix":     nil,
		"max_connections": nil,
	},
	hcmType: {
		"stat_prefix":                  nil,
		"strip_matching_host_port":     nil,
		"strip_any_host_port":          nil,
		"codec_type":                   {"AUTO", "HTTP1"},
		"route_config":                 nil,
		"rds":                          nil,
		"http_filters":                 nil,
		"request_timeout":              nil,
		"stream_idle_timeout":          nil,
		"common_http_protocol_options": nil,
		"tracing":                      nil,
		// The trusted client address and the x-forwarded-for / x-envoy-internal headers.
		"use_remote_address":      nil,
		"xff_num_trusted_hops":    nil,
		"skip_xff_append":         nil,
		"internal_address_config": nil,
		// 408 "request header timeout" (no default: meshproof's own 1-minute bound).
		"request_headers_timeout": nil,
		"local_reply_config":      nil,
		// 431 over it (default 60 KiB).
		"max_request_headers_kb": nil,
		// File, stdout and stderr access logs (see access_log.go).
		"access_log": nil,
	},
	"envoy.config.accesslog.v3.AccessLog": {
		"name":         nil,
		"filter":       nil,
		"typed_config": {fileLogType, stdoutLogType, stderrLogType},
	},
	fileLogType: {
		"path":        nil,
		"format":      nil,
		"json_format": nil,
		"log_format":  nil,
	},
	stdoutLogType: {
		"log_format": nil,
	},
	stderrLogType: {
		"log_format": nil,
	},
	// Local replies rewritten by the first matching mapper, their bodies formatted (see local_reply.go).
	"envoy.extensions.filters.network.http_connection_manager.v3.LocalReplyConfig": {
		"mappers":     nil,
		"body_format": nil,
	},
	"envoy.extensions.filters.network.http_connection_manager.v3.ResponseMapper": {
		"filter":               nil,
		"status_code":          nil,
		"body":                 nil,
		"body_format_override": nil,
		"headers_to_add":       nil,
	},
	"envoy.config.accesslog.v3.AccessLogFilter": {
		"status_code_filter": nil,
		"header_filter":      nil,
	},
	"envoy.config.accesslog.v3.StatusCodeFilter": {
		"comparison": nil,
	},
	"envoy.config.accesslog.v3.ComparisonFilter": {
		"op":    nil,
		"value": nil,
	},
	"envoy.config.core.v3.RuntimeUInt32": {
		"default_value": nil,
		"runtime_key":   nil,
	},
	"envoy.config.accesslog.v3.HeaderFilter": {
		"header": nil,
	},
	"envoy.config.core.v3.SubstitutionFormatString": {
		"text_format":        nil,
		"text_format_source": nil,
		"json_format":        nil,
		"content_type":       nil,
	},
	// Which trusted client addresses are internal (no unix_sockets: the listeners are TCP only).
	hcmType + ".InternalAddressConfig": {
		"cidr_ranges": nil,
	},
	"envoy.config.core.v3.CidrRange": {
		"address_prefix": nil,
		"prefix_len":     nil,
	},
	// The HCM's (downstream), and a cluster's common_http_protocol_options (idle_timeout and
	// max_requests_per_connection only: upstreamHTTP refuses the others).
	"envoy.config.core.v3.HttpProtocolOptions": {
		"idle_timeout":                    nil,
		"max_requests_per_connection":     nil,
		"max_stream_duration":             nil,
		"headers_with_underscores_action": {"ALLOW", "REJECT_REQUEST", "DROP_HEADER"},
	},
	"envoy.extensions.filters.network.http_connection_manager.v3.HttpFilter": {
		"name":         nil,
		"typed_config": {faultType, localRateLimitType, routerType},
	},
	routerType: {},

	// The local rate limit filter: one token bucket for the listener (no descriptors, no per-route
	// configuration), a local reply when enforced.
	localRateLimitType: {
		"stat_prefix":             nil,
		"status":                  nil,
		"token_bucket":            nil,
		"filter_enabled":          nil,
		"filter_enforced":         nil,
		"response_headers_to_add": nil,
	},
	"envoy.type.v3.HttpStatus": {
		"code": nil,
	},
	"envoy.type.v3.TokenBucket": {
		"max_tokens":      nil,
		"tokens_per_fill": nil,
		"fill_interval":   nil,
	},
	// meshproof has no runtime: default_value decides; runtime_key is accepted for Envoy's sake.
	"envoy.config.core.v3.RuntimeFractionalPercent": {
		"default_value": nil,
		"runtime_key":   nil,
	},

	// The HTTP fault filter: delays and aborts as local replies, before the router.
	faultType: {
		"delay":               nil,
		"abort":               nil,
		"upstream_cluster":    nil,
		"headers":             nil,
		"max_active_faults":   nil,
		"response_rate_limit": nil,
	},
	"envoy.extensions.filters.common.fault.v3.FaultDelay": {
		"fixed_delay":  nil,
		"header_delay": nil,
		"percentage":   nil,
	},
	"envoy.extensions.filters.common.fault.v3.FaultDelay.HeaderDelay": {},
	"envoy.extensions.filters.http.fault.v3.FaultAbort": {
		"http_status":  nil,
		"grpc_status":  nil,
		"header_abort": nil,
		"percentage":   nil,
	},
	"envoy.extensions.filters.http.fault.v3.FaultAbort.HeaderAbort": {},
	"envoy.extensions.filters.common.fault.v3.FaultRateLimit": {
		"fixed_limit":  nil,
		"header_limit": nil,
		"percentage":   nil,
	},
	"envoy.extensions.filters.common.fault.v3.FaultRateLimit.FixedLimit": {
		"limit_kbps": nil,
	},
	"envoy.extensions.filters.common.fault.v3.FaultRateLimit.HeaderLimit": {},
	"envoy.type.v3.FractionalPercent": {
		"numerator":   nil,
		"denominator": nil,
	},
	"envoy.config.route.v3.HeaderMatcher": {
		"name":          nil,
		"present_match": nil,
		"string_match":  nil,
		"range_match":   nil,
		"invert_match":  nil,
		// An absent header is matched as an empty value (header_utility.cc, matchHeaders).
		"treat_missing_header_as_empty": nil,
	},
	"envoy.config.route.v3.QueryParameterMatcher": {
		"name":          nil,
		"string_match":  nil,
		"present_match": nil,
	},
	// RE2 through Go's regexp, a full match; google_re2 is accepted empty (its only field is deprecated).
	"envoy.type.matcher.v3.RegexMatcher": {
		"regex":      nil,
		"google_re2": nil,
	},
	"envoy.type.matcher.v3.RegexMatcher.GoogleRE2": {},
	"envoy.type.matcher.v3.StringMatcher": {
		"exact":       nil,
		"prefix":      nil,
		"suffix":      nil,
		"contains":    nil,
		"safe_regex":  nil,
		"ignore_case": nil,
	},

	// Routes.
	"envoy.config.route.v3.RouteConfiguration": {
		"name":                         nil,
		"ignore_port_in_host_matching": nil,
		"virtual_hosts":                nil,
		"request_headers_to_add":       nil,
		"request_headers_to_remove":    nil,
		"response_headers_to_add":      nil,
		"response_headers_to_remove":   nil,
	},
	"envoy.config.route.v3.VirtualHost": {
		"name":                              nil,
		"virtual_clusters":                  nil,
		"domains":                           nil,
		"routes":                            nil,
		"retry_policy":                      nil,
		"include_request_attempt_count":     nil,
		"include_attempt_count_in_response": nil,
		"per_request_buffer_limit_bytes":    nil,
		"request_headers_to_add":            nil,
		"request_headers_to_remove":         nil,
		"response_headers_to_add":           nil,
		"response_headers_to_remove":        nil,
		"hedge_policy":                      nil,
	},
	"envoy.config.route.v3.VirtualCluster": {
		"name":    nil,
		"headers": nil,
	},
	"envoy.config.route.v3.Route": {
		"name":                           nil,
		"match":                          nil,
		"route":                          nil,
		"redirect":                       nil,
		"direct_response":                nil,
		"per_request_buffer_limit_bytes": nil,
		"request_headers_to_add":         nil,
		"request_headers_to_remove":      nil,
		"response_headers_to_add":        nil,
		"response_headers_to_remove":     nil,
	},
	// Routes that answer themselves.
	"envoy.config.route.v3.DirectResponseAction": {
		"status": nil,
		"body":   nil,
	},
	// filename only for TLS material (tls.go); elsewhere convert refuses it.
	"envoy.config.core.v3.DataSource": {
		"filename":      nil,
		"inline_string": nil,
		"inline_bytes":  nil,
	},
	"envoy.config.route.v3.RedirectAction": {
		"https_redirect":  nil,
		"scheme_redirect": nil,
		"host_redirect":   nil,
		"path_redirect":   nil,
		"prefix_rewrite":  nil,
		"regex_rewrite":   nil,
		"port_redirect":   nil,
		"response_code":   {"MOVED_PERMANENTLY", "FOUND", "SEE_OTHER", "TEMPORARY_REDIRECT", "PERMANENT_REDIRECT"},
		"strip_query":     nil,
	},
	// Header manipulation; values may hold substitution commands (formatter.go).
	"envoy.config.core.v3.HeaderValueOption": {
		"header":           nil,
		"append":           nil,
		"append_action":    {"APPEND_IF_EXISTS_OR_ADD", "ADD_IF_ABSENT", "OVERWRITE_IF_EXISTS_OR_ADD", "OVERWRITE_IF_EXISTS"},
		"keep_empty_value": nil,
	},
	"envoy.config.core.v3.HeaderValue": {
		"key":   nil,
		"value": nil,
	},
	"envoy.config.route.v3.RouteMatch": {
		"prefix":                nil,
		"path":                  nil,
		"safe_regex":            nil,
		"path_separated_prefix": nil,
		"case_sensitive":        nil,
		"headers":               nil,
		"query_parameters":      nil,
	},
	"envoy.config.route.v3.RouteAction": {
		"cluster":                         nil,
		"cluster_header":                  nil,
		"cluster_not_found_response_code": {"SERVICE_UNAVAILABLE", "NOT_FOUND", "INTERNAL_SERVER_ERROR"},
		"weighted_clusters":               nil,
		"prefix_rewrite":                  nil,
		"regex_rewrite":                   nil,
		"host_rewrite_literal":            nil,
		"timeout":                         nil,
		"retry_policy":                    nil,
		"hash_policy":                     nil,
		// request_mirror_policies: see RequestMirrorPolicy below.
		"request_mirror_policies": nil,
		"hedge_policy":            nil,
		"max_stream_duration":     nil,
		"idle_timeout":            nil,
	},
	"envoy.config.route.v3.RouteAction.MaxStreamDuration": {
		"max_stream_duration":        nil,
		"grpc_timeout_header_max":    nil,
		"grpc_timeout_header_offset": nil,
	},
	// Hedging on per-try timeouts only: initial_requests and additional_request_chance are checked
	// for their defaults in convert (Envoy documents other values as not implemented).
	"envoy.config.route.v3.HedgePolicy": {
		"initial_requests":          nil,
		"additional_request_chance": nil,
		"hedge_on_per_try_timeout":  nil,
	},
	// Shadowing to a named cluster (no cluster_header, no disable_shadow_host_suffix_append).
	"envoy.config.route.v3.RouteAction.RequestMirrorPolicy": {
		"cluster":          nil,
		"runtime_fraction": nil,
		"trace_sampled":    nil,
	},
	"envoy.type.matcher.v3.RegexMatchAndSubstitute": {
		"pattern":      nil,
		"substitution": nil,
	},
	// Canaries: one cluster per request, drawn by weight. runtime_key_prefix is accepted: meshproof has
	// no runtime, so the configured weights apply, as in Envoy without a runtime override.
	"envoy.config.route.v3.WeightedCluster": {
		"clusters":           nil,
		"total_weight":       nil,
		"header_name":        nil,
		"runtime_key_prefix": nil,
	},
	"envoy.config.route.v3.WeightedCluster.ClusterWeight": {
		"name":           nil,
		"cluster_header": nil,
		"weight":         nil,
	},
	"envoy.config.route.v3.RouteAction.HashPolicy": {
		"header":   nil,
		"terminal": nil,
	},
	"envoy.config.route.v3.RouteAction.HashPolicy.Header": {
		"header_name": nil,
	},
	"envoy.config.route.v3.RetryPolicy": {
		"retry_on":                          nil,
		"num_retries":                       nil,
		"per_try_timeout":                   nil,
		"retry_back_off":                    nil,
		"retriable_status_codes":            nil,
		"retry_host_predicate":              nil,
		"host_selection_retry_max_attempts": nil,
		"retriable_headers":                 nil,
		"rate_limited_retry_back_off":       nil,
		"per_try_idle_timeout":              nil,
		"retriable_request_headers":         nil,
	},
	"envoy.config.route.v3.RetryPolicy.RateLimitedRetryBackOff": {
		"reset_headers": nil,
		"max_interval":  nil,
	},
	"envoy.config.route.v3.RetryPolicy.ResetHeader": {
		"name":   nil,
		"format": {"SECONDS", "UNIX_TIMESTAMP"},
	},
	"envoy.config.route.v3.RetryPolicy.RetryHostPredicate": {
		"name":         nil,
		"typed_config": {prevHosts},
	},
	prevHosts: {},
	"envoy.config.route.v3.RetryPolicy.RetryBackOff": {
		"base_interval": nil,
		"max_interval":  nil,
	},

	// Clusters: STATIC, round robin, endpoints inline.
	"envoy.config.cluster.v3.Cluster": {
		"name":                    nil,
		"type":                    {"STATIC", "EDS"},
		"eds_cluster_config":      nil,
		"connect_timeout":         nil,
		"lb_policy":               {"ROUND_ROBIN", "LEAST_REQUEST", "RANDOM", "RING_HASH", "MAGLEV"},
		"load_assignment":         nil,
		"outlier_detection":       nil,
		"circuit_breakers":        nil,
		"health_checks":           nil,
		"common_lb_config":        nil,
		"least_request_lb_config": nil,
		"round_robin_lb_config":   nil,
		"ring_hash_lb_config":     nil,
		"maglev_lb_config":        nil,
		// ignore_health_on_host_removal: a host removed from EDS leaves at once even when active health
		// checks find it healthy (default false: it stays until they fail it).
		"ignore_health_on_host_removal": nil,
		"transport_socket":              nil,
		// The upstream HTTP protocol (see upstream_http.go): HttpProtocolOptions, or the deprecated
		// http2_protocol_options.
		"typed_extension_protocol_options": {httpProtocolOptionsType},
		"http2_protocol_options":           nil,
	},
	// A cluster's HttpProtocolOptions: explicit HTTP/1.1 or HTTP/2, or auto_config (ALPN); not
	// use_downstream_protocol_config, upstream_http_protocol_options, http_filters.
	httpProtocolOptionsType: {
		"common_http_protocol_options": nil,
		"explicit_http_config":         nil,
		"auto_config":                  nil,
	},
	httpProtocolOptionsType + ".ExplicitHttpConfig": {
		"http_protocol_options":  nil,
		"http2_protocol_options": nil,
	},
	httpProtocolOptionsType + ".AutoHttpConfig": {
		"http_protocol_options":  nil,
		"http2_protocol_options": nil,
	},
	// Accepted empty: HTTP/1.1 with Envoy's defaults.
	"envoy.config.core.v3.Http1ProtocolOptions": {},
	// Upstream HTTP/2: the per-connection stream limit and the receive windows.
	"envoy.config.core.v3.Http2ProtocolOptions": {
		"max_concurrent_streams":         nil,
		"initial_stream_window_size":     nil,
		"initial_connection_window_size": nil,
	},

	// TLS (envoy.transport_sockets.tls): a filter chain's DownstreamTlsContext, a cluster's
	// UpstreamTlsContext (convert checks which goes where; see tls.go).
	"envoy.config.core.v3.TransportSocket": {
		"name":         nil,
		"typed_config": {downstreamTLSType, upstreamTLSType},
	},
	downstreamTLSType: {
		"common_tls_context":         nil,
		"require_client_certificate": nil,
	},
	upstreamTLSType: {
		"common_tls_context": nil,
		"sni":                nil,
	},
	"envoy.extensions.transport_sockets.tls.v3.CommonTlsContext": {
		"tls_params":         nil,
		"tls_certificates":   nil,
		"validation_context": nil,
		"alpn_protocols":     nil,
	},
	"envoy.extensions.transport_sockets.tls.v3.TlsParameters": {
		"tls_minimum_protocol_version": {"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"},
		"tls_maximum_protocol_version": {"TLS_AUTO", "TLSv1_0", "TLSv1_1", "TLSv1_2", "TLSv1_3"},
		"cipher_suites":                nil,
	},
	"envoy.extensions.transport_sockets.tls.v3.TlsCertificate": {
		"certificate_chain": nil,
		"private_key":       nil,
	},
	"envoy.extensions.transport_sockets.tls.v3.CertificateValidationContext": {
		"trusted_ca":                    nil,
		"match_typed_subject_alt_names": nil,
	},
	"envoy.extensions.transport_sockets.tls.v3.SubjectAltNameMatcher": {
		"san_type": {"DNS", "EMAIL", "URI", "IP_ADDRESS"},
		"matcher":  nil,
	},
	"envoy.config.cluster.v3.OutlierDetection": {
		"consecutive_5xx": nil, "interval": nil, "base_ejection_time": nil, "max_ejection_percent": nil,
		"enforcing_consecutive_5xx": nil, "enforcing_success_rate": nil, "success_rate_minimum_hosts": nil,
		"success_rate_request_volume": nil, "success_rate_stdev_factor": nil, "consecutive_gateway_failure": nil,
		"enforcing_consecutive_gateway_failure": nil, "split_external_local_origin_errors": nil,
		"consecutive_local_origin_failure": nil, "enforcing_consecutive_local_origin_failure": nil,
		"enforcing_local_origin_success_rate": nil, "failure_percentage_threshold": nil,
		"enforcing_failure_percentage": nil, "enforcing_failure_percentage_local_origin": nil,
		"failure_percentage_minimum_hosts": nil, "failure_percentage_request_volume": nil,
		"max_ejection_time": nil, "max_ejection_time_jitter": nil,
		"successful_active_health_check_uneject_host": nil, "always_eject_one_host": nil,
	},
	"envoy.config.cluster.v3.CircuitBreakers": {
		"thresholds": nil,
	},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds": {
		"priority": {"DEFAULT", "HIGH"}, "max_connections": nil, "max_pending_requests": nil,
		"max_requests": nil, "max_retries": nil, "retry_budget": nil, "track_remaining": nil,
	},
	"envoy.config.cluster.v3.CircuitBreakers.Thresholds.RetryBudget": {
		"budget_percent": nil, "min_retry_concurrency": nil,
	},
	"envoy.type.v3.Percent": {
		"value": nil,
	},
	"envoy.config.core.v3.HealthCheck": {
		"timeout": nil, "interval": nil, "initial_jitter": nil, "interval_jitter": nil,
		"interval_jitter_percent": nil, "unhealthy_threshold": nil, "healthy_threshold": nil,
		"unhealthy_interval": nil, "unhealthy_edge_interval": nil, "healthy_edge_interval": nil,
		"no_traffic_interval": nil, "no_traffic_healthy_interval": nil, "http_health_check": nil,
	},
	"envoy.config.core.v3.HealthCheck.HttpHealthCheck": {
		"host": nil, "path": nil, "expected_statuses": nil, "retriable_statuses": nil,
		"codec_client_type": {"HTTP1", "HTTP2"},
	},
	"envoy.type.v3.Int64Range": {
		"start": nil, "end": nil,
	},
	"envoy.config.cluster.v3.Cluster.CommonLbConfig": {
		"healthy_panic_threshold": nil,
	},
	"envoy.config.cluster.v3.Cluster.LeastRequestLbConfig": {
		"choice_count": nil, "active_request_bias": nil, "slow_start_config": nil,
	},
	"envoy.config.cluster.v3.Cluster.RoundRobinLbConfig": {
		"slow_start_config": nil,
	},
	"envoy.config.cluster.v3.Cluster.SlowStartConfig": {
		"slow_start_window": nil, "aggression": nil, "min_weight_percent": nil,
	},
	"envoy.config.core.v3.RuntimeDouble": {
		"default_value": nil, "runtime_key": nil,
	},
	"envoy.config.cluster.v3.Cluster.RingHashLbConfig": {
		"minimum_ring_size": nil, "maximum_ring_size": nil, "hash_function": {"XX_HASH"},
	},
	"envoy.config.cluster.v3.Cluster.MaglevLbConfig": {
		"table_size": nil,
	},
	"envoy.config.endpoint.v3.ClusterLoadAssignment": {
		"cluster_name": nil,
		"endpoints":    nil,
	},
	"envoy.config.endpoint.v3.LocalityLbEndpoints": {
		"lb_endpoints": nil,
	},
	"envoy.config.endpoint.v3.LbEndpoint": {
		"endpoint":              nil,
		"load_balancing_weight": nil,
	},
	"envoy.config.endpoint.v3.Endpoint": {
		"address": nil,
	},
}

// retryOn classifies Envoy's retry_on vocabulary (router filter docs, x-envoy-retry-on and
// x-envoy-retry-grpc-on): true = implemented by meshproof, false = a valid Envoy condition that is
// not supported yet.
var retryOn = map[string]bool{
	"5xx":                  true,
	"gateway-error":        true,
	"reset":                true,
	"connect-failure":      true,
	"retriable-4xx":        true,
	"refused-stream":       true,
	"reset-before-request": true,

	"retriable-status-codes":     true,
	"retriable-headers":          true,
	"envoy-ratelimited":          true,
	"http3-post-connect-failure": false,
	"cancelled":                  true,
	"deadline-exceeded":          true,
	"internal":                   true,
	"resource-exhausted":         true,
	"unavailable":                true,
}

// SupportedFields returns the supported subset of Envoy's v3 API: message full name → its supported
// proto field names, sorted. A message with no supported field (e.g. the router filter's config, which
// is accepted empty) maps to an empty slice. The result is a fresh copy.
func SupportedFields() map[string][]string {
	out := make(map[string][]string, len(supported))
	for msg, fields := range supported {
		out[string(msg)] = sortedNames(fields)
	}
	return out
}

// SupportedValues returns the restricted fields of the supported subset: field full name (e.g.
// "envoy.config.cluster.v3.Cluster.lb_policy") → the accepted enum value names or, for a typed_config,
// the accepted message full names. The result is a fresh copy.
func SupportedValues() map[string][]string {
	out := map[string][]string{}
	for msg, fields := range supported {
		for name, values := range fields {
			if values != nil {
				out[string(msg.Append(name))] = slices.Clone(values)
			}
		}
	}
	return out
}

// fieldRule reports whether fd is supported and, if so, its value restriction (nil = any value).
func fieldRule(fd protoreflect.FieldDescriptor) (values []string, ok bool) {
	values, ok = supported[fd.ContainingMessage().FullName()][fd.Name()]
	return values, ok
}

// supportedList lists the supported fields of md, for error messages.
func supportedList(md protoreflect.MessageDescriptor) string {
	names := sortedNames(supported[md.FullName()])
	if len(names) == 0 {
		return "none"
	}
	return strings.Join(names, ", ")
}

func sortedNames(fields map[protoreflect.Name][]string) []string {
	names := make([]string, 0, len(fields))
	for name := range maps.Keys(fields) {
		names = append(names, string(name))
	}
	slices.Sort(names)
	return names
}
