package load_test

import (
	"math"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/load"
)

// arrivals runs a schedule to its end.
func arrivals(phases []load.Phase, poisson bool, seed uint64) []load.Arrival {
	return slices.Collect(load.NewSchedule(phases, poisson, seed).All())
}

// perPhase counts the arrivals of each phase.
func perPhase(as []load.Arrival, n int) []int {
	out := make([]int, n)
	for _, a := range as {
		out[a.Phase]++
	}
	return out
}

var _ = Describe("Schedule", func() {
	It("places a constant rate's requests exactly k/rate apart, before the duration", func() {
		as := arrivals([]load.Phase{load.Constant("main", 500*time.Millisecond, 200)}, false, 0)
		Expect(as).To(HaveLen(100))
		for i, a := range as {
			Expect(a).To(Equal(load.Arrival{At: time.Duration(i) * 5 * time.Millisecond}), "arrival %d", i)
		}
	})

	It("keeps a non-integral rate's arrivals on the nanosecond-rounded k/rate", func() {
		as := arrivals([]load.Phase{load.Constant("main", time.Second, 3)}, false, 0)
		Expect(as).To(HaveExactElements(
			load.Arrival{At: 0}, load.Arrival{At: 333333333}, load.Arrival{At: 666666667}))
	})

	Context("with Poisson arrivals", func() {
		const rate, n = 1000.0, 100_000
		var as []load.Arrival
		BeforeEach(func() {
			as = arrivals([]load.Phase{load.Constant("main", n*time.Second/rate, rate)}, true, 42)
		})

		It("holds the mean rate within 3% over 100k arrivals", func() {
			Expect(float64(len(as))).To(BeNumerically("~", n, 0.03*n))
		})

		It("has exponential gaps (Kolmogorov–Smirnov distance below the 1% critical value)", func() {
			gaps := make([]float64, len(as)-1)
			for i := range gaps {
				gaps[i] = (as[i+1].At - as[i].At).Seconds()
			}
			slices.Sort(gaps)
			d := 0.0
			for i, g := range gaps {
				cdf := 1 - math.Exp(-rate*g)
				d = max(d, math.Abs(cdf-float64(i)/float64(len(gaps))), math.Abs(cdf-float64(i+1)/float64(len(gaps))))
			}
			Expect(d).To(BeNumerically("<", 1.63/math.Sqrt(float64(len(gaps)))))
		})

		It("is the same for the same seed and different for another", func() {
			again := arrivals([]load.Phase{load.Constant("main", n*time.Second/rate, rate)}, true, 42)
			Expect(again).To(Equal(as))
			other := arrivals([]load.Phase{load.Constant("main", n*time.Second/rate, rate)}, true, 43)
			Expect(other[:10]).NotTo(Equal(as[:10]))
		})

		It("follows a ramp: the count is the rate's integral within 3%, the density rises", func() {
			ramp := arrivals([]load.Phase{load.Ramp("ramp", 100*time.Second, 0, 2000)}, true, 7)
			Expect(float64(len(ramp))).To(BeNumerically("~", 100_000, 3000))
			firstHalf := 0
			for _, a := range ramp {
				if a.At < 50*time.Second {
					firstHalf++
				}
			}
			Expect(float64(firstHalf)).To(BeNumerically("~", 25_000, 750)) // ∫₀⁵⁰ 20t dt
		})
	})

	DescribeTable("ramps hold the integral of their rate (±1), spread as the rate says",
		func(from, to float64, want, wantFirstHalf float64) {
			as := arrivals([]load.Phase{load.Ramp("ramp", 10*time.Second, from, to)}, false, 0)
			Expect(float64(len(as))).To(BeNumerically("~", want, 1))
			firstHalf := 0
			for i, a := range as {
				Expect(a.At).To(BeNumerically("<", 10*time.Second))
				if i > 0 {
					Expect(a.At).To(BeNumerically(">=", as[i-1].At))
				}
				if a.At < 5*time.Second {
					firstHalf++
				}
			}
			Expect(float64(firstHalf)).To(BeNumerically("~", wantFirstHalf, 1))
		},
		Entry("up from 0", 0.0, 1000.0, 5000.0, 1250.0),
		Entry("down to 0", 1000.0, 0.0, 5000.0, 3750.0),
		Entry("up from 100", 100.0, 300.0, 2000.0, 750.0),
		Entry("flat", 250.0, 250.0, 2500.0, 1250.0),
	)

	It("runs steps one after the other, each at its own rate, with no request lost at a boundary", func() {
		phases := load.Steps("step", time.Second, 100, 200, 0, 300)
		Expect(phases).To(HaveEach(HaveField("Duration", time.Second)))
		Expect(phases[1].Name).To(Equal("step-2"))
		as := arrivals(phases, false, 0)
		Expect(perPhase(as, 4)).To(Equal([]int{100, 200, 0, 300}))
		for _, a := range as {
			start := time.Duration(a.Phase) * time.Second
			Expect(a.At).To(And(BeNumerically(">=", start), BeNumerically("<", start+time.Second)))
		}
		Expect(as[100].At).To(Equal(time.Second)) // the second step starts on time
		Expect(as[300].At).To(Equal(3 * time.Second))
	})

	It("sends bursts of N at once every period", func() {
		as := arrivals([]load.Phase{load.Constant("warm", 100*time.Millisecond, 100), load.Bursts("spike", time.Second, 50, 250*time.Millisecond)}, false, 0)
		Expect(perPhase(as, 2)).To(Equal([]int{10, 200}))
		at := map[time.Duration]int{}
		for _, a := range as[10:] {
			at[a.At]++
		}
		Expect(at).To(Equal(map[time.Duration]int{
			100 * time.Millisecond: 50, 350 * time.Millisecond: 50, 600 * time.Millisecond: 50, 850 * time.Millisecond: 50,
		}))
	})

	DescribeTable("plans its phases' requests",
		func(p load.Phase, want float64) { Expect(p.Planned()).To(Equal(want)) },
		Entry("constant", load.Constant("c", 2*time.Second, 150), 300.0),
		Entry("ramp", load.Ramp("r", 2*time.Second, 100, 300), 400.0),
		Entry("bursts", load.Bursts("b", time.Second, 10, 300*time.Millisecond), 40.0), // at 0, 300, 600, 900ms
		Entry("a pause", load.Constant("p", time.Second, 0), 0.0),
	)
})
