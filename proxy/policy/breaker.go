package policy

import (
	"fmt"
	"math"
	"sync/atomic"
)

// CircuitBreakerThresholds is one entry of envoy.config.cluster.v3.CircuitBreakers.thresholds (one
// priority). Start from DefaultCircuitBreakerThresholds.
type CircuitBreakerThresholds struct {
	MaxConnections     uint64 // default 1024
	MaxPendingRequests uint64 // default 1024; 0 rejects every request that would have to queue
	MaxRequests        uint64 // default 1024
	MaxRetries         uint64 // default 3; ignored when RetryBudget is set
	// RetryBudget, when set, replaces MaxRetries: concurrent retries are limited to
	// max(BudgetPercent% × (active requests + pending requests), MinRetryConcurrency).
	RetryBudget *RetryBudget
}

// RetryBudget is CircuitBreakers.Thresholds.RetryBudget.
type RetryBudget struct {
	BudgetPercent       float64 // default 20
	MinRetryConcurrency uint64  // default 3
}

// DefaultCircuitBreakerThresholds returns Envoy's defaults: 1024 connections, 1024 pending requests,
// 1024 requests, 3 retries, no retry budget.
func DefaultCircuitBreakerThresholds() CircuitBreakerThresholds {
	return CircuitBreakerThresholds{MaxConnections: 1024, MaxPendingRequests: 1024, MaxRequests: 1024, MaxRetries: 3}
}

// DefaultRetryBudget returns Envoy's retry budget defaults (20%, at least 3).
func DefaultRetryBudget() RetryBudget {
	return RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}
}

// Validate reports an invalid retry budget.
func (t CircuitBreakerThresholds) Validate() error {
	if b := t.RetryBudget; b != nil && (b.BudgetPercent < 0 || b.BudgetPercent > 100 || math.IsNaN(b.BudgetPercent)) {
		return fmt.Errorf("circuit_breakers.thresholds.retry_budget.budget_percent: must be in [0, 100], got %v", b.BudgetPercent)
	}
	return nil
}

// ResourceManager is Envoy's per-cluster, per-priority resource manager: the circuit breakers. One
// instance is shared by every worker; all methods are lock-free and safe for concurrent use, and a
// successful TryAcquire* never takes a resource past its limit. Every successful TryAcquire* must be
// paired with the matching Release*.
//
// What the caller does when a TryAcquire* fails (Envoy's semantics):
//   - TryAcquireConnection: not a failure; the request waits in the pending queue (upstream_cx_overflow).
//   - TryAcquirePending: fail the request at once: 503 overflow (upstream_rq_pending_overflow).
//   - TryAcquireRequest: asked once the request has its connection (Envoy's attachStreamToClient,
//     conn_pool_base.cc); fail at once: 503 overflow (upstream_rq_pending_overflow).
//   - TryAcquireRetry: skip the retry and return the original response (upstream_rq_retry_overflow).
//
// Overflow replies are never retried and never reported to outlier detection. The manager counts each
// refusal under the stat named above (see ResourceSnapshot), so the caller must not count it again.
type ResourceManager struct {
	maxCx, maxPending, maxRq, maxRetries uint64
	budget                               *RetryBudget

	cx, pending, rq, retries                   atomic.Uint64
	cxOverflow, pendingOverflow, retryOverflow atomic.Uint64
}

// NewResourceManager returns a manager enforcing t.
func NewResourceManager(t CircuitBreakerThresholds) (*ResourceManager, error) {
	if err := t.Validate(); err != nil {
		return nil, err
	}
	rm := &ResourceManager{maxCx: t.MaxConnections, maxPending: t.MaxPendingRequests, maxRq: t.MaxRequests, maxRetries: t.MaxRetries}
	if t.RetryBudget != nil {
		b := *t.RetryBudget
		rm.budget = &b
	}
	return rm, nil
}

// tryInc increments n unless it has reached limit.
func tryInc(n *atomic.Uint64, limit uint64) bool {
	for {
		cur := n.Load()
		if cur >= limit {
			return false
		}
		if n.CompareAndSwap(cur, cur+1) {
			return true
		}
	}
}

// dec decrements n, never below zero (an unpaired Release is a caller bug, not a wrap-around).
func dec(n *atomic.Uint64) {
	for {
		cur := n.Load()
		if cur == 0 || n.CompareAndSwap(cur, cur-1) {
			return
		}
	}
}

// TryAcquireConnection takes a connection slot (max_connections). On false the request should wait in
// the pending queue for a connection; it counts upstream_cx_overflow.
func (rm *ResourceManager) TryAcquireConnection() bool {
	if tryInc(&rm.cx, rm.maxCx) {
		return true
	}
	rm.cxOverflow.Add(1)
	return false
}

// AcquireConnection takes a connection slot even past the limit: Envoy opens a connection to a host
// that has none although the cluster is at max_connections, so that its pending requests are served
// (ConnPoolImplBase::tryCreateNewConnection, source/common/conn_pool/conn_pool_base.cc).
func (rm *ResourceManager) AcquireConnection() { rm.cx.Add(1) }

