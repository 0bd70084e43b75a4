package sim

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// instance is one upstream instance on virtual time: the fault upstream of faults/upstream.go, step by
// step as serve does it — arrival, admission (capacity.go), the decision (faults.DecideRequest, the same
// pure function with the same per-request random source), the delay, a reset or hang or the app's calls
// (app.go), then the answer and its body — with the same counters (faults.UpstreamStats).
type instance struct {
	w     *world
	in    plan.Instance
	name  string // "service/index"
	addr  string
	rules []faults.Fault // named "faults[i]" as NewUpstream names them
	// headers: some rule matches on request headers, so each request's header is converted for it.
	headers bool
	app     *faults.App // with its defaults; nil: a leaf
	cap     *faults.Capacity
	sidecar *Proxy    // nil for a leaf
	front   *tcpFront // its TCP fault proxy (instance_tcp.go); nil without TCP rules

	seq, callSeq uint64
	stats        faults.UpstreamStats
	refusing     string // the refuse rule in force, "" = accepting

	busy    int
	waiting []*exchange  // FIFO, capacity only
	open    []*exchange  // in flight, for a refuse that closes the connections
	workCtx bool         // the work ignores the caller leaving (app or capacity: faults' workContext)
	rng     requestRands // reused per-request random source
}

var _ Upstream = (*instance)(nil)

func newInstance(w *world, in plan.Instance, addr string) *instance {
	cfg := in.Upstream
	it := &instance{w: w, in: in, name: in.Name(), addr: addr, cap: cfg.Capacity,
		stats: faults.UpstreamStats{Statuses: map[int]uint64{}, Applied: map[string]uint64{}}}
	for i, f := range cfg.Faults {
		if f.Name == "" {
			f.Name = fmt.Sprintf("faults[%d]", i)
		}
		it.headers = it.headers || f.Match != nil && len(f.Match.Headers) > 0
		it.rules = append(it.rules, f)
	}
	if cfg.App != nil && len(cfg.App.Steps) > 0 {
		app := *cfg.App
		if app.OnFailure == 0 {
			app.OnFailure = faults.DefaultOnFailure
		}
		app.Steps = make([]faults.Step, len(cfg.App.Steps))
		for i, s := range cfg.App.Steps {
			for _, c := range s.Calls {
				if c.Path == "" {
					c.Path = "/"
				}
				if c.Method == "" {
					c.Method = http.MethodGet
				}
				app.Steps[i].Calls = append(app.Steps[i].Calls, c)
			}
		}
		it.app = &app
	}
	if c := it.cap; c != nil {
		cp := *c
		if cp.WhenFull == "" {
			cp.WhenFull = faults.WhenFullReject
		}
		it.cap = &cp
		it.stats.Capacity = &faults.CapacityStats{Workers: cp.Workers, Queue: cp.Queue}
	}
	it.workCtx = it.app != nil || it.cap != nil
	return it
}

func (it *instance) Name() string { return it.name }
func (it *instance) Addr() string { return it.addr }

// Refusing reports whether a refuse rule holds the listener closed now (faults.Refusing, the same
// function the live upstream's schedule evaluates).
func (it *instance) Refusing() bool { return it.refusing != "" }

// Closes is how many times the instance has closed its listener and its connections (refuse windows
// begun): a proxy's idle connections from before the last one are dead.
func (it *instance) Closes() uint64 { return it.stats.Refusals }

// startRefuse schedules the refuse rules' edges: at each, the listener closes (the connections in
// flight with it) or reopens, with the live upstream's events and counters (faults Upstream.Refresh).
func (it *instance) startRefuse() {
	has := slices.ContainsFunc(it.rules, func(f faults.Fault) bool { return f.Refuse != nil })
	if !has {
		return
	}
	it.refresh()
}

