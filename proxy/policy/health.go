package policy

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

// StatusRange is a half-open range of HTTP statuses [Start, End), as Envoy's type.v3.Int64Range.
type StatusRange struct{ Start, End int }

func (r StatusRange) contains(s int) bool { return s >= r.Start && s < r.End }

// HealthCheckConfig is envoy.config.core.v3.HealthCheck with an http_health_check. Timeout, Interval,
// UnhealthyThreshold, HealthyThreshold and Path are required; every other zero field takes Envoy's
// default, applied by NewHealthChecker.
type HealthCheckConfig struct {
	Timeout  time.Duration // required: the caller fails a check that takes longer, as CheckTimeout
	Interval time.Duration // required

	InitialJitter         time.Duration // first check after a random delay in [0, InitialJitter)
	IntervalJitter        time.Duration // each interval gets a random [0, IntervalJitter) added
	IntervalJitterPercent uint32        // and a random [0, IntervalJitterPercent% of the interval)

	UnhealthyThreshold uint32 // required, ≥ 1
	HealthyThreshold   uint32 // required, ≥ 1

	UnhealthyInterval        time.Duration // default Interval
	UnhealthyEdgeInterval    time.Duration // default UnhealthyInterval
	HealthyEdgeInterval      time.Duration // default Interval
	NoTrafficInterval        time.Duration // default 60s
	NoTrafficHealthyInterval time.Duration // default NoTrafficInterval

	Path string // required
	Host string // the :authority to send; empty means the cluster name (the caller's business)
	// ExpectedStatuses: a status outside them fails the host at once (default [200, 201)).
	ExpectedStatuses []StatusRange
	// RetriableStatuses: an unexpected status inside them counts toward UnhealthyThreshold instead.
	RetriableStatuses []StatusRange
}

func (c *HealthCheckConfig) withDefaults() {
	if c.UnhealthyInterval == 0 {
		c.UnhealthyInterval = c.Interval
	}
	if c.UnhealthyEdgeInterval == 0 {
		c.UnhealthyEdgeInterval = c.UnhealthyInterval
	}
	if c.HealthyEdgeInterval == 0 {
		c.HealthyEdgeInterval = c.Interval
	}
	if c.NoTrafficInterval == 0 {
		c.NoTrafficInterval = 60 * time.Second
	}
	if c.NoTrafficHealthyInterval == 0 {
		c.NoTrafficHealthyInterval = c.NoTrafficInterval
	}
	if len(c.ExpectedStatuses) == 0 {
		c.ExpectedStatuses = []StatusRange{{200, 201}}
	}
}

// Validate reports the first invalid field, by its Envoy name.
func (c HealthCheckConfig) Validate() error {
	switch {
	case c.Timeout <= 0:
		return fieldErrorf("health_checks.timeout", "required, must be > 0, got %v", c.Timeout)
	case c.Interval <= 0:
		return fieldErrorf("health_checks.interval", "required, must be > 0, got %v", c.Interval)
	case c.UnhealthyThreshold == 0:
		return errors.New("health_checks.unhealthy_threshold: required, must be >= 1")
	case c.HealthyThreshold == 0:
		return errors.New("health_checks.healthy_threshold: required, must be >= 1")
	case c.Path == "":
		return errors.New("health_checks.http_health_check.path: required")
	case c.IntervalJitterPercent > 100:
		return fieldErrorf("health_checks.interval_jitter_percent", "must be in [0, 100], got %d", c.IntervalJitterPercent)
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"initial_jitter", c.InitialJitter}, {"interval_jitter", c.IntervalJitter},
		{"unhealthy_interval", c.UnhealthyInterval}, {"unhealthy_edge_interval", c.UnhealthyEdgeInterval},
		{"healthy_edge_interval", c.HealthyEdgeInterval}, {"no_traffic_interval", c.NoTrafficInterval},
		{"no_traffic_healthy_interval", c.NoTrafficHealthyInterval},
	} {
		if d.v < 0 {
			return fieldErrorf("health_checks."+d.name, "must be >= 0, got %v", d.v)
		}
	}
	for _, rs := range []struct {
		name   string
		ranges []StatusRange
	}{{"expected_statuses", c.ExpectedStatuses}, {"retriable_statuses", c.RetriableStatuses}} {
		for i, r := range rs.ranges {
			if r.Start < 100 || r.End > 600 || r.Start >= r.End {
				return fieldErrorf(fmt.Sprintf("health_checks.http_health_check.%s[%d]", rs.name, i),
					"[%d, %d) must be a non-empty range within [100, 600)", r.Start, r.End)
			}
		}
	}
	return nil
}

