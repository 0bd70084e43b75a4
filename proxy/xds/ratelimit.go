package xds

import (
	"context"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
)

// limiter is ads_config.rate_limit_settings: a token bucket on the discovery requests sent, full at
// first, refilled continuously (Envoy's TokenBucketImpl, used by its GrpcStream); a request without a
// token waits for one. Used by the stream's goroutine only.
type limiter struct {
	clk    clock.Clock
	max    float64
	rate   float64 // tokens per second
	tokens float64
	last   time.Time
	// enforced is called each time a request has to wait (control_plane.rate_limit_enforced).
	enforced func()
}

func newLimiter(rl *config.RateLimit, clk clock.Clock, enforced func()) *limiter {
	if rl == nil {
		return nil
	}
	return &limiter{clk: clk, max: float64(rl.MaxTokens), rate: rl.FillRate, tokens: float64(rl.MaxTokens),
		last: clk.Now(), enforced: enforced}
}

// wait takes a token, waiting on the clock until there is one; a nil limiter never waits.
func (l *limiter) wait(ctx context.Context) error {
	if l == nil {
		return nil
	}
	for waited := false; ; waited = true {
		now := l.clk.Now()
		l.tokens = min(l.max, l.tokens+now.Sub(l.last).Seconds()*l.rate)
		l.last = now
		if l.tokens >= 1 {
			l.tokens--
			return nil
		}
		if !waited {
			l.enforced()
		}
		d := time.Duration((1 - l.tokens) / l.rate * float64(time.Second))
		t := l.clk.NewTimer(max(d, time.Nanosecond))
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}
