package reports_test

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

const nackDetail = "Proto constraint validation failed (ClusterValidationError.LoadAssignment: embedded message failed " +
	"validation | caused by ClusterLoadAssignmentValidationError.Endpoints[0]: value is required)"

// changesRecord is a 10 s run at 10 requests/s (a request every 100 ms from 0 s, 1 attempt each) with
// three configuration changes: changes[0] applied as expected at 1 s, answered after 200 ms, window
// 1s–3s, in which 2 of its 20 requests got a 503 and one of those took 3 attempts; changes[1] rejected
// as expected at 4 s, answered after 50 ms, window 4s–6s; changes[2] pushed at 7 s to the run's end,
// never answered. A load phase "steady" covers 3s–10s and a fault window faults[0] 4s–5s.
func changesRecord() *record.Record {
	samples := steady(100, 10, func(int) time.Duration { return 5 * ms })
	for i := range samples {
		samples[i].Attempts = 1
	}
	for _, i := range []int{12, 15} { // 1.2 s and 1.5 s
		samples[i].Status = 503
	}
	samples[12].Attempts = 3
	return &record.Record{
		Scenario: "changes", TargetRate: 10, Duration: 10 * time.Second, Samples: samples,
		Windows: []record.FaultWindow{{Name: "faults[0]", Service: "payments", Start: 4 * time.Second, End: 5 * time.Second, Kind: "abort"}},
		Phases:  []record.LoadPhase{{Name: "steady", Start: 3 * time.Second, End: 10 * time.Second}},
		Changes: []record.Change{
			{Name: "changes[0]", Proxy: "edge", What: "routes", Start: time.Second, End: 3 * time.Second,
				Outcome: record.ChangeApplied, Expected: record.ChangeApplied, Answered: 1200 * ms},
			{Name: "changes[1]", Proxy: "edge", What: "cluster payments", Start: 4 * time.Second, End: 6 * time.Second,
				Outcome: record.ChangeRejected, Expected: record.ChangeRejected, Answered: 4050 * ms, Detail: nackDetail},
			{Name: "changes[2]", Proxy: "edge", What: "endpoints payments: 0,1,3", Start: 7 * time.Second,
				Outcome: record.ChangeUnacknowledged, Expected: record.ChangeApplied},
		},
	}
}

func scope(text string) checks.Scope {
	GinkgoHelper()
	sc, err := checks.ParseScope(text)
	Expect(err).NotTo(HaveOccurred())
	return sc
}

