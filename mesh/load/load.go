// Package load generates HTTP load, open loop or closed loop.
//
// Open loop (Rate or Phases): requests go out at their intended times whatever the system under test
// does, and latency counts from the intended time (the coordinated-omission correction of wrk2 and
// Nighthawk's open loop), with the time from the actual send kept alongside. The schedule (Schedule) is
// constant, Poisson, ramps, steps or bursts, as named phases.
//
// Closed loop (Concurrency without a rate): N workers each send a request, wait for its response (and an
// optional think time), and send the next, like wrk or fortio -c. There is no intended time in closed
// loop: a request is intended when it is sent, so corrected and uncorrected latency are the same, and a
// stalled server simply gets fewer requests (which is why closed-loop latencies understate what users
// of a stalled system see — the coordinated omission).
//
// Connections: HTTP/1.1 (our own lean client, keep-alive, no pipelining) carries one request at a time
// per connection, so Connections C also caps the requests in flight at C; in open loop a request due
// while all C are busy waits for one, and the wait shows as send lag and in its corrected latency
// (never as a dropped request). h2c (HTTP/2 with prior knowledge) multiplexes requests as streams over C
// connections (default 1).
package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Defaults and limits of a Config.
const (
	DefaultMethod      = http.MethodGet
	DefaultTimeout     = 30 * time.Second
	DefaultMaxInFlight = 10000
	MaxRequests        = 100_000_000 // Rate × Duration above this is refused (the samples alone would not fit)
)

// HeaderRequestID carries "mp-<seq>" on every request, so that proxies and upstreams can name it.
const HeaderRequestID = "x-request-id"

// Config describes one run. Open loop: Rate and Duration (one constant phase named "main"), or Phases.
// Closed loop: Concurrency and Duration, without Rate or Phases.
type Config struct {
	URL      string      // absolute http:// or https:// URL
	Method   string      // default GET
	Header   http.Header // sent on every request; a "Host" entry sets the request's Host
	Body     []byte      // sent on every request
	Rate     float64     // requests per second, > 0
	Duration time.Duration
	Timeout  time.Duration // per request, from the actual send to the end of the body; default 30s
	// MaxInFlight caps concurrent requests; default 10000. When the cap is reached the generator waits
	// for a slot: nothing is dropped, and the intended times keep running, so the wait shows as send lag
	// and in the corrected latency of every delayed request (and as reports.Summary.RateHeld = false
	// when it grows).
	MaxInFlight int

	// Phases replace Rate and Duration with a schedule of named phases (constant, ramp, bursts).
	Phases []Phase
	// Poisson draws open-loop arrivals as a Poisson process of the phases' rate (exponential gaps)
	// instead of evenly spaced, from a generator seeded with Seed.
	Poisson bool
	Seed    uint64

	// Concurrency N without Rate or Phases runs closed loop with N workers. With a Rate or Phases it
	// caps the requests in flight instead, like MaxInFlight.
	Concurrency int
	Think       time.Duration // closed loop: pause of each worker between a response and its next request

	// Connections is the exact number of connections: all are opened before the first request and
	// shared by every request (re-dialled only when one breaks or the server closes it). 0: HTTP/1.1
	// opens one more whenever a request finds them all busy, up to the in-flight cap; h2c uses 1.
	Connections int
	H2C         bool // HTTP/2 over cleartext TCP with prior knowledge (the URL must be http://)
	// GRPC, when set, makes every request a gRPC call of meshproof.test.v1.Echo over h2c (H2C is
	// implied; Method, Body and the URL's path are the call's own; no Mix): see grpc.go. Each sample
	// then carries its gRPC status, and only status 0 (OK) is a success.
	GRPC *GRPC

	// Mix replaces Method, Body and the path of URL with a weighted mix of requests.
	Mix []Request

	// Raw, when set, receives one line per request as it finishes (completion order, not Seq order):
	// RawCSV (the default) or RawJSONL.
	Raw       io.Writer
	RawFormat string
	// KeepSamples keeps every sample in Result.Samples (Run always does). The histograms never need them.
	KeepSamples bool

	// OnSample, when set, is called with every finished request (concurrently, from the workers): a hook
	// for live progress. It must be cheap.
	OnSample func(record.Sample)
	// OnStart, when set, is called once with the run's origin (Result.Start: the instant intended send
	// times count from) before the first request is due, so that whatever else keys off the run's clock
	// (fault windows) uses the same origin.
	OnStart func(time.Time)

	// Tracer, when set, starts a root CLIENT span per request (see trace.go) and injects its context
	// into the request with Propagator (nil: W3C trace context). nil: no tracing, and no cost.
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator
}

