package reports_test

// Regression specs for issue #13, "Reports you can bet a rollout on": every expected value is worked out
// by hand in a comment, and each spec failed on the code before the fix.

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
	"github.com/meshproof/meshproof/reports/checks"
)

func mustCheck(expr string) checks.Check {
	GinkgoHelper()
	c, err := checks.Parse(expr)
	Expect(err).NotTo(HaveOccurred())
	return c
}

func judgeOne(expr string, rec *record.Record) reports.Verdict {
	GinkgoHelper()
	return words(reports.EvaluateRun([]checks.Check{mustCheck(expr)}, rec))[0]
}

// words drops the compared value from verdicts, keeping what a person reads.
func words(vs []reports.Verdict) []reports.Verdict {
	out := make([]reports.Verdict, len(vs))
	for i, v := range vs {
		out[i] = reports.Verdict{Check: v.Check, Passed: v.Passed, Observed: v.Observed, Required: v.Required}
	}
	return out
}

var _ = Describe("record.Percentiles are nearest rank everywhere (#13)", func() {
	// ranked returns one successful sample per latency, one every 10ms, in the order given.
	ranked := func(latencies []time.Duration) *record.Record {
		rec := &record.Record{Scenario: "ranks", TargetRate: 100, Duration: time.Duration(len(latencies)) * 10 * ms}
		rec.Samples = steady(len(latencies), 100, func(i int) time.Duration { return latencies[i] })
		return rec
	}

	It("takes rank ⌈q·n⌉ of 1,000 samples 1..1000ms, exactly", func() {
		lat := make([]time.Duration, 1000)
		for i := range lat {
			lat[len(lat)-1-i] = time.Duration(i+1) * ms // in descending order: the order must not matter
		}
		s := reports.Summarize(ranked(lat))
		// ⌈0.5·1000⌉ = 500, ⌈0.9·1000⌉ = 900, ⌈0.99·1000⌉ = 990, ⌈0.999·1000⌉ = 999 (0.999·1000 is
		// 999.0000000000001 in floating point: still rank 999), the max is rank 1000. Before, the
		// HdrHistogram reported the top of the bucket (999ms → 999.423ms).
		Expect(s.Latency).To(Equal(record.Percentiles{P50: 500 * ms, P90: 900 * ms, P99: 990 * ms, P999: 999 * ms, Max: 1000 * ms}))
		Expect(record.ExactPercentile(lat, 0.999)).To(Equal(999 * ms))
		Expect(record.ExactPercentile(lat, 1)).To(Equal(1000 * ms))
	})

	It("takes the 10th of 10 samples as p99", func() {
		// 10ms, 20ms, …, 100ms: ⌈0.99·10⌉ = ⌈9.9⌉ = 10 → 100ms; ⌈0.9·10⌉ = 9 → 90ms (before: 90.047ms,
		// a bucket's top); ⌈0.5·10⌉ = 5 → 50ms.
		lat := make([]time.Duration, 10)
		for i := range lat {
			lat[i] = time.Duration(i+1) * 10 * ms
		}
		s := reports.Summarize(ranked(lat))
		Expect(s.Latency.P99).To(Equal(100 * ms))
		Expect(s.Latency.P90).To(Equal(90 * ms))
		Expect(s.Latency.P50).To(Equal(50 * ms))
	})

	It("takes the one outlier of 999 samples as p99.9", func() {
		// 998 × 2ms and one 815ms: ⌈0.999·999⌉ = ⌈998.001⌉ = 999, the outlier. HdrHistogram's rank
		// round(998.001) = 998 gave 2ms.
		lat := make([]time.Duration, 999)
		for i := range lat {
			lat[i] = 2 * ms
		}
		lat[500] = 815 * ms
		v := judgeOne("p999 < 500ms", ranked(lat))
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("p999 = 815ms"))
	})

	Context("on the 1,600-request run of the issue", func() {
		// 1,597 requests at 5ms and three slow ones: sorted, rank 1598 is 309ms, rank 1599 815ms and rank
		// 1600 (the max) 1.2s. p99.9 is rank ⌈0.999·1600⌉ = ⌈1598.4⌉ = 1599: 815ms. HdrHistogram took rank
		// round(1598.4) = 1598, 309ms, and "p999 < 500ms" passed. p99 is rank ⌈1584⌉ = 1584: 5ms.
		var rec *record.Record
		BeforeEach(func() {
			lat := make([]time.Duration, 1600)
			for i := range lat {
				lat[i] = 5 * ms
			}
			lat[100], lat[900], lat[1500] = 1200*ms, 309*ms, 815*ms
			rec = ranked(lat)
			rec.Phases = []record.LoadPhase{{Name: "steady", End: 16 * time.Second}}
		})

		It("fails p999 < 500ms, over the run and over a phase", func() {
			Expect(judgeOne("p999 < 500ms", rec)).To(Equal(reports.Verdict{Check: "p999 < 500ms", Observed: "p999 = 815ms", Required: "< 500ms"}))
			Expect(judgeOne("during phase steady: p999 < 500ms", rec).Observed).To(Equal("p999 = 815ms during phase steady (0s–16s, 1600 requests)"))
			Expect(judgeOne("p99 <= 5ms", rec).Passed).To(BeTrue())
		})

		It("shows the same p99.9 in the terminal, report.json and the HTML page", func() {
			r := reports.NewReport(rec, nil)
			var term, html bytes.Buffer
			Expect(reports.WriteTerminal(&term, r)).To(Succeed())
			Expect(term.String()).To(MatchRegexp(`latency +p50 5ms  p90 5ms  p99 5ms  p99.9 815ms  max 1.2s `))
			Expect(reports.WriteHTML(&html, r, rec)).To(Succeed())
			Expect(html.String()).To(ContainSubstring("p99.9 815ms"))

			path := filepath.Join(GinkgoT().TempDir(), "report.json")
			Expect(reports.WriteJSON(path, r)).To(Succeed())
			data, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			var m struct {
				Summary struct {
					Latency map[string]float64 `json:"latency_ms"`
				} `json:"summary"`
			}
			Expect(json.Unmarshal(data, &m)).To(Succeed())
			Expect(m.Summary.Latency).To(HaveKeyWithValue("p999", 815.0))
		})

		It("gives the bucket of the same rank in the load histograms, never below the exact value", func() {
			h := record.NewHistSet([]record.HistPhase{{Name: "steady", Duration: 16 * time.Second, Planned: 1600}})
			for _, s := range rec.Samples {
				h.Record(s, 0)
			}
			h.Finish()
			// The bucket holding 815ms spans at most 1/1024 of it: 815ms ≤ p99.9 < 815.8ms.
			p := h.Latency.Corrected.Quantile(0.999)
			Expect(p).To(BeNumerically(">=", 815*ms))
			Expect(p).To(BeNumerically("<", 815800*time.Microsecond))
		})
	})
})

