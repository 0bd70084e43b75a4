package policy

import (
	"strconv"
	"strings"
	"time"
)

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

// ResetHeader is one of rate_limited_retry_back_off's reset_headers: a response header that says when to
// retry, in seconds (Retry-After: 30) or as a Unix timestamp (X-RateLimit-Reset: 1700000000).
type ResetHeader struct {
	Name          string
	UnixTimestamp bool
}

// DefaultRateLimitedMaxInterval is rate_limited_retry_back_off.max_interval's default.
const DefaultRateLimitedMaxInterval = 300 * time.Second

// RateLimitedDelay is Envoy's rate-limited back-off: the first reset header that parses to a positive
// interval no longer than maxInterval gives a delay uniform in [interval, 1.5·interval), whole
// milliseconds. ok is false when no header qualifies: the exponential back-off applies then.
func RateLimitedDelay(headers []ResetHeader, maxInterval time.Duration, get func(name string) string, now time.Time, rng Rand) (time.Duration, bool) {
	for _, h := range headers {
		v, err := strconv.ParseInt(strings.TrimSpace(get(h.Name)), 10, 64)
		if err != nil {
			continue
		}
		interval := time.Duration(v) * time.Second
		if h.UnixTimestamp {
			interval = time.Unix(v, 0).Sub(now)
		}
		if interval <= 0 || interval > maxInterval {
			continue
		}
		ms := uint64(interval / time.Millisecond)
		return time.Duration(ms+rng.Uint64()%(ms/2+1)) * time.Millisecond, true
	}
	return 0, false
}
