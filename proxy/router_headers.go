package proxy

import (
	"errors"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// The router's request headers (consumed, never forwarded).
// Written in canonical form, as are all header names the request path uses: net/http would allocate a
// canonical copy of any other spelling on every Get, Set and Del.
const (
	hdrRetryOn              = "X-Envoy-Retry-On"
	hdrRetryGrpcOn          = "X-Envoy-Retry-Grpc-On"
	hdrMaxRetries           = "X-Envoy-Max-Retries"
	hdrRetriableStatusCodes = "X-Envoy-Retriable-Status-Codes"
	hdrUpstreamTimeout      = "X-Envoy-Upstream-Rq-Timeout-Ms"
	hdrPerTryTimeout        = "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms"
	hdrRetriableHeaderNames = "X-Envoy-Retriable-Header-Names"
)

// routerHeaderSet are the router's request headers: consumed, never sent upstream.
var routerHeaderSet = map[string]bool{hdrRetryOn: true, hdrRetryGrpcOn: true, hdrMaxRetries: true, hdrRetriableStatusCodes: true,
	hdrUpstreamTimeout: true, hdrPerTryTimeout: true, hdrRetriableHeaderNames: true}

// routeTimeout is a request's route timeout (0: none): the route's, or x-envoy-upstream-rq-timeout-ms.
func routeTimeout(route *config.Route, h http.Header) time.Duration {
	if ms, err := parseHeaderUint(h, hdrUpstreamTimeout); err == nil {
		return time.Duration(ms) * time.Millisecond
	}
	return route.Action.Timeout
}

// effectivePolicy is the request's retry policy and route timeout: the route's (or the virtual host's)
// policy, adjusted by the router's request headers, which only an internal request still has (the
// connection manager removed them from the others: forwarding.mutate), as Envoy does —
// x-envoy-retry-on and x-envoy-retry-grpc-on add conditions, x-envoy-max-retries replaces num_retries
// while some condition is active, x-envoy-retriable-status-codes adds codes, and the timeout headers
// (ms, 0 = none) replace the route timeout and per_try_timeout.
func (f *forward) effectivePolicy() (*config.RetryPolicy, time.Duration) {
	return EffectiveRetryPolicy(f.route, f.vh, f.r.Header)
}

// EffectiveRetryPolicy is effectivePolicy of a request with headers h on route of virtual host vh: the
// simulator's router (mesh/sim) takes its internal requests' policy from it too.
func EffectiveRetryPolicy(route *config.Route, vh *config.VirtualHost, h http.Header) (*config.RetryPolicy, time.Duration) {
	rp := route.Action.RetryPolicy
	if rp == nil {
		rp = vh.RetryPolicy
	}
	timeout := routeTimeout(route, h)
	// x-envoy-retry-on adds HTTP conditions, x-envoy-retry-grpc-on gRPC ones, each its own vocabulary,
	// unknown values ignored (RetryStateImpl's parseRetryOn / parseRetryGrpcOn, retry_state_impl.cc);
	// both hold for any request, gRPC or not.
	extra := headerConditions(nil, headerValue(h, hdrRetryOn), policy.RetryOnNames)
	extra = headerConditions(extra, headerValue(h, hdrRetryGrpcOn), policy.RetryGrpcOnNames)
	maxRetries, maxErr := parseHeaderUint(h, hdrMaxRetries)
	perTry, perTryErr := parseHeaderUint(h, hdrPerTryTimeout)
	if len(extra) == 0 && (rp == nil || maxErr != nil && perTryErr != nil && headerValue(h, hdrRetriableStatusCodes) == "" && headerValue(h, hdrRetriableHeaderNames) == "") {
		return rp, timeout
	}
	eff := config.RetryPolicy{NumRetries: 1, BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, HostSelectionMaxAttempts: 1}
	if rp != nil {
		eff = *rp
		eff.RetryOn = append([]string(nil), rp.RetryOn...)
	}
	eff.RetryOn = append(eff.RetryOn, extra...)
	eff.RetriableHeaders = append([]config.HeaderMatcher(nil), eff.RetriableHeaders...)
	if maxErr == nil && len(eff.RetryOn) > 0 {
		eff.NumRetries = uint32(maxRetries)
	}
	if perTryErr == nil {
		eff.PerTryTimeout = time.Duration(perTry) * time.Millisecond
	}
	for _, c := range strings.Split(h.Get(hdrRetriableStatusCodes), ",") {
		if code, err := strconv.Atoi(strings.TrimSpace(c)); err == nil {
			eff.RetriableStatusCodes = append(eff.RetriableStatusCodes, code)
		}
	}
	present := true
	for _, name := range strings.Split(h.Get(hdrRetriableHeaderNames), ",") {
		if name = strings.TrimSpace(name); name != "" {
			eff.RetriableHeaders = append(eff.RetriableHeaders, config.HeaderMatcher{Name: name, Present: &present})
		}
	}
	return &eff, timeout
}

// headerConditions appends to extra the values of a retry header's comma-separated list that names
// knows.
func headerConditions(extra []string, v string, names map[string]policy.RetryOn) []string {
	if v == "" {
		return extra
	}
	for c := range strings.SplitSeq(v, ",") {
		if c = strings.TrimSpace(c); names[c] != 0 {
			extra = append(extra, c)
		}
	}
	return extra
}

// errNoHeader: the header is absent (strconv's error for "" would be allocated per request).
var errNoHeader = errors.New("no such header")

// parseHeaderUint parses a header as a uint32 in decimal, as strconv.ParseUint(v, 10, 32).
func parseHeaderUint(h http.Header, name string) (uint64, error) {
	v := headerValue(h, name)
	if v == "" {
		return 0, errNoHeader
	}
	return strconv.ParseUint(v, 10, 32)
}

// retriableRequest reports whether one of the retriable_request_headers matchers matches the request
// as it goes upstream (Envoy matches them after the route's header mutations and rewrites): the
// pseudo-headers :method, :path, :authority and :scheme are its method, target, Host and "http", the
// other names its headers.
func (f *forward) retriableRequest(ms []config.HeaderMatcher) bool {
	for _, m := range ms {
		h := f.hdr
		var v string
		switch m.Name {
		case ":method":
			v = f.r.Method
		case ":path":
			v = f.uri
		case ":authority":
			v = f.host
		case ":scheme":
			v = "http"
		}
		if v != "" {
			h = http.Header{m.Name: {v}}
		}
		if HeaderMatches(m, h) {
			return true
		}
	}
	return false
}