func (it *instance) refresh() {
	now := it.w.en.Now()
	name, refuse := faults.Refusing(it.rules, now)
	switch {
	case refuse && it.refusing == "":
		it.refusing = name
		it.stats.Refusals++
		it.stats.Applied[name+"/"+faults.KindRefuse]++
		it.event(0, "", faults.Applied{Fault: name, Kind: faults.KindRefuse, Detail: faults.RefuseClosed})
		// The open connections close: every exchange in flight ends for its sender as a clean close,
		// and the instance's work on it sees its client gone.
		open := it.open
		it.open = nil
		for _, ex := range open {
			ex.open = -1
			status := 0
			if ex.stage == stageBody {
				status = ex.d.Status
			}
			ex.answer(Result{Status: status, Err: ErrEOF})
			ex.cancel()
		}
	case !refuse && it.refusing != "":
		it.event(0, "", faults.Applied{Fault: it.refusing, Kind: faults.KindRefuse, Detail: faults.RefuseReopened})
		it.refusing = ""
	}
	if next, ok := faults.NextRefuseChange(it.rules, now); ok {
		it.w.en.At(next, it.refresh)
	}
}

// event records one applied fault at now.
func (it *instance) event(seq uint64, requestID string, a faults.Applied) {
	it.w.events.add(record.FaultEvent{At: it.w.en.Now(), Service: it.in.Service, Instance: it.in.Index,
		Seq: seq, RequestID: requestID, Fault: a.Fault, Kind: a.Kind, Detail: a.Detail})
}

// Stages of an exchange.
const (
	stageQueued = iota
	stageDelay
	stageHang
	stageCalls
	stageBody
	stageDone
)

// exchange is one request at the instance, from its arrival to the end of its work.
type exchange struct {
	it       *instance
	req      *Request
	done     func(Result)
	arrival  time.Duration
	bucket   int
	budget   time.Duration
	seq      uint64
	d        faults.Decision
	stage    int
	gone     bool // the sender cancelled, or the connection closed: nobody reads the answer
	answered bool // done was called
	timer    Timer
	since    time.Duration // when it took its worker
	worker   bool          // it holds a worker
	open     int           // index in it.open; -1 when not there
}

// Serve starts an exchange that reached the instance now (see faults Upstream.serve for the order).
func (it *instance) Serve(req *Request, done func(Result)) (cancel func()) {
	now := it.w.en.Now()
	if it.refusing != "" {
		// The listener is closed and so is every connection it had accepted: a request a proxy sends
		// on a connection it kept from before finds it gone, and a new one is refused. It never
		// arrives (nothing counted); its sender learns it now.
		gone := false
		it.w.en.At(now, func() {
			if !gone {
				done(Result{Err: ErrRefused})
			}
		})
		return func() { gone = true }
	}
	ex := &exchange{it: it, req: req, done: done, arrival: now, budget: budget(req.Header)}
	ex.open = len(it.open)
	it.open = append(it.open, ex)
	// 1. arrival (the run starts at virtual 0: no request is before it)
	ex.bucket = int(now / faults.BucketWidth)
	it.stats.Requests++
	it.stats.Received = grow(it.stats.Received, ex.bucket)
	it.stats.Received[ex.bucket]++
	// 2. admission
	if it.cap == nil {
		ex.start()
		return ex.cancel
	}
	c := it.cap
	switch {
	case it.busy < c.Workers:
		it.busy++
		ex.worker, ex.since = true, now
		ex.start()
	case len(it.waiting) >= c.Queue:
		it.stats.Capacity.Rejected++
		if c.WhenFull == faults.WhenFullRefuse {
			it.stats.Resets++
			ex.end(Result{Err: ErrReset})
		} else {
			it.stats.Statuses[http.StatusServiceUnavailable]++
			ex.end(overloaded(faults.OverloadQueueFull))
		}
	default:
		it.stats.Capacity.Queued++
		ex.stage = stageQueued
		it.waiting = append(it.waiting, ex)
		if c.QueueTimeout > 0 {
			ex.timer = it.w.en.After(c.QueueTimeout, ex.queueTimeout)
		}
	}
	return ex.cancel
}

func overloaded(reason string) Result {
	return Result{Status: http.StatusServiceUnavailable, Header: map[string]string{faults.HeaderOverload: reason}}
}

func (ex *exchange) queueTimeout() {
	it := ex.it
	it.waiting = slices.DeleteFunc(it.waiting, func(o *exchange) bool { return o == ex })
	it.waited(it.w.en.Now() - ex.arrival)
	it.stats.Capacity.TimedOut++
	it.stats.Statuses[http.StatusServiceUnavailable]++
	ex.end(overloaded(faults.OverloadQueueTimeout))
}