var _ = Describe("configuration change scopes", func() {
	var rec *record.Record
	BeforeEach(func() { rec = changesRecord() })

	It("keeps the fault and phase scopes as they were", func() {
		Expect(scope("during fault")).To(Equal(checks.Scope{Relation: checks.During, Fault: -1}))
		Expect(scope("after faults[1]")).To(Equal(checks.Scope{Relation: checks.After, Fault: 1}))
		Expect(scope("during phase steady")).To(Equal(checks.Scope{Relation: checks.During, Phase: "steady"}))
	})

	It("parses a change's scope into Changes and Change (-1: all)", func() {
		Expect(scope("during change[2]")).To(Equal(checks.Scope{Relation: checks.During, Changes: true, Change: 2}))
		Expect(scope("before changes")).To(Equal(checks.Scope{Relation: checks.Before, Changes: true, Change: -1}))
	})

	DescribeTable("spans: a change's window [Start, End), End 0 to the run end, clipped to the run",
		func(text string, want []reports.Span) {
			Expect(reports.ScopeSpans(rec, scope(text))).To(Equal(want))
		},
		Entry(nil, "during changes[0]", []reports.Span{{Start: time.Second, End: 3 * time.Second}}),
		Entry(nil, "before change[0]", []reports.Span{{Start: 0, End: time.Second}}),
		Entry(nil, "after changes[0]", []reports.Span{{Start: 3 * time.Second, End: 10 * time.Second}}),
		Entry(nil, "during changes[2]", []reports.Span{{Start: 7 * time.Second, End: 10 * time.Second}}),
		Entry(nil, "after changes[2]", []reports.Span{{Start: 10 * time.Second, End: 10 * time.Second}}),
		Entry(nil, "during change", []reports.Span{{Start: time.Second, End: 3 * time.Second}, {Start: 4 * time.Second, End: 6 * time.Second},
			{Start: 7 * time.Second, End: 10 * time.Second}}),
		Entry(nil, "before change", []reports.Span{{Start: 0, End: time.Second}}),
		Entry(nil, "after change", []reports.Span{{Start: 10 * time.Second, End: 10 * time.Second}}),
	)

	It("merges overlapping change windows and clips a window past the run's end", func() {
		rec.Changes[1].Start, rec.Changes[1].End = 2*time.Second, 5*time.Second
		rec.Changes[2].Start = 12 * time.Second
		Expect(reports.ScopeSpans(rec, scope("during change"))).To(Equal([]reports.Span{{Start: time.Second, End: 5 * time.Second}}))
		Expect(reports.ScopeSpans(rec, scope("during changes[2]"))).To(BeEmpty())
		Expect(reports.ScopeSpans(rec, scope("before changes[2]"))).To(Equal([]reports.Span{{Start: 0, End: 10 * time.Second}}))
	})

	It("says which changes the run has when a scope names another, or that it has none", func() {
		_, err := reports.ScopeSpans(rec, scope("during changes[3]"))
		Expect(err).To(MatchError("the run has no changes[3]; its changes: changes[0], changes[1], changes[2]"))
		rec.Changes = nil
		_, err = reports.ScopeSpans(rec, scope("during change"))
		Expect(err).To(MatchError("the run has no configuration changes"))
	})

	It("validates a check's change scope against the scenario's changes", func() {
		c := mustCheck("during change[1]: success_rate >= 99%")
		Expect(checks.ValidateScope(c, checks.ScopeContext{Changes: 2})).To(Succeed())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Changes: 1, Faults: 3})).To(MatchError(
			`check "during change[1]: success_rate >= 99%": scope "during changes[1]": the run has no changes[1]; its changes: changes[0]`))
		Expect(checks.ValidateScope(mustCheck("after change: p99 < 1s"), checks.ScopeContext{Faults: 1})).To(MatchError(
			`check "after change: p99 < 1s": scope "after change": the run has no configuration changes`))
	})

	DescribeTable("metrics measured from a fault's start or end refuse a change's scope",
		func(expr, want string) {
			_, err := checks.Parse(expr)
			Expect(err).To(MatchError(`check "` + expr + `": ` + want))
		},
		Entry(nil, "during changes[0]: time_to_first_ejection < 2s",
			`time_to_first_ejection is measured from a fault's start, and "during changes[0]" is a configuration change's window, not a fault's: scope it "during fault" or "during faults[N]", or leave the scope out`),
		Entry(nil, "after change: recovery_time < 5s",
			`recovery_time is measured from a fault's end, and "after change" is a configuration change's window, not a fault's: scope it "after fault" or "after faults[N]", or leave the scope out`),
		Entry(nil, "during change: ejected(payments/1) within 2s",
			`ejected() is measured from a fault's start, and "during change" is a configuration change's window, not a fault's: scope it "during fault" or "during faults[N]", or leave the scope out`),
	)

	It("refuses them when judging a check built by hand too", func() {
		for _, c := range []checks.Check{
			{Scope: "during change", Metric: "time_to_first_ejection", Op: "<", Value: 2, Unit: "s"},
			{Scope: "during changes[0]", Metric: "ejected(payments/1)"},
		} {
			v := reports.EvaluateRun([]checks.Check{c}, rec)[0]
			Expect(v.Passed).To(BeFalse())
			Expect(v.Observed).To(ContainSubstring("is a configuration change's window, not a fault's"))
		}
	})
})

