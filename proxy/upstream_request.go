package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/policy"
)

var (
	errPerTryTimeout     = errors.New("per-try timeout")
	errPerTryIdleTimeout = errors.New("per-try idle timeout")
)

// upstreamRequest is one attempt of a request at a host and its outcome (Envoy's UpstreamRequest,
// source/common/router/upstream_request.h): the breaker slots it holds, its response, its span.
type upstreamRequest struct {
	outcome   policy.Outcome
	noHealthy bool           // no host could be picked: "no healthy upstream"
	resp      *http.Response // with outcome Response: headers received, body still to read
	charged   bool           // its code is counted (see charge)
	host      *host
	vc        *vclusterStats // the request's virtual cluster (nil: none)
	index     int            // the host's index in the cluster
	cancel    context.CancelCauseFunc
	cl        *cluster      // the cluster the attempt is for
	att       *attachment   // what the attempt holds once attached (the forward's); nil before
	sent      time.Time     // when the attempt was sent
	took      time.Duration // from send to response headers
	span      trace.Span    // the attempt's client span when traced; nil otherwise
	idle      *idleTimer    // its per_try_idle_timeout; nil: none
	connErr   error         // with outcome ConnectFailure: why the connection failed
	// grpc: the request is gRPC (its content-type); grpcDeferred: its response had no grpc-status in
	// its headers, so the host's rq_success / rq_error waits for the trailers (see grpcDone).
	grpc, grpcDeferred bool
	// resetReason is Envoy's reset reason of an HTTP/2 stream the upstream reset or whose connection
	// was lost (see h2ResetError); "" for the HTTP/1.1 pool's resets (a connection termination).
	resetReason string
}

// attachment is what an attempt holds once its pool attached it to a connection (see attach): a
// max_requests slot, and a count in upstream_rq_active and the host's rq_active. The connection's own
// max_connections slot is its pool's. It is given back when the exchange ends, before the connection
// serves another request (Envoy's onStreamClosed, conn_pool_base.cc), or at the latest by done.
type attachment struct {
	cl       *cluster
	host     *host
	attached bool // the attempt had its connection
	held     bool // what release still has to give back
}

func (t *attachment) release() {
	if !t.held {
		return
	}
	t.held = false
	t.cl.st.rqActive.Dec()
	t.host.rqActive.Add(-1)
	t.cl.rm.ReleaseRequest()
}

// done releases the attempt's breaker slots once its response is finished with, and ends its span.
func (a *upstreamRequest) done() {
	if a.att != nil {
		a.att.release()
	}
	if a.idle != nil {
		a.idle.stop() // before the next attempt can register its exchange with the aborter
	}
	a.cancel(nil)
	if a.span != nil {
		a.span.End()
		a.span = nil
	}
}

// attach is the pool's Request.Attach for the attempt under way (f.att): once the attempt has its
// connection, it takes a max_requests slot and counts the request, as Envoy's
// ConnPoolImplBase::attachStreamToClient (source/common/conn_pool/conn_pool_base.cc) does; false: at
// max_requests, the attempt overflows (upstream_rq_pending_overflow) and the connection serves another.
func (f *forward) attach() bool {
	if !f.att.take() {
		f.rqOverflow = true
		return false
	}
	if f.vc != nil { // the virtual cluster counts its attempts at the same moment (router.cc, onPoolReady)
		f.vc.rqTotal.Inc()
	}
	return true
}

// take takes a max_requests slot for an attempt that has its connection and counts the request;
// false: at max_requests.
func (t *attachment) take() bool {
	if !t.cl.rm.TryAcquireRequest() {
		return false
	}
	t.cl.st.rqTotal.Inc()
	t.cl.st.rqActive.Inc()
	t.host.rqTotal.Add(1)
	t.host.rqActive.Add(1)
	t.attached, t.held = true, true
	return true
}

