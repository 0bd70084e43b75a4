package policy_test

import (
	"math/rand/v2"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

var _ = Describe("Carrying state to a new host set (an EDS update)", func() {
	It("keeps the outlier state of the hosts that stay, ends a removed host's ejection, starts new hosts fresh", func() {
		cfg := policy.DefaultOutlierConfig()
		cfg.Consecutive5xx, cfg.MaxEjectionPercent = 2, 100
		d, err := policy.NewOutlierDetector(cfg, 3, rand.New(rand.NewPCG(1, 1)))
		Expect(err).NotTo(HaveOccurred())
		for range 2 {
			d.Record(at(0), 0, policy.OutlierResult{Status: 503}) // host 0 ejected
			d.Record(at(0), 2, policy.OutlierResult{Status: 503}) // host 2 ejected on the second
		}
		d.Record(at(time.Second), 1, policy.OutlierResult{Status: 500}) // one failure counted on host 1
		Expect(d.Stats().EjectionsActive).To(Equal(uint64(2)))

		// New set: old host 1, old host 0, a new host; old host 2 is gone.
		n, err := d.Carry([]int{1, 0, -1}, rand.New(rand.NewPCG(2, 2)))
		Expect(err).NotTo(HaveOccurred())
		Expect([]bool{n.Ejected(0), n.Ejected(1), n.Ejected(2)}).To(Equal([]bool{false, true, false}))
		Expect(n.Stats().EjectionsActive).To(Equal(uint64(1)))
		Expect(n.Stats().EjectionsEnforcedTotal).To(Equal(uint64(2))) // the cluster's counters carry on
		Expect(n.Snapshot().Hosts[0].Consecutive5xx).To(Equal(uint64(1)))
		Expect(n.Snapshot().Hosts[2].Consecutive5xx).To(BeZero())
		n.Record(at(2*time.Second), 0, policy.OutlierResult{Status: 500}) // host 1's count went on: ejected
		Expect(n.Ejected(0)).To(BeTrue())
	})

	It("keeps the health of the hosts that stay; a new host waits for its first check", func() {
		hc, err := policy.NewHealthChecker(policy.HealthCheckConfig{Timeout: time.Second, Interval: 5 * time.Second,
			UnhealthyThreshold: 3, HealthyThreshold: 2, Path: "/healthz"}, 2)
		Expect(err).NotTo(HaveOccurred())
		hc.Result(at(0), 0, policy.HealthCheckResult{Kind: policy.CheckResponse, Status: 200}) // a first pass counts at once
		Expect(hc.Healthy(0)).To(BeTrue())

		n := hc.Carry([]int{0, -1})
		Expect([]bool{n.Healthy(0), n.Healthy(1)}).To(Equal([]bool{true, false}))
		Expect(n.Stats().Healthy).To(Equal(uint64(1)))
		Expect(n.Stats().Attempt).To(Equal(uint64(1)))
		n.Result(at(time.Second), 1, policy.HealthCheckResult{Kind: policy.CheckResponse, Status: 200})
		Expect(n.Healthy(1)).To(BeTrue())
	})
})
