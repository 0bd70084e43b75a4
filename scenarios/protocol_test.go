package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"

	"github.com/meshproof/meshproof/scenarios"
)

const grpcScenario = `name: grpc
services:
  echo: {instances: 2}
proxies:
  edge: {routes_to: echo}
load:
  target: edge
  rate: 10/s
  duration: 1s
  protocol: grpc
  grpc: {method: server_stream, deadline: 500ms, replies: 3}
`

var _ = Describe("load.protocol", func() {
	It("defaults to http1, and the clusters speak HTTP/1.1 (no protocol options)", func() {
		sc, err := scenarios.Parse([]byte(valid), "demo.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Load.Protocol).To(Equal(scenarios.ProtocolHTTP1))
		Expect(sc.Load.GRPC).To(BeNil())
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0", Endpoints: map[string][]string{"backend": {"127.0.0.1:1"}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(b.GetStaticResources().GetClusters()[0].GetTypedExtensionProtocolOptions()).To(BeEmpty())
	})

	It("reads a gRPC load, and makes the proxies speak HTTP/2 to the instances", func() {
		sc, err := scenarios.Parse([]byte(grpcScenario), "grpc.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Load.GRPC).To(Equal(&scenarios.LoadGRPC{Method: "server_stream", Deadline: scenarios.Duration{Duration: 500 * time.Millisecond}, Replies: 3}))
		Expect(sc.Proxies["edge"].UpstreamHTTP2).To(BeTrue())
	})

	It("makes every cluster speak HTTP/2 to the instances with h2c or gRPC: HttpProtocolOptions explicit_http_config http2_protocol_options", func() {
		sc, err := scenarios.Parse([]byte(valid), "demo.yaml")
		Expect(err).NotTo(HaveOccurred())
		sc.Proxies["edge"].UpstreamHTTP2 = true // as Parse sets it for protocol h2c or grpc
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0", Endpoints: map[string][]string{"backend": {"127.0.0.1:1"}}})
		Expect(err).NotTo(HaveOccurred())
		opts := b.GetStaticResources().GetClusters()[0].GetTypedExtensionProtocolOptions()
		Expect(opts).To(HaveKey(scenarios.HTTPProtocolOptionsKey))
		var hpo upstreamhttpv3.HttpProtocolOptions
		Expect(opts[scenarios.HTTPProtocolOptionsKey].UnmarshalTo(&hpo)).To(Succeed())
		Expect(hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions()).NotTo(BeNil())
	})

	DescribeTable("refuses a bad protocol or gRPC shape, with file:line and the accepted values",
		func(old, new, want string) {
			doc := strings.Replace(grpcScenario, old, new, 1)
			Expect(doc).NotTo(Equal(grpcScenario), "the replacement must apply")
			_, err := scenarios.Parse([]byte(doc), "grpc.yaml")
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("unknown protocol", "protocol: grpc", "protocol: http3",
			`grpc.yaml:10:13: load.protocol: "http3" is not accepted: one of http1, h2c, grpc (default http1)`),
		Entry("grpc shape without grpc", "protocol: grpc", "protocol: h2c",
			"grpc.yaml:11:9: load.grpc: only with protocol: grpc (the load's protocol is h2c)"),
		Entry("a path", "  protocol: grpc\n", "  protocol: grpc\n  path: /x\n",
			"load.path: a gRPC load calls meshproof.test.v1.Echo and sets its own path: leave it out (shape the calls with load.grpc)"),
		Entry("a method", "  protocol: grpc\n", "  protocol: grpc\n  method: POST\n",
			"load.method: a gRPC load calls meshproof.test.v1.Echo and sets its own method"),
		Entry("unknown gRPC method", "method: server_stream", "method: bidi",
			`load.grpc.method: "bidi" is not accepted: one of unary, server_stream (default unary)`),
		Entry("replies on a unary call", "method: server_stream, ", "",
			"load.grpc.replies: only with method: server_stream (a unary call has one reply)"),
		Entry("negative deadline", "deadline: 500ms", "deadline: -1s",
			`grpc.yaml:11:43: load.grpc.deadline: "-1s" is negative`),
		Entry("payload too large", "replies: 3", "replies: 3, payload: 5000000",
			"load.grpc.payload: 5000000 bytes is out of range: 0 to 4194304"),
		Entry("an unknown gRPC field", "replies: 3", "replies: 3, deadlin: 1s", "deadlin"),
	)

	It("refuses gRPC or h2c for services that call others, by name (their calls stay HTTP/1.1)", func() {
		doc := strings.Replace(grpcScenario, "  echo: {instances: 2}\n", "  echo: {instances: 2, calls: [{service: db}]}\n  db: {instances: 1}\n", 1)
		_, err := scenarios.Parse([]byte(doc), "grpc.yaml")
		Expect(err).To(MatchError(ContainSubstring("load.protocol: grpc with services that call others (echo has calls) is not supported yet")))
	})
})

var _ = Describe("the gRPC example (issue #16)", func() {
	It("loads, and its bootstrap gives every cluster explicit HTTP/2 and the listener codec_type AUTO (h2c by preface)", func() {
		sc, err := scenarios.LoadFile("examples/grpc-deadline-retries.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Load.Protocol).To(Equal(scenarios.ProtocolGRPC))
		Expect(sc.Proxies).NotTo(BeEmpty())
		for name := range sc.Proxies {
			b, err := scenarios.BuildBootstrap(sc, name, scenarios.Addresses{Listener: "127.0.0.1:0",
				Endpoints: map[string][]string{"echo": {"127.0.0.1:1", "127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"}}})
			Expect(err).NotTo(HaveOccurred())
			clusters := b.GetStaticResources().GetClusters()
			Expect(clusters).NotTo(BeEmpty())
			for _, c := range clusters {
				var hpo upstreamhttpv3.HttpProtocolOptions
				Expect(c.GetTypedExtensionProtocolOptions()).To(HaveKey(scenarios.HTTPProtocolOptionsKey), c.GetName())
				Expect(c.GetTypedExtensionProtocolOptions()[scenarios.HTTPProtocolOptionsKey].UnmarshalTo(&hpo)).To(Succeed())
				Expect(hpo.GetExplicitHttpConfig().GetHttp2ProtocolOptions()).NotTo(BeNil(), c.GetName())
			}
			var hcm hcmv3.HttpConnectionManager
			Expect(b.GetStaticResources().GetListeners()[0].GetFilterChains()[0].GetFilters()[0].GetTypedConfig().UnmarshalTo(&hcm)).To(Succeed())
			Expect(hcm.GetCodecType()).To(Equal(hcmv3.HttpConnectionManager_AUTO))
		}
	})
})
