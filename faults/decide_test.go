package faults_test

import (
	"math/rand/v2"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

func abortRule(name string, status int, percent float64) faults.Fault {
	return faults.Fault{Name: name, Abort: &faults.Abort{Status: status, Percent: percent}}
}

var _ = Describe("Decide", func() {
	var rng *rand.Rand

	BeforeEach(func() {
		rng = rand.New(rand.NewPCG(7, 11))
	})

	Context("without faults", func() {
		It("answers the response's status after its latency", func() {
			d := faults.Decide(faults.Response{Status: 201, Latency: 2 * time.Millisecond}, nil, 0, rng)
			Expect(d).To(Equal(faults.Decision{Status: 201, Delay: 2 * time.Millisecond}))
		})

		It("defaults the status to 200", func() {
			Expect(faults.Decide(faults.Response{}, nil, 0, rng).Status).To(Equal(200))
		})
	})

	Context("with an abort", func() {
		It("answers the abort status at 100% and reports it", func() {
			d := faults.Decide(faults.Response{}, []faults.Fault{abortRule("faults[0]", 503, 100)}, 0, rng)
			Expect(d.Status).To(Equal(503))
			Expect(d.Reset).To(BeFalse())
			Expect(d.Applied).To(Equal([]faults.Applied{{Fault: "faults[0]", Kind: "abort", Detail: "503"}}))
		})

		It("lets the first abort that fires win", func() {
			rules := []faults.Fault{abortRule("first", 503, 100), abortRule("second", 500, 100)}
			d := faults.Decide(faults.Response{}, rules, 0, rng)
			Expect(d.Status).To(Equal(503))
			Expect(d.Applied).To(ConsistOf(HaveField("Fault", "first")))
		})

		DescribeTable("aborts its percent of 10,000 requests",
			func(percent, want, tolerance float64) {
				rules := []faults.Fault{abortRule("faults[0]", 503, percent)}
				aborted := 0
				for n := uint64(1); n <= 10_000; n++ {
					if faults.Decide(faults.Response{}, rules, 0, faults.RequestRand(7, "checkout", 2, n)).Status == 503 {
						aborted++
					}
				}
				Expect(float64(aborted) / 10_000).To(BeNumerically("~", want, tolerance))
			},
			Entry("100% always", 100.0, 1.0, 0.0),
			Entry("0% never", 0.0, 0.0, 0.0),
			Entry("30% within 2 points", 30.0, 0.30, 0.02),
		)
	})

	Context("with latency", func() {
		It("adds every latency that fires to the base latency", func() {
			rules := []faults.Fault{
				{Name: "slow", Latency: &faults.Latency{Fixed: 50 * time.Millisecond, Percent: 100}},
				{Name: "never", Latency: &faults.Latency{Fixed: time.Second, Percent: 0}},
				{Name: "slower", Latency: &faults.Latency{Fixed: 100 * time.Millisecond, Percent: 100}},
			}
			d := faults.Decide(faults.Response{Latency: 2 * time.Millisecond}, rules, 0, rng)
			Expect(d.Delay).To(Equal(152 * time.Millisecond))
			Expect(d.Status).To(Equal(200))
			Expect(d.Applied).To(Equal([]faults.Applied{
				{Fault: "slow", Kind: "latency", Detail: "50ms"},
				{Fault: "slower", Kind: "latency", Detail: "100ms"},
			}))
		})
	})

	DescribeTable("applies a fault only inside its window",
		func(start, duration, elapsed time.Duration, active bool) {
			rule := abortRule("faults[0]", 503, 100)
			rule.Start, rule.Duration = start, duration
			want := 200
			if active {
				want = 503
			}
			Expect(faults.Decide(faults.Response{}, []faults.Fault{rule}, elapsed, rng).Status).To(Equal(want))
		},
		Entry("before Start", 10*time.Second, 5*time.Second, 10*time.Second-time.Nanosecond, false),
		Entry("at Start", 10*time.Second, 5*time.Second, 10*time.Second, true),
		Entry("just before Start+Duration", 10*time.Second, 5*time.Second, 15*time.Second-time.Nanosecond, true),
		Entry("at Start+Duration", 10*time.Second, 5*time.Second, 15*time.Second, false),
		Entry("open-ended, before Start", 10*time.Second, time.Duration(0), time.Second, false),
		Entry("open-ended, long after Start", 10*time.Second, time.Duration(0), 24*time.Hour, true),
	)

	Context("with a reset", func() {
		It("takes precedence over an abort in the same rule", func() {
			rule := abortRule("faults[0]", 503, 100)
			rule.Reset = &faults.Reset{Percent: 100}
			d := faults.Decide(faults.Response{}, []faults.Fault{rule}, 0, rng)
			Expect(d.Reset).To(BeTrue())
			Expect(d.Applied).To(Equal([]faults.Applied{{Fault: "faults[0]", Kind: "reset", Detail: "rst"}}))
		})

		It("takes precedence over an abort in an earlier rule, after the latency", func() {
			rules := []faults.Fault{
				abortRule("abort", 503, 100),
				{Name: "slow", Latency: &faults.Latency{Fixed: 5 * time.Millisecond, Percent: 100}},
				{Name: "reset", Reset: &faults.Reset{Percent: 100}},
			}
			d := faults.Decide(faults.Response{}, rules, 0, rng)
			Expect(d.Reset).To(BeTrue())
			Expect(d.Delay).To(Equal(5 * time.Millisecond))
			Expect(d.Applied).To(Equal([]faults.Applied{
				{Fault: "slow", Kind: "latency", Detail: "5ms"},
				{Fault: "reset", Kind: "reset", Detail: "rst"},
			}))
		})
	})

	Context("determinism", func() {
		rules := []faults.Fault{
			{Name: "slow", Latency: &faults.Latency{Fixed: 10 * time.Millisecond, Percent: 50}},
			{Name: "flaky", Abort: &faults.Abort{Status: 503, Percent: 30}, Reset: &faults.Reset{Percent: 10}},
		}
		decisions := func(seed uint64, service string, instance int, ns []uint64) map[uint64]faults.Decision {
			out := map[uint64]faults.Decision{}
			for _, n := range ns {
				out[n] = faults.Decide(faults.Response{}, rules, 0, faults.RequestRand(seed, service, instance, n))
			}
			return out
		}
		var forward, backward []uint64
		for n := uint64(1); n <= 1000; n++ {
			forward = append(forward, n)
			backward = append([]uint64{n}, backward...)
		}

		It("gives the n-th request the same decision whatever the order of evaluation", func() {
			Expect(decisions(7, "checkout", 2, backward)).To(Equal(decisions(7, "checkout", 2, forward)))
		})

		It("gives different decisions for a different seed, service or instance", func() {
			base := decisions(7, "checkout", 2, forward)
			Expect(decisions(8, "checkout", 2, forward)).NotTo(Equal(base))
			Expect(decisions(7, "payments", 2, forward)).NotTo(Equal(base))
			Expect(decisions(7, "checkout", 3, forward)).NotTo(Equal(base))
		})

		It("keeps a rule's outcome whether or not the rules before it are active or fire", func() {
			later := abortRule("later", 503, 50)
			quiet := []faults.Fault{{Name: "early", Start: time.Hour, Reset: &faults.Reset{Percent: 100}}, later}
			loud := []faults.Fault{{Name: "early", Latency: &faults.Latency{Fixed: time.Millisecond, Percent: 50}}, later}
			for n := uint64(1); n <= 1000; n++ {
				a := faults.Decide(faults.Response{}, quiet, 0, faults.RequestRand(7, "checkout", 2, n))
				b := faults.Decide(faults.Response{}, loud, 0, faults.RequestRand(7, "checkout", 2, n))
				Expect(b.Status).To(Equal(a.Status), "request %d", n)
			}
		})
	})
})
