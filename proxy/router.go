package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/policy"
)

var errRouteTimeout = errors.New("route timeout")

// router is a listener's router filter (Envoy's Router::Filter, source/common/router/router.h): for each
// request the connection manager routed, it sends upstream requests (upstream_request.go) to the
// route's cluster, one at a time, and decides after each whether to retry (the route's retry policy,
// adjusted by the x-envoy-* request headers of router_headers.go, through policy.RetryState), with
// back-off and under the route timeout; then it relays the response or answers for the upstream.
type router struct {
	clusters map[string]*cluster
	hcm      downstream
	rc       *config.RouteConfig // the listener's route configuration (its header mutations)
	// vclusters are the virtual clusters of rc's virtual hosts that have some.
	vclusters map[*config.VirtualHost]*vhostClusters
	clk       clock.Clock
	// realClock: clk is clock.Real, so the route deadline can bound an exchange as a socket deadline.
	realClock bool
	seeds     seeds
	hostname  string // the machine's, for %HOSTNAME%
	bufs      sync.Pool
	forwards  sync.Pool // of *forward: one per request in flight, reused
	onRequest func(id string, attempts int)
	// tracer and prop are set on a traced listener (see tracing.go); nil: no spans, no trace headers.
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// downstream is what the router needs of its connection manager (Envoy's
// StreamDecoderFilterCallbacks): local replies, and the downstream stats of what it answers.
type downstream interface {
	localReply(w http.ResponseWriter, r *http.Request, hdr http.Header, code int, body string)
	countStatus(code int)
	downstreamGone(r *http.Request)
	bodyError(w http.ResponseWriter, r *http.Request, err error)
	streamDurationReached(w http.ResponseWriter, r *http.Request, complete bool)
	streamIdleTimedOut(w http.ResponseWriter, r *http.Request, complete bool)
}

func newRouter(clusters map[string]*cluster, clk clock.Clock, sd seeds) *router {
	_, real := clk.(clock.Real)
	hostname, _ := os.Hostname()
	return &router{
		clusters: clusters, clk: clk, realClock: real, seeds: sd, hostname: hostname,
		bufs: sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }},
		forwards: sync.Pool{New: func() any {
			f := &forward{extra: make(http.Header, 8)}
			f.attachFn, f.detachFn = f.attach, f.att.release
			return f
		}},
	}
}

// forward sends a routed request upstream, to cl (the route's cluster as the connection manager chose
// it), and answers it; stream is the route's max_stream_duration.
func (rt *router) forward(w http.ResponseWriter, r *http.Request, vh *config.VirtualHost, route *config.Route, cl *cluster, body requestBody, stream streamLimit) {
	f := rt.forwards.Get().(*forward)
	*f = forward{rt: rt, w: w, r: r, vh: vh, route: route, cl: cl, body: body, extra: f.extra, attachFn: f.attachFn, detachFn: f.detachFn, uri: r.RequestURI,
		streamEnd: stream.end, grpcTimeout: stream.grpcTimeout, idle: stream.idle, grpc: isGrpcRequest(r)}
	if len(f.uri) == 0 || f.uri[0] != '/' {
		f.uri = r.URL.RequestURI() // absolute form: the upstream gets the origin form
	}
	f.host, f.hdr = r.Host, r.Header
	if vcs := rt.vclusters[vh]; vcs != nil {
		f.vc = vcs.match(r) // on the downstream's headers (Filter::decodeHeaders, router.cc)
	}
	if rc := rt.rc; rc != nil && !(route.RequestHeaders.Empty() && vh.RequestHeaders.Empty() && rc.RequestHeaders.Empty()) {
		f.hdr = r.Header.Clone() // the upstream request's headers: the downstream's, mutated
		fc := formatContext{r: r, req: f.hdr, start: rt.clk.Now(), route: route, cluster: cl.name, hostname: rt.hostname}
		mutateHeaders(f.hdr, &fc, route.RequestHeaders, vh.RequestHeaders, rc.RequestHeaders)
	}
	if a := &route.Action; a.PrefixRewrite != "" || a.RegexRewrite != nil {
		f.rewritePath()
	}
	if route.Action.HostRewrite != "" {
		f.host = route.Action.HostRewrite // host_rewrite_literal (RouteEntryImplBase::finalizeRequestHeaders)
	}
	f.ab = h1.AborterFrom(r.Context())
	if f.si = infoOf(r); f.si != nil {
		f.si.cluster = cl.name
	}
	if rt.tracer != nil {
		if sp := trace.SpanFromContext(r.Context()); sp.SpanContext().IsValid() {
			f.span = sp
		}
	}
	f.run()
	*f = forward{extra: f.extra, attachFn: f.attachFn, detachFn: f.detachFn} // nothing of the request is kept
	rt.forwards.Put(f)
}

