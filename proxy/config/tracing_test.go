package config_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
)

// withTracing adds a bootstrap tracing section (provider) before static_resources and, when hcm is not
// empty, an HCM tracing section after the stat_prefix.
func withTracing(provider, hcm string) string {
	doc := edit("static_resources:\n", provider+"static_resources:\n")
	if hcm == "" {
		return doc
	}
	return editDoc(doc, "          stat_prefix: ingress_http\n", "          stat_prefix: ingress_http\n"+hcm)
}

func editDoc(doc, old, new string) string {
	if strings.Count(doc, old) != 1 {
		panic(fmt.Sprintf("editDoc(%q): want exactly one occurrence", old))
	}
	return strings.Replace(doc, old, new, 1)
}

const otelProvider = `tracing:
  http:
    name: envoy.tracers.opentelemetry
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
      http_service:
        http_uri: {uri: "http://127.0.0.1:4318/v1/traces", cluster: otel, timeout: 0.5s}
      service_name: edge-proxy
`

var _ = Describe("Envoy tracing configuration", func() {
	DescribeTable("valid tracing sections",
		func(doc string, wantTracing *config.Tracing, wantHCM *config.HCMTracing) {
			got, _, err := config.ParseBootstrap([]byte(doc), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(got.Tracing).To(Equal(wantTracing))
			Expect(got.Listeners[0].Tracing).To(Equal(wantHCM))
		},
		Entry("none", minimal, nil, nil),
		Entry("the OpenTelemetry provider over OTLP/HTTP, HCM tracing with the default 100%",
			withTracing(otelProvider, "          tracing: {}\n"),
			&config.Tracing{Endpoint: "http://127.0.0.1:4318/v1/traces", Timeout: 500 * time.Millisecond, ServiceName: "edge-proxy"},
			&config.HCMTracing{RandomSampling: 1}),
		Entry("HCM random_sampling as a percentage",
			withTracing(otelProvider, "          tracing: {random_sampling: {value: 12.5}}\n"),
			&config.Tracing{Endpoint: "http://127.0.0.1:4318/v1/traces", Timeout: 500 * time.Millisecond, ServiceName: "edge-proxy"},
			&config.HCMTracing{RandomSampling: 0.125}),
	)

	DescribeTable("invalid tracing sections",
		func(doc string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(doc), file)
			Expect(err).To(HaveOccurred())
			Expect(config.Errors(err)).To(ContainElement(want))
		},
		Entry("another tracer",
			withTracing(`tracing: {http: {name: envoy.tracers.zipkin, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, http_service: {http_uri: {uri: "http://x:4318", cluster: c, timeout: 1s}}}}}
`, ""),
			HaveField("Msg", ContainSubstring(`"envoy.tracers.zipkin" is not supported: want "envoy.tracers.opentelemetry"`))),
		Entry("gRPC export",
			withTracing(`tracing: {http: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, grpc_service: {envoy_grpc: {cluster_name: otel}}}}}
`, ""),
			HaveField("Path", "tracing.http.typed_config.grpc_service")),
		Entry("an unsupported HCM tracing field",
			withTracing(otelProvider, "          tracing: {verbose: true}\n"),
			HaveField("Path", hcmPath+".tracing.verbose")),
		Entry("a URI that is not an http URL",
			withTracing(`tracing: {http: {name: envoy.tracers.opentelemetry, typed_config: {"@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig, http_service: {http_uri: {uri: "collector:4318", cluster: c, timeout: 1s}}}}}
`, ""),
			HaveField("Msg", ContainSubstring(`"collector:4318": want an http:// or https:// URL`))),
		Entry("random_sampling over 100%",
			withTracing(otelProvider, "          tracing: {random_sampling: {value: 150}}\n"),
			HaveField("Path", ContainSubstring("random_sampling"))),
	)
})
