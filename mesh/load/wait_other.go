//go:build !linux

package load

import (
	"context"
	"time"
)

// waiter sleeps the open-loop dispatcher until each intended send time, on a time.Timer.
type waiter struct{ timer *time.Timer }

func newWaiter(context.Context) *waiter { return &waiter{timer: time.NewTimer(time.Hour)} }

// until waits until t, or until ctx is done (then it returns ctx's error).
func (w *waiter) until(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	w.timer.Reset(d)
	select {
	case <-w.timer.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (w *waiter) close() { w.timer.Stop() }
