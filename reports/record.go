// Package reports holds a run's record (plain data), the summary computed from it, the checks that decide
// pass or fail, and the writers (terminal, JSON). It imports no runtime package: everything here is data,
// computation and formatting.
package reports

import "time"

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
}

// Uncorrected is the latency from the actual send time to the response end (the view that hides the
// generator's own lateness).
func (s Sample) Uncorrected() time.Duration { return s.Latency - (s.Sent - s.Intended) }

// OK reports whether the request succeeded: a 2xx or 3xx response received in full.
func (s Sample) OK() bool { return s.Error == "" && s.Status >= 200 && s.Status < 400 }

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
// received, whatever became of it (Statuses, Resets, or cancelled).
type UpstreamRecord struct {
	Service  string
	Instance int
	Address  string
	Requests uint64
	Statuses map[int]uint64
	Resets   uint64
	Applied  map[string]uint64 // applied faults by "fault/kind"
}

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
}
