package clock

import (
	"context"
	"time"
)

// Sleep waits d on c, or until ctx ends: true when the whole of d passed, false when ctx ended first
// (at once when it already had). d <= 0 does not wait. The proxy's retry back-off and the fault
// upstream's delays both wait this way; it lives here, a package of the standard library alone, as the
// one both may import (the top-level layout has no module-wide internal package).
func Sleep(ctx context.Context, c Clock, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := c.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C():
		return true
	case <-ctx.Done():
		return false
	}
}
