package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/policy"
	"github.com/meshproof/meshproof/proxy/stats"
)

// maxRequestBody is the most a downstream request body may hold: bodies are buffered so that they can be
// replayed on retries (Envoy buffers up to its per-connection buffer limit for the same reason).
const maxRequestBody = 16 << 20

var (
	errPerTryTimeout = errors.New("per-try timeout")
	errRouteTimeout  = errors.New("route timeout")
)

// router is one listener's HTTP connection manager with its router filter: virtual host and route
// matching, then the upstream attempts with retries, back-off and timeouts.
type router struct {
	routes   config.RouteConfig
	clusters map[string]*cluster
	// requestTimeout is the HCM request_timeout: how long the whole downstream request may take to arrive.
	requestTimeout time.Duration
	st             hcmStats
	clk            clock.Clock
	// realClock: clk is clock.Real, so the route deadline can bound an exchange as a socket deadline.
	realClock bool
	seeds     seeds
	bufs      sync.Pool
	forwards  sync.Pool // of *forward: one per request in flight, reused
	onRequest func(id string, attempts int)
	// tracer and prop are set on a traced listener (see tracing.go); nil: no spans, no trace headers.
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

var _ http.Handler = (*router)(nil)

type hcmStats struct {
	rqTotal, noRoute, rqTimeout, rq2xx, rq3xx, rq4xx, rq5xx, cxTotal *stats.Counter
	// cxProtocolError: a downstream connection ended by a protocol error (a request head or body
	// that cannot be read); cxDestroyRemoteActiveRq: one the client closed with a request in progress;
	// cxIdleTimeout: one closed by the HCM idle_timeout.
	cxProtocolError, cxDestroyRemoteActiveRq, cxIdleTimeout *stats.Counter
	rqActive, cxActive                                      *stats.Gauge
	rqTime                                                  *stats.Histogram
}

func newHCMStats(store *stats.Store, prefix string) hcmStats {
	p := "http." + prefix + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	return hcmStats{
		rqTotal: c("downstream_rq_total"), noRoute: c("no_route"), rqTimeout: c("downstream_rq_timeout"),
		rq2xx: c("downstream_rq_2xx"), rq3xx: c("downstream_rq_3xx"), rq4xx: c("downstream_rq_4xx"), rq5xx: c("downstream_rq_5xx"),
		cxTotal: c("downstream_cx_total"), rqActive: store.Gauge(p + "downstream_rq_active"), cxActive: store.Gauge(p + "downstream_cx_active"),
		cxProtocolError: c("downstream_cx_protocol_error"), cxDestroyRemoteActiveRq: c("downstream_cx_destroy_remote_active_rq"),
		cxIdleTimeout: c("downstream_cx_idle_timeout"),
		rqTime:        store.Histogram(p + "downstream_rq_time"),
	}
}

func (s *hcmStats) status(code int) {
	switch code / 100 {
	case 2:
		s.rq2xx.Inc()
	case 3:
		s.rq3xx.Inc()
	case 4:
		s.rq4xx.Inc()
	case 5:
		s.rq5xx.Inc()
	}
}

func newRouter(l config.Listener, clusters map[string]*cluster, store *stats.Store, clk clock.Clock, sd seeds) *router {
	_, real := clk.(clock.Real)
	return &router{
		routes: l.Routes, clusters: clusters, requestTimeout: l.RequestTimeout, st: newHCMStats(store, l.StatPrefix),
		clk: clk, realClock: real, seeds: sd,
		bufs:     sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }},
		forwards: sync.Pool{New: func() any { return &forward{extra: make(http.Header, 8)} }},
	}
}

// match finds the virtual host for the request's authority and the first route that matches its path.
func (rt *router) match(r *http.Request) (*config.VirtualHost, *config.Route) {
	vh := matchVirtualHost(rt.routes.VirtualHosts, r.Host)
	if vh == nil {
		return nil, nil
	}
	path := r.URL.Path
	for i := range vh.Routes {
		m := vh.Routes[i].Match
		if m.IsPath && path == m.Path || !m.IsPath && strings.HasPrefix(path, m.Prefix) {
			return vh, &vh.Routes[i]
		}
	}
	return vh, nil
}

