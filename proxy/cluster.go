package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/policy"
	"github.com/meshproof/meshproof/proxy/stats"
)

// cluster is the runtime of one upstream cluster: its hosts, load balancer, circuit breakers, outlier
// detector, health checker, upstreams and stats.
type cluster struct {
	name    string
	cfg     config.Cluster
	tls     *tlsContext // the transport_socket's UpstreamTlsContext; nil: clear text
	hosts   []*host
	picker  policy.Picker
	rm      *policy.ResourceManager // the DEFAULT priority's breakers (routes use DEFAULT)
	outlier *policy.OutlierDetector // nil without outlier_detection
	hc      *policy.HealthChecker   // nil without health_checks
	// upstreams are the hosts' connection pools, by index; hcUpstreams the health checker's own
	// connections to them (nil without health_checks).
	upstreams, hcUpstreams []upstream
	st                     clusterStats
	events                 func(Event)
	clk                    clock.Clock
	seeds                  seeds
	// healthyFn and activeFn are c.healthy and the hosts' active requests as the pickers take them,
	// made once: a method value or closure built per pick would be allocated per request.
	healthyFn func(int) bool
	activeFn  func(int) int64
	// stayingFn and stayingHealthyFn are the same over the hosts a later endpoint update kept (see
	// eligible), noneFn no host.
	stayingFn, stayingHealthyFn, noneFn func(int) bool
	// latestSlowStart is when a host last entered slow start (clock nanoseconds; Envoy's
	// latest_host_added_time_): while it is within the window, picks scale weights (see slowStartPick).
	latestSlowStart atomic.Int64

	trafficSeen atomic.Bool
	// unpublish removes publishBreakers from the store's snapshot hooks when the cluster closes.
	unpublish func()
	// gens counts the configurations (generations) that hold the cluster: the last to let go of it
	// closes it (see generation.release).
	gens atomic.Int64
	// handedOver are the upstreams a cluster made from this one by an endpoint update took over: this
	// one's close leaves them open.
	handMu     sync.Mutex
	handedOver map[upstream]bool
	// borrowed are the upstreams of carriedFrom that this cluster, made by an endpoint update, uses
	// until commit makes them its own (see carry).
	borrowed    map[upstream]bool
	carriedFrom *cluster
	// prev is the cluster carriedFrom was, between commit and inUse.
	prev *cluster
	// pending are the hosts carry kept pending removal; commit flags them. reweigh are the new weights
	// of the hosts carry kept whose weight the update changed; commit sets them.
	pending map[*host]bool
	reweigh map[*host]uint32
	// next is the cluster an endpoint update made from this one, once in use (see commit): the attempts
	// of a request that began on this one pick from the newest (see newest). closed: close has begun.
	next     atomic.Pointer[cluster]
	closed   atomic.Bool
	stop     chan struct{}
	stopOnce sync.Once
	wg       sync.WaitGroup
}

// host is one endpoint of a cluster with its per-host counters (admin /clusters).
type host struct {
	addr string
	// weight is the endpoint's load_balancing_weight (at least 1); an endpoint update changes it in
	// place (see cluster.carry).
	weight atomic.Uint32

	cxTotal, cxConnectFail, rqTotal, rqSuccess, rqError, rqTimeout atomic.Uint64
	cxActive, rqActive                                             atomic.Int64
	// slowStartAt is when the host entered slow start (clock nanoseconds; 0: never): when the cluster
	// was made, or when active health checks last made it healthy (Envoy's lastHcPassTime).
	slowStartAt atomic.Int64
	// removed is set once an endpoint update that removed the host is in use (see cluster.commit):
	// requests that began on an older configuration, whose cluster still lists it, no longer pick it.
	removed atomic.Bool
	// pendingRemoval is Envoy's PENDING_DYNAMIC_REMOVAL: an endpoint update removed the host, but active
	// health checks found it healthy, so it stays until they fail it (see cluster.carry).
	pendingRemoval atomic.Bool
}

// newHost is the host of an endpoint.
func newHost(ep config.Endpoint) *host {
	h := &host{addr: ep.Address}
	h.weight.Store(max(ep.Weight, 1))
	return h
}

