package sweep_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/sweep"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("Points", func() {
	It("is the cartesian product, the first dimension outermost", func() {
		pts := sweep.Points([]reports.SweepDimension{{Path: "a", Values: []string{"1", "2"}}, {Path: "b", Values: []string{"x", "y", "z"}}})
		var got []string
		for _, pt := range pts {
			Expect(pt).To(HaveLen(2))
			got = append(got, pt[0].String()+" "+pt[1].String())
		}
		Expect(got).To(Equal([]string{"a=1 b=x", "a=1 b=y", "a=1 b=z", "a=2 b=x", "a=2 b=y", "a=2 b=z"}))
	})
	It("is one point without dimensions: the scenario as written", func() {
		Expect(sweep.Points(nil)).To(Equal([][]scenarios.Setting{{}}))
	})
})

var _ = Describe("the load's rate under --find-max-rate", func() {
	const phased = `name: phased
services: {backend: {}}
proxies: {edge: {routes_to: backend}}
load:
  target: edge
  phases:
    - {name: warm, duration: 2s, rate: 50/s}
    - {name: ramp, duration: 2s, ramp: {from: 50/s, to: 200/s}}
    - {name: bursts, duration: 2s, burst: {requests: 10, every: 100ms}}
`
	var sc *scenarios.Scenario
	BeforeEach(func() {
		var err error
		sc, err = scenarios.Parse([]byte(phased), "phased.yaml")
		Expect(err).NotTo(HaveOccurred())
	})

	It("takes the highest rate of the phases as the peak: a ramp's end, a burst's requests per interval", func() {
		Expect(sweep.PeakRate(sc.Load)).To(Equal(200.0)) // the ramp's 200/s beats the bursts' 10 per 100ms = 100/s
	})

	It("scales every phase by the same factor, keeping the durations", func() {
		sweep.ScaleLoad(sc.Load, 300.0/sweep.PeakRate(sc.Load)) // probe 300/s: × 1.5
		Expect(sweep.PeakRate(sc.Load)).To(Equal(300.0))
		Expect(sc.Load.Phases[0].Rate.PerSecond).To(Equal(75.0))
		Expect(sc.Load.Phases[1].Ramp.From.PerSecond).To(Equal(75.0))
		Expect(sc.Load.Phases[2].Burst.Requests).To(Equal(15))
		Expect(sc.Load.Total().Seconds()).To(Equal(6.0))
	})

	It("defaults the bracket to a tenth and ten times the peak, to 1% of the top", func() {
		Expect(sweep.DefaultBracket(sc, 0, 0, 0)).To(Equal(reports.RateSearch{Min: 20, Max: 2000, Precision: 20}))
		Expect(sweep.DefaultBracket(sc, 5, 0, 1)).To(Equal(reports.RateSearch{Min: 5, Max: 2000, Precision: 1}))
	})
})
