package reports_test

// Issue #13, "What a reader needs": each expected value is worked out by hand in a comment.

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
)

var _ = Describe("overflowed requests took 0 attempts, known (#13)", func() {
	// Four requests at 10/s: 1 attempt, 2 attempts, and two the breaker turned away (the proxy said 0
	// attempts: ZeroAttempts). Known: 4 of 4 (before: 2 of 4, "attempts unknown" for the overflows).
	// upstream_attempts = 1+2+0+0 = 3, retry_amplification = 3/4 = 0.75, retries = (1−1)+(2−1) = 1
	// (before, over a scope: Total − Known = 3 − 4 would have underflowed), attempts_max = 2,
	// distribution {0: 2, 1: 1, 2: 1}.
	rec := func() *record.Record {
		r := &record.Record{TargetRate: 10, Duration: 400 * ms}
		r.Samples = steady(4, 10, func(int) time.Duration { return ms })
		r.Samples[0].Attempts, r.Samples[1].Attempts = 1, 2
		for i := 2; i < 4; i++ {
			r.Samples[i].Status, r.Samples[i].ZeroAttempts = 503, true
		}
		return r
	}

	It("counts them as known in the whole run and in a scope", func() {
		s := reports.Summarize(rec())
		Expect(s.AttemptsFrom).To(Equal(reports.AttemptsFromSamples))
		Expect(s.UpstreamAttempts).To(BeEquivalentTo(3))
		Expect(s.AttemptsOver).To(BeEquivalentTo(4))
		Expect(s.RetryAmplification).To(Equal(0.75))
		o := reports.ComputeOutcomes(rec())
		Expect(o.Attempts.Known).To(BeEquivalentTo(4))
		Expect(o.Attempts.Distribution).To(Equal(map[int]uint64{0: 2, 1: 1, 2: 1}))
		Expect(judgeOne("during phase main: retries == 1", withPhase(rec())).Passed).To(BeTrue())
		v := judgeOne("attempts_max == 2", rec())
		Expect(v.Passed).To(BeTrue(), v.Observed)
		Expect(v.Observed).NotTo(ContainSubstring("known for"))
	})
})

// withPhase gives a record one load phase "main" over its whole planned duration.
func withPhase(r *record.Record) *record.Record {
	r.Phases = []record.LoadPhase{{Name: "main", Start: 0, End: r.Duration}}
	return r
}

var _ = Describe("empty phases (#13)", func() {
	// A fault [0, 200ms) at 10/s for 400ms: "before fault" covers 0s–0s — no time, no requests — and is
	// left out of the terminal, summary.md and report.html, but kept in report.json (requests 0). The
	// named phase "idle" [400ms, 600ms) lies past the last request (intended 300ms): it covers time but
	// holds no request, so it reads "no requests", not "0% success" and "0ns" latencies.
	var (
		rec *record.Record
		r   reports.Report
	)

	BeforeEach(func() {
		rec = &record.Record{Scenario: "empty", TargetRate: 10, Duration: 600 * ms,
			Windows: []record.FaultWindow{{Name: "faults[0]", Service: "checkout", Start: 0, End: 200 * ms, Kind: "latency"}},
			Phases:  []record.LoadPhase{{Name: "busy", Start: 0, End: 400 * ms}, {Name: "idle", Start: 400 * ms, End: 600 * ms}},
		}
		rec.Samples = steady(4, 10, func(int) time.Duration { return ms })
		r = reports.NewReport(rec, nil)
	})

	It("leaves the phase covering no time out of the people's writers and says 'no requests' for the other", func() {
		var term, md, html bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(reports.WriteHTML(&html, r, rec)).To(Succeed())
		for name, text := range map[string]string{"terminal": term.String(), "summary.md": md.String(), "report.html": html.String()} {
			Expect(text).NotTo(ContainSubstring("before fault"), name)
			Expect(text).To(ContainSubstring("during fault"), name)
			Expect(text).To(MatchRegexp(`during phase idle[^\n]*no requests`), name)
			Expect(text).NotTo(MatchRegexp(`during phase idle[^\n]*0%`), name)
		}
	})

	It("keeps every phase in report.json", func() {
		dir := GinkgoT().TempDir()
		Expect(reports.WriteJSON(filepath.Join(dir, "report.json"), r)).To(Succeed())
		var doc struct {
			Outcomes struct {
				Phases []struct {
					Scope    string `json:"scope"`
					Requests int    `json:"requests"`
				} `json:"phases"`
			} `json:"outcomes"`
		}
		data, err := os.ReadFile(filepath.Join(dir, "report.json"))
		Expect(err).NotTo(HaveOccurred())
		Expect(json.Unmarshal(data, &doc)).To(Succeed())
		Expect(doc.Outcomes.Phases).To(ContainElement(And(HaveField("Scope", "before fault"), HaveField("Requests", 0))))
	})
})

var _ = Describe("upstream requests nobody saw answered (#13)", func() {
	// An instance received 7 requests: 3 answered 200, 1 reset, 2 abandoned by the proxy's per-try
	// timeout (canceled), 1 held by a hang fault: 3+1+2+1 = 7. report.json has canceled 2, hangs 1; the
	// terminal says so next to the instance.
	It("puts Canceled and Hangs in report.json and the terminal", func() {
		rec := &record.Record{Scenario: "abandoned", TargetRate: 10, Duration: 700 * ms,
			Upstreams: []record.UpstreamRecord{{Service: "checkout", Address: "127.0.0.1:1", Requests: 7,
				Statuses: map[int]uint64{200: 3}, Resets: 1, Canceled: 2, Hangs: 1}}}
		rec.Samples = steady(7, 10, func(int) time.Duration { return ms })
		r := reports.NewReport(rec, nil)
		var term bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(term.String()).To(MatchRegexp(`checkout/0 .*canceled 2, hangs 1`))

		dir := GinkgoT().TempDir()
		Expect(reports.WriteJSON(filepath.Join(dir, "report.json"), r)).To(Succeed())
		back, err := reports.ReadReport(dir)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Upstreams).To(HaveExactElements(And(HaveField("Canceled", BeEquivalentTo(2)), HaveField("Hangs", BeEquivalentTo(1)))))
	})
})
