//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package h1

import "syscall"

// peek looks at the socket without reading or waiting: only "nothing to read yet" means open.
func (pr *prober) peek(fd uintptr) bool {
	pr.closed = !socketEmpty(fd)
	return true
}

// socketEmpty reports whether the socket has nothing to read yet: no byte, no end of stream, no error.
func socketEmpty(fd uintptr) bool {
	var b [1]byte
	for {
		_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		if err != syscall.EINTR {
			return err == syscall.EAGAIN || err == syscall.EWOULDBLOCK
		}
	}
}

// rawIO: send may write and wait through the raw connection.
const rawIO = true

// rawSend is send's raw read callback: first it writes the request (false: now wait until readable),
// then, called again once the socket is readable, it ends the wait.
func (cc *clientConn) rawSend(fd uintptr) bool {
	if cc.outWaiting {
		return true
	}
	cc.outWaiting = true
	for {
		n, err := syscall.Write(int(fd), cc.out)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return true // the socket buffer is full: send writes the rest the usual way
		case err != nil:
			cc.outErr = err
			return true
		}
		cc.out = cc.out[n:]
		return len(cc.out) > 0 // all written: wait for the response
	}
}