// clusterStats are the cluster's Envoy-named stats, resolved once.
type clusterStats struct {
	store  *stats.Store
	prefix string

	rqTotal, rqCompleted, rqTimeout, rqPerTryTimeout, rqRxReset, rqTxReset *stats.Counter
	rqRetry, rqRetrySuccess, rqRetryOverflow, rqRetryLimitExceeded         *stats.Counter
	// retryOrShadowAbandoned: a retry given up because the request body exceeded the buffer limit.
	retryOrShadowAbandoned                                                  *stats.Counter
	rqPerTryIdleTimeout                                                     *stats.Counter
	rqRetryBackoffExponential, cxTotal, cxConnectFail, cxConnectTimeout     *stats.Counter
	cxNoneHealthy, lbHealthyPanic, rqPendingTotal                           *stats.Counter
	rqClass                                                                 classCounters // upstream_rq_2xx … _5xx
	rqPendingOverflow, cxOverflow, rqRetryBackoffRateLimited                *stats.Counter
	rqActive, cxActive, membershipHealthy, membershipTotal, rqPendingActive *stats.Gauge
	rqTime, cxConnectMs                                                     *stats.Histogram
	// cxHTTP1Total is upstream_cx_http1_total: the HTTP/1.1 connections opened; h2 the HTTP/2
	// pools' stats (upstream_cx_http2_total and the codec's).
	cxHTTP1Total *stats.Counter
	h2           *upH2Stats

	// codes holds upstream_rq_<code> for the codes seen so far, by code: created on first use like any
	// stat, then found without building its name.
	codes [600]atomic.Pointer[stats.Counter]
	// retry holds the retry.upstream_rq_* stats: the responses the router retried.
	retry *retryCodeStats
}

// retryCodeStats are the stats Envoy charges for a response its router retries, under the cluster's
// "retry." prefix (Router::Filter::onUpstreamHeaders, source/common/router/router.cc, through
// CodeStatsImpl::chargeBasicResponseStat, source/common/http/codes.cc): retry.upstream_rq_completed,
// retry.upstream_rq_<N>xx and retry.upstream_rq_<code>, in place of the unprefixed ones.
type retryCodeStats struct {
	completed *stats.Counter
	class     classCounters
	codes     [600]atomic.Pointer[stats.Counter]
}

func newClusterStats(store *stats.Store, name string) clusterStats {
	p := "cluster." + name + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	g := func(n string) *stats.Gauge { return store.Gauge(p + n) }
	return clusterStats{
		store: store, prefix: p,
		rqTotal: c("upstream_rq_total"), rqCompleted: c("upstream_rq_completed"),
		rqTimeout: c("upstream_rq_timeout"), rqPerTryTimeout: c("upstream_rq_per_try_timeout"),
		rqRxReset: c("upstream_rq_rx_reset"), rqTxReset: c("upstream_rq_tx_reset"),
		rqRetry: c("upstream_rq_retry"), rqRetrySuccess: c("upstream_rq_retry_success"),
		rqRetryOverflow: c("upstream_rq_retry_overflow"), rqRetryLimitExceeded: c("upstream_rq_retry_limit_exceeded"),
		retryOrShadowAbandoned:    c("retry_or_shadow_abandoned"),
		rqPerTryIdleTimeout:       c("upstream_rq_per_try_idle_timeout"),
		rqRetryBackoffExponential: c("upstream_rq_retry_backoff_exponential"),
		rqRetryBackoffRateLimited: c("upstream_rq_retry_backoff_ratelimited"),
		cxTotal:                   c("upstream_cx_total"), cxConnectFail: c("upstream_cx_connect_fail"),
		cxConnectTimeout: c("upstream_cx_connect_timeout"), cxNoneHealthy: c("upstream_cx_none_healthy"),
		rqClass:        newClassCounters(c, "upstream_rq"),
		lbHealthyPanic: c("lb_healthy_panic"), rqPendingTotal: c("upstream_rq_pending_total"),
		rqPendingOverflow: c("upstream_rq_pending_overflow"), cxOverflow: c("upstream_cx_overflow"),
		rqActive: g("upstream_rq_active"), cxActive: g("upstream_cx_active"), rqPendingActive: g("upstream_rq_pending_active"),
		membershipHealthy: g("membership_healthy"), membershipTotal: g("membership_total"),
		rqTime: store.Histogram(p + "upstream_rq_time"), cxConnectMs: store.Histogram(p + "upstream_cx_connect_ms"),
		cxHTTP1Total: c("upstream_cx_http1_total"), h2: newUpH2Stats(store, p),
		retry: &retryCodeStats{completed: c("retry.upstream_rq_completed"), class: newClassCounters(c, "retry.upstream_rq")},
	}
}

// response counts the response of an attempt that goes to the client: upstream_rq_completed,
// upstream_rq_<code> and upstream_rq_<N>xx (Envoy's Filter::onUpstreamHeaders → chargeUpstreamCode).
func (s *clusterStats) response(code int) {
	s.status(code)
	s.rqCompleted.Inc()
}