// deadHostRun is a retry storm against a dead host: 100 requests at 10/s over 10 s, through a proxy to
// backend/0 and backend/1; faults[0] takes backend/1 down (connections refused) from 4 s to 6 s.
//
//	before (0–4 s, i 0..39):   1 attempt each, delivered                    → 40 attempts, 40 received
//	during (4–6 s, i 40..59):  i 40..47: 3 attempts, 2 refused, 1 delivered  → 24 attempts,  8 received
//	                           i 48..49: 3 attempts, all refused (503)      →  6 attempts,  0 received
//	                           i 50..59: 1 attempt, delivered               → 10 attempts, 10 received
//	after  (6–10 s, i 60..99): 1 attempt each, delivered                    → 40 attempts, 40 received
//
// Over the run: 120 attempts and 98 received for 100 requests; during the fault 40 attempts for 20.
func deadHostRun() *record.Record {
	rec := &record.Record{
		Scenario: "dead-host", TargetRate: 10, Duration: 10 * time.Second,
		Windows: []record.FaultWindow{{Name: "faults[0]", Service: "backend", Instances: []int{1}, Start: 4 * time.Second,
			End: 6 * time.Second, Kind: "refuse"}},
		ProxyStats: map[string]uint64{"cluster.backend.upstream_rq_total": 120, "cluster.backend.upstream_rq_retry": 20},
		Upstreams: []record.UpstreamRecord{
			{Service: "backend", Instance: 0, Address: "127.0.0.1:2001", Requests: 60},
			{Service: "backend", Instance: 1, Address: "127.0.0.1:2002", Requests: 38},
		},
	}
	rec.Samples = steady(100, 10, func(int) time.Duration { return ms })
	for i := range rec.Samples {
		s := &rec.Samples[i]
		s.Attempts = 1
		switch {
		case i >= 40 && i <= 47:
			s.Attempts = 3
		case i >= 48 && i <= 49:
			s.Attempts, s.Status = 3, 503
		}
	}
	return rec
}