// matchVirtualHost follows Envoy's order: exact domain, then the longest suffix wildcard ("*.example.com"),
// then the longest prefix wildcard ("example.*"), then "*". The port is ignored unless a domain names it.
func matchVirtualHost(vhosts []config.VirtualHost, authority string) *config.VirtualHost {
	host := strings.ToLower(authority)
	hostNoPort := host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		hostNoPort = host[:i]
	}
	var best *config.VirtualHost
	bestRank, bestLen := 0, -1
	for i := range vhosts {
		for _, d := range vhosts[i].Domains {
			d = strings.ToLower(d)
			rank, n := 0, 0
			switch {
			case d == host || d == hostNoPort:
				rank, n = 4, len(d)
			case strings.HasPrefix(d, "*") && d != "*" && (strings.HasSuffix(hostNoPort, d[1:]) || strings.HasSuffix(host, d[1:])):
				rank, n = 3, len(d)
			case strings.HasSuffix(d, "*") && d != "*" && strings.HasPrefix(host, d[:len(d)-1]):
				rank, n = 2, len(d)
			case d == "*":
				rank, n = 1, 0
			}
			if rank > bestRank || rank == bestRank && rank > 0 && n > bestLen {
				best, bestRank, bestLen = &vhosts[i], rank, n
			}
		}
	}
	return best
}

func (rt *router) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := rt.clk.Now()
	rt.st.rqTotal.Inc()
	rt.st.rqActive.Inc()
	defer func() {
		rt.st.rqActive.Dec()
		rt.st.rqTime.Record(rt.clk.Since(began))
	}()

	vh, route := rt.match(r)
	if route == nil {
		rt.st.noRoute.Inc()
		rt.localReply(w, nil, http.StatusNotFound, "")
		return
	}
	cl := rt.clusters[route.Action.Cluster] // config validation guarantees it exists
	var body []byte
	if r.Body != http.NoBody { // net/http gives NoBody to a request without one: nothing to read or time
		var ok bool
		if body, ok = rt.readBody(w, r); !ok {
			return
		}
	}
	f := rt.forwards.Get().(*forward)
	*f = forward{rt: rt, w: w, r: r, vh: vh, route: route, cl: cl, body: body, extra: f.extra, uri: r.RequestURI}
	if len(f.uri) == 0 || f.uri[0] != '/' {
		f.uri = r.URL.RequestURI() // absolute form: the upstream gets the origin form
	}
	f.ab = h1.AborterFrom(r.Context())
	if rt.tracer != nil {
		if sp := trace.SpanFromContext(r.Context()); sp.SpanContext().IsValid() {
			f.span = sp
		}
	}
	f.run()
	*f = forward{extra: f.extra} // nothing of the request is kept
	rt.forwards.Put(f)
}

// readBody buffers the downstream request body under the HCM request_timeout; false when the request
// was answered (400, 408, 413, 431) or the downstream went away. The body is read whole before the
// first attempt, so that an attempt never starts with a body that cannot be read (and never has to
// be retried with one that cannot be replayed).
func (rt *router) readBody(w http.ResponseWriter, r *http.Request) ([]byte, bool) {
	rc := http.NewResponseController(w)
	if rt.requestTimeout > 0 { // a socket deadline: the real clock's
		_ = rc.SetReadDeadline(time.Now().Add(rt.requestTimeout))
	}
	var body []byte
	var err error
	if n := r.ContentLength; n > 0 && n <= maxRequestBody {
		body = make([]byte, n)
		_, err = io.ReadFull(r.Body, body)
	} else {
		body, err = io.ReadAll(io.LimitReader(r.Body, maxRequestBody+1))
	}
	if err != nil {
		var (
			fe *h1.FramingError
			ne net.Error
		)
		switch {
		case errors.As(err, &fe):
			// A body that breaks its framing is a codec protocol error: Envoy's HTTP/1 codec answers
			// it itself, 400 "Bad Request" (431 for trailers over the limit), and the connection
			// manager closes the connection (ServerConnectionImpl::sendProtocolError,
			// source/common/http/http1/codec_impl.cc; ConnectionManagerImpl::handleCodecError,
			// source/common/http/conn_manager_impl.cc: response flag DPE, downstream_cx_protocol_error).
			rt.st.cxProtocolError.Inc()
			rt.localReply(w, connectionClose, fe.Status, http.StatusText(fe.Status))
		case errors.As(err, &ne) && ne.Timeout():
			rt.st.rqTimeout.Inc()
			rt.localReply(w, nil, http.StatusRequestTimeout, "request timeout")
		default:
			rt.downstreamGone() // the stream ended or was reset mid-body: nobody to answer
		}
		return nil, false
	}
	if rt.requestTimeout > 0 {
		_ = rc.SetReadDeadline(time.Time{})
	}
	if len(body) > maxRequestBody {
		rt.localReply(w, nil, http.StatusRequestEntityTooLarge, "payload too large")
		return nil, false
	}
	return body, true
}

