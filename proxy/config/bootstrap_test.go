package config_test

import (
	"net/netip"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

var _ = Describe("ParseBootstrap", func() {
	Context("with a full bootstrap of the supported subset", func() {
		want := &config.Bootstrap{
			Admin: &config.Admin{Address: "127.0.0.1:9901"},
			Node:  &config.Node{ID: "edge-0", Cluster: "edge"},
			Listeners: []config.Listener{{
				Name:           "ingress",
				Address:        "0.0.0.0:10000",
				StatPrefix:     "ingress_http",
				RequestTimeout: 30 * time.Second,
				IdleTimeout:    5 * time.Minute,
				// stream_idle_timeout unset: Envoy's 5 minutes.
				StreamIdleTimeout: 5 * time.Minute,
				BufferLimit:       1 << 20,
				Routes: config.RouteConfig{
					Name: "local_route",
					VirtualHosts: []config.VirtualHost{{
						Name:    "backend",
						Domains: []string{"*"},
						RetryPolicy: &config.RetryPolicy{
							RetryOn: []string{"5xx", "reset"}, NumRetries: 1,
							BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond,
							HostSelectionMaxAttempts: 1,
						},
						IncludeRequestAttemptCount:    true,
						IncludeAttemptCountInResponse: true,
						Routes: []config.Route{
							{
								Name:  "api",
								Match: config.RouteMatch{Prefix: "/api"},
								Action: config.RouteAction{Cluster: "checkout", Timeout: time.Second, RetryPolicy: &config.RetryPolicy{
									RetryOn:                  []string{"5xx", "gateway-error", "connect-failure"},
									NumRetries:               3,
									PerTryTimeout:            250 * time.Millisecond,
									BaseInterval:             10 * time.Millisecond,
									MaxInterval:              100 * time.Millisecond,
									HostSelectionMaxAttempts: 1,
								}},
							},
							{
								Match:  config.RouteMatch{Path: "/healthz", IsPath: true},
								Action: config.RouteAction{Cluster: "checkout", Timeout: 15 * time.Second},
							},
						},
					}},
				},
			}},
			Clusters: []config.Cluster{withClusterDefaults(config.Cluster{
				Name:           "checkout",
				ConnectTimeout: 500 * time.Millisecond,
				LbPolicy:       "ROUND_ROBIN",
				Endpoints: []config.Endpoint{
					{Address: "127.0.0.1:8081", Weight: 1},
					{Address: "127.0.0.1:8082", Weight: 3},
					{Address: "[::1]:8083", Weight: 1},
				},
			})},
		}

		It("loads the file as-is", func() {
			got, pb, err := config.LoadBootstrap(filepath.Join("testdata", "bootstrap.yaml"))
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
			Expect(pb.GetNode().GetId()).To(Equal("edge-0"))
		})

		It("loads the same bootstrap written with camelCase keys", func() {
			got, _, err := config.LoadBootstrap(filepath.Join("testdata", "bootstrap-camel.yaml"))
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
		})

		It("loads its protojson form (JSON, camelCase) to the same result", func() {
			_, pb, err := config.LoadBootstrap(filepath.Join("testdata", "bootstrap.yaml"))
			Expect(err).NotTo(HaveOccurred())
			data, err := protojson.MarshalOptions{Multiline: true}.Marshal(pb)
			Expect(err).NotTo(HaveOccurred())

			got, _, err := config.ParseBootstrap(data, "bootstrap.json")
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
		})
	})

	DescribeTable("valid documents, defaults applied",
		func(doc string, change func(*config.Bootstrap)) {
			want := minimalWant()
			change(want)
			got, _, err := config.ParseBootstrap([]byte(doc), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(Equal(want))
		},
		Entry("the minimal bootstrap", minimal, func(*config.Bootstrap) {}),
		Entry("the HCM idle_timeout (common_http_protocol_options)",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {idle_timeout: 0.25s}\n"),
			func(b *config.Bootstrap) { b.Listeners[0].IdleTimeout = 250 * time.Millisecond }),
		Entry("use_remote_address, xff_num_trusted_hops, skip_xff_append and internal_address_config's cidr_ranges (masked)",
			edit("          stat_prefix: ingress_http\n", `          stat_prefix: ingress_http
          use_remote_address: true
          xff_num_trusted_hops: 2
          skip_xff_append: true
          internal_address_config:
            cidr_ranges: [{address_prefix: 10.1.2.3, prefix_len: 16}, {address_prefix: "::1", prefix_len: 128}]
`),
			func(b *config.Bootstrap) {
				l := &b.Listeners[0]
				l.UseRemoteAddress, l.XffNumTrustedHops, l.SkipXffAppend = true, 2, true
				l.InternalAddresses = []netip.Prefix{netip.MustParsePrefix("10.1.0.0/16"), netip.MustParsePrefix("::1/128")}
			}),
		// InternalAddressConfig::isInternalAddress (http_connection_manager/config.h) falls back to
		// Network::Utility::isInternalAddress when cidr_ranges is empty.
		Entry("an internal_address_config without cidr_ranges: RFC 1918, 127.0.0.1, fd00::/8 and ::1",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          internal_address_config: {}\n"),
			func(b *config.Bootstrap) { b.Listeners[0].InternalAddresses = config.RFC1918Internal() }),
		Entry("max_request_headers_kb, request_headers_timeout and headers_with_underscores_action",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          max_request_headers_kb: 8\n          request_headers_timeout: 2s\n          common_http_protocol_options: {headers_with_underscores_action: DROP_HEADER}\n"),
			func(b *config.Bootstrap) {
				b.Listeners[0].MaxRequestHeadersBytes, b.Listeners[0].UnderscoresAction = 8<<10, config.UnderscoresDropHeader
				b.Listeners[0].RequestHeadersTimeout = 2 * time.Second
			}),
		// The docs' "Local reply modification" example, reduced.
		Entry("local_reply_config: mappers and body_format",
			edit("          stat_prefix: ingress_http\n", `          stat_prefix: ingress_http
          local_reply_config:
            mappers:
            - filter: {status_code_filter: {comparison: {op: EQ, value: {default_value: 400, runtime_key: key_b}}}}
              headers_to_add: [{header: {key: foo, value: bar}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}]
              status_code: 401
              body: {inline_string: "not allowed"}
            - filter: {header_filter: {header: {name: test-header, string_match: {exact: exact-match-value}}}}
              body_format_override: {json_format: {code: "%RESPONSE_CODE%", detail: {body: "%LOCAL_REPLY_BODY%"}, version: 1}}
            body_format: {text_format: "%LOCAL_REPLY_BODY%:%RESPONSE_CODE%:path=%REQ(:path)%\n", content_type: text/html}
`),
			func(b *config.Bootstrap) {
				body, exact := "not allowed", "exact-match-value"
				part := func(p config.FormatPart) config.Format { return config.Format{p} }
				b.Listeners[0].LocalReply = &config.LocalReplyConfig{
					Mappers: []config.ResponseMapper{
						{StatusCode: &config.StatusCodeFilter{Op: "EQ", Value: 400}, Status: 401, Body: &body,
							Headers: config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "Foo", Value: "bar", Action: config.OverwriteIfExistsOrAdd}}}},
						{Header: &config.HeaderMatcher{Name: "test-header", Exact: &exact}, BodyFormat: &config.BodyFormat{JSON: &config.JSONTemplate{
							Keys: []string{"code", "detail", "version"},
							Values: map[string]config.JSONValue{
								"code":    {Format: part(config.FormatPart{Command: "RESPONSE_CODE"})},
								"detail":  {Object: &config.JSONTemplate{Keys: []string{"body"}, Values: map[string]config.JSONValue{"body": {Format: part(config.FormatPart{Command: "LOCAL_REPLY_BODY"})}}}},
								"version": {Plain: structpb.NewNumberValue(1)},
							}}}},
					},
					BodyFormat: &config.BodyFormat{ContentType: "text/html", Text: config.Format{
						{Command: "LOCAL_REPLY_BODY"}, {Literal: ":"}, {Command: "RESPONSE_CODE"}, {Literal: ":path="},
						{Command: "REQ", Header: ":path"}, {Literal: "\n"}}},
				}
			}),
		// access_log: a file with a text_format_source and a status_code_filter, stdout with a
		// json_format, stderr and a file without a format (Envoy's default format), a file with the
		// deprecated format string, one with an empty one (the default format too).
		Entry("access_log: file, stdout and stderr loggers",
			edit("          stat_prefix: ingress_http\n", `          stat_prefix: ingress_http
          access_log:
          - name: envoy.access_loggers.file
            filter: {status_code_filter: {comparison: {op: GE, value: {default_value: 500, runtime_key: k}}}}
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog
              path: /var/log/access.log
              log_format: {text_format_source: {inline_string: "%RESPONSE_FLAGS% %DURATION%\n"}}
          - name: envoy.access_loggers.stdout
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog
              log_format: {json_format: {code: "%RESPONSE_CODE%", n: 1}}
          - name: envoy.access_loggers.stderr
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog}
          - name: envoy.access_loggers.file
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: a.log, format: "%BYTES_SENT%"}
          - name: envoy.access_loggers.file
            typed_config: {"@type": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: b.log, format: ""}
`),
			func(b *config.Bootstrap) {
				part := func(p config.FormatPart) config.Format { return config.Format{p} }
				b.Listeners[0].AccessLogs = []config.AccessLog{
					{Path: "/var/log/access.log", Filter: &config.AccessLogFilter{StatusCode: &config.StatusCodeFilter{Op: "GE", Value: 500}},
						Format: &config.BodyFormat{Text: config.Format{{Command: "RESPONSE_FLAGS"}, {Literal: " "}, {Command: "DURATION"}, {Literal: "\n"}}}},
					{Path: config.AccessLogStdout, Format: &config.BodyFormat{JSON: &config.JSONTemplate{Keys: []string{"code", "n"},
						Values: map[string]config.JSONValue{"code": {Format: part(config.FormatPart{Command: "RESPONSE_CODE"})},
							"n": {Plain: structpb.NewNumberValue(1)}}}}},
					{Path: config.AccessLogStderr},
					{Path: "a.log", Format: &config.BodyFormat{Text: part(config.FormatPart{Command: "BYTES_SENT"})}},
					{Path: "b.log"}, // an empty format is the default one, as in Envoy
				}
			}),
		Entry("the HCM max_requests_per_connection (common_http_protocol_options)",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {max_requests_per_connection: 100}\n"),
			func(b *config.Bootstrap) { b.Listeners[0].MaxRequestsPerConnection = 100 }),
		Entry("a connection_limit network filter before the HCM",
			edit("    - filters:\n", `    - filters:
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: edge_limit
          max_connections: 100
`),
			func(b *config.Bootstrap) {
				b.Listeners[0].ConnectionLimit = &config.ConnectionLimit{StatPrefix: "edge_limit", MaxConnections: 100}
			}),
		Entry("the HCM strip_any_host_port",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          strip_any_host_port: true\n"),
			func(b *config.Bootstrap) { b.Listeners[0].StripPort = config.StripAnyPort }),
		Entry("the HCM strip_matching_host_port",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          strip_matching_host_port: true\n"),
			func(b *config.Bootstrap) { b.Listeners[0].StripPort = config.StripMatchingPort }),
		Entry("the listener's per_connection_buffer_limit_bytes",
			edit("  - name: ingress\n", "  - name: ingress\n    per_connection_buffer_limit_bytes: 65536\n"),
			func(b *config.Bootstrap) { b.Listeners[0].BufferLimit = 64 << 10 }),
		Entry("per_request_buffer_limit_bytes on a virtual host",
			edit("              domains: [\"*\"]\n", "              domains: [\"*\"]\n              per_request_buffer_limit_bytes: 2048\n"),
			func(b *config.Bootstrap) {
				b.Listeners[0].Routes.VirtualHosts[0].PerRequestBufferLimit = uint32Ptr(2048)
			}),
		Entry("per_request_buffer_limit_bytes on a route, 0 included",
			edit("              - match: {prefix: /}\n", "              - match: {prefix: /}\n                per_request_buffer_limit_bytes: 0\n"),
			func(b *config.Bootstrap) {
				b.Listeners[0].Routes.VirtualHosts[0].Routes[0].PerRequestBufferLimit = uint32Ptr(0)
			}),
		Entry("the HCM max_stream_duration (common_http_protocol_options): a route without its own falls back to it",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {max_stream_duration: 30s}\n"),
			func(b *config.Bootstrap) { b.Listeners[0].MaxStreamDuration = 30 * time.Second }),
		Entry("HCM max_stream_duration 0 is none, as unset",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {max_stream_duration: 0s}\n"),
			func(*config.Bootstrap) {}),
		Entry("the HCM stream_idle_timeout",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          stream_idle_timeout: 30s\n"),
			func(b *config.Bootstrap) { b.Listeners[0].StreamIdleTimeout = 30 * time.Second }),
		Entry("HCM stream_idle_timeout 0 disables it",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          stream_idle_timeout: 0s\n"),
			func(b *config.Bootstrap) { b.Listeners[0].StreamIdleTimeout = 0 }),
		Entry("HCM idle_timeout 0 disables it",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {idle_timeout: 0s}\n"),
			func(b *config.Bootstrap) { b.Listeners[0].IdleTimeout = 0 }),
		Entry("HCM common_http_protocol_options without idle_timeout keeps the 1h default",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          common_http_protocol_options: {}\n"),
			func(*config.Bootstrap) {}),
		Entry("route timeout 0 disables it",
			edit("route: {cluster: backend}", "route: {cluster: backend, timeout: 0s}"),
			func(b *config.Bootstrap) { route(b).Action.Timeout = 0 }),
		Entry("retry policy: num_retries 1, backoff 25ms..250ms by default",
			edit("route: {cluster: backend}", "route: {cluster: backend, retry_policy: {retry_on: 5xx}}"),
			func(b *config.Bootstrap) {
				route(b).Action.RetryPolicy = &config.RetryPolicy{RetryOn: []string{"5xx"}, NumRetries: 1,
					BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, HostSelectionMaxAttempts: 1}
			}),
		Entry("retriable headers and the rate-limited back-off",
			edit("route: {cluster: backend}", `route: {cluster: backend, retry_policy: {retry_on: retriable-headers, retriable_headers: [{name: x-retry, string_match: {exact: "1"}}], rate_limited_retry_back_off: {reset_headers: [{name: Retry-After}, {name: X-RateLimit-Reset, format: UNIX_TIMESTAMP}]}}}`),
			func(b *config.Bootstrap) {
				one := "1"
				route(b).Action.RetryPolicy = &config.RetryPolicy{RetryOn: []string{"retriable-headers"}, NumRetries: 1,
					BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, HostSelectionMaxAttempts: 1,
					RetriableHeaders: []config.HeaderMatcher{{Name: "x-retry", Exact: &one}},
					RateLimited: &config.RateLimitedBackOff{MaxInterval: 300 * time.Second, ResetHeaders: []policy.ResetHeader{
						{Name: "Retry-After"}, {Name: "X-RateLimit-Reset", UnixTimestamp: true}}}}
			}),
		Entry("max_interval defaults to 10 × base_interval",
			edit("route: {cluster: backend}", `route: {cluster: backend, retry_policy: {retry_on: "reset-before-request , refused-stream", num_retries: 0, retry_back_off: {base_interval: 0.1s}}}`),
			func(b *config.Bootstrap) {
				route(b).Action.RetryPolicy = &config.RetryPolicy{RetryOn: []string{"reset-before-request", "refused-stream"},
					BaseInterval: 100 * time.Millisecond, MaxInterval: time.Second, HostSelectionMaxAttempts: 1}
			}),
		Entry("an exact path match",
			edit("match: {prefix: /}", "match: {path: /exact}"),
			func(b *config.Bootstrap) { route(b).Match = config.RouteMatch{Path: "/exact", IsPath: true} }),
		Entry("a wrapper (load_balancing_weight) written as a plain number",
			edit("- endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}",
				"- {endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}, load_balancing_weight: 7}"),
			func(b *config.Bootstrap) { b.Clusters[0].Endpoints[0].Weight = 7 }),
		Entry("the fault filter before the router",
			edit("          - name: envoy.filters.http.router\n", `          - name: envoy.filters.http.fault
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, max_active_faults: 5, abort: {http_status: 503, percentage: {numerator: 25, denominator: TEN_THOUSAND}}, delay: {header_delay: {}}, headers: [{name: x-chaos, string_match: {exact: "on"}}]}
          - name: envoy.filters.http.router
`),
			func(b *config.Bootstrap) {
				max, on := uint32(5), "on"
				b.Listeners[0].Fault = &config.FaultFilter{
					Abort: &config.FaultAbort{HTTPStatus: 503, Percent: config.Fraction{Numerator: 25, Denominator: 10000}},
					// No percentage: 0%, as in Envoy (fault_config.cc takes the unset message's zero value).
					Delay:           &config.FaultDelay{FromHeader: true, Percent: config.Fraction{Numerator: 0, Denominator: 100}},
					Headers:         []config.HeaderMatcher{{Name: "x-chaos", Exact: &on}},
					MaxActiveFaults: &max,
				}
				b.Listeners[0].HTTPFilters = []config.HTTPFilter{{Fault: b.Listeners[0].Fault}}
			}),
		// FilterConfig (local_ratelimit.cc): tokens_per_fill default 1, filter_enabled and filter_enforced
		// 0% when absent, a status below 400 answered 429 (toErrorCode).
		Entry("local rate limit filters before the router, in order",
			edit("          - name: envoy.filters.http.router\n", `          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: http_local_rate_limiter
              token_bucket: {max_tokens: 10000, tokens_per_fill: 1000, fill_interval: 1s}
              filter_enabled: {runtime_key: local_rate_limit_enabled, default_value: {numerator: 100, denominator: HUNDRED}}
              filter_enforced: {runtime_key: local_rate_limit_enforced, default_value: {numerator: 50, denominator: HUNDRED}}
              response_headers_to_add: [{append_action: OVERWRITE_IF_EXISTS_OR_ADD, header: {key: x-local-rate-limit, value: "true"}}]
          - name: envoy.filters.http.local_ratelimit
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit
              stat_prefix: second
              status: {code: OK}
              token_bucket: {max_tokens: 5, fill_interval: 0.05s}
          - name: envoy.filters.http.router
`),
			func(b *config.Bootstrap) {
				b.Listeners[0].HTTPFilters = []config.HTTPFilter{
					{LocalRateLimit: &config.LocalRateLimit{StatPrefix: "http_local_rate_limiter", Status: 429, MaxTokens: 10000, TokensPerFill: 1000,
						FillInterval: time.Second, Enabled: config.Fraction{Numerator: 100, Denominator: 100}, Enforced: config.Fraction{Numerator: 50, Denominator: 100},
						ResponseHeaders: config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "X-Local-Rate-Limit", Value: "true", Action: config.OverwriteIfExistsOrAdd}}}}},
					{LocalRateLimit: &config.LocalRateLimit{StatPrefix: "second", Status: 429, MaxTokens: 5, TokensPerFill: 1,
						FillInterval: 50 * time.Millisecond, Enabled: config.Fraction{Denominator: 100}, Enforced: config.Fraction{Denominator: 100}}},
				}
			}),
		Entry("an admin without an address is disabled, as in Envoy",
			edit("static_resources:", "admin: {}\nstatic_resources:"),
			func(*config.Bootstrap) {}),
	)

	It("loads the gRPC retry conditions with the HTTP ones", func() {
		got, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}",
			`route: {cluster: backend, retry_policy: {retry_on: "5xx, unavailable,resource-exhausted,cancelled,deadline-exceeded,internal"}}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Listeners[0].Routes.VirtualHosts[0].Routes[0].Action.RetryPolicy.RetryOn).To(Equal(
			[]string{"5xx", "unavailable", "resource-exhausted", "cancelled", "deadline-exceeded", "internal"}))
	})

	DescribeTable("invalid documents",
		func(doc string, want ...types.GomegaMatcher) {
			got, pb, err := config.ParseBootstrap([]byte(doc), file)
			Expect(err).To(HaveOccurred())
			Expect(got).To(BeNil())
			Expect(pb).To(BeNil())
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("a connection_limit with a delay (connections over the limit are closed at once)",
			edit("    - filters:\n", `    - filters:
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: edge_limit
          delay: 1s
`),
			at(11, 11, "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.delay",
				"field not supported by meshproof (supported in envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit: max_connections, stat_prefix)")),
		Entry("a connection_limit without max_connections",
			edit("    - filters:\n", `    - filters:
      - name: envoy.filters.network.connection_limit
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit
          stat_prefix: edge_limit
`),
			at(9, 11, "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.max_connections",
				"required: the most connections the listener holds (at least 1)")),
		Entry("an internal_address_config CIDR range with a prefix_len beyond the address",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          internal_address_config: {cidr_ranges: [{address_prefix: 10.0.0.0, prefix_len: 33}]}\n"),
			pathMsg(hcmPath+".internal_address_config.cidr_ranges[0].prefix_len", "33 is out of range 0..32 for 10.0.0.0")),
		Entry("an internal_address_config CIDR range that is not an IP address",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          internal_address_config: {cidr_ranges: [{address_prefix: example.com}]}\n"),
			pathMsg(hcmPath+".internal_address_config.cidr_ranges[0].address_prefix", `"example.com" is not an IP address`)),
		Entry("internal_address_config.unix_sockets (the listeners are TCP only)",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          internal_address_config: {unix_sockets: true}\n"),
			at(11, 37, hcmPath+".internal_address_config.unix_sockets",
				"field not supported by meshproof (supported in envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager.InternalAddressConfig: cidr_ranges)")),
		Entry("a local rate limit fill_interval below Envoy's 50ms",
			edit("          - name: envoy.filters.http.router\n", `          - name: envoy.filters.http.local_ratelimit
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: {max_tokens: 1, fill_interval: 0.01s}}
          - name: envoy.filters.http.router
