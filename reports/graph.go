package reports

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// The call graph's outcomes: per edge (caller → callee), what the callers' calls did, as the callers saw
// them after their sidecars' retries and as their sidecars made them; per service, what its instances
// received and what their capacity did. README.md ("Edges and services") defines each number.

// Where an edge's attempt-based numbers (EdgeOutcome.AttemptsFrom) come from.
const (
	// AttemptsFromCalls: the calls' own attempt counts (record.Call.Attempts), over the calls that carry
	// one. Used whenever one of the calls in scope carries one.
	AttemptsFromCalls = "calls"
	// AttemptsFromSidecars: the callers' sidecars' counters for the callee's cluster
	// (record.Edge.SidecarStats), over the whole run only, when no call carries an attempt count.
	AttemptsFromSidecars = "sidecar_stats"
)

// EdgeOutcome is what the calls of one caller → callee edge did, over the whole run or one phase (the
// calls sent within it, by record.Call.At).
type EdgeOutcome struct {
	Caller, Callee string
	// Calls counts the calls; Successes those with a complete 2xx or 3xx answer; Errors the rest.
	// SuccessRate is the effective success rate, after the caller's sidecar retried: 100 × Successes /
	// Calls (0 without calls).
	Calls, Successes, Errors uint64
	SuccessRate              float64
	StatusCodes              map[int]uint64
	ErrorKinds               map[string]uint64
	// Latency is the calls' latency as the caller saw it, leaving out calls cancelled when the run was
	// stopped and calls never sent (record.ErrDeadline).
	Latency record.Percentiles

	// AttemptsFrom says where the numbers below come from (AttemptsFromCalls, AttemptsFromSidecars), ""
	// when not recorded (they are then zero). AttemptsOver is the number of calls they are over;
	// UpstreamAttempts the attempts the sidecars made for them, Retries the retries among them, and
	// RetryAmplification UpstreamAttempts / AttemptsOver. ActualSuccesses is the attempts that succeeded
	// and ActualSuccessRate 100 × ActualSuccesses / UpstreamAttempts: the success rate before retries
	// (not measured when UpstreamAttempts is 0). Overflows counts the calls the sidecars turned away
	// without an attempt (record.Call.ZeroAttempts: a circuit breaker, no healthy host), or from the
	// sidecars' counters, their pending and retry overflows.
	AttemptsFrom                                             string
	AttemptsOver, UpstreamAttempts, Retries, ActualSuccesses uint64
	RetryAmplification, ActualSuccessRate                    float64
	Overflows                                                uint64

	// Ejections counts the "ejected" events of the caller's instances' sidecars for the callee's cluster
	// (or, over the whole run of a run without proxy events, their ejections_enforced_total). Known
	// when the run has proxy events, or the sidecars counted no ejection.
	Ejections      uint64
	EjectionsKnown bool
}

// ServiceOutcome is what one service's instances received, over the whole run or one phase.
type ServiceOutcome struct {
	Name      string
	Instances int
	Entry     bool // the ingress proxy routes the clients' requests to it
	// Known is false when the record does not hold what the instances received: no upstream records
	// (whole run) or no arrivals per record.BucketWidth (a phase). Requests counts the requests the
	// instances received (a phase: those that arrived in its buckets), Successes those answered with a
	// 2xx or 3xx status, Errors the rest; SuccessRate is 100 × Successes / Requests.
	Known               bool
	Requests, Successes uint64
	Errors              uint64
	SuccessRate         float64
	ClientRequests      uint64  // the clients' requests in the same scope (by intended send time)
	Amplification       float64 // Requests / ClientRequests: requests received per client request
	Capacity            *CapacityOutcome
}

// CapacityOutcome is what a service's finite capacity did over the whole run, summed over its
// instances that have one.
type CapacityOutcome struct {
	Instances     int // instances with finite capacity
	Workers       int // their workers, summed
	Queue         int // their queue slots, summed
	Busy          time.Duration
	RunLength     time.Duration
	Utilisation   float64 // 100 × Busy / (Workers × RunLength), in percent
	Queued        uint64  // requests that waited for a worker
	QueueTimeMean time.Duration
	QueueTimeMax  time.Duration
	Rejected      uint64 // turned away: the queue was full
	TimedOut      uint64 // left the queue at its timeout
}

// meshRecord tells whether a record holds a call graph beyond one hop: an edge, or more than one service.
func meshRecord(rec *record.Record) bool { return len(rec.Edges) > 0 || len(rec.Services) > 1 }

// graphEdges returns the record's edges, and any caller → callee pair its calls hold that they lack.
func graphEdges(rec *record.Record) []record.Edge {
	out := slices.Clone(rec.Edges)
	for _, c := range rec.Calls {
		if !slices.ContainsFunc(out, func(e record.Edge) bool { return e.Caller == c.Caller && e.Callee == c.Callee }) {
			out = append(out, record.Edge{Caller: c.Caller, Callee: c.Callee})
		}
	}
	return out
}

