package docker

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"sync"
	"time"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/stats"
	"github.com/meshproof/meshproof/reports/record"
)

// The control port of an upstream container (`meshproof upstream --control ADDR`). The runner talks to it
// from outside the container; the data port (--listen) only ever sees the proxy's traffic.
//
//	GET  /ready                       200 "READY" once the upstream listens
//	POST /start?at=<RFC3339Nano|now>  sets the origin of the fault windows (faults.Upstream.SetRunStart)
//	GET  /record                      the instance's counters and fault events so far, as UpstreamReport JSON;
//	                                  for a calling instance also its calls and its sidecar's events and stats
const (
	PathReady  = "/ready"
	PathStart  = "/start"
	PathRecord = "/record"
)

// DefaultMaxEvents bounds the fault events a Control keeps, and as many calls and sidecar events;
// later ones are only counted.
const DefaultMaxEvents = 1_000_000

// UpstreamReport is what GET /record answers: what one upstream instance received and did.
type UpstreamReport struct {
	Service       string        `json:"service"`
	Instance      int           `json:"instance"`
	Listen        string        `json:"listen"`    // the data address inside the container
	RunStart      time.Time     `json:"run_start"` // origin of the fault windows
	Stats         UpstreamStats `json:"stats"`
	Events        []Event       `json:"events"`         // in the order they happened
	DroppedEvents uint64        `json:"dropped_events"` // events beyond the Control's bound

	// What a calling instance did through its outbound sidecar (empty for a leaf): its calls in the
	// order they ended, its sidecar's decisions (retries left out, see RecordProxyEvent) and its
	// sidecar's stats, counters apart from gauges (a killed instance's counters add to those of its
	// next life, its gauges do not).
	Calls                []Call            `json:"calls,omitempty"`
	DroppedCalls         uint64            `json:"dropped_calls,omitempty"`
	SidecarEvents        []ProxyEvent      `json:"sidecar_events,omitempty"`
	DroppedSidecarEvents uint64            `json:"dropped_sidecar_events,omitempty"`
	SidecarCounters      map[string]uint64 `json:"sidecar_counters,omitempty"`
	SidecarGauges        map[string]uint64 `json:"sidecar_gauges,omitempty"`
}

// UpstreamStats is faults.UpstreamStats on the wire.
type UpstreamStats struct {
	Requests     uint64            `json:"requests"`
	Statuses     map[int]uint64    `json:"statuses"`
	Resets       uint64            `json:"resets"`
	Applied      map[string]uint64 `json:"applied"` // "fault/kind"
	Canceled     uint64            `json:"canceled"`
	Connections  uint64            `json:"connections"`
	Truncated    uint64            `json:"truncated,omitempty"`
	Hangs        uint64            `json:"hangs,omitempty"`
	StreamResets uint64            `json:"stream_resets,omitempty"`
	GoAways      uint64            `json:"go_aways,omitempty"`
	Refusals     uint64            `json:"refusals,omitempty"`
	// Received and OK are the arrivals and 2xx/3xx answers per faults.BucketWidth from the run start.
	Received     []uint32       `json:"received,omitempty"`
	OK           []uint32       `json:"ok,omitempty"`
	Capacity     *CapacityStats `json:"capacity,omitempty"` // nil: unbounded
	Calls        uint64         `json:"calls,omitempty"`
	CallFailures uint64         `json:"call_failures,omitempty"`
}

// CapacityStats is faults.CapacityStats on the wire (durations in nanoseconds).
type CapacityStats struct {
	Workers      int           `json:"workers"`
	Queue        int           `json:"queue"`
	Busy         time.Duration `json:"busy_ns"`
	Queued       uint64        `json:"queued"`
	QueueWait    time.Duration `json:"queue_wait_ns"`
	MaxQueueWait time.Duration `json:"max_queue_wait_ns"`
	Rejected     uint64        `json:"rejected"`
	TimedOut     uint64        `json:"timed_out"`
}

