package reports_test

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
)

// lognormalSamples returns n samples one every 1ms, latencies log-normal around 2ms, every 10th a 500.
func lognormalSamples(n int, seed uint64) []record.Sample {
	rng := rand.New(rand.NewPCG(seed, 1))
	out := make([]record.Sample, n)
	for i := range out {
		lag := time.Duration(rng.IntN(200)) * time.Microsecond
		lat := time.Duration(float64(2*time.Millisecond)*rng.NormFloat64()*0.8+float64(2*time.Millisecond)) + lag
		out[i] = record.Sample{Seq: uint64(i + 1), Intended: time.Duration(i) * time.Millisecond, Status: 200,
			Latency: max(lat, lag+time.Microsecond)}
		out[i].Sent = out[i].Intended + lag
		if i%10 == 0 {
			out[i].Status = 500
		}
	}
	return out
}

var _ = Describe("record.HistSet", func() {
	phases := []record.HistPhase{{Name: "a", Duration: 2 * time.Second, Planned: 2000}, {Name: "b", Start: 2 * time.Second, Duration: 3 * time.Second, Planned: 3000}}
	phaseOf := func(s record.Sample) int {
		if s.Intended < 2*time.Second {
			return 0
		}
		return 1
	}
	recordAll := func(samples []record.Sample) *record.HistSet {
		h := record.NewHistSet(phases)
		for _, s := range samples {
			h.Record(s, phaseOf(s))
		}
		h.Finish()
		return h
	}

	It("reports quantiles within 0.1% of the exact ones, and the exact max", func() {
		samples := lognormalSamples(5000, 1)
		h := recordAll(samples)
		var corrected, uncorrected []time.Duration
		for _, s := range samples {
			corrected, uncorrected = append(corrected, s.Latency), append(uncorrected, s.Uncorrected())
		}
		for _, q := range []float64{0.001, 0.5, 0.75, 0.9, 0.99, 0.999, 0.9999, 1} {
			want := record.ExactPercentile(corrected, q)
			Expect(float64(h.Latency.Corrected.Quantile(q))).To(BeNumerically("~", float64(want), 0.001*float64(want)), "q=%g", q)
			want = record.ExactPercentile(uncorrected, q)
			Expect(float64(h.Latency.Uncorrected.Quantile(q))).To(BeNumerically("~", float64(want), 0.001*float64(want)), "q=%g", q)
		}
		Expect(h.Latency.Corrected.Max()).To(Equal(record.ExactPercentile(corrected, 1)))
		spec := h.Latency.Corrected.Spectrum()
		Expect(spec).To(HaveLen(len(record.SpectrumPercents)))
		Expect(spec[len(spec)-1]).To(Equal(record.QuantileValue{Percent: 100, Value: h.Latency.Corrected.Max()}))
	})

	It("splits by phase, status class and second", func() {
		h := recordAll(lognormalSamples(5000, 2))
		Expect(h.Requests).To(BeEquivalentTo(5000))
		Expect(h.Phases[0].Requests).To(BeEquivalentTo(2000))
		Expect(h.Phases[1].Requests).To(BeEquivalentTo(3000))
		Expect(h.Phases[1].Latency.Corrected.Count()).To(BeEquivalentTo(3000))
		Expect(h.Classes[record.Class5xx].Corrected.Count()).To(BeEquivalentTo(500))
		Expect(h.Classes[record.Class2xx].Corrected.Count()).To(BeEquivalentTo(4500))
		Expect(h.Classes[record.Class4xx]).To(BeNil())
		Expect(h.StatusCodes).To(Equal(map[int]uint64{200: 4500, 500: 500}))
		Expect(len(h.Seconds)).To(BeNumerically(">=", 5)) // the last responses may end in second 6
		var completed uint64
		for i, s := range h.Seconds {
			if i < 5 {
				Expect(s.Intended).To(BeEquivalentTo(1000), "second %d", i)
			}
			completed += s.Completed
			Expect(s.Latency().Corrected.Count()).To(Equal(s.Completed))
		}
		Expect(completed).To(BeEquivalentTo(5000))
		Expect(h.Phases[0].TargetRate()).To(BeNumerically("~", 1000, 1e-9))
		Expect(h.Phases[0].AchievedRate()).To(BeNumerically("~", 1000, 1))
		Expect(h.RateHeld()).To(BeTrue())
	})

	It("merges: two halves give the same histograms as the whole", func() {
		samples := lognormalSamples(5000, 3)
		whole := recordAll(samples)
		odd, even := record.NewHistSet(phases), record.NewHistSet(phases)
		for i, s := range samples {
			if i%2 == 0 {
				even.Record(s, phaseOf(s))
			} else {
				odd.Record(s, phaseOf(s))
			}
		}
		odd.Finish()
		even.Finish()
		Expect(even.Merge(odd)).To(Succeed())
		Expect(even.Requests).To(Equal(whole.Requests))
		for _, q := range []float64{0.5, 0.99, 0.999, 1} {
			Expect(even.Latency.Corrected.Quantile(q)).To(Equal(whole.Latency.Corrected.Quantile(q)))
			Expect(even.Phases[1].Latency.Uncorrected.Quantile(q)).To(Equal(whole.Phases[1].Latency.Uncorrected.Quantile(q)))
			Expect(even.Classes[record.Class5xx].Corrected.Quantile(q)).To(Equal(whole.Classes[record.Class5xx].Corrected.Quantile(q)))
		}
		for i := range whole.Seconds {
			Expect(even.Seconds[i].Completed).To(Equal(whole.Seconds[i].Completed))
			Expect(even.Seconds[i].Latency().Corrected.Quantile(0.99)).To(Equal(whole.Seconds[i].Latency().Corrected.Quantile(0.99)))
		}
		Expect(even.Merge(record.NewHistSet(phases[:1]))).To(MatchError("reports: merging histogram sets: 2 phases vs 1"))
	})

	It("flags a phase that fell behind", func() {
		h := record.NewHistSet([]record.HistPhase{{Name: "p", Duration: time.Second, Planned: 1000}})
		for i := range 1000 {
			intended := time.Duration(i) * time.Millisecond
			sent := 2 * intended // falling further and further behind
			h.Record(record.Sample{Seq: uint64(i + 1), Intended: intended, Sent: sent, Latency: sent - intended + time.Millisecond, Status: 200}, 0)
		}
		h.Finish()
		Expect(h.Phases[0].AchievedRate()).To(BeNumerically("~", 500, 1))
		Expect(h.RateHeld()).To(BeFalse())
	})

	It("writes the load report as one JSON object with the documented keys", func() {
		h := recordAll(lognormalSamples(1000, 4))
		var b bytes.Buffer
		Expect(reports.WriteLoadJSON(&b, reports.LoadReport{URL: "http://x/", Protocol: "http/1.1", Arrivals: "uniform", Hist: h})).To(Succeed())
		var out map[string]any
		Expect(json.Unmarshal(b.Bytes(), &out)).To(Succeed())
		for _, k := range []string{"requests", "errors", "achieved_rate", "target_rate", "rate_held", "latency_ms", "uncorrected_latency_ms", "status_codes", "phases", "seconds", "status_classes"} {
			Expect(out).To(HaveKey(k))
		}
		Expect(out["latency_ms"]).To(HaveKey("p999"))
		Expect(out["latency_ms"]).To(HaveKey("p9999"))
		Expect(out["status_codes"]).To(HaveKeyWithValue("500", 100.0))
		var text bytes.Buffer
		Expect(reports.WriteLoadTerminal(&text, reports.LoadReport{URL: "http://x/", Protocol: "http/1.1", Arrivals: "uniform", Hist: h})).To(Succeed())
		Expect(text.String()).To(ContainSubstring("p99.9"))
	})
})