var _ = Describe("retry_amplification is the proxy's attempts per request in every scope (#13)", func() {
	var rec *record.Record
	BeforeEach(func() { rec = deadHostRun() })

	It("counts the attempts that never reached an instance, over the run as during the fault", func() {
		// 120 attempts / 100 requests = 1.2 over the run (before: 98 received / 100 = 0.98, below 1 in a
		// retry storm); 40 / 20 = 2 during the fault, as before.
		Expect(judgeOne("retry_amplification >= 1", rec)).To(Equal(reports.Verdict{Check: "retry_amplification >= 1", Passed: true,
			Observed: "retry_amplification = 1.2 (120 upstream attempts / 100 requests)", Required: ">= 1"}))
		Expect(judgeOne("during fault: retry_amplification == 2", rec)).To(Equal(reports.Verdict{Check: "during fault: retry_amplification == 2",
			Passed: true, Observed: "retry_amplification = 2 (40 upstream attempts / 20 requests) during fault (4s–6s, 20 requests)", Required: "== 2"}))
		Expect(judgeOne("upstream_attempts == 120", rec).Passed).To(BeTrue())
		Expect(judgeOne("during fault: upstream_attempts == 40", rec).Passed).To(BeTrue())
	})

	It("names what the instances received on its own, over the whole run only", func() {
		// 60 + 38 = 98 received for 100 requests: 0.98.
		Expect(judgeOne("delivered_amplification < 1", rec)).To(Equal(reports.Verdict{Check: "delivered_amplification < 1", Passed: true,
			Observed: "delivered_amplification = 0.98 (98 received / 100 requests)", Required: "< 1"}))
		Expect(judgeOne("upstream_received == 98", rec).Passed).To(BeTrue())
		_, err := checks.Parse("during fault: delivered_amplification < 1")
		Expect(err).To(MatchError(`check "during fault: delivered_amplification < 1": delivered_amplification is counted over the whole run only (from the instances' request counts); write the check without "during fault:"`))
	})

	It("writes the same numbers in report.json, the terminal and summary.md", func() {
		r := reports.NewReport(rec, nil)
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, r)).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		var m struct {
			Summary  map[string]any `json:"summary"`
			Outcomes struct {
				Phases []map[string]any `json:"phases"`
			} `json:"outcomes"`
		}
		Expect(json.Unmarshal(data, &m)).To(Succeed())
		Expect(m.Summary).To(HaveKeyWithValue("upstream_attempts", 120.0))
		Expect(m.Summary).To(HaveKeyWithValue("attempts_over", 100.0))
		Expect(m.Summary).To(HaveKeyWithValue("attempts_from", "samples"))
		Expect(m.Summary).To(HaveKeyWithValue("retry_amplification", 1.2))
		Expect(m.Summary).To(HaveKeyWithValue("upstream_received", 98.0))
		Expect(m.Summary).To(HaveKeyWithValue("delivered_amplification", 0.98))
		Expect(m.Summary).NotTo(HaveKey("upstream_requests"))
		Expect(m.Outcomes.Phases[1]).To(HaveKeyWithValue("scope", "during fault"))
		Expect(m.Outcomes.Phases[1]).To(HaveKeyWithValue("retry_amplification", 2.0))
		Expect(m.Outcomes.Phases[1]).To(HaveKeyWithValue("upstream_attempts", 40.0))

		var term, md bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(term.String()).To(MatchRegexp(`upstream +retry amplification 1.2 \(120 upstream attempts / 100 requests\)\n +delivered amplification 0.98 \(98 received / 100 requests\)\n`))
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(md.String()).To(ContainSubstring("| retry amplification | 1.2 (120 upstream attempts / 100 requests) |\n"))
		Expect(md.String()).To(ContainSubstring("| delivered amplification | 0.98 (98 received / 100 requests) |\n"))
		Expect(md.String()).To(ContainSubstring("| during fault | 4s–6s | 20 | 90% | 1ms | 1ms | 1ms | 1ms | 2 | 0 |\n"))

		back, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Summary.RetryAmplification).To(Equal(1.2))
		Expect(back.Summary.DeliveredAmplification).To(Equal(0.98))
	})

	It("falls back to the proxy's upstream_rq_total over the whole run, saying so, and not within a scope", func() {
		for i := range rec.Samples {
			rec.Samples[i].Attempts = 0
		}
		// upstream_rq_total 120 / 100 requests = 1.2: the same number the samples gave.
		Expect(judgeOne("retry_amplification <= 1.2", rec).Observed).To(Equal(
			"retry_amplification = 1.2 (120 upstream attempts / 100 requests) (from the proxy's upstream_rq_total: the samples carry no attempt counts)"))
		Expect(judgeOne("during fault: retry_amplification <= 2", rec).Observed).To(Equal(
			"retry_amplification not recorded during fault (4s–6s, 20 requests): the samples carry no attempt counts"))
	})

	It("reads version 1 reports by their old meaning", func() {
		// Version 1 wrote the instances' 98 as upstream_requests and 98/100 as retry_amplification.
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(os.WriteFile(path, []byte(`{"version": 1, "scenario": "dead-host",
			"summary": {"requests": 100, "upstream_requests": 98, "retry_amplification": 0.98},
			"upstreams": [{"service": "backend", "instance": 0, "requests": 60}, {"service": "backend", "instance": 1, "requests": 38}],
			"outcomes": {"attempts": {"requests": 100, "known": 100, "total": 120, "max": 3, "amplification": 1.2},
				"phases": [{"scope": "during fault", "requests": 20, "retries": 20, "upstream_requests": 40, "retry_amplification": 2,
					"attempts": {"requests": 20, "known": 20, "total": 40, "max": 3, "amplification": 2}}]}}`), 0o644)).To(Succeed())
		r, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(r.Summary.UpstreamReceived).To(BeEquivalentTo(98))
		Expect(r.Summary.DeliveredAmplification).To(Equal(0.98))
		Expect(r.Summary.RetryAmplification).To(Equal(1.2)) // from the attempts: 120 / 100
		Expect(r.Outcomes.Phases[0].Summary.UpstreamAttempts).To(BeEquivalentTo(40))
		Expect(r.Outcomes.Phases[0].Summary.RetryAmplification).To(Equal(2.0))
	})
})