// Call is faults.CallResult on the wire, with the sidecar's attempt count for it.
type Call struct {
	Start     time.Time     `json:"start"`
	Latency   time.Duration `json:"latency_ns"`
	Callee    string        `json:"callee"`
	Path      string        `json:"path"`
	Status    int           `json:"status"`
	Error     string        `json:"error,omitempty"`
	Optional  bool          `json:"optional,omitempty"`
	RequestID string        `json:"request_id"`
	// Attempts is how many upstream attempts the instance's sidecar made for the call, as the sidecar
	// reported it (proxy.Options.OnRequest, joined by x-request-id); AttemptsKnown is false when it did
	// not report the call (not sent, or not finished when the report was made).
	Attempts      int  `json:"attempts"`
	AttemptsKnown bool `json:"attempts_known"`
}

// ProxyEvent is proxy.Event on the wire: a decision of the instance's sidecar.
type ProxyEvent struct {
	Time    time.Time `json:"time"`
	Kind    string    `json:"kind"`
	Cluster string    `json:"cluster"`
	Host    string    `json:"host"` // host:port
	Reason  string    `json:"reason,omitempty"`
}

func wireStats(st faults.UpstreamStats) UpstreamStats {
	w := UpstreamStats{Requests: st.Requests, Statuses: st.Statuses, Resets: st.Resets, Applied: st.Applied,
		Canceled: st.Canceled, Connections: st.Connections, Truncated: st.Truncated, Hangs: st.Hangs,
		StreamResets: st.StreamResets, GoAways: st.GoAways, Refusals: st.Refusals, Received: st.Received, OK: st.OK,
		Calls: st.Calls, CallFailures: st.CallFailures}
	if c := st.Capacity; c != nil {
		w.Capacity = &CapacityStats{Workers: c.Workers, Queue: c.Queue, Busy: c.Busy, Queued: c.Queued,
			QueueWait: c.QueueWait, MaxQueueWait: c.MaxQueueWait, Rejected: c.Rejected, TimedOut: c.TimedOut}
	}
	return w
}

// MergeStats adds up what one instance reported over its lives (before and after kills and restarts,
// each counting from zero): counters add, Received and OK add bucket by bucket (every life counts its
// buckets from the same run start), the capacity's longest queue wait is the longest of all.
func MergeStats(parts ...UpstreamStats) faults.UpstreamStats {
	out := faults.UpstreamStats{Statuses: map[int]uint64{}, Applied: map[string]uint64{}}
	addBuckets := func(dst *[]uint32, src []uint32) {
		for len(*dst) < len(src) {
			*dst = append(*dst, 0)
		}
		for i, v := range src {
			(*dst)[i] += v
		}
	}
	for _, p := range parts {
		out.Requests += p.Requests
		out.Resets += p.Resets
		out.Canceled += p.Canceled
		out.Connections += p.Connections
		out.Truncated += p.Truncated
		out.Hangs += p.Hangs
		out.StreamResets += p.StreamResets
		out.GoAways += p.GoAways
		out.Refusals += p.Refusals
		out.Calls += p.Calls
		out.CallFailures += p.CallFailures
		for k, v := range p.Statuses {
			out.Statuses[k] += v
		}
		for k, v := range p.Applied {
			out.Applied[k] += v
		}
		addBuckets(&out.Received, p.Received)
		addBuckets(&out.OK, p.OK)
		if c := p.Capacity; c != nil {
			if out.Capacity == nil {
				out.Capacity = &faults.CapacityStats{Workers: c.Workers, Queue: c.Queue}
			}
			oc := out.Capacity
			oc.Busy += c.Busy
			oc.Queued += c.Queued
			oc.QueueWait += c.QueueWait
			oc.MaxQueueWait = max(oc.MaxQueueWait, c.MaxQueueWait)
			oc.Rejected += c.Rejected
			oc.TimedOut += c.TimedOut
		}
	}
	return out
}

// Event is faults.Event on the wire.
type Event struct {
	Time      time.Time `json:"time"`
	Seq       uint64    `json:"seq"`
	RequestID string    `json:"request_id,omitempty"`
	Fault     string    `json:"fault"`
	Kind      string    `json:"kind"`
	Detail    string    `json:"detail,omitempty"`
}

