package tcp

import "time"

// resetPeer resets the connection (TCP RST to the peer of its stream) Timeout after it first
// applies (0 = at once).
type resetPeer struct{ Toxic }

var _ timed = resetPeer{}

func (resetPeer) check() []error { return nil }

func (t resetPeer) after() (time.Duration, bool) { return t.Timeout, true }

func (t resetPeer) expire(l *link) {
	l.p.emit([]Event{l.p.event(l.n, t.Toxic, "reset")})
	l.reset(t.stream())
}
