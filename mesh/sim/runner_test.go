package sim_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

func parse(yaml string) *scenarios.Scenario {
	GinkgoHelper()
	sc, err := scenarios.Parse([]byte(yaml), "spec.yaml")
	Expect(err).NotTo(HaveOccurred())
	return sc
}

// One instance of three aborts 30% of its requests; round robin, no retries (no retry policy, no outlier
// detection: what holds with the stub holds with the proxy model).
const abortOneOfThree = `
name: abort-one-of-three
seed: 5
services:
  api:
    instances: 3
    response: {latency: 1ms, size: 100}
proxies:
  edge:
    routes_to: api
    route: {timeout: 1s}
    cluster: {lb_policy: ROUND_ROBIN}
load: {target: edge, rate: 100/s, duration: 3s}
checks:
  - success_rate >= 50%
faults:
  - {service: api, instances: [1], abort: {status: 503, percent: 30}}
`

// A small mesh: a front service with capacity fans out to two callees, one optional and flapping.
const smallMesh = `
name: small-mesh
seed: 3
services:
  front:
    instances: 2
    response: {latency: 2ms, size: 2048}
    capacity: {workers: 4, queue: 8, queue_timeout: 20ms}
    calls:
      - parallel:
          - {service: db, path: /q}
          - {service: recs, path: /r, optional: true}
  db: {instances: 2, response: {latency: 2ms, size: 512}}
  recs: {instances: 1, response: {latency: 3ms}}
proxies:
  edge:
    routes_to: front
    route: {timeout: 2s}
load: {target: edge, rate: 300/s, duration: 2s}
faults:
  - {service: recs, at: 0.5s, for: 1s, abort: {status: 500, percent: 50}, latency: {fixed: 5ms, percent: 20}}
  - {service: db, instances: [0], at: 1s, for: 0.5s, refuse: {}}
  - {service: front, latency: {uniform: {min: 1ms, max: 4ms}, percent: 50}}
checks:
  - p99 < 1s
`

// One hop with most of the world at once: a latency distribution, an abort window, a flapping refuse,
// resets, finite capacity, retries and outlier detection.
const oneHop = `
name: one-hop
seed: 4
services:
  api:
    instances: 3
    response: {latency: 2ms, size: 1024}
    capacity: {workers: 2, queue: 4, queue_timeout: 30ms}
proxies:
  edge:
    routes_to: api
    route: {timeout: 0.5s, retry_policy: {retry_on: "5xx,reset,connect-failure", num_retries: 2}}
    cluster: {outlier_detection: {consecutive_5xx: 3, interval: 0.5s, base_ejection_time: 1s}}
load: {target: edge, rate: 400/s, duration: 3s}
faults:
  - {service: api, instances: [0], latency: {lognormal: {median: 5ms, p99: 60ms}, percent: 50}}
  - {service: api, instances: [1], at: 1s, for: 1s, abort: {status: 503, percent: 40}}
  - {service: api, instances: [2], at: 0.5s, flap: {down: 200ms, up: 300ms}, refuse: {}}
  - {service: api, reset: {percent: 2}}
checks:
  - success_rate >= 50%
`

