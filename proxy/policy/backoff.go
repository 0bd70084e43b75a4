package policy

import "time"

// Rand is the randomness a policy needs; *math/rand/v2.Rand satisfies it.
type Rand interface {
	Uint64() uint64
}

// Backoff is Envoy's jittered exponential back-off (common/backoff_strategy): each delay is uniform in
// [0, cur), where cur starts at base and doubles after each use, becoming max once doubling would pass it.
type Backoff struct {
	cur, max time.Duration
}

// NewBackoff returns a back-off with the given base and max interval (Envoy's defaults are 25ms and 10×base).
func NewBackoff(base, max time.Duration) *Backoff {
	if max < base {
		max = base
	}
	return &Backoff{cur: base, max: max}
}

// Next returns the next delay.
func (b *Backoff) Next(rng Rand) time.Duration {
	ms := uint64(b.cur / time.Millisecond)
	if b.cur > b.max/2 {
		b.cur = b.max
	} else {
		b.cur *= 2
	}
	if ms == 0 {
		return 0
	}
	return min(time.Duration(rng.Uint64()%ms)*time.Millisecond, b.max)
}
