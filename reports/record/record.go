// Package record holds the plain data of a run: the record (samples, fault windows, proxy and upstream
// events), the load generator's histograms and the one percentile definition. It imports nothing of ours
// and no renderer, so a load generator or runner links it without the report writers.
//
// Package reports computes the summary and resilience outcomes from a record, evaluates the checks and
// writes the report files.
package record

import (
	"strings"
	"time"
)

// Error kinds of a Sample: why a request got no complete HTTP response.
const (
	ErrReset    = "reset"    // the connection was reset (ECONNRESET, EPIPE, ECONNABORTED)
	ErrTimeout  = "timeout"  // the per-request client timeout expired
	ErrRefused  = "refused"  // the connection was refused (ECONNREFUSED)
	ErrEOF      = "eof"      // the connection closed before a complete response (io.EOF, io.ErrUnexpectedEOF)
	ErrCanceled = "canceled" // the run was stopped (context cancelled) before the request finished
	ErrOther    = "other"    // anything else
)

// Sample is one client request as the load generator saw it.
type Sample struct {
	Seq      uint64
	Intended time.Duration // intended send time, as offset from run start
	Sent     time.Duration // actual send time, offset from run start
	Latency  time.Duration // from Intended to response end (coordinated-omission corrected)
	Status   int           // 0 when no HTTP response
	Error    string        // "" or an error kind: ErrReset, ErrTimeout, ErrRefused, ErrEOF, ErrCanceled, ErrOther
	// Attempts is how many upstream attempts the proxy made for this request (1 = no retry); 0 when not
	// known (the proxy did not say, or never saw the request), unless ZeroAttempts.
	Attempts int
	// ZeroAttempts says the proxy saw the request and made no upstream attempt (a circuit breaker turned
	// it away, no healthy host): Attempts 0 is then known.
	ZeroAttempts bool
	// GRPC says the request was a gRPC call. GRPCStatus is then the status code it ended with, as a gRPC
	// client reports it: the grpc-status of the trailers (or of a trailers-only answer); for an HTTP
	// answer without one, the code gRPC maps its HTTP status to (503 → 14 UNAVAILABLE); for a
	// transport error, 4 DEADLINE_EXCEEDED (timeout), 1 CANCELLED (canceled) or 14 UNAVAILABLE (any
	// other). 0 (OK) is then a success. Unused when GRPC is false. (int32, next to the bools: the
	// sample stays 72 bytes.)
	GRPC       bool
	GRPCStatus int32
}

// AttemptsKnown reports whether the request carries an attempt count: Attempts > 0, or ZeroAttempts.
func (s Sample) AttemptsKnown() bool { return s.Attempts > 0 || s.ZeroAttempts }

// Uncorrected is the latency from the actual send time to the response end (the view that hides the
// generator's own lateness).
func (s Sample) Uncorrected() time.Duration { return s.Latency - (s.Sent - s.Intended) }

// OK reports whether the request succeeded: a 2xx or 3xx response received in full; for a gRPC call,
// status 0 (OK) as well (an HTTP 200 that ends with another grpc-status is a failure).
func (s Sample) OK() bool {
	return s.Error == "" && s.Status >= 200 && s.Status < 400 && (!s.GRPC || s.GRPCStatus == 0)
}

// FaultEvent is one fault an upstream instance applied to one request.
type FaultEvent struct {
	At        time.Duration // offset from run start
	Service   string
	Instance  int
	Seq       uint64 // the instance's request sequence number
	RequestID string // the request's x-request-id
	Fault     string // the fault rule's name, e.g. "faults[0]"
	Kind      string // e.g. "abort", "latency", "reset"
	Detail    string
}

// UpstreamRecord is what one upstream instance received and did. Requests counts every request it
// received, whatever became of it: each ends as one of Statuses, Resets, Truncated, Hangs, StreamResets,
// GoAways or Canceled.
type UpstreamRecord struct {
	Service  string
	Instance int
	Address  string
	Requests uint64
	Statuses map[int]uint64
	Resets   uint64
	Applied  map[string]uint64 // applied faults by "fault/kind"
	// Canceled: requests abandoned before the answer was complete — the proxy gave up (a per-try or
	// route timeout) or its client left — while the instance waited out a delay or sent the body.
	Canceled     uint64
	Hangs        uint64 // requests held until the other side went away (hang faults)
	Truncated    uint64 // bodies cut by a clean close (close_after)
	StreamResets uint64 // HTTP/2 RST_STREAM answers
	GoAways      uint64 // HTTP/2 GOAWAY answers
	// Received counts the requests that arrived at the instance in each BucketWidth of the run (bucket i
	// is [i·BucketWidth, (i+1)·BucketWidth) from the run start), and OK those of them answered with a
	// 2xx or 3xx status; used to scope a service's outcomes to a phase. Empty when not recorded.
	Received []uint32
	OK       []uint32
	// Capacity is what the instance's finite capacity did; nil when it has none (unbounded).
	Capacity *CapacityRecord
	// TLSHandshakes and TLSHandshakeErrors count the instance's completed and failed TLS handshakes
	// as a server (mesh.mtls); 0 on a plain instance.
	TLSHandshakes      uint64 `json:",omitempty"`
	TLSHandshakeErrors uint64 `json:",omitempty"`
}