// try sends one attempt to the next host and waits for its response headers or its failure.
func (f *forward) try(rp *config.RetryPolicy, reqID string, n int, hash uint64, tried map[*host]bool) upstreamRequest {
	cl := f.cl.newest() // an endpoint update since the request began: its host set (see cluster.newest)
	if !cl.trafficSeen.Load() {
		cl.trafficSeen.Store(true)
	}
	var perTry, idle time.Duration
	if rp != nil {
		perTry, idle = rp.PerTryTimeout, rp.PerTryIdleTimeout
	}
	// An attempt needs a context of its own only for its per-try (idle) timeout: otherwise it ends with
	// the request's (route timeout, downstream gone), and done closes its response.
	actx, cancel := f.r.Context(), noCancel
	if perTry > 0 || idle > 0 {
		actx, cancel = context.WithCancelCause(f.ctx())
	}
	a := upstreamRequest{cancel: cancel, index: -1, cl: cl, vc: f.vc, grpc: f.grpc}
	// The host first, then its connection pool (Envoy's router picks the host, then asks its pool for a
	// stream): the circuit breakers are the pool's (see h1.Pool.get and attach). A local overflow is
	// answered at once, never retried, never an outlier signal.
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
	f.out = h1.Request{Method: f.r.Method, URI: f.uri, Host: f.host, Header: f.hdr, Omit: routerHeaderSet,
		Extra: f.extra, Body: f.body.buf, Abort: f.ab, Attach: f.attachFn, Detach: f.detachFn}
	switch {
	case f.body.replay != nil: // streamed: each attempt reads it from its start (see replay_body.go)
		f.out.BodyRest, f.out.BodyLength = f.body.replay.reader(), f.body.length
	case f.body.rest != nil:
		f.out.BodyRest, f.out.BodyLength = f.body.rest, f.body.length
	}
	switch {
	case f.rt.realClock:
		f.out.Deadline = f.deadline // the route timeout as a socket deadline: no timer per request
	case actx == f.r.Context():
		actx = f.ctx() // on another clock, the route context's timer ends the exchange (see ctx)
	}
	// x-forwarded-proto is the downstream's, set by the connection manager (forwarding.mutate).
	f.scratch[0] = reqID
	f.extra[hdrRequestID] = f.scratch[0:1:1]
	if f.origPath != "" {
		f.scratch[4] = f.origPath
		f.extra[hdrOriginalPath] = f.scratch[4:5:5]
	}
	if f.grpcTimeout != "" {
		f.extra[hdrGrpcTimeout] = []string{f.grpcTimeout}
	}
	if f.vh.IncludeRequestAttemptCount {
		f.scratch[2] = strconv.Itoa(n)
		f.extra[hdrAttemptCount] = f.scratch[2:3:3]
	}
	var timeout time.Duration // the route timeout (0: none)
	// The stream's max duration is no route timeout to announce (finalTimeout sets none for it).
	if !f.deadline.IsZero() && !f.byDuration {
		timeout = f.deadline.Sub(f.start)
	}
	expectPerTry := perTry
	if f.softPerTry != nil {
		expectPerTry = 0 // hedging: the upstream may take the whole route timeout (setTimeoutHeaders)
	}
	if ms := ExpectedTimeoutMs(f.rt.clk.Since(f.start), timeout, expectPerTry); ms > 0 {
		f.scratch[3] = msString(ms)
		f.extra[hdrExpectedTimeout] = f.scratch[3:4:4]
	}
	if f.span != nil {
		a.span = f.startAttempt(f.r.Context(), &f.out, h, n)
	}

	var timer clock.Timer
	switch {
	case perTry > 0 && f.softPerTry != nil:
		// Hedging: the per-try timeout leaves the attempt running and tells the router
		// (Filter::onSoftPerTryTimeout, router.cc).
		soft, index := f.softPerTry, a.index
		timer = f.rt.clk.AfterFunc(perTry, func() { soft(cl, index) })
	case perTry > 0:
		ab := f.ab
		timer = f.rt.clk.AfterFunc(perTry, func() {
			cancel(errPerTryTimeout) // first: the attempt's outcome is read from its context
			if ab != nil {
				ab.Interrupt()
			}
		})
	}
	if idle > 0 {
		a.idle = newIdleTimer(f.rt.clk, idle, cancel, f.ab)
	}
	a.sent = f.rt.clk.Now()
	f.att, f.rqOverflow = attachment{cl: cl, host: h}, false
	a.att = &f.att
	resp, err := cl.upstreams[a.index].RoundTrip(actx, &f.out)
	a.took = f.rt.clk.Since(a.sent)
	if err != nil && !f.att.attached && !errors.As(err, new(*connectError)) {
		if timer != nil {
			timer.Stop()
		}
		return f.unattached(a, actx, err, n)
	}
	if timer != nil && !timer.Stop() && err == nil && f.softPerTry == nil {
		// The per-try timeout fired as the headers arrived: the attempt's context is gone, so is the body.
		resp.Body.Close()
		err = errPerTryTimeout
	}
	if a.idle != nil && err == nil && !a.idle.active() {
		// The idle timeout fired as the headers arrived: the attempt is reset, as above.
		resp.Body.Close()
		err = errPerTryIdleTimeout
	}
	switch {
	case err == nil:
		a.outcome = policy.Outcome{Kind: policy.Response, Status: resp.StatusCode,
			HeadersMatched: rp != nil && anyHeaderMatches(rp.RetriableHeaders, resp.Header),
			RateLimited:    len(resp.Header[hdrRateLimited]) > 0}
		a.resp = resp
		// Its code is charged once the router has decided: to upstream_rq_<code> when the response
		// goes to the client, to retry.upstream_rq_<code> when it is retried (see charge).
		if headerValue(resp.Header, hdrImmediateHealthCheckFail) != "" {
			cl.immediateFail(a.index)
		}
	case f.body.readErr() != nil:
		// The downstream's body failed as it streamed: no fault of the host's (the router answers).
		a.outcome = policy.Outcome{Kind: policy.Reset}
		return a
	case context.Cause(actx) == errHedgeLost:
		// Another attempt of a hedged request won: the router resets this one
		// (Filter::resetOtherUpstreams, router.cc), no fault of the host's.
		cl.st.rqTxReset.Inc()
		a.outcome = policy.Outcome{Kind: policy.Reset}
		return a
	case context.Cause(actx) == errPerTryTimeout, context.Cause(actx) == errPerTryIdleTimeout:
		// The router resets the attempt (Filter::onPerTryTimeout → UpstreamRequest::resetStream,
		// router.cc), a local reset its pool counts as upstream_rq_tx_reset (onStreamReset,
		// source/common/http/conn_pool_base.cc); so do the route timeout and the downstream going away.
		// Its idle timeout is the same to the router, counted in upstream_rq_per_try_idle_timeout
		// instead (Filter::onPerTryIdleTimeout → onPerTryTimeoutCommon).
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout}
		if context.Cause(actx) == errPerTryIdleTimeout {
			cl.st.rqPerTryIdleTimeout.Inc()
		} else {
			cl.st.rqPerTryTimeout.Inc()
		}
		cl.st.rqTxReset.Inc()
		h.rqTimeout.Add(1)
		h.rqError.Add(1)
	case errors.As(err, new(*connectError)):
		a.outcome = policy.Outcome{Kind: policy.ConnectFailure, BeforeRequest: true}
		a.connErr = err
		h.rqError.Add(1)
	case f.timedOut() && f.byDuration:
		// The stream's max duration ended the attempt: the router is destroyed and resets it
		// (Filter::onDestroy), no timeout of the host's.
		cl.st.rqTxReset.Inc()
		a.outcome = policy.Outcome{Kind: policy.Reset}
		return a
	case f.timedOut():
		// The route timeout ended the attempt: outlier detection hears of a local-origin timeout.
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout}
		cl.st.rqTxReset.Inc() // Filter::onResponseTimeout resets the attempt
		h.rqTimeout.Add(1)
		h.rqError.Add(1)
	case f.r.Context().Err() != nil:
		cl.st.rqTxReset.Inc()                          // Filter::onDestroy resets the attempt
		a.outcome = policy.Outcome{Kind: policy.Reset} // the downstream went away: nothing to report
		if a.span != nil {
			attemptOutcome(a.span, a.outcome, nil, cl.hosts)
		}
		return a
	default:
		a.outcome = policy.Outcome{Kind: policy.Reset}
		var re *h2ResetError
		if errors.As(err, &re) {
			// An HTTP/2 reset: REFUSED_STREAM (or a stream a GOAWAY left unprocessed) is retriable under
			// refused-stream as well as reset (RetryStateImpl::wouldRetryFromReset,
			// source/common/router/retry_state_impl.cc). Envoy's pool counts upstream_rq_rx_reset for a
			// remote reset, not for a refused stream (MultiplexedActiveClientBase::onStreamReset,
			// source/common/http/conn_pool_base.cc).
			a.outcome.RefusedStream = re.refused
			a.resetReason = re.reason
		}
		if re == nil || !re.refused {
			cl.st.rqRxReset.Inc()
		}
		h.rqError.Add(1)
	}
	evs := cl.recordOutcome(a.index, a.outlierOutcome())
	if a.span != nil {
		attemptOutcome(a.span, a.outcome, evs, cl.hosts)
	}
	return a
}

