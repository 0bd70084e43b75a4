package policy_test

import (
	"errors"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

var (
	httpRes = policy.HTTPResult
	lo      = func(k policy.OutlierResultKind) policy.OutlierResult { return policy.OutlierResult{Kind: k} }
)

var _ = Describe("OutlierConfig", func() {
	It("defaults to Envoy's OutlierDetection defaults", func() {
		c := policy.DefaultOutlierConfig()
		Expect(c).To(And(
			HaveField("Interval", 10*time.Second),
			HaveField("BaseEjectionTime", 30*time.Second),
			HaveField("MaxEjectionTime", 300*time.Second),
			HaveField("MaxEjectionTimeJitter", time.Duration(0)),
			HaveField("MaxEjectionPercent", uint32(10)),
			HaveField("Consecutive5xx", uint32(5)),
			HaveField("EnforcingConsecutive5xx", uint32(100)),
			HaveField("ConsecutiveGatewayFailure", uint32(5)),
			HaveField("EnforcingConsecutiveGatewayFailure", uint32(0)),
			HaveField("ConsecutiveLocalOriginFailure", uint32(5)),
			HaveField("EnforcingConsecutiveLocalOriginFailure", uint32(100)),
			HaveField("EnforcingSuccessRate", uint32(100)),
			HaveField("SuccessRateMinimumHosts", uint32(5)),
			HaveField("SuccessRateRequestVolume", uint32(100)),
			HaveField("SuccessRateStdevFactor", uint32(1900)),
			HaveField("FailurePercentageThreshold", uint32(85)),
			HaveField("FailurePercentageMinimumHosts", uint32(5)),
			HaveField("FailurePercentageRequestVolume", uint32(50)),
			HaveField("EnforcingFailurePercentage", uint32(0)),
			HaveField("SplitExternalLocalOriginErrors", false),
			HaveField("AlwaysEjectOneHost", false),
			HaveField("SuccessfulActiveHealthCheckUnejectHost", true),
		))
		Expect(c.Validate()).To(Succeed())
	})

	DescribeTable("Validate",
		func(mutate func(*policy.OutlierConfig), want string) {
			c := policy.DefaultOutlierConfig()
			mutate(&c)
			if want == "" {
				Expect(c.Validate()).To(Succeed())
				return
			}
			Expect(c.Validate()).To(MatchError(ContainSubstring(want)))
		},
		Entry("max_ejection_time below base is rejected",
			func(c *policy.OutlierConfig) { c.MaxEjectionTime = 10 * time.Second },
			"outlier_detection.max_ejection_time: 10s is smaller than base_ejection_time 30s"),
		Entry("max_ejection_time unset (0) with a large base is fine",
			func(c *policy.OutlierConfig) { c.MaxEjectionTime, c.BaseEjectionTime = 0, 600*time.Second }, ""),
		Entry("max_ejection_percent above 100",
			func(c *policy.OutlierConfig) { c.MaxEjectionPercent = 101 }, "outlier_detection.max_ejection_percent"),
		Entry("enforcing_success_rate above 100",
			func(c *policy.OutlierConfig) { c.EnforcingSuccessRate = 150 }, "outlier_detection.enforcing_success_rate"),
		Entry("failure_percentage_threshold above 100",
			func(c *policy.OutlierConfig) { c.FailurePercentageThreshold = 101 }, "failure_percentage_threshold"),
		Entry("zero interval",
			func(c *policy.OutlierConfig) { c.Interval = 0 }, "outlier_detection.interval"),
		Entry("zero base_ejection_time",
			func(c *policy.OutlierConfig) { c.BaseEjectionTime = 0 }, "outlier_detection.base_ejection_time"),
	)

	It("is checked by NewOutlierDetector", func() {
		c := policy.DefaultOutlierConfig()
		c.MaxEjectionPercent = 200
		_, err := policy.NewOutlierDetector(c, 3, rand.New(rand.NewPCG(1, 1)))
		Expect(err).To(MatchError(ContainSubstring("max_ejection_percent")))
	})
})

var _ = Describe("OutlierResultFor", func() {
	DescribeTable("maps retry outcomes, never reporting a breaker overflow",
		func(o policy.Outcome, want policy.OutlierResult, wantOK bool) {
			got, ok := policy.OutlierResultFor(o)
			Expect(ok).To(Equal(wantOK))
			Expect(got).To(Equal(want))
		},
		Entry("response", policy.Outcome{Kind: policy.Response, Status: 503}, httpRes(503), true),
		Entry("connect failure", policy.Outcome{Kind: policy.ConnectFailure}, lo(policy.LocalOriginConnectFailure), true),
		Entry("reset", policy.Outcome{Kind: policy.Reset}, lo(policy.LocalOriginReset), true),
		Entry("per-try timeout", policy.Outcome{Kind: policy.PerTryTimeout}, lo(policy.LocalOriginTimeout), true),
		Entry("overflow is not reported (#25487)", policy.Outcome{Kind: policy.Overflow}, policy.OutlierResult{}, false),
	)
})

var _ = Describe("OutlierDetector", func() {
	var (
		cfg policy.OutlierConfig
		od  *policy.OutlierDetector
		rng policy.Rand
	)
	newOD := func(hosts int) *policy.OutlierDetector {
		d, err := policy.NewOutlierDetector(cfg, hosts, rng)
		Expect(err).NotTo(HaveOccurred())
		return d
	}
	// record sends n results to the host at time t and returns all events.
	record := func(t time.Time, host int, r policy.OutlierResult, n int) []policy.Event {
		var evs []policy.Event
		for range n {
			evs = append(evs, od.Record(t, host, r)...)
		}
		return evs
	}

	BeforeEach(func() {
		cfg = policy.DefaultOutlierConfig()
		cfg.MaxEjectionPercent = 100
		rng = rand.New(rand.NewPCG(7, 7))
	})

	Context("consecutive_5xx", func() {
		BeforeEach(func() { od = newOD(4) })

		It("ejects inline on the 5th consecutive 5xx, with an event and the stats", func() {
			Expect(record(at(time.Second), 1, httpRes(500), 4)).To(BeEmpty())
			Expect(od.Ejected(1)).To(BeFalse())
			evs := od.Record(at(2*time.Second), 1, httpRes(500))
			Expect(evs).To(ConsistOf(And(
				HaveField("Kind", policy.EventEjected),
				HaveField("Reason", policy.ReasonConsecutive5xx),
				HaveField("Host", 1),
				HaveField("Time", at(2*time.Second)),
				HaveField("Until", at(32*time.Second)),
			)))
			Expect(od.Ejected(1)).To(BeTrue())
			Expect(od.Stats()).To(And(
				HaveField("EjectionsActive", uint64(1)),
				HaveField("EjectionsEnforcedTotal", uint64(1)),
				HaveField("EjectionsDetectedConsecutive5xx", uint64(1)),
				HaveField("EjectionsEnforcedConsecutive5xx", uint64(1)),
			))
			Expect(od.Stats().Map()).To(HaveKeyWithValue("ejections_enforced_consecutive_5xx", uint64(1)))
		})

		It("starts counting again after one success", func() {
			record(at(0), 0, httpRes(503), 4)
			od.Record(at(0), 0, httpRes(200))
			Expect(record(at(0), 0, httpRes(503), 4)).To(BeEmpty())
			Expect(od.Ejected(0)).To(BeFalse())
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(Equal(uint64(4)))
		})

		It("counts a 4xx as a success", func() {
			record(at(0), 0, httpRes(500), 4)
			od.Record(at(0), 0, httpRes(404))
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(BeZero())
		})

		DescribeTable("in non-split mode local-origin failures count as 503 (reset, connect failure) or 504 (timeout)",
			func(k policy.OutlierResultKind) {
				Expect(record(at(0), 2, lo(k), 5)).To(ContainElement(HaveField("Reason", policy.ReasonConsecutive5xx)))
				Expect(od.Ejected(2)).To(BeTrue())
			},
			Entry("reset", policy.LocalOriginReset),
			Entry("connect failure", policy.LocalOriginConnectFailure),
			Entry("timeout", policy.LocalOriginTimeout),
		)

		It("ignores a connection success in non-split mode (the HTTP status decides)", func() {
			record(at(0), 0, httpRes(502), 4)
			od.Record(at(0), 0, lo(policy.LocalOriginConnectSuccess))
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(Equal(uint64(4)))
			Expect(od.Record(at(0), 0, lo(policy.LocalOriginTimeout))).NotTo(BeEmpty())
		})

		It("does not detect a host that is already ejected, and restarts its count on un-ejection", func() {
			record(at(0), 0, httpRes(500), 5)
			Expect(record(at(time.Second), 0, httpRes(500), 10)).To(BeEmpty(), "ejected hosts still get traffic in panic mode")
			Expect(od.Stats().EjectionsDetectedConsecutive5xx).To(Equal(uint64(1)))
			od.Sweep(at(30 * time.Second))
			Expect(od.Ejected(0)).To(BeFalse())
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(BeZero())
		})

		It("ignores hosts out of range", func() {
			Expect(od.Record(at(0), 9, httpRes(500))).To(BeNil())
			Expect(od.Ejected(-1)).To(BeFalse())
		})
	})

	Context("consecutive_gateway_failure", func() {
		It("is detected but not enforced by default", func() {
			cfg.Consecutive5xx = 100
			od = newOD(4)
			evs := record(at(0), 3, httpRes(502), 5)
			Expect(kindReasons(evs)).To(Equal([]string{"detected_not_enforced/consecutive_gateway_failure"}))
			Expect(od.Ejected(3)).To(BeFalse())
			Expect(od.Stats()).To(And(
				HaveField("EjectionsDetectedConsecutiveGatewayFailure", uint64(1)),
				HaveField("EjectionsEnforcedConsecutiveGatewayFailure", uint64(0)),
				HaveField("EjectionsActive", uint64(0)),
			))
			Expect(od.Snapshot().Hosts[3].ConsecutiveGatewayFailure).To(BeZero(), "the counter restarts after a detection")
		})

		It("ejects when enforcing_consecutive_gateway_failure is 100", func() {
			cfg.Consecutive5xx = 100
			cfg.EnforcingConsecutiveGatewayFailure = 100
			od = newOD(4)
			Expect(kindReasons(record(at(0), 0, httpRes(504), 5))).To(Equal([]string{"ejected/consecutive_gateway_failure"}))
		})

		It("fires before consecutive_5xx when both reach their threshold on the same response", func() {
			od = newOD(4)
			Expect(kindReasons(record(at(0), 0, httpRes(503), 5))).To(Equal([]string{
				"detected_not_enforced/consecutive_gateway_failure", "ejected/consecutive_5xx",
			}))
		})

		It("is reset by a non-gateway 5xx, which still counts as a 5xx", func() {
			cfg.ConsecutiveGatewayFailure = 3
			od = newOD(4)
			record(at(0), 0, httpRes(502), 2)
			od.Record(at(0), 0, httpRes(500))
			record(at(0), 0, httpRes(503), 1)
			h := od.Snapshot().Hosts[0]
			Expect(h.ConsecutiveGatewayFailure).To(Equal(uint64(1)))
			Expect(h.Consecutive5xx).To(Equal(uint64(4)))
			od.Record(at(0), 0, httpRes(200))
			h = od.Snapshot().Hosts[0]
			Expect([]uint64{h.ConsecutiveGatewayFailure, h.Consecutive5xx}).To(Equal([]uint64{0, 0}))
		})
	})

	Context("split_external_local_origin_errors", func() {
		BeforeEach(func() {
			cfg.SplitExternalLocalOriginErrors = true
			od = newOD(4)
		})

		It("counts local-origin failures apart and ejects on consecutive_local_origin_failure", func() {
			record(at(0), 0, lo(policy.LocalOriginReset), 2)
			record(at(0), 0, lo(policy.LocalOriginConnectFailure), 2)
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(BeZero())
			evs := od.Record(at(0), 0, lo(policy.LocalOriginTimeout))
			Expect(kindReasons(evs)).To(Equal([]string{"ejected/consecutive_local_origin_failure"}))
			Expect(od.Stats().EjectionsEnforcedConsecutiveLocalOriginFailure).To(Equal(uint64(1)))
		})

		It("resets the local-origin count on a connection success, not on an HTTP status", func() {
			record(at(0), 1, lo(policy.LocalOriginReset), 4)
			od.Record(at(0), 1, httpRes(200))
			Expect(od.Snapshot().Hosts[1].ConsecutiveLocalOriginFailure).To(Equal(uint64(4)))
			od.Record(at(0), 1, lo(policy.LocalOriginConnectSuccess))
			Expect(od.Snapshot().Hosts[1].ConsecutiveLocalOriginFailure).To(BeZero())
		})

		It("does not let local-origin events reset or feed the 5xx count", func() {
			record(at(0), 2, httpRes(500), 4)
			record(at(0), 2, lo(policy.LocalOriginConnectSuccess), 3)
			Expect(kindReasons(od.Record(at(0), 2, httpRes(500)))).To(Equal([]string{"ejected/consecutive_5xx"}))
		})
	})

	Context("enforcing percentages", func() {
		It("draws against enforcing_consecutive_5xx with the given randomness", func() {
			cfg.EnforcingConsecutive5xx = 50
			rng = &seqRand{vals: []uint64{170, 210}} // 70 ≥ 50: not enforced; 10 < 50: enforced
			od = newOD(2)
			Expect(kindReasons(record(at(0), 0, httpRes(500), 5))).To(Equal([]string{"detected_not_enforced/consecutive_5xx"}))
			Expect(kindReasons(record(at(0), 0, httpRes(500), 5))).To(Equal([]string{"ejected/consecutive_5xx"}))
			Expect(od.Stats()).To(And(
				HaveField("EjectionsDetectedConsecutive5xx", uint64(2)),
				HaveField("EjectionsEnforcedConsecutive5xx", uint64(1)),
			))
		})
	})

	Context("max_ejection_percent", func() {
		It("uses the strict (active+1)/total check: 10% of 10 hosts is one ejection", func() {
			cfg.MaxEjectionPercent = 10
			od = newOD(10)
			Expect(kindReasons(record(at(0), 0, httpRes(500), 5))).To(Equal([]string{"ejected/consecutive_5xx"}))
			Expect(kindReasons(record(at(0), 1, httpRes(500), 5))).To(Equal([]string{"overflow/consecutive_5xx"}))
			Expect(od.Ejected(1)).To(BeFalse())
			Expect(od.Stats()).To(And(
				HaveField("EjectionsOverflow", uint64(1)),
				HaveField("EjectionsActive", uint64(1)),
				HaveField("EjectionsDetectedConsecutive5xx", uint64(2)),
			))
		})

		It("ejects nothing from a cluster of fewer than 10 hosts at the default 10% (#3263)", func() {
			cfg.MaxEjectionPercent = 10
			od = newOD(9)
			Expect(kindReasons(record(at(0), 0, httpRes(500), 5))).To(Equal([]string{"overflow/consecutive_5xx"}))
			Expect(od.Stats().EjectionsActive).To(BeZero())
		})

		It("lets exactly one ejection through with always_eject_one_host", func() {
			cfg.MaxEjectionPercent = 10
			cfg.AlwaysEjectOneHost = true
			od = newOD(3)
			Expect(kindReasons(record(at(0), 0, httpRes(500), 5))).To(Equal([]string{"ejected/consecutive_5xx"}))
			Expect(kindReasons(record(at(0), 1, httpRes(500), 5))).To(Equal([]string{"overflow/consecutive_5xx"}))
		})

		It("counts overflow before the enforcing draw, as Envoy does", func() {
			cfg.MaxEjectionPercent = 0
			cfg.Consecutive5xx = 100
			od = newOD(4)
			Expect(kindReasons(record(at(0), 0, httpRes(503), 5))).To(Equal([]string{"overflow/consecutive_gateway_failure"}))
		})

		It("allows half of four hosts at 50%", func() {
			cfg.MaxEjectionPercent = 50
			od = newOD(4)
			for h := range 3 {
				record(at(0), h, httpRes(500), 5)
			}
			Expect(od.Stats()).To(And(HaveField("EjectionsActive", uint64(2)), HaveField("EjectionsOverflow", uint64(1))))
		})
	})

	Context("ejection timing", func() {
		// sweepEvery runs the interval timer every 10s in (from, to] and returns its events.
		sweepEvery := func(from, to time.Duration) []policy.Event {
			var evs []policy.Event
			for t := from + 10*time.Second; t <= to; t += 10 * time.Second {
				evs = append(evs, od.Sweep(at(t))...)
			}
			return evs
		}

		BeforeEach(func() { od = newOD(2) })

		It("un-ejects only at the first sweep after base·k has passed", func() {
			record(at(5*time.Second), 0, httpRes(500), 5)
			Expect(od.Snapshot().Hosts[0].EjectedUntil).To(Equal(at(35 * time.Second)))
			Expect(sweepEvery(0, 30*time.Second)).To(BeEmpty())
			Expect(od.Ejected(0)).To(BeTrue(), "at 35s there is no sweep: the host stays ejected")
			evs := od.Sweep(at(40 * time.Second))
			Expect(evs).To(ConsistOf(And(
				HaveField("Kind", policy.EventUnejected),
				HaveField("Reason", policy.ReasonEjectionTimeElapsed),
				HaveField("Time", at(40*time.Second)),
			)))
			Expect(od.Ejected(0)).To(BeFalse())
			Expect(od.Stats().EjectionsActive).To(BeZero())
		})

		It("multiplies the ejection by k, which grows per ejection and decays one per interval", func() {
			record(at(0), 0, httpRes(500), 5)
			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(1)))
			od.Sweep(at(30 * time.Second))
			Expect(od.Ejected(0)).To(BeFalse())

			record(at(31*time.Second), 0, httpRes(500), 5)
			h := od.Snapshot().Hosts[0]
			Expect(h.Multiplier).To(Equal(uint32(2)))
			Expect(h.EjectedUntil).To(Equal(at(91*time.Second)), "min(30s·2, 300s)")
			Expect(sweepEvery(30*time.Second, 90*time.Second)).To(BeEmpty())
			Expect(kindReasons(od.Sweep(at(100 * time.Second)))).To(Equal([]string{"unejected/ejection_time_elapsed"}))

			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(2)), "no decay in the sweep that un-ejects")
			od.Sweep(at(110 * time.Second))
			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(1)))
			od.Sweep(at(120 * time.Second))
			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(0)))
			od.Sweep(at(130 * time.Second))
			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(0)), "never below 0")

			record(at(131*time.Second), 0, httpRes(500), 5)
			Expect(od.Snapshot().Hosts[0].EjectedUntil).To(Equal(at(161*time.Second)), "back to base after decay")
		})

		It("caps the ejection at max_ejection_time however often the host is ejected", func() {
			t := time.Duration(0)
			var got []time.Duration
			for range 14 {
				record(at(t), 0, httpRes(500), 5)
				h := od.Snapshot().Hosts[0]
				got = append(got, h.EjectedUntil.Sub(h.EjectedAt))
				t = h.EjectedUntil.Sub(epoch)
				od.Sweep(at(t))
				Expect(od.Ejected(0)).To(BeFalse())
			}
			Expect(got[:4]).To(Equal([]time.Duration{30 * time.Second, 60 * time.Second, 90 * time.Second, 120 * time.Second}))
			Expect(got[9:]).To(HaveEach(300 * time.Second))
			Expect(od.Snapshot().Hosts[0].Multiplier).To(Equal(uint32(11)), "k stops once base·k reaches max+base")
		})

		It("uses max(300s, base) when max_ejection_time is unset", func() {
			cfg.MaxEjectionTime, cfg.BaseEjectionTime = 0, 400*time.Second
			od = newOD(2)
			record(at(0), 0, httpRes(500), 5)
			Expect(od.Snapshot().Hosts[0].EjectedUntil).To(Equal(at(400 * time.Second)))
		})

		It("adds a jitter in [0, max_ejection_time_jitter] drawn from the given randomness", func() {
			cfg.MaxEjectionTimeJitter = 2 * time.Second
			rng = &seqRand{vals: []uint64{1500}}
			od = newOD(2)
			evs := record(at(0), 0, httpRes(500), 5)
			Expect(evs[0].Until).To(Equal(at(31500 * time.Millisecond)))
			od.Sweep(at(31 * time.Second))
			Expect(od.Ejected(0)).To(BeTrue())
			od.Sweep(at(32 * time.Second))
			Expect(od.Ejected(0)).To(BeFalse())
		})

		It("un-ejects early on a passing active health check, resetting the counters", func() {
			record(at(0), 0, httpRes(500), 5)
			record(at(0), 0, httpRes(500), 3)
			evs := od.UnejectHost(at(5*time.Second), 0)
			Expect(kindReasons(evs)).To(Equal([]string{"unejected/active_health_check"}))
			Expect(od.Ejected(0)).To(BeFalse())
			Expect(od.Snapshot().Hosts[0].Consecutive5xx).To(BeZero())
			Expect(od.UnejectHost(at(6*time.Second), 0)).To(BeNil(), "not ejected any more")
		})

		It("does not un-eject on health checks when successful_active_health_check_uneject_host is false", func() {
			cfg.SuccessfulActiveHealthCheckUnejectHost = false
			od = newOD(2)
			record(at(0), 0, httpRes(500), 5)
			Expect(od.UnejectHost(at(time.Second), 0)).To(BeNil())
			Expect(od.Ejected(0)).To(BeTrue())
		})
	})

	Context("success rate", func() {
		// load gives each host totals[h] requests in the current interval, of which oks[h] succeed.
		load := func(t time.Time, totals, oks []int) {
			for h := range totals {
				record(t, h, httpRes(200), oks[h])
				record(t, h, httpRes(500), totals[h]-oks[h])
			}
		}

		BeforeEach(func() {
			cfg.Consecutive5xx = 1000
			cfg.ConsecutiveGatewayFailure = 1000
		})

		It("computes Envoy's worked example: {50,100,100,100,100} → mean 90, σ 20, threshold 52", func() {
			mean, thr := policy.SuccessRateThreshold([]float64{50, 100, 100, 100, 100}, 1900)
			Expect(mean).To(BeNumerically("~", 90, 1e-9))
			Expect(thr).To(BeNumerically("~", 52, 1e-9))
		})

		It("ejects the host below the threshold at the sweep", func() {
			od = newOD(5)
			load(at(time.Second), []int{100, 100, 100, 100, 100}, []int{50, 100, 100, 100, 100})
			Expect(od.Ejected(0)).To(BeFalse(), "interval detectors decide only at the sweep")
			evs := od.Sweep(at(10 * time.Second))
			Expect(evs).To(ConsistOf(And(
				HaveField("Kind", policy.EventEjected),
				HaveField("Reason", policy.ReasonSuccessRate),
				HaveField("Host", 0),
				HaveField("SuccessRate", BeNumerically("~", 50, 1e-9)),
				HaveField("Threshold", BeNumerically("~", 52, 1e-9)),
			)))
			snap := od.Snapshot()
			Expect(snap.SuccessRateAverage).To(BeNumerically("~", 90, 1e-9))
			Expect(snap.SuccessRateEjectionThreshold).To(BeNumerically("~", 52, 1e-9))
			Expect(snap.Hosts[1].SuccessRate).To(BeNumerically("~", 100, 1e-9))
			Expect(snap.Stats).To(And(
				HaveField("EjectionsDetectedSuccessRate", uint64(1)),
				HaveField("EjectionsEnforcedSuccessRate", uint64(1)),
			))
		})

		It("overflows instead with the default 10% cap on five hosts", func() {
			cfg.MaxEjectionPercent = 10
			od = newOD(5)
			load(at(time.Second), []int{100, 100, 100, 100, 100}, []int{50, 100, 100, 100, 100})
			Expect(kindReasons(od.Sweep(at(10 * time.Second)))).To(Equal([]string{"overflow/success_rate"}))
		})

		It("skips hosts below success_rate_request_volume, and runs only with success_rate_minimum_hosts", func() {
			od = newOD(5)
			load(at(time.Second), []int{100, 100, 100, 100, 99}, []int{50, 100, 100, 100, 99})
			Expect(od.Sweep(at(10 * time.Second))).To(BeEmpty())
			snap := od.Snapshot()
			Expect(snap.SuccessRateAverage).To(Equal(-1.0))
			Expect(snap.Stats.EjectionsDetectedSuccessRate).To(BeZero())
		})

		It("does nothing for a cluster smaller than the minimum hosts", func() {
			od = newOD(4)
			load(at(time.Second), []int{100, 100, 100, 100}, []int{0, 100, 100, 100})
			Expect(od.Sweep(at(10 * time.Second))).To(BeEmpty())
		})

		It("leaves ejected hosts out and starts every interval afresh", func() {
			od = newOD(6)
			load(at(time.Second), []int{100, 100, 100, 100, 100, 100}, []int{50, 100, 100, 100, 100, 100})
			Expect(kindReasons(od.Sweep(at(10 * time.Second)))).To(Equal([]string{"ejected/success_rate"}))
			Expect(od.Snapshot().Hosts[0].IntervalRequests).To(BeZero())

			load(at(11*time.Second), []int{100, 100, 100, 100, 100, 100}, []int{0, 100, 100, 100, 100, 100})
			Expect(od.Sweep(at(20*time.Second))).To(BeEmpty(), "the ejected host is not judged")
			Expect(od.Snapshot().SuccessRateAverage).To(BeNumerically("~", 100, 1e-9))

			Expect(od.Sweep(at(30*time.Second))).To(BeEmpty(), "no requests in the new interval")
			Expect(od.Snapshot().SuccessRateAverage).To(Equal(-1.0))
		})

		It("keeps growing the ejection time of a host the interval detector ejects again (#26758)", func() {
			od = newOD(5)
			load(at(time.Second), []int{100, 100, 100, 100, 100}, []int{50, 100, 100, 100, 100})
			od.Sweep(at(10 * time.Second))
			Expect(od.Snapshot().Hosts[0].EjectedUntil).To(Equal(at(40 * time.Second)))
			for t := 20; t <= 40; t += 10 {
				od.Sweep(at(time.Duration(t) * time.Second))
			}
			Expect(od.Ejected(0)).To(BeFalse())
			load(at(45*time.Second), []int{100, 100, 100, 100, 100}, []int{50, 100, 100, 100, 100})
			od.Sweep(at(50 * time.Second))
			h := od.Snapshot().Hosts[0]
			Expect(h.Multiplier).To(Equal(uint32(2)))
			Expect(h.EjectedUntil).To(Equal(at(110*time.Second)), "60s, not 30s")
		})
	})

	Context("failure percentage", func() {
		loadFP := func(t time.Time, totals, fails []int) {
			for h := range totals {
				for i := range totals[h] {
					if i < fails[h] {
						od.Record(t, h, httpRes(503))
					} else {
						od.Record(t, h, httpRes(200))
					}
				}
			}
		}

		BeforeEach(func() {
			cfg.Consecutive5xx = 10000
			cfg.ConsecutiveGatewayFailure = 10000
			cfg.SuccessRateMinimumHosts = 100 // keep success rate out
		})

		It("is detected but not enforced by default", func() {
			od = newOD(5)
			loadFP(at(time.Second), []int{50, 50, 50, 50, 50}, []int{43, 0, 0, 0, 0})
			Expect(kindReasons(od.Sweep(at(10 * time.Second)))).To(Equal([]string{"detected_not_enforced/failure_percentage"}))
			Expect(od.Stats()).To(And(
				HaveField("EjectionsDetectedFailurePercentage", uint64(1)),
				HaveField("EjectionsEnforcedFailurePercentage", uint64(0)),
			))
		})

		It("ejects hosts whose failure percentage reaches the threshold, with the volume and host gates", func() {
			cfg.EnforcingFailurePercentage = 100
			od = newOD(6)
			// host 0: 86% failures → ejected; host 1: 84% → kept; host 2: 100% of 49 → below the volume.
			loadFP(at(time.Second), []int{100, 100, 49, 50, 50, 50}, []int{86, 84, 49, 0, 0, 0})
			evs := od.Sweep(at(10 * time.Second))
			Expect(evs).To(ConsistOf(And(
				HaveField("Kind", policy.EventEjected),
				HaveField("Reason", policy.ReasonFailurePercentage),
				HaveField("Host", 0),
				HaveField("Threshold", 85.0),
			)))
		})

		It("needs failure_percentage_minimum_hosts hosts with enough volume", func() {
			cfg.EnforcingFailurePercentage = 100
			od = newOD(5)
			loadFP(at(time.Second), []int{100, 100, 100, 100, 10}, []int{100, 0, 0, 0, 0})
			Expect(od.Sweep(at(10 * time.Second))).To(BeEmpty())
		})

		It("runs on the local-origin monitor in split mode", func() {
			cfg.SplitExternalLocalOriginErrors = true
			cfg.ConsecutiveLocalOriginFailure = 10000
			cfg.EnforcingFailurePercentageLocalOrigin = 100
			od = newOD(5)
			for h := range 5 {
				for i := range 60 {
					if h == 4 && i%10 != 0 {
						od.Record(at(time.Second), h, lo(policy.LocalOriginConnectFailure))
					} else {
						od.Record(at(time.Second), h, lo(policy.LocalOriginConnectSuccess))
					}
				}
			}
			Expect(kindReasons(od.Sweep(at(10 * time.Second)))).To(Equal([]string{"ejected/local_origin_failure_percentage"}))
			Expect(od.Stats().EjectionsEnforcedLocalOriginFailurePercentage).To(Equal(uint64(1)))
		})
	})

	It("is safe for Record from many goroutines while a ticker sweeps", func() {
		cfg.MaxEjectionPercent = 50
		od = newOD(8)
		var wg sync.WaitGroup
		for g := range 8 {
			wg.Go(func() {
				r := rand.New(rand.NewPCG(uint64(g), 1))
				for i := range 2000 {
					code := 200
					if r.IntN(3) == 0 {
						code = 503
					}
					od.Record(at(time.Duration(i)*time.Millisecond), r.IntN(8), httpRes(code))
					_ = od.Ejected(g)
				}
			})
		}
		wg.Go(func() {
			for i := range 200 {
				od.Sweep(at(time.Duration(i) * 10 * time.Millisecond))
				_ = od.Snapshot()
			}
		})
		wg.Wait()
		s := od.Snapshot()
		ejected := 0
		for _, h := range s.Hosts {
			if h.Ejected {
				ejected++
			}
		}
		Expect(s.Stats.EjectionsActive).To(BeNumerically("<=", 4))
		Expect(s.Stats.EjectionsActive).To(Equal(uint64(ejected)))
	})
})

// Validate's errors are values with the field's path (issue #12): proxy/config places them by Field,
// without parsing the message.
func TestOutlierValidateFieldErrors(t *testing.T) {
	g := NewWithT(t)
	tests := []struct {
		name        string
		give        func(*policy.OutlierConfig)
		field, want string
	}{
		{"interval", func(c *policy.OutlierConfig) { c.Interval = 0 }, "outlier_detection.interval", "must be > 0, got 0s"},
		{"a percentage", func(c *policy.OutlierConfig) { c.EnforcingSuccessRate = 101 }, "outlier_detection.enforcing_success_rate", "must be a percentage in [0, 100], got 101"},
	}
	for _, tt := range tests {
		c := policy.DefaultOutlierConfig()
		tt.give(&c)
		var fe *policy.FieldError
		g.Expect(errors.As(c.Validate(), &fe)).To(BeTrue(), tt.name)
		g.Expect([]string{fe.Field, fe.Reason}).To(Equal([]string{tt.field, tt.want}), tt.name)
	}
}
