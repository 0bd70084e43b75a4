package reports_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports/record"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

var _ = Describe("ParseCheck with scopes and outcome metrics", func() {
	DescribeTable("valid checks",
		func(expr string, want checks.Check) {
			want.Expr = expr
			Expect(checks.Parse(expr)).To(Equal(want))
		},
		Entry(nil, "during faults[0]: p99 < 50ms", checks.Check{Scope: "during faults[0]", Metric: "p99", Op: "<", Value: 0.05, Unit: "ms"}),
		Entry(nil, "before fault: success_rate == 100%", checks.Check{Scope: "before fault", Metric: "success_rate", Op: "==", Value: 100, Unit: "%"}),
		Entry(nil, "after fault: success_rate >= 99.9%", checks.Check{Scope: "after fault", Metric: "success_rate", Op: ">=", Value: 99.9, Unit: "%"}),
		Entry(nil, "AFTER Faults[1]:error_rate<1%", checks.Check{Scope: "after faults[1]", Metric: "error_rate", Op: "<", Value: 1, Unit: "%"}),
		Entry(nil, "during phase steady: p99 < 20ms", checks.Check{Scope: "during phase steady", Metric: "p99", Op: "<", Value: 0.02, Unit: "ms"}),
		Entry(nil, "phase steady: retry_amplification <= 1.1", checks.Check{Scope: "during phase steady", Metric: "retry_amplification", Op: "<=", Value: 1.1}),
		Entry(nil, "during fault: ejected(checkout/2) within 2s", checks.Check{Scope: "during fault", Metric: "ejected(checkout/2)", Op: "within", Value: 2, Unit: "s"}),
		Entry(nil, "ejected(checkout/2)", checks.Check{Metric: "ejected(checkout/2)"}),
		Entry(nil, "Ejected( 127.0.0.1:8080 ) WITHIN 500ms", checks.Check{Metric: "ejected(127.0.0.1:8080)", Op: "within", Value: 0.5, Unit: "ms"}),
		Entry(nil, "recovery_time < 5s", checks.Check{Metric: "recovery_time", Op: "<", Value: 5, Unit: "s"}),
		Entry(nil, "after faults[0]: recovery_time < 5s", checks.Check{Scope: "after faults[0]", Metric: "recovery_time", Op: "<", Value: 5, Unit: "s"}),
		Entry(nil, "attempts_max <= 4", checks.Check{Metric: "attempts_max", Op: "<=", Value: 4}),
		Entry(nil, "during fault: attempts_max <= 3", checks.Check{Scope: "during fault", Metric: "attempts_max", Op: "<=", Value: 3}),
		Entry(nil, "overflows == 0", checks.Check{Metric: "overflows", Op: "==", Value: 0}),
		Entry(nil, "retry_overflows == 0", checks.Check{Metric: "retry_overflows", Op: "==", Value: 0}),
		Entry(nil, "time_to_first_ejection < 2s", checks.Check{Metric: "time_to_first_ejection", Op: "<", Value: 2, Unit: "s"}),
		Entry(nil, "during faults[1]: time_to_first_ejection < 2s", checks.Check{Scope: "during faults[1]", Metric: "time_to_first_ejection", Op: "<", Value: 2, Unit: "s"}),
	)

	DescribeTable("invalid checks say which part is wrong and what is accepted",
		func(expr, want string) {
			_, err := checks.Parse(expr)
			Expect(err).To(MatchError(want))
		},
		Entry("unknown scope", "while fault: p99 < 1s", `check "while fault: p99 < 1s": scope "while fault": it must start with before, during or after, not "while"; accepted: "before fault", "during fault", "after fault" (all fault windows together), "before faults[N]", "during faults[N]", "after faults[N]" (one window), "during fault down", "during faults[N] down" (the down periods of flapping rules), "before change", "during change", "after change" (all configuration changes' windows together), "before changes[N]", "during changes[N]", "after changes[N]" (one change's window), "during phase NAME"`),
		Entry("nothing after the scope", "during fault:", `check "during fault:": nothing after the scope "during fault"; want "during fault: <metric> <operator> <value>", e.g. "during fault: p99 < 50ms"`),
		Entry("whole-run metric scoped", "during fault: overflows == 0", `check "during fault: overflows == 0": overflows is counted over the whole run only (from the proxy's stats); write the check without "during fault:"`),
		Entry("recovery before", "before fault: recovery_time < 1s", `check "before fault: recovery_time < 1s": recovery_time is measured from a fault's end: scope it "after fault" or "after faults[N]", or leave the scope out, not "before fault"`),
		Entry("first ejection after", "after fault: time_to_first_ejection < 1s", `check "after fault: time_to_first_ejection < 1s": time_to_first_ejection is measured from a fault's start: scope it "during fault" or "during faults[N]", or leave the scope out, not "after fault"`),
		Entry("ejected in a phase", "during phase steady: ejected(a/1)", `check "during phase steady: ejected(a/1)": ejected() is measured from a fault's start: scope it "during fault" or "during faults[N]", or leave the scope out, not "during phase steady"`),
		Entry("ejected without parens", "ejected checkout/2", `check "ejected checkout/2": want "ejected(SERVICE/INSTANCE)", optionally followed by "within DURATION", e.g. "ejected(checkout/2) within 2s"`),
		Entry("ejected unclosed", "ejected(checkout/2 within 2s", `check "ejected(checkout/2 within 2s": missing ")" after the host; want "ejected(SERVICE/INSTANCE)", optionally followed by "within DURATION", e.g. "ejected(checkout/2) within 2s"`),
		Entry("ejected empty", "ejected()", `check "ejected()": bad host "" in ejected(); want "ejected(SERVICE/INSTANCE)", optionally followed by "within DURATION", e.g. "ejected(checkout/2) within 2s"`),
		Entry("ejected with an operator", "ejected(checkout/2) < 2s", `check "ejected(checkout/2) < 2s": unexpected "< 2s" after ejected(checkout/2); want nothing or "within DURATION", e.g. "ejected(checkout/2) within 2s"`),
		Entry("within without unit", "ejected(checkout/2) within 2", `check "ejected(checkout/2) within 2": within is a latency: give the value a unit (ns, us, µs, ms, s, m), e.g. "ejected(checkout/2) within 2s"`),
		Entry("within nothing", "ejected(checkout/2) within", `check "ejected(checkout/2) within": missing duration after "within"; e.g. "ejected(checkout/2) within 2s"`),
		Entry("recovery without unit", "recovery_time < 5", `check "recovery_time < 5": recovery_time is a latency: give the value a unit (ns, us, µs, ms, s, m), e.g. "recovery_time < 50ms"`),
		Entry("attempts with unit", "attempts_max <= 4x", `check "attempts_max <= 4x": unit "x" does not fit attempts_max, a count; accepted: a plain number without unit, e.g. "attempts_max <= 100"`),
	)

	It("rebuilds the text of scoped and ejected checks that were not parsed", func() {
		Expect(checks.Check{Scope: "during fault", Metric: "p99", Op: "<", Value: 0.05, Unit: "ms"}.String()).To(Equal("during fault: p99 < 50ms"))
		Expect(checks.Check{Metric: "ejected(a/1)", Op: "within", Value: 2, Unit: "s"}.String()).To(Equal("ejected(a/1) within 2s"))
		Expect(checks.Check{Metric: "ejected(a/1)"}.String()).To(Equal("ejected(a/1)"))
	})

	It("validates a scope against a scenario's fault windows and phases", func() {
		c, err := checks.Parse("during faults[1]: p99 < 1s")
		Expect(err).NotTo(HaveOccurred())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 2, Phases: nil})).To(Succeed())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 1, Phases: nil})).To(MatchError(`check "during faults[1]: p99 < 1s": scope "during faults[1]": the run has no faults[1]; its fault windows: faults[0]`))
		c, err = checks.Parse("during phase steady: p99 < 1s")
		Expect(err).NotTo(HaveOccurred())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 0, Phases: []string{"warmup", "steady"}})).To(Succeed())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 0, Phases: []string{"warmup"}})).To(MatchError(ContainSubstring(`the run has no load phase "steady"; its phases: warmup`)))
		Expect(checks.ValidateScope(checks.Check{Metric: "p99"}, checks.ScopeContext{Faults: 0, Phases: nil})).To(Succeed())
	})
})

