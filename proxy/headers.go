package proxy

import (
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// The headers the router adds or reads, in canonical form.
const (
	hdrRequestID                = "X-Request-Id"
	hdrForwardedProto           = "X-Forwarded-Proto"
	hdrAttemptCount             = "X-Envoy-Attempt-Count"
	hdrOriginalPath             = "X-Envoy-Original-Path"
	hdrExpectedTimeout          = "X-Envoy-Expected-Rq-Timeout-Ms"
	hdrRateLimited              = "X-Envoy-Ratelimited"
	hdrUpstreamServiceTime      = "X-Envoy-Upstream-Service-Time"
	hdrImmediateHealthCheckFail = "X-Envoy-Immediate-Health-Check-Fail"
	hdrContentLength            = "Content-Length"
	hdrContentType              = "Content-Type"
)

// headerValue is h.Get(name) for a name already in canonical form, without canonicalizing it again
// (the proxy's server and pool store every name in canonical form).
func headerValue(h http.Header, name string) string {
	if v := h[name]; len(v) > 0 {
		return v[0]
	}
	return ""
}

// anyHeaderMatches reports whether one of the matchers matches the headers.
func anyHeaderMatches(ms []config.HeaderMatcher, h http.Header) bool {
	for _, m := range ms {
		if HeaderMatches(m, h) {
			return true
		}
	}
	return false
}

// shareHeader puts the end-to-end headers of src into dst, sharing their value slices.
func shareHeader(dst, src http.Header) {
	conn := src["Connection"]
	for k, v := range src {
		if h1.IsHopByHop(k) || len(conn) > 0 && h1.HasToken(conn, k) {
			continue
		}
		dst[k] = v
	}
}

// HeaderMatches applies one HeaderMatcher to the request headers, as Envoy's
// HeaderUtility::matchHeaders (source/common/http/header_utility.cc): several values of the header are
// matched joined by ","; an absent header matches only a present_match that wants it absent (or, with
// invert_match, one that wants it present) — inverting a value match does not make it match an absent
// header — unless treat_missing_header_as_empty, under which an absent header is the empty value (and a
// present_match, or a matcher with only a name, matches as it is set, whatever the header).
func HeaderMatches(m config.HeaderMatcher, h http.Header) bool {
	values, present := h[http.CanonicalHeaderKey(m.Name)]
	return valuesMatch(m, values, present)
}

// requestHeadersMatch applies header matchers to a request as Envoy does to its request headers:
// the pseudo-headers :path (the request target), :method, :authority and :scheme read the request's.
func requestHeadersMatch(ms []config.HeaderMatcher, r *http.Request) bool {
	for _, m := range ms {
		var ok bool
		switch m.Name {
		case ":path":
			ok = valuesMatch(m, []string{r.RequestURI}, true)
		case ":method":
			ok = valuesMatch(m, []string{r.Method}, true)
		case ":authority":
			ok = valuesMatch(m, []string{r.Host}, true)
		case ":scheme":
			scheme := "http"
			if r.TLS != nil {
				scheme = "https"
			}
			ok = valuesMatch(m, []string{scheme}, true)
		default:
			ok = HeaderMatches(m, r.Header)
		}
		if !ok {
			return false
		}
	}
	return true
}

// valuesMatch applies m to a header's values (present: the header is there).
func valuesMatch(m config.HeaderMatcher, values []string, present bool) bool {
	switch {
	case !present && !m.MissingAsEmpty:
		return m.Present != nil && *m.Present == m.Invert
	case m.Present != nil:
		return *m.Present != m.Invert
	}
	return stringMatches(m, strings.Join(values, ",")) != m.Invert // absent: strings.Join(nil) is ""
}

// stringMatches applies the string match of m (Envoy's StringMatcher, or range_match) to v.
func stringMatches(m config.HeaderMatcher, v string) bool {
	fold := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	switch {
	case m.Exact != nil:
		return fold(v) == fold(*m.Exact)
	case m.Prefix != nil:
		return strings.HasPrefix(fold(v), fold(*m.Prefix))
	case m.Suffix != nil:
		return strings.HasSuffix(fold(v), fold(*m.Suffix))
	case m.Contains != nil:
		return strings.Contains(fold(v), fold(*m.Contains))
	case m.Regex != nil:
		return m.Regex.MatchString(v)
	case m.Range != nil:
		// A value that is not a base-10 int64 is outside every range (Envoy: absl::SimpleAtoi fails).
		n, err := strconv.ParseInt(v, 10, 64)
		return err == nil && n >= m.Range.Start && n < m.Range.End
	}
	return false
}

// queryParameterMatches applies a query parameter matcher to the request's first value of the parameter,
// as Envoy's ConfigUtility::QueryParameterMatcher::matches (source/common/router/config_utility.cc): an
// absent parameter never matches; present_match matches any value; else its string_match decides.
func queryParameterMatches(m config.HeaderMatcher, q url.Values) bool {
	values, ok := q[m.Name]
	if !ok || len(values) == 0 {
		return false
	}
	if m.Present != nil {
		return true
	}
	return stringMatches(m, values[0])
}
