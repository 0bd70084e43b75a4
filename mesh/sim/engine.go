// Package sim is the virtual-time runner: a discrete-event engine that runs a plan (mesh/plan) — its
// load, its proxies and sidecars, its upstream instances with their fault rules — on a virtual clock,
// with the policy objects of proxy/policy and the fault models of faults, and returns the same run
// record as the embedded runner. No socket is opened and no goroutine is started: a run is one loop on
// one core, deterministic for a seed.
package sim

import "time"

// Engine is a discrete-event loop on virtual time: events are functions scheduled at an instant, run in
// time order (ties in the order they were scheduled), each at the engine's Now. It is not safe for
// concurrent use: one run, one goroutine.
type Engine struct {
	now    time.Duration
	seq    uint64
	heap   []*event
	free   []*event
	events uint64
}

type event struct {
	at  time.Duration
	seq uint64
	fn  func()
	gen uint32 // bumped when the event is run or stopped, so a stale Timer cannot stop its reuse
	idx int32  // position in the heap; -1 when not queued
}

// Timer is a scheduled event; its zero value is a timer that never fires.
type Timer struct {
	e   *event
	gen uint32
}

// Now is the virtual time: the offset from the run start.
func (en *Engine) Now() time.Duration { return en.now }

// Events is how many events have run so far.
func (en *Engine) Events() uint64 { return en.events }

// Pending is how many events are queued.
func (en *Engine) Pending() int { return len(en.heap) }

// At schedules fn at the virtual instant at (Now when at is in the past).
func (en *Engine) At(at time.Duration, fn func()) Timer {
	if at < en.now {
		at = en.now
	}
	var e *event
	if n := len(en.free); n > 0 {
		e, en.free = en.free[n-1], en.free[:n-1]
	} else {
		e = &event{}
	}
	en.seq++
	e.at, e.seq, e.fn = at, en.seq, fn
	e.idx = int32(len(en.heap))
	en.heap = append(en.heap, e)
	en.up(int(e.idx))
	return Timer{e: e, gen: e.gen}
}

// After schedules fn d after Now.
func (en *Engine) After(d time.Duration, fn func()) Timer { return en.At(en.now+d, fn) }

// Stop cancels the timer; false when it had already run or been stopped.
func (en *Engine) Stop(t Timer) bool {
	e := t.e
	if e == nil || e.gen != t.gen || e.idx < 0 {
		return false
	}
	en.remove(int(e.idx))
	en.release(e)
	return true
}

// Run runs the events due at or before until, in order, then leaves Now at until (or at the last event's
// instant when the queue empties first and until is negative: run everything).
func (en *Engine) Run(until time.Duration) {
	for len(en.heap) > 0 {
		e := en.heap[0]
		if until >= 0 && e.at > until {
			break
		}
		en.remove(0)
		en.now = e.at
		fn := e.fn
		en.release(e)
		en.events++
		fn()
	}
	if until >= 0 && en.now < until {
		en.now = until
	}
}

func (en *Engine) release(e *event) {
	e.gen++
	e.fn = nil
	e.idx = -1
	en.free = append(en.free, e)
}

func less(a, b *event) bool { return a.at < b.at || (a.at == b.at && a.seq < b.seq) }

// The queue is a 4-ary min-heap: shallower than a binary one, so fewer cache misses per operation.
func (en *Engine) up(i int) {
	h := en.heap
	e := h[i]
	for i > 0 {
		p := (i - 1) / 4
		if !less(e, h[p]) {
			break
		}
		h[i] = h[p]
		h[i].idx = int32(i)
		i = p
	}
	h[i] = e
	e.idx = int32(i)
}

func (en *Engine) down(i int) {
	h := en.heap
	n := len(h)
	e := h[i]
	for {
		c := 4*i + 1
		if c >= n {
			break
		}
		m := c
		for k := c + 1; k < c+4 && k < n; k++ {
			if less(h[k], h[m]) {
				m = k
			}
		}
		if !less(h[m], e) {
			break
		}
		h[i] = h[m]
		h[i].idx = int32(i)
		i = m
	}
	h[i] = e
	e.idx = int32(i)
}

func (en *Engine) remove(i int) {
	h := en.heap
	last := len(h) - 1
	if i != last {
		h[i] = h[last]
		h[i].idx = int32(i)
	}
	h[last] = nil
	en.heap = h[:last]
	if i < last {
		en.down(i)
		en.up(i)
	}
}
