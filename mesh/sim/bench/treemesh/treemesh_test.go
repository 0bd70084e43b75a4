package treemesh_test

import (
	"fmt"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/sim/bench/treemesh"
	"github.com/meshproof/meshproof/scenarios"
)

// load writes the generated scenario to a file and reads it back with the scenario loader.
func load(p treemesh.Params) (*scenarios.Scenario, treemesh.Summary) {
	data, sum, err := treemesh.Generate(p)
	Expect(err).NotTo(HaveOccurred())
	file := filepath.Join(GinkgoT().TempDir(), "mesh.yaml")
	Expect(os.WriteFile(file, data, 0o644)).To(Succeed())
	sc, err := scenarios.LoadFile(file)
	Expect(err).NotTo(HaveOccurred())
	return sc, sum
}

// tierOf reads the tier from a generated service name ("t3-017" → 3).
func tierOf(name string) int {
	var t, i int
	_, err := fmt.Sscanf(name, "t%d-%d", &t, &i)
	Expect(err).NotTo(HaveOccurred(), name)
	return t
}

var _ = Describe("Generate", func() {
	Context("with the bench's defaults (1,000 services × 10, fan-out 3, depth 5)", Label("slow"), func() {
		It("writes a scenario the loader accepts, with the asked counts", func() {
			sc, sum := load(treemesh.Defaults())
			Expect(sc.Services).To(HaveLen(1000))
			instances, callers := 0, 0
			perTier := map[int]int{}
			for name, s := range sc.Services {
				instances += s.Instances
				perTier[tierOf(name)]++
				if len(s.Calls) > 0 {
					callers++
				}
			}
			Expect(instances).To(Equal(10000))
			Expect(perTier).To(Equal(map[int]int{1: 200, 2: 200, 3: 200, 4: 200, 5: 200}))
			Expect(callers).To(Equal(800))
			Expect(sc.Edges()).To(HaveLen(2400))
			Expect(sc.Load.Planned()).To(BeNumerically("==", 60000))
			Expect(sc.Load.Total()).To(Equal(10 * time.Minute))
			Expect(sum.AttemptsPerRequest).To(Equal(121))
			Expect(sum.Sidecars).To(Equal(8000))
			Expect(sum.Edges).To(Equal(2400))
			Expect(sum.PlannedAttempts).To(Equal(60000 * 121))
		})
	})

	Context("with a small mesh", func() {
		var p treemesh.Params
		BeforeEach(func() {
			p = treemesh.Params{Services: 13, Instances: 3, Fanout: 2, Depth: 4, Rate: 50, Duration: 20 * time.Second,
				Seed: 9, Faults: true, Lognormal: true}
		})

		It("calls fan-out services of the next tier from every non-leaf service, once each", func() {
			sc, sum := load(p)
			Expect(sum.Tiers).To(Equal([]int{4, 3, 3, 3}))
			callersOf := map[string]int{}
			for name, s := range sc.Services {
				t := tierOf(name)
				if t == 4 {
					Expect(s.Calls).To(BeEmpty(), name)
					continue
				}
				Expect(s.Calls).To(HaveLen(1), name)
				calls := s.Calls[0].Parallel
				Expect(calls).To(HaveLen(2), name)
				Expect(calls[0].Service).NotTo(Equal(calls[1].Service), name)
				for _, c := range calls {
					Expect(tierOf(c.Service)).To(Equal(t+1), "%s calls %s", name, c.Service)
					Expect(c.Optional).To(BeFalse())
					callersOf[c.Service]++
				}
			}
			for name := range sc.Services {
				if tierOf(name) > 1 {
					Expect(callersOf[name]).To(BeNumerically(">=", 2), "every service below the first tier is called: %s", name)
				}
			}
			Expect(sc.Edges()).To(HaveLen(sum.Edges))
			Expect(sum.Edges).To(Equal(2 * (4 + 3 + 3)))
			Expect(sum.AttemptsPerRequest).To(Equal(1 + 2 + 4 + 8))
		})

		It("routes the load over every first-tier service, with retries and outlier detection on the sidecars", func() {
			sc, _ := load(p)
			ingress := sc.Proxies["ingress"]
			Expect(sc.Load.Target).To(Equal("ingress"))
			Expect(ingress.Services()).To(Equal([]string{"t1-0", "t1-1", "t1-2", "t1-3"}))
			Expect(ingress.RouteSpecs[0].GetRoute().GetRetryPolicy().GetNumRetries().GetValue()).To(BeEquivalentTo(treemesh.IngressRetries))
			Expect(sc.Sidecars.RouteAction.GetRetryPolicy().GetNumRetries().GetValue()).To(BeEquivalentTo(treemesh.SidecarRetries))
			Expect(sc.Sidecars.RouteAction.GetRetryPolicy().GetPerTryTimeout().AsDuration()).To(Equal(treemesh.SidecarPerTry))
			Expect(sc.Sidecars.ClusterSpec.GetOutlierDetection().GetConsecutive_5Xx().GetValue()).To(BeEquivalentTo(treemesh.Consecutive5xx))
			Expect(sc.Warnings).To(BeEmpty())
		})

		It("draws each service's time from a lognormal, and adds the faulty instances", func() {
			sc, sum := load(p)
			latency, aborts, slow := 0, 0, 0
			for _, f := range sc.Faults {
				switch {
				case f.Latency != nil && f.Latency.LogNormal != nil:
					latency++
					Expect(f.Instances).To(BeEmpty())
				case f.Latency != nil:
					slow++
					Expect(f.Latency.Fixed).To(Equal(150 * time.Millisecond))
				case f.Abort != nil:
					aborts++
					Expect(f.Instances).To(HaveLen(1))
				}
			}
			Expect(latency).To(Equal(13))
			Expect(slow).To(Equal(1))
			Expect(aborts).To(Equal(2), "one 3%% rule (13 services / 100, at least one) and the bad window")
			Expect(sum.FaultRules).To(Equal(len(sc.Faults)))
		})

		It("writes fixed service times and no fault when asked", func() {
			p.Faults, p.Lognormal = false, false
			sc, sum := load(p)
			Expect(sc.Faults).To(BeEmpty())
			Expect(sum.FaultRules).To(BeZero())
			for name, s := range sc.Services {
				Expect(s.Response.Latency.Duration).To(BeNumerically(">=", time.Millisecond), name)
				Expect(s.Response.Latency.Duration).To(BeNumerically("<=", 8*time.Millisecond), name)
			}
		})

		It("is the same file for the same seed, another for another seed", func() {
			a, _, err := treemesh.Generate(p)
			Expect(err).NotTo(HaveOccurred())
			b, _, err := treemesh.Generate(p)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(b)).To(Equal(string(a)))
			p.Seed++
			c, _, err := treemesh.Generate(p)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(c)).NotTo(Equal(string(a)))
		})

		It("sends exactly the requests asked for", func() {
			p.Rate, p.Requests = 30, 1000
			sc, sum := load(p)
			Expect(sum.ClientRequests).To(Equal(1000))
			Expect(sc.Load.Planned()).To(BeNumerically("~", 1000, 1e-6))

			p.Requests, p.UpstreamRequests = 0, 1000
			sc, sum = load(p)
			Expect(sum.ClientRequests).To(Equal(67), "⌈1000/15⌉")
			Expect(sum.PlannedAttempts).To(Equal(67 * 15))
			Expect(sc.Load.Planned()).To(BeNumerically("~", 67, 1e-6))
		})
	})

	DescribeTable("refuses parameters it cannot honour, naming the flag",
		func(change func(*treemesh.Params), want string) {
			p := treemesh.Defaults()
			change(&p)
			_, _, err := treemesh.Generate(p)
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("fan-out wider than a tier", func(p *treemesh.Params) { p.Services, p.Fanout = 10, 3 }, "-fanout 3: tier 2 has only 2 services"),
		Entry("too many instances", func(p *treemesh.Params) { p.Instances = 257 }, "-instances 257: want 1..256"),
		Entry("fewer services than tiers", func(p *treemesh.Params) { p.Services = 4 }, "-services 4: want at least one per tier"),
		Entry("a graph past 10,000 calls", func(p *treemesh.Params) { p.Services, p.Fanout, p.Depth = 1000, 10, 5 }, "11110 calls per client request"),
		Entry("both request counts", func(p *treemesh.Params) { p.Requests, p.UpstreamRequests = 1, 1 }, "want at most one"),
	)
})
