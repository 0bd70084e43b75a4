package h1

import (
	"context"
	"sync"
)

// Aborter interrupts the upstream exchange of a downstream connection: the server gives each
// connection one, in its requests' contexts, and a Pool registers the exchange it runs for a Request
// naming it. Cancelling through it costs no allocation, where a context.AfterFunc per exchange would.
type Aborter struct {
	mu   sync.Mutex
	fn   func() // aborts the exchange registered; nil when none
	gone bool   // the downstream is gone: every exchange is aborted at once
}

type aborterKey struct{}

// AborterFrom is the Aborter of the connection a request context belongs to; nil if there is none.
func AborterFrom(ctx context.Context) *Aborter {
	a, _ := ctx.Value(aborterKey{}).(*Aborter)
	return a
}

// Interrupt aborts the exchange in progress, if any (a per-try timeout, say). The abort runs under the
// lock, so that it cannot reach a connection already given back to its pool.
func (a *Aborter) Interrupt() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.fn != nil {
		a.fn()
	}
}

// gone reports whether the downstream is gone.
func (a *Aborter) isGone() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.gone
}

// set registers an exchange's abort; false when the downstream is already gone.
func (a *Aborter) set(fn func()) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.gone {
		return false
	}
	a.fn = fn
	return true
}

func (a *Aborter) unset() {
	a.mu.Lock()
	a.fn = nil
	a.mu.Unlock()
}

// close aborts the exchange in progress and every later one.
func (a *Aborter) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.gone = true
	if a.fn != nil {
		a.fn()
	}
}

// Register registers an exchange's abort for a pool outside this package (the HTTP/2 upstream): fn
// runs when the exchange is interrupted; false when the downstream is already gone.
func (a *Aborter) Register(fn func()) bool { return a.set(fn) }

// Unregister ends the exchange's abort registered by Register.
func (a *Aborter) Unregister() { a.unset() }

// Gone reports whether the downstream is gone (every exchange is aborted at once).
func (a *Aborter) Gone() bool { return a.isGone() }
