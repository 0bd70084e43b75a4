// Package policy holds the proxy's resilience decisions as pure state machines: which outcomes are
// retried, how long to back off, which host comes next. Stdlib only; time and randomness are passed in,
// so the live proxy, a simulator and the tests drive the very same code.
package policy

import (
	"fmt"
	"slices"
	"strings"
)

// OutcomeKind says how one upstream attempt ended.
type OutcomeKind int

// The ways an attempt can end.
const (
	// Response: the upstream answered with headers (Outcome.Status).
	Response OutcomeKind = iota
	// ConnectFailure: the TCP connection could not be established (refused, unreachable, connect timeout).
	ConnectFailure
	// Reset: the connection was reset or closed before a complete response header arrived.
	Reset
	// PerTryTimeout: the attempt's per_try_timeout fired before the response headers.
	PerTryTimeout
	// Overflow: a local circuit breaker refused the attempt. Never retried.
	Overflow
)

func (k OutcomeKind) String() string {
	switch k {
	case Response:
		return "response"
	case ConnectFailure:
		return "connect_failure"
	case Reset:
		return "reset"
	case PerTryTimeout:
		return "per_try_timeout"
	case Overflow:
		return "overflow"
	}
	return fmt.Sprintf("OutcomeKind(%d)", int(k))
}

// Outcome is the result of one upstream attempt, as the retry policy sees it.
type Outcome struct {
	Kind   OutcomeKind
	Status int // with Response
	// BeforeRequest: with Reset, no byte of the request reached the upstream.
	BeforeRequest bool
	// RefusedStream: with Reset, the upstream refused the HTTP/2 stream (REFUSED_STREAM).
	RefusedStream bool
	// HeadersMatched: with Response, one of the route's retriable_headers matchers matched the response.
	HeadersMatched bool
	// RateLimited: with Response, the response carries x-envoy-ratelimited (an upstream Envoy's rate
	// limit): retried under envoy-ratelimited only.
	RateLimited bool
	// GrpcStatus: with Response, the grpc-status of the response headers (a trailers-only gRPC
	// response), as Envoy's Grpc::Common::getGrpcStatus reads it; 0 (OK) when there is none, -1 when
	// it is not a status (not a number, or above 16). A grpc-status in trailers is never seen here.
	GrpcStatus int
}

// RetryOn is a set of Envoy retry_on conditions.
type RetryOn uint32

// The retry_on conditions the proxy implements (Envoy's names in RetryOnNames).
const (
	On5xx RetryOn = 1 << iota
	OnGatewayError
	OnReset
	OnResetBeforeRequest
	OnConnectFailure
	OnRetriable4xx
	OnRefusedStream
	// OnRetriableStatusCodes retries the statuses given to RetryState.WithStatusCodes.
	OnRetriableStatusCodes
	// OnRetriableHeaders retries responses whose headers matched the retriable_headers (Outcome.HeadersMatched).
	OnRetriableHeaders
	// OnEnvoyRateLimited retries responses carrying x-envoy-ratelimited (Outcome.RateLimited).
	OnEnvoyRateLimited
	// The gRPC conditions (retry_on, and the x-envoy-retry-grpc-on header): a response whose headers
	// carry that grpc-status (Outcome.GrpcStatus).
	OnGrpcCancelled
	OnGrpcDeadlineExceeded
	OnGrpcInternal
	OnGrpcResourceExhausted
	OnGrpcUnavailable
)

// onGrpc is the set of the gRPC conditions.
const onGrpc = OnGrpcCancelled | OnGrpcDeadlineExceeded | OnGrpcInternal | OnGrpcResourceExhausted | OnGrpcUnavailable

// The gRPC status codes the gRPC conditions retry (grpc/status codes; Envoy's Grpc::Status).
const (
	GrpcCancelled         = 1
	GrpcDeadlineExceeded  = 4
	GrpcResourceExhausted = 8
	GrpcInternal          = 13
	GrpcUnavailable       = 14
)

// RetryOnNames maps Envoy's retry_on values to conditions.
var RetryOnNames = map[string]RetryOn{
	"5xx":                    On5xx,
	"gateway-error":          OnGatewayError,
	"reset":                  OnReset,
	"reset-before-request":   OnResetBeforeRequest,
	"connect-failure":        OnConnectFailure,
	"retriable-4xx":          OnRetriable4xx,
	"refused-stream":         OnRefusedStream,
	"retriable-status-codes": OnRetriableStatusCodes,
	"retriable-headers":      OnRetriableHeaders,
	"envoy-ratelimited":      OnEnvoyRateLimited,
}

// RetryGrpcOnNames maps Envoy's gRPC retry_on values (those of x-envoy-retry-grpc-on) to conditions.
// A route's retry_on takes both vocabularies (Envoy's RetryPolicyImpl parses it with parseRetryOn and
// parseRetryGrpcOn, source/common/router/config_impl.cc); each request header takes its own only
// (RetryStateImpl, source/common/router/retry_state_impl.cc).
var RetryGrpcOnNames = map[string]RetryOn{
	"cancelled":          OnGrpcCancelled,
	"deadline-exceeded":  OnGrpcDeadlineExceeded,
	"internal":           OnGrpcInternal,
	"resource-exhausted": OnGrpcResourceExhausted,
	"unavailable":        OnGrpcUnavailable,
}

// ParseRetryOn turns retry_on values (already split on commas) into a condition set: Envoy's HTTP
// and gRPC conditions.
func ParseRetryOn(values []string) (RetryOn, error) {
	var on RetryOn
	for _, v := range values {
		v = strings.TrimSpace(v)
		c, ok := RetryOnNames[v]
		if !ok {
			c, ok = RetryGrpcOnNames[v]
		}
		if !ok {
			return 0, fmt.Errorf("retry_on %q is not supported", v)
		}
		on |= c
	}
	return on, nil
}