`),
			pathMsg(hcmPath+".http_filters[0].typed_config.token_bucket.fill_interval", "10ms is below Envoy's minimum of 50ms")),
		Entry("a local rate limit without token_bucket (per-route configuration is not supported)",
			edit("          - name: envoy.filters.http.router\n", `          - name: envoy.filters.http.local_ratelimit
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl}
          - name: envoy.filters.http.router
`),
			pathMsg(hcmPath+".http_filters[0].typed_config.token_bucket", "required")),
		Entry("local rate limit descriptors",
			edit("          - name: envoy.filters.http.router\n", `          - name: envoy.filters.http.local_ratelimit
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, stat_prefix: rl, token_bucket: {max_tokens: 1, fill_interval: 1s}, descriptors: [{entries: [{key: k, value: v}], token_bucket: {max_tokens: 1, fill_interval: 1s}}]}
          - name: envoy.filters.http.router
`),
			pathMsg(hcmPath+".http_filters[0].typed_config.descriptors", "field not supported by meshproof")),
		Entry("max_request_headers_kb above Envoy's 8192",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          max_request_headers_kb: 8193\n"),
			pathMsg(hcmPath+".max_request_headers_kb", "8192")),
		Entry("a local reply format with a command meshproof does not format",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          local_reply_config: {body_format: {text_format: \"%RESPONSE_CODE_DETAILS% %LOCAL_REPLY_BODY%\"}}\n"),
			pathMsg(hcmPath+".local_reply_config.body_format.text_format", "command %RESPONSE_CODE_DETAILS% is supported in access log formats only")),
		Entry("an access log with a filter other than status_code_filter or header_filter",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          access_log: [{name: l, filter: {duration_filter: {comparison: {op: GE, value: {default_value: 1, runtime_key: k}}}}, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog}}]\n"),
			pathMsg(hcmPath+".access_log[0].filter.duration_filter", "field not supported by meshproof")),
		Entry("an access log format with a field meshproof does not implement (omit_empty_values)",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          access_log: [{name: l, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StderrAccessLog, log_format: {text_format: x, omit_empty_values: true}}}]\n"),
			pathMsg(hcmPath+".access_log[0].typed_config.log_format.omit_empty_values", "field not supported by meshproof")),
		Entry("a file access log's typed_json_format",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          access_log: [{name: l, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog, path: a.log, typed_json_format: {a: b}}}]\n"),
			pathMsg(hcmPath+".access_log[0].typed_config.typed_json_format", "field not supported by meshproof")),
		Entry("an access log format command meshproof does not format",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          access_log: [{name: l, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.stream.v3.StdoutAccessLog, log_format: {text_format: \"%UPSTREAM_TRANSPORT_FAILURE_REASON%\"}}}]\n"),
			pathMsg(hcmPath+".access_log[0].typed_config.log_format.text_format", "command %UPSTREAM_TRANSPORT_FAILURE_REASON% is unknown or not supported by meshproof")),
		Entry("a file access log without a path",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          access_log: [{name: l, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog}}]\n"),
			pathMsg(hcmPath+".access_log[0].typed_config.path", "")),
		Entry("a local reply mapper with a filter other than status_code_filter or header_filter",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          local_reply_config: {mappers: [{filter: {duration_filter: {comparison: {op: GE, value: {default_value: 1, runtime_key: k}}}}}]}\n"),
			pathMsg(hcmPath+".local_reply_config.mappers[0].filter.duration_filter", "field not supported by meshproof")),
		Entry("a local reply mapper status_code out of range",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          local_reply_config: {mappers: [{filter: {status_code_filter: {comparison: {value: {default_value: 503, runtime_key: k}}}}, status_code: 700}]}\n"),
			pathMsg(hcmPath+".local_reply_config.mappers[0].status_code", "")),
		Entry("malformed YAML",
			"static_resources:\n  clusters: [\n",
			at(2, 13, "", "invalid YAML: sequence end token ']' not found")),
		Entry("two documents",
			"admin: {}\n---\nadmin: {}\n",
			at(3, 1, "", "found 2 YAML documents; want exactly one")),
		Entry("an empty document, at line 1 (FuzzParseBootstrap: every error at a line of the file)",
			"# nothing\n",
			at(1, 1, "", "empty document; want an Envoy v3 bootstrap")),
		Entry("an empty file, at line 1",
			"",
			at(1, 1, "", "empty document; want an Envoy v3 bootstrap")),
		Entry("a list where a bootstrap is wanted",
			"- admin: {}\n",
			at(1, 1, "", "want a mapping of field names to values, got a list")),
		Entry("an unknown field, with a suggestion",
			edit("    load_assignment:\n", "    load_asignment:\n    load_assignment:\n"),
			at(23, 5, clusterPath+".load_asignment",
				`unknown field "load_asignment" in envoy.config.cluster.v3.Cluster (did you mean load_assignment?); supported: circuit_breakers, common_lb_config, connect_timeout, eds_cluster_config, health_checks, http2_protocol_options, ignore_health_on_host_removal, lb_policy, least_request_lb_config, load_assignment, maglev_lb_config, name, outlier_detection, ring_hash_lb_config, round_robin_lb_config, transport_socket, type, typed_extension_protocol_options`)),
		Entry("an unknown field deep in an endpoint",
			edit("address: 127.0.0.1, port_value: 8080", "address: 127.0.0.1, port: 8080"),
			at(27, 69, clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port",
				`unknown field "port" in envoy.config.core.v3.SocketAddress`)),
		Entry("unsupported fields: dns_lookup_family and lrs_server",
			edit("    load_assignment:\n", "    dns_lookup_family: V4_ONLY\n    lrs_server: {self: {}}\n    load_assignment:\n"),
			at(23, 5, clusterPath+".dns_lookup_family",
				"field not supported by meshproof (supported in envoy.config.cluster.v3.Cluster: circuit_breakers, common_lb_config, connect_timeout, eds_cluster_config, health_checks, http2_protocol_options, ignore_health_on_host_removal, lb_policy, least_request_lb_config, load_assignment, maglev_lb_config, name, outlier_detection, ring_hash_lb_config, round_robin_lb_config, transport_socket, type, typed_extension_protocol_options)"),
			at(24, 5, clusterPath+".lrs_server", "field not supported by meshproof")),
		Entry("an unsupported field inside a typed_config",
			edit("stat_prefix: ingress_http", "generate_request_id: false"),
			at(10, 11, hcmPath+".generate_request_id",
				"field not supported by meshproof (supported in envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager: access_log, codec_type, common_http_protocol_options, http_filters, internal_address_config, local_reply_config, max_request_headers_kb, rds, request_headers_timeout, request_timeout, route_config, skip_xff_append, stat_prefix, stream_idle_timeout, strip_any_host_port, strip_matching_host_port, tracing, use_remote_address, xff_num_trusted_hops)")),
		Entry("both strip_matching_host_port and strip_any_host_port",
			edit("          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n          strip_matching_host_port: true\n          strip_any_host_port: true\n"),
			at(12, 32, hcmPath+".strip_any_host_port", "only one of strip_matching_host_port and strip_any_host_port may be set")),
		Entry("RDS and an inline route_config",
			edit("          route_config:\n", "          rds: {route_config_name: r}\n          route_config:\n"),
			at(15, 11, hcmPath+".route_config", "only one of")),
		Entry("a bad duration",
			edit("    load_assignment:\n", "    connect_timeout: fast\n    load_assignment:\n"),
			at(23, 22, clusterPath+".connect_timeout",
				`invalid google.protobuf.Duration value "fast"; want a duration such as "0.25s"`)),
		Entry("a duration written as a number",
			edit("    load_assignment:\n", "    connect_timeout: 5\n    load_assignment:\n"),
			at(23, 22, clusterPath+".connect_timeout", `invalid value 5; want a duration such as "0.25s"`)),
		Entry("a bad enum",
			edit("    load_assignment:\n", "    lb_policy: ROUND_ROBINN\n    load_assignment:\n"),
			at(23, 16, clusterPath+".lb_policy",
				`invalid value "ROUND_ROBINN"; want one of ROUND_ROBIN, LEAST_REQUEST, RING_HASH, RANDOM, MAGLEV, CLUSTER_PROVIDED, LOAD_BALANCING_POLICY_CONFIG (supported by meshproof: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)`)),
		Entry("lb_policy LOAD_BALANCING_POLICY_CONFIG is not supported",
			edit("    load_assignment:\n", "    lb_policy: LOAD_BALANCING_POLICY_CONFIG\n    load_assignment:\n"),
			at(23, 16, clusterPath+".lb_policy", "LOAD_BALANCING_POLICY_CONFIG is not supported by meshproof (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)")),
		Entry("outlier detection with max_ejection_time below base_ejection_time",
			edit("    load_assignment:\n", "    outlier_detection: {base_ejection_time: 30s, max_ejection_time: 10s}\n    load_assignment:\n"),
			at(23, 69, clusterPath+".outlier_detection.max_ejection_time", "10s is smaller than base_ejection_time 30s")),
		Entry("cluster type STRICT_DNS",
			edit("    load_assignment:\n", "    type: STRICT_DNS\n    load_assignment:\n"),
			at(23, 11, clusterPath+".type", "STRICT_DNS is not supported by meshproof (supported: STATIC, EDS)")),
		Entry("codec HTTP2",
			edit("stat_prefix: ingress_http", "codec_type: HTTP2"),
			at(10, 23, hcmPath+".codec_type", "HTTP2 is not supported by meshproof (supported: AUTO, HTTP1)")),
		Entry("an enum number outside the enum",
			edit("    load_assignment:\n", "    lb_policy: 42\n    load_assignment:\n"),
			at(23, 16, clusterPath+".lb_policy", "unknown value 42; want one of ROUND_ROBIN,")),
		Entry("a string where a number is wanted",
			edit("port_value: 8080", "port_value: http"),
			at(27, 81, clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
				`invalid value "http"; want an integer in 0..4294967295`)),
		Entry("a typed_config with an unknown @type",
			edit("filters.http.router.v3.Router}", "filters.http.router.v3.Ruoter}"),
			at(13, 37, hcmPath+".http_filters[0].typed_config.@type",
				`unknown type "type.googleapis.com/envoy.extensions.filters.http.router.v3.Ruoter" (accepted: type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, type.googleapis.com/envoy.extensions.filters.http.router.v3.Router)`)),
		Entry("a typed_config of a known type not accepted there",
			edit("envoy.extensions.filters.http.router.v3.Router}", "envoy.config.cluster.v3.Cluster}"),
			at(13, 37, hcmPath+".http_filters[0].typed_config.@type",
				"type envoy.config.cluster.v3.Cluster is not supported here by meshproof (accepted: type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit, type.googleapis.com/envoy.extensions.filters.http.router.v3.Router)")),
		Entry("the fault filter after the router",
			edit("            typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}\n", `            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          - {name: f, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault, abort: {http_status: 503}}}