// Raw log formats.
const (
	RawCSV   = "csv"
	RawJSONL = "jsonl"
)

// plan is a checked Config.
type plan struct {
	cfg         Config
	closed      bool
	phases      []Phase
	maxInFlight int
	mix         *mix
	target      *target
}

// check validates the config and fills in the defaults.
func (c Config) check() (*plan, error) {
	if c.Method == "" {
		c.Method = DefaultMethod
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	if c.RawFormat == "" {
		c.RawFormat = RawCSV
	}
	var grpcPath string
	if c.GRPC != nil {
		var err error
		if grpcPath, c.Body, c.Header, err = checkGRPC(c.GRPC, c); err != nil {
			return nil, err
		}
		c.H2C, c.Method = true, http.MethodPost
	}
	p := &plan{cfg: c, maxInFlight: c.MaxInFlight}
	u, err := url.Parse(c.URL)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("load: URL %q: want an absolute http:// or https:// URL", c.URL)
	}
	p.closed = c.Concurrency > 0 && c.Rate == 0 && len(c.Phases) == 0
	switch {
	case len(c.Phases) > 0 && c.Rate != 0:
		return nil, fmt.Errorf("load: rate %g and %d phases: set one or the other", c.Rate, len(c.Phases))
	case len(c.Phases) > 0 && c.Duration != 0:
		return nil, fmt.Errorf("load: duration %s and %d phases: the phases have their own durations", c.Duration, len(c.Phases))
	case c.Concurrency < 0:
		return nil, fmt.Errorf("load: concurrency %d: want > 0 (or 0 for open loop)", c.Concurrency)
	case len(c.Phases) == 0 && !p.closed && (!(c.Rate > 0) || math.IsInf(c.Rate, 0)):
		return nil, fmt.Errorf("load: rate %g: want a finite number of requests/s > 0", c.Rate)
	case len(c.Phases) == 0 && c.Duration <= 0:
		return nil, fmt.Errorf("load: duration %s: want > 0", c.Duration)
	case c.Timeout < 0:
		return nil, fmt.Errorf("load: timeout %s: want > 0 (or 0 for the default %s)", c.Timeout, DefaultTimeout)
	case c.MaxInFlight < 0:
		return nil, fmt.Errorf("load: max in flight %d: want > 0 (or 0 for the default %d)", c.MaxInFlight, DefaultMaxInFlight)
	case len(c.Phases) == 0 && c.Rate*c.Duration.Seconds() > MaxRequests:
		return nil, fmt.Errorf("load: %g/s for %s is more than %d requests", c.Rate, c.Duration, MaxRequests)
	case c.Connections < 0:
		return nil, fmt.Errorf("load: connections %d: want > 0 (or 0 to open them as needed)", c.Connections)
	case c.Think < 0:
		return nil, fmt.Errorf("load: think time %s: want ≥ 0", c.Think)
	case c.Think > 0 && !p.closed:
		return nil, fmt.Errorf("load: think time %s: only for closed loop (concurrency without a rate)", c.Think)
	case c.Poisson && p.closed:
		return nil, fmt.Errorf("load: Poisson arrivals need a rate: closed loop has no schedule")
	case c.H2C && u.Scheme != "http":
		return nil, fmt.Errorf("load: h2c needs an http:// URL, not %q", c.URL)
	case c.RawFormat != RawCSV && c.RawFormat != RawJSONL:
		return nil, fmt.Errorf("load: raw format %q: want %q or %q", c.RawFormat, RawCSV, RawJSONL)
	}
	switch {
	case p.closed:
		p.phases = []Phase{{Name: "closed", Duration: c.Duration}}
	case len(c.Phases) > 0:
		if err := checkPhases(c.Phases); err != nil {
			return nil, err
		}
		p.phases = c.Phases
	default:
		p.phases = []Phase{Constant("main", c.Duration, c.Rate)}
	}
	if c.Concurrency > 0 && !p.closed {
		p.maxInFlight = c.Concurrency
	}
	p.target = newTarget(u)
	if grpcPath != "" {
		u.Path, u.RawPath, u.RawQuery = grpcPath, "", ""
	}

	entries := c.Mix
	if len(entries) == 0 {
		entries = []Request{{Weight: 1}}
	}
	p.mix = &mix{seed: c.Seed}
	var total uint64
	for i, e := range entries {
		if e.Weight <= 0 {
			return nil, fmt.Errorf("load: mix[%d]: weight %d: want > 0", i, e.Weight)
		}
		eu := *u
		if e.Path != "" {
			pu, err := url.ParseRequestURI(e.Path)
			if err != nil || pu.IsAbs() || pu.Host != "" {
				return nil, fmt.Errorf("load: mix[%d]: path %q: want a path and query starting with /", i, e.Path)
			}
			eu.Path, eu.RawPath, eu.RawQuery = pu.Path, pu.RawPath, pu.RawQuery
		}
		method, body, header := c.Method, c.Body, c.Header.Clone()
		if e.Method != "" {
			method = e.Method
		}
		if e.Body != nil {
			body = e.Body
		}
		if header == nil {
			header = http.Header{}
		}
		for k, v := range e.Header {
			header[http.CanonicalHeaderKey(k)] = v
		}
		r, err := prepare(&eu, p.target, method, header, body)
		if err != nil {
			if len(c.Mix) > 0 {
				return nil, fmt.Errorf("load: mix[%d]: %w", i, err)
			}
			return nil, fmt.Errorf("load: %w", err)
		}
		total += uint64(e.Weight)
		p.mix.reqs = append(p.mix.reqs, r)
		p.mix.cum = append(p.mix.cum, total)
	}
	return p, nil
}

