package tcp

import "time"

// timeout drops all data, and closes the connection Timeout after it first applies (0 = never).
type timeout struct{ Toxic }

var (
	_ chunker = timeout{}
	_ timed   = timeout{}
)

func (timeout) check() []error { return nil }

func (timeout) chunk(c *chunk, _ *state) { c.drop = true }

func (t timeout) after() (time.Duration, bool) { return t.Timeout, t.Timeout > 0 }

func (t timeout) expire(l *link) {
	l.p.emit([]Event{l.p.event(l.n, t.Toxic, "closed after timeout")})
	l.close()
}