func (it *instance) waited(wait time.Duration) {
	c := it.stats.Capacity
	c.QueueWait += wait
	c.MaxQueueWait = max(c.MaxQueueWait, wait)
}

// start decides (the request's sequence number is taken here, after admission) and waits out the delay.
func (ex *exchange) start() {
	it := ex.it
	it.seq++
	ex.seq = it.seq
	now := it.w.en.Now()
	freq := faults.Request{Seq: ex.seq, Elapsed: now, Method: ex.req.Method, Path: ex.req.Path}
	if i := strings.IndexByte(freq.Path, '?'); i >= 0 {
		freq.Path = freq.Path[:i]
	}
	if it.headers {
		freq.Header = make(http.Header, len(ex.req.Header))
		for k, v := range ex.req.Header {
			freq.Header.Set(k, v)
		}
	}
	ex.d = faults.DecideRequest(it.in.Upstream.Response, it.rules, freq, it.rng.get(it, ex.seq))
	for _, a := range ex.d.Applied {
		it.stats.Applied[a.Fault+"/"+a.Kind]++
		it.event(ex.seq, ex.req.ID, a)
	}
	ex.stage = stageDelay
	ex.timer = it.w.en.After(ex.d.Delay, ex.afterDelay)
}

// afterDelay carries out the decision once its delay has passed (faults Upstream.respond).
func (ex *exchange) afterDelay() {
	it := ex.it
	d := ex.d
	switch {
	case d.Reset:
		it.stats.Resets++
		ex.end(Result{Err: ErrReset})
		return
	case d.Hang:
		it.stats.Hangs++
		if ex.gone {
			ex.end(Result{})
			return
		}
		ex.stage = stageHang // until the sender gives up
		return
	}
	if it.app != nil && !aborted(d) {
		ex.stage = stageCalls
		ex.step(0)
		return
	}
	ex.answerDecision("")
}

func aborted(d faults.Decision) bool {
	return slices.ContainsFunc(d.Applied, func(a faults.Applied) bool { return a.Kind == faults.KindAbort })
}

// answerDecision answers the decision (the OnFailure answer when failed names a callee): its status
// counted, its body sent in the body time, ended by a cut when the decision says so.
func (ex *exchange) answerDecision(failed string) {
	it := ex.it
	d := ex.d
	if failed != "" {
		// faults' failedAnswer: the status, no body; the faults applied stay recorded.
		d = faults.Decision{Delay: d.Delay, Status: it.app.OnFailure, Applied: d.Applied}
		ex.d = d
	}
	if ex.gone {
		it.stats.Canceled++
		ex.end(Result{})
		return
	}
	size := d.Size
	if d.Status == http.StatusNoContent || d.Status == http.StatusNotModified || ex.req.Method == http.MethodHead {
		size = 0
	}
	switch d.Cut {
	case faults.CutReset:
		it.stats.Resets++
	case faults.CutClose:
		it.stats.Truncated++
	default:
		it.stats.Statuses[d.Status]++
		if d.Status >= 200 && d.Status < 400 {
			it.stats.OK = grow(it.stats.OK, ex.bucket)
			it.stats.OK[ex.bucket]++
		}
	}
	limit := size
	if d.Cut != faults.CutNone {
		limit = min(d.CutAfter, size)
	}
	res := Result{Status: d.Status}
	switch d.Cut {
	case faults.CutReset:
		res.Err = ErrReset
	case faults.CutClose:
		res.Err = ErrEOF
	}
	if failed != "" {
		res.Header = map[string]string{faults.HeaderFailedCall: failed}
	}
	// The headers go at once, the body takes its time: the proxy's per-try timeout ends at the headers
	// (proxy/upstream_request.go), the exchange (the worker, the connection) at the body's end.
	res.Body = it.w.bodyTime(limit, d.BytesPerSecond)
	ex.stage = stageBody
	ex.answer(res)
	ex.timer = it.w.en.After(res.Body, ex.finish)
}