// BucketWidth is the width of the per-instance Received and OK buckets.
const BucketWidth = 100 * time.Millisecond

// CapacityRecord is what one instance's workers and queue did over the run.
type CapacityRecord struct {
	Workers int
	Queue   int
	// Busy is the worker time spent on requests (summed over workers): utilisation is
	// Busy / (Workers × run length).
	Busy time.Duration
	// Queued counts requests that waited for a worker; QueueWait is their total wait, MaxQueueWait the
	// longest.
	Queued       uint64
	QueueWait    time.Duration
	MaxQueueWait time.Duration
	// Rejected counts requests turned away because the queue was full (answered 503, or the connection
	// refused when the instance refuses); TimedOut those that left the queue at queue_timeout (503).
	Rejected uint64
	TimedOut uint64
}

// Call is one call a service instance made to another service through its outbound sidecar, as the
// calling service saw it (after its sidecar's retries).
type Call struct {
	At             time.Duration // when the caller sent it, as offset from the run start
	Latency        time.Duration // until the caller had the whole response (or gave up)
	Caller         string        // the calling service
	CallerInstance int
	Callee         string
	Status         int    // 0 when no HTTP response
	Error          string // "" or an error kind (ErrReset, ErrTimeout, …), or ErrDeadline
	Optional       bool   // an optional call: its failure does not fail the caller
	// Attempts is how many upstream attempts the caller's sidecar made for this call (1 = no retry);
	// 0 when not known, unless ZeroAttempts (the sidecar made none: an overflow, no healthy host).
	Attempts     int
	ZeroAttempts bool
}

// ErrDeadline is a Call's error when the caller did not send it: the deadline it propagates had
// already passed.
const ErrDeadline = "deadline"

// OK reports whether the call succeeded: a 2xx or 3xx response received in full.
func (c Call) OK() bool { return c.Error == "" && c.Status >= 200 && c.Status < 400 }

// AttemptsKnown reports whether the call carries its sidecar's attempt count.
func (c Call) AttemptsKnown() bool { return c.Attempts > 0 || c.ZeroAttempts }

// Edge is one caller → callee pair of the scenario's call graph.
type Edge struct {
	Caller, Callee string
	// SidecarStats sums, over the caller's instances' sidecars, the Envoy counters of the callee's
	// cluster, named without their "cluster.<callee>." prefix (e.g. "upstream_rq_retry",
	// "upstream_rq_pending_overflow", "outlier_detection.ejections_enforced_total").
	SidecarStats map[string]uint64
}

// Service is one service of the scenario as the report draws it.
type Service struct {
	Name      string
	Instances int
	// Entry: the ingress proxy routes the load to it.
	Entry bool
}

// FaultWindow is when a scenario's fault rule was active, as offsets from the run start (the moment the
// load started). End 0 means open-ended: the fault lasted until the run ended.
type FaultWindow struct {
	Name      string // the fault rule's name, e.g. "faults[0]" (its place in the scenario's faults list)
	Service   string
	Instances []int // the instances it applied to; empty: all of the service's instances
	Start     time.Duration
	End       time.Duration // 0: open-ended, until the run ends
	Kind      string        // what it injects, e.g. "abort", "latency", "reset", or several joined by "+"
	// Down holds, for a flapping rule (flap: {down, up, offset}), each period in which it was active,
	// in time order, within [Start, End) (an open-ended window's up to the planned load end); empty for
	// a rule that does not flap, which is active its whole window.
	Down []Period
}

// Outcomes of a configuration change (Change.Outcome, Change.Expected).
const (
	ChangeApplied        = "applied"        // the proxy acknowledged (ACKed) the change's version
	ChangeRejected       = "rejected"       // the proxy refused (NACKed) it and kept its last good configuration
	ChangeUnacknowledged = "unacknowledged" // the proxy had answered neither way when the run ended
)

