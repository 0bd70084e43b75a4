package proxy

import (
	"io"
	"math/bits"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// The fault filter's header controls (Envoy's names).
const (
	hdrFaultAbort             = "x-envoy-fault-abort-request"
	hdrFaultAbortPercent      = "x-envoy-fault-abort-request-percentage"
	hdrFaultAbortGRPC         = "x-envoy-fault-abort-grpc-request"
	hdrFaultDelay             = "x-envoy-fault-delay-request"
	hdrFaultDelayPercent      = "x-envoy-fault-delay-request-percentage"
	hdrFaultThroughput        = "x-envoy-fault-throughput-response"
	hdrFaultThroughputPercent = "x-envoy-fault-throughput-response-percentage"
)

// faultFilter is Envoy's HTTP fault filter in front of the router: it delays, then aborts (a local reply
// the router never sees: no retry, no outlier signal) or throttles the response body.
type faultFilter struct {
	cfg    *config.FaultFilter
	next   http.Handler
	hcm    filterCallbacks
	active atomic.Int64
	st     faultStats
	clk    clock.Clock
	seeds  seeds
}

var _ http.Handler = (*faultFilter)(nil)

// filterCallbacks is what an HTTP filter needs of its connection manager (Envoy's
// StreamDecoderFilterCallbacks): the route a request takes, and local replies counted as the
// connection manager counts them.
type filterCallbacks interface {
	route(r *http.Request) (*http.Request, routed)
	localReply(w http.ResponseWriter, r *http.Request, hdr http.Header, code int, body string)
	// sendLocalReply is localReply with the gRPC status of a gRPC request's reply (noGrpcStatus:
	// mapped from code).
	sendLocalReply(w http.ResponseWriter, r *http.Request, hdr http.Header, code int, body string, grpcStatus int)
	countStatus(code int)
}

type faultStats struct {
	delays, aborts, overflow, rateLimited *stats.Counter
	active                                *stats.Gauge
}

func newFaultFilter(cfg *config.FaultFilter, next http.Handler, hcm filterCallbacks, store *stats.Store, statPrefix string, clk clock.Clock, sd seeds) *faultFilter {
	p := "http." + statPrefix + ".fault."
	return &faultFilter{cfg: cfg, next: next, hcm: hcm, clk: clk, seeds: sd, st: faultStats{
		delays: store.Counter(p + "delays_injected"), aborts: store.Counter(p + "aborts_injected"),
		overflow: store.Counter(p + "faults_overflow"), rateLimited: store.Counter(p + "response_rl_injected"),
		active: store.Gauge(p + "active_faults"),
	}}
}

func (f *faultFilter) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if f.cfg.UpstreamCluster != "" {
		// The route and its cluster, a weighted one included, as the router will take them (Envoy's
		// FaultFilter::decodeHeaders reads the cached route's clusterName(), fault_filter.cc).
		var rt routed
		r, rt = f.hcm.route(r)
		if rt.cluster != f.cfg.UpstreamCluster {
			f.next.ServeHTTP(w, r)
			return
		}
	}
	if !f.applies(r) {
		f.next.ServeHTTP(w, r)
		return
	}
	// The fault draws come from the request's own stream, in a fixed order: delay, abort, throughput.
	var rng rand.PCG
	f.seeds.request(&rng, headerValue(r.Header, hdrRequestID), saltFault)
	delay, delayOK := f.delay(r, &rng)
	abort, abortOK := f.abort(r, &rng)
	kibps, rlOK := f.rateLimit(r, &rng)
	if !delayOK && !abortOK && !rlOK {
		f.next.ServeHTTP(w, r)
		return
	}
	if m := f.cfg.MaxActiveFaults; m != nil && f.active.Load() >= int64(*m) {
		f.st.overflow.Inc()
		f.next.ServeHTTP(w, r)
		return
	}
	f.active.Add(1)
	f.st.active.Inc()
	defer func() {
		f.active.Add(-1)
		f.st.active.Dec()
	}()
	if delayOK {
		f.st.delays.Inc()
		infoOf(r).setFlag(flagDelayInjected) // DI (FaultFilter::postDelayInjection)
		t := f.clk.NewTimer(delay)
		select {
		case <-t.C():
		case <-r.Context().Done():
			t.Stop()
			return // the downstream went away during the delay
		}
	}
	if abortOK {
		f.st.aborts.Inc()
		infoOf(r).fail(flagFaultInjected, "fault_filter_abort") // FI (FaultFilter::abortWithStatus)
		abort(w)
		return
	}
	if rlOK {
		f.st.rateLimited.Inc()
		w = &throttledWriter{ResponseWriter: w, bytesPerSec: kibps * 1024, clk: f.clk}
	}
	f.next.ServeHTTP(w, r)
}

