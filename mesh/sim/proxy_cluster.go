package sim

import (
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// cluster is one upstream cluster of the model, as the live proxy's (proxy/cluster.go): its hosts with
// their connection pools, its load balancer, circuit breakers, outlier detector and health checker —
// the last four proxy/policy's objects, built from the same configuration.
type cluster struct {
	p       *Proxy
	name    string
	cfg     *config.Cluster
	hosts   []*host
	picker  policy.Picker
	rm      *policy.ResourceManager
	outlier *policy.OutlierDetector // nil without outlier_detection
	hc      *policy.HealthChecker   // nil without health_checks
	st      clusterCounters

	healthyFn func(int) bool
	activeFn  func(int) int64
	sweepFn   func()
	sweepT    Timer
	checks    []*hcSession // one per host with health checks
	running   bool
	// trafficSeen: a request has been routed to the cluster (the health checks' no-traffic intervals).
	trafficSeen bool
	// healthyN is how many hosts are healthy, recounted after every decision of outlier detection or
	// health checking (the only ones that change it), so that a pick need not ask each host.
	healthyN int
}

// clusterCounters are the cluster's stats the model counts, with the live proxy's names (see stats).
type clusterCounters struct {
	rqTotal, rqCompleted, rqTimeout, rqPerTryTimeout, rqRxReset, rqTxReset uint64
	retryOrShadowAbandoned                                                 uint64
	rqRetry, rqRetrySuccess, rqRetryOverflow, rqRetryLimitExceeded         uint64
	rqRetryBackoffExponential                                              uint64
	cxTotal, cxConnectFail, cxNoneHealthy, lbHealthyPanic, cxHTTP1Total    uint64
	rqPendingTotal, rqPendingOverflow, cxOverflow                          uint64
	rqClass, retryClass                                                    [4]uint64
	retryCompleted                                                         uint64
	codes, retryCodes                                                      map[int]uint64
	rqActive, rqPendingActive, cxActive                                    int64
}

// host is one endpoint with its HTTP/1.1 connection pool, modelled abstractly: a connection carries
// one request at a time and is reused when idle (the live h1.Pool, as Envoy's ConnPoolImplBase).
type host struct {
	c    *cluster
	idx  int
	addr string
	name string   // the Upstream's name ("service/index"), or the address when none is there
	up   Upstream // nil: no instance at the address (every connection refused)
	// closes is the instance's count of closing its connections when the pool last looked (see
	// syncCloses).
	closes uint64

	open, connecting, idle int
	waiters                []*forward // the pending queue, oldest first
	active                 int64      // requests attached (least request's count)
}

func newCluster(p *Proxy, cfg *config.Cluster, resolve func(string) (Upstream, bool)) (*cluster, error) {
	c := &cluster{p: p, name: cfg.Name, cfg: cfg}
	c.st.codes, c.st.retryCodes = map[int]uint64{}, map[int]uint64{}
	var err error
	if c.picker, err = proxy.NewPicker(*cfg); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if c.rm, err = policy.NewResourceManager(cfg.Breakers.Default); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if cfg.Outlier != nil {
		if c.outlier, err = policy.NewOutlierDetector(*cfg.Outlier, len(cfg.Endpoints), p.seeds.Outlier(cfg.Name)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	if len(cfg.HealthChecks) > 0 {
		if c.hc, err = policy.NewHealthChecker(cfg.HealthChecks[0], len(cfg.Endpoints)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	for i, ep := range cfg.Endpoints {
		h := &host{c: c, idx: i, addr: ep.Address, name: ep.Address}
		if resolve != nil {
			if up, ok := resolve(ep.Address); ok && up != nil {
				h.up, h.name = up, up.Name()
			}
		}
		c.hosts = append(c.hosts, h)
	}
	c.healthyFn = c.healthy
	c.recount()
	c.activeFn = func(i int) int64 { return c.hosts[i].active }
	c.sweepFn = c.sweep
	return c, nil
}

// healthy says whether host i may take traffic: not ejected, not failing active health checks.
func (c *cluster) healthy(i int) bool {
	return (c.outlier == nil || !c.outlier.Ejected(i)) && (c.hc == nil || c.hc.Healthy(i))
}

// pick chooses the host of an attempt as the live cluster.pick: the panic threshold over the healthy
// hosts (policy.PanicMode), the picker, and the previous_hosts predicate on a retry; -1: no healthy
// upstream.
func (c *cluster) pick(f *forward) int {
	var eligible func(int) bool // nil: every host (all healthy, or panic)
	switch {
	case policy.PanicMode(c.healthyN, len(c.hosts), c.cfg.HealthyPanicThreshold):
		c.st.lbHealthyPanic++
	case c.healthyN < len(c.hosts):
		eligible = c.healthyFn
	}
	pc := policy.PickContext{Eligible: eligible, Active: c.activeFn, Hash: f.hash, Rand: &f.rng}
	if rp := f.rp; rp != nil && rp.PreviousHosts && len(f.tried) > 0 {
		return policy.PickWithRetryPredicate(c.picker, pc, f.tried, int(rp.HostSelectionMaxAttempts))
	}
	return c.picker.Pick(pc)
}

// record feeds an attempt's outcome to outlier detection (never a local overflow), as the live
// cluster.recordOutcome, and publishes the decisions it caused.
func (c *cluster) record(i int, o policy.Outcome) {
	if c.outlier == nil || i < 0 { // i < 0: a host a configuration update removed (proxy_update.go)
		return
	}
	if r, ok := policy.OutlierResultFor(o); ok {
		c.emit(c.outlier.Record(c.p.now(), i, r))
	}
}

// recount counts the healthy hosts.
func (c *cluster) recount() {
	c.healthyN = 0
	for i := range c.hosts {
		if c.healthy(i) {
			c.healthyN++
		}
	}
}

// emit publishes policy decisions: the healthy count, and the proxy's events.
func (c *cluster) emit(evs []policy.Event) {
	if len(evs) == 0 {
		return
	}
	c.recount()
	if c.p.onEvent == nil {
		return
	}
	for _, e := range evs {
		c.p.event(e.Kind, c.name, c.hosts[e.Host].name, e.Reason)
	}
}

// start arms the outlier detector's interval sweep (the first one interval from now, as the live
// ticker) and the hosts' health checks.
func (c *cluster) start() {
	c.running = true
	if c.outlier != nil {
		c.sweepT = c.p.en.After(c.cfg.Outlier.Interval, c.sweepFn)
	}
	if c.hc != nil {
		if c.checks == nil {
			for _, h := range c.hosts {
				c.checks = append(c.checks, newHCSession(h))
			}
		}
		for _, s := range c.checks {
			s.start()
		}
	}
}

func (c *cluster) stop() {
	c.running = false
	c.p.en.Stop(c.sweepT)
	for _, s := range c.checks {
		s.stop()
	}
}

func (c *cluster) sweep() {
	if !c.running {
		return
	}
	c.emit(c.outlier.Sweep(c.p.now()))
	c.recount()
	c.sweepT = c.p.en.After(c.cfg.Outlier.Interval, c.sweepFn)
}

// The connection pool, as the live h1.Pool (proxy/internal/h1/client.go) with the cluster's breakers as
// its Limits (proxy/cluster.go breakerLimits), which follow Envoy's ConnPoolImplBase
// (source/common/conn_pool/conn_pool_base.cc): an idle connection at once, else the pending queue
// (max_pending_requests) while connections are dialed for the waiting requests (max_connections; a
// host without any connection always gets one); a connection that becomes free goes to the oldest
// waiting request; a failed dial fails every waiting request.

// get takes a connection for the attempt f: at once (true) or later through f.connected or f.failed.
// overflow: the pending queue is full.
func (h *host) get(f *forward) (now, overflow bool) {
	c := h.c
	if h.syncCloses() || (h.idle > 0 && (h.up == nil || h.up.Refusing())) {
		// A refusing instance closed its listener and the connections it had accepted — now, or since
		// the pool last looked, then reopened: the live pool's liveness probe finds its idle
		// connections closed and dials anew (h1.Pool.get, alive).
		h.dropIdle()
	}
	if h.idle > 0 {
		h.idle--
		return true, false
	}
	if !c.rm.TryAcquirePending() {
		return false, true
	}
	c.st.rqPendingTotal++
	c.st.rqPendingActive++
	h.waiters = append(h.waiters, f)
	h.tryConnect()
	return false, false
}

// unwait takes f out of the pending queue (it gave up: a timeout).
func (h *host) unwait(f *forward) {
	for i, w := range h.waiters {
		if w == f {
			h.waiters = append(h.waiters[:i], h.waiters[i+1:]...)
			h.c.unpending()
			return
		}
	}
}

func (c *cluster) unpending() {
	c.rm.ReleasePending()
	c.st.rqPendingActive--
}

// tryConnect dials a connection for each waiting request beyond those being dialed, at most three at a
// time, as the breakers allow (the live Pool.tryConnect).
func (h *host) tryConnect() {
	c := h.c
	for range 3 {
		if len(h.waiters) <= h.connecting {
			return
		}
		within := true
		if !c.rm.TryAcquireConnection() {
			c.st.cxOverflow++
			if h.open > 0 {
				return
			}
			c.rm.AcquireConnection()
			within = false
		}
		h.open++
		h.connecting++
		h.dial()
		if !within {
			return
		}
	}
}

// dropIdle closes the host's idle connections.
func (h *host) dropIdle() {
	c := h.c
	for ; h.idle > 0; h.idle-- {
		h.open--
		c.st.cxActive--
		c.rm.ReleaseConnection()
	}
}

// syncCloses reports whether the instance has closed its connections since the pool last looked (an
// Upstream that says how often: Closes), and notes the count. Every connection open then was closed by
// it; those busy then ended with their exchanges, the idle ones are still counted here.
func (h *host) syncCloses() bool {
	cl, ok := h.up.(interface{ Closes() uint64 })
	if !ok {
		return false
	}
	n := cl.Closes()
	changed := n != h.closes
	h.closes = n
	return changed
}

// dial opens a connection: its SYN reaches the instance one hop later, which refuses it or accepts;
// the answer is back one more hop later (a round trip, 2×Hop).
func (h *host) dial() {
	c := h.c
	c.st.cxTotal++
	en := c.p.en
	en.After(c.p.hop, func() {
		if h.syncCloses() {
			h.dropIdle() // connections older than the instance's last close are gone
		}
		refused := h.up == nil || h.up.Refusing()
		back := c.p.hop
		if !refused {
			back += h.accept() // instance_tcp.go: the TCP front's count; mesh.mtls's handshake (mtls.go)
		}
		en.After(back, func() { h.dialed(refused) })
	})
}

func (h *host) dialed(refused bool) {
	c := h.c
	h.connecting--
	if refused {
		// Envoy purges the pending requests on a connect failure (onConnectionEvent): each one fails.
		c.st.cxConnectFail++
		c.rm.ReleaseConnection()
		h.open--
		waiting := h.waiters
		h.waiters = nil
		for _, w := range waiting {
			c.unpending()
			w.connectFailed()
		}
		return
	}
	c.st.cxHTTP1Total++
	c.st.cxActive++
	h.ready()
}

// ready gives a connection free for a request to the oldest waiting request, else keeps it idle.
func (h *host) ready() {
	if len(h.waiters) > 0 {
		w := h.waiters[0]
		copy(h.waiters, h.waiters[1:])
		h.waiters[len(h.waiters)-1] = nil
		h.waiters = h.waiters[:len(h.waiters)-1]
		h.c.unpending()
		w.connected()
		return
	}
	h.idle++
}

// closeConn closes a connection in use (reset, or ended by the instance); the pool dials for the
// requests still waiting.
func (h *host) closeConn() {
	c := h.c
	h.open--
	c.st.cxActive--
	c.rm.ReleaseConnection()
	if len(h.waiters) > 0 {
		h.tryConnect()
	}
}

// stats adds the cluster's counters to m under the live proxy's names.
func (c *cluster) stats(m map[string]uint64) {
	p := "cluster." + c.name + "."
	s := &c.st
	for _, kv := range []struct {
		name string
		v    uint64
	}{
		{"upstream_rq_total", s.rqTotal}, {"upstream_rq_completed", s.rqCompleted},
		{"upstream_rq_timeout", s.rqTimeout}, {"upstream_rq_per_try_timeout", s.rqPerTryTimeout},
		{"upstream_rq_rx_reset", s.rqRxReset}, {"upstream_rq_tx_reset", s.rqTxReset},
		{"retry_or_shadow_abandoned", s.retryOrShadowAbandoned},
		{"upstream_rq_retry", s.rqRetry}, {"upstream_rq_retry_success", s.rqRetrySuccess},
		{"upstream_rq_retry_overflow", s.rqRetryOverflow}, {"upstream_rq_retry_limit_exceeded", s.rqRetryLimitExceeded},
		{"upstream_rq_retry_backoff_exponential", s.rqRetryBackoffExponential},
		{"upstream_cx_total", s.cxTotal}, {"upstream_cx_connect_fail", s.cxConnectFail},
		{"upstream_cx_none_healthy", s.cxNoneHealthy}, {"lb_healthy_panic", s.lbHealthyPanic},
		{"upstream_cx_http1_total", s.cxHTTP1Total}, {"upstream_rq_pending_total", s.rqPendingTotal},
		{"upstream_rq_pending_overflow", s.rqPendingOverflow}, {"upstream_cx_overflow", s.cxOverflow},
		{"retry.upstream_rq_completed", s.retryCompleted},
		{"upstream_rq_active", uint64(max(s.rqActive, 0))}, {"upstream_rq_pending_active", uint64(max(s.rqPendingActive, 0))},
		{"upstream_cx_active", uint64(max(s.cxActive, 0))}, {"membership_total", uint64(len(c.hosts))},
	} {
		m[p+kv.name] = kv.v
	}
	m[p+"membership_healthy"] = uint64(c.healthyN)
	for i := range 4 {
		class := strconv.Itoa(i+2) + "xx"
		m[p+"upstream_rq_"+class] = s.rqClass[i]
		m[p+"retry.upstream_rq_"+class] = s.retryClass[i]
	}
	for code, n := range s.codes {
		m[p+"upstream_rq_"+strconv.Itoa(code)] = n
	}
	for code, n := range s.retryCodes {
		m[p+"retry.upstream_rq_"+strconv.Itoa(code)] = n
	}
	if c.outlier != nil {
		for name, v := range c.outlier.Stats().Map() {
			m[p+"outlier_detection."+name] = v
		}
	}
	if c.hc != nil {
		for name, v := range c.hc.Stats().Map() {
			m[p+"health_check."+name] = v
		}
	}
}

// response counts the response that goes to the client (upstream_rq_<code>, _<N>xx, _completed).
func (s *clusterCounters) response(code int) {
	s.status(code)
	s.rqCompleted++
}

func (s *clusterCounters) status(code int) {
	s.codes[code]++
	if i := code/100 - 2; i >= 0 && i < 4 {
		s.rqClass[i]++
	}
}

// retried counts a response the router retried, under "retry." only.
func (s *clusterCounters) retried(code int) {
	s.retryCompleted++
	s.retryCodes[code]++
	if i := code/100 - 2; i >= 0 && i < 4 {
		s.retryClass[i]++
	}
}

func canonical(name string) string { return http.CanonicalHeaderKey(name) }
func lower(name string) string     { return strings.ToLower(name) }
