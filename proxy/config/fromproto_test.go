package config_test

import (
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("FromProto", func() {
	var b *bootstrapv3.Bootstrap

	BeforeEach(func() {
		var err error
		_, b, err = config.ParseBootstrap([]byte(minimal), file)
		Expect(err).NotTo(HaveOccurred())
	})

	It("converts a proto built in code, defaults applied", func() {
		Expect(config.FromProto(b)).To(Equal(minimalWant()))
	})

	DescribeTable("rejects, by field path, protos built in code",
		func(change func(*bootstrapv3.Bootstrap), want ...types.GomegaMatcher) {
			change(b)
			got, err := config.FromProto(b)
			Expect(got).To(BeNil())
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("an unsupported field (dns_lookup_family)",
			func(b *bootstrapv3.Bootstrap) { cluster(b).DnsLookupFamily = clusterv3.Cluster_V4_ONLY },
			atPath(clusterPath+".dns_lookup_family", "field not supported by meshproof (supported in envoy.config.cluster.v3.Cluster:")),
		Entry("an unsupported enum value",
			func(b *bootstrapv3.Bootstrap) { cluster(b).LbPolicy = clusterv3.Cluster_CLUSTER_PROVIDED },
			atPath(clusterPath+".lb_policy", "CLUSTER_PROVIDED is not supported by meshproof (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)")),
		Entry("max_ejection_time below base_ejection_time",
			func(b *bootstrapv3.Bootstrap) {
				cluster(b).OutlierDetection = &clusterv3.OutlierDetection{BaseEjectionTime: durationpb.New(time.Minute), MaxEjectionTime: durationpb.New(time.Second)}
			},
			atPath(clusterPath+".outlier_detection.max_ejection_time", "1s is smaller than base_ejection_time 1m0s")),
		Entry("an unsupported field inside a typed_config",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) { h.GenerateRequestId = wrapperspb.Bool(false) })
			},
			atPath(hcmPath+".generate_request_id", "field not supported by meshproof")),
		Entry("a typed_config of a type not accepted there",
			func(b *bootstrapv3.Bootstrap) {
				b.StaticResources.Listeners[0].FilterChains[0].Filters[0].ConfigType = typedConfig(&routerv3.Router{})
			},
			atPath(hcmPath+".@type", "type envoy.extensions.filters.http.router.v3.Router is not supported here by meshproof (accepted: type.googleapis.com/"+
				"envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, type.googleapis.com/"+
				"envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager)")),
		Entry("a PGV rule, path in proto names (load_balancing_weight ≥ 1)",
			func(b *bootstrapv3.Bootstrap) {
				cluster(b).LoadAssignment.Endpoints[0].LbEndpoints[0].LoadBalancingWeight = wrapperspb.UInt32(0)
			},
			atPath(clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].load_balancing_weight", "value must be greater than or equal to 1")),
		Entry("a PGV rule inside a typed_config (a negative request_timeout)",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) { h.RequestTimeout = durationpb.New(-1) })
			},
			atPath(hcmPath+".request_timeout", "")),
		Entry("a negative HCM idle_timeout",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) {
					h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(-time.Second)}
				})
			},
			atPath(hcmPath+".common_http_protocol_options.idle_timeout", "")),
		Entry("a negative HCM stream_idle_timeout",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) { h.StreamIdleTimeout = durationpb.New(-time.Second) })
			},
			atPath(hcmPath+".stream_idle_timeout", "")),
		Entry("a negative HCM max_stream_duration",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) {
					h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxStreamDuration: durationpb.New(-time.Second)}
				})
			},
			atPath(hcmPath+".common_http_protocol_options.max_stream_duration", "")),
		Entry("an unsupported field of the HCM common_http_protocol_options",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) {
					h.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{MaxConnectionDuration: durationpb.New(time.Minute)}
				})
			},
			atPath(hcmPath+".common_http_protocol_options.max_connection_duration", "field not supported by meshproof")),
		Entry("neither route_config nor rds",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) { h.RouteSpecifier = nil })
			},
			atPath(hcmPath+".route_specifier", "value is required (set one of rds, route_config)")),
		Entry("no HTTP filter",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) { h.HttpFilters = nil })
			},
			atPath(hcmPath+".http_filters", "want at least the router filter")),
		Entry("two network filters",
			func(b *bootstrapv3.Bootstrap) {
				chain := b.StaticResources.Listeners[0].FilterChains[0]
				chain.Filters = append(chain.Filters, chain.Filters[0])
			},
			atPath("static_resources.listeners[0].filter_chains[0].filters[0].typed_config",
				"want a typed_config of type envoy.extensions.filters.network.connection_limit.v3.ConnectionLimit, got envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager")),
		Entry("three network filters",
			func(b *bootstrapv3.Bootstrap) {
				chain := b.StaticResources.Listeners[0].FilterChains[0]
				chain.Filters = append(chain.Filters, chain.Filters[0], chain.Filters[0])
			},
			atPath("static_resources.listeners[0].filter_chains[0].filters", "want the HTTP connection manager, optionally after a connection_limit filter, got 3 network filters")),
		Entry("a route without an action",
			func(b *bootstrapv3.Bootstrap) {
				editHCM(b, func(h *hcmv3.HttpConnectionManager) {
					h.GetRouteConfig().VirtualHosts[0].Routes[0].Action = nil
				})
			},
			atPath(hcmPath+".route_config.virtual_hosts[0].routes[0].action", "value is required (set one of route, redirect, direct_response)")),
		Entry("a socket address without a port",
			func(b *bootstrapv3.Bootstrap) {
				cluster(b).LoadAssignment.Endpoints[0].LbEndpoints[0].GetEndpoint().GetAddress().GetSocketAddress().PortSpecifier = nil
			},
			atPath(clusterPath+".load_assignment.endpoints[0].lb_endpoints[0].endpoint.address.socket_address.port_specifier", "value is required")),
		Entry("duplicate cluster names and a missing cluster",
			func(b *bootstrapv3.Bootstrap) {
				b.StaticResources.Clusters = append(b.StaticResources.Clusters, b.StaticResources.Clusters[0])
				editHCM(b, func(h *hcmv3.HttpConnectionManager) {
					h.GetRouteConfig().VirtualHosts[0].Routes[0].GetRoute().ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: "nope"}
				})
			},
			atPath("static_resources.clusters[1].name", `duplicate cluster name "backend" (also clusters[0])`),
			atPath(routePath+".cluster", `unknown cluster "nope" (clusters: backend)`)),
	)
})

// cluster is the only cluster of minimal.
func cluster(b *bootstrapv3.Bootstrap) *clusterv3.Cluster {
	return b.StaticResources.Clusters[0]
}

// editHCM changes the HTTP connection manager of minimal's listener in place.
func editHCM(b *bootstrapv3.Bootstrap, change func(*hcmv3.HttpConnectionManager)) {
	filter := b.StaticResources.Listeners[0].FilterChains[0].Filters[0]
	hcm := &hcmv3.HttpConnectionManager{}
	Expect(filter.GetTypedConfig().UnmarshalTo(hcm)).To(Succeed())
	change(hcm)
	filter.ConfigType = typedConfig(hcm)
}

// typedConfig packs m as a listener filter's typed_config.
func typedConfig(m proto.Message) *listenerv3.Filter_TypedConfig {
	a, err := anypb.New(m)
	Expect(err).NotTo(HaveOccurred())
	return &listenerv3.Filter_TypedConfig{TypedConfig: a}
}