var _ = Describe("checks scoped to a configuration change", func() {
	var rec *record.Record
	BeforeEach(func() { rec = changesRecord() })

	judge := func(expr string) reports.Verdict {
		GinkgoHelper()
		return reports.EvaluateRun([]checks.Check{mustCheck(expr)}, rec)[0]
	}

	It("judges success_rate over the requests sent in the change's window", func() {
		v := judge("during change[0]: success_rate >= 99.9%")
		Expect(v.Passed).To(BeFalse())
		Expect(v.Value).To(Equal(90.0))
		Expect(v.Observed).To(Equal("success_rate = 90% (18/20) during changes[0] (1s–3s, 20 requests)"))
		Expect(judge("during changes[1]: success_rate == 100%").Passed).To(BeTrue())
	})

	DescribeTable("every metric that works in a fault window works in a change's window",
		func(expr string, want float64) {
			v := judge(expr)
			Expect(v.Measured).To(BeTrue(), v.Observed)
			Expect(v.Value).To(BeNumerically("~", want, 1e-9), v.Observed)
			Expect(v.Passed).To(BeTrue(), v.Observed)
		},
		Entry(nil, "during changes[0]: requests == 20", 20.0),
		Entry(nil, "during changes[0]: status(503) == 2", 2.0),
		Entry(nil, "during changes[0]: status(5xx) == 2", 2.0),
		Entry(nil, "during changes[0]: upstream_attempts == 22", 22.0),
		Entry(nil, "during changes[0]: retries == 2", 2.0),
		Entry(nil, "during changes[0]: attempts_max == 3", 3.0),
		Entry(nil, "during changes[0]: retry_amplification == 1.1", 1.1),
		Entry(nil, "during changes[0]: p99 == 5ms", 0.005),
		Entry(nil, "during change: requests == 70", 70.0),
		Entry(nil, "after changes[0]: errors == 0", 0.0),
		Entry(nil, "before change: requests == 10", 10.0),
	)

	It("lists the change windows among the phases", func() {
		o := reports.ComputeOutcomes(rec)
		p, ok := o.Phase("during changes[0]")
		Expect(ok).To(BeTrue())
		Expect(p.Summary.Requests).To(Equal(uint64(20)))
		Expect(p.Summary.SuccessRate).To(Equal(90.0))
		p, ok = o.Phase("during change")
		Expect(ok).To(BeTrue())
		Expect(p.Spans).To(HaveLen(3))
		Expect(o.Changes).To(HaveLen(3))
		Expect(o.Changes[2].Span).To(Equal(reports.Span{Start: 7 * time.Second, End: 10 * time.Second}))
	})
})