// rewritePath applies the route's prefix_rewrite or regex_rewrite to the request target, as Envoy's
// RouteEntryImplBase::finalizePathHeader (source/common/router/config_impl.cc): prefix_rewrite swaps
// the matched part of the path (the prefix, or the whole path for a path or safe_regex match) and keeps
// the rest, query included; regex_rewrite replaces every match in the path without its query string,
// then puts the query back. The original target goes upstream in x-envoy-original-path.
func (f *forward) rewritePath() {
	path, query := f.uri, ""
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path, query = path[:i], path[i:]
	}
	f.origPath = f.uri
	a, m := &f.route.Action, &f.route.Match
	if rr := a.RegexRewrite; rr != nil {
		f.uri = rr.Pattern.ReplaceAllString(path, rr.Substitution) + query
		return
	}
	n := len(path)
	if !m.IsPath && m.Regex == nil {
		n = min(len(m.Prefix), n)
	}
	f.uri = a.PrefixRewrite + path[n:] + query
}

// forward is one downstream request on its way through the upstream attempts.
type forward struct {
	rt    *router
	w     http.ResponseWriter
	r     *http.Request
	vh    *config.VirtualHost
	route *config.Route
	cl    *cluster
	vc    *vclusterStats // the request's virtual cluster; nil: its virtual host has none
	body  requestBody
	start time.Time
	span  trace.Span // the server span when the request is traced; nil otherwise
	// deadline is the route timeout's end (zero: none); rctx its context once made (see ctx).
	deadline time.Time
	rctx     context.Context
	rcancel  context.CancelFunc
	uri      string      // the request target sent upstream (origin form)
	host     string      // the Host sent upstream: the downstream's, or host_rewrite_literal
	hdr      http.Header // the headers sent upstream: the downstream's, or a mutated copy
	origPath string      // the downstream's request target when the route rewrote it ("": not rewritten)
	// out is the upstream request of the current attempt; extra its headers added by the router (reused
	// from request to request), scratch the backing of their values.
	out     h1.Request
	ab      *h1.Aborter // the downstream connection's: interrupts the attempt under way
	extra   http.Header
	scratch [5]string
	// rng is the request's random stream (back-off jitter, picks), derived from its x-request-id.
	rng rand.PCG
	// att is what the attempt under way holds once its pool attached it (attachFn: f.attach, detachFn:
	// f.att.release, both made once per forward); rqOverflow says that attach refused it at max_requests.
	att        attachment
	attachFn   func() bool
	detachFn   func()
	rqOverflow bool
	// softPerTry, set on the attempts of a hedged request, is what their per-try timeout calls instead
	// of resetting them (see hedge.go).
	softPerTry func(cl *cluster, index int)
	// streamEnd is the end of the stream's max_stream_duration (zero: none); byDuration: it comes before
	// the route timeout, so it is the deadline.
	streamEnd  time.Time
	byDuration bool
	// grpcTimeout replaces the request's grpc-timeout upstream ("": kept as it is).
	grpcTimeout string
	// grpc: the request is gRPC (Envoy's router's grpc_request_, from its content-type).
	grpc bool
	// idle is the stream idle timer (nil: none): when it fires, the request's context ends.
	idle *streamIdle
	// si is the request's streamInfo for the access logs (nil: none).
	si *streamInfo
}

