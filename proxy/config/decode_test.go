package config_test

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/parser"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy/config"
)

// scenario embeds Envoy fragments the way a meshproof scenario does.
const scenario = `name: demo
proxies:
  edge:
    route: &route
      timeout: 1s
      retry_policy: {retry_on: "5xx", num_retries: 2}
    cluster:
      <<: {connect_timeout: 2s, lb_policy: ROUND_ROBIN}
      connect_timeout: 0.5s
    alias_route: *route
    virtual_host:
      retry_policy: &rp {retry_on: reset}
      routes:
      - match: {prefix: /}
        route: {cluster: a, retry_policy: *rp}
    bad_cluster:
      lb_policy: CLUSTER_PROVIDED
      dns_lookup_family: V4_ONLY
      connectTimeout: soon
`

var _ = Describe("DecodeNode", func() {
	// node returns the node of the scenario at a YAML path such as "$.proxies.edge.route".
	node := func(path string) ast.Node {
		f, err := parser.ParseBytes([]byte(scenario), 0)
		Expect(err).NotTo(HaveOccurred())
		p, err := yaml.PathString(path)
		Expect(err).NotTo(HaveOccurred())
		n, err := p.FilterFile(f)
		Expect(err).NotTo(HaveOccurred())
		return n
	}

	DescribeTable("decodes a fragment of a larger document",
		func(path string, msg, want proto.Message) {
			Expect(config.DecodeNode(node(path), msg, "scenario.yaml", "proxies.edge.x")).To(Succeed())
			Expect(proto.Equal(msg, want)).To(BeTrue(), "got %v, want %v", msg, want)
		},
		Entry("a RouteAction", "$.proxies.edge.route", &routev3.RouteAction{}, &routev3.RouteAction{
			Timeout:     durationpb.New(time.Second),
			RetryPolicy: &routev3.RetryPolicy{RetryOn: "5xx", NumRetries: wrapperspb.UInt32(2)},
		}),
		Entry("a VirtualHost with an alias of an anchor inside it", "$.proxies.edge.virtual_host", &routev3.VirtualHost{}, &routev3.VirtualHost{
			RetryPolicy: &routev3.RetryPolicy{RetryOn: "reset"},
			Routes: []*routev3.Route{{
				Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{
					ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "a"},
					RetryPolicy:      &routev3.RetryPolicy{RetryOn: "reset"},
				}},
			}},
		}),
		Entry("a Cluster with a merge key its own keys override", "$.proxies.edge.cluster", &clusterv3.Cluster{}, &clusterv3.Cluster{
			ConnectTimeout: durationpb.New(500 * time.Millisecond),
		}),
	)

	It("rejects an alias of an anchor outside the fragment", func() {
		err := config.DecodeNode(node("$.proxies.edge.alias_route"), &routev3.RouteAction{}, "scenario.yaml", "proxies.edge.route")
		Expect(config.Errors(err)).To(HaveExactElements(
			errorAt("scenario.yaml", 10, 18, "proxies.edge.route", `an alias of anchor "route", which is not defined in the decoded node`),
		))
	})

	It("reports every error of a fragment, with the caller's path prefix", func() {
		err := config.DecodeNode(node("$.proxies.edge.bad_cluster"), &clusterv3.Cluster{}, "scenario.yaml", "proxies.edge.cluster")
		Expect(config.Errors(err)).To(HaveExactElements(
			errorAt("scenario.yaml", 17, 18, "proxies.edge.cluster.lb_policy", "CLUSTER_PROVIDED is not supported by meshproof (supported: ROUND_ROBIN, LEAST_REQUEST, RANDOM, RING_HASH, MAGLEV)"),
			errorAt("scenario.yaml", 18, 7, "proxies.edge.cluster.dns_lookup_family", "field not supported by meshproof"),
			errorAt("scenario.yaml", 19, 23, "proxies.edge.cluster.connect_timeout", `want a duration such as "0.25s"`),
		))
		Expect(err).To(MatchError(ContainSubstring("scenario.yaml:18:7: proxies.edge.cluster.dns_lookup_family: field not supported by meshproof")))
	})

	It("leaves a null fragment empty", func() {
		f, err := parser.ParseBytes([]byte("cluster: null\n"), 0)
		Expect(err).NotTo(HaveOccurred())
		msg := &clusterv3.Cluster{Name: "stale"}
		Expect(config.DecodeNode(f.Docs[0].Body.(*ast.MappingNode).Values[0].Value, msg, "f.yaml", "cluster")).To(Succeed())
		Expect(proto.Equal(msg, &clusterv3.Cluster{})).To(BeTrue())
	})
})

var _ = Describe("Error", func() {
	DescribeTable("formats as file:line:col: path: msg, omitting what is empty",
		func(e config.Error, want string) { Expect(e.Error()).To(Equal(want)) },
		Entry("everything", config.Error{File: "b.yaml", Line: 3, Column: 7, Path: "admin", Msg: "bad"}, "b.yaml:3:7: admin: bad"),
		Entry("no column", config.Error{File: "b.yaml", Line: 3, Path: "admin", Msg: "bad"}, "b.yaml:3: admin: bad"),
		Entry("no position", config.Error{Path: "admin.address", Msg: "bad"}, "admin.address: bad"),
		Entry("no path", config.Error{File: "b.yaml", Line: 1, Column: 1, Msg: "bad"}, "b.yaml:1:1: bad"),
		Entry("only a file", config.Error{File: "b.yaml", Msg: "empty"}, "b.yaml: empty"),
	)
})