// HealthCheckKind says how one health check ended.
type HealthCheckKind uint8

// The ways a health check can end.
const (
	// CheckResponse: the host answered; HealthCheckResult.Status is the HTTP status.
	CheckResponse HealthCheckKind = iota
	// CheckTimeout: no response within Timeout (Envoy's NETWORK_TIMEOUT).
	CheckTimeout
	// CheckNetworkFailure: connection refused, reset or closed (Envoy's NETWORK).
	CheckNetworkFailure
)

// HealthCheckResult is one health check's outcome.
type HealthCheckResult struct {
	Kind   HealthCheckKind
	Status int // with CheckResponse
	// ImmediateFail: the response carried x-envoy-immediate-health-check-fail.
	ImmediateFail bool
}

// HealthCheckStats are the cluster's health_check.* stats.
type HealthCheckStats struct {
	Attempt, Success, Failure, NetworkFailure, PassiveFailure uint64
	Healthy                                                   uint64 // gauge: hosts healthy by active HC
}

// Map returns the stats under their Envoy names (without the cluster.<name>.health_check. prefix).
func (s HealthCheckStats) Map() map[string]uint64 {
	return map[string]uint64{
		"attempt": s.Attempt, "success": s.Success, "failure": s.Failure,
		"network_failure": s.NetworkFailure, "passive_failure": s.PassiveFailure, "healthy": s.Healthy,
	}
}

// HealthCheckHostState is one host's active health-check state.
type HealthCheckHostState struct {
	Healthy bool
	// FirstCheckPending: no check has completed yet (Envoy's /pending_active_hc); the host starts
	// unhealthy and its first pass makes it healthy at once.
	FirstCheckPending bool
	// ExcludedViaImmediateFail: failed through x-envoy-immediate-health-check-fail, until it passes again.
	ExcludedViaImmediateFail bool
	// ActiveHCTimeout: unhealthy and the last failure was a timeout (/active_hc_timeout).
	ActiveHCTimeout bool
	// ConsecutivePasses while unhealthy, ConsecutiveFailures (retriable) while healthy.
	ConsecutivePasses, ConsecutiveFailures uint32
}

type hcHost struct {
	firstCheck             bool
	numHealthy             uint32
	numUnhealthy           uint32
	lastPassed, lastChange bool // the last check's result, and whether it was a pending transition
	excluded, timeout      bool
}

// HealthChecker is the active HTTP health-check state of a fixed set of hosts: the caller runs a check
// per host every NextInterval and reports each result; the checker decides health. Hosts start
// unhealthy with their first check pending, as in an Envoy cluster with health checks. Safe for
// concurrent use; Healthy is lock-free.
type HealthChecker struct {
	cfg     HealthCheckConfig
	healthy []atomic.Bool

	mu    sync.Mutex
	hosts []hcHost
	stats HealthCheckStats
}

// NewHealthChecker returns a checker for hosts hosts, applying the defaults to cfg's zero fields.
func NewHealthChecker(cfg HealthCheckConfig, hosts int) (*HealthChecker, error) {
	cfg.withDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if hosts < 0 {
		return nil, fmt.Errorf("health checker: negative host count %d", hosts)
	}
	hc := &HealthChecker{cfg: cfg, healthy: make([]atomic.Bool, hosts), hosts: make([]hcHost, hosts)}
	for i := range hc.hosts {
		hc.hosts[i].firstCheck = true
	}
	return hc, nil
}

// Config returns the configuration with defaults applied.
func (hc *HealthChecker) Config() HealthCheckConfig { return hc.cfg }

// Healthy reports whether the host passes active health checking. Lock-free.
func (hc *HealthChecker) Healthy(host int) bool {
	return host >= 0 && host < len(hc.healthy) && hc.healthy[host].Load()
}

