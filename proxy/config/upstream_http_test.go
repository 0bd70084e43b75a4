package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
)

// A cluster's HTTP protocol: typed_extension_protocol_options' HttpProtocolOptions
// (api/envoy/extensions/upstreams/http/v3/http_protocol_options.proto), or the deprecated
// Cluster.http2_protocol_options.
var _ = Describe("upstream HTTP protocol options", func() {
	const hpo = "    typed_extension_protocol_options:\n      envoy.extensions.upstreams.http.v3.HttpProtocolOptions:\n        \"@type\": type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions\n"
	with := func(lines string) string {
		return edit("    load_assignment:\n", lines+"    load_assignment:\n")
	}
	named := func(path, msg string) types.GomegaMatcher {
		return SatisfyAll(HaveField("Path", path), HaveField("Msg", ContainSubstring(msg)))
	}
	h2Defaults := config.DefaultHTTP2Options()
	const tlsSocket = "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext}\n"
	optsPath := clusterPath + ".typed_extension_protocol_options[envoy.extensions.upstreams.http.v3.HttpProtocolOptions]"

	DescribeTable("converts",
		func(lines string, want config.UpstreamHTTP) {
			got, _, err := config.ParseBootstrap([]byte(with(lines)), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Clusters[0].HTTP).To(Equal(want))
		},
		Entry("none: HTTP/1.1, Envoy's defaults (the zero value)", "", config.UpstreamHTTP{}),
		Entry("explicit HTTP/2 with its options",
			hpo+"        explicit_http_config: {http2_protocol_options: {max_concurrent_streams: 7, initial_stream_window_size: 65535, initial_connection_window_size: 1048576}}\n",
			config.UpstreamHTTP{Protocol: config.UpstreamHTTP2, IdleTimeout: time.Hour,
				HTTP2: config.HTTP2Options{MaxConcurrentStreams: 7, InitialStreamWindowSize: 65535, InitialConnectionWindowSize: 1 << 20}}),
		Entry("explicit HTTP/1.1 and its idle_timeout",
			hpo+"        common_http_protocol_options: {idle_timeout: 30s}\n        explicit_http_config: {http_protocol_options: {}}\n",
			config.UpstreamHTTP{IdleTimeout: 30 * time.Second, HTTP2: h2Defaults}),
		Entry("HTTP/2's max_requests_per_connection",
			hpo+"        common_http_protocol_options: {max_requests_per_connection: 100}\n        explicit_http_config: {http2_protocol_options: {}}\n",
			config.UpstreamHTTP{Protocol: config.UpstreamHTTP2, IdleTimeout: time.Hour, MaxRequestsPerConnection: 100, HTTP2: h2Defaults}),
		Entry("idle_timeout 0 disables it",
			hpo+"        common_http_protocol_options: {idle_timeout: 0s}\n        explicit_http_config: {http2_protocol_options: {}}\n",
			config.UpstreamHTTP{Protocol: config.UpstreamHTTP2, NoIdleTimeout: true, HTTP2: h2Defaults}),
		Entry("auto_config (over TLS)",
			tlsSocket+hpo+"        auto_config: {http2_protocol_options: {max_concurrent_streams: 3}, http_protocol_options: {}}\n",
			config.UpstreamHTTP{Protocol: config.UpstreamAuto, IdleTimeout: time.Hour,
				HTTP2: config.HTTP2Options{MaxConcurrentStreams: 3, InitialStreamWindowSize: 268435456, InitialConnectionWindowSize: 268435456}}),
		Entry("the deprecated Cluster.http2_protocol_options",
			"    http2_protocol_options: {max_concurrent_streams: 2}\n",
			config.UpstreamHTTP{Protocol: config.UpstreamHTTP2, IdleTimeout: time.Hour,
				HTTP2: config.HTTP2Options{MaxConcurrentStreams: 2, InitialStreamWindowSize: 268435456, InitialConnectionWindowSize: 268435456}}),
	)

	It("keeps auto_config's ALPN choice to TLS clusters, as Envoy", func() {
		_, _, err := config.ParseBootstrap([]byte(with(hpo+"        auto_config: {}\n")), file)
		Expect(config.Errors(err)).To(ContainElement(named(optsPath+".auto_config", "needs a TLS transport_socket")))
	})

	DescribeTable("rejects by field path",
		func(lines string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(with(lines)), file)
			Expect(config.Errors(err)).To(ContainElement(want))
		},
		Entry("use_downstream_protocol_config",
			hpo+"        use_downstream_protocol_config: {}\n",
			named(optsPath+".use_downstream_protocol_config", "not supported")),
		Entry("no protocol chosen",
			hpo+"        common_http_protocol_options: {idle_timeout: 1s}\n",
			named(optsPath+".upstream_protocol_options", "explicit_http_config, auto_config")),
		Entry("an HTTP/2 option outside the subset",
			hpo+"        explicit_http_config: {http2_protocol_options: {allow_connect: true}}\n",
			named(optsPath+".explicit_http_config.http2_protocol_options.allow_connect", "max_concurrent_streams")),
		Entry("a stream window below 65535",
			hpo+"        explicit_http_config: {http2_protocol_options: {initial_stream_window_size: 100}}\n",
			named(optsPath+".explicit_http_config.http2_protocol_options.initial_stream_window_size", "")),
		Entry("max_stream_duration on a cluster",
			hpo+"        common_http_protocol_options: {max_stream_duration: 1s}\n        explicit_http_config: {http2_protocol_options: {}}\n",
			named(optsPath+".common_http_protocol_options.max_stream_duration", "not supported on a cluster")),
		Entry("max_requests_per_connection on HTTP/1.1",
			hpo+"        common_http_protocol_options: {max_requests_per_connection: 1}\n        explicit_http_config: {http_protocol_options: {}}\n",
			named(optsPath+".common_http_protocol_options.max_requests_per_connection", "only for HTTP/2")),
		Entry("the deprecated field with the extension",
			hpo+"        explicit_http_config: {http2_protocol_options: {}}\n    http2_protocol_options: {}\n",
			named(clusterPath+".http2_protocol_options", "deprecated")),
	)

	DescribeTable("health checks' codec_client_type",
		func(codec string, want bool) {
			hc := "    health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /healthz" + codec + "}}]\n"
			got, _, err := config.ParseBootstrap([]byte(with(hc)), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Clusters[0].HealthCheckHTTP2).To(Equal(want))
		},
		Entry("default: HTTP1", "", false),
		Entry("HTTP1", ", codec_client_type: HTTP1", false),
		Entry("HTTP2", ", codec_client_type: HTTP2", true),
	)

	It("refuses an HTTP/3 health check by its value", func() {
		hc := "    health_checks: [{timeout: 1s, interval: 1s, unhealthy_threshold: 1, healthy_threshold: 1, http_health_check: {path: /, codec_client_type: HTTP3}}]\n"
		_, _, err := config.ParseBootstrap([]byte(with(hc)), file)
		Expect(config.Errors(err)).To(ContainElement(named(clusterPath+".health_checks[0].http_health_check.codec_client_type", "HTTP3")))
	})

	It("lets a cluster offer h2 over ALPN", func() {
		tls := "    transport_socket:\n      name: envoy.transport_sockets.tls\n      typed_config:\n        \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext\n        common_tls_context: {alpn_protocols: [h2, http/1.1]}\n"
		got, _, err := config.ParseBootstrap([]byte(with(tls)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Clusters[0].TLS.ALPN).To(Equal([]string{"h2", "http/1.1"}))
	})
})