`),
			at(12, 13, hcmPath+".http_filters[0]", "the router must be the last HTTP filter"),
			at(14, 13, hcmPath+".http_filters[1]", "the fault filter must come before the router")),
		Entry("a typed_config without @type",
			edit(`typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}`, "typed_config: {}"),
			at(13, 27, hcmPath+".http_filters[0].typed_config", `missing "@type"`)),
		Entry("two members of a oneof",
			edit("match: {prefix: /}", "match: {prefix: /, path: /x}"),
			at(19, 36, hcmPath+".route_config.virtual_hosts[0].routes[0].match.path",
				"only one of prefix, path, safe_regex, path_separated_prefix may be set (prefix is set at 19:25)")),
		Entry("a field set twice, in snake_case and camelCase",
			edit("    load_assignment:\n", "    connect_timeout: 1s\n    connectTimeout: 2s\n    load_assignment:\n"),
			at(24, 5, clusterPath+".connect_timeout", "field set twice (first at 23:5)")),
		Entry("a route to a missing cluster",
			edit("route: {cluster: backend}", "route: {cluster: checkout}"),
			at(20, 34, routePath+".cluster", `unknown cluster "checkout" (clusters: backend)`)),
		Entry("a PGV rule: an empty stat_prefix",
			edit("stat_prefix: ingress_http", `stat_prefix: ""`),
			at(10, 24, hcmPath+".stat_prefix", "value length must be at least 1 runes")),
		Entry("a PGV rule: a port out of range",
			edit("port_value: 8080", "port_value: 80800"),
			at(27, 81, clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_value",
				"value must be less than or equal to 65535")),
		Entry("a PGV rule on a field left out points at its parent",
			edit("      cluster_name: backend\n", "      cluster_name: null\n"),
			at(24, 7, clusterPath+".load_assignment.cluster_name", "value length must be at least 1 runes")),
		Entry("a retry condition Envoy knows but meshproof does not support yet",
			edit("route: {cluster: backend}", `route: {cluster: backend, retry_policy: {retry_on: "5xx,http3-post-connect-failure"}}`),
			at(20, 68, routePath+".retry_policy.retry_on",
				`retry condition "http3-post-connect-failure" is not supported yet (supported: 5xx, cancelled, connect-failure, deadline-exceeded, envoy-ratelimited, gateway-error, internal, refused-stream, reset, reset-before-request, resource-exhausted, retriable-4xx, retriable-headers, retriable-status-codes, unavailable)`)),
		Entry("an unknown retry condition",
			edit("route: {cluster: backend}", `route: {cluster: backend, retry_policy: {retry_on: "5xx,timeout"}}`),
			at(20, 68, routePath+".retry_policy.retry_on", `unknown retry condition "timeout" (Envoy's conditions: 5xx, cancelled,`)),
		Entry("max_interval below base_interval",
			edit("route: {cluster: backend}", `route: {cluster: backend, retry_policy: {retry_back_off: {base_interval: 1s, max_interval: 0.5s}}}`),
			at(20, 108, routePath+".retry_policy.retry_back_off.max_interval", "500ms is less than base_interval 1s")),
		Entry("duplicate cluster names",
			edit("\n  - name: backend\n", "\n  - {name: backend, load_assignment: {cluster_name: b, endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 1}}}}]}]}}\n  - name: backend\n"),
			at(23, 11, "static_resources.clusters[1].name", `duplicate cluster name "backend" (also clusters[0])`)),
		Entry("a cluster without endpoints",
			edit("      endpoints:\n      - lb_endpoints:\n        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}\n", "      endpoints: []\n"),
			at(25, 18, clusterPath+".load_assignment.endpoints", "want at least one endpoint")),
		Entry("a host name where Envoy wants an IP address",
			edit("address: 127.0.0.1, port_value: 8080", "address: backend.local, port_value: 8080"),
			at(27, 58, clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.address",
				`"backend.local" is not an IP address`)),
		Entry("the router not last",
			edit("          route_config:\n", "          - {name: r2, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}\n          route_config:\n"),
			at(12, 13, hcmPath+".http_filters[0]", "the router must be the last HTTP filter")),
		Entry("duplicate domains",
			edit("              domains: [\"*\"]\n", "              domains: [\"*\", a, \"*\"]\n"),
			at(17, 33, hcmPath+".route_config.virtual_hosts[0].domains[2]", `duplicate domain "*" (first in virtual_hosts[0])`)),
	)

	It("formats errors as file:line:col: path: msg", func() {
		_, _, err := config.ParseBootstrap([]byte(edit("    load_assignment:\n", "    lb_policy: CLUSTER_PROVIDED\n    load_assignment:\n")), file)
		Expect(err).To(MatchError("bootstrap.yaml:23:16: static_resources.clusters[0].lb_policy: CLUSTER_PROVIDED is not supported by meshproof (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"))
	})

	It("reports a file it cannot read", func() {
		_, _, err := config.LoadBootstrap(filepath.Join(GinkgoT().TempDir(), "missing.yaml"))
		Expect(err).To(MatchError(os.ErrNotExist))
	})
})

// route is the only route of minimal.
func route(b *config.Bootstrap) *config.Route {
	return &b.Listeners[0].Routes.VirtualHosts[0].Routes[0]
}

func uint32Ptr(v uint32) *uint32 { return &v }

// pathMsg matches a *config.Error with that path and a message containing msg, wherever it is.
func pathMsg(path, msg string) types.GomegaMatcher {
	return SatisfyAll(HaveField("Path", path), HaveField("Msg", ContainSubstring(msg)))
}