// Retriable reports whether the outcome meets one of the conditions (Envoy's retry_state_impl rules).
func (on RetryOn) Retriable(o Outcome) bool {
	switch o.Kind {
	case Overflow:
		return false // a local overflow is never retried
	case Response:
		if o.RateLimited {
			// Envoy's RetryStateImpl::wouldRetryFromHeaders (source/common/router/retry_state_impl.cc)
			// decides such a response on envoy-ratelimited alone, before any other condition.
			return on&OnEnvoyRateLimited != 0
		}
		s := o.Status
		switch {
		case on&On5xx != 0 && s >= 500 && s <= 599:
			return true
		case on&OnGatewayError != 0 && (s == 502 || s == 503 || s == 504):
			return true
		case on&OnRetriable4xx != 0 && s == 409:
			return true
		case on&OnRetriableHeaders != 0 && o.HeadersMatched:
			return true
		case on&onGrpc != 0:
			return on.grpcRetriable(o.GrpcStatus)
		}
		return false
	case ConnectFailure:
		return on&(On5xx|OnGatewayError|OnReset|OnConnectFailure) != 0 ||
			on&OnResetBeforeRequest != 0
	case PerTryTimeout:
		return on&(On5xx|OnGatewayError|OnReset) != 0
	case Reset:
		if on&(On5xx|OnGatewayError|OnReset) != 0 {
			return true
		}
		if on&OnResetBeforeRequest != 0 && o.BeforeRequest {
			return true
		}
		return on&OnRefusedStream != 0 && o.RefusedStream
	}
	return false
}

// grpcRetriable reports whether a response's grpc-status meets one of the gRPC conditions (the last
// check of Envoy's RetryStateImpl::wouldRetryFromHeaders, on Grpc::Common::getGrpcStatus of the
// response headers: whatever the request's content-type).
func (on RetryOn) grpcRetriable(status int) bool {
	switch status {
	case GrpcCancelled:
		return on&OnGrpcCancelled != 0
	case GrpcDeadlineExceeded:
		return on&OnGrpcDeadlineExceeded != 0
	case GrpcResourceExhausted:
		return on&OnGrpcResourceExhausted != 0
	case GrpcInternal:
		return on&OnGrpcInternal != 0
	case GrpcUnavailable:
		return on&OnGrpcUnavailable != 0
	}
	return false
}

// Decision is what the retry state says after a failed or finished attempt.
type Decision int

// The retry decisions.
const (
	// NoRetry: the outcome is final (it met no retry condition).
	NoRetry Decision = iota
	// Retry: back off, then try again.
	Retry
	// LimitExceeded: the outcome was retriable but no retries are left (upstream_rq_retry_limit_exceeded).
	LimitExceeded
	// RetryOverflow: the outcome was retriable but the retry circuit breaker is full
	// (upstream_rq_retry_overflow); the original outcome goes to the client.
	RetryOverflow
)

func (d Decision) String() string {
	return [...]string{"no_retry", "retry", "limit_exceeded", "retry_overflow"}[d]
}

// RetryState follows one downstream request across its attempts. It is not safe for concurrent use; one
// request owns it.
type RetryState struct {
	on        RetryOn
	remaining uint32
	armed     bool
	codes     []int // retriable_status_codes
}

// NewRetryState starts a request's retry state with num_retries retries allowed.
func NewRetryState(on RetryOn, numRetries uint32) *RetryState {
	return &RetryState{on: on, remaining: numRetries}
}

// WithStatusCodes sets the retriable_status_codes retried under retriable-status-codes.
func (s *RetryState) WithStatusCodes(codes []int) *RetryState {
	s.codes = codes
	return s
}

// retriable is the condition check of Decide: the retry_on set, plus the retriable status codes.
func (s *RetryState) retriable(o Outcome) bool {
	if s.on.Retriable(o) {
		return true
	}
	return s.on&OnRetriableStatusCodes != 0 && o.Kind == Response && !o.RateLimited && slices.Contains(s.codes, o.Status)
}

// Hedge decides a hedged retry on a per-try timeout (Envoy's shouldHedgeRetryPerTryTimeout,
// source/common/router/retry_state_impl.cc): always retriable, whatever the conditions, while retries
// are left and the retry breaker admits it.
func (s *RetryState) Hedge(admit func() bool) Decision {
	if s.remaining == 0 {
		return LimitExceeded
	}
	s.remaining--
	if admit != nil && !admit() {
		return RetryOverflow
	}
	s.armed = true
	return Retry
}

// WouldRetry reports whether an outcome meets a retry condition, taking no retry (Envoy's
// wouldRetryFromHeaders, for an attempt already hedged).
func (s *RetryState) WouldRetry(o Outcome) bool { return s.retriable(o) }

// Decide applies Envoy's admission order to an attempt's outcome. admit is asked only when a retry is
// otherwise allowed (it takes a slot of the cluster's retry breaker and reports false when full).
// retrySuccess reports that an earlier retry needed no further retry (upstream_rq_retry_success).
func (s *RetryState) Decide(o Outcome, admit func() bool) (d Decision, retrySuccess bool) {
	if !s.retriable(o) {
		return NoRetry, s.armed
	}
	if s.remaining == 0 {
		return LimitExceeded, false
	}
	s.remaining--
	if admit != nil && !admit() {
		return RetryOverflow, false
	}
	s.armed = true
	return Retry, false
}
