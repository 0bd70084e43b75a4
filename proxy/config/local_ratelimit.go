package config

import (
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	lrlv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/local_ratelimit/v3"
)

// Envoy's limits for the local rate limit filter: a 429 when status is unset or below 400
// (FilterConfig::toErrorCode, source/extensions/filters/http/local_ratelimit/local_ratelimit.h), and a
// fill_interval of at least 50ms (LocalRateLimiterImpl, source/extensions/filters/common/local_ratelimit/
// local_ratelimit_impl.cc).
const (
	defaultRateLimitedStatus = 429
	minFillInterval          = 50 * time.Millisecond
)

// LocalRateLimit is envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit: a token bucket
// shared by every request of the listener.
type LocalRateLimit struct {
	StatPrefix string // stats <StatPrefix>.http_local_rate_limit.{enabled,enforced,rate_limited,ok}
	Status     int    // the local reply's status: status.code when 400 or more, else 429
	// The token bucket: MaxTokens at most (and at first), refilled by TokensPerFill (default 1) every
	// FillInterval (at least 50ms).
	MaxTokens, TokensPerFill uint32
	FillInterval             time.Duration
	// Enabled and Enforced are filter_enabled and filter_enforced's default_value (meshproof has no
	// runtime): the share of requests the filter checks, and of those over the limit it answers. Absent:
	// 0%, as in Envoy (FilterConfig::enabled and enforced).
	Enabled, Enforced Fraction
	ResponseHeaders   HeaderMutation // response_headers_to_add, on the local reply
}

// HTTPFilter is one HTTP filter before the router, in the order of the HCM's http_filters: exactly one
// of its fields is set.
type HTTPFilter struct {
	Fault          *FaultFilter
	LocalRateLimit *LocalRateLimit
}

// localRateLimit converts the local rate limit filter's configuration.
func (c *converter) localRateLimit(l *lrlv3.LocalRateLimit, path string) *LocalRateLimit {
	out := &LocalRateLimit{StatPrefix: l.GetStatPrefix(), Status: defaultRateLimitedStatus,
		Enabled: runtimeFraction(l.GetFilterEnabled()), Enforced: runtimeFraction(l.GetFilterEnforced()),
		ResponseHeaders: c.headerMutation(l.GetResponseHeadersToAdd(), nil, path, "response")}
	if code := int(l.GetStatus().GetCode()); code >= 400 {
		out.Status = code
	}
	tb := l.GetTokenBucket()
	if tb == nil {
		c.fail(joinPath(path, "token_bucket"), "required: per-route configuration (typed_per_filter_config) is not supported, so the filter's own token bucket is the only one")
		return out
	}
	out.MaxTokens = tb.GetMaxTokens()
	out.TokensPerFill = 1
	if v := tb.GetTokensPerFill(); v != nil {
		out.TokensPerFill = v.GetValue()
	}
	out.FillInterval = c.duration(tb.GetFillInterval(), 0, joinPath(joinPath(path, "token_bucket"), "fill_interval"))
	if out.FillInterval < minFillInterval {
		c.fail(joinPath(joinPath(path, "token_bucket"), "fill_interval"), "%v is below Envoy's minimum of 50ms", out.FillInterval)
	}
	return out
}

// runtimeFraction is a RuntimeFractionalPercent's default_value; meshproof has no runtime, so
// runtime_key is never read (Envoy with an empty runtime takes the default the same way). Absent: 0%.
func runtimeFraction(p *corev3.RuntimeFractionalPercent) Fraction {
	if p == nil {
		return Fraction{Numerator: 0, Denominator: 100}
	}
	return fraction(p.GetDefaultValue())
}