// retried counts the response of an attempt the router retries, under "retry." only.
func (s *clusterStats) retried(code int) {
	r := s.retry
	r.completed.Inc()
	r.class.inc(code)
	if code < 0 || code >= len(r.codes) {
		s.store.Counter(s.prefix + "retry.upstream_rq_" + strconv.Itoa(code)).Inc()
		return
	}
	c := r.codes[code].Load()
	if c == nil {
		c = s.store.Counter(s.prefix + "retry.upstream_rq_" + strconv.Itoa(code))
		r.codes[code].Store(c)
	}
	c.Inc()
}

// status counts a response code the Envoy way: upstream_rq_<code> and upstream_rq_<N>xx.
func (s *clusterStats) status(code int) {
	s.codeCounter(code).Inc()
	s.rqClass.inc(code)
}

// codeCounter is the upstream_rq_<code> counter.
func (s *clusterStats) codeCounter(code int) *stats.Counter {
	if code < 0 || code >= len(s.codes) {
		return s.store.Counter(s.prefix + "upstream_rq_" + strconv.Itoa(code))
	}
	if c := s.codes[code].Load(); c != nil {
		return c
	}
	c := s.store.Counter(s.prefix + "upstream_rq_" + strconv.Itoa(code)) // the store returns one counter per name
	s.codes[code].Store(c)
	return c
}

