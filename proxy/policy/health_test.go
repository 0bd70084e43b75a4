package policy_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

var (
	hcStatus = func(s int) policy.HealthCheckResult {
		return policy.HealthCheckResult{Kind: policy.CheckResponse, Status: s}
	}
	hcTimeout = policy.HealthCheckResult{Kind: policy.CheckTimeout}
	hcNetFail = policy.HealthCheckResult{Kind: policy.CheckNetworkFailure}
	hcImmFail = policy.HealthCheckResult{Kind: policy.CheckResponse, Status: 503, ImmediateFail: true}
)

var _ = Describe("HealthChecker", func() {
	var (
		cfg policy.HealthCheckConfig
		hc  *policy.HealthChecker
	)
	newHC := func(hosts int) *policy.HealthChecker {
		c, err := policy.NewHealthChecker(cfg, hosts)
		Expect(err).NotTo(HaveOccurred())
		return c
	}
	results := func(host int, rs ...policy.HealthCheckResult) []policy.Event {
		var evs []policy.Event
		for i, r := range rs {
			evs = append(evs, hc.Result(at(time.Duration(i)*time.Second), host, r)...)
		}
		return evs
	}

	BeforeEach(func() {
		cfg = policy.HealthCheckConfig{
			Timeout: time.Second, Interval: 5 * time.Second,
			UnhealthyThreshold: 3, HealthyThreshold: 2, Path: "/healthz",
		}
	})

	DescribeTable("validates the required fields",
		func(mutate func(*policy.HealthCheckConfig), want string) {
			mutate(&cfg)
			_, err := policy.NewHealthChecker(cfg, 1)
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("timeout", func(c *policy.HealthCheckConfig) { c.Timeout = 0 }, "health_checks.timeout"),
		Entry("interval", func(c *policy.HealthCheckConfig) { c.Interval = 0 }, "health_checks.interval"),
		Entry("unhealthy_threshold", func(c *policy.HealthCheckConfig) { c.UnhealthyThreshold = 0 }, "unhealthy_threshold"),
		Entry("healthy_threshold", func(c *policy.HealthCheckConfig) { c.HealthyThreshold = 0 }, "healthy_threshold"),
		Entry("path", func(c *policy.HealthCheckConfig) { c.Path = "" }, "http_health_check.path"),
		Entry("expected_statuses range", func(c *policy.HealthCheckConfig) {
			c.ExpectedStatuses = []policy.StatusRange{{200, 700}}
		}, "expected_statuses[0]"),
	)

	It("applies Envoy's defaults to the optional fields", func() {
		got := newHC(1).Config()
		Expect(got).To(And(
			HaveField("UnhealthyInterval", 5*time.Second),
			HaveField("UnhealthyEdgeInterval", 5*time.Second),
			HaveField("HealthyEdgeInterval", 5*time.Second),
			HaveField("NoTrafficInterval", 60*time.Second),
			HaveField("NoTrafficHealthyInterval", 60*time.Second),
			HaveField("ExpectedStatuses", []policy.StatusRange{{200, 201}}),
		))
	})

	Context("a new host", func() {
		BeforeEach(func() { hc = newHC(2) })

		It("starts unhealthy with its first check pending", func() {
			Expect(hc.Healthy(0)).To(BeFalse())
			Expect(hc.HostState(0).FirstCheckPending).To(BeTrue())
		})

		It("becomes healthy on its first pass, whatever healthy_threshold says", func() {
			evs := hc.Result(at(time.Second), 0, hcStatus(200))
			Expect(evs).To(ConsistOf(And(
				HaveField("Kind", policy.EventHealthy),
				HaveField("Reason", policy.ReasonFirstCheck),
				HaveField("Time", at(time.Second)),
			)))
			Expect(hc.Healthy(0)).To(BeTrue())
			Expect(hc.Stats()).To(And(HaveField("Healthy", uint64(1)), HaveField("Attempt", uint64(1)), HaveField("Success", uint64(1))))
		})

		It("needs healthy_threshold passes when its first check failed", func() {
			Expect(results(0, hcTimeout, hcStatus(200))).To(BeEmpty())
			Expect(hc.HostState(0).ConsecutivePasses).To(Equal(uint32(1)))
			Expect(kindReasons(hc.Result(at(time.Minute), 0, hcStatus(200)))).To(Equal([]string{"healthy/healthy_threshold"}))
		})
	})

	Context("a healthy host", func() {
		BeforeEach(func() {
			hc = newHC(2)
			hc.Result(at(0), 0, hcStatus(200))
			Expect(hc.Healthy(0)).To(BeTrue())
		})

		It("fails at once on an unexpected status", func() {
			Expect(kindReasons(hc.Result(at(time.Second), 0, hcStatus(503)))).To(Equal([]string{"unhealthy/unexpected_status"}))
			Expect(hc.Healthy(0)).To(BeFalse())
			Expect(hc.Stats()).To(And(HaveField("Failure", uint64(1)), HaveField("NetworkFailure", uint64(0)), HaveField("Healthy", uint64(0))))
		})

		It("fails at once on x-envoy-immediate-health-check-fail, excluded until it passes again", func() {
			Expect(kindReasons(hc.Result(at(time.Second), 0, hcImmFail))).To(Equal([]string{"unhealthy/immediate_health_check_fail"}))
			Expect(hc.HostState(0).ExcludedViaImmediateFail).To(BeTrue())
			results(0, hcStatus(200), hcStatus(200))
			Expect(hc.Healthy(0)).To(BeTrue())
			Expect(hc.HostState(0).ExcludedViaImmediateFail).To(BeFalse())
		})

		It("fails at once when ordinary traffic carries the immediate-fail header (passive)", func() {
			Expect(kindReasons(hc.ImmediateFail(at(time.Second), 0))).To(Equal([]string{"unhealthy/immediate_health_check_fail"}))
			Expect(hc.Stats().PassiveFailure).To(Equal(uint64(1)))
		})

		It("counts timeouts and network failures toward unhealthy_threshold", func() {
			Expect(results(0, hcTimeout, hcNetFail)).To(BeEmpty())
			Expect(hc.Healthy(0)).To(BeTrue())
			Expect(kindReasons(hc.Result(at(time.Minute), 0, hcTimeout))).To(Equal([]string{"unhealthy/unhealthy_threshold"}))
			Expect(hc.HostState(0).ActiveHCTimeout).To(BeTrue())
			Expect(hc.Stats()).To(And(HaveField("Failure", uint64(3)), HaveField("NetworkFailure", uint64(3))))
		})

		It("restarts the failure count after a pass", func() {
			Expect(results(0, hcTimeout, hcTimeout, hcStatus(200), hcTimeout, hcTimeout)).To(BeEmpty())
			Expect(hc.Healthy(0)).To(BeTrue())
		})

		It("counts retriable statuses toward unhealthy_threshold", func() {
			cfg.RetriableStatuses = []policy.StatusRange{{503, 504}}
			hc = newHC(1)
			hc.Result(at(0), 0, hcStatus(200))
			Expect(results(0, hcStatus(503), hcStatus(503))).To(BeEmpty())
			Expect(kindReasons(results(0, hcStatus(503)))).To(Equal([]string{"unhealthy/unhealthy_threshold"}))
			Expect(hc.Stats().NetworkFailure).To(BeZero())
			Expect(kindReasons(results(0, hcStatus(500)))).To(BeEmpty(), "already unhealthy")
		})

		It("accepts any status in the expected ranges", func() {
			cfg.ExpectedStatuses = []policy.StatusRange{{200, 300}}
			hc = newHC(1)
			Expect(kindReasons(results(0, hcStatus(204)))).To(Equal([]string{"healthy/first_check"}))
			Expect(kindReasons(results(0, hcStatus(302)))).To(Equal([]string{"unhealthy/unexpected_status"}))
		})
	})

	Context("an unhealthy host", func() {
		BeforeEach(func() {
			hc = newHC(1)
			results(0, hcStatus(200), hcStatus(500))
			Expect(hc.Healthy(0)).To(BeFalse())
		})

		It("recovers after healthy_threshold consecutive passes", func() {
			Expect(results(0, hcStatus(200))).To(BeEmpty())
			Expect(kindReasons(results(0, hcStatus(200)))).To(Equal([]string{"healthy/healthy_threshold"}))
		})

		It("starts over when a check fails in between", func() {
			Expect(results(0, hcStatus(200), hcTimeout, hcStatus(200))).To(BeEmpty())
			Expect(hc.Healthy(0)).To(BeFalse())
		})
	})

	Context("NextInterval", func() {
		BeforeEach(func() {
			cfg.UnhealthyInterval = 2 * time.Second
			cfg.UnhealthyEdgeInterval = 3 * time.Second
			cfg.HealthyEdgeInterval = 4 * time.Second
			cfg.NoTrafficInterval = 50 * time.Second
			cfg.NoTrafficHealthyInterval = 70 * time.Second
			hc = newHC(1)
		})
		var rng = &seqRand{vals: []uint64{0}}

		It("uses no_traffic_interval until the cluster sees traffic", func() {
			Expect(hc.NextInterval(0, false, rng)).To(Equal(50 * time.Second))
			results(0, hcStatus(200))
			Expect(hc.NextInterval(0, false, rng)).To(Equal(70*time.Second), "no_traffic_healthy_interval")
		})

		It("uses interval after a pass and unhealthy_interval after a failure", func() {
			results(0, hcStatus(200))
			Expect(hc.NextInterval(0, true, rng)).To(Equal(5 * time.Second))
			results(0, hcStatus(500))
			Expect(hc.NextInterval(0, true, rng)).To(Equal(2 * time.Second))
		})

		It("uses the edge intervals while a transition is pending", func() {
			results(0, hcStatus(200), hcTimeout)
			Expect(hc.NextInterval(0, true, rng)).To(Equal(3*time.Second), "unhealthy_edge_interval")
			results(0, hcTimeout, hcTimeout, hcStatus(200))
			Expect(hc.Healthy(0)).To(BeFalse())
			Expect(hc.NextInterval(0, true, rng)).To(Equal(4*time.Second), "healthy_edge_interval")
		})

		It("adds interval_jitter and interval_jitter_percent from the given randomness", func() {
			cfg.IntervalJitter = time.Second
			cfg.IntervalJitterPercent = 10
			cfg.InitialJitter = 3 * time.Second
			hc = newHC(1)
			results(0, hcStatus(200))
			// 10% of 5000ms: 123 % 500 = 123ms; then 1700 % 1000 = 700ms.
			Expect(hc.NextInterval(0, true, &seqRand{vals: []uint64{123, 1700}})).To(Equal(5823 * time.Millisecond))
			Expect(hc.FirstDelay(&seqRand{vals: []uint64{4000}})).To(Equal(time.Second))
		})
	})

	It("feeds outlier detection: a pass on a healthy host un-ejects it early", func() {
		hc = newHC(4)
		od, err := policy.NewOutlierDetector(func() policy.OutlierConfig {
			c := policy.DefaultOutlierConfig()
			c.MaxEjectionPercent = 100
			return c
		}(), 4, &seqRand{vals: []uint64{0}})
		Expect(err).NotTo(HaveOccurred())
		hc.Result(at(0), 2, hcStatus(200))
		for range 5 {
			od.Record(at(time.Second), 2, policy.HTTPResult(503))
		}
		Expect(od.Ejected(2)).To(BeTrue())
		hc.Result(at(5*time.Second), 2, hcStatus(200))
		if hc.Healthy(2) {
			od.UnejectHost(at(5*time.Second), 2)
		}
		Expect(od.Ejected(2)).To(BeFalse())
	})
})