// Result is the outcome of a run.
type Result struct {
	Start  time.Time // every offset counts from here
	Closed bool      // closed loop
	Phases []Phase   // the run's phases: a single "main" one for Rate/Duration, "closed" in closed loop
	// Hist holds the histograms (overall, per phase, per status class, per second) and counters.
	Hist *record.HistSet
	// Samples, in Seq order (Seq 1, 2, …), when Config.KeepSamples.
	Samples []record.Sample
	// Connections is the number of connections opened (dials that succeeded), re-dials included.
	Connections int64
	// RawErr is the first error writing the raw log, if any (the run went on without it).
	RawErr error
}

// Run drives the load of cfg and returns one sample per request in Seq order (Seq 1, 2, …) and the
// run's start, from which all sample offsets count. In open loop, request Seq i+1 is intended at the
// i-th arrival of the schedule (for Rate/Duration: start + i/Rate for every i/Rate < Duration) and sent
// then (later only when every connection is busy or the in-flight cap is reached), with the header
// x-request-id "mp-<seq>", over keep-alive connections. The full response body is read and discarded
// before the response's end time is taken. Redirects are not followed: a 3xx is the response.
//
// Run returns when every request has finished. When ctx is cancelled it stops sending; requests in
// flight end at once with Error "canceled" (as does a due request still waiting for a slot, its Sent
// being the time it gave up), requests not yet due are left out, and Run returns the samples so far with
// a nil error: the caller learns of the cancellation from ctx. The error is non-nil only for an invalid
// Config.
func Run(ctx context.Context, cfg Config) ([]record.Sample, time.Time, error) {
	cfg.KeepSamples = true
	res, err := Generate(ctx, cfg)
	if err != nil {
		return nil, time.Time{}, err
	}
	return res.Samples, res.Start, nil
}