// connectionClose is the header of a local reply after which the downstream connection closes.
var connectionClose = http.Header{"Connection": {"close"}}

// downstreamGone counts a request whose client closed its connection before the response: Envoy counts
// downstream_cx_destroy_remote_active_rq, sends nothing and counts no status class
// (ConnectionManagerImpl::onEvent, source/common/http/conn_manager_impl.cc).
func (rt *router) downstreamGone() { rt.st.cxDestroyRemoteActiveRq.Inc() }

// forward is one downstream request on its way through the upstream attempts.
type forward struct {
	rt    *router
	w     http.ResponseWriter
	r     *http.Request
	vh    *config.VirtualHost
	route *config.Route
	cl    *cluster
	body  []byte
	start time.Time
	span  trace.Span // the server span when the request is traced; nil otherwise
	// deadline is the route timeout's end (zero: none); rctx its context once made (see ctx).
	deadline time.Time
	rctx     context.Context
	rcancel  context.CancelFunc
	uri      string // the request target sent upstream (origin form)
	// out is the upstream request of the current attempt; extra its headers added by the router (reused
	// from request to request), scratch the backing of their values.
	out     h1.Request
	ab      *h1.Aborter // the downstream connection's: interrupts the attempt under way
	extra   http.Header
	scratch [4]string
	// rng is the request's random stream (back-off jitter, picks), derived from its x-request-id.
	rng rand.PCG
}

// attempt is the outcome of one upstream try.
type attempt struct {
	outcome   policy.Outcome
	noHealthy bool           // no host could be picked: "no healthy upstream"
	resp      *http.Response // with outcome Response: headers received, body still to read
	host      *host
	index     int // the host's index in the cluster
	cancel    context.CancelCauseFunc
	cl        *cluster      // the cluster whose slots the attempt holds (see held)
	held      slots         // what done still has to give back
	sent      time.Time     // when the attempt was sent
	took      time.Duration // from send to response headers
	span      trace.Span    // the attempt's client span when traced; nil otherwise
}

// slots are what an attempt holds until done.
type slots uint8

const (
	holdsNothing slots = iota
	holdsSlots         // a max_requests and a max_connections slot
	holdsActive        // the slots, and it counts in upstream_rq_active and the host's rq_active
)

// done releases the attempt's breaker slots once its response is finished with, and ends its span.
func (a *attempt) done() {
	switch a.held {
	case holdsActive: // the attempt is active until its response is finished with
		a.cl.st.rqActive.Dec()
		a.host.rqActive.Add(-1)
		fallthrough
	case holdsSlots:
		a.cl.releaseConnection()
		a.cl.rm.ReleaseRequest()
	}
	a.held = holdsNothing
	a.cancel(nil)
	if a.span != nil {
		a.span.End()
		a.span = nil
	}
}