// unattached ends an attempt that never had its connection: the circuit breakers refused it (the
// pending queue full, or max_requests once it had its connection), or it stopped waiting in the pending
// queue (a timeout, the client gone). No request went to the host: nothing is charged to it, and
// outlier detection hears nothing (Envoy reports to a host's detector only once its pool attached the
// stream).
func (f *forward) unattached(a upstreamRequest, actx context.Context, err error, n int) upstreamRequest {
	cl := a.cl
	a.host, a.index = nil, -1 // no attempt reached a host
	switch {
	case errors.Is(err, h1.ErrOverflow):
		breaker := "max_pending_requests"
		if f.rqOverflow {
			breaker = "max_requests"
		}
		cl.st.rqPendingOverflow.Inc()
		if f.span != nil {
			f.span.AddEvent(EventOverflow, trace.WithAttributes(AttrBreaker.String(breaker), AttrAttempt.Int(n)))
		}
		a.outcome = policy.Outcome{Kind: policy.Overflow}
		return a
	case f.r.Context().Err() != nil:
		a.outcome = policy.Outcome{Kind: policy.Reset} // the downstream went away: nothing to report
	case context.Cause(actx) == errPerTryTimeout:
		// Filter::onPerTryTimeout (router.cc) counts the timeout and cancels the pending stream.
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout}
		cl.st.rqPerTryTimeout.Inc()
	case f.timedOut() || errors.Is(err, os.ErrDeadlineExceeded):
		a.outcome = policy.Outcome{Kind: policy.PerTryTimeout} // the router answers its route timeout
	default:
		a.outcome = policy.Outcome{Kind: policy.Reset}
	}
	if a.span != nil {
		attemptOutcome(a.span, a.outcome, nil, cl.hosts)
	}
	return a
}

