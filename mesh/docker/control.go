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
)

// The control port of an upstream container (`meshproof upstream --control ADDR`). The runner talks to it
// from outside the container; the data port (--listen) only ever sees the proxy's traffic.
//
//	GET  /ready                       200 "READY" once the upstream listens
//	POST /start?at=<RFC3339Nano|now>  sets the origin of the fault windows (faults.Upstream.SetRunStart)
//	GET  /record                      the instance's counters and fault events so far, as UpstreamReport JSON
const (
	PathReady  = "/ready"
	PathStart  = "/start"
	PathRecord = "/record"
)

// DefaultMaxEvents bounds the fault events a Control keeps; later ones are only counted.
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
}

// UpstreamStats is faults.UpstreamStats on the wire.
type UpstreamStats struct {
	Requests    uint64            `json:"requests"`
	Statuses    map[int]uint64    `json:"statuses"`
	Resets      uint64            `json:"resets"`
	Applied     map[string]uint64 `json:"applied"` // "fault/kind"
	Canceled    uint64            `json:"canceled"`
	Connections uint64            `json:"connections"`
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
// faults.UpstreamConfig.OnEvent, then Attach the started upstream.
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

// Instance is what a Control serves: an upstream instance (a plan.Host, with its TCP fault proxy, or a
// bare faults.Upstream).
type Instance interface {
	Stats() faults.UpstreamStats
	SetRunStart(time.Time)
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
	}
	c.mu.Unlock()
	if up != nil {
		st := up.Stats()
		r.Stats = UpstreamStats{Requests: st.Requests, Statuses: st.Statuses, Resets: st.Resets, Applied: st.Applied,
			Canceled: st.Canceled, Connections: st.Connections}
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
