package sim_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// A weighted split that a change moves whole from a to b at 1 s: 100/s for 2 s, so requests at 0,
// 10 ms, …, 1.99 s; the weights 100/0 and 0/100 leave nothing to the draw.
const shiftAll = `
name: shift-all
seed: 7
services:
  a: {instances: 1, response: {latency: 1ms, size: 10}}
  b: {instances: 1, response: {latency: 1ms, size: 10}}
proxies:
  edge:
    routes:
      - match: {prefix: /}
        route:
          timeout: 1s
          weighted_clusters: {clusters: [{name: a, weight: 100}, {name: b, weight: 0}]}
    cluster: {connect_timeout: 0.25s}
load: {target: edge, rate: 100/s, duration: 2s}
changes:
`

const toB = `  - at: 1s
    routes:
      - match: {prefix: /}
        route:
          timeout: 1s
          weighted_clusters: {clusters: [{name: a, weight: 0}, {name: b, weight: 100}]}
`

func received(rec *record.Record, name string) int {
	GinkgoHelper()
	for _, u := range rec.Upstreams {
		if fmt.Sprintf("%s/%d", u.Service, u.Instance) == name {
			return int(u.Requests)
		}
	}
	Fail("no upstream " + name)
	return 0
}

var _ = Describe("configuration changes", func() {
	run := func(r sim.Runner, sc *scenarios.Scenario) *record.Record {
		GinkgoHelper()
		Expect(r.Supports(plan.New(sc, nil), plan.Options{})).To(Succeed())
		rec, err := plan.Run(context.Background(), r, plan.New(sc, nil), plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		return rec
	}

	It("applies a change ChangeDelay after its push: the requests routed before go to the old weights, after to the new", func() {
		rec := run(sim.Runner{}, parse(shiftAll+toB))
		// Pushed at 1 s, in use at 1.001 s: the request sent at 1 s (reaching the proxy 50 µs later)
		// still goes to a: 0 … 1 s is 101 requests, 1.01 … 1.99 s is 99.
		Expect(received(rec, "a/0")).To(Equal(101))
		Expect(received(rec, "b/0")).To(Equal(99))
		Expect(rec.Changes).To(Equal([]record.Change{{Name: "changes[0]", Proxy: "edge", What: "routes", Start: time.Second,
			Outcome: record.ChangeApplied, Expected: record.ChangeApplied, Answered: time.Second + sim.DefaultChangeDelay}}))

		// A slower push: the requests at 1 s, 1.01 s and 1.02 s reach the proxy before it applies the
		// change at 1.025 s.
		rec = run(sim.Runner{ChangeDelay: 25 * time.Millisecond}, parse(shiftAll+toB))
		Expect(received(rec, "a/0")).To(Equal(103))
		Expect(received(rec, "b/0")).To(Equal(97))
		Expect(rec.Changes[0].Answered).To(Equal(1025 * time.Millisecond))
	})

	It("NACKs a change the proxy refuses, with the xDS client's field path, and keeps the configuration", func() {
		sc := parse(shiftAll + "  - {at: 0.5s, cluster: {connect_timeout: 0s}, expect: rejected}\n" + toB)
		rec := run(sim.Runner{}, sc)
		Expect(rec.Changes).To(HaveLen(2))
		nack := rec.Changes[0]
		Expect(nack.Outcome).To(Equal(record.ChangeRejected))
		Expect(nack.Answered).To(Equal(500*time.Millisecond + sim.DefaultChangeDelay))
		// Both clusters carry the bad connect_timeout; the NACK names each, as proxy/xds does.
		Expect(nack.Detail).To(Equal("cluster \"a\": connect_timeout: value must be greater than 0s\n" +
			"cluster \"b\": connect_timeout: value must be greater than 0s"))
		// Nothing changed at 0.5 s; the next change starts from the configuration before the refused one.
		Expect(rec.Changes[1].Outcome).To(Equal(record.ChangeApplied))
		Expect(received(rec, "a/0")).To(Equal(101))
		Expect(received(rec, "b/0")).To(Equal(99))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("http.edge.downstream_rq_2xx", uint64(200)))
	})

	It("refuses by name a change that sets what the proxy model does not simulate", func() {
		sc := parse(shiftAll + `  - at: 1s
    routes:
      - match: {prefix: /}
        route: {cluster: b, prefix_rewrite: /v2/}
`)
		err := sim.Runner{}.Supports(plan.New(sc, nil), plan.Options{})
		var u *plan.Unsupported
		Expect(errors.As(err, &u)).To(BeTrue(), "want a refusal, got %v", err)
		Expect(u.Parts).To(ContainElement(HavePrefix("proxy edge (changes[0]): ")))
		Expect(u.Parts).To(ContainElement(ContainSubstring("path rewrites are not simulated")))
		_, err = plan.Run(context.Background(), sim.Runner{}, plan.New(sc, nil), plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
	})

	It("keeps the outlier state of a host an endpoint update keeps, wherever it moves", func() {
		b := bootstrap(3, nil, []string{
			"outlier_detection: {consecutive_5xx: 3, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100}",
		})
		rg := newRig(b, 1, ms, always(0, 503), always(0, 200), always(0, 200))
		for i := range 9 { // round robin: backend/0 gets the 1st, 4th and 7th, ejected at its third 503
			rg.send(time.Duration(i)*10*ms, "r"+msString(time.Duration(i)))
		}
		rg.en.Run(100 * ms)
		Expect(rg.eventsOf("ejected")).To(HaveLen(1))

		// The update drops backend/1 and lists backend/2 before backend/0.
		next := bootstrap(3, nil, []string{
			"outlier_detection: {consecutive_5xx: 3, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100}",
		})
		eps := next.Clusters[0].Endpoints
		next.Clusters[0].Endpoints = append(eps[:0:0], eps[2], eps[0])
		Expect(rg.p.Update(next)).To(Succeed())
		st := rg.p.Stats()
		Expect(st).To(HaveKeyWithValue("cluster.backend.membership_total", uint64(2)))
		Expect(st).To(HaveKeyWithValue("cluster.backend.membership_healthy", uint64(1)))
		Expect(st).To(HaveKeyWithValue("cluster.backend.outlier_detection.ejections_active", uint64(1)))

		before2 := len(rg.ups[2].requests())
		for i := range 10 {
			rg.send(200*ms+time.Duration(i)*10*ms, "s"+msString(time.Duration(i)))
		}
		rg.en.Run(45 * time.Second)
		Expect(rg.ups[0].requests()).To(HaveLen(3))                  // still ejected: none of the 10
		Expect(rg.ups[2].requests()).To(HaveLen(before2 + 10))       // all of them
		Expect(len(rg.ups[1].requests())).To(BeNumerically("<=", 3)) // removed: only what it had before
		// Its ejection ends at the first sweep 30 s after it, under its own name.
		Expect(rg.eventsOf("unejected")).To(Equal([]sim.ProxyEvent{{At: 40 * time.Second, Kind: "unejected", Cluster: "backend",
			Host: "backend/0", Reason: "ejection_time_elapsed"}}))
		Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_rq_200", uint64(6+10)))
	})

	It("builds a cluster changed beyond its endpoints anew, its counters carrying on", func() {
		rg := newRig(bootstrap(2, nil, []string{
			"outlier_detection: {consecutive_5xx: 1, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100}",
		}), 1, ms, always(0, 503), always(0, 200))
		rg.send(0, "a")
		rg.send(10*ms, "b")
		rg.en.Run(50 * ms)
		Expect(rg.eventsOf("ejected")).To(HaveLen(1))
		// Other circuit breakers: a new cluster, whose outlier detection starts over.
		Expect(rg.p.Update(bootstrap(2, nil, []string{"circuit_breakers: {thresholds: [{max_retries: 10}]}"}))).To(Succeed())
		st := rg.p.Stats()
		Expect(st).To(HaveKeyWithValue("cluster.backend.membership_healthy", uint64(2)))
		Expect(st).NotTo(HaveKey("cluster.backend.outlier_detection.ejections_active"))
		rg.send(100*ms, "c")
		rg.send(110*ms, "d")
		rg.en.Run(time.Second)
		Expect(rg.ups[0].requests()).To(HaveLen(2)) // round robin again over both
		st = rg.p.Stats()
		Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_503", uint64(2)))
		Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_200", uint64(2)))
		Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_total", uint64(4)))
	})

	It("keeps the health of the hosts that stay; a new host is unhealthy until a check passes", func() {
		hc := []string{"health_checks: [{timeout: 1s, interval: 5s, no_traffic_interval: 5s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: {path: /healthz}}]"}
		rg := newRig(bootstrap(2, nil, hc), 1, ms, always(0, 200), always(0, 200))
		rg.en.Run(6 * time.Second)
		Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.membership_healthy", uint64(2)))
		// 10.0.0.2 joins; no instance is there: its checks are refused, it never becomes healthy.
		Expect(rg.p.Update(bootstrap(3, nil, hc))).To(Succeed())
		st := rg.p.Stats()
		Expect(st).To(HaveKeyWithValue("cluster.backend.membership_total", uint64(3)))
		Expect(st).To(HaveKeyWithValue("cluster.backend.membership_healthy", uint64(2)))
		for i := range 10 { // at once: the two that stay are still healthy
			rg.send(6*time.Second+time.Duration(i)*ms, "r"+msString(time.Duration(i)))
		}
		rg.en.Run(20 * time.Second)
		Expect(rg.got).To(HaveLen(10))
		for _, a := range rg.got {
			Expect(a.r.Status).To(Equal(200), a.id)
		}
		Expect(len(rg.ups[0].requests()) + len(rg.ups[1].requests())).To(Equal(10))
		Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.membership_healthy", uint64(2)))
		Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_cx_connect_fail", uint64(0)))
		// Its checks ran, every one refused (about one per 5 s since 6 s).
		Expect(rg.p.Stats()["cluster.backend.health_check.network_failure"]).To(BeNumerically(">=", 2))
	})

	DescribeTable("runs the examples with changes, their checks holding as on the embedded runner",
		func(name string) {
			sc, err := scenarios.LoadFile(filepath.Join("..", "..", "scenarios", "examples", name))
			Expect(err).NotTo(HaveOccurred())
			rec := run(sim.Runner{}, sc)
			rep := reports.NewReport(rec, sc.CheckList())
			for _, v := range rep.Checks {
				Expect(v.Passed).To(BeTrue(), "%s: %s", v.Check, v.Observed)
			}
			Expect(rep.Checks).NotTo(BeEmpty())
			Expect(rep.Passed).To(BeTrue())
			for _, c := range rec.Changes {
				Expect(c.Outcome).To(Equal(c.Expected), c.Name)
			}
		},
		Entry("a canary's weight shift, with a refused push", "canary-weight-shift.yaml"),
		Entry("a rolling update over EDS", "endpoint-churn-rollout.yaml"),
	)
})