// applies checks the filter's headers condition (ServeHTTP checks upstream_cluster).
func (f *faultFilter) applies(r *http.Request) bool {
	for _, m := range f.cfg.Headers {
		if !HeaderMatches(m, r.Header) {
			return false
		}
	}
	return true
}

// hit draws whether a fault with this fraction fires. A header percentage, when present and valid, sets
// the numerator, capped by the configured one (Envoy's rule for the *-percentage headers).
func hit(frac config.Fraction, r *http.Request, percentHeader string, rng *rand.PCG) bool {
	num := frac.Numerator
	if v := r.Header.Get(percentHeader); v != "" {
		if n, err := strconv.ParseUint(v, 10, 32); err == nil {
			num = min(uint32(n), frac.Numerator)
		}
	}
	if num == 0 {
		return false
	}
	draw, _ := bits.Mul64(rng.Uint64(), uint64(frac.Denominator)) // uniform in [0, denominator)
	return draw < uint64(num)
}

func (f *faultFilter) delay(r *http.Request, rng *rand.PCG) (time.Duration, bool) {
	d := f.cfg.Delay
	if d == nil {
		return 0, false
	}
	dur := d.Fixed
	if d.FromHeader {
		ms, err := strconv.ParseUint(r.Header.Get(hdrFaultDelay), 10, 32)
		if err != nil {
			return 0, false // no or an invalid header: no delay
		}
		dur = time.Duration(ms) * time.Millisecond
	}
	// The draw is made whatever the duration, so that the abort's draw comes next in the request's
	// stream; a delay of 0 is none and counts none (Envoy's FaultFilter::delayDuration,
	// source/extensions/filters/http/fault/fault_filter.cc, returns a delay only when above 0).
	on := hit(d.Percent, r, hdrFaultDelayPercent, rng)
	return dur, on && dur > 0
}

func (f *faultFilter) abort(r *http.Request, rng *rand.PCG) (func(http.ResponseWriter), bool) {
	a := f.cfg.Abort
	if a == nil {
		return nil, false
	}
	status, grpc := a.HTTPStatus, a.GRPCStatus
	if a.FromHeader {
		status, grpc = 0, nil
		if v, err := strconv.Atoi(r.Header.Get(hdrFaultAbort)); err == nil && v >= 200 && v < 600 {
			status = v
		} else if v, err := strconv.ParseUint(r.Header.Get(hdrFaultAbortGRPC), 10, 32); err == nil {
			code := uint32(v)
			grpc = &code
		} else {
			return nil, false
		}
	}
	if !hit(a.Percent, r, hdrFaultAbortPercent, rng) {
		return nil, false
	}
	if grpc != nil {
		// A gRPC status abort is a local reply of HTTP 200 carrying that status (FaultFilter::abortStatus
		// and abortWithStatus, source/extensions/filters/http/fault/fault_filter.cc): a gRPC request gets
		// it as grpc-status, any other request a plain 200 "fault filter abort" (sendLocalReply uses the
		// gRPC status only for a gRPC request). The local_reply_config applies to both.
		code := int(*grpc)
		return func(w http.ResponseWriter) {
			f.hcm.sendLocalReply(w, r, nil, http.StatusOK, "fault filter abort", code)
		}, true
	}
	return func(w http.ResponseWriter) { f.hcm.localReply(w, r, nil, status, "fault filter abort") }, true
}

func (f *faultFilter) rateLimit(r *http.Request, rng *rand.PCG) (uint64, bool) {
	rl := f.cfg.RateLimit
	if rl == nil {
		return 0, false
	}
	kibps := rl.KiBps
	if rl.FromHeader {
		v, err := strconv.ParseUint(r.Header.Get(hdrFaultThroughput), 10, 64)
		if err != nil || v == 0 {
			return 0, false
		}
		kibps = v
	}
	return kibps, hit(rl.Percent, r, hdrFaultThroughputPercent, rng)
}

// throttledWriter paces the response body to bytesPerSec, in chunks of at most a tenth of a second.
type throttledWriter struct {
	http.ResponseWriter
	bytesPerSec uint64
	clk         clock.Clock
}

func (t *throttledWriter) Write(p []byte) (int, error) {
	chunk := max(int(t.bytesPerSec/10), 1)
	written := 0
	for len(p) > 0 {
		n := min(chunk, len(p))
		m, err := t.ResponseWriter.Write(p[:n])
		written += m
		if err != nil {
			return written, err
		}
		if f, ok := t.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		<-t.clk.NewTimer(time.Duration(float64(n) / float64(t.bytesPerSec) * float64(time.Second))).C()
		p = p[n:]
	}
	return written, nil
}

// Unwrap lets http.ResponseController reach the connection.
func (t *throttledWriter) Unwrap() http.ResponseWriter { return t.ResponseWriter }

var _ io.Writer = (*throttledWriter)(nil)
