package proxy

import (
	"net/http"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// The headers the router adds or reads, in canonical form.
const (
	hdrRequestID                = "X-Request-Id"
	hdrForwardedProto           = "X-Forwarded-Proto"
	hdrAttemptCount             = "X-Envoy-Attempt-Count"
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
		if headerMatches(m, h) {
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

// headerMatches applies one HeaderMatcher to the request headers.
func headerMatches(m config.HeaderMatcher, h http.Header) bool {
	values, present := h[http.CanonicalHeaderKey(m.Name)]
	v := strings.Join(values, ",")
	fold := func(s string) string {
		if m.IgnoreCase {
			return strings.ToLower(s)
		}
		return s
	}
	var ok bool
	switch {
	case m.Present != nil:
		ok = present == *m.Present
	case !present:
		ok = false
	case m.Exact != nil:
		ok = fold(v) == fold(*m.Exact)
	case m.Prefix != nil:
		ok = strings.HasPrefix(fold(v), fold(*m.Prefix))
	case m.Suffix != nil:
		ok = strings.HasSuffix(fold(v), fold(*m.Suffix))
	case m.Contains != nil:
		ok = strings.Contains(fold(v), fold(*m.Contains))
	}
	return ok != m.Invert
}