// graphServices returns the record's services, or the services of its upstream records when it names
// none.
func graphServices(rec *record.Record) []record.Service {
	if len(rec.Services) > 0 {
		return rec.Services
	}
	var out []record.Service
	for _, u := range rec.Upstreams {
		i := slices.IndexFunc(out, func(s record.Service) bool { return s.Name == u.Service })
		if i < 0 {
			out = append(out, record.Service{Name: u.Service})
			i = len(out) - 1
		}
		out[i].Instances++
	}
	slices.SortFunc(out, func(a, b record.Service) int { return cmp.Compare(a.Name, b.Name) })
	if len(out) == 1 {
		out[0].Entry = true
	}
	return out
}

// edgeNames and serviceNames list a record's edges ("cart->payments") and services, for messages.
func edgeNames(rec *record.Record) string {
	edges := graphEdges(rec)
	if len(edges) == 0 {
		return ""
	}
	names := make([]string, len(edges))
	for i, e := range edges {
		names[i] = e.Caller + "->" + e.Callee
	}
	return strings.Join(names, ", ")
}

func serviceNames(rec *record.Record) string {
	svcs := graphServices(rec)
	names := make([]string, len(svcs))
	for i, s := range svcs {
		names[i] = s.Name
	}
	return strings.Join(names, ", ")
}

// sidecarOf returns the service of the instance whose sidecar decided a proxy event ("" for the ingress).
func sidecarOf(e record.ProxyEvent) string {
	if !e.Sidecar() {
		return ""
	}
	svc, _, _ := strings.Cut(e.Proxy, "/")
	return svc
}

// EdgeOf computes the outcome of one edge over the whole run (spans nil) or over the spans of a phase.
func EdgeOf(rec *record.Record, e record.Edge, spans []Span) EdgeOutcome {
	whole := spans == nil
	o := EdgeOutcome{Caller: e.Caller, Callee: e.Callee, StatusCodes: map[int]uint64{}, ErrorKinds: map[string]uint64{}}
	var lat []time.Duration
	var known, attempts, okKnown, retries, zero uint64
	for _, c := range rec.Calls {
		if c.Caller != e.Caller || c.Callee != e.Callee || !whole && !inSpans(spans, c.At) {
			continue
		}
		o.Calls++
		if c.OK() {
			o.Successes++
		}
		if c.Status != 0 {
			o.StatusCodes[c.Status]++
		}
		if c.Error != "" {
			o.ErrorKinds[c.Error]++
		}
		if c.Error != record.ErrCanceled && c.Error != record.ErrDeadline {
			lat = append(lat, max(c.Latency, 0))
		}
		if c.AttemptsKnown() {
			known++
			attempts += uint64(c.Attempts)
			retries += uint64(max(c.Attempts-1, 0))
			if c.OK() {
				okKnown++
			}
			if c.ZeroAttempts {
				zero++
			}
		}
	}
	o.Errors = o.Calls - o.Successes
	if o.Calls > 0 {
		o.SuccessRate = 100 * float64(o.Successes) / float64(o.Calls)
	}
	slices.Sort(lat)
	o.Latency = record.SortedPercentiles(lat)

	st := e.SidecarStats
	switch {
	case known > 0:
		o.AttemptsFrom, o.AttemptsOver, o.UpstreamAttempts, o.Retries, o.Overflows = AttemptsFromCalls, known, attempts, retries, zero
		// A call that succeeded had one successful attempt, its last; a failed call had none.
		o.ActualSuccesses = okKnown
	case whole && o.Calls > 0 && hasStat(st, "upstream_rq_total"):
		o.AttemptsFrom, o.AttemptsOver, o.UpstreamAttempts = AttemptsFromSidecars, o.Calls, st["upstream_rq_total"]
		o.Retries = st["upstream_rq_retry"]
		o.Overflows = st["upstream_rq_pending_overflow"] + st["upstream_rq_retry_overflow"]
		o.ActualSuccesses = o.UpstreamAttempts - min(failedAttempts(st), o.UpstreamAttempts)
	}
	if o.AttemptsOver > 0 {
		o.RetryAmplification = float64(o.UpstreamAttempts) / float64(o.AttemptsOver)
	}
	if o.UpstreamAttempts > 0 {
		o.ActualSuccessRate = 100 * float64(o.ActualSuccesses) / float64(o.UpstreamAttempts)
	}

	for _, ev := range rec.ProxyEvents {
		if ev.Kind == record.ProxyEjected && sidecarOf(ev) == e.Caller && ev.Cluster == e.Callee && (whole || inSpans(spans, ev.At)) {
			o.Ejections++
		}
	}
	enforced := st["outlier_detection.ejections_enforced_total"]
	o.EjectionsKnown = len(rec.ProxyEvents) > 0 || enforced == 0
	if whole && len(rec.ProxyEvents) == 0 {
		o.Ejections = enforced
	}
	return o
}