func (f *forward) run() {
	f.start = f.rt.clk.Now()
	rp, timeout := f.effectivePolicy()
	if timeout > 0 {
		f.deadline = f.start.Add(timeout)
	}
	defer func() {
		if f.rcancel != nil {
			f.rcancel()
		}
	}()
	var (
		rs      = policy.NewRetryState(0, 0)
		backoff *policy.Backoff
	)
	if rp != nil {
		on, _ := policy.ParseRetryOn(rp.RetryOn) // validated when the config was loaded
		rs = policy.NewRetryState(on, rp.NumRetries).WithStatusCodes(rp.RetriableStatusCodes)
	}
	var tried map[int]bool // hosts already tried: only a retry's host selection reads it
	reqID := headerValue(f.r.Header, hdrRequestID)
	if reqID == "" {
		reqID = newRequestID()
	}
	f.rt.seeds.request(&f.rng, reqID, saltRouter)
	hash := f.hash()

	attempts := 0
	if f.rt.onRequest != nil {
		defer func() { f.rt.onRequest(reqID, attempts) }()
	}
	if f.span != nil {
		f.span.SetAttributes(AttrRequestID.String(reqID), AttrCluster.String(f.cl.name))
		defer func() { f.span.SetAttributes(AttrAttempts.Int(attempts)) }()
	}
	holdingRetry := false
	release := func() {
		if holdingRetry {
			f.cl.rm.ReleaseRetry()
			holdingRetry = false
		}
	}
	defer release()
	for n := 1; ; n++ {
		a := f.try(rp, reqID, n, hash, tried)
		if a.host != nil {
			attempts++
		}
		release()
		if f.timedOut() {
			f.abandon(a)
			f.routeTimeout()
			return
		}
		if f.r.Context().Err() != nil {
			f.abandon(a) // the downstream went away: nobody to answer
			f.rt.downstreamGone()
			return
		}
		if a.noHealthy {
			if f.span != nil {
				f.span.AddEvent(EventNoHealthyUpstream)
			}
			f.cl.st.cxNoneHealthy.Inc()
			f.upstreamLocalReply(http.StatusServiceUnavailable, "no healthy upstream", n, nil)
			return
		}
		d, retrySuccess := rs.Decide(a.outcome, f.cl.rm.TryAcquireRetry)
		if retrySuccess {
			f.cl.st.rqRetrySuccess.Inc()
		}
		switch d {
		case policy.Retry:
			if tried == nil {
				tried = make(map[int]bool, 2)
			}
			tried[a.index] = true
			if backoff == nil { // the back-off starts at the first retry
				backoff = policy.NewBackoff(rp.BaseInterval, rp.MaxInterval)
			}
			holdingRetry = true
			f.cl.st.rqRetry.Inc()
			f.cl.retryEvent(a)
			delay := f.backoff(a, rp, backoff)
			f.abandon(a)
			if f.span != nil {
				retryEvent(f.span, a, n, delay)
			}
			if !f.sleep(f.ctx(), delay) {
				if f.timedOut() {
					f.routeTimeout()
				} else {
					f.rt.downstreamGone()
				}
				return
			}
			continue
		case policy.LimitExceeded:
			f.cl.st.rqRetryLimitExceeded.Inc()
			if f.span != nil {
				f.span.AddEvent(EventRetryLimit, trace.WithAttributes(AttrAttempt.Int(n)))
			}
		case policy.RetryOverflow:
			f.cl.st.rqRetryOverflow.Inc()
			if f.span != nil {
				f.span.AddEvent(EventRetryOverflow, trace.WithAttributes(AttrBreaker.String("max_retries"), AttrAttempt.Int(n)))
			}
		}
		f.finish(a, n)
		return
	}
}

// The router's request headers (consumed, never forwarded).
// Written in canonical form, as are all header names the request path uses: net/http would allocate a
// canonical copy of any other spelling on every Get, Set and Del.
const (
	hdrRetryOn              = "X-Envoy-Retry-On"
	hdrMaxRetries           = "X-Envoy-Max-Retries"
	hdrRetriableStatusCodes = "X-Envoy-Retriable-Status-Codes"
	hdrUpstreamTimeout      = "X-Envoy-Upstream-Rq-Timeout-Ms"
	hdrPerTryTimeout        = "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"
	hdrRetriableHeaderNames = "X-Envoy-Retriable-Header-Names"
)

// The headers the router adds or reads, in canonical form.
const (
	hdrRequestID                = "X-Request-Id"
	hdrForwardedProto           = "X-Forwarded-Proto"
	hdrAttemptCount             = "X-Envoy-Attempt-Count"
	hdrExpectedTimeout          = "X-Envoy-Expected-Rq-Timeout-Ms"
	hdrUpstreamServiceTime      = "X-Envoy-Upstream-Service-Time"
	hdrImmediateHealthCheckFail = "X-Envoy-Immediate-Health-Check-Fail"
	hdrContentLength            = "Content-Length"
	hdrContentType              = "Content-Type"
)

// routerHeaderSet are the router's request headers: consumed, never sent upstream.
var routerHeaderSet = map[string]bool{hdrRetryOn: true, hdrMaxRetries: true, hdrRetriableStatusCodes: true,
	hdrUpstreamTimeout: true, hdrPerTryTimeout: true, hdrRetriableHeaderNames: true}

