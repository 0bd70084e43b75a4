package config_test

import (
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy/config"
)

// dynamicDoc is a bootstrap whose clusters and listeners come over ADS, with a static listener whose
// routes come from RDS and a static cluster whose endpoints come from EDS.
const dynamicDoc = `node: {id: edge-0, cluster: edge}
dynamic_resources:
  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 3s}
  lds_config: {ads: {}}
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          rds: {route_config_name: local_route, config_source: {ads: {}, initial_fetch_timeout: 0s}}
  clusters:
  - name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 18000}}}
  - name: backend
    type: EDS
    eds_cluster_config: {service_name: backend-svc, eds_config: {ads: {}}}
`

func editDynamic(old, new string) string {
	if n := strings.Count(dynamicDoc, old); n != 1 {
		panic("editDynamic: " + old)
	}
	return strings.Replace(dynamicDoc, old, new, 1)
}

// pathErr matches a *config.Error by its path and part of its message.
func pathErr(path, msg string) types.GomegaMatcher {
	return SatisfyAll(HaveField("Path", path), HaveField("Msg", ContainSubstring(msg)))
}

var _ = Describe("dynamic_resources", func() {
	It("reads the ADS stream, CDS and LDS over it, RDS in the HCM and EDS clusters", func() {
		got, _, err := config.ParseBootstrap([]byte(dynamicDoc), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Node).To(Equal(&config.Node{ID: "edge-0", Cluster: "edge"}))
		Expect(got.Dynamic).To(Equal(&config.DynamicResources{Delta: true, ADSCluster: "xds_cluster",
			CDS: &config.ConfigSource{InitialFetchTimeout: 3 * time.Second},
			LDS: &config.ConfigSource{InitialFetchTimeout: 15 * time.Second}}))
		Expect(got.Listeners[0].RDS).To(Equal(&config.RDS{RouteConfigName: "local_route"}))
		Expect(got.Clusters[1].EDS).To(Equal(&config.EDS{ServiceName: "backend-svc",
			Source: config.ConfigSource{InitialFetchTimeout: 15 * time.Second}}))
		Expect(got.Clusters[1].Endpoints).To(BeEmpty())
	})

	It("reads rate_limit_settings with Envoy's defaults", func() {
		got, _, err := config.ParseBootstrap([]byte(editDynamic("    transport_api_version: V3\n",
			"    transport_api_version: V3\n    rate_limit_settings: {fill_rate: 0.5}\n")), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Dynamic.RateLimit).To(Equal(&config.RateLimit{MaxTokens: 100, FillRate: 0.5}))
	})

	DescribeTable("rejects by field path",
		func(doc string, want ...types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(doc), file)
			Expect(config.Errors(err)).To(ConsistOf(want))
		},
		Entry("a REST api_type",
			editDynamic("api_type: DELTA_GRPC", "api_type: REST"),
			pathErr("dynamic_resources.ads_config.api_type", "REST is not supported by meshproof (supported: GRPC, DELTA_GRPC)")),
		Entry("a google_grpc service",
			editDynamic("{envoy_grpc: {cluster_name: xds_cluster}}", "{google_grpc: {target_uri: x, stat_prefix: x}}"),
			pathErr("dynamic_resources.ads_config.grpc_services[0].google_grpc", "field not supported by meshproof")),
		Entry("an ADS cluster that is not a static STATIC cluster",
			editDynamic("cluster_name: xds_cluster}", "cluster_name: backend}"),
			pathErr("dynamic_resources.ads_config.grpc_services[0].envoy_grpc.cluster_name", `"backend" is not a static cluster of type STATIC`)),
		Entry("CDS from a file",
			editDynamic("cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 3s}", "cds_config: {path_config_source: {path: /x}}"),
			pathErr("dynamic_resources.cds_config.path_config_source", "field not supported by meshproof")),
		Entry("set_node_on_first_message_only",
			editDynamic("transport_api_version: V3", "set_node_on_first_message_only: true"),
			pathErr("dynamic_resources.ads_config.set_node_on_first_message_only", "field not supported by meshproof")),
		Entry("an EDS cluster with endpoints of its own",
			editDynamic("    eds_cluster_config: {service_name: backend-svc, eds_config: {ads: {}}}\n",
				"    eds_cluster_config: {service_name: backend-svc, eds_config: {ads: {}}}\n    load_assignment: {cluster_name: backend}\n"),
			pathErr("static_resources.clusters[1].load_assignment", "not with type EDS")),
		Entry("an EDS cluster without eds_cluster_config",
			editDynamic("    eds_cluster_config: {service_name: backend-svc, eds_config: {ads: {}}}\n", ""),
			pathErr("static_resources.clusters[1].eds_cluster_config", "required with type EDS")),
		Entry("rds without ads_config",
			editDynamic(`  ads_config:
    api_type: DELTA_GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
  cds_config: {ads: {}, resource_api_version: V3, initial_fetch_timeout: 3s}
  lds_config: {ads: {}}
`, "  {}\n"),
			pathErr("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.rds.config_source.ads", "needs dynamic_resources.ads_config"),
			pathErr("static_resources.clusters[1].eds_cluster_config.eds_config.ads", "needs dynamic_resources.ads_config")),
	)
})

var _ = Describe("one xDS resource", func() {
	It("is checked with the static subset's rules, its paths from the resource's own fields", func() {
		cl := &clusterv3.Cluster{Name: "b", ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
			EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{EdsConfig: &corev3.ConfigSource{
				ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}},
			DnsLookupFamily: clusterv3.Cluster_V4_ONLY}
		_, err := config.ClusterFromProto(cl)
		Expect(config.Errors(err)).To(ConsistOf(pathErr("dns_lookup_family", "field not supported by meshproof")))

		cl.DnsLookupFamily = 0
		cl.ConnectTimeout = durationpb.New(-time.Second)
		_, err = config.ClusterFromProto(cl)
		Expect(config.Errors(err)).To(ConsistOf(pathErr("connect_timeout", "")))

		cl.ConnectTimeout = nil
		got, err := config.ClusterFromProto(cl)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.EDS.ServiceName).To(Equal("b"))

		rc := &routev3.RouteConfiguration{Name: "r", ValidateClusters: wrapperspb.Bool(true)}
		_, err = config.RouteConfigFromProto(rc)
		Expect(config.Errors(err)).To(ConsistOf(pathErr("validate_clusters", "field not supported by meshproof")))

		// Routes from RDS may name clusters that CDS has not sent (yet).
		rc = &routev3.RouteConfiguration{Name: "r", VirtualHosts: []*routev3.VirtualHost{{Name: "v", Domains: []string{"*"},
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "later"}}}}}}}}
		routes, err := config.RouteConfigFromProto(rc)
		Expect(err).NotTo(HaveOccurred())
		Expect(routes.VirtualHosts[0].Routes[0].Action.Cluster).To(Equal("later"))

		cla := &endpointv3.ClusterLoadAssignment{ClusterName: "b"}
		eps, err := config.EndpointsFromProto(cla)
		Expect(err).NotTo(HaveOccurred())
		Expect(eps).To(BeEmpty())
	})
})
