package live_test

import (
	"context"
	"fmt"
	"path/filepath"
	"slices"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

// runCounts are the counts of a run that report.json holds and that must not change between two runs of
// a scenario with the same seed.
type runCounts struct {
	Requests, Successes, Errors, Retries uint64
	UpstreamAttempts, UpstreamReceived   uint64
	Ejections, Overflows                 uint64
	Statuses                             map[int]uint64
	ErrorKinds                           map[string]uint64
	PerInstance                          []string // "service/instance requests statuses applied"
	FaultEvents                          int
	PhaseCounts                          []string // "scope: requests, successes"
	WindowCounts                         int
}

// decided is, per instance, the request numbers (the instance's own sequence) a fault was applied to,
// and how many requests it numbered.
type decided struct {
	faulted  map[string]map[uint64]bool
	received map[string]uint64
}

func countsOf(path string) (runCounts, decided) {
	GinkgoHelper()
	sc, err := scenarios.LoadFile(path)
	Expect(err).NotTo(HaveOccurred())
	rec, err := live.Run(context.Background(), sc, nil, plan.Options{})
	Expect(err).NotTo(HaveOccurred())
	r := reports.NewReport(rec, nil)
	s, o := r.Summary, r.Outcomes
	c := runCounts{Requests: s.Requests, Successes: s.Successes, Errors: s.Errors, Retries: s.Retries,
		UpstreamAttempts: s.UpstreamAttempts, UpstreamReceived: s.UpstreamReceived, Ejections: s.Ejections,
		Overflows: o.Overflows(), Statuses: s.StatusCodes, ErrorKinds: s.ErrorKinds,
		FaultEvents: len(rec.Events), WindowCounts: len(o.Windows)}
	for _, u := range rec.Upstreams {
		c.PerInstance = append(c.PerInstance, fmt.Sprintf("%s/%d requests %d statuses %v applied %v", u.Service, u.Instance, u.Requests, u.Statuses, u.Applied))
	}
	slices.Sort(c.PerInstance)
	c2 := decided{faulted: map[string]map[uint64]bool{}, received: map[string]uint64{}}
	for _, u := range rec.Upstreams {
		c2.received[fmt.Sprintf("%s/%d", u.Service, u.Instance)] = u.Requests
	}
	for _, e := range rec.Events {
		id := fmt.Sprintf("%s/%d", e.Service, e.Instance)
		if c2.faulted[id] == nil {
			c2.faulted[id] = map[uint64]bool{}
		}
		c2.faulted[id][e.Seq] = true
	}
	for _, p := range o.Phases {
		c.PhaseCounts = append(c.PhaseCounts, fmt.Sprintf("%s: %d requests, %d successes", p.Scope, p.Summary.Requests, p.Summary.Successes))
	}
	return c, c2
}

// Issue #13 defect 6: same seed, same counts. The load's intended send times, the request mix, the
// fault decisions (per rule, instance and request number) and round-robin host selection all derive from
// the scenario and its seed, so two runs of these examples give identical report.json counts.
//
// What can still differ is what OS scheduling decides, and the proxy's back-off jitter, which is not yet
// drawn from the seed (a rand seam in proxy.Options, wired from the seed by mesh/live, is in progress).
// Measured on a 2-core machine, two runs of each example (run 1 vs run 2):
//   - healthy-baseline: identical.
//   - retries-mask-failing-instance: every count below identical (retries 157, received 1,157, per
//     instance 290/289/289/289, 157 aborts); only which client requests took the retries differs (attempts
//     distribution 1×844 2×155 3×1 vs 1×847 2×150 3×2 4×1), so the distribution is not compared.
//   - flapping-instance: retries 9 vs 10, received 1,200 vs 1,202, ±1 request on instances 2 and 3, one
//     request cancelled on the flapping instance: which attempts meet the closed listener depends on
//     when its timer fires relative to the requests in flight.
//   - instance-goes-bad-mid-run: retries 92 vs 95, 503s 6 vs 4, overflows 5 vs 1, resets 98 vs 99.
//   - tcp-partial-failure: retries 107 vs 109, instance 0 received 176 vs 177.
//   - timeout-budget: retries 59 vs 58, the stalled instance's cancelled requests 59 vs 58.
//
// The retry circuit breaker adds a dependence on CPU: under the race detector on 2 cores a rerun of
// retries-mask-failing-instance had 88 retry overflows and 57 retries against 0 and 157; with a fuzzer
// busy on both cores, even healthy-baseline's 2s route timeout fired (504s). The specs are Serial, so
// that no other spec of the suite competes with them for the cores. The spec compares every count for healthy-baseline, and for retries-mask-failing-instance what the seed decides
// whatever the timing: the requests, and which of the instances' first requests (up to the shorter run's
// count) had a fault applied — the fault decisions draw from (seed, instance, request number).
var _ = Describe("same seed, same counts (#13)", Label("slow"), Serial, func() {
	example := func(name string) string { return filepath.Join("..", "..", "scenarios", "examples", name) }

	It("gives identical report.json counts on a rerun of healthy-baseline", func() {
		first, _ := countsOf(example("healthy-baseline.yaml"))
		Expect(first.Requests).To(BeNumerically(">", 0))
		second, _ := countsOf(example("healthy-baseline.yaml"))
		Expect(second).To(Equal(first))
	})

	It("decides the same faults for the same requests on a rerun of retries-mask-failing-instance", func() {
		first, d1 := countsOf(example("retries-mask-failing-instance.yaml"))
		second, d2 := countsOf(example("retries-mask-failing-instance.yaml"))
		Expect(second.Requests).To(Equal(first.Requests))
		Expect(d1.faulted).NotTo(BeEmpty())
		for id, n1 := range d1.received {
			n := min(n1, d2.received[id])
			prefix := func(set map[uint64]bool) []uint64 {
				var out []uint64
				for seq := range set {
					if seq <= n {
						out = append(out, seq)
					}
				}
				slices.Sort(out)
				return out
			}
			Expect(prefix(d2.faulted[id])).To(Equal(prefix(d1.faulted[id])), "%s, its first %d requests", id, n)
		}
	})
})