// run is the forward/retry loop: an upstream request, then the retry decision (Envoy's
// Filter::onUpstreamHeaders / onUpstreamReset with RetryStateImpl, source/common/router/router.cc and
// retry_state_impl.cc), until an answer is final.
func (f *forward) run() {
	f.start = f.rt.clk.Now()
	reqID := headerValue(f.r.Header, hdrRequestID)
	if reqID == "" {
		reqID = newRequestID()
	}
	f.rt.seeds.request(&f.rng, reqID, saltRouter)
	rp, timeout := f.effectivePolicy()
	if timeout > 0 {
		f.deadline = f.start.Add(timeout)
	}
	if !f.streamEnd.IsZero() && (f.deadline.IsZero() || f.streamEnd.Before(f.deadline)) {
		f.deadline, f.byDuration = f.streamEnd, true
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
	var on policy.RetryOn
	if rp != nil {
		on, _ = policy.ParseRetryOn(rp.RetryOn) // validated when the config was loaded
		if len(rp.RetriableRequestHeaders) > 0 && !f.retriableRequest(rp.RetriableRequestHeaders) {
			// retriable_request_headers: a request none of them matches is not retried, whatever its
			// conditions, x-envoy-retry-on included (RetryStateImpl, retry_state_impl.cc, sets
			// retry_on_ to 0), so its body is not held for a retry either.
			on = 0
		}
		rs = policy.NewRetryState(on, rp.NumRetries).WithStatusCodes(rp.RetriableStatusCodes)
	}
	mirrors := f.drawMirrors(reqID)
	if f.body.replay != nil && len(mirrors) > 0 {
		// A streamed body is not held whole for a mirror (see replay_body.go): the mirrors are given
		// up, as for a body beyond the buffer limit.
		f.cl.st.retryOrShadowAbandoned.Inc()
		mirrors = nil
	}
	if f.body.rest != nil && f.body.replay == nil && (on != 0 || len(mirrors) > 0) {
		// The body is larger than the buffer limit, so it cannot be sent again: Envoy gives up
		// the retry and the mirrors and counts it once (Router::Filter::decodeData,
		// source/common/router/router.cc: retry_or_shadow_abandoned, retry_state_.reset(),
		// active_shadow_policies_.clear()); the request streams on.
		f.cl.st.retryOrShadowAbandoned.Inc()
		rs, mirrors = policy.NewRetryState(0, 0), nil
	}
	if len(mirrors) > 0 {
		f.mirror(mirrors, reqID, timeout)
	}
	var tried map[*host]bool // hosts already tried: only a retry's host selection reads it
	hash := f.hash()

	attempts := 0
	if si := f.si; si != nil {
		defer func() { si.attempts = attempts }()
	}
	if f.rt.onRequest != nil {
		defer func() { f.rt.onRequest(reqID, attempts) }()
	}
	if f.span != nil {
		f.span.SetAttributes(AttrRequestID.String(reqID), AttrCluster.String(f.cl.name))
		defer func() { f.span.SetAttributes(AttrAttempts.Int(attempts)) }()
	}
	holdingRetry, abandoned := false, false
	release := func() {
		if holdingRetry {
			f.cl.rm.ReleaseRetry()
			holdingRetry = false
		}
	}
	defer release()
	if rp != nil && rp.PerTryTimeout > 0 && f.hedgeOnPerTryTimeout() {
		attempts = f.hedged(rp, rs, on != 0 && f.body.rest == nil, reqID, hash)
		return
	}
	for n := 1; ; n++ {
		a := f.try(rp, reqID, n, hash, tried)
		withGrpcStatus(&a)
		if a.host != nil {
			attempts++
		}
		release()
		if err := f.body.readErr(); err != nil {
			f.abandon(a) // the downstream's body failed mid-stream: answered as its read error
			if f.idle.fired() {
				f.streamEnded() // the stream idle timeout ended the read
			} else {
				f.rt.hcm.bodyError(f.w, f.r, err)
			}
			return
		}
		if rp := f.body.replay; rp != nil && on != 0 && !abandoned {
			if _, over, _ := rp.state(); over {
				// The streamed body outgrew the buffer limit: no retry can send it again
				// (Filter::decodeData, router.cc: retry_or_shadow_abandoned, retry_state_.reset()).
				f.cl.st.retryOrShadowAbandoned.Inc()
				rs, abandoned = policy.NewRetryState(0, 0), true
			}
		}
		if f.timedOut() {
			f.abandon(a)
			f.routeTimeout(n)
			return
		}
		if f.r.Context().Err() != nil {
			f.abandon(a) // the downstream went away (nobody to answer), or the stream idle timeout
			f.streamEnded()
			return
		}
		if a.noHealthy {
			if f.span != nil {
				f.span.AddEvent(EventNoHealthyUpstream)
			}
			f.cl.st.cxNoneHealthy.Inc()
			f.si.fail(flagNoHealthyUpstream, "no_healthy_upstream")
			f.upstreamLocalReply(http.StatusServiceUnavailable, "no healthy upstream", n, nil)
			return
		}
		d, retrySuccess := rs.Decide(a.outcome, f.cl.rm.TryAcquireRetry)
		if retrySuccess {
			f.cl.st.rqRetrySuccess.Inc()
			if f.vc != nil {
				f.vc.rqRetrySuccess.Inc()
			}
		}
		switch d {
		case policy.Retry:
			if tried == nil {
				tried = make(map[*host]bool, 2)
			}
			tried[a.host] = true
			if backoff == nil { // the back-off starts at the first retry
				backoff = policy.NewBackoff(rp.BaseInterval, rp.MaxInterval)
			}
			holdingRetry = true
			a.charge(true)
			f.cl.st.rqRetry.Inc()
			if f.vc != nil {
				f.vc.rqRetry.Inc()
			}
			a.cl.retryScheduled(a.index, a.outcome)
			delay := f.backoff(a, rp, backoff)
			f.abandon(a)
			if f.span != nil {
				retryEvent(f.span, a.outcome, n, delay)
			}
			if !f.sleep(f.ctx(), delay) {
				if f.timedOut() {
					f.routeTimeout(n)
				} else {
					f.streamEnded()
				}
				return
			}
			continue
		case policy.LimitExceeded:
			f.cl.st.rqRetryLimitExceeded.Inc()
			f.si.setFlag(flagUpstreamRetryLimitExceeded) // URX (Filter::onUpstreamHeaders / onUpstreamAbort)
			if f.vc != nil {
				f.vc.rqRetryLimitExceeded.Inc()
			}
			if f.span != nil {
				f.span.AddEvent(EventRetryLimit, trace.WithAttributes(AttrAttempt.Int(n)))
			}
		case policy.RetryOverflow:
			f.cl.st.rqRetryOverflow.Inc()
			f.si.setFlag(flagUpstreamOverflow) // UO: the retry breaker (RetryStatus::NoOverflow)
			if f.vc != nil {
				f.vc.rqRetryOverflow.Inc()
			}
			if f.span != nil {
				f.span.AddEvent(EventRetryOverflow, trace.WithAttributes(AttrBreaker.String("max_retries"), AttrAttempt.Int(n)))
			}
		}
		f.finish(a, n)
		return
	}
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

// streamEnded answers a request whose context ended before its response started: its stream idle
// timeout fired (the connection manager's "stream timeout", ActiveStream::onIdleTimeout), or the
// downstream went away.
func (f *forward) streamEnded() {
	if f.idle.fired() {
		f.rt.hcm.streamIdleTimedOut(f.w, f.r, f.body.complete())
		return
	}
	f.rt.hcm.downstreamGone(f.r)
}

// timedOut reports whether the route timeout has passed.
func (f *forward) timedOut() bool { return !f.deadline.IsZero() && !f.rt.clk.Now().Before(f.deadline) }

// backoff is the delay before a retry: the rate-limited back-off when the route has one and the
// response carries one of its reset headers, else the exponential back-off.
func (f *forward) backoff(a upstreamRequest, rp *config.RetryPolicy, exp *policy.Backoff) time.Duration {
	if rl := rp.RateLimited; rl != nil && a.resp != nil {
		if d, ok := policy.RateLimitedDelay(rl.ResetHeaders, rl.MaxInterval, a.resp.Header.Get, f.rt.clk.Now(), &f.rng); ok {
			f.cl.st.rqRetryBackoffRateLimited.Inc()
			return d
		}
	}
	f.cl.st.rqRetryBackoffExponential.Inc()
	return exp.Next(&f.rng)
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

// sleep waits for the back-off delay; false when the route timeout or the downstream ended the wait.
func (f *forward) sleep(ctx context.Context, d time.Duration) bool {
	return clock.Sleep(ctx, f.rt.clk, d)
}

// finish sends the final attempt's outcome to the client: the upstream response, or a local reply.
func (f *forward) finish(a upstreamRequest, n int) {
	defer a.done()
	// Envoy's body for an upstream reset (Filter::onUpstreamAbort, source/common/router/router.cc) says
	// "retried and the latest" once the request was retried.
	resetBody := "upstream connect error or disconnect/reset before headers. reset reason: "
	if n > 1 {
		resetBody = "upstream connect error or disconnect/reset before headers. retried and the latest reset reason: "
	}
	if f.si != nil && a.host != nil {
		f.si.upstream = a.host.addr
	}
	// The response flag and details of each end are Envoy's (Filter::onUpstreamAbort with
	// streamResetReasonToResponseFlag, router.cc): UT for a per-try timeout, UF a connection failure,
	// UO an overflow, UC a connection terminated; the details name the reset reason.
	if a.outcome.Kind == policy.Response {
		f.relay(a, n)
		return
	}
	code, flag := failureReply(a.outcome.Kind, a.resetReason)
	switch flag {
	case flagUpstreamRequestTimeout:
		f.si.fail(flag, "upstream_per_try_timeout")
		f.upstreamLocalReply(code, "upstream request timeout", n, nil)
	case flagUpstreamConnectionFailure:
		reason := connectFailureReason(a.connErr)
		f.si.fail(flag, resetDetails(reason))
		f.upstreamLocalReply(code, resetBody+reason, n, nil)
	case flagUpstreamOverflow:
		f.si.fail(flag, resetDetails("overflow"))
		f.upstreamLocalReply(code, resetBody+"overflow", n, overloaded)
	case flagUpstreamRemoteReset:
		f.si.fail(flag, resetDetails(a.resetReason))
		f.upstreamLocalReply(code, resetBody+a.resetReason, n, nil)
	default:
		f.si.fail(flag, resetDetails("connection termination"))
		f.upstreamLocalReply(code, resetBody+"connection termination", n, nil)
	}
}

// failureReply is the router's local reply to a final attempt that ended without a response (kind is
// not policy.Response): its status and response flag, as Envoy's Filter::onUpstreamAbort maps the
// reset reason (streamResetReasonToResponseFlag, source/common/router/router.cc) — UT 504 for a
// per-try timeout, UF 503 for a connection failure, UO 503 for an overflow (with x-envoy-overloaded),
// UR 503 for an HTTP/2 stream the upstream reset (resetReason, Envoy's words, other than "connection
// termination"), else UC 503 for a connection terminated.
func failureReply(kind policy.OutcomeKind, resetReason string) (int, responseFlags) {
	switch kind {
	case policy.PerTryTimeout:
		return http.StatusGatewayTimeout, flagUpstreamRequestTimeout
	case policy.ConnectFailure:
		return http.StatusServiceUnavailable, flagUpstreamConnectionFailure
	case policy.Overflow:
		return http.StatusServiceUnavailable, flagUpstreamOverflow
	}
	if resetReason != "" && resetReason != "connection termination" {
		return http.StatusServiceUnavailable, flagUpstreamRemoteReset
	}
	return http.StatusServiceUnavailable, flagUpstreamConnectionTermination
}

// connectFailureReason is the reset reason of an attempt whose connection failed, as Envoy's router
// writes it (Filter::onPoolFailure maps the pool's failure to a StreamResetReason, and
// Http::Utility::resetReasonToString names it, source/common/http/utility.cc): "connection timeout" for
// the connect_timeout, else "remote connection failure" with the transport failure reason its socket
// gave ("delayed connect error: Connection refused", strerror's words, as ConnectionImpl's
// errorDetails).
func connectFailureReason(err error) string {
	if reason, ok := tlsFailureReason(err); ok {
		return "remote connection failure, transport failure reason: " + reason
	}
	var ne net.Error
	if errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne) && ne.Timeout() {
		return "connection timeout"
	}
	var errno syscall.Errno
	if errors.As(err, &errno) {
		msg := errno.Error()
		return "remote connection failure, transport failure reason: delayed connect error: " + strings.ToUpper(msg[:1]) + msg[1:]
	}
	return "remote connection failure"
}

// resetDetails is %RESPONSE_CODE_DETAILS% for an upstream reset before the response, as Envoy's
// Filter::onUpstreamAbort writes it: upstream_reset_before_response_started{reason|transport failure
// reason}, spaces as underscores.
func resetDetails(reason string) string {
	reason = strings.Replace(reason, ", transport failure reason: ", "|", 1)
	return "upstream_reset_before_response_started{" + strings.ReplaceAll(reason, " ", "_") + "}"
}

// overloaded marks a local circuit-breaker overflow reply.
var overloaded = http.Header{"X-Envoy-Overloaded": {"true"}}

// upstreamLocalReply answers for a failed upstream, charging the code to the cluster as Envoy does.
func (f *forward) upstreamLocalReply(code int, body string, n int, hdr http.Header) {
	f.cl.st.status(code)
	f.cl.st.rqCompleted.Inc()
	f.vc.response(code)
	if f.vh.IncludeAttemptCountInResponse {
		f.w.Header().Set(hdrAttemptCount, strconv.Itoa(n))
	}
	f.mutateResponse(f.w.Header(), code, "") // Envoy's router applies them to its local replies too (modify_headers_)
	f.rt.hcm.localReply(f.w, f.r, hdr, code, body)
}

// routeTimeout answers 504 when the route timeout fired during attempt n: never retried. Like every
// local reply of the router, it carries x-envoy-attempt-count when the virtual host asks (Envoy's
// Filter::modify_headers_, applied to the local replies of onUpstreamAbort, router.cc).
func (f *forward) routeTimeout(n int) {
	if f.byDuration {
		// The stream's max duration, not the router's timeout: the connection manager answers
		// (onStreamMaxDurationReached) and the router's attempt is reset as it is destroyed.
		f.rt.hcm.streamDurationReached(f.w, f.r, f.body.complete())
		return
	}
	f.cl.st.rqTimeout.Inc()
	if f.vc != nil {
		f.vc.rqTimeout.Inc()
	}
	f.si.fail(flagUpstreamRequestTimeout, "upstream_response_timeout") // Filter::onResponseTimeout
	f.upstreamLocalReply(http.StatusGatewayTimeout, "upstream request timeout", n, nil)
}

// relay streams the upstream response to the client. A failure mid-body resets the downstream
// connection, as Envoy does once the response has started.
func (f *forward) relay(a upstreamRequest, n int) {
	a.charge(false)
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
	f.mutateResponse(hdr, resp.StatusCode, a.host.addr)
	if si := f.si; si != nil {
		// The headers' values belong to the upstream connection once its body is closed: the
		// access log reads a copy. RESPONSE_DURATION ends here, at the response's headers.
		si.respHeader, si.upstreamRx, si.code = hdr.Clone(), f.rt.clk.Now(), resp.StatusCode
		si.setDetails("via_upstream")
	}
	f.idle.touch() // the response headers are activity of the stream (resetIdleTimer)
	f.w.WriteHeader(resp.StatusCode)
	f.rt.hcm.countStatus(resp.StatusCode)
	var body io.Reader = resp.Body
	if it := a.idle; it != nil {
		// The idle timeout goes on through the body: when it fires now, the attempt is reset and so
		// is the downstream (onPerTryTimeoutCommon cannot retry a started response).
		cl, h, index := a.cl, a.host, a.index
		it.relaying(func() {
			cl.st.rqPerTryIdleTimeout.Inc()
			cl.st.rqTxReset.Inc()
			h.rqTimeout.Add(1)
			cl.recordOutcome(index, policy.Outcome{Kind: policy.PerTryTimeout})
		})
		body = idleBody{resp.Body, it}
	}
	if f.idle != nil {
		body = activeReader{body, f.idle} // each piece relayed re-arms the stream idle timer
	}
	bp := f.rt.bufs.Get().(*[]byte)
	defer f.rt.bufs.Put(bp)
	var dst io.Writer = f.w
	if fl, ok := f.w.(http.Flusher); ok && resp.ContentLength < 0 {
		// A response of unknown length may be a stream (gRPC's, whose client answers each message):
		// each piece goes to the client as it comes, as Envoy encodes each upstream data frame
		// (Filter::onUpstreamData, router.cc), not when the downstream codec's buffer fills.
		dst = flushWriter{f.w, fl}
	}
	sent, err := io.CopyBuffer(dst, body, *bp)
	if err == nil && len(resp.Trailer) > 0 {
		forwardTrailers(f.w, resp.Trailer) // gRPC's status; an HTTP/1 downstream drops them
	}
	a.grpcDone(err == nil)
	f.si.sent(resp.StatusCode, sent)
	// upstream_rq_time is Envoy's: from the request's start in the router (its downstream request
	// complete, for a buffered body) to the end of the response, retries and back-offs included
	// (Filter::onUpstreamComplete, router.cc, from downstream_request_complete_time_).
	f.cl.st.rqTime.Record(f.rt.clk.Since(f.start))
	f.vc.recordTime(f.rt.clk.Since(f.start)) // CodeStatsImpl::chargeResponseTiming
	if err != nil {
		switch {
		case f.idle.fired():
			// The stream idle timeout, once the response has started: the stream is reset
			// (onIdleTimeout's local reply cannot be sent), and so is the attempt.
			f.rt.hcm.streamIdleTimedOut(nil, f.r, true)
			f.cl.st.rqTxReset.Inc()
		case f.timedOut() && f.byDuration:
			f.rt.hcm.streamDurationReached(nil, f.r, true) // counted; the downstream is reset below
			f.cl.st.rqTxReset.Inc()
		case f.timedOut():
			f.cl.st.rqTimeout.Inc()
			if f.vc != nil {
				f.vc.rqTimeout.Inc()
			}
			f.cl.st.rqTxReset.Inc() // Filter::onResponseTimeout resets the upstream request mid-body
			f.si.failStarted(flagUpstreamRequestTimeout, "upstream_response_timeout")
		case a.idle != nil && a.idle.hasFired():
			f.si.failStarted(flagUpstreamRequestTimeout, "upstream_per_try_idle_timeout")
		case f.r.Context().Err() != nil || isWriteError(err):
			// The client went away mid-response: the connection manager resets the stream with DC.
			f.si.failStarted(flagDownstreamConnectionTermination, "downstream_remote_disconnect")
		case midBodyResetReason(err) != "":
			// An HTTP/2 upstream reset the stream mid-body (RST_STREAM): its reset reason is RemoteReset
			// (or RemoteRefusedStreamReset), which Filter::streamResetReasonToResponseFlag (router.cc)
			// maps to UR, the details naming it as onUpstreamReset does. Its pool counts a remote reset
			// in upstream_rq_rx_reset whenever it comes (MultiplexedActiveClientBase::onStreamReset,
			// source/common/http/conn_pool_base.cc).
			if midBodyResetReason(err) == "remote_reset" {
				f.cl.st.rqRxReset.Inc()
			}
			f.si.failStarted(flagUpstreamRemoteReset, "upstream_reset_after_response_started{"+midBodyResetReason(err)+"}")
		default:
			// The upstream ended or reset its connection mid-body: Filter::onUpstreamAbort once the
			// response started (router.cc) sets UC with these details.
			f.si.failStarted(flagUpstreamConnectionTermination, "upstream_reset_after_response_started{connection_termination}")
		}
		panic(http.ErrAbortHandler)
	}
}

// PickWeightedCluster draws the cluster of a weighted_clusters route as Envoy's pickClusterIndex
// (source/common/router/weighted_cluster_specifier.cc): the random value — the request's header_name
// when it has exactly one value that is a base-10 uint64, else the request's draw — modulo the total
// weight falls in one cluster's [begin, begin+weight) range, the clusters laid end to end in order.
func PickWeightedCluster(wc *config.WeightedClusters, h http.Header, random uint64) string {
	if wc.HeaderName != "" {
		if v := h[http.CanonicalHeaderKey(wc.HeaderName)]; len(v) == 1 {
			if n, err := strconv.ParseUint(v[0], 10, 64); err == nil {
				random = n
			}
		}
	}
	selected, end := random%wc.TotalWeight, uint64(0)
	for _, c := range wc.Clusters {
		end += uint64(c.Weight)
		if selected < end {
			if c.ClusterHeader != "" { // the cluster the request names, first value (WeightedClusterEntry)
				return headerValue(h, c.ClusterHeader)
			}
			return c.Name
		}
	}
	return "" // unreachable: selected < TotalWeight, the sum
}

// mutateResponse applies the response header mutations of the route, its virtual host and the route
// configuration (Envoy's RouteEntryImplBase::finalizeResponseHeaders, called from the router's
// onUpstreamHeaders and from its local replies' modify_headers_, source/common/router/router.cc).
// status and upstream (the host's address, "" for a local reply) are for the substitution commands.
func (f *forward) mutateResponse(h http.Header, status int, upstream string) {
	if rc := f.rt.rc; rc != nil && !(f.route.ResponseHeaders.Empty() && f.vh.ResponseHeaders.Empty() && rc.ResponseHeaders.Empty()) {
		fc := formatContext{r: f.r, req: f.r.Header, resp: h, status: status, start: f.start, route: f.route,
			cluster: f.cl.name, upstream: upstream, hostname: f.rt.hostname}
		mutateHeaders(h, &fc, f.route.ResponseHeaders, f.vh.ResponseHeaders, rc.ResponseHeaders)
	}
}

// midBodyResetReason is the reset reason, as the response details write it (spaces as '_',
// StringUtil::replaceAllEmptySpace), of an upstream response body that ended with the upstream's
// RST_STREAM: "remote_refused_stream_reset" for REFUSED_STREAM, else "remote_reset"
// (Http::Utility::resetReasonToString, source/common/http/utility.cc). "": no stream reset (a connection
// lost, or an HTTP/1.1 upstream).
func midBodyResetReason(err error) string {
	var se http2.StreamError
	switch {
	case !errors.As(err, &se):
		return ""
	case se.Code == http2.ErrCodeRefusedStream:
		return "remote_refused_stream_reset"
	}
	return "remote_reset"
}

// flushWriter flushes each write through to the client.
type flushWriter struct {
	w io.Writer
	f http.Flusher
}

func (w flushWriter) Write(p []byte) (int, error) {
	n, err := w.w.Write(p)
	if err == nil {
		w.f.Flush()
	}
	return n, err
}

// isWriteError reports whether err is a failed write, which relay's copy only gets from the downstream.
func isWriteError(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "write"
}
