package sim

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// client is the scenario's load on virtual time: the live generator's open loop (mesh/load) — the same
// schedule (load.Schedule, the same intended send times for a seed), the same mix draw (load.MixPick),
// the same per-request timeout from the actual send and the same cap on requests in flight (a request
// due while it is reached waits for one to end: send lag) — sending each request to the target proxy one
// network hop away.
type client struct {
	en      *Engine
	target  target
	hop     time.Duration
	timeout time.Duration
	max     int // requests in flight at most (load.DefaultMaxInFlight)

	sched   *load.Schedule
	entries []entry
	cum     []uint64
	seed    uint64

	samples  []record.Sample // by Seq − 1
	inFlight int
	waiting  []pendingSend // due while max were in flight, FIFO
	next     uint64        // the next Seq
	over     bool          // the schedule has no more arrivals
	open     int           // requests sent or waiting and not finished

	onSample func(record.Sample)
	onIdle   func() // called when the schedule is over and every request has finished
}

// target is what the load is sent to: the target proxy.
type target interface {
	Handle(req *Request, done func(Result))
	Stats() map[string]uint64
}

// entry is one request of the mix as it is sent: its method, path and Host, and its headers (lower-case
// names), shared by the requests of the entry (a proxy copies them before changing them).
type entry struct {
	method, path, authority string
	bodySize                int
	header                  map[string]string
}

type pendingSend struct {
	seq      uint64
	intended time.Duration
}

// newClient prepares the load of cfg (the live generator's configuration of the scenario, Plan.LoadConfig)
// against target, whose listener is at authority.
func newClient(en *Engine, cfg load.Config, to target, authority string, hop time.Duration) (*client, error) {
	c := &client{en: en, target: to, hop: hop, timeout: cfg.Timeout, max: load.DefaultMaxInFlight, seed: cfg.Seed}
	if c.timeout == 0 {
		c.timeout = load.DefaultTimeout
	}
	phases := cfg.Phases
	if len(phases) == 0 {
		phases = []load.Phase{load.Constant("main", cfg.Duration, cfg.Rate)}
	}
	c.sched = load.NewSchedule(phases, cfg.Poisson, cfg.Seed)
	planned := 0.0
	for _, ph := range phases {
		planned += ph.Planned()
	}
	// Room for the planned samples up front (72 bytes each): growing the slice request by request cost a
	// third of a large run's time. Poisson arrivals may come to a few more; append takes them.
	c.samples = make([]record.Sample, 0, int(min(planned, load.MaxRequests))+1)
	u, err := url.Parse(cfg.URL)
	if err != nil {
		return nil, err
	}
	method := cfg.Method
	if method == "" {
		method = load.DefaultMethod
	}
	mixes := cfg.Mix
	if len(mixes) == 0 {
		mixes = []load.Request{{Weight: 1}}
	}
	var total uint64
	for _, m := range mixes {
		e := entry{method: method, path: u.RequestURI(), authority: authority, header: map[string]string{}, bodySize: len(cfg.Body)}
		if m.Body != nil {
			e.bodySize = len(m.Body)
		}
		if m.Method != "" {
			e.method = m.Method
		}
		if m.Path != "" {
			e.path = m.Path
		}
		h := cfg.Header.Clone()
		if h == nil {
			h = http.Header{}
		}
		for k, v := range m.Header {
			h[http.CanonicalHeaderKey(k)] = v
		}
		for k, v := range h {
			if len(v) == 0 {
				continue
			}
			if strings.EqualFold(k, "Host") {
				e.authority = v[0]
				continue
			}
			e.header[strings.ToLower(k)] = v[0]
		}
		if e.header["user-agent"] == "" {
			e.header["user-agent"] = "meshproof"
		}
		total += uint64(m.Weight)
		c.entries = append(c.entries, e)
		c.cum = append(c.cum, total)
	}
	return c, nil
}

// start schedules the first arrival.
func (c *client) start() { c.arrive() }

// arrive sends the next request of the schedule at its intended time and schedules the one after.
func (c *client) arrive() {
	a, ok := c.sched.Next()
	if !ok {
		c.over = true
		c.idle()
		return
	}
	c.en.At(a.At, func() {
		c.next++
		c.open++
		seq := c.next
		if c.inFlight >= c.max {
			c.waiting = append(c.waiting, pendingSend{seq: seq, intended: a.At})
		} else {
			c.send(seq, a.At)
		}
		c.arrive()
	})
}

// send sends request seq now, intended at intended.
func (c *client) send(seq uint64, intended time.Duration) {
	c.inFlight++
	i := int(seq - 1)
	for i >= len(c.samples) { // requests are sent in Seq order: one more
		c.samples = append(c.samples, record.Sample{})
	}
	sent := c.en.Now()
	c.samples[i] = record.Sample{Seq: seq, Intended: intended, Sent: sent}
	e := &c.entries[load.MixPick(c.cum, c.seed, seq)]
	req := &Request{ID: "mp-" + strconv.FormatUint(seq, 10), Method: e.method, Path: e.path, Authority: e.authority, Header: e.header, BodySize: e.bodySize}
	ended := false
	finish := func(r Result) {
		if ended {
			return
		}
		ended = true
		s := &c.samples[i]
		s.Latency = c.en.Now() - s.Intended
		s.Status, s.Error = r.Status, callError(r.Err)
		if r.Status == 0 && r.Err == ErrNone {
			s.Error = record.ErrOther // an answer without a status: no HTTP response
		}
		s.Attempts, s.ZeroAttempts = r.Attempts, r.ZeroAttempts
		c.end(*s)
	}
	timer := c.en.After(c.timeout, func() { finish(Result{Err: ErrTimeout}) })
	c.en.After(c.hop, func() {
		c.target.Handle(req, func(r Result) {
			c.en.After(c.hop, func() {
				if !ended {
					c.en.Stop(timer)
				}
				finish(r)
			})
		})
	})
}

// end takes a finished request: the next waiting one goes out.
func (c *client) end(s record.Sample) {
	c.inFlight--
	c.open--
	if c.onSample != nil {
		c.onSample(s)
	}
	if len(c.waiting) > 0 {
		p := c.waiting[0]
		c.waiting = c.waiting[1:]
		c.send(p.seq, p.intended)
	}
	c.idle()
}

func (c *client) idle() {
	if c.over && c.open == 0 && c.onIdle != nil {
		c.onIdle()
		c.onIdle = nil
	}
}

// cancel ends every request in flight or waiting as canceled, now (a cancelled run: the live
// generator's ErrCanceled), and stops the schedule.
func (c *client) cancel() {
	now := c.en.Now()
	for i := range c.samples {
		s := &c.samples[i]
		if s.Seq != 0 && s.Error == "" && s.Status == 0 { // not finished
			s.Latency, s.Error = now-s.Intended, record.ErrCanceled
		}
	}
	for _, p := range c.waiting {
		c.samples = append(c.samples, record.Sample{Seq: p.seq, Intended: p.intended, Sent: now, Latency: now - p.intended, Error: record.ErrCanceled})
	}
	c.waiting = nil
}

// progress is the run's progress now, with the target proxy's stats.
func (c *client) progress(t *plan.Tracker, planned time.Duration) plan.Progress {
	return t.Snapshot(c.en.Now(), planned, c.target.Stats())
}