// Control serves the control port of one upstream instance. Pass Control.Record as the upstream's
// faults.UpstreamConfig.OnEvent, then Attach the started upstream. For a calling instance, pass
// RecordCall as its App.OnCall, and RecordProxyEvent and RecordAttempts as its sidecar's
// proxy.Options.OnEvent and OnRequest.
type Control struct {
	service  string
	instance int
	max      int

	mu       sync.Mutex
	up       Instance
	listen   string
	runStart time.Time
	events   []Event
	dropped  uint64

	calls          []Call
	droppedCalls   uint64
	attempts       map[string]int // call x-request-id → the sidecar's attempts
	sidecarEvents  []ProxyEvent
	droppedSidecar uint64
}

// NewControl returns the control of instance `instance` of `service`, keeping at most maxEvents fault
// events (0: DefaultMaxEvents).
func NewControl(service string, instance, maxEvents int) *Control {
	if maxEvents <= 0 {
		maxEvents = DefaultMaxEvents
	}
	return &Control{service: service, instance: instance, max: maxEvents}
}

// Record keeps one fault event; it is the upstream's OnEvent sink (cheap, safe for concurrent use).
func (c *Control) Record(e faults.Event) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.events) >= c.max {
		c.dropped++
		return
	}
	c.events = append(c.events, Event{Time: e.Time, Seq: e.Seq, RequestID: e.RequestID, Fault: e.Fault, Kind: e.Kind, Detail: e.Detail})
}

// RecordCall keeps one call the instance made; it is the app's OnCall sink.
func (c *Control) RecordCall(r faults.CallResult) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.calls) >= c.max {
		c.droppedCalls++
		return
	}
	c.calls = append(c.calls, Call{Start: r.Start, Latency: r.Latency, Callee: r.Callee, Path: r.Path, Status: r.Status,
		Error: r.Error, Optional: r.Optional, RequestID: r.RequestID})
}

// RecordAttempts keeps the sidecar's attempt count for the call sent with x-request-id id; it is the
// sidecar's OnRequest sink. Report joins it to the call.
func (c *Control) RecordAttempts(id string, attempts int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.attempts == nil {
		c.attempts = map[string]int{}
	}
	if len(c.attempts) < c.max {
		c.attempts[id] = attempts
	}
}

// RecordProxyEvent keeps one decision of the instance's sidecar (an ejection, an overflow…); it is
// the sidecar's OnEvent sink. Retries are left out: the docker runner sees no retry of the ingress
// proxy (it reads that one's ejections from outside), and a record holding the sidecars' retries
// alone would read as every retry of the run.
func (c *Control) RecordProxyEvent(e proxy.Event) {
	if e.Kind == record.ProxyRetry {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.sidecarEvents) >= c.max {
		c.droppedSidecar++
		return
	}
	c.sidecarEvents = append(c.sidecarEvents, ProxyEvent{Time: e.Time, Kind: e.Kind, Cluster: e.Cluster, Host: e.Host, Reason: e.Reason})
}

// Instance is what a Control serves: an upstream instance (a plan.Host, with its TCP fault proxy and
// its sidecar, or a bare faults.Upstream).
type Instance interface {
	Stats() faults.UpstreamStats
	SetRunStart(time.Time)
}

// withSidecar is an Instance with an outbound sidecar (a plan.Host; its Sidecar is nil for a leaf).
type withSidecar interface {
	Sidecar() *proxy.Server
}

// Attach makes the control serve up, which listens on listen and whose fault windows start at runStart.
// /ready answers 503 until then.
func (c *Control) Attach(up Instance, listen string, runStart time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.up, c.listen, c.runStart = up, listen, runStart
}

