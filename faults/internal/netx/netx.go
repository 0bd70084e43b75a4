// Package netx holds the small network helpers the fault upstream, the TCP fault proxy and (once it
// takes them) the proxy share: an interruptible sleep for back-offs and pacing, and a TCP reset.
package netx

import (
	"context"
	"net"
	"time"
)

// Sleep waits d, and reports false if ctx ended first.
func Sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// RST closes c with SO_LINGER 0, so the peer sees a TCP RST (ECONNRESET) and nothing more.
func RST(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}
