package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// withChanges is the valid scenario with a changes list appended.
func withChanges(changes string) string { return valid + "changes:\n" + changes }

var _ = Describe("changes", func() {
	It("accumulates: each change's state is the last accepted one's with its own fields, endpoints included", func() {
		sc, err := scenarios.Parse([]byte(withChanges(`
  - {at: 0s, endpoints: {backend: [0, 1]}}
  - {at: 500ms, route: {timeout: 2s}}
  - {at: 1s, cluster: {connect_timeout: 0s}, expect: rejected}
  - {at: 1500ms, for: 200ms, endpoints: {backend: [2]}}
`)), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.ChangedProxies()).To(Equal([]string{"edge"}))
		Expect(sc.InitialState("edge").Instances("backend", 3)).To(Equal([]int{0, 1}))

		route := sc.Changes[1].State
		Expect(route.Proxy.RouteAction.GetTimeout().AsDuration()).To(Equal(2 * time.Second))
		Expect(route.Proxy.RouteAction.GetRetryPolicy()).To(BeNil()) // the change's route replaces the proxy's whole
		Expect(route.Instances("backend", 3)).To(Equal([]int{0, 1}))

		bad := sc.Changes[2]
		Expect(bad.Rejection).To(ContainSubstring("connect_timeout"))
		Expect(bad.State.Proxy.ClusterSpec.GetConnectTimeout().AsDuration()).To(BeZero())
		Expect(bad.State.Proxy.RouteAction.GetTimeout().AsDuration()).To(Equal(2*time.Second), "it starts from changes[1]")

		last := sc.Changes[3].State
		Expect(last.Instances("backend", 3)).To(Equal([]int{2}))
		Expect(last.Proxy.ClusterSpec.GetConnectTimeout().AsDuration()).To(Equal(250*time.Millisecond), "the rejected change is not kept")
		Expect(last.Proxy.RouteAction.GetTimeout().AsDuration()).To(Equal(2 * time.Second))

		Expect(sc.ChangeRecords()).To(Equal([]record.Change{
			{Name: "changes[0]", Proxy: "edge", What: "endpoints backend: 0,1", Start: 0, End: 500 * time.Millisecond, Outcome: "unacknowledged", Expected: "applied"},
			{Name: "changes[1]", Proxy: "edge", What: "route", Start: 500 * time.Millisecond, End: time.Second, Outcome: "unacknowledged", Expected: "applied"},
			{Name: "changes[2]", Proxy: "edge", What: "cluster", Start: time.Second, End: 1500 * time.Millisecond, Outcome: "unacknowledged", Expected: "rejected"},
			{Name: "changes[3]", Proxy: "edge", What: "endpoints backend: 2", Start: 1500 * time.Millisecond, End: 1700 * time.Millisecond, Outcome: "unacknowledged", Expected: "applied"},
		}))
	})

	It("builds the bootstrap of a state with the endpoints it holds", func() {
		sc, err := scenarios.Parse([]byte(withChanges("  - {at: 1s, endpoints: {backend: [1]}}\n")), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		b, err := sc.Changes[0].State.Bootstrap("edge", scenarios.Addresses{Listener: "127.0.0.1:0",
			Endpoints: map[string][]string{"backend": {"127.0.0.1:9001"}}})
		Expect(err).NotTo(HaveOccurred())
		eps := b.GetStaticResources().GetClusters()[0].GetLoadAssignment().GetEndpoints()[0].GetLbEndpoints()
		Expect(eps).To(HaveLen(1))
		Expect(eps[0].GetEndpoint().GetAddress().GetSocketAddress().GetPortValue()).To(BeEquivalentTo(9001))
	})

	DescribeTable("refuses a bad change with its field and what is accepted",
		func(changes, path, msg string) {
			_, err := scenarios.Parse([]byte(withChanges(changes)), "c.yaml")
			es := errorsOf(err)
			Expect(es).NotTo(BeEmpty())
			Expect(es[0].Path).To(Equal(path))
			Expect(es[0].Error()).To(ContainSubstring(msg))
			Expect(es[0].Line).To(BeNumerically(">=", 25)) // in the changes list
		},
		Entry("no field", "  - {at: 1s}\n", "changes[0]", "at least one of routes, route, cluster"),
		Entry("an unknown proxy", "  - {at: 1s, proxy: edgy, route: {timeout: 1s}}\n", "changes[0].proxy", `"edgy" is not a proxy`),
		Entry("out of time order", "  - {at: 1s, route: {timeout: 1s}}\n  - {at: 500ms, route: {timeout: 2s}}\n", "changes[1].at", "list changes in time order"),
		Entry("after the load", "  - {at: 2s, route: {timeout: 1s}}\n", "changes[0].at", "at or after the load's end"),
		Entry("an unsupported field", "  - {at: 1s, cluster: {dns_refresh_rate: 1s}}\n", "changes[0].cluster.dns_refresh_rate", ""),
		Entry("an invalid value", "  - {at: 1s, cluster: {connect_timeout: 0s}}\n", "changes[0].cluster.connect_timeout", ""),
		Entry("a route to no service", "  - {at: 1s, route: {cluster: other}}\n", "changes[0].route.cluster", "generated"),
		Entry("an instance that does not exist", "  - {at: 1s, endpoints: {backend: [0, 3]}}\n", "changes[0].endpoints.backend[1]", "instances 0 to 2"),
		Entry("an instance twice", "  - {at: 1s, endpoints: {backend: [1, 1]}}\n", "changes[0].endpoints.backend[1]", "listed twice"),
		Entry("a service that does not exist", "  - {at: 1s, endpoints: {front: [0]}}\n", "changes[0].endpoints.front", "not a service"),
		Entry("a bad expect", "  - {at: 1s, route: {timeout: 1s}, expect: nack}\n", "changes[0].expect", "accepted: applied (the default), rejected"),
		Entry("a rejected change the proxy accepts", "  - {at: 1s, route: {timeout: 1s}, expect: rejected}\n", "changes[0].expect", "the proxy accepts this change"),
		Entry("a rejected initial change", "  - {at: 0s, cluster: {connect_timeout: 0s}, expect: rejected}\n", "changes[0].expect", "cannot be rejected"),
		Entry("two changes to one proxy at once", "  - {at: 1s, route: {timeout: 1s}}\n  - {at: 1s, endpoints: {backend: [0]}}\n", "changes[1].at", "merge the two into one change"),
		Entry("a rejected change with endpoints", "  - {at: 1s, cluster: {connect_timeout: 0s}, endpoints: {backend: [0]}, expect: rejected}\n", "changes[0].endpoints", "each resource type on its own"),
		Entry("a rejected change of clusters and routes", "  - {at: 1s, cluster: {connect_timeout: 0s}, route: {timeout: 1s}, expect: rejected}\n", "changes[0].cluster", "not both"),
		Entry("a rejected change with routes on a routes_to proxy", "  - {at: 1s, routes: [{match: {prefix: /}, route: {cluster: nosuch}}], expect: rejected}\n", "changes[0].routes", "routes_to"),
		Entry("a rejected change no control plane could send", "  - {at: 1s, cluster: {connect_timeoutt: 1s}, expect: rejected}\n", "changes[0].cluster", "not an Envoy v3 envoy.config.cluster.v3.Cluster"),
	)

	It("refuses endpoints for a service the change's configuration does not route to", func() {
		doc := `name: two
services: {api: {instances: 2}, other: {instances: 1}}
proxies:
  edge:
    routes: [{match: {prefix: /}, route: {cluster: api}}]
load: {target: edge, rate: 10/s, duration: 2s}
changes:
  - {at: 1s, endpoints: {other: [0]}}
`
		_, err := scenarios.Parse([]byte(doc), "two.yaml")
		es := errorsOf(err)
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("changes[0].endpoints.other"))
		Expect(es[0].Msg).To(ContainSubstring("edge does not route to other in this change's configuration (its services: api)"))

		// With routes that name it, in the same change, it is fine.
		ok := strings.Replace(doc, "{at: 1s, endpoints: {other: [0]}}",
			"{at: 1s, endpoints: {other: [0]}, routes: [{match: {prefix: /}, route: {cluster: other}}]}", 1)
		sc, err := scenarios.Parse([]byte(ok), "two.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Changes[0].State.Proxy.Services()).To(Equal([]string{"other"}))
	})

	It("ends a change's window at the next change to the same proxy", func() {
		doc := `name: two
services: {api: {instances: 2}}
proxies: {a: {routes_to: api}, b: {routes_to: api}}
load: {target: a, rate: 10/s, duration: 3s}
changes:
  - {at: 1s, proxy: a, route: {timeout: 1s}}
  - {at: 1500ms, proxy: b, route: {timeout: 1s}}
  - {at: 2s, proxy: a, route: {timeout: 2s}}
`
		sc, err := scenarios.Parse([]byte(doc), "two.yaml")
		Expect(err).NotTo(HaveOccurred())
		recs := sc.ChangeRecords()
		Expect(recs[0].End).To(Equal(2 * time.Second))
		Expect(recs[1].End).To(BeZero())
		Expect(sc.ChangedProxies()).To(Equal([]string{"a", "b"}))
	})
})
