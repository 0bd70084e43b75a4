package reports_test

// Issue #13, "What a reader needs": a flapping rule's down periods are windows of their own. Every
// expected value is worked out by hand in a comment.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("a flapping rule's down periods (#13)", func() {
	// 10/s for 8s: requests intended at k·100ms, k = 0…79, all 200 in 1ms except as below.
	// faults[0] on inv/1 from 0.5s, open-ended, flap {down: 400ms, up: 1.6s, offset: 500ms}: down periods
	// [1s, 1.4s), [3s, 3.4s), [5s, 5.4s) (period 2s from 0.5s + 0.5s). The requests intended in them
	// (k = 10…13, 30…33, 50…53: 12) get 503, and so do the two right after the first (k = 14, 15).
	// Proxy events: inv/1 ejected at 1.5s (credited to [1s, 1.4s): 500ms from its start), un-ejected at
	// 2.5s, ejected at 4.2s (after [3s, 3.4s), within its 1s grace, before 5s: credited to it, 1.2s),
	// un-ejected 5.2s; inv/0 (not targeted) ejected at 5.1s; inv/1 ejected at 6.5s (5.4s + 1s grace =
	// 6.4s < 6.5s: not the third period's). So: 500ms, 1.2s, none.
	rec := func() *record.Record {
		r := &record.Record{TargetRate: 10, Duration: 8 * time.Second}
		r.Samples = steady(80, 10, func(int) time.Duration { return ms })
		for _, k := range []int{10, 11, 12, 13, 14, 15, 30, 31, 32, 33, 50, 51, 52, 53} {
			r.Samples[k].Status = 503
		}
		r.Windows = []record.FaultWindow{{Name: "faults[0]", Service: "inv", Instances: []int{1}, Start: 500 * ms, Kind: "refuse",
			Down: []record.Period{{Start: time.Second, End: 1400 * ms}, {Start: 3 * time.Second, End: 3400 * ms}, {Start: 5 * time.Second, End: 5400 * ms}}}}
		ev := func(at time.Duration, kind, host string) record.ProxyEvent {
			return record.ProxyEvent{At: at, Kind: kind, Cluster: "inv", Host: host, Reason: "consecutive_5xx"}
		}
		r.ProxyEvents = []record.ProxyEvent{
			ev(1500*ms, record.ProxyEjected, "inv/1"), ev(2500*ms, record.ProxyUnejected, "inv/1"),
			ev(4200*ms, record.ProxyEjected, "inv/1"), ev(5100*ms, record.ProxyEjected, "inv/0"),
			ev(5200*ms, record.ProxyUnejected, "inv/1"), ev(6500*ms, record.ProxyEjected, "inv/1"),
		}
		return r
	}

	It("credits each ejection to the down period it followed and measures recovery after each", func() {
		o := reports.ComputeOutcomes(rec())
		Expect(o.Windows).To(HaveLen(1))
		d := o.Windows[0].Down
		Expect(d).To(HaveLen(3))
		Expect([]reports.Span{d[0].Span, d[1].Span, d[2].Span}).To(Equal([]reports.Span{
			{Start: time.Second, End: 1400 * ms}, {Start: 3 * time.Second, End: 3400 * ms}, {Start: 5 * time.Second, End: 5400 * ms}}))
		Expect(d[0].Ejected).To(BeTrue())
		Expect(d[0].TimeToFirstEjection).To(Equal(500 * ms))
		Expect(d[1].Ejected).To(BeTrue())
		Expect(d[1].TimeToFirstEjection).To(Equal(1200 * ms))
		Expect(d[2].Ejected).To(BeFalse(), "inv/0 is not targeted; 6.5s is after 5.4s + 1s")
		// inv/1 was out [1.5s, 2.5s), [4.2s, 5.2s), from 6.5s: at 1s and 3s in, at 5s already ejected.
		Expect(d[0].EjectedAtStart).To(BeEmpty())
		Expect(d[1].EjectedAtStart).To(BeEmpty())
		Expect(d[2].EjectedAtStart).To(Equal([]string{"inv/1"}))
		// Recovery after [1s, 1.4s), looked for until 3s (the next down period): [1.4s, 2.4s) holds 8 of
		// 10 ok (k = 14, 15 failed), [1.5s, 2.5s) 9 of 10, [1.6s, 2.6s) 10 of 10 ≥ 99% (the baseline,
		// k = 0…4 before 0.5s, is 100%): 200ms. After the second and third, the first second is whole: 0.
		Expect(d[0].Recovery.Recovered).To(BeTrue(), d[0].Recovery.Why)
		Expect(d[0].Recovery.Time).To(Equal(200 * ms))
		Expect(d[1].Recovery.Recovered).To(BeTrue(), d[1].Recovery.Why)
		Expect(d[1].Recovery.Time).To(BeZero())
		Expect(d[2].Recovery.Recovered).To(BeTrue(), d[2].Recovery.Why)

		// The phase of the down periods: 3 × 400ms = 1.2s, 12 requests, none ok.
		p, ok := o.Phase("during fault down")
		Expect(ok).To(BeTrue())
		Expect(p.Summary.Requests).To(BeEquivalentTo(12))
		Expect(p.Summary.Successes).To(BeZero())
	})

	It("says when an up period is too short to judge the recovery after a down period", func() {
		// down 400ms, up 800ms from 1s: [1s, 1.4s), [2.2s, 2.6s); the run ends at 3s. After the first,
		// 800ms to the next down period; after the second, 400ms to the run's end: both under 1s.
		r := rec()
		r.Duration = 3 * time.Second
		r.Samples = r.Samples[:30]
		r.Windows[0].Down = []record.Period{{Start: time.Second, End: 1400 * ms}, {Start: 2200 * ms, End: 2600 * ms}}
		d := reports.ComputeOutcomes(r).Windows[0].Down
		Expect(d).To(HaveLen(2))
		Expect(d[0].Recovery.Measured).To(BeFalse())
		Expect(d[0].Recovery.Why).To(Equal("the next down period started 800ms after this one ended, less than the 1s needed to judge recovery"))
		Expect(d[1].Recovery.Why).To(Equal("the run ended 400ms after the down period, less than the 1s needed to judge recovery"))
	})

	DescribeTable("checks scoped to the down periods",
		func(expr string, passed bool, observed string) {
			v := judgeOne(expr, rec())
			Expect(v.Passed).To(Equal(passed), v.Observed)
			Expect(v.Observed).To(Equal(observed))
		},
		// The whole window [0.5s, 8s): k = 5…79, 75 requests, 14 failed: 61/75 = 81.33%.
		Entry(nil, "during faults[0]: success_rate >= 80%", true, "success_rate = 81.33% (61/75) during faults[0] (500ms–8s, 75 requests)"),
		// Only the down periods: 12 requests, all 503.
		Entry(nil, "during faults[0] down: success_rate >= 80%", false, "success_rate = 0% (0/12) during faults[0] down (1s–1.4s, 3s–3.4s, 5s–5.4s, 12 requests)"),
		Entry(nil, "during fault down: status(503) == 12", true, "status(503) = 12 during fault down (1s–1.4s, 3s–3.4s, 5s–5.4s, 12 requests)"),
		// From the window's start: 1.5s − 0.5s = 1s; from the down period's start: 1.5s − 1s = 500ms.
		Entry(nil, "time_to_first_ejection < 600ms", false, "time_to_first_ejection = 1s (inv/1 ejected at 1.5s, faults[0] started at 500ms)"),
		Entry(nil, "during faults[0] down: time_to_first_ejection < 600ms", true, "time_to_first_ejection = 500ms (inv/1 ejected at 1.5s, faults[0] down 1s–1.4s)"),
		// Within 600ms of a down period's start: 1.5s is 500ms after 1s. Of the window's start (0.5s):
		// up to 1.1s, and the first ejection is at 1.5s.
		Entry(nil, "during fault down: ejected(inv/1) within 600ms", true, "inv/1 ejected at 1.5s, 500ms after faults[0] went down at 1s"),
		Entry(nil, "ejected(inv/1) within 600ms", false, "inv/1 ejected at 1.5s, 4.2s, 6.5s; faults[0] started at 500ms"),
		// Within 100ms of 1s, 3s or 5s: none of 1.5s, 4.2s, 6.5s.
		Entry(nil, "during faults[0] down: ejected(inv/1) within 100ms", false, "inv/1 ejected at 1.5s, 4.2s, 6.5s; the down periods: 1s–1.4s, 3s–3.4s, 5s–5.4s"),
	)

	It("says which down periods waited in vain", func() {
		r := rec()
		r.ProxyEvents = r.ProxyEvents[3:4] // inv/0's only
		v := judgeOne("during faults[0] down: time_to_first_ejection < 1s", r)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("time_to_first_ejection: no ejection of a host faults[0] targets in its down periods (1s–1.4s, 3s–3.4s, 5s–5.4s) nor 1s after each"))
	})

	It("lists each down period with its first ejection and recovery in report.html", func() {
		r := rec()
		var b bytes.Buffer
		Expect(reports.WriteHTML(&b, reports.NewReport(r, nil), r)).To(Succeed())
		// As computed above: 500ms, 1.2s, none; recovered 200ms, 0s, 0s.
		Expect(b.String()).To(ContainSubstring("<h3>faults[0]: each down period</h3>"))
		Expect(b.String()).To(ContainSubstring("<tr><td>1s–1.4s</td><td>500ms after it started (inv/1)</td><td>200ms (to ≥ 99% success)</td></tr>"))
		Expect(b.String()).To(ContainSubstring("<tr><td>3s–3.4s</td><td>1.2s after it started (inv/1)</td><td>0s (to ≥ 99% success)</td></tr>"))
		Expect(b.String()).To(ContainSubstring("<tr><td>5s–5.4s</td><td>no ejection: inv/1 already ejected when it started</td><td>0s (to ≥ 99% success)</td></tr>"))
	})

	It("validates the scope against the scenario's windows", func() {
		c, err := checks.Parse("during faults[1] down: success_rate >= 99%")
		Expect(err).NotTo(HaveOccurred())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 2, Phases: nil})).To(Succeed())
		Expect(checks.ValidateScope(c, checks.ScopeContext{Faults: 1, Phases: nil})).To(MatchError(ContainSubstring("the run has no faults[1]")))
		_, err = checks.Parse("during faults[0] down: recovery_time < 1s")
		Expect(err).To(MatchError(ContainSubstring(`recovery_time is measured from a fault's end`)))
	})

	It("writes each down period to report.json and reads it back", func() {
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, reports.NewReport(rec(), nil))).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		var j struct {
			Outcomes struct {
				Windows []struct {
					Down []struct {
						StartMs float64  `json:"start_ms"`
						EndMs   float64  `json:"end_ms"`
						TTFE    *float64 `json:"time_to_first_ejection_ms"`
					} `json:"down"`
				} `json:"windows"`
			} `json:"outcomes"`
		}
		Expect(json.Unmarshal(data, &j)).To(Succeed())
		down := j.Outcomes.Windows[0].Down
		Expect(down).To(HaveLen(3))
		Expect([]float64{down[0].StartMs, down[0].EndMs, down[2].StartMs}).To(Equal([]float64{1000, 1400, 5000}))
		Expect(down[0].TTFE).To(HaveValue(Equal(500.0)))
		Expect(down[1].TTFE).To(HaveValue(Equal(1200.0)))
		Expect(down[2].TTFE).To(BeNil())

		back, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Outcomes.Windows[0].Down).To(HaveLen(3))
		Expect(back.Outcomes.Windows[0].Down[1].TimeToFirstEjection).To(Equal(1200 * ms))
	})
})
