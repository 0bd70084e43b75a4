package reports_test

// Issue #13, "What a reader needs": each expected value is worked out by hand in a comment.

import (
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
