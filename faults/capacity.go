package faults

import (
	"context"
	"errors"
	"slices"
	"sync"
	"time"

	"github.com/meshproof/meshproof/faults/field"
)

// HeaderOverload says why an instance with finite capacity answered 503 without serving the
// request: OverloadQueueFull or OverloadQueueTimeout.
const HeaderOverload = "x-meshproof-overload"

// Reasons of an overload 503, in HeaderOverload.
const (
	OverloadQueueFull    = "queue_full"    // every worker busy and the queue full (WhenFullReject)
	OverloadQueueTimeout = "queue_timeout" // waited QueueTimeout in the queue
)

// What an instance with finite capacity does with a request that finds the queue full.
const (
	WhenFullReject = "reject" // answer 503 (HeaderOverload: queue_full) at once; the default
	WhenFullRefuse = "refuse" // reset the connection (TCP RST), as an overloaded server dropping it
)

// Capacity is an instance's finite capacity: Workers requests are served at a time, each holding
// its worker from admission until its answer is written (its delay, its calls and its body), and
// up to Queue more wait for a worker in arrival order.
type Capacity struct {
	Workers int `yaml:"workers"` // >= 1
	Queue   int `yaml:"queue"`   // >= 0 waiting requests beyond the workers
	// QueueTimeout: a request that waited this long for a worker is answered 503 (HeaderOverload:
	// queue_timeout); 0 = wait without bound.
	QueueTimeout time.Duration `yaml:"queue_timeout"`
	WhenFull     string        `yaml:"when_full"` // WhenFullReject (default) or WhenFullRefuse
}

// CapacityStats is what an instance's workers and queue did.
type CapacityStats struct {
	Workers int
	Queue   int
	// Busy is the worker time spent on requests, summed over workers: utilisation is
	// Busy / (Workers × run length).
	Busy time.Duration
	// Queued counts the requests that waited for a worker (counted when they start waiting);
	// QueueWait is their total wait (also of those that timed out or went away), MaxQueueWait the
	// longest.
	Queued       uint64
	QueueWait    time.Duration
	MaxQueueWait time.Duration
	// Rejected counts the requests that found the queue full (answered 503, or reset with
	// WhenFullRefuse); TimedOut those that left the queue at QueueTimeout (503).
	Rejected uint64
	TimedOut uint64
}

// Validate checks a capacity: workers >= 1, queue >= 0, queue_timeout >= 0, when_full "",
// "reject" or "refuse".
func (c Capacity) Validate() error {
	var errs []error
	if c.Workers < 1 {
		errs = append(errs, field.Errorf("workers", "%d is below 1, want >= 1", c.Workers))
	}
	if c.Queue < 0 {
		errs = append(errs, field.Errorf("queue", "%d is negative, want >= 0", c.Queue))
	}
	errs = append(errs, checkDuration("queue_timeout", c.QueueTimeout))
	switch c.WhenFull {
	case "", WhenFullReject, WhenFullRefuse:
	default:
		errs = append(errs, field.Errorf("when_full", "%q is not a choice, want %s or %s", c.WhenFull, WhenFullReject, WhenFullRefuse))
	}
	return errors.Join(errs...)
}

// admission is what became of a request at the door of an instance with finite capacity.
type admission int

const (
	admitted      admission = iota // it holds a worker
	admitFull                      // every worker busy and the queue full
	admitTimedOut                  // it waited QueueTimeout
	admitCanceled                  // its client went away (or the upstream closed) while it waited
)

// ticket is one request's admission.
type ticket struct {
	outcome admission
	queued  bool          // it waited in the queue
	wait    time.Duration // how long, on the upstream's clock
	since   time.Time     // admitted: when it took its worker
}

// workers are an instance's workers and queue. Waits are on real timers; every time it reports is
// on the upstream's clock.
type workers struct {
	cap     Capacity
	now     func() time.Time
	onQueue func() // called as a request starts waiting

	mu      sync.Mutex // guards the fields below
	busy    int
	waiting []*waiter // FIFO
}

// waiter is a request waiting for a worker.
type waiter struct {
	ready   chan struct{} // closed when it is handed a worker
	granted bool          // guarded by workers.mu
	at      time.Time     // when it was handed one
}

// admit takes a worker, waiting in the queue for one if there is room, until QueueTimeout or until
// ctx ends. An admitted request must release its worker.
func (w *workers) admit(ctx context.Context) ticket {
	arrived := w.now()
	w.mu.Lock()
	if w.busy < w.cap.Workers {
		w.busy++
		w.mu.Unlock()
		return ticket{outcome: admitted, since: arrived}
	}
	if len(w.waiting) >= w.cap.Queue {
		w.mu.Unlock()
		return ticket{outcome: admitFull}
	}
	wt := &waiter{ready: make(chan struct{})}
	w.waiting = append(w.waiting, wt)
	w.mu.Unlock()
	w.onQueue()

	var timeout <-chan time.Time
	if w.cap.QueueTimeout > 0 {
		t := time.NewTimer(w.cap.QueueTimeout)
		defer t.Stop()
		timeout = t.C
	}
	outcome := admitted
	select {
	case <-wt.ready:
	case <-timeout:
		outcome = admitTimedOut
	case <-ctx.Done():
		outcome = admitCanceled
	}
	if outcome != admitted {
		w.mu.Lock()
		if wt.granted {
			outcome = admitted // handed a worker as it gave up: it takes it
		} else {
			w.waiting = slices.DeleteFunc(w.waiting, func(o *waiter) bool { return o == wt })
		}
		w.mu.Unlock()
	}
	if outcome == admitted {
		return ticket{outcome: admitted, queued: true, wait: wt.at.Sub(arrived), since: wt.at}
	}
	return ticket{outcome: outcome, queued: true, wait: w.now().Sub(arrived)}
}

// release gives a worker back, handing it to the first waiting request if any, and returns when.
func (w *workers) release() time.Time {
	now := w.now()
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.waiting) == 0 {
		w.busy--
		return now
	}
	wt := w.waiting[0]
	w.waiting[0] = nil
	w.waiting = w.waiting[1:]
	wt.granted, wt.at = true, now
	close(wt.ready)
	return now
}
