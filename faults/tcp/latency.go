package tcp

// latency delays each chunk by Latency ± Jitter (drawn per chunk).
type latency struct{ Toxic }

var _ chunker = latency{}

func (latency) check() []error { return nil }

func (t latency) chunk(c *chunk, s *state) {
	c.l.mu.Lock()
	c.delay += t.LatencyOf(s.rng)
	c.l.mu.Unlock()
}
