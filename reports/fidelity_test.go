package reports_test

import (
	"bytes"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
)

// fidelityRun describes a hand-built run of 1000 requests at 100/s: the first ok succeed (200), the rest
// fail (503); the first retried took two attempts, the others one (unless noAttempts); every request
// takes latency, except the last 20, which take tail (so p50 is latency and p99 tail).
type fidelityRun struct {
	ok, retried   int
	latency, tail time.Duration
	noAttempts    bool
	ejected       []record.ProxyEvent
	stats         map[string]uint64
	windows       []record.FaultWindow
}

const fidelityRequests = 1000

func (r fidelityRun) record() *record.Record {
	rec := &record.Record{Scenario: "fidelity-me", File: "examples/fidelity-me.yaml", Seed: 7, TargetRate: 100,
		Duration: 10 * time.Second, ProxyStats: r.stats, ProxyEvents: r.ejected, Windows: r.windows}
	for i := range fidelityRequests {
		s := record.Sample{Seq: uint64(i), Intended: time.Duration(i) * 10 * time.Millisecond, Status: 200, Latency: r.latency}
		s.Sent = s.Intended
		if i >= r.ok {
			s.Status = 503
		}
		if i >= fidelityRequests-20 {
			s.Latency = r.tail
		}
		if !r.noAttempts {
			s.Attempts = 1
			if i < r.retried {
				s.Attempts = 2
			}
		}
		rec.Samples = append(rec.Samples, s)
	}
	return rec
}

func ejection(at time.Duration, host string) record.ProxyEvent {
	return record.ProxyEvent{At: at, Kind: record.ProxyEjected, Cluster: "a", Host: host, Reason: "consecutive_5xx"}
}

// row returns the table's row of that name.
func row(t reports.FidelityTable, name string) reports.FidelityRow {
	GinkgoHelper()
	for _, r := range t.Rows {
		if r.Name == name {
			return r
		}
	}
	Fail("no row " + name)
	return reports.FidelityRow{}
}

