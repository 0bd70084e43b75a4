package policy

import (
	"fmt"
	"time"
)

// Event is one decision a policy took, with its reason. Outlier detection and health checking return
// events from the calls that decide; the caller forwards them to stats, spans and the run's timeline.
type Event struct {
	Time time.Time
	Host int
	// Kind is what happened, one of the Event* constants.
	Kind string
	// Reason is why, one of the Reason* constants.
	Reason string
	// Until is, for EventEjected, the earliest time an interval sweep un-ejects the host.
	Until time.Time
	// SuccessRate is, for success-rate and failure-percentage detections, the host's success rate (%)
	// over the last interval; Threshold is the ejection threshold it was compared with (for
	// success_rate the computed mean − factor·σ, for failure_percentage the configured percentage).
	SuccessRate, Threshold float64
}

func (e Event) String() string {
	return fmt.Sprintf("%s host=%d %s reason=%s", e.Time.Format(time.RFC3339Nano), e.Host, e.Kind, e.Reason)
}

// Event kinds.
const (
	// EventEjected: outlier detection ejected the host (ejections_enforced_*).
	EventEjected = "ejected"
	// EventUnejected: the host came back from ejection (time elapsed or a passing active health check).
	EventUnejected = "unejected"
	// EventDetectedNotEnforced: a detector fired but the enforcing_* draw said no (ejections_detected_* only).
	EventDetectedNotEnforced = "detected_not_enforced"
	// EventOverflow: a detector fired but max_ejection_percent forbade another ejection (ejections_overflow).
	EventOverflow = "overflow"
	// EventHealthy: active health checking marked the host healthy.
	EventHealthy = "healthy"
	// EventUnhealthy: active health checking marked the host unhealthy.
	EventUnhealthy = "unhealthy"
)

// Event reasons. The outlier ones are Envoy's ejection type names as they appear in its stats.
const (
	ReasonConsecutive5xx                = "consecutive_5xx"
	ReasonConsecutiveGatewayFailure     = "consecutive_gateway_failure"
	ReasonConsecutiveLocalOriginFailure = "consecutive_local_origin_failure"
	ReasonSuccessRate                   = "success_rate"
	ReasonLocalOriginSuccessRate        = "local_origin_success_rate"
	ReasonFailurePercentage             = "failure_percentage"
	ReasonLocalOriginFailurePercentage  = "local_origin_failure_percentage"
	// ReasonEjectionTimeElapsed: an interval sweep found the ejection time (min(base·k, max) + jitter) up.
	ReasonEjectionTimeElapsed = "ejection_time_elapsed"
	// ReasonActiveHealthCheck: a passing active health check un-ejected the host early.
	ReasonActiveHealthCheck = "active_health_check"

	// ReasonFirstCheck: a new host's first passing health check made it healthy at once.
	ReasonFirstCheck = "first_check"
	// ReasonHealthyThreshold: healthy_threshold consecutive passing checks.
	ReasonHealthyThreshold = "healthy_threshold"
	// ReasonUnexpectedStatus: a health check answered with a status outside expected_statuses.
	ReasonUnexpectedStatus = "unexpected_status"
	// ReasonImmediateFail: the upstream sent x-envoy-immediate-health-check-fail.
	ReasonImmediateFail = "immediate_health_check_fail"
	// ReasonUnhealthyThreshold: unhealthy_threshold consecutive timeouts, network failures or retriable
	// statuses.
	ReasonUnhealthyThreshold = "unhealthy_threshold"
)