// ReleaseConnection returns a connection slot.
func (rm *ResourceManager) ReleaseConnection() { dec(&rm.cx) }

// TryAcquirePending takes a pending-request slot (max_pending_requests) for a request that must queue.
// On false the request fails at once; it counts upstream_rq_pending_overflow. With a limit of 0 every
// request that would queue is rejected.
func (rm *ResourceManager) TryAcquirePending() bool {
	if tryInc(&rm.pending, rm.maxPending) {
		return true
	}
	rm.pendingOverflow.Add(1)
	return false
}

// ReleasePending returns a pending-request slot (the request got a connection, or gave up).
func (rm *ResourceManager) ReleasePending() { dec(&rm.pending) }

// TryAcquireRequest takes an active-request slot (max_requests) for a request that has its connection.
// On false the request fails at once; it counts upstream_rq_pending_overflow.
func (rm *ResourceManager) TryAcquireRequest() bool {
	if tryInc(&rm.rq, rm.maxRq) {
		return true
	}
	rm.pendingOverflow.Add(1)
	return false
}

// ReleaseRequest returns an active-request slot.
func (rm *ResourceManager) ReleaseRequest() { dec(&rm.rq) }

// RetryLimit returns the current retry concurrency limit: max_retries, or with a retry budget
// max(budget_percent% × (active requests + pending requests), min_retry_concurrency), the product
// truncated as Envoy does.
func (rm *ResourceManager) RetryLimit() uint64 {
	if rm.budget == nil {
		return rm.maxRetries
	}
	return RetryBudgetLimit(*rm.budget, rm.rq.Load(), rm.pending.Load())
}

// RetryBudgetLimit is the retry budget's concurrency limit for the given active and pending requests.
func RetryBudgetLimit(b RetryBudget, active, pending uint64) uint64 {
	return max(uint64(b.BudgetPercent/100*float64(active+pending)), b.MinRetryConcurrency)
}

// TryAcquireRetry takes a retry slot, held until the retried attempt finishes. On false the retry is
// skipped and the original response goes to the client; it counts upstream_rq_retry_overflow. Use it as
// RetryState.Decide's admit function.
func (rm *ResourceManager) TryAcquireRetry() bool {
	if tryInc(&rm.retries, rm.RetryLimit()) {
		return true
	}
	rm.retryOverflow.Add(1)
	return false
}

// ReleaseRetry returns a retry slot.
func (rm *ResourceManager) ReleaseRetry() { dec(&rm.retries) }

// ResourceSnapshot is the breaker state: Envoy's circuit_breakers.<priority>.* gauges and the overflow
// counters the manager is the source of.
type ResourceSnapshot struct {
	// Open gauges: true when the resource is at its limit (cx_open, rq_pending_open, rq_open,
	// rq_retry_open).
	CxOpen, RqPendingOpen, RqOpen, RqRetryOpen bool
	// Remaining gauges (remaining_cx, remaining_pending, remaining_rq, remaining_retries).
	RemainingCx, RemainingPending, RemainingRq, RemainingRetries uint64
	// Current use.
	Connections, PendingRequests, Requests, Retries uint64
	// RetryLimit is the current retry limit (max_retries or the budget).
	RetryLimit uint64
	// Refusals: upstream_cx_overflow, upstream_rq_pending_overflow (pending and max_requests),
	// upstream_rq_retry_overflow.
	UpstreamCxOverflow, UpstreamRqPendingOverflow, UpstreamRqRetryOverflow uint64
}

// Snapshot reads the gauges. Each value is read atomically; together they are a close approximation
// under concurrent use.
func (rm *ResourceManager) Snapshot() ResourceSnapshot {
	s := ResourceSnapshot{
		Connections:               rm.cx.Load(),
		PendingRequests:           rm.pending.Load(),
		Requests:                  rm.rq.Load(),
		Retries:                   rm.retries.Load(),
		UpstreamCxOverflow:        rm.cxOverflow.Load(),
		UpstreamRqPendingOverflow: rm.pendingOverflow.Load(),
		UpstreamRqRetryOverflow:   rm.retryOverflow.Load(),
	}
	s.RetryLimit = rm.RetryLimit()
	remaining := func(cur, limit uint64) uint64 {
		if cur >= limit {
			return 0
		}
		return limit - cur
	}
	s.RemainingCx, s.CxOpen = remaining(s.Connections, rm.maxCx), s.Connections >= rm.maxCx
	s.RemainingPending, s.RqPendingOpen = remaining(s.PendingRequests, rm.maxPending), s.PendingRequests >= rm.maxPending
	s.RemainingRq, s.RqOpen = remaining(s.Requests, rm.maxRq), s.Requests >= rm.maxRq
	s.RemainingRetries, s.RqRetryOpen = remaining(s.Retries, s.RetryLimit), s.Retries >= s.RetryLimit
	return s
}
