package scenarios_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// A proxy routes by Envoy v3 routes whose clusters are the scenario's services (issue #15's canary
// example needs several routes and a weighted split in the scenario format).
var _ = Describe("a proxy's routes", func() {
	const canary = `name: canary
services:
  checkout: {instances: 3}
  checkout-canary: {instances: 1}
  unused: {}
proxies:
  edge:
    routes:
      - match:
          prefix: /
          headers: [{name: x-canary, string_match: {exact: always}}]
        route: {cluster: checkout-canary}
      - match: {prefix: /}
        route:
          timeout: 1s
          weighted_clusters:
            clusters:
              - {name: checkout, weight: 90}
              - {name: checkout-canary, weight: 10}
    cluster: {connect_timeout: 0.25s}
    virtual_host: {include_attempt_count_in_response: true}
load:
  target: edge
  rate: 10/s
  duration: 5s
  mix:
    - {weight: 4}
    - {weight: 1, path: /cart, method: post, headers: {x-canary: always}, body: hi}
`

	It("builds one virtual host holding the routes in order, and a STATIC cluster per service they name", func() {
		sc, err := scenarios.Parse([]byte(canary), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Proxies["edge"].Services()).To(Equal([]string{"checkout", "checkout-canary"}))
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0", Endpoints: map[string][]string{
			"checkout": {"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}, "checkout-canary": {"127.0.0.1:7101"},
		}})
		Expect(err).NotTo(HaveOccurred())
		cfg, err := config.FromProto(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Clusters).To(HaveLen(2))
		Expect(cfg.Clusters[0].Name).To(Equal("checkout"))
		Expect(cfg.Clusters[0].Endpoints).To(HaveLen(3))
		Expect(cfg.Clusters[1].Name).To(Equal("checkout-canary"))
		Expect(cfg.Clusters[1].Endpoints).To(HaveLen(1))
		Expect(cfg.Clusters[1].ConnectTimeout.String()).To(Equal("250ms"))
		vhs := cfg.Listeners[0].Routes.VirtualHosts
		Expect(vhs).To(HaveLen(1))
		Expect(vhs[0].Domains).To(Equal([]string{"*"}))
		Expect(vhs[0].IncludeAttemptCountInResponse).To(BeTrue())
		Expect(vhs[0].Routes).To(HaveLen(2))
		Expect(vhs[0].Routes[0].Action.Cluster).To(Equal("checkout-canary"))
		Expect(vhs[0].Routes[0].Match.Headers).To(HaveLen(1))
		Expect(vhs[0].Routes[1].Action.WeightedClusters).NotTo(BeNil())
		Expect(vhs[0].Routes[1].Action.WeightedClusters.Clusters).To(HaveLen(2))
	})

	It("fills in the load mix's defaults", func() {
		sc, err := scenarios.Parse([]byte(canary), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		mix := sc.Load.Mix
		Expect(mix).To(HaveLen(2))
		Expect(mix[0].Weight).To(Equal(4))
		Expect(mix[1].Method).To(Equal("POST"))
		Expect(*mix[1].Body).To(Equal("hi"))
	})

	type want struct {
		line int
		path string
		msg  string
	}
	DescribeTable("refuses, at the field",
		func(old, new string, w want) {
			Expect(canary).To(ContainSubstring(old))
			_, err := scenarios.Parse([]byte(strings.Replace(canary, old, new, 1)), "c.yaml")
			Expect(err).To(HaveOccurred())
			Expect(errorsOf(err)).To(ContainElement(And(HaveField("Line", w.line), HaveField("Path", w.path),
				HaveField("Msg", ContainSubstring(w.msg)))), err.Error())
		},
		Entry("a weighted cluster that is not a service", "{name: checkout, weight: 90}", "{name: checkout-v3, weight: 90}",
			want{18, "proxies.edge.routes[1].route.weighted_clusters.clusters[0].name", `"checkout-v3" is not a service of this scenario`}),
		Entry("a route's cluster that is not a service", "route: {cluster: checkout-canary}", "route: {cluster: nope}",
			want{12, "proxies.edge.routes[0].route.cluster", `"nope" is not a service of this scenario`}),
		Entry("an Envoy field outside the subset, by its path", "route: {cluster: checkout-canary}", "route: {cluster: checkout-canary, timeoutz: 1s}",
			want{12, "proxies.edge.routes[0].route.timeoutz", "timeoutz"}),
		Entry("routes and routes_to together", "    routes:\n", "    routes_to: checkout\n    routes:\n",
			want{10, "proxies.edge.routes", "either routes_to"}),
		Entry("a route field at the proxy with routes", "    cluster: {connect", "    route: {timeout: 1s}\n    cluster: {connect",
			want{20, "proxies.edge.route", "set the route fields in each route"}),
		Entry("routes in the virtual host", "virtual_host: {include_attempt_count_in_response: true}",
			"virtual_host: {routes: [{match: {prefix: /}, route: {cluster: checkout}}]}",
			want{21, "proxies.edge.virtual_host.routes", "write them as the proxy's routes"}),
		Entry("a mix weight out of range", "- {weight: 4}", "- {weight: -4}", want{27, "load.mix[0].weight", "out of range"}),
		Entry("a mix method outside the list", "method: post", "method: brew", want{28, "load.mix[1].method", `"BREW" is not accepted`}),
		Entry("a mix header name that is not a token", "x-canary: always}", "x canary: always}", want{28, "load.mix[1].headers", `"x canary" is not a header name`}),
		Entry("a mix path without its slash", "path: /cart", "path: cart", want{28, "load.mix[1].path", "must start with '/'"}),
	)

	It("refuses routes that are not a list", func() {
		_, err := scenarios.Parse([]byte(`name: r
services: {checkout: {}}
proxies: {edge: {routes: {match: {prefix: /}, route: {cluster: checkout}}}}
load: {target: edge, rate: 10/s, duration: 5s}
`), "r.yaml")
		Expect(err).To(HaveOccurred())
		Expect(errorsOf(err)).To(ContainElement(And(HaveField("Line", 3), HaveField("Path", "proxies.edge.routes"),
			HaveField("Msg", ContainSubstring("want a list of Envoy v3 routes")))), err.Error())
	})

	It("places an error of the generated bootstrap at the route that caused it", func() {
		// Envoy refuses weighted clusters whose weights sum to 0 (config_impl.cc, WeightedClusterEntry);
		// the check runs on the generated bootstrap, whose paths are the proxy's routes.
		doc := strings.Replace(canary, "{name: checkout, weight: 90}", "{name: checkout, weight: 0}", 1)
		doc = strings.Replace(doc, "{name: checkout-canary, weight: 10}", "{name: checkout-canary, weight: 0}", 1)
		_, err := scenarios.Parse([]byte(doc), "c.yaml")
		Expect(err).To(HaveOccurred())
		Expect(errorsOf(err)).To(ContainElement(HaveField("Path", HavePrefix("proxies.edge.routes[1].route.weighted_clusters"))), err.Error())
	})

	It("warns at the route whose per-try timeout its route timeout cuts", func() {
		doc := strings.Replace(canary, "          timeout: 1s\n", "          timeout: 1s\n          retry_policy: {retry_on: 5xx, per_try_timeout: 2s}\n", 1)
		sc, err := scenarios.Parse([]byte(doc), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Warnings).To(ContainElement(HaveField("Path", "proxies.edge.routes[1].route.retry_policy.per_try_timeout")))
	})
})
