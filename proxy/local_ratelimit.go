package proxy

import (
	"math/bits"
	"math/rand/v2"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// localRateLimitBody is the body of the filter's local reply (Envoy's, local_ratelimit.cc).
const localRateLimitBody = "local_rate_limited"

// localRateLimit is Envoy's HTTP local rate limit filter (Filter::decodeHeaders,
// source/extensions/filters/http/local_ratelimit/local_ratelimit.cc) with the filter's own token bucket
// only: a request the filter is enabled for (filter_enabled) takes a token; without one it is rate
// limited, and answered with the configured status when the filter is enforced (filter_enforced), else
// let through.
type localRateLimit struct {
	cfg    *config.LocalRateLimit
	next   http.Handler
	hcm    filterCallbacks
	bucket *tokenBucket
	st     localRateLimitStats
	clk    clock.Clock
	seeds  seeds
	// hostname is %HOSTNAME% in response_headers_to_add.
	hostname string
}

var _ http.Handler = (*localRateLimit)(nil)

// localRateLimitStats are Envoy's, under <stat_prefix>.http_local_rate_limit (FilterConfig::generateStats).
type localRateLimitStats struct {
	enabled, enforced, rateLimited, ok *stats.Counter
}

func newLocalRateLimit(cfg *config.LocalRateLimit, next http.Handler, hcm filterCallbacks, store *stats.Store, clk clock.Clock, sd seeds) *localRateLimit {
	p := cfg.StatPrefix + ".http_local_rate_limit."
	hostname, _ := os.Hostname()
	return &localRateLimit{cfg: cfg, next: next, hcm: hcm, clk: clk, seeds: sd, hostname: hostname,
		bucket: newTokenBucket(cfg.MaxTokens, cfg.TokensPerFill, cfg.FillInterval, clk.Now()),
		st: localRateLimitStats{enabled: store.Counter(p + "enabled"), enforced: store.Counter(p + "enforced"),
			rateLimited: store.Counter(p + "rate_limited"), ok: store.Counter(p + "ok")}}
}

func (f *localRateLimit) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The draws come from the request's own stream: enabled, then enforced.
	var rng rand.PCG
	f.seeds.request(&rng, headerValue(r.Header, hdrRequestID), saltLocalRateLimit)
	if !fractionHit(f.cfg.Enabled, &rng) {
		f.next.ServeHTTP(w, r)
		return
	}
	f.st.enabled.Inc()
	if f.bucket.take(f.clk.Now()) {
		f.st.ok.Inc()
		f.next.ServeHTTP(w, r)
		return
	}
	f.st.rateLimited.Inc()
	if !fractionHit(f.cfg.Enforced, &rng) {
		f.next.ServeHTTP(w, r)
		return
	}
	f.st.enforced.Inc()
	infoOf(r).fail(flagRateLimited, "local_rate_limited") // RL
	// The filter's docs: the local reply carries x-envoy-ratelimited, then response_headers_to_add.
	w.Header()[hdrRateLimited] = trueValue
	applyMutation(w.Header(), f.cfg.ResponseHeaders, &formatContext{r: r, req: r.Header, resp: w.Header(), status: f.cfg.Status,
		start: f.clk.Now(), hostname: f.hostname})
	f.hcm.localReply(w, r, nil, f.cfg.Status, localRateLimitBody)
}

// fractionHit draws whether a share frac of requests is taken, as Envoy's runtime featureEnabled with
// no runtime value: a uniform draw below the numerator out of the denominator.
func fractionHit(frac config.Fraction, rng *rand.PCG) bool {
	if frac.Numerator == 0 {
		return false
	}
	draw, _ := bits.Mul64(rng.Uint64(), uint64(frac.Denominator))
	return draw < uint64(frac.Numerator)
}

// tokenBucket is Envoy's AtomicTokenBucketImpl (source/common/common/token_bucket_impl.cc), the
// local rate limiter's bucket without a fill timer (LocalRateLimiterImpl with
// no_timer_based_rate_limit_token_bucket, local_ratelimit_impl.cc): full at first, refilled
// continuously at tokens_per_fill per fill_interval up to max_tokens; a request takes one whole token.
type tokenBucket struct {
	mu     sync.Mutex
	max    float64
	perSec float64
	tokens float64
	last   time.Time
}

func newTokenBucket(maxTokens, perFill uint32, interval time.Duration, now time.Time) *tokenBucket {
	return &tokenBucket{max: float64(maxTokens), perSec: float64(perFill) / interval.Seconds(),
		tokens: float64(maxTokens), last: now}
}

// take takes a token at now, if there is a whole one.
func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if elapsed := now.Sub(b.last); elapsed > 0 {
		b.tokens = min(b.max, b.tokens+elapsed.Seconds()*b.perSec)
		b.last = now
	}
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	return true
}