// effectivePolicy is the request's retry policy and route timeout: the route's (or the virtual host's)
// policy, adjusted by the router's request headers when the request comes from an internal address, as
// Envoy does — x-envoy-retry-on adds conditions, x-envoy-max-retries replaces num_retries while some
// condition is active, x-envoy-retriable-status-codes adds codes, and the timeout headers (ms, 0 =
// none) replace the route timeout and per_try_timeout.
func (f *forward) effectivePolicy() (*config.RetryPolicy, time.Duration) {
	rp := f.route.Action.RetryPolicy
	if rp == nil {
		rp = f.vh.RetryPolicy
	}
	timeout := f.route.Action.Timeout
	h := f.r.Header
	if !internal(f.r.RemoteAddr) {
		return rp, timeout
	}
	if ms, err := parseHeaderUint(h, hdrUpstreamTimeout); err == nil {
		timeout = time.Duration(ms) * time.Millisecond
	}
	var extra []string
	if v := headerValue(h, hdrRetryOn); v != "" {
		for _, c := range strings.Split(v, ",") {
			if c = strings.TrimSpace(c); policy.RetryOnNames[c] != 0 {
				extra = append(extra, c)
			}
		}
	}
	maxRetries, maxErr := parseHeaderUint(h, hdrMaxRetries)
	perTry, perTryErr := parseHeaderUint(h, hdrPerTryTimeout)
	if len(extra) == 0 && (rp == nil || maxErr != nil && perTryErr != nil && headerValue(h, hdrRetriableStatusCodes) == "" && headerValue(h, hdrRetriableHeaderNames) == "") {
		return rp, timeout
	}
	eff := config.RetryPolicy{NumRetries: 1, BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, HostSelectionMaxAttempts: 1}
	if rp != nil {
		eff = *rp
		eff.RetryOn = append([]string(nil), rp.RetryOn...)
	}
	eff.RetryOn = append(eff.RetryOn, extra...)
	eff.RetriableHeaders = append([]config.HeaderMatcher(nil), eff.RetriableHeaders...)
	if maxErr == nil && len(eff.RetryOn) > 0 {
		eff.NumRetries = uint32(maxRetries)
	}
	if perTryErr == nil {
		eff.PerTryTimeout = time.Duration(perTry) * time.Millisecond
	}
	for _, c := range strings.Split(h.Get(hdrRetriableStatusCodes), ",") {
		if code, err := strconv.Atoi(strings.TrimSpace(c)); err == nil {
			eff.RetriableStatusCodes = append(eff.RetriableStatusCodes, code)
		}
	}
	present := true
	for _, name := range strings.Split(h.Get(hdrRetriableHeaderNames), ",") {
		if name = strings.TrimSpace(name); name != "" {
			eff.RetriableHeaders = append(eff.RetriableHeaders, config.HeaderMatcher{Name: name, Present: &present})
		}
	}
	return &eff, timeout
}

// headerValue is h.Get(name) for a name already in canonical form, without canonicalizing it again
// (the proxy's server and pool store every name in canonical form).
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// errNoHeader: the header is absent (strconv's error for "" would be allocated per request).
var errNoHeader = errors.New("no such header")

// parseHeaderUint parses a header as a uint32 in decimal, as strconv.ParseUint(v, 10, 32).
func parseHeaderUint(h http.Header, name string) (uint64, error) {
	v := headerValue(h, name)
	if v == "" {
		return 0, errNoHeader
	}
	return strconv.ParseUint(v, 10, 32)
}

// internal reports whether a downstream address is internal by Envoy's default rule: loopback or a
// private (RFC 1918 / RFC 4193) address. Only internal requests may steer the router with headers.
func internal(remote string) bool {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return false
	}
	ip := ap.Addr().Unmap()
	return ip.IsLoopback() || ip.IsPrivate()
}