// twoWindowRun is a 10 s run at 10 requests/s with two fault windows on different instances:
//
//	faults[0]: checkout/0, +1ms latency, 2 s–3 s (harmless)
//	faults[1]: checkout/1, abort,         5 s–7 s
//
// The proxy ejects checkout/1 at 5.5 s. Requests all succeed in 1ms unless a spec says otherwise.
func twoWindowRun() *record.Record {
	rec := &record.Record{
		Scenario: "two-windows", TargetRate: 10, Duration: 10 * time.Second,
		Windows: []record.FaultWindow{
			{Name: "faults[0]", Service: "checkout", Instances: []int{0}, Start: 2 * time.Second, End: 3 * time.Second, Kind: "latency"},
			{Name: "faults[1]", Service: "checkout", Instances: []int{1}, Start: 5 * time.Second, End: 7 * time.Second, Kind: "abort"},
		},
		Upstreams: []record.UpstreamRecord{
			{Service: "checkout", Instance: 0, Address: "127.0.0.1:3001"},
			{Service: "checkout", Instance: 1, Address: "127.0.0.1:3002"},
		},
		ProxyEvents: []record.ProxyEvent{{At: 5500 * ms, Kind: record.ProxyEjected, Cluster: "checkout", Host: "127.0.0.1:3002", Reason: "consecutive_5xx"}},
	}
	rec.Samples = steady(100, 10, func(int) time.Duration { return ms })
	return rec
}

