// Package netx holds the small network helper the fault upstream and the TCP fault proxy share: a TCP
// reset. (Their interruptible sleep is proxy/clock's Sleep, which the proxy's back-off uses too.)
package netx

import "net"

// RST closes c with SO_LINGER 0, so the peer sees a TCP RST (ECONNRESET) and nothing more.
func RST(c net.Conn) {
	if l, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = l.SetLinger(0)
	}
	_ = c.Close()
}