// Report returns what the instance did so far.
func (c *Control) Report() UpstreamReport {
	c.mu.Lock()
	up := c.up
	r := UpstreamReport{
		Service: c.service, Instance: c.instance, Listen: c.listen, RunStart: c.runStart,
		Events: append([]Event(nil), c.events...), DroppedEvents: c.dropped,
		Calls: append([]Call(nil), c.calls...), DroppedCalls: c.droppedCalls,
		SidecarEvents: append([]ProxyEvent(nil), c.sidecarEvents...), DroppedSidecarEvents: c.droppedSidecar,
	}
	for i, call := range r.Calls {
		r.Calls[i].Attempts, r.Calls[i].AttemptsKnown = c.attempts[call.RequestID]
	}
	c.mu.Unlock()
	if up != nil {
		r.Stats = wireStats(up.Stats())
		if h, ok := up.(withSidecar); ok && h.Sidecar() != nil {
			r.SidecarCounters, r.SidecarGauges = map[string]uint64{}, map[string]uint64{}
			for _, st := range h.Sidecar().Stats().Snapshot() {
				if st.Kind == stats.KindCounter {
					r.SidecarCounters[st.Name] = uint64(st.Value)
				} else {
					r.SidecarGauges[st.Name] = uint64(max(st.Value, 0)) // as proxy.Stats().Values()
				}
			}
		}
	}
	return r
}

// Handler serves /ready, /start and /record. now is the clock of "/start?at=now".
func (c *Control) Handler(now func() time.Time) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET "+PathReady, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "text/plain")
		if c.upstream() == nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			io.WriteString(w, "STARTING\n")
			return
		}
		io.WriteString(w, "READY\n")
	})
	mux.HandleFunc("POST "+PathStart, func(w http.ResponseWriter, r *http.Request) {
		at, err := parseAt(r.URL.Query().Get("at"), now)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		c.mu.Lock()
		up := c.up
		if up != nil {
			c.runStart = at
		}
		c.mu.Unlock()
		if up == nil {
			http.Error(w, "upstream not listening yet", http.StatusServiceUnavailable)
			return
		}
		up.SetRunStart(at)
		w.Header().Set("content-type", "text/plain")
		fmt.Fprintf(w, "run start %s\n", at.Format(time.RFC3339Nano))
	})
	mux.HandleFunc("GET "+PathRecord, func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(c.Report())
	})
	return mux
}

func (c *Control) upstream() Instance {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.up
}

// parseAt reads the at parameter of /start: an RFC 3339 time (nanoseconds allowed), or "now" / "" for now.
func parseAt(s string, now func() time.Time) (time.Time, error) {
	if s == "" || s == "now" {
		return now(), nil
	}
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("at=%q: want an RFC 3339 time such as 2006-01-02T15:04:05.999999999Z, or now", s)
	}
	return t, nil
}

// controlClient talks to upstream control ports from the runner.
type controlClient struct{ http *http.Client }

func newControlClient() *controlClient {
	return &controlClient{http: &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}, // never an environment proxy: loopback
	}}
}

// start sets the run start of the upstream whose control port is at base ("http://host:port").
func (cc *controlClient) start(ctx context.Context, base string, at time.Time) error {
	u := base + PathStart + "?at=" + url.QueryEscape(at.UTC().Format(time.RFC3339Nano))
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, nil)
	if err != nil {
		return err
	}
	_, err = cc.do(req)
	return err
}

// record fetches the upstream's report.
func (cc *controlClient) record(ctx context.Context, base string) (UpstreamReport, error) {
	var r UpstreamReport
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+PathRecord, nil)
	if err != nil {
		return r, err
	}
	body, err := cc.do(req)
	if err != nil {
		return r, err
	}
	if err := json.Unmarshal(body, &r); err != nil {
		return r, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	return r, nil
}

// text GETs a plain-text page (e.g. the proxy's /stats).
func (cc *controlClient) text(ctx context.Context, u string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return "", err
	}
	body, err := cc.do(req)
	return string(body), err
}

func (cc *controlClient) do(req *http.Request) ([]byte, error) {
	resp, err := cc.http.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<30))
	if err != nil {
		return nil, fmt.Errorf("%s %s: %w", req.Method, req.URL, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("%s %s: %s: %s", req.Method, req.URL, resp.Status, body)
	}
	return body, nil
}
