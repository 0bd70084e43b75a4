package reports_test

import (
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

// faultRun is a 10 s run at 10 requests/s (request i intended at i×100ms) with one fault window,
// faults[0] on checkout/2 from 3 s to 6 s, and load phases warmup (0–2 s) and steady (2–10 s):
//
//	before   (0–3 s, i 0..29):   30 requests, all 200 in 1ms, 1 attempt each
//	during   (3–6 s, i 30..59):  i 30..35 fail 503 in 2ms after 3 attempts; the other 24 succeed in 1.5ms after 2
//	after    (6–10 s, i 60..99): i 60..64 fail 503 in 2ms after 3 attempts; the other 35 succeed in 1.2ms after 1
//
// The proxy ejects checkout/2 (by address) at 4.2 s and un-ejects it at 7.2 s; it counted 3 pending and
// 2 retry overflows.
func faultRun() *record.Record {
	rec := &record.Record{
		Scenario: "outlier", File: "examples/outlier.yaml", Seed: 7,
		Started:    time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
		TargetRate: 10, Duration: 10 * time.Second,
		Windows: []record.FaultWindow{{Name: "faults[0]", Service: "checkout", Instances: []int{2}, Start: 3 * time.Second,
			End: 6 * time.Second, Kind: "abort"}},
		Phases: []record.LoadPhase{{Name: "warmup", End: 2 * time.Second}, {Name: "steady", Start: 2 * time.Second, End: 10 * time.Second}},
		ProxyStats: map[string]uint64{
			"cluster.checkout.upstream_rq_pending_overflow":               3,
			"cluster.checkout.upstream_rq_retry_overflow":                 2,
			"cluster.checkout.outlier_detection.ejections_enforced_total": 1,
			"cluster.checkout.upstream_rq_retry":                          47,
		},
		Upstreams: []record.UpstreamRecord{
			{Service: "checkout", Instance: 0, Address: "127.0.0.1:1001", Requests: 50},
			{Service: "checkout", Instance: 1, Address: "127.0.0.1:1002", Requests: 50},
			{Service: "checkout", Instance: 2, Address: "127.0.0.1:1003", Requests: 46},
		},
		ProxyEvents: []record.ProxyEvent{
			{At: 7200 * ms, Kind: record.ProxyUnejected, Cluster: "checkout", Host: "127.0.0.1:1003"},
			{At: 4200 * ms, Kind: record.ProxyEjected, Cluster: "checkout", Host: "127.0.0.1:1003", Reason: "consecutive_5xx"},
		},
	}
	rec.Samples = steady(100, 10, func(int) time.Duration { return ms })
	for i := range rec.Samples {
		s := &rec.Samples[i]
		s.Attempts = 1
		switch {
		case i >= 30 && i <= 35, i >= 60 && i <= 64:
			s.Status, s.Latency, s.Attempts = 503, 2*ms, 3
		case i >= 36 && i < 60:
			s.Latency, s.Attempts = 1500*time.Microsecond, 2
		case i >= 60:
			s.Latency = 1200 * time.Microsecond
		}
	}
	return rec
}

var _ = Describe("ComputeOutcomes", func() {
	var rec *record.Record
	BeforeEach(func() { rec = faultRun() })

	phase := func(o reports.Outcomes, scope string) reports.PhaseOutcome {
		GinkgoHelper()
		p, ok := o.Phase(scope)
		Expect(ok).To(BeTrue(), "phase %q", scope)
		return p
	}

	It("lists the phases around the fault and the load phases", func() {
		o := reports.ComputeOutcomes(rec)
		var scopes []string
		for _, p := range o.Phases {
			scopes = append(scopes, p.Scope)
		}
		Expect(scopes).To(Equal([]string{"before fault", "during fault", "after fault", "during phase warmup", "during phase steady"}))
		Expect(o.End).To(Equal(10 * time.Second))
	})

	It("computes success rate, percentiles, attempts and ejections per phase", func() {
		o := reports.ComputeOutcomes(rec)

		before := phase(o, "before fault")
		Expect(before.Spans).To(Equal([]reports.Span{{Start: 0, End: 3 * time.Second}}))
		Expect(before.Summary.Requests).To(Equal(uint64(30)))
		Expect(before.Summary.SuccessRate).To(Equal(100.0))
		Expect(before.Summary.Latency.P99).To(Equal(ms))
		Expect(before.Summary.AchievedRate).To(Equal(10.0))
		Expect(before.Summary.RetryAmplification).To(Equal(1.0))
		Expect(before.Summary.Retries).To(BeZero())
		Expect(before.Summary.Ejections).To(BeZero())

		during := phase(o, "during fault")
		Expect(during.Spans).To(Equal([]reports.Span{{Start: 3 * time.Second, End: 6 * time.Second}}))
		Expect(during.Summary.Requests).To(Equal(uint64(30)))
		Expect(during.Summary.Successes).To(Equal(uint64(24)))
		Expect(during.Summary.SuccessRate).To(Equal(80.0))
		Expect(during.Summary.StatusCodes).To(Equal(map[int]uint64{200: 24, 503: 6}))
		Expect(during.Summary.Latency.P50).To(Equal(1500 * time.Microsecond))
		Expect(during.Summary.Latency.Max).To(Equal(2 * ms))
		// 6×3 + 24×2 = 66 attempts for 30 requests; retries 6×2 + 24×1 = 36.
		Expect(during.Attempts).To(Equal(reports.AttemptStats{Requests: 30, Known: 30, Total: 66, Retries: 36, Max: 3, Amplification: 2.2,
			Distribution: map[int]uint64{2: 24, 3: 6}}))
		Expect(during.Summary.Retries).To(Equal(uint64(36)))
		Expect(during.Summary.UpstreamAttempts).To(Equal(uint64(66)))
		Expect(during.Summary.RetryAmplification).To(Equal(2.2))
		Expect(during.Summary.Ejections).To(Equal(uint64(1)))
		Expect(during.EjectionsKnown).To(BeTrue())

		after := phase(o, "after fault")
		Expect(after.Spans).To(Equal([]reports.Span{{Start: 6 * time.Second, End: 10 * time.Second}}))
		Expect(after.Summary.Requests).To(Equal(uint64(40)))
		Expect(after.Summary.SuccessRate).To(Equal(87.5))
		Expect(after.Summary.RetryAmplification).To(Equal(1.25)) // 5×3 + 35×1 = 50 attempts for 40 requests
		Expect(after.Summary.Ejections).To(BeZero())

		steadyPhase := phase(o, "during phase steady")
		Expect(steadyPhase.Summary.Requests).To(Equal(uint64(80)))
		Expect(steadyPhase.Summary.SuccessRate).To(Equal(86.25)) // 69 of 80
		Expect(phase(o, "during phase warmup").Summary.Requests).To(Equal(uint64(20)))
	})

	It("computes the attempts distribution and overflows over the whole run", func() {
		o := reports.ComputeOutcomes(rec)
		// Retries: 24×1 + 11×2 = 46.
		Expect(o.Attempts).To(Equal(reports.AttemptStats{Requests: 100, Known: 100, Total: 146, Retries: 46, Max: 3, Amplification: 1.46,
			Distribution: map[int]uint64{1: 65, 2: 24, 3: 11}}))
		Expect(o.PendingOverflows).To(Equal(uint64(3)))
		Expect(o.RetryOverflows).To(Equal(uint64(2)))
		Expect(o.Overflows()).To(Equal(uint64(5)))
	})

	It("leaves attempts unknown when the samples carry none", func() {
		for i := range rec.Samples {
			rec.Samples[i].Attempts = 0
		}
		o := reports.ComputeOutcomes(rec)
		Expect(o.Attempts.Known).To(BeZero())
		Expect(phase(o, "during fault").Summary.RetryAmplification).To(BeZero())
	})

	It("measures the time from the fault's start to the first ejection, naming the host", func() {
		o := reports.ComputeOutcomes(rec)
		Expect(o.Windows).To(HaveLen(1))
		w := o.Windows[0]
		Expect(w.Name).To(Equal("faults[0]"))
		Expect(w.Span).To(Equal(reports.Span{Start: 3 * time.Second, End: 6 * time.Second}))
		Expect(w.Ejected).To(BeTrue())
		Expect(w.TimeToFirstEjection).To(Equal(1200 * ms))
		Expect(w.FirstEjection).To(Equal(record.ProxyEvent{At: 4200 * ms, Kind: "ejected", Cluster: "checkout", Host: "checkout/2", Reason: "consecutive_5xx"}))
		Expect(o.Fault.Name).To(Equal("fault"))
		Expect(o.Fault.TimeToFirstEjection).To(Equal(1200 * ms))
	})

	It("builds the ejection timeline per host, leaving an ejection without un-ejection open", func() {
		rec.ProxyEvents = append(rec.ProxyEvents, record.ProxyEvent{At: 9 * time.Second, Kind: "ejected", Cluster: "checkout", Host: "checkout/1"})
		o := reports.ComputeOutcomes(rec)
		Expect(o.Hosts).To(Equal([]reports.HostTimeline{
			{Cluster: "checkout", Host: "checkout/1", Ejections: []reports.Ejection{{Start: 9 * time.Second, End: 10 * time.Second, Open: true}}},
			{Cluster: "checkout", Host: "checkout/2", Ejections: []reports.Ejection{{Start: 4200 * ms, End: 7200 * ms, Reason: "consecutive_5xx"}}},
		}))
	})

	Describe("recovery time", func() {
		It("is the time from the fault's end to the first whole second at the pre-fault level capped at 99%", func() {
			// From 6 s, the window [6 s, 7 s) holds 5 failures of 10; the first second without a failure
			// starts at request 65, 6.5 s.
			r := reports.ComputeOutcomes(rec).Windows[0].Recovery
			Expect(r).To(Equal(reports.Recovery{Measured: true, Recovered: true, Time: 500 * ms, Threshold: 99, Baseline: 100, BaselineRequests: 30}))
		})

		It("is zero when the clients are healthy as soon as the fault ends", func() {
			for i := 60; i <= 64; i++ {
				rec.Samples[i].Status = 200
			}
			Expect(reports.ComputeOutcomes(rec).Windows[0].Recovery.Time).To(BeZero())
		})

		It("takes a worse pre-fault level as the threshold", func() {
			rec.Samples[0].Status = 500 // 29 of 30 before the fault: 96.67%
			rec.Samples[60].Status = 200
			rec.Samples[61].Status = 200
			rec.Samples[62].Status = 200
			rec.Samples[63].Status = 200 // only request 64 (6.4 s) fails after the fault: 9 of 10 in [6 s, 7 s)
			r := reports.ComputeOutcomes(rec).Windows[0].Recovery
			Expect(r.Threshold).To(BeNumerically("~", 96.667, 0.001))
			Expect(r.Time).To(Equal(500 * ms)) // [6.5 s, 7.5 s) is the first second without request 64
		})

		It("says not recovered when no whole second reaches the threshold before the run ends", func() {
			for i := 60; i < 100; i += 5 {
				rec.Samples[i].Status = 503
			}
			r := reports.ComputeOutcomes(rec).Windows[0].Recovery
			Expect(r.Measured).To(BeTrue())
			Expect(r.Recovered).To(BeFalse())
			Expect(r.Why).To(Equal("no 1s after the fault ended held a success rate of 99% before the run ended"))
		})

		It("is not measured for an open-ended fault, nor with less than a second of run after it", func() {
			rec.Windows[0].End = 0
			r := reports.ComputeOutcomes(rec).Windows[0].Recovery
			Expect(r.Measured).To(BeFalse())
			Expect(r.Why).To(Equal("the fault is open-ended: it lasted until the run ended"))

			rec.Windows[0].End = 9500 * ms
			r = reports.ComputeOutcomes(rec).Windows[0].Recovery
			Expect(r.Measured).To(BeFalse())
			Expect(r.Why).To(Equal("the run ended 500ms after the fault, less than the 1s needed to judge recovery"))
		})
	})

	Context("with two fault windows", func() {
		BeforeEach(func() {
			rec.Windows = append(rec.Windows, record.FaultWindow{Name: "faults[1]", Service: "checkout", Start: 8 * time.Second, End: 9 * time.Second, Kind: "latency"})
		})

		It("judges the union and each window", func() {
			o := reports.ComputeOutcomes(rec)
			Expect(phase(o, "during fault").Spans).To(Equal([]reports.Span{{Start: 3 * time.Second, End: 6 * time.Second}, {Start: 8 * time.Second, End: 9 * time.Second}}))
			Expect(phase(o, "during fault").Summary.Requests).To(Equal(uint64(40)))
			Expect(phase(o, "after fault").Spans).To(Equal([]reports.Span{{Start: 9 * time.Second, End: 10 * time.Second}}))
			Expect(phase(o, "after faults[0]").Spans).To(Equal([]reports.Span{{Start: 6 * time.Second, End: 10 * time.Second}}))
			Expect(phase(o, "before faults[1]").Spans).To(Equal([]reports.Span{{Start: 0, End: 8 * time.Second}}))
			Expect(phase(o, "during faults[1]").Summary.Requests).To(Equal(uint64(10)))
			Expect(o.Fault.Span).To(Equal(reports.Span{Start: 3 * time.Second, End: 9 * time.Second}))
			Expect(o.Windows[1].Ejected).To(BeFalse())
		})
	})
})

var _ = Describe("ParseScope", func() {
	DescribeTable("valid scopes, in canonical form",
		func(text, want string) {
			sc, err := checks.ParseScope(text)
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.String()).To(Equal(want))
		},
		Entry(nil, "during fault", "during fault"),
		Entry(nil, "During  Faults", "during fault"),
		Entry(nil, "before faults[2]", "before faults[2]"),
		Entry(nil, "after faults [ 0 ]", "after faults[0]"),
		Entry(nil, "during phase steady", "during phase steady"),
		Entry(nil, "phase Steady", "during phase Steady"),
		Entry(nil, "during faults[2] down", "during faults[2] down"),
		Entry(nil, "During Fault DOWN", "during fault down"),
		// Configuration changes: "change[N]" as the issue writes it, "changes[N]" canonical.
		Entry(nil, "during changes[0]", "during changes[0]"),
		Entry(nil, "during change[0]", "during changes[0]"),
		Entry(nil, "Before Change [ 12 ]", "before changes[12]"),
		Entry(nil, "after changes[3]", "after changes[3]"),
		Entry(nil, "during change", "during change"),
		Entry(nil, "during changes", "during change"),
		Entry(nil, "before CHANGES", "before change"),
		Entry(nil, "after change", "after change"),
	)

	const accepted = `; accepted: "before fault", "during fault", "after fault" (all fault windows together), ` +
		`"before faults[N]", "during faults[N]", "after faults[N]" (one window), "during fault down", "during faults[N] down" (the down periods of flapping rules), ` +
		`"before change", "during change", "after change" (all configuration changes' windows together), ` +
		`"before changes[N]", "during changes[N]", "after changes[N]" (one change's window), "during phase NAME"`
	DescribeTable("invalid scopes say what is accepted",
		func(text, want string) {
			_, err := checks.ParseScope(text)
			Expect(err).To(MatchError(want + accepted))
		},
		Entry(nil, "", `scope "": empty scope before ":"`),
		Entry(nil, "while fault", `scope "while fault": it must start with before, during or after, not "while"`),
		Entry(nil, "during", `scope "during": "during" of what`),
		Entry(nil, "after phase steady", `scope "after phase steady": load phases take "during" only, not "after"`),
		Entry(nil, "during phase", `scope "during phase": want one phase name after "phase"`),
		Entry(nil, "during faults[x]", `scope "during faults[x]": bad fault index in "faults[x]": want faults[N] with N = 0, 1, …, the fault's place in the scenario`),
		Entry(nil, "during faults[-1]", `scope "during faults[-1]": bad fault index in "faults[-1]": want faults[N] with N = 0, 1, …, the fault's place in the scenario`),
		Entry(nil, "during outage", `scope "during outage": unknown target "outage"`),
		Entry(nil, "after faults[0] down", `scope "after faults[0] down": down periods take "during" only, not "after"`),
		Entry(nil, "during down", `scope "during down": unknown target "down"`),
		Entry(nil, "during changes[x]", `scope "during changes[x]": bad change index in "changes[x]": want changes[N] with N = 0, 1, …, the change's place in the scenario's changes`),
		Entry(nil, "during change[-1]", `scope "during change[-1]": bad change index in "change[-1]": want changes[N] with N = 0, 1, …, the change's place in the scenario's changes`),
		Entry(nil, "after changes[01]", `scope "after changes[01]": bad change index in "changes[01]": want changes[N] with N = 0, 1, …, the change's place in the scenario's changes`),
		Entry(nil, "during changes[0", `scope "during changes[0": bad change index in "changes[0": want changes[N] with N = 0, 1, …, the change's place in the scenario's changes`),
		Entry(nil, "during changes[0] down", `scope "during changes[0] down": down periods belong to flapping fault rules, and a configuration change has none: write it without "down"`),
		Entry(nil, "during change down", `scope "during change down": down periods belong to flapping fault rules, and a configuration change has none: write it without "down"`),
		Entry(nil, "after changes[0] down", `scope "after changes[0] down": down periods take "during" only, not "after"`),
		Entry(nil, "during changeset", `scope "during changeset": unknown target "changeset"`),
	)
})
