package policy_test

import (
	"fmt"
	"math/rand/v2"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

// pickN picks n times and counts the picks per host.
func pickN(p policy.Picker, ctx policy.PickContext, n int) map[int]int {
	counts := map[int]int{}
	for range n {
		counts[p.Pick(ctx)]++
	}
	return counts
}

var _ = Describe("Panic threshold", func() {
	DescribeTable("PanicMode",
		func(healthy, total int, threshold float64, want bool) {
			Expect(policy.PanicMode(healthy, total, threshold)).To(Equal(want))
		},
		Entry("exactly 50% healthy is not panic", 5, 10, 50.0, false),
		Entry("below 50% is panic", 4, 10, 50.0, true),
		Entry("threshold 0 disables panic, even with no healthy host", 0, 10, 0.0, false),
		Entry("no healthy host at 50%", 0, 10, 50.0, true),
		Entry("all healthy", 3, 3, 50.0, false),
		Entry("a threshold above 100 acts as 100", 9, 10, 150.0, true),
	)

	var (
		ejected []bool
		healthy func(int) bool
		rr      *policy.RoundRobinPicker
	)
	BeforeEach(func() {
		ejected = make([]bool, 10)
		healthy = func(h int) bool { return !ejected[h] }
		rr = policy.NewRoundRobinPicker(policy.NewRoundRobin(make([]uint32, 10)))
	})

	It("keeps ejected hosts out while at least half the hosts are healthy", func() {
		for h := range 5 {
			ejected[h] = true
		}
		eligible, panic := policy.PanicFilter(10, healthy, policy.DefaultHealthyPanicThreshold)
		Expect(panic).To(BeFalse())
		counts := pickN(rr, policy.PickContext{Eligible: eligible}, 100)
		Expect(counts).To(HaveLen(5))
		Expect(counts).NotTo(HaveKey(BeNumerically("<", 5)))
	})

	It("sends traffic to ejected hosts again below the threshold (#2671)", func() {
		for h := range 6 {
			ejected[h] = true
		}
		eligible, panic := policy.PanicFilter(10, healthy, policy.DefaultHealthyPanicThreshold)
		Expect(panic).To(BeTrue(), "the caller counts lb_healthy_panic")
		Expect(eligible).To(BeNil())
		Expect(pickN(rr, policy.PickContext{Eligible: eligible}, 100)).To(HaveLen(10))
	})

	It("finds no host with threshold 0 and every host ejected: 503 no healthy upstream (UH)", func() {
		for h := range 10 {
			ejected[h] = true
		}
		eligible, panic := policy.PanicFilter(10, healthy, 0)
		Expect(panic).To(BeFalse())
		Expect(rr.Pick(policy.PickContext{Eligible: eligible})).To(Equal(-1))
	})
})

var _ = Describe("RoundRobinPicker", func() {
	It("keeps weighted round-robin order over eligible hosts", func() {
		p := policy.NewRoundRobinPicker(policy.NewRoundRobin([]uint32{2, 1, 1}))
		Expect(pickN(p, policy.PickContext{}, 40)).To(Equal(map[int]int{0: 20, 1: 10, 2: 10}))
		Expect(pickN(p, policy.PickContext{Eligible: func(h int) bool { return h != 0 }}, 40)).To(Equal(map[int]int{1: 20, 2: 20}))
	})

	It("returns -1 rather than an ineligible host", func() {
		p := policy.NewRoundRobinPicker(policy.NewRoundRobin([]uint32{1, 1}))
		Expect(p.Pick(policy.PickContext{Eligible: func(int) bool { return false }})).To(Equal(-1))
	})
})

var _ = Describe("RandomPicker", func() {
	It("spreads picks uniformly over eligible hosts", func() {
		p := policy.RandomPicker{Hosts: 5}
		ctx := policy.PickContext{Rand: rand.New(rand.NewPCG(1, 2)), Eligible: func(h int) bool { return h != 2 }}
		counts := pickN(p, ctx, 40000)
		Expect(counts).NotTo(HaveKey(2))
		for _, h := range []int{0, 1, 3, 4} {
			Expect(counts[h]).To(BeNumerically("~", 10000, 500))
		}
		Expect(p.Pick(policy.PickContext{Eligible: func(int) bool { return false }})).To(Equal(-1))
	})
})

var _ = Describe("LeastRequest", func() {
	var rng *rand.Rand
	BeforeEach(func() { rng = rand.New(rand.NewPCG(5, 6)) })

	It("rejects choice_count below 2", func() {
		_, err := policy.NewLeastRequest([]uint32{1, 1}, policy.LeastRequestConfig{ChoiceCount: 1, ActiveRequestBias: 1})
		Expect(err).To(MatchError(ContainSubstring("least_request.choice_count")))
	})

	Context("with equal weights (power of two choices)", func() {
		It("prefers less-loaded hosts in P2C's proportions", func() {
			lr, err := policy.NewLeastRequest(make([]uint32, 10), policy.DefaultLeastRequestConfig())
			Expect(err).NotTo(HaveOccurred())
			active := func(h int) int64 { return int64(h) * 10 } // host 0 idlest, host 9 busiest
			counts := pickN(lr, policy.PickContext{Active: active, Rand: rng}, 100000)
			// P(host i) = P(min of two uniform draws is i) = ((10−i)² − (9−i)²) / 100.
			for h := range 10 {
				want := float64((10-h)*(10-h)-(9-h)*(9-h)) / 100 * 100000
				Expect(float64(counts[h])).To(BeNumerically("~", want, 0.1*want+100), "host %d", h)
			}
		})

		It("always picks the idler host when there are no more hosts than choices (full scan)", func() {
			lr, _ := policy.NewLeastRequest([]uint32{1, 1, 1}, policy.DefaultLeastRequestConfig())
			active := func(h int) int64 { return []int64{5, 1, 9}[h] }
			Expect(pickN(lr, policy.PickContext{Active: active, Rand: rng, Eligible: func(h int) bool { return h != 1 }}, 50)).
				To(Equal(map[int]int{0: 50}))
		})

		It("breaks full-scan ties at random", func() {
			cfg := policy.DefaultLeastRequestConfig()
			cfg.FullScan = true
			lr, _ := policy.NewLeastRequest(make([]uint32, 4), cfg)
			active := func(h int) int64 { return []int64{1, 0, 0, 0}[h] }
			counts := pickN(lr, policy.PickContext{Active: active, Rand: rng}, 30000)
			Expect(counts).NotTo(HaveKey(0))
			for h := 1; h < 4; h++ {
				Expect(counts[h]).To(BeNumerically("~", 10000, 600))
			}
		})

		It("returns -1 with no eligible host", func() {
			lr, _ := policy.NewLeastRequest(make([]uint32, 4), policy.DefaultLeastRequestConfig())
			Expect(lr.Pick(policy.PickContext{Rand: rng, Eligible: func(int) bool { return false }})).To(Equal(-1))
		})
	})

	Context("with unequal weights", func() {
		It("splits picks by weight when loads are equal", func() {
			lr, _ := policy.NewLeastRequest([]uint32{1, 2, 3}, policy.DefaultLeastRequestConfig())
			Expect(pickN(lr, policy.PickContext{}, 600)).To(Equal(map[int]int{0: 100, 1: 200, 2: 300}))
		})

		It("divides each weight by (active+1)^bias", func() {
			lr, _ := policy.NewLeastRequest([]uint32{2, 4}, policy.DefaultLeastRequestConfig())
			active := func(h int) int64 { return []int64{0, 3}[h] } // 2/1 vs 4/4: 2:1
			Expect(pickN(lr, policy.PickContext{Active: active}, 300)).To(Equal(map[int]int{0: 200, 1: 100}))
		})

		It("honours active_request_bias (2: 4/(3+1)² = 0.25 vs 2)", func() {
			cfg := policy.DefaultLeastRequestConfig()
			cfg.ActiveRequestBias = 2
			lr, _ := policy.NewLeastRequest([]uint32{2, 4}, cfg)
			active := func(h int) int64 { return []int64{0, 3}[h] }
			Expect(pickN(lr, policy.PickContext{Active: active}, 900)).To(Equal(map[int]int{0: 800, 1: 100}))
			Expect(policy.EffectiveWeight(4, 3, 0.5)).To(BeNumerically("~", 2, 1e-12))
		})

		It("ignores load with bias 0, like weighted round robin", func() {
			cfg := policy.DefaultLeastRequestConfig()
			cfg.ActiveRequestBias = 0
			lr, _ := policy.NewLeastRequest([]uint32{2, 4}, cfg)
			active := func(h int) int64 { return []int64{0, 100}[h] }
			Expect(pickN(lr, policy.PickContext{Active: active}, 300)).To(Equal(map[int]int{0: 100, 1: 200}))
		})
	})
})

var _ = Describe("RingHash", func() {
	newRing := func(n int) *policy.RingHash {
		rh, err := policy.NewRingHash(nil, make([]uint32, n), policy.DefaultRingHashConfig())
		Expect(err).NotTo(HaveOccurred())
		return rh
	}
	hashes := func(n int) []uint64 {
		r := rand.New(rand.NewPCG(9, 9))
		hs := make([]uint64, n)
		for i := range hs {
			hs[i] = r.Uint64()
		}
		return hs
	}

	It("rejects a minimum ring size above the maximum", func() {
		_, err := policy.NewRingHash(nil, []uint32{1}, policy.RingHashConfig{MinimumRingSize: 2048, MaximumRingSize: 1024})
		Expect(err).To(MatchError(ContainSubstring("minimum_ring_size (2048) > maximum_ring_size (1024)")))
	})

	It("builds at least minimum_ring_size points, capped by maximum_ring_size", func() {
		Expect(newRing(5).Size()).To(Equal(1025), "ceil(0.2·1024)/0.2 = 1025")
		rh, err := policy.NewRingHash(nil, []uint32{1, 1000}, policy.RingHashConfig{MinimumRingSize: 1024, MaximumRingSize: 4096})
		Expect(err).NotTo(HaveOccurred())
		Expect(rh.Size()).To(BeNumerically("<=", 4096+1))
	})

	It("sends the same hash to the same host", func() {
		a, b := newRing(5), newRing(5)
		for _, h := range hashes(1000) {
			Expect(a.Pick(policy.PickContext{Hash: h})).To(Equal(b.Pick(policy.PickContext{Hash: h})))
		}
	})

	It("moves few keys when a host is added: the new host takes its share", func() {
		before, after := newRing(5), newRing(6)
		moved, toNew := 0, 0
		hs := hashes(20000)
		for _, h := range hs {
			x, y := before.Pick(policy.PickContext{Hash: h}), after.Pick(policy.PickContext{Hash: h})
			if x != y {
				moved++
				if y == 5 {
					toNew++
				}
			}
		}
		Expect(float64(toNew)/float64(len(hs))).To(BeNumerically("~", 1.0/6, 0.03), "the new host's fair share")
		// Envoy rescales every host to ceil(1024/n) points, so old hosts lose some points too (~8% of keys).
		Expect(float64(moved) / float64(len(hs))).To(BeNumerically("<", 0.3))
	})

	It("moves only the keys of a host that becomes ineligible", func() {
		rh := newRing(5)
		for _, h := range hashes(5000) {
			before := rh.Pick(policy.PickContext{Hash: h})
			after := rh.Pick(policy.PickContext{Hash: h, Eligible: func(x int) bool { return x != 3 }})
			if before != 3 {
				Expect(after).To(Equal(before))
			} else {
				Expect(after).NotTo(Equal(3))
			}
		}
	})

	It("spreads keys roughly evenly and follows weights", func() {
		counts := map[int]int{}
		rh, err := policy.NewRingHash(nil, []uint32{1, 1, 2}, policy.DefaultRingHashConfig())
		Expect(err).NotTo(HaveOccurred())
		for _, h := range hashes(40000) {
			counts[rh.Pick(policy.PickContext{Hash: h})]++
		}
		Expect(counts[0]).To(BeNumerically("~", 10000, 1500))
		Expect(counts[1]).To(BeNumerically("~", 10000, 1500))
		Expect(counts[2]).To(BeNumerically("~", 20000, 2000))
	})

	It("skips ineligible hosts clockwise and moves on for a re-pick", func() {
		rh := newRing(4)
		for _, h := range hashes(200) {
			first := rh.Pick(policy.PickContext{Hash: h})
			other := rh.Pick(policy.PickContext{Hash: h, Eligible: func(x int) bool { return x != first }})
			Expect(other).NotTo(Equal(first))
			Expect(other).To(BeNumerically(">=", 0))
		}
		Expect(rh.Pick(policy.PickContext{Eligible: func(int) bool { return false }})).To(Equal(-1))
	})

	It("uses the host keys it is given (Envoy hashes \"<address>_<i>\")", func() {
		keys := []string{"10.0.0.1:80", "10.0.0.2:80", "10.0.0.3:80"}
		a, err := policy.NewRingHash(keys, []uint32{1, 1, 1}, policy.DefaultRingHashConfig())
		Expect(err).NotTo(HaveOccurred())
		b, _ := policy.NewRingHash([]string{keys[2], keys[0], keys[1]}, []uint32{1, 1, 1}, policy.DefaultRingHashConfig())
		for _, h := range hashes(500) {
			Expect(keys[a.Pick(policy.PickContext{Hash: h})]).
				To(Equal([]string{keys[2], keys[0], keys[1]}[b.Pick(policy.PickContext{Hash: h})]), "placement follows the key, not the index")
		}
	})
})

var _ = Describe("Maglev", func() {
	It("balances equal hosts within 5% over the 65537-entry table", func() {
		m, err := policy.NewMaglev(nil, make([]uint32, 10), 0)
		Expect(err).NotTo(HaveOccurred())
		counts := map[int]int{}
		for h := range uint64(policy.DefaultMaglevTableSize) {
			counts[m.Pick(policy.PickContext{Hash: h})]++
		}
		Expect(counts).To(HaveLen(10))
		for h := range 10 {
			Expect(float64(counts[h])).To(BeNumerically("~", 6553.7, 0.05*6553.7), "host %d", h)
		}
	})

	It("follows weights", func() {
		m, err := policy.NewMaglev(nil, []uint32{1, 2, 1}, 0)
		Expect(err).NotTo(HaveOccurred())
		counts := map[int]int{}
		for h := range uint64(policy.DefaultMaglevTableSize) {
			counts[m.Pick(policy.PickContext{Hash: h})]++
		}
		Expect(float64(counts[1]) / float64(counts[0])).To(BeNumerically("~", 2, 0.1))
	})

	It("moves few entries when a host is added", func() {
		a, _ := policy.NewMaglev(nil, make([]uint32, 9), 0)
		b, _ := policy.NewMaglev(nil, make([]uint32, 10), 0)
		moved := 0
		for h := range uint64(policy.DefaultMaglevTableSize) {
			if a.Pick(policy.PickContext{Hash: h}) != b.Pick(policy.PickContext{Hash: h}) {
				moved++
			}
		}
		Expect(float64(moved)/policy.DefaultMaglevTableSize).To(BeNumerically("<", 0.2), "ideal 1/10")
	})

	It("rejects a table size that is not prime", func() {
		_, err := policy.NewMaglev(nil, []uint32{1}, 65536)
		Expect(err).To(MatchError(ContainSubstring("maglev.table_size")))
	})

	It("skips ineligible hosts and mutates the hash for a re-pick", func() {
		m, _ := policy.NewMaglev(nil, make([]uint32, 5), 0)
		first := m.Pick(policy.PickContext{Hash: 42})
		Expect(m.Pick(policy.PickContext{Hash: 42, Eligible: func(h int) bool { return h != first }})).NotTo(Equal(first))
		differs := 0
		for h := range uint64(1000) {
			if m.Pick(policy.PickContext{Hash: h}) != m.Pick(policy.PickContext{Hash: h, Attempt: 1}) {
				differs++
			}
		}
		Expect(differs).To(BeNumerically(">", 700), "about 4/5 of re-picks land elsewhere")
	})
})

var _ = Describe("HashKey", func() {
	It("is XXH64 with seed 0, as Envoy's HashUtil::xxHash64", func() {
		Expect(fmt.Sprintf("%x", policy.HashKey(""))).To(Equal("ef46db3751d8e999"))
		Expect(fmt.Sprintf("%x", policy.HashKey("abc"))).To(Equal("44bc2cf5ad770999"))
	})
})

// scripted returns its picks in order.
type scripted struct {
	picks    []int
	attempts []int
}

func (s *scripted) Pick(ctx policy.PickContext) int {
	s.attempts = append(s.attempts, ctx.Attempt)
	p := s.picks[0]
	s.picks = s.picks[1:]
	return p
}

var _ = Describe("PickWithRetryPredicate (previous_hosts)", func() {
	It("accepts a pick that was not tried", func() {
		s := &scripted{picks: []int{2}}
		Expect(policy.PickWithRetryPredicate(s, policy.PickContext{}, map[int]bool{1: true}, 1)).To(Equal(2))
		Expect(s.attempts).To(Equal([]int{0}))
	})

	It("re-picks once by default when the pick was tried", func() {
		s := &scripted{picks: []int{1, 3}}
		Expect(policy.PickWithRetryPredicate(s, policy.PickContext{}, map[int]bool{1: true},
			policy.DefaultHostSelectionRetryMaxAttempts)).To(Equal(3))
		Expect(s.attempts).To(Equal([]int{0, 1}))
	})

	It("accepts the last pick after host_selection_retry_max_attempts re-picks, even if tried (#13465)", func() {
		s := &scripted{picks: []int{1, 1, 1, 2}}
		Expect(policy.PickWithRetryPredicate(s, policy.PickContext{}, map[int]bool{1: true}, 2)).To(Equal(1))
		Expect(s.attempts).To(Equal([]int{0, 1, 2}))
	})

	It("goes back to the same host in a single-host cluster", func() {
		p := policy.NewRoundRobinPicker(policy.NewRoundRobin([]uint32{1}))
		Expect(policy.PickWithRetryPredicate(p, policy.PickContext{}, map[int]bool{0: true}, 5)).To(Equal(0))
	})

	It("moves a ring-hash retry off the tried host", func() {
		rh, err := policy.NewRingHash(nil, make([]uint32, 4), policy.DefaultRingHashConfig())
		Expect(err).NotTo(HaveOccurred())
		r := rand.New(rand.NewPCG(3, 3))
		moved := 0
		for range 200 {
			ctx := policy.PickContext{Hash: r.Uint64()}
			first := rh.Pick(ctx)
			if policy.PickWithRetryPredicate(rh, ctx, map[int]bool{first: true}, 3) != first {
				moved++
			}
		}
		Expect(moved).To(BeNumerically(">", 190))
	})

	It("passes -1 through", func() {
		s := &scripted{picks: []int{-1}}
		Expect(policy.PickWithRetryPredicate(s, policy.PickContext{}, nil, 1)).To(Equal(-1))
	})
})

// EdfLoadBalancerBase::applySlowStartFactor (source/common/upstream/load_balancer_impl.cc).
var _ = DescribeTable("SlowStartConfig.Factor",
	func(give policy.SlowStartConfig, since time.Duration, want float64) {
		Expect(give.Factor(since)).To(BeNumerically("~", want, 1e-9))
	},
	Entry("linear, halfway", policy.DefaultSlowStartConfig(10*time.Second), 5*time.Second, 0.5),
	Entry("the floor, min_weight_percent", policy.DefaultSlowStartConfig(10*time.Second), 500*time.Millisecond, 0.1),
	Entry("at least 1 ms", policy.SlowStartConfig{Window: time.Second, Aggression: 1}, time.Duration(0), 0.001),
	Entry("whole milliseconds", policy.SlowStartConfig{Window: time.Second, Aggression: 1}, 1999*time.Microsecond, 0.001),
	Entry("aggression 2", policy.SlowStartConfig{Window: 10 * time.Second, Aggression: 2, MinWeightPercent: 10}, 2500*time.Millisecond, 0.5),
	Entry("the window over", policy.DefaultSlowStartConfig(10*time.Second), 10*time.Second, 1.0),
	Entry("disabled", policy.DefaultSlowStartConfig(0), time.Millisecond, 1.0),
)

var _ = Describe("slow start in the pickers", func() {
	It("scales round robin's weights by the pick's SlowStart factors", func() {
		p := policy.NewRoundRobinPicker(policy.NewRoundRobin([]uint32{1, 1}))
		counts := pickN(p, policy.PickContext{SlowStart: func(h int) float64 { return []float64{1, 0.25}[h] }}, 100)
		Expect(counts).To(Equal(map[int]int{0: 80, 1: 20}))
	})

	It("weighs least request's picks with equal weights while a host is in slow start", func() {
		lr, err := policy.NewLeastRequest([]uint32{1, 1}, policy.DefaultLeastRequestConfig())
		Expect(err).NotTo(HaveOccurred())
		counts := pickN(lr, policy.PickContext{Rand: rand.New(rand.NewPCG(1, 2)), SlowStart: func(h int) float64 { return []float64{1, 0.25}[h] }}, 100)
		Expect(counts).To(Equal(map[int]int{0: 80, 1: 20}))
	})
})