var _ = Describe("configuration change metrics", func() {
	var rec *record.Record
	BeforeEach(func() { rec = changesRecord() })

	judge := func(expr string) reports.Verdict {
		GinkgoHelper()
		return reports.EvaluateRun([]checks.Check{mustCheck(expr)}, rec)[0]
	}

	DescribeTable("counts",
		func(expr string, want float64) {
			v := judge(expr)
			Expect(v.Measured).To(BeTrue(), v.Observed)
			Expect(v.Value).To(Equal(want), v.Observed)
		},
		// Unscoped: every change.
		Entry(nil, "changes_applied == 1", 1.0),
		Entry(nil, "changes_rejected == 1", 1.0),
		Entry(nil, "changes_unexpected == 1", 1.0), // changes[2], unacknowledged
		// "during changes[N]": that change only.
		Entry(nil, "during changes[1]: changes_rejected == 1", 1.0),
		Entry(nil, "during changes[2]: changes_rejected == 1", 0.0),
		Entry(nil, "during changes[2]: changes_unexpected == 1", 1.0),
		Entry(nil, "during change[0]: changes_applied == 1", 1.0),
		// "during change": every change.
		Entry(nil, "during change: changes_applied == 1", 1.0),
		Entry(nil, "during changes: changes_unexpected == 1", 1.0),
		// Other scopes: the changes pushed within their spans.
		Entry(nil, "during phase steady: changes_rejected == 1", 1.0), // 3s–10s: changes[1], changes[2]
		Entry(nil, "during phase steady: changes_applied == 0", 0.0),
		Entry(nil, "during fault: changes_rejected == 1", 1.0),       // 4s–5s: changes[1]
		Entry(nil, "after changes[0]: changes_unexpected == 1", 1.0), // 3s–10s
		Entry(nil, "before changes[2]: changes_applied == 1", 1.0),   // 0–7s: changes[0], changes[1]
		Entry(nil, "before change: changes_applied == 0", 0.0),       // 0–1s: none
	)

	It("says which changes it counted", func() {
		Expect(judge("changes_unexpected == 0").Observed).To(Equal(
			"changes_unexpected = 1 (3 changes: changes[0] applied, changes[1] rejected, changes[2] unacknowledged (expected applied))"))
		Expect(judge("during changes[1]: changes_rejected == 1").Observed).To(Equal(
			"changes_rejected = 1 during changes[1] (4s–6s) (1 of 3 changes: changes[1] rejected)"))
		Expect(judge("before change: changes_applied == 0").Observed).To(Equal(
			"changes_applied = 0 before change (0s–1s): no change pushed in it"))
	})

	It("counts a rejection the scenario did not expect, and an applied change it expected rejected", func() {
		rec.Changes[0].Expected = record.ChangeRejected
		rec.Changes[1].Expected = record.ChangeApplied
		rec.Changes[2].Outcome, rec.Changes[2].Answered = record.ChangeApplied, 7300*ms
		Expect(judge("changes_unexpected == 2").Passed).To(BeTrue())
	})

	It("takes a change with no recorded expectation as expected to apply", func() {
		rec.Changes[1].Expected = ""
		Expect(judge("changes_unexpected == 2").Passed).To(BeTrue())
	})

	Describe("change_apply_time", func() {
		It("is the longest time from push to ACK or NACK over the changes in scope", func() {
			v := judge("during changes[0]: change_apply_time < 250ms")
			Expect(v.Passed).To(BeTrue())
			Expect(v.Value).To(BeNumerically("~", 0.2, 1e-12))
			Expect(v.Observed).To(Equal("change_apply_time = 200ms during changes[0] (1s–3s) (changes[0], the longest of 1: pushed at 1s, applied at 1.2s)"))

			v = judge("during changes[1]: change_apply_time <= 50ms")
			Expect(v.Passed).To(BeTrue())
			Expect(v.Value).To(BeNumerically("~", 0.05, 1e-12))

			v = judge("before changes[2]: change_apply_time < 100ms")
			Expect(v.Passed).To(BeFalse())
			Expect(v.Value).To(BeNumerically("~", 0.2, 1e-12))
		})

		It("fails, naming the change, when a change in scope is unacknowledged", func() {
			for _, expr := range []string{"change_apply_time < 1s", "change_apply_time > 1s", "during changes[2]: change_apply_time < 10s"} {
				v := judge(expr)
				Expect(v.Passed).To(BeFalse(), expr)
				Expect(v.Measured).To(BeFalse(), expr)
				Expect(v.Observed).To(ContainSubstring("changes[2] (pushed at 7s) unacknowledged: the proxy answered neither ACK nor NACK before the run ended at 10s"), expr)
			}
			Expect(judge("change_apply_time < 1s").Observed).To(HaveSuffix("; the longest answered change took 200ms (changes[0])"))
		})

		It("has nothing to judge in a scope without a change", func() {
			v := judge("before change: change_apply_time < 1s")
			Expect(v.Passed).To(BeFalse())
			Expect(v.Observed).To(Equal("no configuration change pushed before change (0s–1s): nothing to judge change_apply_time on"))
		})
	})

	It("says the run made no configuration changes when it made none", func() {
		rec.Changes = nil
		for _, expr := range []string{"changes_applied == 0", "changes_rejected == 0", "changes_unexpected == 0", "change_apply_time < 1s"} {
			v := judge(expr)
			Expect(v.Passed).To(BeFalse(), expr)
			Expect(v.Observed).To(HaveSuffix(": the run made no configuration changes"), expr)
		}
		v := judge("during change: changes_applied == 0")
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("changes_applied: the run made no configuration changes"))
		v = judge("during change: success_rate >= 99%") // a clients' metric in a change's scope
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal(`scope "during change": the run has no configuration changes`))
	})

	It("needs the run record", func() {
		v := reports.Evaluate([]checks.Check{mustCheck("changes_applied == 1")}, reports.Summarize(rec))[0]
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(ContainSubstring("needs the run record"))
	})
})