// charge counts a response attempt's code once the router has decided what becomes of it, as Envoy's
// Filter::onUpstreamHeaders (source/common/router/router.cc) does: a retried response under the
// cluster's retry.upstream_rq_* stats and as an error of its host (rq_error), the response sent to the
// client under upstream_rq_<code>, upstream_rq_<N>xx and upstream_rq_completed.
func (a *upstreamRequest) charge(retried bool) {
	if a.resp == nil || a.charged {
		return
	}
	a.charged = true
	code := a.resp.StatusCode
	a.vc.response(code) // retried or not: CodeStatsImpl::chargeResponseStat charges the virtual cluster either way
	switch {
	case retried:
		a.cl.st.retried(code)
		a.host.rqError.Add(1)
		return
	case code >= 500:
		a.host.rqError.Add(1)
	case a.grpc:
		// A gRPC response's success is its grpc-status (Filter::handleNon5xxResponseHeaders,
		// router.cc): a trailers-only response's, now; else the trailers' (grpcDone).
		if g, ok := grpcStatusIn(a.resp.Header); ok {
			a.hostResult(grpcToHTTPStatus(g) < 500)
		} else {
			a.grpcDeferred = true
		}
	default:
		a.host.rqSuccess.Add(1)
	}
	a.cl.st.response(code)
}

// grpcDone counts a relayed gRPC response whose success was deferred to its trailers, as Envoy's
// Filter::onUpstreamTrailers (router.cc): a success when the trailers carry a grpc-status that maps
// to no 5xx; an error otherwise, and for a body that ended without trailers (onUpstreamData). complete:
// the body was read to its end (a reset mid-body is no result).
func (a *upstreamRequest) grpcDone(complete bool) {
	if !a.grpcDeferred || !complete {
		return
	}
	a.grpcDeferred = false
	g, ok := grpcStatusIn(a.resp.Trailer)
	a.hostResult(ok && grpcToHTTPStatus(g) < 500)
}

func (a *upstreamRequest) hostResult(success bool) {
	if success {
		a.host.rqSuccess.Add(1)
	} else {
		a.host.rqError.Add(1)
	}
}

// outlierOutcome is the outcome outlier detection hears of: a gRPC request's response with a
// grpc-status in its headers (trailers-only) is reported as Grpc::Utility::grpcToHttpStatus of it, any
// other response as its HTTP status (Filter::onUpstreamHeaders, router.cc, putHttpResponseCode). Envoy
// reads the response headers only: a grpc-status in trailers never reaches outlier detection.
func (a *upstreamRequest) outlierOutcome() policy.Outcome {
	o := a.outcome
	if a.grpc && o.Kind == policy.Response && a.resp != nil {
		if g, ok := grpcStatusIn(a.resp.Header); ok {
			o.Status = grpcToHTTPStatus(g)
		}
	}
	return o
}

