package policy_test

import (
	"sync"
	"sync/atomic"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

var _ = Describe("ResourceManager", func() {
	var (
		th policy.CircuitBreakerThresholds
		rm *policy.ResourceManager
	)
	newRM := func() *policy.ResourceManager {
		m, err := policy.NewResourceManager(th)
		Expect(err).NotTo(HaveOccurred())
		return m
	}
	acquire := func(try func() bool, n int) int {
		ok := 0
		for range n {
			if try() {
				ok++
			}
		}
		return ok
	}

	BeforeEach(func() { th = policy.DefaultCircuitBreakerThresholds() })

	It("defaults to Envoy's thresholds and retry budget", func() {
		Expect(th).To(Equal(policy.CircuitBreakerThresholds{
			MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3,
		}))
		Expect(policy.DefaultRetryBudget()).To(Equal(policy.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}))
		s := newRM().Snapshot()
		Expect(s).To(And(
			HaveField("RemainingCx", uint64(1024)), HaveField("RemainingPending", uint64(1024)),
			HaveField("RemainingRq", uint64(1024)), HaveField("RemainingRetries", uint64(3)),
			HaveField("CxOpen", false), HaveField("RqRetryOpen", false),
		))
	})

	It("rejects a retry budget above 100%", func() {
		th.RetryBudget = &policy.RetryBudget{BudgetPercent: 120}
		_, err := policy.NewResourceManager(th)
		Expect(err).To(MatchError(ContainSubstring("retry_budget.budget_percent")))
	})

	Context("max_requests", func() {
		It("fails fast at the limit, opens rq_open and counts upstream_rq_pending_overflow (#16610)", func() {
			th.MaxRequests = 2
			rm = newRM()
			Expect(acquire(rm.TryAcquireRequest, 3)).To(Equal(2))
			Expect(rm.Snapshot()).To(And(
				HaveField("RqOpen", true),
				HaveField("RemainingRq", uint64(0)),
				HaveField("Requests", uint64(2)),
				HaveField("UpstreamRqPendingOverflow", uint64(1)),
			))
			rm.ReleaseRequest()
			Expect(rm.Snapshot().RqOpen).To(BeFalse())
			Expect(rm.TryAcquireRequest()).To(BeTrue())
		})
	})

	Context("max_pending_requests", func() {
		It("fails fast when the queue is full", func() {
			th.MaxPendingRequests = 1
			rm = newRM()
			Expect(rm.TryAcquirePending()).To(BeTrue())
			Expect(rm.TryAcquirePending()).To(BeFalse())
			Expect(rm.Snapshot()).To(And(HaveField("RqPendingOpen", true), HaveField("UpstreamRqPendingOverflow", uint64(1))))
			rm.ReleasePending()
			Expect(rm.TryAcquirePending()).To(BeTrue())
		})

		It("rejects even a single queued request when it is 0 (#20817)", func() {
			th.MaxPendingRequests = 0
			rm = newRM()
			Expect(rm.TryAcquirePending()).To(BeFalse())
			Expect(rm.Snapshot().RqPendingOpen).To(BeTrue())
		})
	})

	Context("max_connections", func() {
		It("does not fail the request: it counts upstream_cx_overflow and the request queues (#33279)", func() {
			th.MaxConnections = 1
			rm = newRM()
			Expect(rm.TryAcquireConnection()).To(BeTrue())
			Expect(rm.TryAcquireConnection()).To(BeFalse())
			Expect(rm.TryAcquirePending()).To(BeTrue(), "the caller queues the request for a connection")
			Expect(rm.Snapshot()).To(And(
				HaveField("CxOpen", true),
				HaveField("UpstreamCxOverflow", uint64(1)),
				HaveField("UpstreamRqPendingOverflow", uint64(0)),
			))
			rm.ReleaseConnection()
			Expect(rm.Snapshot().RemainingCx).To(Equal(uint64(1)))
		})
	})

	Context("retries", func() {
		It("allows max_retries concurrent retries, then overflows until one finishes", func() {
			rm = newRM()
			Expect(acquire(rm.TryAcquireRetry, 4)).To(Equal(3))
			Expect(rm.Snapshot()).To(And(HaveField("RqRetryOpen", true), HaveField("UpstreamRqRetryOverflow", uint64(1))))
			rm.ReleaseRetry()
			Expect(rm.TryAcquireRetry()).To(BeTrue())
		})

		DescribeTable("the budget is max(budget% × (active + pending), min_retry_concurrency), truncated",
			func(b policy.RetryBudget, active, pending, want int) {
				Expect(policy.RetryBudgetLimit(b, uint64(active), uint64(pending))).To(Equal(uint64(want)))
			},
			Entry("idle cluster: the minimum", policy.DefaultRetryBudget(), 0, 0, 3),
			Entry("20% of 14 is 2.8 → 2 → the minimum 3", policy.DefaultRetryBudget(), 10, 4, 3),
			Entry("20% of 20", policy.DefaultRetryBudget(), 20, 0, 4),
			Entry("pending counts too", policy.DefaultRetryBudget(), 50, 50, 20),
			Entry("20% of 1000", policy.DefaultRetryBudget(), 1000, 0, 200),
			Entry("50% with minimum 1", policy.RetryBudget{BudgetPercent: 50, MinRetryConcurrency: 1}, 3, 0, 1),
			Entry("0% is the minimum", policy.RetryBudget{BudgetPercent: 0, MinRetryConcurrency: 5}, 1000, 0, 5),
		)

		It("replaces max_retries with the budget, following active and pending requests", func() {
			th.MaxRetries = 1
			th.RetryBudget = &policy.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
			rm = newRM()
			Expect(acquire(rm.TryAcquireRequest, 20)).To(Equal(20))
			Expect(rm.RetryLimit()).To(Equal(uint64(4)))
			Expect(acquire(rm.TryAcquireRetry, 5)).To(Equal(4))
			Expect(rm.Snapshot().UpstreamRqRetryOverflow).To(Equal(uint64(1)))
			acquire(rm.TryAcquirePending, 10)
			Expect(rm.RetryLimit()).To(Equal(uint64(6)))
			Expect(acquire(rm.TryAcquireRetry, 5)).To(Equal(2))
			Expect(rm.Snapshot()).To(And(HaveField("RetryLimit", uint64(6)), HaveField("RemainingRetries", uint64(0))))
		})

		It("is RetryState's admit function: a full breaker means RetryOverflow", func() {
			rm = newRM()
			acquire(rm.TryAcquireRetry, 3)
			on, err := policy.ParseRetryOn([]string{"5xx"})
			Expect(err).NotTo(HaveOccurred())
			d, _ := policy.NewRetryState(on, 2).Decide(policy.Outcome{Kind: policy.Response, Status: 503}, rm.TryAcquireRetry)
			Expect(d).To(Equal(policy.RetryOverflow))
		})
	})

	It("never releases below zero", func() {
		rm = newRM()
		rm.ReleaseRequest()
		rm.ReleaseRetry()
		Expect(rm.Snapshot()).To(And(HaveField("Requests", uint64(0)), HaveField("Retries", uint64(0))))
	})

	It("never lets concurrent holders exceed a limit (run with -race)", func() {
		th.MaxRequests = 5
		th.RetryBudget = &policy.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
		rm = newRM()
		var inRq, inRetry, peakRq, peakRetry atomic.Int64
		peak := func(p *atomic.Int64, v int64) {
			for cur := p.Load(); v > cur && !p.CompareAndSwap(cur, v); cur = p.Load() {
			}
		}
		var wg sync.WaitGroup
		for range 16 {
			wg.Go(func() {
				for range 2000 {
					if rm.TryAcquireRequest() {
						peak(&peakRq, inRq.Add(1))
						if rm.TryAcquireRetry() {
							peak(&peakRetry, inRetry.Add(1))
							inRetry.Add(-1)
							rm.ReleaseRetry()
						}
						inRq.Add(-1)
						rm.ReleaseRequest()
					}
				}
			})
		}
		wg.Wait()
		Expect(peakRq.Load()).To(BeNumerically("<=", 5))
		Expect(peakRetry.Load()).To(BeNumerically("<=", 3), "20% of at most 5 requests is below the minimum 3")
		s := rm.Snapshot()
		Expect([]uint64{s.Requests, s.Retries}).To(Equal([]uint64{0, 0}))
	})
})