var _ = Describe("Fidelity", func() {
	var embedded, sim fidelityRun
	BeforeEach(func() {
		embedded = fidelityRun{ok: 990, retried: 200, latency: 2 * time.Millisecond, tail: 10 * time.Millisecond,
			ejected: []record.ProxyEvent{ejection(3*time.Second, "a/0")}}
		sim = embedded
	})
	fidelity := func() reports.FidelityTable { return reports.Fidelity(embedded.record(), sim.record()) }

	Context("when the simulator is within every bound", func() {
		BeforeEach(func() {
			sim.ok, sim.retried, sim.tail = 981, 240, 12*time.Millisecond
		})

		It("shows each metric of both runs with the difference, and judges the bounded ones ok", func() {
			t := fidelity()
			Expect(t.Scenario).To(Equal("fidelity-me"))
			Expect(t.Seed).To(Equal(uint64(7)))
			Expect(t.OK()).To(BeTrue())
			Expect(t.OutOfBounds()).To(BeEmpty())
			Expect(row(t, "success rate")).To(Equal(reports.FidelityRow{Name: "success rate",
				Embedded: "99%", Sim: "98.1%", Diff: "-0.9 pp", Bound: "≤ 1 pp", OK: true}))
			Expect(row(t, "retry amplification")).To(Equal(reports.FidelityRow{Name: "retry amplification",
				Embedded: "1.2", Sim: "1.24", Diff: "+0.04 (+3.333%)", Bound: "≤ 5%", OK: true}))
			Expect(row(t, "p99")).To(Equal(reports.FidelityRow{Name: "p99",
				Embedded: "10ms", Sim: "12ms", Diff: "+2ms (+20%)", Bound: "≤ 25% or 5ms", OK: true}))
			Expect(row(t, "p50")).To(Equal(reports.FidelityRow{Name: "p50",
				Embedded: "2ms", Sim: "2ms", Diff: "+0s (+0%)", OK: true}))
			Expect(row(t, "ejected hosts")).To(Equal(reports.FidelityRow{Name: "ejected hosts",
				Embedded: "a/0 ×1", Sim: "a/0 ×1", Diff: "same", Bound: "same set", OK: true}))
			Expect(row(t, "requests")).To(Equal(reports.FidelityRow{Name: "requests",
				Embedded: "1000", Sim: "1000", Diff: "+0 (+0%)", OK: true}))
		})
	})

	It("holds a success rate exactly 1 pp apart, not 1.1 pp (99.0 vs 98.0 ok, 99.0 vs 97.9 not)", func() {
		sim.ok = 980
		Expect(row(fidelity(), "success rate").OK).To(BeTrue())
		sim.ok = 979
		t := fidelity()
		Expect(row(t, "success rate")).To(Equal(reports.FidelityRow{Name: "success rate",
			Embedded: "99%", Sim: "97.9%", Diff: "-1.1 pp", Bound: "≤ 1 pp", OK: false}))
		Expect(t.OK()).To(BeFalse())
		Expect(t.OutOfBounds()).To(Equal([]string{"success rate"}))
	})

	It("holds a success rate 1 pp above as well as below (98.1 vs 99.0 ok)", func() {
		embedded.ok, sim.ok = 981, 990
		Expect(row(fidelity(), "success rate")).To(HaveField("Diff", "+0.9 pp"))
		Expect(row(fidelity(), "success rate").OK).To(BeTrue())
	})

	It("judges retry amplification relative to the embedded run's: 1.20 vs 1.27 is 5.8% apart, out", func() {
		sim.retried = 270
		t := fidelity()
		Expect(row(t, "retry amplification")).To(Equal(reports.FidelityRow{Name: "retry amplification",
			Embedded: "1.2", Sim: "1.27", Diff: "+0.07 (+5.833%)", Bound: "≤ 5%", OK: false}))
		Expect(t.OutOfBounds()).To(Equal([]string{"retry amplification"}))

		sim.retried = 260 // 1.26: exactly 5%
		Expect(row(fidelity(), "retry amplification").OK).To(BeTrue())
		sim.retried = 140 // 1.14: 5% below
		Expect(row(fidelity(), "retry amplification")).To(HaveField("Diff", "-0.06 (-5%)"))
		Expect(row(fidelity(), "retry amplification").OK).To(BeTrue())
	})

	It("does not hold a retry amplification that one run did not record", func() {
		sim.noAttempts = true
		t := fidelity()
		Expect(row(t, "retry amplification")).To(Equal(reports.FidelityRow{Name: "retry amplification",
			Embedded: "1.2", Sim: "not recorded", Bound: "≤ 5%", OK: false}))
	})

	It("wants the same set of ejected hosts: {a/0} vs {a/0, a/1} is out, with each host's count", func() {
		sim.ejected = []record.ProxyEvent{ejection(2*time.Second, "a/0"), ejection(4*time.Second, "a/1")}
		t := fidelity()
		Expect(row(t, "ejected hosts")).To(Equal(reports.FidelityRow{Name: "ejected hosts",
			Embedded: "a/0 ×1", Sim: "a/0 ×1, a/1 ×1", Diff: "only sim: a/1", Bound: "same set", OK: false}))
		Expect(row(t, "ejections a/0")).To(Equal(reports.FidelityRow{Name: "ejections a/0",
			Embedded: "1", Sim: "1", Diff: "+0 (+0%)", OK: true}))
		Expect(row(t, "ejections a/1")).To(Equal(reports.FidelityRow{Name: "ejections a/1",
			Embedded: "0", Sim: "1", Diff: "+1", OK: true}))
		Expect(t.OutOfBounds()).To(Equal([]string{"ejected hosts"}))
	})

	It("judges the set, not the counts: a host ejected twice in one run and once in the other is the same set", func() {
		unejected := record.ProxyEvent{At: 4 * time.Second, Kind: record.ProxyUnejected, Cluster: "a", Host: "a/0"}
		sim.ejected = []record.ProxyEvent{ejection(2*time.Second, "a/0"), unejected, ejection(5*time.Second, "a/0")}
		t := fidelity()
		Expect(row(t, "ejected hosts")).To(Equal(reports.FidelityRow{Name: "ejected hosts",
			Embedded: "a/0 ×1", Sim: "a/0 ×2", Diff: "same", Bound: "same set", OK: true}))
		Expect(row(t, "ejections a/0")).To(HaveField("Diff", "+1 (+100%)"))
	})

	It("names a sidecar's ejection by its instance, and lists hosts only the embedded run ejected", func() {
		sidecar := ejection(time.Second, "b/1")
		sidecar.Proxy, sidecar.Cluster = "a/0", "b"
		embedded.ejected = append(embedded.ejected, sidecar)
		sim.ejected = nil
		t := fidelity()
		Expect(row(t, "ejected hosts")).To(Equal(reports.FidelityRow{Name: "ejected hosts",
			Embedded: "a/0 ×1, a/0 → b/1 ×1", Sim: "none", Diff: "only embedded: a/0, a/0 → b/1", Bound: "same set", OK: false}))
	})

	It("holds no ejection in either run as the same set", func() {
		embedded.ejected, sim.ejected = nil, nil
		t := fidelity()
		Expect(row(t, "ejected hosts")).To(Equal(reports.FidelityRow{Name: "ejected hosts",
			Embedded: "none", Sim: "none", Diff: "same", Bound: "same set", OK: true}))
		Expect(t.OK()).To(BeTrue())
	})

	It("judges a p99 over the floor relative to the embedded run's: 25% apart is in, 26% out", func() {
		embedded.tail = 40 * time.Millisecond
		sim.tail = 50 * time.Millisecond
		Expect(row(fidelity(), "p99").OK).To(BeTrue())
		sim.tail = 50400 * time.Microsecond
		Expect(row(fidelity(), "p99")).To(Equal(reports.FidelityRow{Name: "p99",
			Embedded: "40ms", Sim: "50.4ms", Diff: "+10.4ms (+26%)", Bound: "≤ 25% or 5ms", OK: false}))
		sim.tail = 28 * time.Millisecond
		Expect(row(fidelity(), "p99")).To(HaveField("Diff", "-12ms (-30%)"))
		Expect(row(fidelity(), "p99").OK).To(BeFalse())
	})

	It("holds a p99 difference up to the 5 ms floor within the bound whatever the ratio", func() {
		embedded.tail = 4 * time.Millisecond
		sim.latency, sim.tail = time.Millisecond, 1200*time.Microsecond
		Expect(row(fidelity(), "p99")).To(Equal(reports.FidelityRow{Name: "p99",
			Embedded: "4ms", Sim: "1.2ms", Diff: "-2.8ms (-70%)", Bound: "≤ 25% or 5ms", OK: true}))
		sim.tail = 9 * time.Millisecond
		Expect(row(fidelity(), "p99").OK).To(BeTrue())
		sim.tail = 9100 * time.Microsecond
		Expect(row(fidelity(), "p99").OK).To(BeFalse())
	})

	It("handles a p99 of 0 on both sides as equal, and 0 against a latency over the floor as out", func() {
		embedded.latency, embedded.tail, sim.latency, sim.tail = 0, 0, 0, 0
		Expect(row(fidelity(), "p99")).To(Equal(reports.FidelityRow{Name: "p99",
			Embedded: "0s", Sim: "0s", Diff: "+0s", Bound: "≤ 25% or 5ms", OK: true}))
		sim.latency, sim.tail = 6*time.Millisecond, 6*time.Millisecond
		Expect(row(fidelity(), "p99")).To(Equal(reports.FidelityRow{Name: "p99",
			Embedded: "0s", Sim: "6ms", Diff: "+6ms", Bound: "≤ 25% or 5ms", OK: false}))
	})

	It("shows retries, overflows and connection overflows from the proxy's counters, unjudged", func() {
		embedded.stats = map[string]uint64{"cluster.a.upstream_rq_retry": 200, "cluster.a.upstream_rq_retry_overflow": 3,
			"cluster.a.upstream_rq_pending_overflow": 10, "cluster.a.upstream_cx_overflow": 4}
		sim.stats = map[string]uint64{"cluster.a.upstream_rq_retry": 210, "cluster.a.upstream_rq_retry_overflow": 0,
			"cluster.a.upstream_rq_pending_overflow": 12, "cluster.b.upstream_cx_overflow": 1, "cluster.a.upstream_cx_overflow": 4}
		t := fidelity()
		Expect(row(t, "retries")).To(Equal(reports.FidelityRow{Name: "retries", Embedded: "200", Sim: "210", Diff: "+10 (+5%)", OK: true}))
		Expect(row(t, "retry overflows")).To(Equal(reports.FidelityRow{Name: "retry overflows", Embedded: "3", Sim: "0", Diff: "-3 (-100%)", OK: true}))
		Expect(row(t, "pending overflows")).To(Equal(reports.FidelityRow{Name: "pending overflows", Embedded: "10", Sim: "12", Diff: "+2 (+20%)", OK: true}))
		Expect(row(t, "connection overflows")).To(Equal(reports.FidelityRow{Name: "connection overflows", Embedded: "4", Sim: "5", Diff: "+1 (+25%)", OK: true}))
		Expect(t.OK()).To(BeTrue())
	})

	It("shows the time to first ejection and the recovery time of the fault windows, as the reports define them", func() {
		window := record.FaultWindow{Name: "faults[0]", Service: "a", Instances: []int{0}, Start: 2 * time.Second, End: 5 * time.Second, Kind: "abort"}
		embedded.windows, sim.windows = []record.FaultWindow{window}, []record.FaultWindow{window}
		// Every request succeeds: the recovery is immediate in both.
		embedded.ok, sim.ok = fidelityRequests, fidelityRequests
		sim.ejected = []record.ProxyEvent{ejection(2500*time.Millisecond, "a/0")}
		t := fidelity()
		Expect(row(t, "time to first ejection")).To(Equal(reports.FidelityRow{Name: "time to first ejection",
			Embedded: "1s", Sim: "500ms", Diff: "-500ms (-50%)", OK: true}))
		Expect(row(t, "recovery time")).To(Equal(reports.FidelityRow{Name: "recovery time",
			Embedded: "0s", Sim: "0s", Diff: "+0s", OK: true}))

		sim.ejected = nil
		Expect(row(fidelity(), "time to first ejection")).To(Equal(reports.FidelityRow{Name: "time to first ejection",
			Embedded: "1s", Sim: "no ejection", OK: true}))
	})

	It("has no fault rows for a run without fault windows", func() {
		for _, r := range fidelity().Rows {
			Expect(r.Name).NotTo(BeElementOf("time to first ejection", "recovery time"))
		}
	})

	Describe("its writers", func() {
		BeforeEach(func() {
			sim.ok, sim.tail = 979, 11*time.Millisecond
		})

		It("writes a text table with the judged rows' verdicts and the rows out of bounds", func() {
			var b bytes.Buffer
			Expect(reports.WriteFidelityText(&b, fidelity())).To(Succeed())
			Expect(b.String()).To(Equal(`fidelity: fidelity-me (examples/fidelity-me.yaml), seed 7 — embedded vs sim
                      embedded  sim     diff         bound
requests              1000      1000    +0 (+0%)
success rate          99%       97.9%   -1.1 pp      ≤ 1 pp        OUT
retry amplification   1.2       1.2     +0 (+0%)     ≤ 5%          ok
retries               0         0       +0
retry overflows       0         0       +0
pending overflows     0         0       +0
connection overflows  0         0       +0
ejected hosts         a/0 ×1    a/0 ×1  same         same set      ok
ejections a/0         1         1       +0 (+0%)
p50                   2ms       2ms     +0s (+0%)
p99                   10ms      11ms    +1ms (+10%)  ≤ 25% or 5ms  ok
verdict: OUT OF BOUNDS: success rate
`))
		})

		It("writes a Markdown section: heading with the verdict, the file and seed, the table", func() {
			var b bytes.Buffer
			Expect(reports.WriteFidelityMarkdown(&b, fidelity())).To(Succeed())
			Expect(b.String()).To(HavePrefix("### fidelity-me — ❌ OUT OF BOUNDS: success rate\n\n`examples/fidelity-me.yaml`, seed 7\n\n" +
				"| metric | embedded | sim | diff (sim − embedded) | bound | |\n|---|---|---|---|---|---|\n" +
				"| requests | 1000 | 1000 | +0 (+0%) |  |  |\n" +
				"| success rate | 99% | 97.9% | -1.1 pp | ≤ 1 pp | ❌ |\n"))
			Expect(b.String()).To(ContainSubstring("| p99 | 10ms | 11ms | +1ms (+10%) | ≤ 25% or 5ms | ✅ |\n"))
			Expect(b.String()).To(HaveSuffix("|\n\n"))

			sim.ok = 990
			b.Reset()
			Expect(reports.WriteFidelityMarkdown(&b, fidelity())).To(Succeed())
			Expect(b.String()).To(HavePrefix("### fidelity-me — ✅ within every bound\n"))
		})

		It("writes a refusal as the verdict, without a table", func() {
			t := reports.FidelityTable{Scenario: "tcp", File: "tcp.yaml", Seed: 3, Refused: `the sim runner cannot do faults[0]: tcp fault "latency"`}
			Expect(t.OK()).To(BeFalse())
			var b bytes.Buffer
			Expect(reports.WriteFidelityText(&b, t)).To(Succeed())
			Expect(b.String()).To(Equal("fidelity: tcp (tcp.yaml), seed 3 — embedded vs sim\nverdict: refused: the sim runner cannot do faults[0]: tcp fault \"latency\"\n"))
			b.Reset()
			Expect(reports.WriteFidelityMarkdown(&b, t)).To(Succeed())
			Expect(b.String()).To(Equal("### tcp — ⏭️ refused: the sim runner cannot do faults[0]: tcp fault \"latency\"\n\n`tcp.yaml`, seed 3\n\n"))
		})
	})
})