func newCluster(cfg config.Cluster, store *stats.Store, events func(Event), clk clock.Clock, sd seeds) (*cluster, error) {
	c := &cluster{name: cfg.Name, cfg: cfg, st: newClusterStats(store, cfg.Name), events: events, clk: clk, seeds: sd,
		stop: make(chan struct{})}
	c.initFns()
	weights := make([]uint32, len(cfg.Endpoints))
	keys := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		c.hosts = append(c.hosts, newHost(ep))
		weights[i], keys[i] = ep.Weight, ep.Address
	}
	var err error
	if c.picker, err = newPicker(cfg, weights, keys); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if c.rm, err = policy.NewResourceManager(cfg.Breakers.Default); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if cfg.Outlier != nil {
		// The detector draws under its own lock: a plain stream of the cluster's.
		if c.outlier, err = policy.NewOutlierDetector(*cfg.Outlier, len(c.hosts), sd.stream(cfg.Name, saltOutlier)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	if len(cfg.HealthChecks) > 0 {
		if c.hc, err = policy.NewHealthChecker(cfg.HealthChecks[0], len(c.hosts)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	if ss := cfg.SlowStart; ss != nil && ss.Enabled() {
		// The hosts join the cluster now: each healthy one enters slow start (Envoy's
		// EdfLoadBalancerBase::recalculateHostsInSlowStart, load_balancer_impl.cc, at initialize); one
		// that active health checks must pass first enters it when they do (see emitHealth).
		for i := range c.hosts {
			if c.healthy(i) {
				c.enterSlowStart(i, clk.Now())
			}
		}
	}
	c.st.membershipTotal.Set(int64(len(c.hosts)))
	c.publishHealth()
	c.unpublish = store.OnSnapshot(c.publishBreakers)
	if cfg.TLS != nil {
		tlsCfg := withProtocolALPN(cfg.TLS, cfg.HTTP.Protocol)
		if c.tls, err = newTLSContext(tlsCfg, false, clk, newSSLStats(store, "cluster."+cfg.Name+".")); err != nil {
			c.unpublish()
			return nil, fmt.Errorf("cluster %s: transport_socket: %w", cfg.Name, err)
		}
	}
	dial := c.dialer()
	for _, h := range c.hosts {
		c.upstreams = append(c.upstreams, c.newUpstream(h.addr, dial))
	}
	if c.hc != nil {
		hcDial := healthCheckDialer(cfg.ConnectTimeout, c.tls)
		for _, h := range c.hosts {
			c.hcUpstreams = append(c.hcUpstreams, c.newHealthCheckUpstream(h.addr, hcDial))
		}
	}
	return c, nil
}

// newUpstream is the connection pool to one host for the cluster's protocol (its HttpProtocolOptions):
// HTTP/1.1, HTTP/2, or, with auto_config, the one ALPN negotiates. Health checks keep their own
// HTTP/1.1 connections whatever the protocol, as Envoy's HTTP health checker does by default
// (HttpHealthCheck.codec_client_type HTTP1).
func (c *cluster) newUpstream(addr string, dial func(ctx context.Context, addr string) (net.Conn, error)) upstream {
	opts := c.cfg.HTTP
	h2 := func(dial func(ctx context.Context, addr string) (net.Conn, error)) upstream {
		return newH2Upstream(addr, dial, breakerLimits{c}, opts, c.tls != nil, c.st.h2)
	}
	h1 := func(dial func(ctx context.Context, addr string) (net.Conn, error)) upstream {
		counted := func(ctx context.Context, addr string) (net.Conn, error) {
			nc, err := dial(ctx, addr)
			if err == nil {
				c.st.cxHTTP1Total.Inc()
			}
			return nc, err
		}
		u := newH1Upstream(addr, forRequests, counted, breakerLimits{c})
		if p, ok := u.(*h1.Pool); ok {
			switch {
			case opts.NoIdleTimeout:
				p.IdleTimeout = 1<<63 - 1
			case opts.IdleTimeout > 0:
				p.IdleTimeout = opts.IdleTimeout
			}
		}
		return u
	}
	switch opts.Protocol {
	case config.UpstreamHTTP2:
		return h2(dial)
	case config.UpstreamAuto:
		return &autoUpstream{dial: dial, addr: addr, mk: func(proto string, dial func(ctx context.Context, addr string) (net.Conn, error)) upstream {
			if proto == "h2" {
				return h2(dial)
			}
			return h1(dial)
		}}
	}
	return h1(dial)
}

// newHealthCheckUpstream is the health checker's own connection to a host: HTTP/1.1, or HTTP/2 with
// codec_client_type HTTP2 (h2c, or h2 over the cluster's TLS), apart from the pool and its stats.
func (c *cluster) newHealthCheckUpstream(addr string, dial func(ctx context.Context, addr string) (net.Conn, error)) upstream {
	if c.cfg.HealthCheckHTTP2 {
		return newH2Upstream(addr, dial, nil, config.UpstreamHTTP{HTTP2: config.DefaultUpstreamHTTP2Options()}, c.tls != nil, nil)
	}
	return newH1Upstream(addr, forHealthChecks, dial, nil)
}

// withProtocolALPN is a cluster's TLS context with the ALPN its protocol offers when alpn_protocols is
// empty: "h2" for HTTP/2, "h2" then "http/1.1" for auto_config — Envoy's ALPN fallback for the pool's
// protocol (the transport socket options' application protocol fallback, set by the cluster manager for
// each connection pool). HTTP/1.1 offers none, as before.
func withProtocolALPN(t *config.TLS, p config.UpstreamProtocol) *config.TLS {
	if len(t.ALPN) > 0 || p == config.UpstreamHTTP1 {
		return t
	}
	out := *t
	out.ALPN = []string{"h2"}
	if p == config.UpstreamAuto {
		out.ALPN = append(out.ALPN, "http/1.1")
	}
	return &out
}

// newPicker builds the cluster's load balancer.
func newPicker(cfg config.Cluster, weights []uint32, keys []string) (policy.Picker, error) {
	switch cfg.LbPolicy {
	case "LEAST_REQUEST":
		return policy.NewLeastRequest(weights, cfg.LeastRequest)
	case "RANDOM":
		return policy.RandomPicker{Hosts: len(weights)}, nil
	case "RING_HASH":
		return policy.NewRingHash(keys, weights, cfg.RingHash)
	case "MAGLEV":
		return policy.NewMaglev(keys, weights, cfg.MaglevTableSize)
	}
	return policy.NewRoundRobinPicker(policy.NewRoundRobin(weights)), nil
}

// dialer opens upstream connections for the hosts' pools, keeping the connection stats.
func (c *cluster) dialer() func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: c.cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		h := c.hostByAddr(addr)
		c.st.cxTotal.Inc()
		if h != nil {
			h.cxTotal.Add(1)
		}
		began := c.clk.Now()
		dialed := time.Now() // socket deadlines are on the real clock: connect_timeout bounds dial and handshake
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil {
			c.st.cxConnectFail.Inc()
			if h != nil {
				h.cxConnectFail.Add(1)
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				c.st.cxConnectTimeout.Inc()
			}
			return nil, &connectError{err: err}
		}
		if c.tls != nil {
			// Envoy's upstream TLS failure is a connection failure (UF), not a reset after connect.
			tc, err := c.tls.clientHandshake(ctx, conn, dialed.Add(c.cfg.ConnectTimeout))
			if err != nil {
				conn.Close()
				c.st.cxConnectFail.Inc()
				if h != nil {
					h.cxConnectFail.Add(1)
				}
				var te *connectTimeoutError
				if errors.As(err, &te) {
					c.st.cxConnectTimeout.Inc() // the connect timer covers the handshake
				}
				return nil, &connectError{err: err}
			}
			conn = tc
		}
		c.st.cxConnectMs.Record(c.clk.Since(began))
		c.st.cxActive.Inc()
		if h != nil {
			h.cxActive.Add(1)
		}
		return &countedConn{Conn: conn, onClose: func() {
			c.st.cxActive.Dec()
			if h != nil {
				h.cxActive.Add(-1)
			}
		}}, nil
	}
}

func (c *cluster) hostByAddr(addr string) *host {
	for _, h := range c.hosts {
		if h.addr == addr {
			return h
		}
	}
	return nil
}

// initFns makes the functions the pickers take (once: a method value or closure built per pick would
// be allocated per request).
func (c *cluster) initFns() {
	c.healthyFn = c.healthy
	c.activeFn = func(i int) int64 { return c.hosts[i].rqActive.Load() }
	c.stayingFn = func(i int) bool { return !c.hosts[i].removed.Load() }
	c.stayingHealthyFn = func(i int) bool { return !c.hosts[i].removed.Load() && c.healthy(i) }
	c.noneFn = func(int) bool { return false }
}

// eligible is the predicate of the hosts an attempt may pick, and whether the cluster is in panic, as
// policy.PanicFilter computes them, over the hosts still in the cluster's host set. A request holds the
// configuration it began on, whose cluster may list hosts that a later endpoint update removed; Envoy
// updates a cluster's host set in place (EdsClusterImpl::onConfigUpdate → updateHosts, the thread-local
// load balancers rebuilt in ClusterManagerImpl::postThreadLocalClusterUpdate), so that no attempt
// begun after the update, a retry of an earlier request included, goes to a removed host: neither does
// ours, and the panic threshold counts the hosts that stay.
func (c *cluster) eligible() (func(int) bool, bool) {
	total, healthy := 0, 0
	for i, h := range c.hosts {
		if h.removed.Load() {
			continue
		}
		total++
		if c.healthy(i) {
			healthy++
		}
	}
	panicMode := policy.PanicMode(healthy, total, c.cfg.HealthyPanicThreshold)
	switch {
	case total == len(c.hosts) && panicMode:
		return nil, true
	case total == len(c.hosts):
		return c.healthyFn, false
	case total == 0:
		return c.noneFn, false
	case panicMode:
		return c.stayingFn, true
	}
	return c.stayingHealthyFn, false
}

// healthy says whether a host may take traffic: not ejected by outlier detection and not failing
// active health checks.
func (c *cluster) healthy(i int) bool {
	return (c.outlier == nil || !c.outlier.Ejected(i)) && (c.hc == nil || c.hc.Healthy(i))
}

// newest is the cluster an attempt of a request that began on c picks from: c, or the newest of the
// clusters later endpoint updates made from it that is not closing. Envoy updates a cluster's host set in
// place (EdsClusterImpl::onConfigUpdate → BaseDynamicClusterImpl::updateDynamicHostList, then
// ClusterManagerImpl::postThreadLocalClusterUpdate rebuilds the workers' load balancers), and the
// router picks each attempt's host from the thread-local cluster's current load balancer
// (Filter::doRetry → continueDecodeHeaders → createConnPool): a retry may go to a host an update
// added after the request began, never to one it removed.
func (c *cluster) newest() *cluster {
	for {
		n := c.next.Load()
		if n == nil || n.closed.Load() {
			return c
		}
		c = n
	}
}

// pick chooses the host for an attempt, honouring the panic threshold and the retry host predicate.
// It returns -1 when no host is eligible ("no healthy upstream"). rng is the request's stream. tried
// are the hosts the request's earlier attempts went to, whichever cluster they picked from (an
// endpoint update may have made c since).
func (c *cluster) pick(hash uint64, tried map[*host]bool, rp *config.RetryPolicy, rng policy.Rand) int {
	eligible, panicMode := c.eligible()
	if panicMode {
		c.st.lbHealthyPanic.Inc()
	}
	pc := policy.PickContext{
		Eligible:  eligible,
		Active:    c.activeFn,
		Hash:      hash,
		Rand:      rng,
		SlowStart: c.slowStartPick(),
	}
	if rp != nil && rp.PreviousHosts && len(tried) > 0 {
		byIndex := make(map[int]bool, len(tried)) // a retry's pick only: the hosts by their index in c
		for i, h := range c.hosts {
			if tried[h] {
				byIndex[i] = true
			}
		}
		return policy.PickWithRetryPredicate(c.picker, pc, byIndex, int(rp.HostSelectionMaxAttempts))
	}
	return c.picker.Pick(pc)
}

// enterSlowStart starts host i's slow start window at now.
func (c *cluster) enterSlowStart(i int, now time.Time) {
	t := now.UnixNano()
	c.hosts[i].slowStartAt.Store(t)
	for {
		cur := c.latestSlowStart.Load()
		if cur >= t || c.latestSlowStart.CompareAndSwap(cur, t) {
			return
		}
	}
}

// slowStartPick is the pick's slow start factor per host while a host may be in its window, nil
// otherwise (Envoy's noHostsAreInSlowStart): a healthy host's weight is scaled by
// SlowStartConfig.Factor of the time since it entered slow start (applySlowStartFactor,
// source/common/upstream/load_balancer_impl.cc); an unhealthy one's is not.
func (c *cluster) slowStartPick() func(int) float64 {
	ss := c.cfg.SlowStart
	if ss == nil || !ss.Enabled() {
		return nil
	}
	now := c.clk.Now().UnixNano()
	if time.Duration(now-c.latestSlowStart.Load()).Milliseconds() > ss.Window.Milliseconds() {
		return nil
	}
	return func(i int) float64 {
		at := c.hosts[i].slowStartAt.Load()
		if at == 0 || !c.healthy(i) {
			return 1
		}
		return ss.Factor(time.Duration(now - at))
	}
}

// breakerLimits are the cluster's circuit breakers as its hosts' pools ask them (h1.Limits), with
// the stats Envoy's pools keep (ConnPoolImplBase, source/common/conn_pool/conn_pool_base.cc: the
// pending queue in newStreamImpl and PendingStream, the connections in tryCreateNewConnection and
// ActiveClient).
type breakerLimits struct{ c *cluster }

var _ h1.Limits = breakerLimits{}

// Pending takes a max_pending_requests slot: upstream_rq_pending_total and upstream_rq_pending_active.
// A refusal is counted by the router (upstream_rq_pending_overflow).
func (l breakerLimits) Pending() bool {
	if !l.c.rm.TryAcquirePending() {
		return false
	}
	l.c.st.rqPendingTotal.Inc()
	l.c.st.rqPendingActive.Inc()
	return true
}

func (l breakerLimits) Unpending() {
	l.c.rm.ReleasePending()
	l.c.st.rqPendingActive.Dec()
}

// TryConnection takes a max_connections slot; at the limit it counts upstream_cx_overflow.
func (l breakerLimits) TryConnection() bool {
	if l.c.rm.TryAcquireConnection() {
		return true
	}
	l.c.st.cxOverflow.Inc()
	return false
}

func (l breakerLimits) ForceConnection()  { l.c.rm.AcquireConnection() }
func (l breakerLimits) ConnectionClosed() { l.c.rm.ReleaseConnection() }

// recordOutcome feeds an attempt's outcome to outlier detection (never a local overflow) and returns
// the decisions it caused (an inline ejection), which it has also emitted.
func (c *cluster) recordOutcome(i int, o policy.Outcome) []policy.Event {
	if c.outlier == nil {
		return nil
	}
	if r, ok := policy.OutlierResultFor(o); ok {
		evs := c.outlier.Record(c.clk.Now(), i, r)
		c.emit(evs)
		return evs
	}
	return nil
}

// emit publishes policy events: they update the health gauges and go to the proxy's event sink.
func (c *cluster) emit(evs []policy.Event) {
	if len(evs) == 0 {
		return
	}
	c.publishHealth()
	if c.events == nil {
		return
	}
	for _, e := range evs {
		c.events(Event{Time: e.Time, Cluster: c.name, Host: c.hosts[e.Host].addr, Kind: e.Kind, Reason: e.Reason})
	}
}

// retryScheduled reports a scheduled retry of a request that host i answered with o.
func (c *cluster) retryScheduled(i int, o policy.Outcome) {
	if c.events == nil || i < 0 {
		return
	}
	c.events(Event{Time: c.clk.Now(), Cluster: c.name, Host: c.hosts[i].addr, Kind: eventRetry, Reason: OutcomeReason(o)})
}

// publishHealth refreshes membership_healthy and the outlier / health-check stats.
func (c *cluster) publishHealth() {
	n := 0
	for i, h := range c.hosts {
		if !h.removed.Load() && c.healthy(i) {
			n++
		}
	}
	c.st.membershipHealthy.Set(int64(n))
	if c.outlier != nil {
		s := c.outlier.Stats()
		p := c.st.prefix + "outlier_detection."
		c.st.store.Gauge(p + "ejections_active").Set(int64(s.EjectionsActive))
		for name, v := range s.Map() {
			if name != "ejections_active" {
				c.st.store.Counter(p + name).Set(v)
			}
		}
	}
	if c.hc != nil {
		for name, v := range c.hc.Stats().Map() {
			if name == "healthy" {
				c.st.store.Gauge(c.st.prefix + "health_check.healthy").Set(int64(v))
				continue
			}
			c.st.store.Counter(c.st.prefix + "health_check." + name).Set(v)
		}
	}
}

// publishBreakers sets the circuit_breakers.default.* gauges from the breakers' state: the *_open flags,
// and the remaining_* values when track_remaining is set.
func (c *cluster) publishBreakers() {
	snap := c.rm.Snapshot()
	p := c.st.prefix + "circuit_breakers.default."
	flag := func(b bool) int64 {
		if b {
			return 1
		}
		return 0
	}
	g := c.st.store.Gauge
	g(p + "cx_open").Set(flag(snap.CxOpen))
	g(p + "rq_pending_open").Set(flag(snap.RqPendingOpen))
	g(p + "rq_open").Set(flag(snap.RqOpen))
	g(p + "rq_retry_open").Set(flag(snap.RqRetryOpen))
	if c.cfg.Breakers.TrackRemaining {
		g(p + "remaining_cx").Set(int64(snap.RemainingCx))
		g(p + "remaining_pending").Set(int64(snap.RemainingPending))
		g(p + "remaining_rq").Set(int64(snap.RemainingRq))
		g(p + "remaining_retries").Set(int64(snap.RemainingRetries))
	}
}

// start runs the cluster's background work: the outlier detector's interval sweep and the active
// health checks.
func (c *cluster) start() {
	if c.outlier != nil {
		c.wg.Add(1)
		go c.sweepLoop(c.clk.NewTicker(c.cfg.Outlier.Interval)) // armed now: the first sweep is one interval from start
	}
	if c.hc != nil {
		for i, h := range c.hosts {
			c.wg.Add(1)
			go c.healthCheckLoop(i, c.seeds.stream(c.name+"/"+h.addr, saltHealth))
		}
	}
}

func (c *cluster) sweepLoop(t clock.Ticker) {
	defer c.wg.Done()
	defer t.Stop()
	for {
		select {
		case <-t.C():
			// The sweep's time is the clock's as it runs (a tick's own time may be stale when ticks
			// were dropped): a host's ejection time is measured to the sweep that ends it.
			c.emit(c.outlier.Sweep(c.clk.Now()))
			c.publishHealth()
		case <-c.stop:
			return
		}
	}
}

// healthCheckLoop actively checks one host with HTTP GETs on the configured path, drawing its
// interval jitter from rng (the host's own stream).
func (c *cluster) healthCheckLoop(i int, rng policy.Rand) {
	defer c.wg.Done()
	cfg := c.hc.Config()
	wait := c.hc.FirstDelay(rng)
	for {
		if c.hosts[i].removed.Load() {
			return // a host pending removal that failed: no longer checked (Envoy deletes its session)
		}
		t := c.clk.NewTimer(wait)
		select {
		case <-t.C():
		case <-c.stop:
			t.Stop()
			return
		}
		c.emitHealth(i, c.check(i, cfg))
		wait = c.hc.NextInterval(i, c.trafficSeen.Load(), rng)
	}
}

// errHealthCheckTimeout ends a health check that outlived its timeout.
var errHealthCheckTimeout = errors.New("health check timeout")

// check sends one health check through the host's health-check upstream: a GET of the path with the
// configured host (default: the cluster's name) and Envoy's user agent, bounded by the check's
// timeout on the proxy's clock, body included.
func (c *cluster) check(i int, cfg policy.HealthCheckConfig) policy.HealthCheckResult {
	host := cfg.Host
	if host == "" {
		host = c.name
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if cfg.Timeout > 0 {
		t := c.clk.AfterFunc(cfg.Timeout, func() { cancel(errHealthCheckTimeout) })
		defer t.Stop()
	}
	req := &h1.Request{Method: http.MethodGet, URI: cfg.Path, Host: host, Header: healthCheckHeader}
	resp, err := c.hcUpstreams[i].RoundTrip(ctx, req)
	if err == nil { // the status decides: the body is drained (so the connection is kept) and ignored
		_, _ = io.CopyN(io.Discard, resp.Body, 64<<10)
		resp.Body.Close()
	}
	var ne net.Error
	switch {
	case context.Cause(ctx) == errHealthCheckTimeout || errors.As(err, &ne) && ne.Timeout():
		return policy.HealthCheckResult{Kind: policy.CheckTimeout}
	case err != nil:
		return policy.HealthCheckResult{Kind: policy.CheckNetworkFailure}
	}
	return policy.HealthCheckResult{Kind: policy.CheckResponse, Status: resp.StatusCode,
		ImmediateFail: headerValue(resp.Header, hdrImmediateHealthCheckFail) != ""}
}

// healthCheckHeader is every health check's header (Envoy's user agent).
var healthCheckHeader = http.Header{"User-Agent": {"Envoy/HC"}}

// emitHealth applies a health-check result; a passing check may un-eject an ejected host early.
func (c *cluster) emitHealth(i int, r policy.HealthCheckResult) {
	now := c.clk.Now()
	wasHealthy := c.hc.Healthy(i)
	evs := c.hc.Result(now, i, r)
	if ss := c.cfg.SlowStart; ss != nil && ss.Enabled() && !wasHealthy && c.hc.Healthy(i) {
		// The check that made the host healthy sets its slow start's start (Envoy's
		// HealthCheckerImplBase::ActiveHealthCheckSession::handleSuccess, setLastHcPassTime).
		c.enterSlowStart(i, now)
	}
	if c.outlier != nil && r.Kind == policy.CheckResponse && c.hc.Healthy(i) && c.cfg.Outlier.SuccessfulActiveHealthCheckUnejectHost {
		evs = append(evs, c.outlier.UnejectHost(now, i)...)
	}
	if wasHealthy && !c.hc.Healthy(i) {
		c.failedPending(i)
	}
	c.emit(evs)
	c.publishHealth()
}

// failedPending removes host i from the host set when it is pending removal, on a health check that
// made it unhealthy. Envoy does so on the health checker's callback when a check changed the host's
// health (ClusterImplBase::setHealthChecker: HealthTransition::Changed → reloadHealthyHosts, in
// source/common/upstream/upstream_impl.cc), in EdsClusterImpl::reloadHealthyHostsHelper
// (source/extensions/clusters/eds/eds.cc, source/common/upstream/eds.cc before): a host flagged both
// FAILED_ACTIVE_HC and PENDING_DYNAMIC_REMOVAL leaves. Its connection pool drains (idle connections
// close now, the others once no request waits for them; the requests queued for a connection, and one
// that picked the host just before, are still served: Envoy drains a removed host's pools with
// DrainBehavior::DrainAndDelete, ClusterManagerImpl::drainOrCloseConnPools). Its health checks end
// (the loop returns), and so does their connection.
func (c *cluster) failedPending(i int) {
	h := c.hosts[i]
	if !h.pendingRemoval.Load() || !h.removed.CompareAndSwap(false, true) {
		return
	}
	c.upstreams[i].Drain()
	c.hcUpstreams[i].Close()
	c.st.membershipTotal.Dec()
	c.st.store.Counter(c.st.prefix + "membership_change").Inc()
}

// immediateFail handles x-envoy-immediate-health-check-fail on a normal response: a host pending
// removal that it makes unhealthy leaves (Envoy's checker runs its callbacks for it as for a check,
// HealthCheckerImplBase::ActiveHealthCheckSession::setUnhealthy).
func (c *cluster) immediateFail(i int) {
	if c.hc == nil {
		return
	}
	wasHealthy := c.hc.Healthy(i)
	c.emit(c.hc.ImmediateFail(c.clk.Now(), i))
	if wasHealthy && !c.hc.Healthy(i) {
		c.failedPending(i)
		c.publishHealth()
	}
}

func (c *cluster) close() {
	first := false
	c.stopOnce.Do(func() {
		first = true
		c.closed.Store(true)
		close(c.stop)
		if c.unpublish != nil {
			c.unpublish()
		}
	})
	if !first {
		return // closed already (a generation let go of it after Shutdown closed it)
	}
	c.wg.Wait()
	c.handMu.Lock()
	defer c.handMu.Unlock()
	for _, u := range c.upstreams {
		if !c.handedOver[u] && !c.borrowed[u] {
			u.Close()
		}
	}
	for _, u := range c.hcUpstreams {
		if !c.handedOver[u] && !c.borrowed[u] {
			u.Close()
		}
	}
}

// healthFlags are the host's flags as /clusters prints them, in Envoy's order (the HealthFlag enum, as
// HostUtility::healthFlagsToString walks it, source/common/upstream/host_utility.cc).
func (c *cluster) healthFlags(i int) string {
	var flags string
	if c.hc != nil && !c.hc.Healthy(i) {
		flags += "/failed_active_hc"
	}
	if c.outlier != nil && c.outlier.Ejected(i) {
		flags += "/failed_outlier_check"
	}
	if c.hosts[i].pendingRemoval.Load() {
		flags += "/pending_dynamic_removal"
	}
	if flags == "" {
		return "healthy"
	}
	return flags
}

// connectError marks a failure to establish the upstream TCP connection.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// countedConn calls onClose once when the connection closes.
type countedConn struct {
	net.Conn
	closed  atomic.Bool
	onClose func()
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.onClose()
	}
	return c.Conn.Close()
}

// NetConn is the connection counted (the pool's liveness probe looks at its socket).
func (c *countedConn) NetConn() net.Conn { return c.Conn }
