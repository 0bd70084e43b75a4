//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package h1

// peek cannot look at the socket here: the connection is taken to be open.
func (pr *prober) peek(uintptr) bool {
	pr.closed = false
	return true
}

// socketEmpty is not used here (rawIO is false).
func socketEmpty(uintptr) bool { return false }

// rawIO: send writes the usual way here.
const rawIO = false

func (cc *clientConn) rawSend(uintptr) bool { return true }