// try sends one attempt to the next host and waits for its response headers or its failure.
func (f *forward) try(rp *config.RetryPolicy, reqID string, n int, hash uint64, tried map[int]bool) attempt {
	cl := f.cl
	if !cl.trafficSeen.Load() {
		cl.trafficSeen.Store(true)
	}
	var perTry time.Duration
	if rp != nil {
		perTry = rp.PerTryTimeout
	}
	// An attempt needs a context of its own only for its per-try timeout: otherwise it ends with the
	// request's (route timeout, downstream gone), and done closes its response.
	actx, cancel := f.r.Context(), noCancel
	if perTry > 0 {
		actx, cancel = context.WithCancelCause(f.ctx())
	}
	a := attempt{cancel: cancel, index: -1, cl: cl}
	// Circuit breakers first: a local overflow is answered at once, never retried, never an outlier signal.
	if !cl.rm.TryAcquireRequest() {
		cl.st.rqPendingOverflow.Inc()
		if f.span != nil {
			f.span.AddEvent(EventOverflow, trace.WithAttributes(AttrBreaker.String("max_requests"), AttrAttempt.Int(n)))
		}
		a.outcome = policy.Outcome{Kind: policy.Overflow}
		return a
	}
	ok, overflow := true, false
	if !cl.rm.TryAcquireConnection() { // the pending queue: a wait that the route timeout must end
		wctx := actx
		if perTry == 0 {
			wctx = f.ctx()
		}
		ok, overflow = cl.waitForConnection(wctx)
	}
	if !ok {
		cl.rm.ReleaseRequest()
		if overflow {
			cl.st.rqPendingOverflow.Inc()
			if f.span != nil {
				f.span.AddEvent(EventOverflow, trace.WithAttributes(AttrBreaker.String("max_pending_requests"), AttrAttempt.Int(n)))
			}
		}
		a.outcome = policy.Outcome{Kind: policy.Overflow}
		return a
	}
	a.held = holdsSlots
	a.index = cl.pick(hash, tried, rp, &f.rng)
	if a.index < 0 {
		a.noHealthy = true
		a.done()
		return a
	}
	h := cl.hosts[a.index]
	a.host = h

	// The upstream request: the downstream's end-to-end headers (the pool leaves out the hop-by-hop
	// ones and the router's), with the router's own added. A header map written by the pool as it
	// sends, so its values can be cut from the forward's scratch array.
	clear(f.extra)
	// The exchange ends with the route timeout (a socket deadline) or when the downstream connection's
	// aborter interrupts it (the client gone, the per-try timeout): no context watcher per attempt.
	f.out = h1.Request{Method: f.r.Method, URI: f.uri, Host: f.r.Host, Header: f.r.Header, Omit: routerHeaderSet,
		Extra: f.extra, Body: f.body, Abort: f.ab}
	switch {
	case f.rt.realClock:
		f.out.Deadline = f.deadline // the route timeout as a socket deadline: no timer per request
	case actx == f.r.Context():
		actx = f.ctx() // on another clock, the route context's timer ends the exchange (see ctx)
	}
	f.scratch[0], f.scratch[1] = reqID, "http"
	f.extra[hdrRequestID], f.extra[hdrForwardedProto] = f.scratch[0:1:1], f.scratch[1:2:2]
	if f.vh.IncludeRequestAttemptCount {
		f.scratch[2] = strconv.Itoa(n)
		f.extra[hdrAttemptCount] = f.scratch[2:3:3]
	}
	if ms := expectedTimeoutMs(f.rt.clk.Now(), f.deadline, perTry); ms > 0 {
		f.scratch[3] = msString(ms)
		f.extra[hdrExpectedTimeout] = f.scratch[3:4:4]
	}
	if f.span != nil {
		a.span = f.startAttempt(f.r.Context(), &f.out, h, n)
	}

	cl.st.rqTotal.Inc()
	cl.st.rqActive.Inc()
	h.rqTotal.Add(1)
	h.rqActive.Add(1)
	a.held = holdsActive

	var timer clock.Timer
	if perTry > 0 {
		ab := f.ab
		timer = f.rt.clk.AfterFunc(perTry, func() {
			cancel(errPerTryTimeout) // first: the attempt's outcome is read from its context
			if ab != nil {
				ab.Interrupt()
			}
		})
	}
	a.sent = f.rt.clk.Now()
	resp, err := cl.upstreams[a.index].RoundTrip(actx, &f.out)
	a.took = f.rt.clk.Since(a.sent)
	if timer != nil && !timer.Stop() && err == nil {
		// The per-try timeout fired as the headers arrived: the attempt's context is gone, so is the body.
		resp.Body.Close()
		err = errPerTryTimeout
	}
	switch {
	case err == nil:
		a.outcome = policy.Outcome{Kind: policy.Response, Status: resp.StatusCode,
			HeadersMatched: rp != nil && anyHeaderMatches(rp.RetriableHeaders, resp.Header)}
		a.resp = resp
		cl.st.status(resp.StatusCode)
		cl.st.rqCompleted.Inc()
		if resp.StatusCode >= 500 {
			h.rqError.Add(1)
		} else {
			h.rqSuccess.Add(1)
		}
		if headerValue(resp.Header, hdrImmediateHealthCheckFail) != "" {
			cl.immediateFail(a.index)
		}
	case context.Cause(actx) == errPerTryTimeout:
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout}
		cl.st.rqPerTryTimeout.Inc()
		h.rqTimeout.Add(1)
		h.rqError.Add(1)
	case errors.As(err, new(*connectError)):
		a.outcome = policy.Outcome{Kind: policy.ConnectFailure, BeforeRequest: true}
		h.rqError.Add(1)
	case f.timedOut():
		// The route timeout ended the attempt: outlier detection hears of a local-origin timeout.
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout}
		h.rqTimeout.Add(1)
		h.rqError.Add(1)
	case f.r.Context().Err() != nil:
		a.outcome = policy.Outcome{Kind: policy.Reset} // the downstream went away: nothing to report
		if a.span != nil {
			attemptOutcome(a.span, a.outcome, nil, cl.hosts)
		}
		return a
	default:
		a.outcome = policy.Outcome{Kind: policy.Reset}
		cl.st.rqRxReset.Inc()
		h.rqError.Add(1)
	}
	evs := cl.recordOutcome(a.index, a.outcome)
	if a.span != nil {
		attemptOutcome(a.span, a.outcome, evs, cl.hosts)
	}
	return a
}