// sender makes one exchange, with extra headers (name, value pairs) when tracing. sent is when the
// request started (after it got a connection).
type sender interface {
	do(ctx context.Context, r *prepared, seq uint64, extra []string) (sent time.Time, status int, err error)
	prefill(ctx context.Context)
	abort()
	close()
	opened() int64
}

// job is one request handed to a worker.
type job struct {
	seq      uint64
	intended time.Duration
	phase    int
	req      *prepared
}

// gen is one run in progress.
type gen struct {
	p      *plan
	start  time.Time
	sender sender
	h2     *h2Pool // the sender, for h2c; gRPC calls go through it
	rec    *recorder
}

// Generate drives the load of cfg and returns its result: histograms always, samples when
// cfg.KeepSamples. Cancellation works as for Run; the error is non-nil only for an invalid Config.
func Generate(ctx context.Context, cfg Config) (*Result, error) {
	p, err := cfg.check()
	if err != nil {
		return nil, err
	}
	c := p.cfg
	g := &gen{p: p}

	inFlight := p.maxInFlight
	if p.closed {
		inFlight = c.Concurrency
	}
	if c.H2C {
		g.h2 = newH2Pool(p.target, max(c.Connections, 1), c.Timeout)
		g.sender = g.h2
	} else {
		n := inFlight
		if c.Connections > 0 {
			n = c.Connections
		}
		g.sender = newH1Pool(p.target, n, c.Timeout)
	}
	defer g.sender.close()
	if c.Connections > 0 || c.H2C {
		g.sender.prefill(ctx)
	}
	stop := context.AfterFunc(ctx, g.sender.abort)
	defer stop()

	specs := make([]record.HistPhase, len(p.phases))
	var at time.Duration
	planned := 0.0
	for i, ph := range p.phases {
		specs[i] = record.HistPhase{Name: ph.Name, Start: at, Duration: ph.Duration}
		if !p.closed {
			specs[i].Planned = ph.Planned()
			planned += specs[i].Planned
		}
		at += ph.Duration
	}
	g.rec = newRecorder(record.NewHistSet(specs), p.phases, c.Raw, c.RawFormat, c.KeepSamples, c.GRPC != nil, int(math.Ceil(planned))+1)
	g.rec.onSample = c.OnSample

	g.start = time.Now()
	if c.OnStart != nil {
		c.OnStart(g.start)
	}
	if p.closed {
		g.closedLoop(ctx, inFlight)
	} else {
		g.openLoop(ctx, inFlight)
	}
	g.rec.finish()
	return &Result{
		Start: g.start, Closed: p.closed, Phases: p.phases, Hist: g.rec.hist, Samples: g.rec.samples,
		Connections: g.sender.opened(), RawErr: g.rec.rawErr,
	}, nil
}

// growLag: an open-loop request later than this does not start a new worker at once (see openLoop).
const growLag = time.Millisecond

