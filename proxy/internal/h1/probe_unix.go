//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package h1

import "syscall"

// peek looks at the socket without reading or waiting: only "nothing to read yet" means open.
func (pr *prober) peek(fd uintptr) bool {
	var b [1]byte
	_, _, err := syscall.Recvfrom(int(fd), b[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	pr.closed.Store(err != syscall.EAGAIN && err != syscall.EWOULDBLOCK)
	return true
}
