package tcp

import (
	"strconv"

	"github.com/meshproof/meshproof/faults/field"
)

// limitData closes the connection once Bytes have gone through in its direction: the chunk that
// reaches the limit is truncated to it.
type limitData struct{ Toxic }

var _ chunker = limitData{}

func (t limitData) check() []error {
	if t.Bytes < 0 {
		return []error{field.Errorf("bytes", "%d is negative, want >= 0", t.Bytes)}
	}
	return nil
}

func (t limitData) chunk(c *chunk, s *state) {
	l := c.l
	l.mu.Lock()
	if left := t.Bytes - s.forwarded; int64(len(c.p)) >= left {
		c.p, c.cut = c.p[:max(left, 0)], true
	}
	s.forwarded += int64(len(c.p))
	l.mu.Unlock()
	if c.cut { // as before the toxic types: a limit_data after one that cut says so too
		l.p.emit([]Event{l.p.event(l.n, t.Toxic, "closed after "+strconv.FormatInt(t.Bytes, 10)+" bytes")})
	}
}
