package proxy

import (
	"strconv"
	"time"

	"github.com/meshproof/meshproof/proxy/policy"
)

// Event is one resilience decision of the proxy, with its reason.
type Event struct {
	Time    time.Time
	Cluster string
	Host    string // host:port
	Kind    string // ejected, unejected, detected_not_enforced, overflow, healthy, unhealthy, retry
	Reason  string // e.g. consecutive_5xx, success_rate, ejection_time_elapsed, unhealthy_threshold;
	// for a retry, what the retried attempt ended with (503, reset, connect_failure, per_try_timeout,
	// "200 grpc-status 14" for a trailers-only gRPC response)
}

// eventRetry is the kind of the event of a scheduled retry (the policies' kinds are policy.Event*).
const eventRetry = "retry"

// OutcomeReason names what an upstream request ended with, as retry events and spans give it: its
// status code for a response (and the grpc-status of its headers when it has one other than OK), else
// the outcome's kind (reset, connect_failure, per_try_timeout, …).
func OutcomeReason(o policy.Outcome) string {
	if o.Kind == policy.Response {
		if o.GrpcStatus != 0 {
			return strconv.Itoa(o.Status) + " grpc-status " + strconv.Itoa(o.GrpcStatus)
		}
		return strconv.Itoa(o.Status)
	}
	return o.Kind.String()
}