// Change is one of the scenario's configuration changes (changes[i]) as the run made it: the scenario's
// control plane pushed it to a proxy over xDS at Start, and the proxy answered (ACK or NACK) at Answered.
// Its window, which checks scoped "during changes[i]" judge, is [Start, End).
type Change struct {
	Name  string // the change's name, e.g. "changes[0]" (its place in the scenario's changes list)
	Proxy string // the proxy it was pushed to
	// What says what it changes, e.g. "routes", "cluster payments", "endpoints payments: 0,1,3".
	What  string
	Start time.Duration // when the control plane pushed it, as an offset from the run start
	End   time.Duration // its window's end (its for, or the next change's start); 0: until the run ends
	// Outcome is ChangeApplied, ChangeRejected or ChangeUnacknowledged; Expected what the scenario
	// expects of it (ChangeApplied unless it says expect: rejected).
	Outcome  string
	Expected string
	// Answered is when the proxy ACKed or NACKed the change, as an offset from the run start (unset
	// when Unacknowledged); Detail is the NACK's error_detail.
	Answered time.Duration
	Detail   string
}

// Period is a half-open stretch [Start, End) of a run, as offsets from the run start.
type Period struct{ Start, End time.Duration }

// LoadPhase is a named stretch of the load, as offsets from the run start.
type LoadPhase struct {
	Name       string
	Start, End time.Duration
}

// Kinds of ProxyEvent the reports read.
const (
	ProxyEjected   = "ejected"   // outlier detection ejected Host
	ProxyUnejected = "unejected" // Host came back into the load-balancing set
	ProxyRetry     = "retry"     // the proxy scheduled a retry (optional: when present, retries per second come from these)
	// ProxyDetectedNotEnforced: a detector fired for Host but its enforcing_* draw said no
	// (ejections_detected_* counted, ejections_enforced_* not); Reason is the detector.
	ProxyDetectedNotEnforced = "detected_not_enforced"
	// ProxyOverflow: a detector fired for Host but max_ejection_percent forbade another ejection
	// (ejections_overflow); Reason is the detector.
	ProxyOverflow = "overflow"
)

// ProxyEvent is one decision the proxy made, with its reason, as offset from the run start. Host names an
// upstream instance either as "service/instance" or by its address (the reports resolve addresses
// through Record.Upstreams).
type ProxyEvent struct {
	At      time.Duration
	Kind    string // ProxyEjected, ProxyUnejected, ProxyRetry, or another kind (kept, not interpreted)
	Cluster string
	Host    string
	Reason  string // e.g. "consecutive_5xx"
	// Proxy is the proxy that decided: "" or the ingress proxy's name, or "service/instance" for the
	// outbound sidecar of that instance (its cluster is then the callee service).
	Proxy string
}

// Sidecar reports whether the event was decided by an instance's outbound sidecar.
func (e ProxyEvent) Sidecar() bool { return strings.Contains(e.Proxy, "/") }

// Record is the raw outcome of a run.
type Record struct {
	Scenario   string
	File       string
	Seed       uint64
	Started    time.Time
	TargetRate float64       // requests/s
	Duration   time.Duration // planned load duration
	Samples    []Sample
	ProxyStats map[string]uint64 // Envoy-named counters/gauges, e.g. "cluster.checkout.upstream_rq_retry"
	Upstreams  []UpstreamRecord
	Events     []FaultEvent
	// Windows are the scenario's fault rules with when they were active, in scenario order (Windows[i]
	// is "faults[i]"); Phases the named load phases (may be empty); ProxyEvents the proxy's decisions in
	// time order (may be empty when the proxy does not emit them).
	Windows     []FaultWindow
	Phases      []LoadPhase
	ProxyEvents []ProxyEvent
	// Changes are the scenario's configuration changes pushed by its control plane, in scenario order
	// (Changes[i] is "changes[i]"); empty when the scenario has none.
	Changes []Change
	// Services and Edges are the call graph (services in name order, edges in call order per caller,
	// callers in name order); Calls every call a service made to another, in send order. A one-hop
	// scenario has one service, no edge and no call.
	Services []Service
	Edges    []Edge
	Calls    []Call
	// MTLS is the mesh's mutual TLS between the proxies and the instances (mesh.mtls); nil when the
	// mesh is plain.
	MTLS *MTLS `json:",omitempty"`
}

// MTLS is what a run's mutual TLS was: the certificates issued and how often they were rotated. The
// handshakes are in the proxies' ssl.* stats and the instances' records.
type MTLS struct {
	Workloads int // certificates issued per round: one per service and per ingress proxy
	Rotations int // rounds re-issued during the run (mesh.rotate_every)
	// ClientCertificates is how many distinct client certificates the instances accepted: above the
	// number of calling identities when the proxies presented re-issued ones after a rotation.
	ClientCertificates int
}