// ctx is the request's context ended by the route timeout. It is made only when something has to wait
// on it (a back-off, the pending queue, a per-try timeout's context): an attempt itself ends at the
// route deadline through its socket deadline, so most requests never need a timer of their own.
func (f *forward) ctx() context.Context {
	if f.rctx == nil {
		f.rctx = f.r.Context()
		switch {
		case f.deadline.IsZero():
		case f.rt.realClock:
			f.rctx, f.rcancel = context.WithDeadlineCause(f.rctx, f.deadline, errRouteTimeout)
		default:
			// Another clock's deadline: the context ends by its timer, which also interrupts the
			// exchange under way (on the real clock the socket deadline does).
			ctx, cancel := context.WithCancelCause(f.rctx)
			ab := f.ab
			t := f.rt.clk.AfterFunc(f.deadline.Sub(f.rt.clk.Now()), func() {
				cancel(errRouteTimeout) // first: the pool checks the context once it registered the exchange
				if ab != nil {
					ab.Interrupt()
				}
			})
			f.rctx, f.rcancel = ctx, func() { t.Stop(); cancel(nil) }
		}
	}
	return f.rctx
}

// timedOut reports whether the route timeout has passed.
func (f *forward) timedOut() bool { return !f.deadline.IsZero() && !f.rt.clk.Now().Before(f.deadline) }

// noCancel stands for the cancel function of an attempt without a context of its own.
func noCancel(error) {}

// backoff is the delay before a retry: the rate-limited back-off when the route has one and the
// response carries one of its reset headers, else the exponential back-off.
func (f *forward) backoff(a attempt, rp *config.RetryPolicy, exp *policy.Backoff) time.Duration {
	if rl := rp.RateLimited; rl != nil && a.resp != nil {
		if d, ok := policy.RateLimitedDelay(rl.ResetHeaders, rl.MaxInterval, a.resp.Header.Get, f.rt.clk.Now(), &f.rng); ok {
			f.cl.st.rqRetryBackoffRateLimited.Inc()
			return d
		}
	}
	f.cl.st.rqRetryBackoffExponential.Inc()
	return exp.Next(&f.rng)
}

// anyHeaderMatches reports whether one of the matchers matches the headers.
func anyHeaderMatches(ms []config.HeaderMatcher, h http.Header) bool {
	for _, m := range ms {
		if headerMatches(m, h) {
			return true
		}
	}
	return false
}

// hash is the request's hash for RING_HASH and MAGLEV: the route's hash_policy header values, or a
// random one from the request's stream when none is present (Envoy then picks a random host).
func (f *forward) hash() uint64 {
	var key strings.Builder
	for _, name := range f.route.Action.HashHeaders {
		key.WriteString(f.r.Header.Get(name))
		key.WriteByte(0)
	}
	if key.Len() == len(f.route.Action.HashHeaders) {
		return f.rng.Uint64()
	}
	return policy.HashKey(key.String())
}

// expectedTimeoutMs is what Envoy sends upstream as x-envoy-expected-rq-timeout-ms: the per-try timeout
// when set, else what is left of the route timeout at now.
func expectedTimeoutMs(now, deadline time.Time, perTry time.Duration) int64 {
	left := time.Duration(0)
	if !deadline.IsZero() {
		left = deadline.Sub(now)
	}
	if perTry > 0 && (left <= 0 || perTry < left) {
		return perTry.Milliseconds()
	}
	return left.Milliseconds()
}

// abandon releases an attempt that will not be answered to the client. A small body is drained so the
// upstream connection can be reused; a large one closes it.
func (f *forward) abandon(a attempt) {
	if a.resp != nil {
		_, _ = io.CopyN(io.Discard, a.resp.Body, 64<<10)
		a.resp.Body.Close()
		f.cl.st.rqTime.Record(f.rt.clk.Since(a.sent))
	}
	a.done()
}

