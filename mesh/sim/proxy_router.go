package sim

import (
	"math/rand/v2"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// forward is one downstream request on its way through its upstream attempts: the live router's
// forward and upstreamRequest (proxy/router.go, proxy/upstream_request.go; Envoy's Router::Filter and
// UpstreamRequest, source/common/router/router.cc, upstream_request.cc) on events. Reused from request
// to request; its engine callbacks are method values made once.
type forward struct {
	p     *Proxy
	req   *Request
	done  func(Result)
	vh    *config.VirtualHost
	route *config.Route
	cl    *cluster
	rp    *config.RetryPolicy // the route's retry policy, else the virtual host's; nil: none
	rs    policy.RetryState
	bo    policy.Backoff
	hasBo bool
	rng   rand.PCG // the request's router stream (proxy.Seeds.Router): hash, picks, back-off
	hash  uint64

	start, timeout time.Duration // timeout: the route timeout (0: none)
	routeT         Timer
	n, attempts    int  // the attempt number under way; the attempts that reached a host
	holdingRetry   bool // a max_retries slot is held until the retried attempt ends
	tried          map[int]bool
	preFlag        string // URX or UO, set by the retry decision before the final reply
	expMs          int64  // the attempt's x-envoy-expected-rq-timeout-ms (0: none)

	// The attempt under way.
	phase    phase
	h        *host
	out      *Request
	outBuf   Request // out's storage, reused from attempt to attempt
	cancel   func()
	answered bool // the instance has answered the exchange under way
	res      Result
	perTryT  Timer
	stepT    Timer // the request on its way to the instance, or the response on its way back
	backoffT Timer

	serveFn, arriveFn, perTryFn, routeTimeoutFn, retryFn func()
	onResult                                             func(Result)
}

// phase is where the attempt under way is.
type phase uint8

const (
	idle       phase = iota
	pending          // waiting for a connection in the host's pool
	sent             // on a connection: on its way, at the instance, or its response on its way back
	backingOff       // between an attempt and its retry
)

func (p *Proxy) forward() *forward {
	if n := len(p.free); n > 0 {
		f := p.free[n-1]
		p.free = p.free[:n-1]
		return f
	}
	f := &forward{p: p}
	f.serveFn, f.arriveFn, f.perTryFn, f.routeTimeoutFn, f.retryFn = f.serve, f.arrive, f.perTryTimeout, f.routeTimedOut, f.try
	f.onResult = f.result
	return f
}

// begin starts the request: its retry policy and route timeout, its random stream, its first attempt.
func (f *forward) begin(req *Request, done func(Result), vh *config.VirtualHost, route *config.Route, c *cluster) {
	p := f.p
	f.req, f.done, f.vh, f.route, f.cl = req, done, vh, route, c
	f.start, f.n, f.attempts, f.holdingRetry, f.tried, f.preFlag, f.hasBo = p.en.Now(), 0, 0, false, nil, "", false
	c.trafficSeen = true
	// The router's x-envoy-* request headers are removed from every request that is not internal
	// (proxy/forwarded.go, Envoy's cleanInternalHeaders); an internal request's adjust the route's
	// policy and timeout as the live router's (proxy.EffectiveRetryPolicy).
	f.rp = route.Action.RetryPolicy
	if f.rp == nil {
		f.rp = vh.RetryPolicy
	}
	f.timeout = route.Action.Timeout
	if p.internal(req) && hasRouterHeader(req.Header) {
		f.rp, f.timeout = proxy.EffectiveRetryPolicy(route, vh, httpHeader(req))
	}
	f.rs = *policy.NewRetryState(0, 0)
	if rp := f.rp; rp != nil {
		on, _ := policy.ParseRetryOn(rp.RetryOn) // validated when the configuration was loaded
		f.rs = *policy.NewRetryState(on, rp.NumRetries).WithStatusCodes(rp.RetriableStatusCodes)
		if on != 0 && req.BodySize > proxy.RetryBufferLimit(p.listener.BufferLimit, vh, route) {
			// A body beyond the buffer limit cannot be sent again: no retry, counted once (as the
			// live forward.run, Envoy's Filter::decodeData: retry_or_shadow_abandoned).
			f.rs = *policy.NewRetryState(0, 0)
			c.st.retryOrShadowAbandoned++
		}
	}
	// The request's stream, from its id, drawn in the live router's order: the hash first (a random
	// one when the route hashes no header the request has), then the picks and back-offs.
	p.seeds.Router(&f.rng, req.ID)
	f.hash = f.hashOf()
	if f.timeout > 0 {
		f.routeT = p.en.After(f.timeout, f.routeTimeoutFn)
	}
	f.try()
}

// hashOf is the request's hash for RING_HASH and MAGLEV, as the live forward.hash.
func (f *forward) hashOf() uint64 {
	names := f.route.Action.HashHeaders
	if len(names) == 0 {
		return f.rng.Uint64()
	}
	var key strings.Builder
	for _, name := range names {
		key.WriteString(f.req.Header[lower(name)])
		key.WriteByte(0)
	}
	if key.Len() == len(names) {
		return f.rng.Uint64()
	}
	return policy.HashKey(key.String())
}

// try starts attempt n+1: a host, then a connection from its pool, then the request on it.
func (f *forward) try() {
	p, c := f.p, f.cl
	f.n++
	f.phase = idle
	i := c.pick(f)
	if i < 0 {
		c.st.cxNoneHealthy++
		f.reply(503, "UH", nil)
		return
	}
	h := c.hosts[i]
	f.h = h
	// The expected timeout is what is left when the attempt begins, before its connection (the live
	// router sets it before its pool's RoundTrip).
	var perTry time.Duration
	if f.rp != nil {
		perTry = f.rp.PerTryTimeout
	}
	f.expMs = proxy.ExpectedTimeoutMs(p.en.Now()-f.start, f.timeout, perTry)
	if rp := f.rp; rp != nil && rp.PerTryTimeout > 0 {
		f.perTryT = p.en.After(rp.PerTryTimeout, f.perTryFn) // from the attempt's start, pending included
	}
	now, overflow := h.get(f)
	switch {
	case overflow:
		c.st.rqPendingOverflow++
		f.unattached(policy.Outcome{Kind: policy.Overflow})
	case now:
		f.attach()
	default:
		f.phase = pending
	}
}

// connected: the pool handed the waiting attempt a connection.
func (f *forward) connected() { f.attach() }

// attach takes a max_requests slot for an attempt that has its connection (Envoy's
// attachStreamToClient); at max_requests it overflows and the connection serves another.
func (f *forward) attach() {
	c, h, p := f.cl, f.h, f.p
	if !c.rm.TryAcquireRequest() {
		h.ready()
		c.st.rqPendingOverflow++
		f.unattached(policy.Outcome{Kind: policy.Overflow})
		return
	}
	c.st.rqTotal++
	c.st.rqActive++
	h.active++
	f.phase = sent
	f.out = f.upstreamRequest()
	f.stepT = p.en.After(p.hop, f.serveFn)
}

// upstreamRequest is the attempt's request: the downstream's headers without the x-envoy-* ones the
// connection manager removes, with the router's added (x-envoy-expected-rq-timeout-ms, as
// FilterUtility::setTimeoutHeaders; x-envoy-attempt-count when the virtual host asks).
func (f *forward) upstreamRequest() *Request {
	in := f.req
	// The request is the forward's, reused once its exchange has ended (answered or cancelled): an
	// Upstream keeps no reference to it past that.
	hdr := f.outBuf.Header
	if hdr == nil {
		hdr = make(map[string]string, len(in.Header)+2)
	} else {
		clear(hdr)
	}
	f.outBuf = Request{ID: in.ID, Method: in.Method, Path: in.Path, Authority: in.Authority, Header: hdr}
	out := &f.outBuf
	if hr := f.route.Action.HostRewrite; hr != "" {
		out.Authority = hr
	}
	for k, v := range in.Header {
		if !strings.HasPrefix(k, "x-envoy-") {
			out.Header[k] = v
		}
	}
	if f.expMs > 0 {
		out.Header["x-envoy-expected-rq-timeout-ms"] = f.p.expectedMs(f.expMs)
	}
	if f.vh.IncludeRequestAttemptCount {
		out.Header["x-envoy-attempt-count"] = strconv.Itoa(f.n)
	}
	return out
}

// serve: the request reaches the instance.
func (f *forward) serve() {
	f.stepT = Timer{}
	if f.h.up == nil { // cannot happen: no connection was made to a missing instance
		f.result(Result{Err: ErrReset})
		return
	}
	f.answered = false
	cancel := f.h.up.Serve(f.out, f.onResult)
	if !f.answered { // an instance may answer within Serve (a full queue): then nothing is to cancel
		f.cancel = cancel
	}
}

// result: the instance ended the exchange; its answer reaches the proxy one hop later.
func (f *forward) result(r Result) {
	f.answered = true
	f.cancel = nil
	f.res = r
	f.stepT = f.p.en.After(f.p.hop, f.arriveFn)
}

// arrive: the response (or the connection's end) reached the proxy.
func (f *forward) arrive() {
	f.stepT = Timer{}
	f.p.en.Stop(f.perTryT)
	if b := f.res.Body; b > 0 {
		// The headers came: the per-try timeout ends here, as the live attempt's when its round trip
		// returns the headers (proxy/upstream_request.go). The response is relayed, or drained before a
		// retry (forward.abandon reads the body on), until its end; then it is decided and the
		// connection is free again. A route timeout in between still ends the attempt.
		f.res.Body = 0
		f.stepT = f.p.en.After(b, f.arriveFn)
		return
	}
	r := f.res
	h, c := f.h, f.cl
	f.detach()
	var o policy.Outcome
	if r.Status > 0 {
		// The response headers came: the attempt's outcome is its status (a reset after them is the
		// relay's business: the client sees the status, then the reset).
		o = policy.Outcome{Kind: policy.Response, Status: r.Status, RateLimited: r.Header["x-envoy-ratelimited"] != "",
			HeadersMatched: f.rp != nil && len(f.rp.RetriableHeaders) > 0 && anyHeaderMatches(f.rp.RetriableHeaders, r.Header)}
	} else {
		// Reset, closed or refused before the headers: the live pool's error, a connection
		// termination (upstream_rq_rx_reset).
		o = policy.Outcome{Kind: policy.Reset}
		c.st.rqRxReset++
	}
	if r.Err == ErrNone {
		h.ready()
	} else {
		h.closeConn()
	}
	c.record(h.idx, o)
	f.ended(o, true)
}

// detach releases what an attached attempt holds (its max_requests slot, the active counts).
func (f *forward) detach() {
	c := f.cl
	c.rm.ReleaseRequest()
	c.st.rqActive--
	f.h.active--
}

// abort ends the attempt under way from the proxy's side (a timeout): out of the pending queue, or the
// exchange cancelled and its connection reset. attached reports whether it had reached a host.
func (f *forward) abort() (attached bool) {
	switch f.phase {
	case pending:
		f.h.unwait(f)
		return false
	case sent:
		f.p.en.Stop(f.stepT)
		f.stepT = Timer{}
		if f.cancel != nil {
			f.cancel()
			f.cancel = nil
		}
		f.detach()
		f.h.closeConn()
		return true
	}
	return false
}

// perTryTimeout: the attempt's per_try_timeout fired (Filter::onPerTryTimeout): it is reset, counted,
// and heard by outlier detection as a local-origin timeout when it had reached its host.
func (f *forward) perTryTimeout() {
	f.perTryT = Timer{}
	c := f.cl
	c.st.rqPerTryTimeout++
	o := policy.Outcome{Kind: policy.PerTryTimeout}
	if !f.abort() {
		f.unattached(o)
		return
	}
	c.st.rqTxReset++
	c.record(f.h.idx, o)
	f.ended(o, true)
}

// connectFailed: the pool could not connect for the waiting attempt (Envoy's UF): a host failure.
func (f *forward) connectFailed() {
	f.p.en.Stop(f.perTryT)
	o := policy.Outcome{Kind: policy.ConnectFailure, BeforeRequest: true}
	f.cl.record(f.h.idx, o)
	f.ended(o, true)
}

// unattached ends an attempt that never reached its host (an overflow, a timeout while pending):
// nothing is charged to the host and outlier detection hears nothing.
func (f *forward) unattached(o policy.Outcome) {
	f.p.en.Stop(f.perTryT)
	f.ended(o, false)
}

// ended decides after an attempt, as the live forward.run loop: the route timeout, then the retry
// decision (policy.RetryState.Decide with the retry breaker), then a retry after its back-off or the
// final answer.
func (f *forward) ended(o policy.Outcome, reached bool) {
	f.phase = idle
	c := f.cl
	h := f.h
	if reached {
		f.attempts++
	} else {
		h = nil
	}
	if f.holdingRetry {
		c.rm.ReleaseRetry()
		f.holdingRetry = false
	}
	d, retrySuccess := f.rs.Decide(o, c.rm.TryAcquireRetry)
	if retrySuccess {
		c.st.rqRetrySuccess++
	}
	switch d {
	case policy.Retry:
		idx := -1
		if h != nil {
			idx = h.idx
		}
		if f.rp.PreviousHosts {
			if f.tried == nil {
				f.tried = make(map[int]bool, 2)
			}
			f.tried[idx] = true
		}
		if !f.hasBo { // the back-off starts at the first retry
			f.bo, f.hasBo = *policy.NewBackoff(f.rp.BaseInterval, f.rp.MaxInterval), true
		}
		f.holdingRetry = true
		if o.Kind == policy.Response {
			c.st.retried(o.Status)
		}
		c.st.rqRetry++
		if h != nil {
			f.p.event("retry", c.name, h.name, proxy.OutcomeReason(o))
		}
		c.st.rqRetryBackoffExponential++
		delay := f.bo.Next(&f.rng)
		f.phase = backingOff
		f.backoffT = f.p.en.After(delay, f.retryFn)
		return
	case policy.LimitExceeded:
		c.st.rqRetryLimitExceeded++
		f.preFlag = "URX"
	case policy.RetryOverflow:
		c.st.rqRetryOverflow++
		f.preFlag = "UO"
	}
	f.finish(o)
}

// finish answers the final attempt: its response, or the router's local reply for how it ended
// (proxy.FailureReply: UT 504, UF 503, UO 503 with x-envoy-overloaded, UC 503).
func (f *forward) finish(o policy.Outcome) {
	if o.Kind == policy.Response {
		c := f.cl
		c.st.response(o.Status)
		r := f.res
		r.Attempts, r.ZeroAttempts = f.attempts, f.attempts == 0
		flag := f.preFlag
		if r.Err != ErrNone {
			flag = joinFlags(flag, "UC") // the response started, then its connection ended (failStarted)
		}
		r.Flags = flag
		if f.vh.IncludeAttemptCountInResponse {
			r.Header = withHeader(r.Header, "x-envoy-attempt-count", strconv.Itoa(f.n))
		}
		f.end(r)
		return
	}
	code, flag := proxy.FailureReply(o.Kind, "")
	var hdr map[string]string
	if o.Kind == policy.Overflow {
		hdr = map[string]string{"x-envoy-overloaded": "true"}
	}
	f.reply(code, joinFlags(f.preFlag, flag), hdr)
}

// routeTimedOut: the route timeout fired (Filter::onResponseTimeout): the attempt under way is reset
// (a local-origin timeout for outlier detection when it had reached its host), a back-off is cut
// short, and the router answers 504 "upstream request timeout", never retried.
func (f *forward) routeTimedOut() {
	f.routeT = Timer{}
	c := f.cl
	switch f.phase {
	case pending, sent:
		f.p.en.Stop(f.perTryT)
		if f.abort() {
			f.attempts++
			c.st.rqTxReset++
			c.record(f.h.idx, policy.Outcome{Kind: policy.PerTryTimeout})
		}
	case backingOff:
		f.p.en.Stop(f.backoffT)
	}
	if f.holdingRetry {
		c.rm.ReleaseRetry()
		f.holdingRetry = false
	}
	c.st.rqTimeout++
	f.reply(504, "UT", nil)
}

// reply is the router's local reply, charged to the cluster as Envoy does (upstreamLocalReply).
func (f *forward) reply(code int, flags string, hdr map[string]string) {
	c := f.cl
	c.st.status(code)
	c.st.rqCompleted++
	if f.vh.IncludeAttemptCountInResponse {
		hdr = withHeader(hdr, "x-envoy-attempt-count", strconv.Itoa(f.n))
	}
	f.end(Result{Status: code, Header: hdr, Flags: flags, Attempts: f.attempts, ZeroAttempts: f.attempts == 0})
}

// end sends the answer and frees the request's state.
func (f *forward) end(r Result) {
	p := f.p
	p.en.Stop(f.routeT)
	p.st.rqActive--
	p.countStatus(r.Status)
	done := f.done
	*f = forward{p: p, outBuf: Request{Header: f.outBuf.Header}, serveFn: f.serveFn, arriveFn: f.arriveFn, perTryFn: f.perTryFn, routeTimeoutFn: f.routeTimeoutFn,
		retryFn: f.retryFn, onResult: f.onResult}
	p.free = append(p.free, f)
	done(r)
}

// hasRouterHeader reports whether the request has an x-envoy-* header (one of them may be the router's).
func hasRouterHeader(h map[string]string) bool {
	for k := range h {
		if strings.HasPrefix(k, "x-envoy-") {
			return true
		}
	}
	return false
}

func joinFlags(a, b string) string {
	switch {
	case a == "":
		return b
	case b == "" || a == b:
		return a
	}
	return a + "," + b
}

// withHeader is h with name set, copied (a response's headers may be the instance's).
func withHeader(h map[string]string, name, value string) map[string]string {
	out := make(map[string]string, len(h)+1)
	for k, v := range h {
		out[k] = v
	}
	out[name] = value
	return out
}

// anyHeaderMatches applies the retriable_headers matchers to a response's headers with the live
// proxy's matcher.
func anyHeaderMatches(ms []config.HeaderMatcher, h map[string]string) bool {
	hh := make(map[string][]string, len(h))
	for k, v := range h {
		hh[canonical(k)] = []string{v}
	}
	for _, m := range ms {
		if proxy.HeaderMatches(m, hh) {
			return true
		}
	}
	return false
}