var _ = Describe("A window's outcomes are scoped to the window (#13)", func() {
	var rec *record.Record
	BeforeEach(func() { rec = twoWindowRun() })

	It("does not credit a window with another instance's ejection", func() {
		o := reports.ComputeOutcomes(rec)
		// faults[0] targets checkout/0, never ejected: none. Before, it took checkout/1's ejection at 5.5 s,
		// 2.5 s after faults[0] ended: 3.5 s after its start.
		Expect(o.Windows[0].Ejected).To(BeFalse())
		// faults[1] targets checkout/1: 5.5 s − 5 s = 500ms.
		Expect(o.Windows[1].Ejected).To(BeTrue())
		Expect(o.Windows[1].TimeToFirstEjection).To(Equal(500 * ms))
		// All windows together: the ejection is faults[1]'s, measured from its start, 500ms (before: 3.5 s,
		// from faults[0]'s start).
		Expect(o.Fault.EjectionWindow).To(Equal("faults[1]"))
		Expect(o.Fault.TimeToFirstEjection).To(Equal(500 * ms))

		v := judgeOne("during faults[0]: time_to_first_ejection < 5s", rec)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("time_to_first_ejection: no ejection of a host faults[0] targets (checkout/0) between its start at 2s and 1s after its end (4s)"))
		Expect(judgeOne("time_to_first_ejection < 1s", rec).Observed).To(Equal(
			"time_to_first_ejection = 500ms (checkout/1 ejected at 5.5s, faults[1] started at 5s)"))

		var term bytes.Buffer
		Expect(reports.WriteTerminal(&term, reports.NewReport(rec, nil))).To(Succeed())
		Expect(term.String()).To(MatchRegexp(`faults\[0\] +checkout/0 +latency +2s–3s +no ejection +recovery 0s\n`))
	})

	DescribeTable("counts an ejection of a targeted host from the window's start to EjectionGrace (1s) after its end",
		func(host string, at time.Duration, want bool, ttfe time.Duration) {
			rec.ProxyEvents = []record.ProxyEvent{{At: at, Kind: record.ProxyEjected, Cluster: "checkout", Host: host}}
			w := reports.ComputeOutcomes(rec).Windows[0] // 2 s–3 s on checkout/0: counts from 2 s to 4 s
			Expect(w.Ejected).To(Equal(want))
			Expect(w.TimeToFirstEjection).To(Equal(ttfe))
		},
		Entry("before the start", "checkout/0", 1900*ms, false, time.Duration(0)),
		Entry("at the start: 0", "checkout/0", 2*time.Second, true, time.Duration(0)),
		Entry("within: 2.4 s − 2 s", "checkout/0", 2400*ms, true, 400*ms),
		Entry("by address, within the grace: 3.8 s − 2 s", "127.0.0.1:3001", 3800*ms, true, 1800*ms),
		Entry("at the end of the grace: 4 s − 2 s", "checkout/0", 4*time.Second, true, 2*time.Second),
		Entry("after the grace", "checkout/0", 4100*ms, false, time.Duration(0)),
		Entry("another instance within the window", "checkout/1", 2400*ms, false, time.Duration(0)),
	)

	It("looks for a window's recovery only until the next window starts", func() {
		// Requests intended 3.0–4.4 s (i 30..44) fail after faults[0]; faults[1]'s own failures are
		// 5.0–6.9 s (i 50..69). A whole healthy second after faults[0] (ending 3 s) must end by 5 s: the
		// candidates 3.0 s … 4.0 s all hold a failure of i 40..44, so faults[0] never recovered before
		// faults[1] started. Before, [7 s, 8 s) counted: "recovered" after 4 s, on faults[1]'s recovery.
		for i := 30; i < 45; i++ {
			rec.Samples[i].Status = 503
		}
		for i := 50; i < 70; i++ {
			rec.Samples[i].Status = 503
		}
		o := reports.ComputeOutcomes(rec)
		Expect(o.Windows[0].Recovery.Measured).To(BeTrue())
		Expect(o.Windows[0].Recovery.Recovered).To(BeFalse())
		Expect(o.Windows[0].Recovery.Why).To(Equal("no 1s after the fault ended held a success rate of 99% before the next fault started"))
		// faults[1] ends at 7 s and the run is healthy from there: 0.
		Expect(o.Windows[1].Recovery.Recovered).To(BeTrue())
		Expect(o.Windows[1].Recovery.Time).To(BeZero())
		Expect(judgeOne("after faults[0]: recovery_time < 5s", rec).Passed).To(BeFalse())
	})

	It("does not measure a window's recovery while another window is still active", func() {
		rec.Windows[1].Start = 2500 * ms // faults[1] now runs 2.5 s–7 s, past faults[0]'s end at 3 s
		r := reports.ComputeOutcomes(rec).Windows[0].Recovery
		Expect(r.Measured).To(BeFalse())
		Expect(r.Why).To(HavePrefix("faults[1] is still active when this fault ends"))
	})
})