// bodyTime is how long n body bytes take: paced at bps as the live upstream paces them (chunks of
// bps/20 bytes, each after its share of a second, rounded up), else at the world's bandwidth.
func (w *world) bodyTime(n, bps int) time.Duration {
	if n <= 0 {
		return 0
	}
	if bps <= 0 {
		return time.Duration(math.Ceil(float64(n) * float64(time.Second) / float64(w.bandwidth)))
	}
	chunk := max(1, bps/20)
	full, rest := n/chunk, n%chunk
	t := time.Duration(full) * pace(chunk, bps)
	if rest > 0 {
		t += pace(rest, bps)
	}
	return t
}

// pace is how long n bytes take at bps bytes per second, rounded up (faults' pace).
func pace(n, bps int) time.Duration {
	return time.Duration((int64(n)*int64(time.Second) + int64(bps) - 1) / int64(bps))
}

// answer hands r to the sender, once, unless it has gone.
func (ex *exchange) answer(r Result) {
	if ex.answered || ex.gone {
		return
	}
	ex.answered = true
	ex.done(r)
}

// end answers r and ends the work: the worker goes to the first waiting request.
func (ex *exchange) end(r Result) {
	ex.answer(r)
	ex.finish()
}

func (ex *exchange) finish() {
	if ex.stage == stageDone {
		return
	}
	ex.stage = stageDone
	it := ex.it
	if ex.open >= 0 && ex.open < len(it.open) && it.open[ex.open] == ex {
		last := len(it.open) - 1
		it.open[ex.open] = it.open[last]
		it.open[ex.open].open = ex.open
		it.open[last] = nil
		it.open = it.open[:last]
	}
	ex.open = -1
	if !ex.worker {
		return
	}
	ex.worker = false
	now := it.w.en.Now()
	it.stats.Capacity.Busy += now - ex.since
	if len(it.waiting) == 0 {
		it.busy--
		return
	}
	next := it.waiting[0]
	it.waiting[0] = nil
	it.waiting = it.waiting[1:]
	it.w.en.Stop(next.timer)
	it.waited(now - next.arrival)
	next.worker, next.since = true, now
	next.start()
}

// cancel is the sender giving up (or the connection closing). A leaf without capacity stops at once;
// the work of a service with calls or capacity goes on unaware (faults' workContext) and finds out at
// its answer, except in a hang or a body, which the connection's end cuts.
func (ex *exchange) cancel() {
	if ex.gone || ex.stage == stageDone {
		ex.gone = true
		return
	}
	ex.gone = true
	it := ex.it
	switch {
	case ex.stage == stageHang:
		ex.finish()
	case ex.stage == stageBody, ex.stage == stageDelay && !it.workCtx:
		it.w.en.Stop(ex.timer)
		it.stats.Canceled++
		ex.finish()
	}
}

// budget is an incoming request's deadline budget (faults' budget): its x-envoy-expected-rq-timeout-ms,
// 0 when absent, unparsable, <= 0 or too large.
func budget(h map[string]string) time.Duration {
	v, ok := h[faults.HeaderExpectedTimeout]
	if !ok {
		return 0
	}
	ms, err := strconv.ParseInt(v, 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// grow returns b long enough to index i.
func grow(b []uint32, i int) []uint32 {
	if i < len(b) {
		return b
	}
	return append(b, make([]uint32, i+1-len(b))...)
}

// snapshot is the instance's counters as faults.Upstream.Stats returns them.
func (it *instance) snapshot() faults.UpstreamStats { return it.stats.Clone() }

// requestRands is the random source of the n-th request at an instance: faults.RequestRand's stream,
// (seed ^ fnv64a(service, 0, instance), n), on one reused PCG instead of a new one per request (a spec
// holds the two equal).
type requestRands struct {
	key uint64
	pcg *rand.PCG
	r   *rand.Rand
}

func (rr *requestRands) get(it *instance, n uint64) *rand.Rand {
	if rr.pcg == nil {
		h := fnv.New64a()
		h.Write([]byte(it.in.Service))
		h.Write([]byte{0})
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(it.in.Index)))
		rr.key = it.in.Upstream.Seed ^ h.Sum64()
		rr.pcg = rand.NewPCG(0, 0)
		rr.r = rand.New(rr.pcg)
	}
	rr.pcg.Seed(rr.key, n)
	return rr.r
}