var _ = Describe("configuration changes in the report files", func() {
	var r reports.Report
	var rec *record.Record
	BeforeEach(func() {
		rec = changesRecord()
		r = reports.NewReport(rec, []checks.Check{mustCheck("during change[0]: success_rate >= 99.9%")})
	})

	It("shows them in summary.md as a table, the NACK detail shortened", func() {
		var b bytes.Buffer
		Expect(reports.WriteMarkdown(&b, r)).To(Succeed())
		md := b.String()
		Expect(md).To(ContainSubstring("### Configuration changes\n\n| change | proxy | what | at | outcome | answered after | NACK detail |\n"))
		Expect(md).To(ContainSubstring("| changes[0] | edge | routes | 1s | applied | 200ms |  |\n"))
		Expect(md).To(ContainSubstring("| changes[1] | edge | cluster payments | 4s | rejected | 50ms | Proto constraint validation failed (ClusterValidationError.LoadAssignment: embe… |\n"))
		Expect(md).To(ContainSubstring("| changes[2] | edge | endpoints payments: 0,1,3 | 7s | unacknowledged (expected applied) | — |  |\n"))
		Expect(md).To(ContainSubstring("| during changes[0] | 1s–3s | 20 | 90% |"))
	})

	It("shows them in the terminal", func() {
		var b bytes.Buffer
		Expect(reports.WriteTerminal(&b, r)).To(Succeed())
		Expect(b.String()).To(ContainSubstring("configuration changes\n"))
		Expect(b.String()).To(MatchRegexp(`changes\[2\] +edge +endpoints payments: 0,1,3 +at 7s +unacknowledged \(expected applied\) +answered after —`))
		Expect(b.String()).To(MatchRegexp(`changes\[1\] +edge +cluster payments +at 4s +rejected +answered after 50ms +Proto constraint`))
	})

	It("shows them in report.html: a table, and marks on the time charts", func() {
		var b bytes.Buffer
		Expect(reports.WriteHTML(&b, r, rec)).To(Succeed())
		html := b.String()
		Expect(html).To(ContainSubstring("<h2>Configuration changes</h2>"))
		Expect(html).To(ContainSubstring(`<tr class="failed"><td>changes[2]</td><td>edge</td><td>endpoints payments: 0,1,3</td><td>7s</td><td>unacknowledged (expected applied)</td>`))
		Expect(html).To(ContainSubstring("configuration change pushed")) // the charts' legend
		Expect(html).To(ContainSubstring("changes[1] rejected"))         // the mark's label
	})

	It("leaves them out of every writer when the run made none", func() {
		rec.Changes = nil
		r = reports.NewReport(rec, nil)
		var md, term, html bytes.Buffer
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(reports.WriteHTML(&html, r, rec)).To(Succeed())
		Expect(md.String() + term.String() + html.String()).NotTo(ContainSubstring("onfiguration change"))
	})

	Describe("report.json", func() {
		var path string
		BeforeEach(func() {
			path = filepath.Join(GinkgoT().TempDir(), "report.json")
			Expect(reports.WriteJSON(path, r)).To(Succeed())
		})

		It("holds the changes array under outcomes, durations in milliseconds, null when unanswered", func() {
			data, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			var j struct {
				Outcomes struct {
					Changes []map[string]any `json:"changes"`
				} `json:"outcomes"`
			}
			Expect(json.Unmarshal(data, &j)).To(Succeed())
			Expect(j.Outcomes.Changes).To(HaveLen(3))
			Expect(j.Outcomes.Changes[0]).To(Equal(map[string]any{"name": "changes[0]", "proxy": "edge", "what": "routes",
				"start_ms": 1000.0, "end_ms": 3000.0, "open_ended": false, "outcome": "applied", "expected": "applied", "unexpected": false,
				"answered_ms": 1200.0, "apply_time_ms": 200.0, "detail": ""}))
			Expect(j.Outcomes.Changes[1]).To(HaveKeyWithValue("detail", nackDetail))
			Expect(j.Outcomes.Changes[2]).To(And(HaveKeyWithValue("answered_ms", BeNil()), HaveKeyWithValue("apply_time_ms", BeNil()),
				HaveKeyWithValue("open_ended", true), HaveKeyWithValue("end_ms", 10000.0), HaveKeyWithValue("unexpected", true)))
		})

		It("reads them back as written", func() {
			back, err := reports.ReadReport(path)
			Expect(err).NotTo(HaveOccurred())
			Expect(back.Outcomes.Changes).To(Equal(r.Outcomes.Changes))
			p, ok := back.Outcomes.Phase("during changes[0]")
			Expect(ok).To(BeTrue())
			Expect(p.Summary.Requests).To(Equal(uint64(20)))
		})

		It("leaves the key out when the run made no changes", func() {
			rec.Changes = nil
			Expect(reports.WriteJSON(path, reports.NewReport(rec, nil))).To(Succeed())
			data, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(data)).NotTo(ContainSubstring(`"changes":`))
		})
	})
})