// openLoop dispatches the schedule: it waits until each intended time, then hands the request to an
// idle worker; when every worker is busy with an exchange it starts a new one (up to the in-flight cap,
// and with HTTP/1.1 and fixed connections up to their number), or else waits for one to finish — that
// wait is send lag. While the dispatcher is behind schedule by growLag or more it starts at most one
// worker per growLag. Workers count as busy from the hand-off to the end of their exchange, so a worker
// that has finished but not yet been scheduled to take the next request is not mistaken for a missing
// one (on one core that mistake would open a connection per request once the generator fell behind).
func (g *gen) openLoop(ctx context.Context, inFlight int) {
	c := g.p.cfg
	maxWorkers := inFlight
	if !c.H2C && c.Connections > 0 {
		maxWorkers = min(maxWorkers, c.Connections)
	}
	jobs := make(chan job)
	var busy atomic.Int64
	var wg sync.WaitGroup
	workers := 0
	spawn := func(first *job) {
		workers++
		wg.Go(func() {
			if first != nil {
				g.exec(ctx, *first)
				busy.Add(-1)
			}
			for j := range jobs {
				g.exec(ctx, j)
				busy.Add(-1)
			}
		})
	}
	if !c.H2C && c.Connections > 0 { // one worker per fixed connection, ready before the start
		for range maxWorkers {
			spawn(nil)
		}
	}
	w := newWaiter(ctx)
	defer w.close()
	grow := time.NewTimer(time.Hour)
	defer grow.Stop()
	sched := NewSchedule(g.p.phases, c.Poisson, c.Seed)
	for seq := uint64(1); ; seq++ {
		a, ok := sched.Next()
		if !ok {
			break
		}
		if w.until(ctx, g.start.Add(a.At)) != nil {
			break
		}
		j := job{seq: seq, intended: a.At, phase: a.Phase, req: g.p.mix.pick(seq)}
		if int(busy.Add(1)) > workers && workers < maxWorkers {
			if time.Since(g.start)-a.At < growLag {
				spawn(&j)
				continue
			}
			// Behind schedule: more connections would not help a generator short of CPU (and would
			// make it shorter), so give a worker growLag to come free before starting another.
			grow.Reset(growLag)
			select {
			case jobs <- j:
				continue
			case <-grow.C:
				spawn(&j)
				continue
			case <-ctx.Done():
			}
		} else {
			select {
			case jobs <- j:
				continue
			case <-ctx.Done():
			}
		}
		busy.Add(-1)
		sent := time.Since(g.start)
		g.rec.record(record.Sample{Seq: seq, Intended: a.At, Sent: sent, Latency: sent - a.At, Error: record.ErrCanceled}, a.Phase)
		break
	}
	close(jobs)
	wg.Wait()
}

// closedLoop runs n workers that each send, wait for the response (and Think), and send again until
// Duration has passed since the start.
func (g *gen) closedLoop(ctx context.Context, n int) {
	c := g.p.cfg
	var seq atomic.Uint64
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			var think *time.Timer
			if c.Think > 0 {
				think = time.NewTimer(time.Hour)
				defer think.Stop()
			}
			for ctx.Err() == nil && time.Since(g.start) < c.Duration {
				s := seq.Add(1)
				g.exec(ctx, job{seq: s, intended: -1, req: g.p.mix.pick(s)})
				if think != nil {
					think.Reset(c.Think)
					select {
					case <-think.C:
					case <-ctx.Done():
					}
				}
			}
		})
	}
	wg.Wait()
}

// exec makes one request and records its sample. A job with intended < 0 (closed loop) is intended
// when sent.
func (g *gen) exec(ctx context.Context, j job) {
	var (
		span  trace.Span
		extra []string
	)
	if g.p.cfg.Tracer != nil {
		ctx, span, extra = g.startSpan(ctx, j)
	}
	var (
		sent   time.Time
		status int
		err    error
		gres   grpcResult
	)
	if gc := g.p.cfg.GRPC; gc != nil {
		gres = g.h2.doGRPC(ctx, j.req, j.seq, extra, gc.Deadline)
		sent, status, err = gres.sent, gres.status, gres.err
	} else {
		sent, status, err = g.sender.do(ctx, j.req, j.seq, extra)
	}
	end := time.Since(g.start)
	s := record.Sample{Seq: j.seq, Intended: j.intended, Sent: sent.Sub(g.start), Status: status}
	if g.p.cfg.GRPC != nil {
		grpcSample(&s, gres.code)
	}
	if j.intended < 0 {
		s.Intended = s.Sent
	}
	s.Latency = end - s.Intended
	if err != nil {
		s.Error = classify(ctx, err)
	}
	if span != nil {
		g.endSpan(span, s, sent, err)
	}
	g.rec.record(s, j.phase)
}

// classify names the kind of a request's error. Once the run is cancelled every failure counts as
// "canceled": it is the harness's doing.
func classify(ctx context.Context, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return record.ErrCanceled
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return record.ErrTimeout
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE):
		return record.ErrReset
	case errors.Is(err, syscall.ECONNREFUSED):
		return record.ErrRefused
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return record.ErrEOF
	}
	return record.ErrOther
}
