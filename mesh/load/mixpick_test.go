package load_test

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/load"
)

var _ = Describe("MixPick", func() {
	It("picks the only entry of a one-entry mix", func() {
		Expect(load.MixPick([]uint64{5}, 1, 1)).To(Equal(0))
		Expect(load.MixPick(nil, 1, 1)).To(Equal(0))
	})

	It("draws the entries by weight, the same for a seed, another sequence for another seed", func() {
		cum := []uint64{3, 4} // weights 3 and 1
		draw := func(seed uint64) []int {
			out := make([]int, 40000)
			for i := range out {
				out[i] = load.MixPick(cum, seed, uint64(i+1))
			}
			return out
		}
		a := draw(42)
		Expect(draw(42)).To(Equal(a))
		Expect(draw(43)).NotTo(Equal(a))
		ones := 0
		for _, i := range a {
			Expect(i).To(BeElementOf(0, 1))
			ones += i
		}
		Expect(float64(ones) / float64(len(a))).To(BeNumerically("~", 0.25, 0.01))
	})
})
