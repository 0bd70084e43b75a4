package reports_test

import (
	"math"
	"math/rand/v2"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/reports"
)

const ms = time.Millisecond

// beWithin0_1Percent matches a duration within 0.1% of want.
func beWithin0_1Percent(want time.Duration) types.GomegaMatcher {
	return BeNumerically("~", want, float64(want)/1000)
}

// steady returns n successful samples at rate/s, on time, with latency(i) for sample i (from 0).
func steady(n int, rate float64, latency func(i int) time.Duration) []record.Sample {
	out := make([]record.Sample, n)
	for i := range out {
		at := time.Duration(float64(i) * float64(time.Second) / rate)
		out[i] = record.Sample{Seq: uint64(i + 1), Intended: at, Sent: at, Latency: latency(i), Status: 200}
	}
	return out
}

var _ = Describe("Summarize", func() {
	var rec *record.Record

	BeforeEach(func() {
		rec = &record.Record{TargetRate: 10, Duration: time.Second,
			Samples: steady(10, 10, func(i int) time.Duration { return time.Duration(i+1) * 10 * ms })}
	})

	Context("with mixed outcomes", func() {
		BeforeEach(func() {
			rec.Samples[4].Sent += 3 * ms // late by 3ms: 50ms corrected, 47ms uncorrected
			rec.Samples[6].Status = 302
			rec.Samples[7].Status = 503
			rec.Samples[8].Status, rec.Samples[8].Error = 0, record.ErrReset
			rec.Samples[9].Error = record.ErrEOF // headers arrived, the body did not
			rec.ProxyStats = map[string]uint64{
				"cluster.a.upstream_rq_retry":                            2,
				"cluster.b.c.upstream_rq_retry":                          1, // a cluster name with a dot
				"cluster.a.upstream_rq_retry_success":                    5,
				"listener.x.upstream_rq_retry":                           7,
				"cluster.a.outlier_detection.ejections_enforced_total":   1,
				"cluster.b.c.outlier_detection.ejections_enforced_total": 2,
				"cluster.a.outlier_detection.ejections_active":           1,
			}
			rec.Upstreams = []record.UpstreamRecord{{Service: "a", Requests: 7, Resets: 1}, {Service: "a", Instance: 1, Requests: 6}}
		})

		It("counts outcomes: 2xx and 3xx succeed, 4xx/5xx and transport errors fail", func() {
			s := reports.Summarize(rec)
			Expect(s.Requests).To(BeEquivalentTo(10))
			Expect(s.Successes).To(BeEquivalentTo(7))
			Expect(s.Errors).To(BeEquivalentTo(3))
			Expect(s.SuccessRate).To(Equal(70.0))
			Expect(s.ErrorRate).To(Equal(30.0))
			Expect(s.StatusCodes).To(Equal(map[int]uint64{200: 7, 302: 1, 503: 1}))
			Expect(s.ErrorKinds).To(Equal(map[string]uint64{"reset": 1, "eof": 1}))
		})

		It("sums proxy stats over clusters and computes delivered amplification from the upstreams", func() {
			s := reports.Summarize(rec)
			Expect(s.Retries).To(BeEquivalentTo(3))
			Expect(s.Ejections).To(BeEquivalentTo(3))
			Expect(s.UpstreamReceived).To(BeEquivalentTo(13)) // 7 + 6
			Expect(s.DeliveredAmplification).To(BeNumerically("~", 1.3, 1e-12))
			// Neither attempt counts nor upstream_rq_total: the attempts the proxy made are not recorded.
			Expect(s.AttemptsFrom).To(BeEmpty())
			Expect(s.RetryAmplification).To(BeZero())
		})

		It("computes rate, lag and percentiles corrected and uncorrected", func() {
			s := reports.Summarize(rec)
			Expect(s.AchievedRate).To(BeNumerically("~", 10, 1e-9))
			Expect(s.MaxSendLag).To(Equal(3 * ms))
			Expect(s.RateHeld).To(BeTrue())
			Expect(s.Latency.P50).To(beWithin0_1Percent(50 * ms))
			Expect(s.Latency.P90).To(beWithin0_1Percent(90 * ms))
			Expect(s.Latency.P99).To(Equal(100 * ms)) // capped by the exact max
			Expect(s.Latency.Max).To(Equal(100 * ms))
			Expect(s.Uncorrected.P50).To(beWithin0_1Percent(47 * ms))
		})
	})

	It("falls back to the proxy's upstream_rq_total without upstream records", func() {
		rec.ProxyStats = map[string]uint64{"cluster.a.upstream_rq_total": 12, "cluster.b.upstream_rq_total": 3}
		s := reports.Summarize(rec)
		Expect(s.UpstreamAttempts).To(BeEquivalentTo(15))
		Expect(s.AttemptsFrom).To(Equal(reports.AttemptsFromProxy))
		Expect(s.RetryAmplification).To(Equal(1.5)) // 15 attempts / 10 requests
	})

	It("leaves requests cancelled by the run out of the latencies, not out of the counts", func() {
		rec.Samples = append(rec.Samples, record.Sample{Seq: 11, Intended: time.Second, Sent: time.Second, Latency: time.Hour, Error: record.ErrCanceled})
		s := reports.Summarize(rec)
		Expect(s.Latency.Max).To(Equal(100 * ms))
		Expect(s.Requests).To(BeEquivalentTo(11))
		Expect(s.Errors).To(BeEquivalentTo(1))
	})

	Context("when the generator falls behind", func() {
		It("is not held when sends stretch over twice the duration", func() {
			rec.TargetRate, rec.Samples = 100, steady(100, 50, func(int) time.Duration { return ms })
			for i := range rec.Samples {
				rec.Samples[i].Intended /= 2
			}
			s := reports.Summarize(rec)
			Expect(s.AchievedRate).To(BeNumerically("~", 100/1.99, 1e-9)) // last send at 1.98s, + 10ms
			Expect(s.RateHeld).To(BeFalse())
		})

		It("is not held when one send is more than a second late", func() {
			rec.Duration, rec.Samples = 10*time.Second, steady(100, 10, func(int) time.Duration { return ms })
			rec.Samples[0].Sent += 1100 * ms
			rec.Samples[0].Latency += 1100 * ms
			s := reports.Summarize(rec)
			Expect(s.AchievedRate).To(BeNumerically("~", 10, 1e-9))
			Expect(s.MaxSendLag).To(Equal(1100 * ms))
			Expect(s.RateHeld).To(BeFalse())
		})
	})

	It("summarizes an empty record without NaNs", func() {
		s := reports.Summarize(&record.Record{TargetRate: 10, Duration: time.Second})
		Expect(s.SuccessRate).To(BeZero())
		Expect(s.AchievedRate).To(BeZero())
		Expect(s.RetryAmplification).To(BeZero())
		Expect(s.Latency).To(BeZero())
		Expect(s.RateHeld).To(BeFalse())
	})

	It("gives percentiles within 0.1% of the exact ones on 100k random samples", func() {
		rng := rand.New(rand.NewPCG(7, 11))
		// Log-uniform from 100µs to 10s: every percentile from p50 up is above 1ms, where 1µs resolution
		// is finer than 0.1%.
		rec.Samples = steady(100_000, 10_000, func(int) time.Duration {
			return time.Duration(100e3 * math.Pow(1e5, rng.Float64()))
		})
		for i := range rec.Samples {
			rec.Samples[i].Sent += time.Duration(rng.Int64N(int64(rec.Samples[i].Latency / 2)))
		}
		s := reports.Summarize(rec)
		var corrected, uncorrected []time.Duration
		for _, x := range rec.Samples {
			corrected = append(corrected, x.Latency)
			uncorrected = append(uncorrected, x.Uncorrected())
		}
		for _, c := range []struct {
			got    record.Percentiles
			values []time.Duration
		}{{s.Latency, corrected}, {s.Uncorrected, uncorrected}} {
			Expect(c.got.P50).To(beWithin0_1Percent(record.ExactPercentile(c.values, 0.5)))
			Expect(c.got.P90).To(beWithin0_1Percent(record.ExactPercentile(c.values, 0.9)))
			Expect(c.got.P99).To(beWithin0_1Percent(record.ExactPercentile(c.values, 0.99)))
			Expect(c.got.P999).To(beWithin0_1Percent(record.ExactPercentile(c.values, 0.999)))
			Expect(c.got.Max).To(Equal(record.ExactPercentile(c.values, 1)))
		}
	})
})

var _ = Describe("record.ExactPercentile", func() {
	values := []time.Duration{10, 9, 8, 7, 6, 5, 4, 3, 2, 1}

	DescribeTable("takes the nearest rank",
		func(q float64, want time.Duration) {
			Expect(record.ExactPercentile(values, q)).To(Equal(want))
		},
		Entry("p10", 0.1, time.Duration(1)),
		Entry("just above p10", 0.11, time.Duration(2)),
		Entry("p50", 0.5, time.Duration(5)),
		Entry("p99.9", 0.999, time.Duration(10)),
		Entry("max", 1.0, time.Duration(10)),
		Entry("q 0 is the min", 0.0, time.Duration(1)),
	)

	It("returns 0 for no values and leaves its argument alone", func() {
		Expect(record.ExactPercentile(nil, 0.5)).To(BeZero())
		Expect(values[0]).To(Equal(time.Duration(10)))
	})
})
