package policy

import (
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// OutlierConfig is envoy.config.cluster.v3.OutlierDetection (all fields but the `monitors` extensions).
// Percentages are whole percents (0–100). Start from DefaultOutlierConfig: the zero value is not
// Envoy's default.
type OutlierConfig struct {
	// Interval between ejection sweeps (Envoy default 10s). Used here only to decide when the ejection
	// multiplier decays; the caller runs Sweep at this interval.
	Interval time.Duration
	// BaseEjectionTime is multiplied by the host's ejection multiplier k (default 30s).
	BaseEjectionTime time.Duration
	// MaxEjectionTime caps base·k (default 300s, or BaseEjectionTime if larger). Zero means that
	// default; a non-zero value below BaseEjectionTime is invalid, as in Envoy.
	MaxEjectionTime time.Duration
	// MaxEjectionTimeJitter: each ejection adds a random jitter in [0, MaxEjectionTimeJitter], whole
	// milliseconds (default 0).
	MaxEjectionTimeJitter time.Duration
	// MaxEjectionPercent of the cluster's hosts may be ejected at once (default 10).
	MaxEjectionPercent uint32
	// AlwaysEjectOneHost lets one ejection through whatever MaxEjectionPercent says (default false).
	AlwaysEjectOneHost bool

	Consecutive5xx                     uint32 // default 5
	EnforcingConsecutive5xx            uint32 // default 100
	ConsecutiveGatewayFailure          uint32 // default 5
	EnforcingConsecutiveGatewayFailure uint32 // default 0: detected, not enforced

	// SplitExternalLocalOriginErrors keeps local-origin events (connect failure, timeout, reset) apart
	// from upstream HTTP statuses (default false: they count as 503 / 504).
	SplitExternalLocalOriginErrors         bool
	ConsecutiveLocalOriginFailure          uint32 // default 5 (split mode only)
	EnforcingConsecutiveLocalOriginFailure uint32 // default 100
	EnforcingLocalOriginSuccessRate        uint32 // default 100

	EnforcingSuccessRate     uint32 // default 100
	SuccessRateMinimumHosts  uint32 // default 5
	SuccessRateRequestVolume uint32 // default 100
	SuccessRateStdevFactor   uint32 // default 1900, i.e. 1.9

	FailurePercentageThreshold            uint32 // default 85
	EnforcingFailurePercentage            uint32 // default 0
	EnforcingFailurePercentageLocalOrigin uint32 // default 0
	FailurePercentageMinimumHosts         uint32 // default 5
	FailurePercentageRequestVolume        uint32 // default 50

	// SuccessfulActiveHealthCheckUnejectHost lets UnejectHost bring an ejected host back (default true).
	SuccessfulActiveHealthCheckUnejectHost bool
}

// DefaultOutlierConfig returns Envoy's defaults.
func DefaultOutlierConfig() OutlierConfig {
	return OutlierConfig{
		Interval:                               10 * time.Second,
		BaseEjectionTime:                       30 * time.Second,
		MaxEjectionTime:                        300 * time.Second,
		MaxEjectionPercent:                     10,
		Consecutive5xx:                         5,
		EnforcingConsecutive5xx:                100,
		ConsecutiveGatewayFailure:              5,
		EnforcingConsecutiveGatewayFailure:     0,
		ConsecutiveLocalOriginFailure:          5,
		EnforcingConsecutiveLocalOriginFailure: 100,
		EnforcingLocalOriginSuccessRate:        100,
		EnforcingSuccessRate:                   100,
		SuccessRateMinimumHosts:                5,
		SuccessRateRequestVolume:               100,
		SuccessRateStdevFactor:                 1900,
		FailurePercentageThreshold:             85,
		EnforcingFailurePercentage:             0,
		EnforcingFailurePercentageLocalOrigin:  0,
		FailurePercentageMinimumHosts:          5,
		FailurePercentageRequestVolume:         50,
		SuccessfulActiveHealthCheckUnejectHost: true,
	}
}

// Validate reports the first invalid field, by its Envoy name.
func (c OutlierConfig) Validate() error {
	switch {
	case c.Interval <= 0:
		return fieldErrorf("outlier_detection.interval", "must be > 0, got %v", c.Interval)
	case c.BaseEjectionTime <= 0:
		return fieldErrorf("outlier_detection.base_ejection_time", "must be > 0, got %v", c.BaseEjectionTime)
	case c.MaxEjectionTime < 0:
		return fieldErrorf("outlier_detection.max_ejection_time", "must be > 0, got %v", c.MaxEjectionTime)
	case c.MaxEjectionTime != 0 && c.MaxEjectionTime < c.BaseEjectionTime:
		return fieldErrorf("outlier_detection.max_ejection_time", "%v is smaller than base_ejection_time %v",
			c.MaxEjectionTime, c.BaseEjectionTime)
	case c.MaxEjectionTimeJitter < 0:
		return fieldErrorf("outlier_detection.max_ejection_time_jitter", "must be >= 0, got %v", c.MaxEjectionTimeJitter)
	}
	percents := []struct {
		name string
		v    uint32
	}{
		{"max_ejection_percent", c.MaxEjectionPercent},
		{"enforcing_consecutive_5xx", c.EnforcingConsecutive5xx},
		{"enforcing_consecutive_gateway_failure", c.EnforcingConsecutiveGatewayFailure},
		{"enforcing_consecutive_local_origin_failure", c.EnforcingConsecutiveLocalOriginFailure},
		{"enforcing_local_origin_success_rate", c.EnforcingLocalOriginSuccessRate},
		{"enforcing_success_rate", c.EnforcingSuccessRate},
		{"failure_percentage_threshold", c.FailurePercentageThreshold},
		{"enforcing_failure_percentage", c.EnforcingFailurePercentage},
		{"enforcing_failure_percentage_local_origin", c.EnforcingFailurePercentageLocalOrigin},
	}
	for _, p := range percents {
		if p.v > 100 {
			return fieldErrorf("outlier_detection."+p.name, "must be a percentage in [0, 100], got %d", p.v)
		}
	}
	return nil
}

// maxEjection is the effective cap of base·k: MaxEjectionTime, defaulting to max(300s, base).
func (c *OutlierConfig) maxEjection() time.Duration {
	if c.MaxEjectionTime == 0 {
		return max(300*time.Second, c.BaseEjectionTime)
	}
	return max(c.MaxEjectionTime, c.BaseEjectionTime)
}

// OutlierResultKind says what one attempt told outlier detection.
type OutlierResultKind uint8

// The results outlier detection is fed (Envoy's Outlier::Result).
const (
	// ExtOriginResponse: the upstream answered; OutlierResult.Status is its HTTP status.
	ExtOriginResponse OutlierResultKind = iota
	// LocalOriginConnectFailure: the connection could not be established (503 in non-split mode).
	LocalOriginConnectFailure
	// LocalOriginTimeout: the attempt timed out (per-try timeout, or the route timeout while it was still
	// waiting) (504 in non-split mode).
	LocalOriginTimeout
	// LocalOriginReset: the connection or stream was reset before a response (503 in non-split mode).
	LocalOriginReset
	// LocalOriginConnectSuccess: the connection was established. Ignored in non-split mode (the HTTP
	// status follows); in split mode a local-origin success.
	LocalOriginConnectSuccess
)

// OutlierResult is one attempt's outcome as outlier detection sees it.
type OutlierResult struct {
	Kind   OutlierResultKind
	Status int // with ExtOriginResponse
}

// HTTPResult is an upstream response with the given status.
func HTTPResult(status int) OutlierResult {
	return OutlierResult{Kind: ExtOriginResponse, Status: status}
}

// OutlierResultFor maps a retry Outcome onto what outlier detection records. ok is false for a local
// circuit-breaker overflow, which is never reported to outlier detection.
func OutlierResultFor(o Outcome) (r OutlierResult, ok bool) {
	switch o.Kind {
	case Response:
		return HTTPResult(o.Status), true
	case ConnectFailure:
		return OutlierResult{Kind: LocalOriginConnectFailure}, true
	case Reset:
		return OutlierResult{Kind: LocalOriginReset}, true
	case PerTryTimeout:
		return OutlierResult{Kind: LocalOriginTimeout}, true
	}
	return OutlierResult{}, false
}

// ejectType is Envoy's OutlierEjectionType; it indexes the detected/enforced counters.
type ejectType uint8

const (
	ejectConsecutive5xx ejectType = iota
	ejectConsecutiveGatewayFailure
	ejectConsecutiveLocalOriginFailure
	ejectSuccessRate
	ejectLocalOriginSuccessRate
	ejectFailurePercentage
	ejectLocalOriginFailurePercentage
	numEjectTypes
)

var ejectReasons = [numEjectTypes]string{
	ReasonConsecutive5xx, ReasonConsecutiveGatewayFailure, ReasonConsecutiveLocalOriginFailure,
	ReasonSuccessRate, ReasonLocalOriginSuccessRate, ReasonFailurePercentage, ReasonLocalOriginFailurePercentage,
}

// OutlierStats are the cluster's outlier_detection.* stats, one field per Envoy stat.
type OutlierStats struct {
	EjectionsActive        uint64 // gauge
	EjectionsOverflow      uint64
	EjectionsEnforcedTotal uint64

	EjectionsDetectedConsecutive5xx                uint64
	EjectionsEnforcedConsecutive5xx                uint64
	EjectionsDetectedConsecutiveGatewayFailure     uint64
	EjectionsEnforcedConsecutiveGatewayFailure     uint64
	EjectionsDetectedConsecutiveLocalOriginFailure uint64
	EjectionsEnforcedConsecutiveLocalOriginFailure uint64
	EjectionsDetectedSuccessRate                   uint64
	EjectionsEnforcedSuccessRate                   uint64
	EjectionsDetectedLocalOriginSuccessRate        uint64
	EjectionsEnforcedLocalOriginSuccessRate        uint64
	EjectionsDetectedFailurePercentage             uint64
	EjectionsEnforcedFailurePercentage             uint64
	EjectionsDetectedLocalOriginFailurePercentage  uint64
	EjectionsEnforcedLocalOriginFailurePercentage  uint64
}

// Map returns the stats under their Envoy names (without the cluster.<name>.outlier_detection. prefix).
func (s OutlierStats) Map() map[string]uint64 {
	return map[string]uint64{
		"ejections_active":                                    s.EjectionsActive,
		"ejections_overflow":                                  s.EjectionsOverflow,
		"ejections_enforced_total":                            s.EjectionsEnforcedTotal,
		"ejections_detected_consecutive_5xx":                  s.EjectionsDetectedConsecutive5xx,
		"ejections_enforced_consecutive_5xx":                  s.EjectionsEnforcedConsecutive5xx,
		"ejections_detected_consecutive_gateway_failure":      s.EjectionsDetectedConsecutiveGatewayFailure,
		"ejections_enforced_consecutive_gateway_failure":      s.EjectionsEnforcedConsecutiveGatewayFailure,
		"ejections_detected_consecutive_local_origin_failure": s.EjectionsDetectedConsecutiveLocalOriginFailure,
		"ejections_enforced_consecutive_local_origin_failure": s.EjectionsEnforcedConsecutiveLocalOriginFailure,
		"ejections_detected_success_rate":                     s.EjectionsDetectedSuccessRate,
		"ejections_enforced_success_rate":                     s.EjectionsEnforcedSuccessRate,
		"ejections_detected_local_origin_success_rate":        s.EjectionsDetectedLocalOriginSuccessRate,
		"ejections_enforced_local_origin_success_rate":        s.EjectionsEnforcedLocalOriginSuccessRate,
		"ejections_detected_failure_percentage":               s.EjectionsDetectedFailurePercentage,
		"ejections_enforced_failure_percentage":               s.EjectionsEnforcedFailurePercentage,
		"ejections_detected_local_origin_failure_percentage":  s.EjectionsDetectedLocalOriginFailurePercentage,
		"ejections_enforced_local_origin_failure_percentage":  s.EjectionsEnforcedLocalOriginFailurePercentage,
	}
}

// OutlierHostState is one host as Snapshot sees it (the /clusters view).
type OutlierHostState struct {
	Ejected bool
	// EjectedAt and EjectedUntil are set while ejected; EjectedUntil is the earliest time a sweep
	// un-ejects the host (un-ejection itself happens at the first sweep at or after it).
	EjectedAt, EjectedUntil time.Time
	// Multiplier is k: the next (or current) ejection lasts min(base·k, max).
	Multiplier   uint32
	NumEjections uint64

	Consecutive5xx, ConsecutiveGatewayFailure, ConsecutiveLocalOriginFailure uint64

	// Requests and Successes seen so far in the current interval (external origin).
	IntervalRequests, IntervalSuccesses uint64
	// SuccessRate over the last completed interval (%), -1 when the host had too few requests for
	// either detector; likewise LocalOriginSuccessRate.
	SuccessRate, LocalOriginSuccessRate float64
}

// OutlierSnapshot is the detector's state at one moment.
type OutlierSnapshot struct {
	Hosts []OutlierHostState
	Stats OutlierStats
	// SuccessRateAverage and SuccessRateEjectionThreshold from the last sweep, -1 when success-rate
	// detection did not run (too few qualifying hosts); likewise for local origin.
	SuccessRateAverage, SuccessRateEjectionThreshold                       float64
	LocalOriginSuccessRateAverage, LocalOriginSuccessRateEjectionThreshold float64
}

// srBucket counts one interval's requests for the success-rate monitors.
type srBucket struct{ total, success uint64 }

// outlierCounters are a host's request-path counters, guarded by their own mutex so that Record on
// different hosts never contends.
type outlierCounters struct {
	mu                     sync.Mutex
	c5xx, cGateway, cLocal uint64
	external, localOrigin  srBucket
	ejected                atomic.Bool // written under OutlierDetector.mu, read lock-free
}

// outlierEjection is a host's ejection state, guarded by OutlierDetector.mu.
type outlierEjection struct {
	ejectedAt    time.Time
	jitter       time.Duration
	k            uint32
	numEjections uint64
	unejectedAt  time.Time
	wasUnejected bool
	// sr is the host's success rate over the last interval per monitor (external, local origin), -1
	// when it had too few requests.
	sr [2]float64
}

// OutlierDetector is Envoy's outlier detection for one cluster of a fixed number of hosts (indices
// 0..n-1). Record runs on the request path and only counts, except that the consecutive-failure
// detectors eject inline on the Nth failure, as Envoy's do; Sweep runs every Interval and does
// un-ejection and the success-rate and failure-percentage detectors. Safe for concurrent use: Record
// locks only its host's counters until a detector fires.
type OutlierDetector struct {
	cfg      OutlierConfig
	counters []outlierCounters

	mu       sync.Mutex // guards everything below, and the rng
	rng      Rand
	ejection []outlierEjection
	active   uint64
	stats    OutlierStats
	detected [numEjectTypes]uint64
	enforced [numEjectTypes]uint64
	srAvg    [2]float64 // external, local origin
	srThresh [2]float64
	prev     []srBucket // scratch: last interval's buckets
	prevLO   []srBucket
}

// NewOutlierDetector returns a detector for hosts hosts. rng decides enforcing_* draws and ejection
// jitter; it is used under the detector's lock only.
func NewOutlierDetector(cfg OutlierConfig, hosts int, rng Rand) (*OutlierDetector, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if hosts < 0 {
		return nil, fmt.Errorf("outlier detector: negative host count %d", hosts)
	}
	if rng == nil {
		return nil, errors.New("outlier detector: nil Rand")
	}
	d := &OutlierDetector{
		cfg:      cfg,
		counters: make([]outlierCounters, hosts),
		rng:      rng,
		ejection: make([]outlierEjection, hosts),
		prev:     make([]srBucket, hosts),
		prevLO:   make([]srBucket, hosts),
		srAvg:    [2]float64{-1, -1},
		srThresh: [2]float64{-1, -1},
	}
	for i := range d.ejection {
		d.ejection[i].sr = [2]float64{-1, -1}
	}
	return d, nil
}

// Hosts returns the number of hosts.
func (d *OutlierDetector) Hosts() int { return len(d.counters) }

// Ejected reports whether the host is ejected. Lock-free.
func (d *OutlierDetector) Ejected(host int) bool {
	return host >= 0 && host < len(d.counters) && d.counters[host].ejected.Load()
}

// Record counts one attempt's result for the host. It returns the events of an inline consecutive-
// failure detection, and nil otherwise (the common case, which allocates nothing).
func (d *OutlierDetector) Record(now time.Time, host int, r OutlierResult) []Event {
	if host < 0 || host >= len(d.counters) {
		return nil
	}
	fired, n := d.count(&d.counters[host], r)
	if n == 0 {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []Event
	for _, t := range fired[:n] {
		evs = d.onConsecutive(now, host, t, evs)
	}
	return evs
}

// count applies r to the host's counters and returns the consecutive detectors that fired, in Envoy's
// order (gateway before 5xx on the same response).
func (d *OutlierDetector) count(c *outlierCounters, r OutlierResult) (fired [2]ejectType, n int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	code := r.Status
	if d.cfg.SplitExternalLocalOriginErrors {
		switch r.Kind {
		case LocalOriginConnectFailure, LocalOriginTimeout, LocalOriginReset:
			c.localOrigin.total++
			c.cLocal++
			if c.cLocal == uint64(d.cfg.ConsecutiveLocalOriginFailure) {
				fired[n], n = ejectConsecutiveLocalOriginFailure, n+1
			}
			return fired, n
		case LocalOriginConnectSuccess:
			c.localOrigin.total++
			c.localOrigin.success++
			c.cLocal = 0
			return fired, n
		}
	} else {
		switch r.Kind {
		case LocalOriginConnectFailure, LocalOriginReset:
			code = 503
		case LocalOriginTimeout:
			code = 504
		case LocalOriginConnectSuccess:
			return fired, n // the HTTP status follows
		}
	}
	c.external.total++
	if code < 500 || code > 599 {
		c.external.success++
		c.c5xx, c.cGateway = 0, 0
		return fired, n
	}
	if code == 502 || code == 503 || code == 504 {
		c.cGateway++
		if c.cGateway == uint64(d.cfg.ConsecutiveGatewayFailure) {
			fired[n], n = ejectConsecutiveGatewayFailure, n+1
		}
	} else {
		c.cGateway = 0
	}
	c.c5xx++
	if c.c5xx == uint64(d.cfg.Consecutive5xx) {
		fired[n], n = ejectConsecutive5xx, n+1
	}
	return fired, n
}

// onConsecutive handles a consecutive detector firing (Envoy's onConsecutiveErrorWorker). d.mu held.
func (d *OutlierDetector) onConsecutive(now time.Time, host int, t ejectType, evs []Event) []Event {
	c := &d.counters[host]
	if c.ejected.Load() {
		return evs // already ejected: not detected again; the counter keeps running until un-ejection
	}
	d.detected[t]++
	evs = d.eject(now, host, t, evs, 0, 0)
	c.mu.Lock()
	switch t {
	case ejectConsecutive5xx:
		c.c5xx = 0
	case ejectConsecutiveGatewayFailure:
		c.cGateway = 0
	case ejectConsecutiveLocalOriginFailure:
		c.cLocal = 0
	}
	c.mu.Unlock()
	return evs
}

// enforcing returns the enforcing_* percentage for a detector.
func (d *OutlierDetector) enforcing(t ejectType) uint32 {
	switch t {
	case ejectConsecutive5xx:
		return d.cfg.EnforcingConsecutive5xx
	case ejectConsecutiveGatewayFailure:
		return d.cfg.EnforcingConsecutiveGatewayFailure
	case ejectConsecutiveLocalOriginFailure:
		return d.cfg.EnforcingConsecutiveLocalOriginFailure
	case ejectSuccessRate:
		return d.cfg.EnforcingSuccessRate
	case ejectLocalOriginSuccessRate:
		return d.cfg.EnforcingLocalOriginSuccessRate
	case ejectFailurePercentage:
		return d.cfg.EnforcingFailurePercentage
	case ejectLocalOriginFailurePercentage:
		return d.cfg.EnforcingFailurePercentageLocalOrigin
	}
	return 0
}

// duration is how long an ejection with multiplier k lasts, before jitter.
func (d *OutlierDetector) duration(k uint32) time.Duration {
	return min(d.cfg.BaseEjectionTime*time.Duration(k), d.cfg.maxEjection())
}

// eject is Envoy's ejectHost: the max_ejection_percent cap, then the enforcing draw. d.mu held.
func (d *OutlierDetector) eject(now time.Time, host int, t ejectType, evs []Event, sr, thr float64) []Event {
	ev := Event{Time: now, Host: host, Reason: ejectReasons[t], SuccessRate: sr, Threshold: thr}
	total := uint64(len(d.counters))
	allowed := 100*(d.active+1) <= uint64(min(d.cfg.MaxEjectionPercent, 100))*total ||
		(d.cfg.AlwaysEjectOneHost && d.active == 0)
	if !allowed {
		d.stats.EjectionsOverflow++
		ev.Kind = EventOverflow
		return append(evs, ev)
	}
	if pct := d.enforcing(t); pct < 100 && (pct == 0 || d.rng.Uint64()%100 >= uint64(pct)) {
		ev.Kind = EventDetectedNotEnforced
		return append(evs, ev)
	}
	e := &d.ejection[host]
	d.active++
	d.enforced[t]++
	d.stats.EjectionsEnforcedTotal++
	d.counters[host].ejected.Store(true)
	e.ejectedAt = now
	e.numEjections++
	e.jitter = 0
	if ms := uint64(d.cfg.MaxEjectionTimeJitter / time.Millisecond); ms > 0 {
		e.jitter = time.Duration(d.rng.Uint64()%(ms+1)) * time.Millisecond
	}
	// Envoy stops growing k once base·k reaches max+base, so that it decays back in bounded time.
	if d.cfg.BaseEjectionTime*time.Duration(e.k) < d.cfg.maxEjection()+d.cfg.BaseEjectionTime {
		e.k++
	}
	ev.Kind = EventEjected
	ev.Until = now.Add(d.duration(e.k) + e.jitter)
	return append(evs, ev)
}

// uneject brings a host back and clears its consecutive counters. d.mu held.
func (d *OutlierDetector) uneject(now time.Time, host int, reason string, evs []Event) []Event {
	c := &d.counters[host]
	c.ejected.Store(false)
	d.active--
	e := &d.ejection[host]
	e.unejectedAt, e.wasUnejected = now, true
	c.mu.Lock()
	c.c5xx, c.cGateway, c.cLocal = 0, 0, 0
	c.mu.Unlock()
	return append(evs, Event{Time: now, Host: host, Kind: EventUnejected, Reason: reason})
}

// UnejectHost un-ejects the host early because an active health check passed and the host is healthy
// by active health checking (Envoy does this unless successful_active_health_check_uneject_host is
// false). It returns the un-ejection event, or nil when the host was not ejected.
func (d *OutlierDetector) UnejectHost(now time.Time, host int) []Event {
	if !d.cfg.SuccessfulActiveHealthCheckUnejectHost || !d.Ejected(host) {
		return nil
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.counters[host].ejected.Load() {
		return nil
	}
	return d.uneject(now, host, ReasonActiveHealthCheck, nil)
}

// Sweep is the interval timer (Envoy's onIntervalTimer): (1) un-eject hosts whose ejection time
// min(base·k, max) + jitter is up; (2) close the interval's success-rate buckets and run success-rate and
// failure-percentage detection, external origin then local origin; (3) decay k by one for every host
// that is not ejected and was un-ejected at least one Interval ago. Running (3) after (2) is Envoy's fix
// for #26758: a host re-ejected by an interval detector keeps its grown k.
func (d *OutlierDetector) Sweep(now time.Time) []Event {
	d.mu.Lock()
	defer d.mu.Unlock()
	var evs []Event
	for h := range d.counters {
		c := &d.counters[h]
		if c.ejected.Load() {
			e := &d.ejection[h]
			if now.Sub(e.ejectedAt) >= d.duration(e.k)+e.jitter {
				evs = d.uneject(now, h, ReasonEjectionTimeElapsed, evs)
			}
		}
		c.mu.Lock()
		d.prev[h], d.prevLO[h] = c.external, c.localOrigin
		c.external, c.localOrigin = srBucket{}, srBucket{}
		c.mu.Unlock()
	}
	evs = d.detectSuccessRate(now, d.prev, 0, evs)
	evs = d.detectSuccessRate(now, d.prevLO, 1, evs)
	for h := range d.counters {
		e := &d.ejection[h]
		if !d.counters[h].ejected.Load() && e.wasUnejected && now.Sub(e.unejectedAt) >= d.cfg.Interval && e.k > 0 {
			e.k--
		}
	}
	return evs
}

// detectSuccessRate is Envoy's processSuccessRateEjections for one monitor (0 external, 1 local
// origin). d.mu held.
func (d *OutlierDetector) detectSuccessRate(now time.Time, buckets []srBucket, mon int, evs []Event) []Event {
	d.srAvg[mon], d.srThresh[mon] = -1, -1
	srType, fpType := ejectSuccessRate, ejectFailurePercentage
	if mon == 1 {
		srType, fpType = ejectLocalOriginSuccessRate, ejectLocalOriginFailurePercentage
	}
	for h := range d.ejection {
		d.ejection[h].sr[mon] = -1
	}
	n := uint64(len(d.counters))
	srMinHosts, srVolume := uint64(d.cfg.SuccessRateMinimumHosts), uint64(d.cfg.SuccessRateRequestVolume)
	fpMinHosts, fpVolume := uint64(d.cfg.FailurePercentageMinimumHosts), uint64(d.cfg.FailurePercentageRequestVolume)
	if n < srMinHosts && n < fpMinHosts {
		return evs
	}
	type hostSR struct {
		host int
		sr   float64
	}
	var srHosts, fpHosts []hostSR
	var rates []float64
	for h, b := range buckets {
		if d.counters[h].ejected.Load() || b.total == 0 {
			continue
		}
		sr := float64(b.success) * 100 / float64(b.total)
		if b.total >= min(srVolume, fpVolume) {
			d.ejection[h].sr[mon] = sr
		}
		if b.total >= srVolume {
			srHosts = append(srHosts, hostSR{h, sr})
			rates = append(rates, sr)
		}
		if b.total >= fpVolume {
			fpHosts = append(fpHosts, hostSR{h, sr})
		}
	}
	if len(srHosts) > 0 && uint64(len(srHosts)) >= srMinHosts {
		mean, threshold := SuccessRateThreshold(rates, d.cfg.SuccessRateStdevFactor)
		d.srAvg[mon], d.srThresh[mon] = mean, threshold
		for _, s := range srHosts {
			if s.sr < threshold {
				d.detected[srType]++
				evs = d.eject(now, s.host, srType, evs, s.sr, threshold)
			}
		}
	}
	if len(fpHosts) > 0 && uint64(len(fpHosts)) >= fpMinHosts {
		thr := float64(d.cfg.FailurePercentageThreshold)
		for _, s := range fpHosts {
			// Envoy would call ejectHost a second time for a host success rate just ejected; we skip it.
			if 100-s.sr >= thr && !d.counters[s.host].ejected.Load() {
				d.detected[fpType]++
				evs = d.eject(now, s.host, fpType, evs, s.sr, thr)
			}
		}
	}
	return evs
}

// SuccessRateThreshold returns the mean of the success rates (percent) and the success-rate detector's
// ejection threshold mean − (stdevFactor/1000)·σ, σ being the population standard deviation:
// {50,100,100,100,100} with 1900 gives mean 90, σ 20, threshold 52. Both are -1 for no rates.
func SuccessRateThreshold(rates []float64, stdevFactor uint32) (mean, threshold float64) {
	if len(rates) == 0 {
		return -1, -1
	}
	var sum float64
	for _, r := range rates {
		sum += r
	}
	mean = sum / float64(len(rates))
	var variance float64
	for _, r := range rates {
		variance += (r - mean) * (r - mean)
	}
	variance /= float64(len(rates))
	return mean, mean - float64(stdevFactor)/1000*math.Sqrt(variance)
}

// Stats returns the outlier_detection.* stats.
func (d *OutlierDetector) Stats() OutlierStats {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.statsLocked()
}

func (d *OutlierDetector) statsLocked() OutlierStats {
	s := d.stats
	s.EjectionsActive = d.active
	s.EjectionsDetectedConsecutive5xx, s.EjectionsEnforcedConsecutive5xx = d.detected[ejectConsecutive5xx], d.enforced[ejectConsecutive5xx]
	s.EjectionsDetectedConsecutiveGatewayFailure, s.EjectionsEnforcedConsecutiveGatewayFailure = d.detected[ejectConsecutiveGatewayFailure], d.enforced[ejectConsecutiveGatewayFailure]
	s.EjectionsDetectedConsecutiveLocalOriginFailure, s.EjectionsEnforcedConsecutiveLocalOriginFailure = d.detected[ejectConsecutiveLocalOriginFailure], d.enforced[ejectConsecutiveLocalOriginFailure]
	s.EjectionsDetectedSuccessRate, s.EjectionsEnforcedSuccessRate = d.detected[ejectSuccessRate], d.enforced[ejectSuccessRate]
	s.EjectionsDetectedLocalOriginSuccessRate, s.EjectionsEnforcedLocalOriginSuccessRate = d.detected[ejectLocalOriginSuccessRate], d.enforced[ejectLocalOriginSuccessRate]
	s.EjectionsDetectedFailurePercentage, s.EjectionsEnforcedFailurePercentage = d.detected[ejectFailurePercentage], d.enforced[ejectFailurePercentage]
	s.EjectionsDetectedLocalOriginFailurePercentage, s.EjectionsEnforcedLocalOriginFailurePercentage = d.detected[ejectLocalOriginFailurePercentage], d.enforced[ejectLocalOriginFailurePercentage]
	return s
}

// Snapshot returns every host's state and the stats, consistently.
func (d *OutlierDetector) Snapshot() OutlierSnapshot {
	d.mu.Lock()
	defer d.mu.Unlock()
	snap := OutlierSnapshot{
		Hosts:                                   make([]OutlierHostState, len(d.counters)),
		Stats:                                   d.statsLocked(),
		SuccessRateAverage:                      d.srAvg[0],
		SuccessRateEjectionThreshold:            d.srThresh[0],
		LocalOriginSuccessRateAverage:           d.srAvg[1],
		LocalOriginSuccessRateEjectionThreshold: d.srThresh[1],
	}
	for h := range d.counters {
		c, e := &d.counters[h], &d.ejection[h]
		st := OutlierHostState{
			Ejected:                c.ejected.Load(),
			Multiplier:             e.k,
			NumEjections:           e.numEjections,
			SuccessRate:            e.sr[0],
			LocalOriginSuccessRate: e.sr[1],
		}
		if st.Ejected {
			st.EjectedAt = e.ejectedAt
			st.EjectedUntil = e.ejectedAt.Add(d.duration(e.k) + e.jitter)
		}
		c.mu.Lock()
		st.Consecutive5xx, st.ConsecutiveGatewayFailure, st.ConsecutiveLocalOriginFailure = c.c5xx, c.cGateway, c.cLocal
		st.IntervalRequests, st.IntervalSuccesses = c.external.total, c.external.success
		c.mu.Unlock()
		snap.Hosts[h] = st
	}
	return snap
}

// Carry returns a detector for a new host set that keeps the state of the hosts that stay: new host i
// was host from[i] of d, or is new when from[i] is negative. A host that stays keeps its counters,
// its ejection (and multiplier) and its last success rate; a removed host's ejection ends with it; the
// cluster's detection stats carry on. This is what Envoy's DetectorImpl does on a membership update
// (source/common/upstream/outlier_detection_impl.cc: the callback added in initialize creates monitors
// for added hosts and erases those of removed ones). d stays usable; what it records afterwards is not
// carried.
func (d *OutlierDetector) Carry(from []int, rng Rand) (*OutlierDetector, error) {
	n, err := NewOutlierDetector(d.cfg, len(from), rng)
	if err != nil {
		return nil, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n.stats, n.detected, n.enforced = d.stats, d.detected, d.enforced
	n.srAvg, n.srThresh = d.srAvg, d.srThresh
	for i, j := range from {
		if j < 0 || j >= len(d.counters) {
			continue
		}
		oc, nc := &d.counters[j], &n.counters[i]
		oc.mu.Lock()
		nc.c5xx, nc.cGateway, nc.cLocal = oc.c5xx, oc.cGateway, oc.cLocal
		nc.external, nc.localOrigin = oc.external, oc.localOrigin
		oc.mu.Unlock()
		n.ejection[i] = d.ejection[j]
		if oc.ejected.Load() {
			nc.ejected.Store(true)
			n.active++
		}
	}
	return n, nil
}
