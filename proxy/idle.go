package proxy

import (
	"sync"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
)

// idleState is where an idle clock is: armed, fired once, or stopped for good.
type idleState uint8

const (
	idleArmed idleState = iota
	idleFired
	idleStopped
)

// idleClock fires once d has passed without activity, on the injected clock: touch moves its deadline
// forward, and the one timer, when it fires early, waits again for what is left (no timer is made per
// byte). The attempt's per_try_idle_timeout (idleTimer) and the stream's idle timeout (streamIdle) are
// built on it.
type idleClock struct {
	clk clock.Clock
	d   time.Duration

	mu    sync.Mutex
	t     clock.Timer
	last  time.Time // the last activity (or the start)
	state idleState
	// onFire runs once, with mu held, when the clock fires.
	onFire func()
}

// start arms the clock from now.
func (c *idleClock) start(clk clock.Clock, d time.Duration, onFire func()) {
	c.clk, c.d, c.onFire, c.last = clk, d, onFire, clk.Now()
	c.t = clk.AfterFunc(d, c.fire)
}

func (c *idleClock) fire() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state != idleArmed {
		return
	}
	if left := c.d - c.clk.Since(c.last); left > 0 {
		c.t = c.clk.AfterFunc(left, c.fire)
		return
	}
	c.state = idleFired
	c.onFire()
}

// touch moves the deadline: there was activity.
func (c *idleClock) touch() {
	c.mu.Lock()
	if c.state == idleArmed {
		c.last = c.clk.Now()
	}
	c.mu.Unlock()
}

// hasFired reports whether the clock fired.
func (c *idleClock) hasFired() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.state == idleFired
}

// stop disarms the clock for good: once it returns, onFire will not run.
func (c *idleClock) stop() {
	c.mu.Lock()
	if c.state == idleArmed {
		c.state = idleStopped
	}
	c.t.Stop()
	c.mu.Unlock()
}