// failedStats are the sidecar counters that count a failed attempt: a 5xx answer (the sidecar's own
// local 5xx answers included, so that the count is an upper bound), a per-try timeout, a reset, a
// refused or timed-out connect. A 5xx the sidecar retried counts under retry.upstream_rq_5xx, not
// upstream_rq_5xx, as in Envoy (Router::Filter::onUpstreamHeaders, source/common/router/router.cc,
// charges a retried response to the cluster's "retry." stats).
var failedStats = []string{"upstream_rq_5xx", "retry.upstream_rq_5xx", "upstream_rq_per_try_timeout", "upstream_rq_rx_reset", "upstream_cx_connect_fail"}

func failedAttempts(st map[string]uint64) uint64 {
	var n uint64
	for _, k := range failedStats {
		n += st[k]
	}
	return n
}

func hasStat(st map[string]uint64, k string) bool {
	_, ok := st[k]
	return ok
}

// arrivalsRecorded tells whether the record holds the instances' arrivals per record.BucketWidth.
func arrivalsRecorded(rec *record.Record) bool {
	return slices.ContainsFunc(rec.Upstreams, func(u record.UpstreamRecord) bool { return len(u.Received) > 0 })
}

// ServiceOf computes the outcome of one service over the whole run (spans nil: from the instances'
// request and status counts) or over the spans of a phase (from their arrival buckets, each counted in
// the phase its start falls in).
func ServiceOf(rec *record.Record, svc record.Service, spans []Span) ServiceOutcome {
	whole := spans == nil
	o := ServiceOutcome{Name: svc.Name, Instances: svc.Instances, Entry: svc.Entry}
	var capa CapacityOutcome
	records := 0 // instances with an upstream record
	for _, u := range rec.Upstreams {
		if u.Service != svc.Name {
			continue
		}
		records++
		if whole {
			o.Known = true
			o.Requests += u.Requests
			for code, n := range u.Statuses {
				if code >= 200 && code < 400 {
					o.Successes += n
				}
			}
		} else {
			for i, n := range u.Received {
				if inSpans(spans, time.Duration(i)*record.BucketWidth) {
					o.Requests += uint64(n)
					if i < len(u.OK) {
						o.Successes += uint64(u.OK[i])
					}
				}
			}
		}
		if c := u.Capacity; c != nil {
			capa.Instances++
			capa.Workers += c.Workers
			capa.Queue += c.Queue
			capa.Busy += c.Busy
			capa.Queued += c.Queued
			capa.QueueTimeMean += c.QueueWait // the sum, divided below
			capa.QueueTimeMax = max(capa.QueueTimeMax, c.MaxQueueWait)
			capa.Rejected += c.Rejected
			capa.TimedOut += c.TimedOut
		}
	}
	if !whole {
		o.Known = arrivalsRecorded(rec)
	}
	if o.Instances == 0 {
		o.Instances = records
	}
	o.Successes = min(o.Successes, o.Requests)
	o.Errors = o.Requests - o.Successes
	if o.Requests > 0 {
		o.SuccessRate = 100 * float64(o.Successes) / float64(o.Requests)
	}
	for _, s := range rec.Samples {
		if whole || inSpans(spans, s.Intended) {
			o.ClientRequests++
		}
	}
	if o.ClientRequests > 0 {
		o.Amplification = float64(o.Requests) / float64(o.ClientRequests)
	}
	if whole && capa.Instances > 0 {
		capa.RunLength = RunEnd(rec)
		if capa.Queued > 0 {
			capa.QueueTimeMean /= time.Duration(capa.Queued)
		} else {
			capa.QueueTimeMean = 0
		}
		if capa.Workers > 0 && capa.RunLength > 0 {
			capa.Utilisation = 100 * capa.Busy.Seconds() / (float64(capa.Workers) * capa.RunLength.Seconds())
		}
		o.Capacity = &capa
	}
	return o
}

// graphOutcomes computes every edge's and service's outcome over the whole run (spans nil) or a phase.
func graphOutcomes(rec *record.Record, spans []Span) ([]EdgeOutcome, []ServiceOutcome) {
	var edges []EdgeOutcome
	for _, e := range graphEdges(rec) {
		edges = append(edges, EdgeOf(rec, e, spans))
	}
	var svcs []ServiceOutcome
	for _, s := range graphServices(rec) {
		svcs = append(svcs, ServiceOf(rec, s, spans))
	}
	return edges, svcs
}

// edgeLabel shows an edge for people: "cart → payments".
func edgeLabel(caller, callee string) string { return caller + " → " + callee }

// capacityNote says when only some of a service's instances have a finite capacity.
func (s ServiceOutcome) capacityNote() string {
	if s.Capacity == nil || s.Capacity.Instances >= s.Instances {
		return ""
	}
	return fmt.Sprintf(" (%d of %d instances have a finite capacity)", s.Capacity.Instances, s.Instances)
}