// startAttempt starts the CLIENT span of upstream attempt n to host h and injects its context into
// the upstream request, so that the upstream's server span is the attempt's child.
func (f *forward) startAttempt(ctx context.Context, out *h1.Request, h *host, n int) trace.Span {
	hostName, portStr, _ := net.SplitHostPort(h.addr)
	port, _ := strconv.Atoi(portStr)
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(out.Method),
		semconv.ServerAddress(hostName),
		semconv.ServerPort(port),
		semconv.URLFull("http://" + h.addr + out.URI),
		AttrAttempt.Int(n),
		AttrHost.String(h.addr),
		AttrCluster.String(f.cl.name),
	}
	if n > 1 {
		attrs = append(attrs, semconv.HTTPRequestResendCount(n-1))
	}
	ctx, span := f.rt.tracer.Start(ctx, "attempt "+out.Method, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	f.rt.prop.Inject(ctx, propagation.HeaderCarrier(out.Extra))
	return span
}

// noCancel stands for the cancel function of an attempt without a context of its own.
func noCancel(error) {}

// ExpectedTimeoutMs is what Envoy sends upstream as x-envoy-expected-rq-timeout-ms
// (FilterUtility::setTimeoutHeaders, source/common/router/router.cc): the per-try timeout, else the route
// timeout, capped by what is left of the route timeout after the whole milliseconds elapsed since the
// request started — so the first attempt carries the configured timeout exactly — and 1 once none is
// left (0 would mean no timeout). 0: no header (neither timeout is set).
func ExpectedTimeoutMs(elapsed, timeout, perTry time.Duration) int64 {
	global := timeout.Milliseconds()
	expected := perTry.Milliseconds()
	if expected == 0 {
		expected = global
	}
	if expected <= 0 || global <= 0 {
		return max(expected, 0)
	}
	if e := elapsed.Milliseconds(); e < global {
		return min(expected, global-e)
	}
	return 1
}

// abandon releases an attempt that will not be answered to the client. A small body is drained so the
// upstream connection can be reused; a large one closes it.
func (f *forward) abandon(a upstreamRequest) {
	a.charge(false) // a response neither retried nor relayed (the client gone, the route timeout)
	if a.resp != nil {
		if _, err := io.CopyN(io.Discard, a.resp.Body, 64<<10); err == nil {
			// The body goes on: closing it resets the attempt's stream, as Envoy's router resets a
			// response it retries before its end (onUpstreamHeaders) — upstream_rq_tx_reset.
			f.cl.st.rqTxReset.Inc()
		}
		a.resp.Body.Close()
		// No upstream_rq_time: Envoy records it only for the response that completes downstream
		// (Filter::onUpstreamComplete, router.cc), never for one it retries or gives up.
	}
	a.done()
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

// idleTimer is an attempt's per_try_idle_timeout, as Envoy's UpstreamRequest::setupPerTryTimeout and
// resetPerTryIdleTimer (source/common/router/upstream_request.cc): armed when the attempt is sent and
// re-armed by its response headers and by every read of its body that brings bytes. When it fires,
// the attempt is reset (Filter::onPerTryIdleTimeout, router.cc): before the response headers, the
// router handles it as a per-try timeout (retried under 5xx, gateway-error, reset; else 504 "upstream
// request timeout"); once the response is relayed, the downstream is reset mid-body. Bytes only move
// its deadline forward: the one timer, when it fires early, waits again for what is left.
type idleTimer struct {
	idleClock
	// onBody counts the timeout once the response is relayed (set by relaying under the clock's lock;
	// nil before).
	onBody func()
}

func newIdleTimer(clk clock.Clock, d time.Duration, cancel context.CancelCauseFunc, ab *h1.Aborter) *idleTimer {
	it := &idleTimer{}
	it.start(clk, d, func() {
		cancel(errPerTryIdleTimeout) // first: the attempt's outcome is read from its context
		if it.onBody != nil {
			it.onBody()
		}
		if ab != nil {
			ab.Interrupt()
		}
	})
	return it
}

// active reports whether the timer has not fired, and re-arms it (the response headers came).
func (it *idleTimer) active() bool {
	it.touch()
	return !it.hasFired()
}

// relaying sets what the timer counts when it fires while the response is relayed.
func (it *idleTimer) relaying(onBody func()) {
	it.mu.Lock()
	it.onBody = onBody
	it.mu.Unlock()
}

// idleBody is a relayed response body that re-arms its attempt's idle timer as bytes arrive.
type idleBody struct {
	io.ReadCloser
	it *idleTimer
}

func (b idleBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if n > 0 {
		b.it.touch()
	}
	if err == io.EOF {
		b.it.stop() // the response is complete (Filter::onUpstreamComplete ends the attempt's timers)
	}
	return n, err
}
