package live_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// A route's weighted split moved from v1 to v2 at 1s, then a push the proxy must refuse at 1.5s.
const shiftScenario = `name: shift
seed: 3
services:
  v1: {instances: 1, response: {size: 16}}
  v2: {instances: 1, response: {size: 16}}
proxies:
  edge:
    routes:
      - match: {prefix: /}
        route: {weighted_clusters: {clusters: [{name: v1, weight: 100}, {name: v2, weight: 0}]}}
    cluster: {connect_timeout: 0.25s}
load: {target: edge, rate: 100/s, duration: 2s}
changes:
  - at: 1s
    routes:
      - match: {prefix: /}
        route: {weighted_clusters: {clusters: [{name: v1, weight: 0}, {name: v2, weight: 100}]}}
  - at: 1.5s
    cluster: {connect_timeout: 0s}
    expect: rejected
`

// A rollout over four instances: the cluster holds 0,1 at first, then 1,2 at 1s, then 2,3 at 2s; each
// instance that left goes down (refuses connections) 300ms after it left.
const churnScenario = `name: churn
seed: 5
services:
  api: {instances: 4, response: {size: 16}}
proxies:
  edge: {routes_to: api}
load: {target: edge, rate: 200/s, duration: 3s}
faults:
  - {service: api, instances: [0], at: 1.3s, refuse: {}}
  - {service: api, instances: [1], at: 2.3s, refuse: {}}
changes:
  - {at: 0s, endpoints: {api: [0, 1]}}
  - {at: 1s, endpoints: {api: [1, 2]}}
  - {at: 2s, endpoints: {api: [2, 3]}}
`

var _ = Describe("a scenario's changes", func() {
	It("pushes each change over xDS at its time, records the proxy's ACK or NACK, and keeps the last good configuration", func() {
		rec, err := live.Run(context.Background(), parse(shiftScenario), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(rec.Changes).To(HaveLen(2))
		applied, rejected := rec.Changes[0], rec.Changes[1]
		Expect(applied).To(changeFields("changes[0]", "edge", "routes", record.ChangeApplied))
		Expect(applied.Start).To(Equal(time.Second))
		Expect(applied.End).To(Equal(1500 * time.Millisecond))
		Expect(applied.Answered).To(BeNumerically(">=", time.Second))
		Expect(rejected.Outcome).To(Equal(record.ChangeRejected))
		Expect(rejected.Expected).To(Equal(record.ChangeRejected))
		Expect(rejected.Detail).To(ContainSubstring("connect_timeout"))
		Expect(rejected.End).To(BeZero())

		// Every request succeeded; v1 took those sent before the change was applied, v2 the rest,
		// the refused push changing nothing.
		for _, s := range rec.Samples {
			Expect(s.Status).To(Equal(200), "request %d", s.Seq)
		}
		v1, v2 := rec.Upstreams[0], rec.Upstreams[1]
		Expect(v1.Service).To(Equal("v1"))
		inFlight := int((applied.Answered-applied.Start)/(10*time.Millisecond)) + 2
		Expect(v1.Requests).To(BeNumerically(">=", 100))
		Expect(v1.Requests).To(BeNumerically("<=", 100+inFlight))
		Expect(v1.Requests + v2.Requests).To(BeEquivalentTo(200))
		// Rejected once: the control plane does not send a rejected version again.
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster_manager.cds.update_rejected", BeEquivalentTo(1)))
	})

	It("rolls endpoints over under load without a failed request, a removed instance meeting no request", func() {
		rec, err := live.Run(context.Background(), parse(churnScenario), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		for _, c := range rec.Changes {
			Expect(c.Outcome).To(Equal(record.ChangeApplied), c.Name)
		}
		Expect(rec.Changes[0].What).To(Equal("endpoints api: 0,1"))
		Expect(rec.Changes[0].Answered).To(BeZero()) // the configuration the proxy started with
		for _, s := range rec.Samples {
			Expect(s.Status).To(Equal(200), "request %d at %s", s.Seq, s.Intended)
		}
		Expect(rec.Samples).To(HaveLen(600))
		// Instance 3 joined at 2s: it served about a third of the requests from then on, split with 2.
		Expect(rec.Upstreams[3].Requests).To(BeNumerically("~", 100, 25))
		Expect(rec.Upstreams[0].Requests + rec.Upstreams[1].Requests + rec.Upstreams[2].Requests + rec.Upstreams[3].Requests).To(BeEquivalentTo(600))
	})
})

func changeFields(name, proxy, what, outcome string) OmegaMatcher {
	return And(
		WithTransform(func(c record.Change) string { return c.Name }, Equal(name)),
		WithTransform(func(c record.Change) string { return c.Proxy }, Equal(proxy)),
		WithTransform(func(c record.Change) string { return c.What }, Equal(what)),
		WithTransform(func(c record.Change) string { return c.Outcome }, Equal(outcome)),
	)
}