// sleep waits for the back-off delay; false when the route timeout or the downstream ended the wait.
func (f *forward) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := f.rt.clk.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}

// finish sends the final attempt's outcome to the client: the upstream response, or a local reply.
func (f *forward) finish(a attempt, n int) {
	defer a.done()
	const resetBody = "upstream connect error or disconnect/reset before headers. reset reason: "
	switch a.outcome.Kind {
	case policy.Response:
		f.relay(a, n)
	case policy.PerTryTimeout:
		f.upstreamLocalReply(http.StatusGatewayTimeout, "upstream request timeout", n, nil)
	case policy.ConnectFailure:
		f.upstreamLocalReply(http.StatusServiceUnavailable, resetBody+"connection failure", n, nil)
	case policy.Overflow:
		f.upstreamLocalReply(http.StatusServiceUnavailable, resetBody+"overflow", n, overloaded)
	default:
		f.upstreamLocalReply(http.StatusServiceUnavailable, resetBody+"connection termination", n, nil)
	}
}

// overloaded marks a local circuit-breaker overflow reply.
var overloaded = http.Header{"X-Envoy-Overloaded": {"true"}}

// upstreamLocalReply answers for a failed upstream, charging the code to the cluster as Envoy does.
func (f *forward) upstreamLocalReply(code int, body string, n int, hdr http.Header) {
	f.cl.st.status(code)
	f.cl.st.rqCompleted.Inc()
	if f.vh.IncludeAttemptCountInResponse {
		f.w.Header().Set(hdrAttemptCount, strconv.Itoa(n))
	}
	f.rt.localReply(f.w, hdr, code, body)
}

// routeTimeout answers 504 when the route timeout fired: never retried.
func (f *forward) routeTimeout() {
	f.cl.st.rqTimeout.Inc()
	f.cl.st.status(http.StatusGatewayTimeout)
	f.cl.st.rqCompleted.Inc()
	f.rt.localReply(f.w, nil, http.StatusGatewayTimeout, "upstream request timeout")
}

// relay streams the upstream response to the client. A failure mid-body resets the downstream
// connection, as Envoy does once the response has started.
func (f *forward) relay(a attempt, n int) {
	resp := a.resp
	defer resp.Body.Close()
	hdr := f.w.Header()
	// The response's value slices are shared, not copied: they stay valid until its body is closed,
	// after WriteHeader has written them out. Content-Length passes as the upstream sent it.
	shareHeader(hdr, resp.Header)
	f.scratch[0] = strconv.FormatInt(a.took.Milliseconds(), 10)
	hdr[hdrUpstreamServiceTime] = f.scratch[0:1:1]
	if f.vh.IncludeAttemptCountInResponse {
		f.scratch[1] = strconv.Itoa(n)
		hdr[hdrAttemptCount] = f.scratch[1:2:2]
	}
	f.w.WriteHeader(resp.StatusCode)
	f.rt.st.status(resp.StatusCode)
	bp := f.rt.bufs.Get().(*[]byte)
	defer f.rt.bufs.Put(bp)
	_, err := io.CopyBuffer(f.w, resp.Body, *bp)
	f.cl.st.rqTime.Record(f.rt.clk.Since(a.sent))
	if err != nil {
		if f.timedOut() {
			f.cl.st.rqTimeout.Inc()
		}
		panic(http.ErrAbortHandler)
	}
}

func (rt *router) localReply(w http.ResponseWriter, hdr http.Header, code int, body string) {
	for k, v := range hdr {
		w.Header()[k] = v
	}
	if body != "" {
		w.Header().Set(hdrContentType, "text/plain")
	}
	w.Header().Set(hdrContentLength, strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
	rt.st.status(code)
}

// shareHeader puts the end-to-end headers of src into dst, sharing their value slices.
func shareHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, v := range src {
		if h1.IsHopByHop(k) || len(conn) > 0 && h1.HasToken(conn, k) {
			continue
		}
		dst[k] = v
	}
}

// msString is strconv.FormatInt(ms, 10), remembering the last value: the expected-timeout header of
// consecutive requests on a route mostly repeats.
func msString(ms int64) string {
	if c := lastMs.Load(); c != nil && c.ms == ms {
		return c.s
	}
	c := &msCache{ms: ms, s: strconv.FormatInt(ms, 10)}
	lastMs.Store(c)
	return c.s
}

type msCache struct {
	ms int64
	s  string
}

var lastMs atomic.Pointer[msCache]
