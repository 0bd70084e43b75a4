package proxy

import (
	"context"
	"errors"
	"maps"
	"net/http"
	"sync"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// errHedgeLost ends the attempts of a hedged request that another attempt's response beat.
var errHedgeLost = errors.New("hedged attempt lost")

// hdrHedgeOnPerTryTimeout turns hedging on ("true") or off ("false") for one request from an internal
// client (FilterUtility::finalHedgingParams, router.cc).
const hdrHedgeOnPerTryTimeout = "X-Envoy-Hedge-On-Per-Try-Timeout"

func init() { routerHeaderSet[hdrHedgeOnPerTryTimeout] = true }

// hedgeOnPerTryTimeout reports whether the request hedges on per-try timeouts: the route's
// hedge_policy, else its virtual host's, overridden by x-envoy-hedge-on-per-try-timeout from an
// internal client.
func (f *forward) hedgeOnPerTryTimeout() bool {
	hp := f.route.Action.HedgePolicy
	if hp == nil {
		hp = f.vh.HedgePolicy
	}
	on := hp != nil && hp.OnPerTryTimeout
	// The connection manager removed the header from an external request (forwarding.mutate).
	switch headerValue(f.r.Header, hdrHedgeOnPerTryTimeout) {
	case "true":
		on = true
	case "false":
		on = false
	}
	return on
}

// hedgeEvent is what an attempt of a hedged request tells its loop: its per-try timeout (soft), or its
// outcome.
type hedgeEvent struct {
	id   int
	soft bool
	cl   *cluster // soft: the cluster the attempt picked from
	host int      // soft: the attempt's host, by its index in cl
	a    upstreamRequest
}

// hedgeAttempt is the loop's view of one attempt.
type hedgeAttempt struct {
	n       int
	cancel  context.CancelCauseFunc
	running bool
	hedged  bool // its per-try timeout started a retry: it is never retried itself (Envoy's retried())
}

// hedged is the forward/retry loop of a request with hedge_on_per_try_timeout, as Envoy's router runs
// it (source/common/router/router.cc): a per-try timeout does not reset its attempt
// (onPerTryTimeoutCommon → onSoftPerTryTimeout) — it records a local-origin timeout for outlier
// detection and, while retries are left and the retry breaker admits it, schedules a retry after the
// back-off (RetryStateImpl::shouldHedgeRetryPerTryTimeout, whatever retry_on says;
// upstream_rq_retry), which runs alongside. No upstream_rq_per_try_timeout is counted. The first
// response that is not to be retried wins and the other attempts are reset (onUpstreamHeaders →
// resetOtherUpstreams); a response that would be retried but cannot be, or a failure, is dropped
// while another attempt may still answer (numRequestsAwaitingHeaders, pending_retries_). Attempts run
// concurrently, each on its own copy of the forward, interrupted through their contexts (the
// connection's aborter serves one exchange at a time). It returns the number of attempts sent.
func (f *forward) hedged(rp *config.RetryPolicy, rs *policy.RetryState, enabled bool, reqID string, hash uint64) (attempts int) {
	rctx := f.ctx()
	var (
		mu       sync.Mutex
		closed   bool
		events   = make(chan hedgeEvent, 64)
		retryDue = make(chan struct{}, 64)
		timers   []clock.Timer
		atts     []*hedgeAttempt
		inflight int
		pending  int
		n        int
		tried    = map[*host]bool{}
		backoff  *policy.Backoff
		holding  bool
	)
	release := func() {
		if holding {
			f.cl.rm.ReleaseRetry()
			holding = false
		}
	}
	defer release()
	launch := func() {
		n++
		id, attemptN := len(atts), n
		actx, cancel := context.WithCancelCause(rctx)
		g := *f // the attempt's own request, headers and scratch
		g.rctx, g.rcancel, g.ab = actx, nil, nil
		g.extra = make(http.Header, 8)
		g.rng.Seed(f.rng.Uint64(), f.rng.Uint64())
		// Its own pool attachment: each attempt in flight holds its connection and max_requests slot.
		g.attachFn, g.detachFn = g.attach, g.att.release
		g.softPerTry = func(cl *cluster, index int) {
			mu.Lock()
			defer mu.Unlock()
			if !closed {
				select {
				case events <- hedgeEvent{id: id, soft: true, cl: cl, host: index}:
				default:
				}
			}
		}
		tr := maps.Clone(tried)
		atts = append(atts, &hedgeAttempt{n: attemptN, cancel: cancel, running: true})
		inflight++
		go func() { events <- hedgeEvent{id: id, a: g.try(rp, reqID, attemptN, hash, tr)} }()
	}
	schedule := func(a upstreamRequest) {
		if backoff == nil {
			backoff = policy.NewBackoff(rp.BaseInterval, rp.MaxInterval)
		}
		pending++
		delay := f.backoff(a, rp, backoff)
		if f.span != nil {
			retryEvent(f.span, a.outcome, n, delay)
		}
		timers = append(timers, f.rt.clk.AfterFunc(delay, func() { retryDue <- struct{}{} }))
	}
	// decide is the retry decision on a finished attempt that was not hedged; true: retried.
	decide := func(a upstreamRequest) (retried, couldNotRetry bool) {
		release()
		d, retrySuccess := rs.Decide(a.outcome, f.cl.rm.TryAcquireRetry)
		if retrySuccess {
			f.cl.st.rqRetrySuccess.Inc()
		}
		switch d {
		case policy.Retry:
			holding = true
			tried[a.host] = true
			a.charge(true)
			f.cl.st.rqRetry.Inc()
			a.cl.retryScheduled(a.index, a.outcome)
			schedule(a)
			f.abandon(a)
			return true, false
		case policy.LimitExceeded:
			f.cl.st.rqRetryLimitExceeded.Inc()
			f.si.setFlag(flagUpstreamRetryLimitExceeded)
			return false, true
		case policy.RetryOverflow:
			f.cl.st.rqRetryOverflow.Inc()
			f.si.setFlag(flagUpstreamOverflow)
			return false, true
		}
		return false, false
	}

	launch()
	defer func() {
		for _, st := range atts {
			st.cancel(nil) // after the winner's response is relayed
		}
	}()
	var (
		final    upstreamRequest
		done     bool
		timedOut bool
		gone     bool
		// inFlightAtTimeout: the attempts the route timeout ended (Filter::onResponseTimeout counts
		// upstream_rq_timeout for each).
		inFlightAtTimeout int
	)
	for !done && !timedOut && !gone {
		select {
		case ev := <-events:
			st := atts[ev.id]
			if ev.soft {
				if !st.running || st.hedged {
					continue
				}
				// Filter::onSoftPerTryTimeout: a local-origin timeout for outlier detection, even though
				// the attempt may still answer well.
				ev.cl.recordOutcome(ev.host, policy.Outcome{Kind: policy.PerTryTimeout})
				if !enabled {
					continue
				}
				release()
				switch rs.Hedge(f.cl.rm.TryAcquireRetry) {
				case policy.Retry:
					holding = true
					st.hedged = true
					f.cl.st.rqRetry.Inc()
					schedule(upstreamRequest{outcome: policy.Outcome{Kind: policy.PerTryTimeout}})
				case policy.LimitExceeded:
					f.cl.st.rqRetryLimitExceeded.Inc()
					f.si.setFlag(flagUpstreamRetryLimitExceeded)
				case policy.RetryOverflow:
					f.cl.st.rqRetryOverflow.Inc()
					f.si.setFlag(flagUpstreamOverflow)
				}
				continue
			}
			st.running = false
			inflight--
			a := ev.a
			withGrpcStatus(&a)
			if a.host != nil {
				attempts++
			}
			switch {
			case f.timedOut():
				timedOut = true
				inFlightAtTimeout++
				a.charged = true
				f.abandon(a)
				continue
			case f.r.Context().Err() != nil:
				gone = true
				f.abandon(a)
				continue
			case a.noHealthy:
				final, done = a, true // doRetry: no host, the request ends (sendNoHealthyUpstreamResponse)
				continue
			}
			couldNotRetry := false
			if st.hedged {
				couldNotRetry = a.outcome.Kind == policy.Response && rs.WouldRetry(a.outcome)
			} else if enabled {
				var retried bool
				if retried, couldNotRetry = decide(a); retried {
					continue
				}
			}
			if a.outcome.Kind != policy.Response || couldNotRetry {
				if inflight > 0 || pending > 0 {
					// Another attempt may still answer: this one is dropped (onUpstreamHeaders with
					// could_not_retry, or onUpstreamReset), its host charged an error.
					if a.host != nil {
						a.host.rqError.Add(1)
					}
					a.charged = true
					f.abandon(a)
					continue
				}
			}
			final, done = a, true
		case <-retryDue:
			pending--
			launch()
		case <-rctx.Done():
			if f.timedOut() {
				timedOut = true
			} else {
				gone = true
			}
		}
	}

	// The others are reset, and waited for: their goroutines read the request, which its connection
	// reuses once this handler returns.
	mu.Lock()
	closed = true
	mu.Unlock()
	for _, t := range timers {
		t.Stop()
	}
	for _, st := range atts {
		if st.running {
			st.cancel(errHedgeLost)
		}
	}
	for inflight > 0 {
		ev := <-events
		if ev.soft {
			continue
		}
		inflight--
		if ev.a.host != nil {
			attempts++
		}
		if timedOut {
			inFlightAtTimeout++
		}
		ev.a.charged = true
		f.abandon(ev.a)
	}
	switch {
	case gone:
		f.streamEnded()
	case timedOut:
		if inFlightAtTimeout > 1 && !f.byDuration {
			f.cl.st.rqTimeout.Add(uint64(inFlightAtTimeout - 1)) // routeTimeout counts one
		}
		f.routeTimeout(n)
	case final.noHealthy:
		if f.span != nil {
			f.span.AddEvent(EventNoHealthyUpstream)
		}
		f.cl.st.cxNoneHealthy.Inc()
		f.si.fail(flagNoHealthyUpstream, "no_healthy_upstream")
		f.upstreamLocalReply(http.StatusServiceUnavailable, "no healthy upstream", n, nil)
	default:
		f.finish(final, n)
	}
	return attempts
}