var _ = Describe("Runner", func() {
	It("is named sim", func() {
		Expect(sim.Runner{}.Name()).To(Equal("sim"))
	})

	Context("a scenario without retries", func() {
		It("fails exactly the requests the instance's own abort draw fails", func() {
			sc := parse(abortOneOfThree)
			rec, err := plan.Run(context.Background(), sim.Runner{}, plan.New(sc, nil), plan.Options{})
			Expect(err).NotTo(HaveOccurred())

			// Round robin over 3 instances: 100 requests each, instance 1's n-th decided by the pure model.
			rules := []faults.Fault{sc.InstanceFaults("api", 1)[0]}
			want := 0
			for n := uint64(1); n <= 100; n++ {
				d := faults.DecideRequest(faults.Response{}, rules, faults.Request{Seq: n}, faults.RequestRand(5, "api", 1, n))
				if d.Status == 503 {
					want++
				}
			}
			Expect(want).To(BeNumerically("~", 30, 12))

			Expect(rec.Samples).To(HaveLen(300))
			failed := 0
			for i, s := range rec.Samples {
				Expect(s.Seq).To(BeEquivalentTo(i + 1))
				Expect(s.Intended).To(Equal(time.Duration(i) * 10 * time.Millisecond))
				Expect(s.Error).To(BeEmpty())
				Expect(s.Attempts).To(Equal(1))
				if s.Status == 503 {
					failed++
				} else {
					Expect(s.Status).To(Equal(200))
				}
			}
			Expect(failed).To(Equal(want))
			Expect(rec.Upstreams).To(HaveLen(3))
			for i, u := range rec.Upstreams {
				Expect(u.Requests).To(BeEquivalentTo(100), "api/%d", i)
			}
			Expect(rec.Upstreams[0].Statuses).To(Equal(map[int]uint64{200: 100}))
			Expect(rec.Upstreams[1].Statuses).To(Equal(map[int]uint64{200: uint64(100 - want), 503: uint64(want)}))
			Expect(rec.Upstreams[1].Applied).To(Equal(map[string]uint64{"faults[0]/abort": uint64(want)}))
			Expect(rec.Events).To(HaveLen(want))
			Expect(rec.Windows).To(HaveLen(1))
			Expect(rec.Services).To(Equal([]record.Service{{Name: "api", Instances: 3, Entry: true}}))

			rep := reports.NewReport(rec, sc.CheckList())
			Expect(rep.Passed).To(BeTrue())
		})
	})

	Context("determinism", func() {
		report := func(yaml string, seed uint64) []byte {
			sc := parse(yaml)
			rec, err := plan.Run(context.Background(), sim.Runner{}, plan.New(sc, &seed), plan.Options{})
			Expect(err).NotTo(HaveOccurred())
			rec.Started = time.Time{} // the one wall-clock field
			list := sc.CheckList()
			path := filepath.Join(GinkgoT().TempDir(), "report.json")
			Expect(reports.WriteJSON(path, reports.NewReport(rec, list))).To(Succeed())
			b, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			return b
		}

		It("gives a byte-identical report.json for the same seed, and another for another seed", func() {
			a, b := report(oneHop, 9), report(oneHop, 9)
			Expect(a).To(Equal(b))
			Expect(report(oneHop, 10)).NotTo(Equal(a))
		})

		It("gives a byte-identical report.json of a mesh for the same seed", func() {
			a, b := report(smallMesh, 9), report(smallMesh, 9)
			Expect(a).To(Equal(b))
			Expect(report(smallMesh, 10)).NotTo(Equal(a))
		})

		It("records the mesh: calls per edge, capacity, a refuse window's events", func() {
			sc := parse(smallMesh)
			rec, err := plan.Run(context.Background(), sim.Runner{}, plan.New(sc, nil), plan.Options{})
			Expect(err).NotTo(HaveOccurred())
			Expect(rec.Samples).To(HaveLen(600))
			Expect(rec.Edges).To(HaveLen(2))
			Expect(rec.Calls).To(HaveLen(2 * 600))
			Expect(rec.Upstreams[2].Capacity).NotTo(BeNil()) // front/0 (services in name order: db, db, front, …)
			var refuse []string
			for _, e := range rec.Events {
				if e.Kind == faults.KindRefuse {
					refuse = append(refuse, e.Detail+"@"+e.At.String())
				}
			}
			Expect(refuse).To(Equal([]string{faults.RefuseClosed + "@1s", faults.RefuseReopened + "@1.5s"}))
		})
	})

	Context("Supports", func() {
		refusal := func(sc *scenarios.Scenario, opts plan.Options) *plan.Unsupported {
			GinkgoHelper()
			err := sim.Runner{}.Supports(plan.New(sc, nil), opts)
			var u *plan.Unsupported
			Expect(errors.As(err, &u)).To(BeTrue(), "want a refusal, got %v", err)
			Expect(err).To(MatchError(plan.ErrUnsupported))
			Expect(u.Runner).To(Equal("sim"))
			return u
		}
		example := func(name string) *scenarios.Scenario {
			GinkgoHelper()
			sc, err := scenarios.LoadFile(filepath.Join("..", "..", "scenarios", "examples", name))
			Expect(err).NotTo(HaveOccurred())
			return sc
		}

		It("supports a plain scenario with no options", func() {
			Expect(sim.Runner{}.Supports(plan.New(parse(oneHop), nil), plan.Options{})).To(Succeed())
		})

		DescribeTable("refuses by name what it does not model",
			func(sc func() *scenarios.Scenario, opts plan.Options, part string) {
				Expect(refusal(sc(), opts).Parts).To(ContainElement(ContainSubstring(part)))
			},
			Entry("TCP toxics it cannot model", func() *scenarios.Scenario {
				return parse(abortOneOfThree + "  - {service: api, tcp: {toxics: [{type: bandwidth, rate: 1}]}}\n")
			}, plan.Options{}, "faults[1].tcp.toxics[0]: toxic bandwidth"),
			Entry("a gRPC load", func() *scenarios.Scenario { return example("grpc-deadline-retries.yaml") }, plan.Options{}, "load.protocol: grpc"),
			Entry("container faults", func() *scenarios.Scenario {
				return parse(abortOneOfThree + "  - {service: api, instances: [0], at: 1s, for: 1s, container: kill}\n")
			}, plan.Options{}, `faults[1]: container fault "kill"`),
			Entry("h2 faults", func() *scenarios.Scenario {
				return parse(abortOneOfThree + "  - {service: api, h2: {rst_stream: REFUSED_STREAM}}\n")
			}, plan.Options{}, "faults[1]: h2"),
			Entry("traces", func() *scenarios.Scenario { return parse(abortOneOfThree) }, plan.Options{Tracing: &plan.Tracing{}}, "--trace-ratio"),
			Entry("access logs", func() *scenarios.Scenario { return parse(abortOneOfThree) }, plan.Options{AccessLogDir: "/tmp/x"}, "access logs"),
		)

		It("runs nothing it refuses", func() {
			_, err := plan.Run(context.Background(), sim.Runner{}, plan.New(parse(abortOneOfThree), nil), plan.Options{AccessLogDir: "x"})
			Expect(err).To(MatchError(plan.ErrUnsupported))
		})
	})

	It("returns the record so far when cancelled: the requests in flight canceled, those not yet due left out", func() {
		ctx, cancel := context.WithCancel(context.Background())
		// Cancelled at the first progress report, at virtual 1 s: the next step of the loop stops there.
		rec, err := sim.Runner{}.Run(ctx, plan.New(parse(abortOneOfThree), nil),
			plan.Options{Progress: func(plan.Progress) { cancel() }, ProgressInterval: time.Second})
		Expect(err).To(MatchError(context.Canceled))
		// Sent at 0, 10 ms, …, 1 s: 101; the last one, sent at 1 s, still on its way.
		Expect(rec.Samples).To(HaveLen(101))
		for _, s := range rec.Samples[:100] {
			Expect(s.Error).To(BeEmpty())
		}
		Expect(rec.Samples[100]).To(Equal(record.Sample{Seq: 101, Intended: time.Second, Sent: time.Second, Error: record.ErrCanceled}))
	})

	It("reports virtual progress", func() {
		var got []plan.Progress
		_, err := sim.Runner{}.Run(context.Background(), plan.New(parse(abortOneOfThree), nil),
			plan.Options{Progress: func(p plan.Progress) { got = append(got, p) }, ProgressInterval: time.Second})
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(HaveLen(3)) // at 1 s and 2 s, then the final one
		Expect(got[0].Elapsed).To(Equal(time.Second))
		Expect(got[len(got)-1].Completed).To(BeEquivalentTo(300))
	})
})