var _ = Describe("Numbers read the same in every writer (#13)", func() {
	// 600 requests: 589 succeed, 11 answer 503 (no transport error); latencies 539 × 1ms then 61 × 1,002ms.
	// success rate 100 × 589/600 = 98.1666…% → 4 significant digits: 98.17% (before: 98.167% in the
	// terminal and summary.md, 98.1667% in the checks). p90 is rank ⌈0.9·600⌉ = 540: 1,002ms → 1.002s
	// (before: "1s", 3 significant digits).
	var r reports.Report
	var rec *record.Record
	BeforeEach(func() {
		rec = &record.Record{Scenario: "formats", TargetRate: 100, Duration: 6 * time.Second}
		rec.Samples = steady(600, 100, func(i int) time.Duration {
			if i < 539 {
				return ms
			}
			return 1002 * ms
		})
		for i := 0; i < 11; i++ {
			rec.Samples[i*50].Status = 503
		}
		r = reports.NewReport(rec, []checks.Check{mustCheck("success_rate >= 99%"), mustCheck("p90 < 1s")})
	})

	It("formats rates and latencies with the same significant digits everywhere", func() {
		Expect(r.Checks[0].Observed).To(Equal("success_rate = 98.17% (589/600)"))
		Expect(r.Checks[1].Observed).To(Equal("p90 = 1.002s"))
		var term, md, html bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(term.String()).To(MatchRegexp(`success +98.17% \(589 ok, 11 failed\)\n`))
		Expect(term.String()).To(MatchRegexp(`latency +p50 1ms  p90 1.002s  p99 1.002s  p99.9 1.002s  max 1.002s `))
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(md.String()).To(ContainSubstring("| success rate | 98.17% |\n"))
		Expect(md.String()).To(ContainSubstring("p90 1.002s"))
		Expect(reports.WriteHTML(&html, r, rec)).To(Succeed())
		Expect(html.String()).To(ContainSubstring("<td>98.17%</td>"))
	})

	It("never rounds a success rate below 100% up to 100%", func() {
		// 1 failure in 250,000: 99.9996% — 4 significant digits would say "100%".
		rec.Samples = steady(250_000, 1000, func(int) time.Duration { return ms })
		rec.Samples[7].Status = 503
		v := judgeOne("success_rate == 100%", rec)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("success_rate = 99.9996% (249999/250000)"))
	})

	It("names transport errors as such, apart from failed responses", func() {
		// The 11 failures are 503 responses: "11 failed", and no transport error.
		var term, md bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(term.String()).To(MatchRegexp(`\ntransport errors +none\n`))
		Expect(term.String()).NotTo(MatchRegexp(`\nerrors +none`))
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(md.String()).To(ContainSubstring("| transport errors | none |\n"))
	})
})