// Result records one check's outcome and returns the health transitions it caused. A status outside
// ExpectedStatuses (unless in RetriableStatuses) or an x-envoy-immediate-health-check-fail header fails
// the host at once; timeouts, network failures and retriable statuses fail it after UnhealthyThreshold
// in a row. An unhealthy host recovers after HealthyThreshold passes in a row, except that a host's
// first check counts at once. When a pass leaves the host healthy, the caller should also call
// OutlierDetector.UnejectHost.
func (hc *HealthChecker) Result(now time.Time, host int, r HealthCheckResult) []Event {
	if host < 0 || host >= len(hc.hosts) {
		return nil
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.stats.Attempt++
	switch {
	case r.Kind == CheckTimeout:
		return hc.fail(now, host, failTimeout, ReasonUnhealthyThreshold)
	case r.Kind == CheckNetworkFailure:
		return hc.fail(now, host, failNetwork, ReasonUnhealthyThreshold)
	case r.ImmediateFail:
		hc.hosts[host].excluded = true
		return hc.fail(now, host, failNow, ReasonImmediateFail)
	case !inRanges(hc.cfg.ExpectedStatuses, r.Status):
		if inRanges(hc.cfg.RetriableStatuses, r.Status) {
			return hc.fail(now, host, failRetriable, ReasonUnhealthyThreshold)
		}
		return hc.fail(now, host, failNow, ReasonUnexpectedStatus)
	}
	return hc.pass(now, host)
}

// ImmediateFail records that ordinary traffic to the host got a response with
// x-envoy-immediate-health-check-fail (Envoy's passive failure): the host is unhealthy at once.
func (hc *HealthChecker) ImmediateFail(now time.Time, host int) []Event {
	if host < 0 || host >= len(hc.hosts) {
		return nil
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	hc.hosts[host].excluded = true
	hc.stats.PassiveFailure++
	return hc.fail(now, host, failNow, ReasonImmediateFail)
}

func inRanges(ranges []StatusRange, s int) bool {
	for _, r := range ranges {
		if r.contains(s) {
			return true
		}
	}
	return false
}

// pass is Envoy's handleSuccess. hc.mu held.
func (hc *HealthChecker) pass(now time.Time, host int) []Event {
	h := &hc.hosts[host]
	h.numUnhealthy = 0
	h.lastPassed, h.lastChange = true, false
	hc.stats.Success++
	var evs []Event
	if !hc.healthy[host].Load() {
		h.numHealthy++
		if h.firstCheck || h.numHealthy >= hc.cfg.HealthyThreshold {
			reason := ReasonHealthyThreshold
			if h.firstCheck {
				reason = ReasonFirstCheck
			}
			h.numHealthy = 0
			h.excluded, h.timeout = false, false
			hc.healthy[host].Store(true)
			hc.stats.Healthy++
			evs = []Event{{Time: now, Host: host, Kind: EventHealthy, Reason: reason}}
		} else {
			h.lastChange = true
		}
	}
	h.firstCheck = false
	return evs
}

// failure classifies a failed check.
type failure uint8

const (
	failNetwork   failure = iota // counts toward UnhealthyThreshold; network_failure
	failTimeout                  // likewise, and marks the host /active_hc_timeout
	failRetriable                // a retriable status: counts toward UnhealthyThreshold
	failNow                      // fails a healthy host at once
)

// fail is Envoy's setUnhealthy. hc.mu held.
func (hc *HealthChecker) fail(now time.Time, host int, f failure, reason string) []Event {
	h := &hc.hosts[host]
	h.numHealthy = 0
	h.lastPassed, h.lastChange = false, false
	hc.stats.Failure++
	if f == failNetwork || f == failTimeout {
		hc.stats.NetworkFailure++
	}
	var evs []Event
	if hc.healthy[host].Load() {
		h.numUnhealthy++
		if f == failNow || h.numUnhealthy >= hc.cfg.UnhealthyThreshold {
			h.numUnhealthy = 0
			hc.healthy[host].Store(false)
			hc.stats.Healthy--
			evs = []Event{{Time: now, Host: host, Kind: EventUnhealthy, Reason: reason}}
		} else {
			h.lastChange = true
		}
	}
	h.timeout = f == failTimeout && !hc.healthy[host].Load()
	h.firstCheck = false
	return evs
}

// FirstDelay is the delay before a host's first check: uniform in [0, InitialJitter), whole
// milliseconds.
func (hc *HealthChecker) FirstDelay(rng Rand) time.Duration {
	if ms := uint64(hc.cfg.InitialJitter / time.Millisecond); ms > 0 {
		return time.Duration(rng.Uint64()%ms) * time.Millisecond
	}
	return 0
}

// NextInterval is the delay before the host's next check, chosen as Envoy does from its last result:
// once the cluster has seen traffic, Interval after a pass, UnhealthyInterval after a failure, and the
// edge intervals while a transition is pending (some but not all of the threshold's checks done);
// before any traffic, NoTrafficHealthyInterval after a pass that left the host healthy, else
// NoTrafficInterval. Jitter is added: [0, IntervalJitterPercent% of it) and [0, IntervalJitter).
func (hc *HealthChecker) NextInterval(host int, trafficSeen bool, rng Rand) time.Duration {
	var passed, pending bool
	if host >= 0 && host < len(hc.hosts) {
		hc.mu.Lock()
		passed, pending = hc.hosts[host].lastPassed, hc.hosts[host].lastChange
		hc.mu.Unlock()
	}
	var base time.Duration
	switch {
	case !trafficSeen && passed && !pending:
		base = hc.cfg.NoTrafficHealthyInterval
	case !trafficSeen:
		base = hc.cfg.NoTrafficInterval
	case passed && pending:
		base = hc.cfg.HealthyEdgeInterval
	case passed:
		base = hc.cfg.Interval
	case pending:
		base = hc.cfg.UnhealthyEdgeInterval
	default:
		base = hc.cfg.UnhealthyInterval
	}
	ms := uint64(base / time.Millisecond)
	if mod := uint64(hc.cfg.IntervalJitterPercent) * ms / 100; mod > 0 {
		ms += rng.Uint64() % mod
	}
	if j := uint64(hc.cfg.IntervalJitter / time.Millisecond); j > 0 {
		ms += rng.Uint64() % j
	}
	return time.Duration(max(ms, 1)) * time.Millisecond
}

// HostState returns the host's health-check state.
func (hc *HealthChecker) HostState(host int) HealthCheckHostState {
	if host < 0 || host >= len(hc.hosts) {
		return HealthCheckHostState{}
	}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	h := hc.hosts[host]
	return HealthCheckHostState{
		Healthy:                  hc.healthy[host].Load(),
		FirstCheckPending:        h.firstCheck,
		ExcludedViaImmediateFail: h.excluded,
		ActiveHCTimeout:          h.timeout,
		ConsecutivePasses:        h.numHealthy,
		ConsecutiveFailures:      h.numUnhealthy,
	}
}

// Stats returns the health_check.* stats.
func (hc *HealthChecker) Stats() HealthCheckStats {
	hc.mu.Lock()
	defer hc.mu.Unlock()
	return hc.stats
}

// Carry returns a checker for a new host set that keeps the state of the hosts that stay: new host i
// was host from[i] of hc, or is new (unhealthy, its first check pending) when from[i] is negative, as
// Envoy's health checker keeps the sessions of the hosts that stay across a membership update
// (HealthCheckerImplBase::onClusterMemberUpdate, source/common/upstream/health_checker_impl.cc). The
// stats carry on.
func (hc *HealthChecker) Carry(from []int) *HealthChecker {
	n := &HealthChecker{cfg: hc.cfg, healthy: make([]atomic.Bool, len(from)), hosts: make([]hcHost, len(from))}
	hc.mu.Lock()
	defer hc.mu.Unlock()
	n.stats = hc.stats
	healthy := uint64(0)
	for i, j := range from {
		if j < 0 || j >= len(hc.hosts) {
			n.hosts[i].firstCheck = true
			continue
		}
		n.hosts[i] = hc.hosts[j]
		if hc.healthy[j].Load() {
			n.healthy[i].Store(true)
			healthy++
		}
	}
	n.stats.Healthy = healthy
	return n
}