var _ = Describe("EvaluateRun", func() {
	var rec *record.Record
	BeforeEach(func() { rec = faultRun() })

	DescribeTable("judges checks over their phase and says what it observed",
		func(expr string, passed bool, observed, required string) {
			c, err := checks.Parse(expr)
			Expect(err).NotTo(HaveOccurred())
			Expect(words(reports.EvaluateRun([]checks.Check{c}, rec))).To(HaveExactElements(
				reports.Verdict{Check: expr, Passed: passed, Observed: observed, Required: required}))
		},
		Entry(nil, "success_rate >= 80%", true, "success_rate = 89% (89/100)", ">= 80%"),
		Entry(nil, "before fault: success_rate == 100%", true, "success_rate = 100% (30/30) before fault (0s–3s, 30 requests)", "== 100%"),
		Entry(nil, "during faults[0]: success_rate >= 90%", false, "success_rate = 80% (24/30) during faults[0] (3s–6s, 30 requests)", ">= 90%"),
		Entry(nil, "after fault: success_rate >= 99.9%", false, "success_rate = 87.5% (35/40) after fault (6s–10s, 40 requests)", ">= 99.9%"),
		Entry(nil, "during fault: p99 < 2ms", false, "p99 = 2ms during fault (3s–6s, 30 requests)", "< 2ms"),
		Entry(nil, "during phase steady: p50 <= 1.2ms", true, "p50 = 1.2ms during phase steady (2s–10s, 80 requests)", "<= 1.2ms"),
		Entry(nil, "during fault: retry_amplification <= 2", false, "retry_amplification = 2.2 (66 upstream attempts / 30 requests) during fault (3s–6s, 30 requests)", "<= 2"),
		Entry(nil, "during fault: retries == 36", true, "retries = 36 during fault (3s–6s, 30 requests)", "== 36"),
		Entry(nil, "during fault: ejections == 1", true, "ejections = 1 during fault (3s–6s, 30 requests)", "== 1"),
		Entry(nil, "attempts_max <= 2", false, "attempts_max = 3, attempts per request 1×65, 2×24, 3×11", "<= 2"),
		Entry(nil, "before fault: attempts_max <= 1", true, "attempts_max = 1 before fault (0s–3s, 30 requests), attempts per request 1×30", "<= 1"),
		Entry(nil, "overflows == 0", false, "overflows = 5 (pending 3, retry 2)", "== 0"),
		Entry(nil, "pending_overflows <= 3", true, "pending_overflows = 3", "<= 3"),
		Entry(nil, "time_to_first_ejection < 2s", true, "time_to_first_ejection = 1.2s (checkout/2 ejected at 4.2s, faults[0] started at 3s)", "< 2s"),
		Entry(nil, "during faults[0]: time_to_first_ejection < 1s", false, "time_to_first_ejection = 1.2s (checkout/2 ejected at 4.2s, faults[0] started at 3s)", "< 1s"),
		Entry(nil, "recovery_time < 1s", true, "recovery_time = 500ms (fault ended at 6s; a whole 1s at ≥ 99% success from 6.5s)", "< 1s"),
		Entry(nil, "after faults[0]: recovery_time < 500ms", false, "recovery_time = 500ms (faults[0] ended at 6s; a whole 1s at ≥ 99% success from 6.5s)", "< 500ms"),
		Entry(nil, "during fault: ejected(checkout/2) within 2s", true, "checkout/2 ejected at 4.2s, 1.2s after faults[0] started at 3s", "ejected within 2s of a fault's start"),
		Entry(nil, "ejected(127.0.0.1:1003) within 2s", true, "127.0.0.1:1003 ejected at 4.2s, 1.2s after faults[0] started at 3s", "ejected within 2s of a fault's start"),
		Entry(nil, "during faults[0]: ejected(checkout/2) within 1s", false, "checkout/2 ejected at 4.2s; faults[0] started at 3s", "ejected within 1s of faults[0]'s start"),
		Entry(nil, "during fault: ejected(checkout/2)", true, "checkout/2 ejected at 4.2s", "ejected during fault"),
		// The fixture's proxy counted one ejection (ejections_enforced_total) and emitted checkout/2's.
		Entry(nil, "ejected(checkout/1)", false, "checkout/1 never ejected; why, from the proxy: cluster.checkout.outlier_detection.ejections_enforced_total = 1: outlier detection did eject, other hosts or outside the window", "ejected at any time in the run"),
		Entry(nil, "during faults[1]: p99 < 1s", false, `scope "during faults[1]": the run has no faults[1]; its fault windows: faults[0]`, "< 1s"),
		Entry(nil, "during phase cooldown: p99 < 1s", false, `scope "during phase cooldown": the run has no load phase "cooldown"; its phases: warmup, steady`, "< 1s"),
	)

	It("fails, saying why, what the record does not hold", func() {
		for i := range rec.Samples {
			rec.Samples[i].Attempts = 0
		}
		rec.ProxyEvents = nil
		rec.Windows[0].End = 0
		exprs := []string{"during fault: retry_amplification <= 2", "attempts_max <= 4", "during fault: ejections == 1",
			"time_to_first_ejection < 2s", "recovery_time < 5s", "ejected(checkout/2)"}
		var cs []checks.Check
		for _, e := range exprs {
			c, err := checks.Parse(e)
			Expect(err).NotTo(HaveOccurred())
			cs = append(cs, c)
		}
		var observed []string
		for _, v := range reports.EvaluateRun(cs, rec) {
			Expect(v.Passed).To(BeFalse(), v.Check)
			observed = append(observed, v.Observed)
		}
		Expect(observed).To(Equal([]string{
			"retry_amplification not recorded during fault (3s–10s, 70 requests): the samples carry no attempt counts",
			"attempts_max not recorded: the samples carry no attempt counts",
			"ejections not recorded during fault (3s–10s, 70 requests): the proxy emitted no ejection events (it counted 1 over the run)",
			"time_to_first_ejection: no ejection of a host a fault window targets, between that window's start and 1s after its end (the proxy emitted no events)",
			"recovery_time not measured: the fault is open-ended: it lasted until the run ended",
			"checkout/2 never ejected (the proxy emitted no events; it counted 1 ejections)",
		}))
	})

	It("does not judge a rate or latency over a phase without requests", func() {
		rec.Windows[0].Start = 0
		c, err := checks.Parse("before fault: p99 < 1s")
		Expect(err).NotTo(HaveOccurred())
		v := reports.EvaluateRun([]checks.Check{c}, rec)[0]
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("no requests before fault (0s–0s, 0 requests): nothing to judge p99 on"))
	})

	It("treats a missing ejection as infinitely late", func() {
		rec.ProxyEvents = rec.ProxyEvents[:1] // the un-ejection only
		c, err := checks.Parse("time_to_first_ejection > 5s")
		Expect(err).NotTo(HaveOccurred())
		Expect(reports.EvaluateRun([]checks.Check{c}, rec)[0].Passed).To(BeTrue())
	})

	It("is what NewReport uses", func() {
		c, err := checks.Parse("during fault: ejected(checkout/2) within 2s")
		Expect(err).NotTo(HaveOccurred())
		r := reports.NewReport(rec, []checks.Check{c})
		Expect(r.Passed).To(BeTrue())
		Expect(r.Outcomes.Windows).To(HaveLen(1))
	})
})
