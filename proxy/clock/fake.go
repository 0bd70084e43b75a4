package clock

import (
	"sort"
	"sync"
	"time"
)

// Fake is a clock that moves only when told to (Step, SetTime): its timers and tickers fire, in the
// order of their deadlines, as time passes them. Like package time's, a timer's channel holds one
// value and a ticker drops the ticks nobody took; an AfterFunc runs its function in a goroutine of its
// own. Safe for concurrent use.
type Fake struct {
	mu      sync.Mutex
	now     time.Time
	waiters []*fakeTimer
	seq     uint64 // orders waiters with the same deadline by creation
}

var _ Clock = (*Fake)(nil)

// NewFake returns a fake clock reading t.
func NewFake(t time.Time) *Fake { return &Fake{now: t} }

func (f *Fake) Now() time.Time {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.now
}

func (f *Fake) Since(t time.Time) time.Duration { return f.Now().Sub(t) }

func (f *Fake) NewTimer(d time.Duration) Timer {
	return f.add(d, 0, nil, make(chan time.Time, 1))
}

func (f *Fake) AfterFunc(d time.Duration, fn func()) Timer { return f.add(d, 0, fn, nil) }

func (f *Fake) NewTicker(d time.Duration) Ticker {
	if d <= 0 {
		panic("clock: non-positive interval for NewTicker")
	}
	return fakeTicker{f.add(d, d, nil, make(chan time.Time, 1))}
}

func (f *Fake) add(d, period time.Duration, fn func(), c chan time.Time) *fakeTimer {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.seq++
	t := &fakeTimer{clock: f, when: f.now.Add(d), period: period, fn: fn, c: c, seq: f.seq}
	f.waiters = append(f.waiters, t)
	if d <= 0 {
		f.fireLocked()
	}
	return t
}

// Step moves the clock forward by d, firing what falls due on the way.
func (f *Fake) Step(d time.Duration) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked(f.now.Add(d))
}

// SetTime moves the clock to t (never backwards), firing what falls due on the way.
func (f *Fake) SetTime(t time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.advanceLocked(t)
}

// Waiters is how many timers and tickers are running: a test that steps the clock waits until the
// goroutines it drives have armed theirs.
func (f *Fake) Waiters() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.waiters)
}

func (f *Fake) advanceLocked(to time.Time) {
	for {
		sort.Slice(f.waiters, func(i, j int) bool {
			a, b := f.waiters[i], f.waiters[j]
			return a.when.Before(b.when) || a.when.Equal(b.when) && a.seq < b.seq
		})
		if len(f.waiters) == 0 || f.waiters[0].when.After(to) {
			break
		}
		if t := f.waiters[0]; t.when.After(f.now) {
			f.now = t.when
		}
		f.fireLocked()
	}
	if to.After(f.now) {
		f.now = to
	}
}

// fireLocked fires every waiter due at f.now.
func (f *Fake) fireLocked() {
	keep := f.waiters[:0]
	var due []*fakeTimer
	for _, t := range f.waiters {
		if t.when.After(f.now) {
			keep = append(keep, t)
		} else {
			due = append(due, t)
		}
	}
	f.waiters = keep
	for _, t := range due {
		switch {
		case t.fn != nil:
			go t.fn()
		default:
			select {
			case t.c <- f.now:
			default: // a tick nobody took is dropped, as time.Ticker does
			}
		}
		if t.period > 0 {
			t.when = t.when.Add(t.period)
			f.waiters = append(f.waiters, t)
		}
	}
}

func (f *Fake) stop(t *fakeTimer) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, w := range f.waiters {
		if w == t {
			f.waiters = append(f.waiters[:i], f.waiters[i+1:]...)
			return true
		}
	}
	return false
}

type fakeTimer struct {
	clock  *Fake
	when   time.Time
	period time.Duration // > 0: a ticker
	fn     func()
	c      chan time.Time
	seq    uint64
}

func (t *fakeTimer) C() <-chan time.Time { return t.c }

// Stop reports whether it stopped the timer before it fired (a ticker: whether it was running).
func (t *fakeTimer) Stop() bool { return t.clock.stop(t) }

type fakeTicker struct{ t *fakeTimer }

func (t fakeTicker) C() <-chan time.Time { return t.t.c }
func (t fakeTicker) Stop()               { t.t.Stop() }