var _ = Describe("a change's window judged as a fault window over the same span", func() {
	// meshRun's faults[0] is 4s–6s; a change with the same window must give every metric the same value.
	DescribeTable("the clients', an edge's and a service's metrics",
		func(check string) {
			rec := meshRun()
			rec.Changes = []record.Change{{Name: "changes[0]", Proxy: "frontend", What: "routes", Start: 4 * time.Second,
				End: 6 * time.Second, Outcome: record.ChangeApplied, Expected: record.ChangeApplied, Answered: 4100 * ms}}
			vs := reports.EvaluateRun([]checks.Check{mustCheck("during faults[0]: " + check), mustCheck("during changes[0]: " + check)}, rec)
			fault, change := vs[0], vs[1]
			Expect(fault.Measured).To(BeTrue(), fault.Observed)
			Expect(change.Measured).To(BeTrue(), change.Observed)
			Expect(change.Value).To(Equal(fault.Value))
			Expect(change.Observed).To(Equal(strings.Replace(fault.Observed, "during faults[0]", "during changes[0]", 1)))
		},
		Entry(nil, "success_rate >= 0%"), Entry(nil, "p99 >= 0s"), Entry(nil, "requests >= 0"), Entry(nil, "status(503) >= 0"),
		Entry(nil, "upstream_attempts >= 0"), Entry(nil, "retries >= 0"), Entry(nil, "ejections >= 0"), Entry(nil, "attempts_max >= 0"),
		Entry(nil, "edge(cart->payments): success_rate >= 0%"), Entry(nil, "edge(cart->payments): retry_amplification >= 0"),
		Entry(nil, "edge(cart->payments): retries >= 0"), Entry(nil, "edge(cart->payments): ejections >= 0"),
		Entry(nil, "edge(cart->payments): p99 >= 0s"), Entry(nil, "service(cart): requests >= 0"),
	)
})
