package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// ErrInvalidConfig is wrapped by every error NewUpstream returns for a bad config.
var ErrInvalidConfig = errors.New("invalid upstream config")

// Response headers written by an Upstream.
const (
	HeaderInstance  = "x-meshproof-instance" // "<service>/<instance>"
	HeaderSeq       = "x-meshproof-seq"      // n-th request at the instance, from 1
	HeaderRequestID = "x-request-id"         // read from requests into Event.RequestID
)

// Event is one fault application (kept in the run record).
type Event struct {
	Time      time.Time
	Service   string
	Instance  int
	Seq       uint64 // n-th request at that instance
	RequestID string // the request's x-request-id header, if any
	Fault     string
	Kind      string
	Detail    string
}

// UpstreamConfig configures one fault-injecting service instance.
type UpstreamConfig struct {
	Service  string
	Instance int
	Seed     uint64
	Response Response
	Faults   []Fault          // a fault without a Name is named "faults[<index>]"
	Start    time.Time        // run start, for fault windows; zero = when Start() is called
	Now      func() time.Time // clock; nil = time.Now
	OnEvent  func(Event)      // optional sink, called for every applied fault (must be cheap; called concurrently)
}

// UpstreamStats is a snapshot of what an Upstream received and did.
// Every request ends as exactly one of: a status, a reset, or canceled.
type UpstreamStats struct {
	Requests    uint64
	Statuses    map[int]uint64
	Resets      uint64
	Applied     map[string]uint64 // key "fault/kind"
	Canceled    uint64            // client went away or the upstream closed during the delay
	Connections uint64            // TCP connections accepted
}

// Upstream is an HTTP/1.1 fault-injecting server for one service instance.
type Upstream struct {
	cfg  UpstreamConfig
	id   string // "<service>/<instance>"
	body []byte

	seq   atomic.Uint64
	start atomic.Pointer[time.Time] // origin of fault windows
	conns atomic.Uint64

	mu       sync.Mutex // guards the fields below
	srv      *http.Server
	ln       net.Listener
	cancel   context.CancelFunc
	served   chan struct{} // closed when srv.Serve returns
	serveErr error
	closed   bool
	handlers sync.WaitGroup // requests in flight; Add only under mu while !closed
	stats    UpstreamStats
}

// NewUpstream validates cfg and returns an Upstream that is not yet listening.
func NewUpstream(cfg UpstreamConfig) (*Upstream, error) {
	var errs []error
	if cfg.Service == "" {
		errs = append(errs, errors.New("service: empty, want a service name"))
	}
	if cfg.Instance < 0 {
		errs = append(errs, fmt.Errorf("instance: %d is negative, want >= 0", cfg.Instance))
	}
	errs = append(errs, withPath("response", cfg.Response.Validate())...)
	rules := make([]Fault, len(cfg.Faults))
	seen := make(map[string]string, len(cfg.Faults))
	for i, f := range cfg.Faults {
		path := fmt.Sprintf("faults[%d]", i)
		if f.Name == "" {
			f.Name = path
		}
		if first, dup := seen[f.Name]; dup {
			errs = append(errs, fmt.Errorf("%s: name %q is already used by %s", path, f.Name, first))
		}
		seen[f.Name] = path
		errs = append(errs, withPath(path, f.Validate())...)
		rules[i] = clone(f)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("faults: %w for %s/%d:\n%w", ErrInvalidConfig, cfg.Service, cfg.Instance, err)
	}
	cfg.Faults = rules
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Upstream{
		cfg:  cfg,
		id:   cfg.Service + "/" + strconv.Itoa(cfg.Instance),
		body: pattern(cfg.Response.Size),
		stats: UpstreamStats{
			Statuses: map[int]uint64{},
			Applied:  map[string]uint64{},
		},
	}, nil
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background until Close.
func (u *Upstream) Start(addr string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.closed:
		return fmt.Errorf("faults: upstream %s: %w", u.id, net.ErrClosed)
	case u.srv != nil:
		return fmt.Errorf("faults: upstream %s: already started on %s", u.id, u.ln.Addr())
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("faults: upstream %s: %w", u.id, err)
	}
	start := u.cfg.Start
	if start.IsZero() {
		start = u.cfg.Now()
	}
	u.start.Store(&start)
	ctx, cancel := context.WithCancel(context.Background())
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true) // resets hijack the connection: HTTP/1.1 only
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(u.serveHTTP),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return ctx },
		ConnState: func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				u.conns.Add(1)
			}
		},
	}
	u.ln, u.cancel, u.served = ln, cancel, make(chan struct{})
	go func(srv *http.Server, served chan<- struct{}) {
		defer close(served)
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			u.mu.Lock()
			u.serveErr = err
			u.mu.Unlock()
		}
	}(u.srv, u.served)
	return nil
}

// SetRunStart moves the origin of the fault windows, e.g. to the moment the load starts once every
// instance and proxy is up. Call it after Start.
func (u *Upstream) SetRunStart(t time.Time) { u.start.Store(&t) }

// Addr returns the host:port the upstream listens on, or "" before Start.
func (u *Upstream) Addr() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.ln == nil {
		return ""
	}
	return u.ln.Addr().String()
}

// Close stops listening, closes all connections, aborts requests waiting out their delay and
// returns once every goroutine the upstream started has finished. Close is idempotent.
func (u *Upstream) Close() error {
	u.mu.Lock()
	if u.closed || u.srv == nil {
		u.closed = true
		u.mu.Unlock()
		return nil
	}
	u.closed = true
	srv, cancel, served := u.srv, u.cancel, u.served
	u.mu.Unlock()

	err := srv.Close() // listener and tracked connections first, so no response is written after
	cancel()           // then wake handlers waiting out a delay
	<-served
	u.handlers.Wait()

	u.mu.Lock()
	defer u.mu.Unlock()
	return errors.Join(err, u.serveErr)
}

// Stats returns a snapshot of the counters.
func (u *Upstream) Stats() UpstreamStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats
	s.Statuses = maps.Clone(s.Statuses)
	s.Applied = maps.Clone(s.Applied)
	s.Connections = u.conns.Load()
	return s
}

// serveHTTP decides, waits out the delay, then resets the connection or answers.
func (u *Upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !u.enter() {
		panic(http.ErrAbortHandler)
	}
	defer u.handlers.Done()

	_, _ = io.Copy(io.Discard, r.Body)
	now := u.cfg.Now()
	n := u.seq.Add(1)
	d := Decide(u.cfg.Response, u.cfg.Faults, now.Sub(*u.start.Load()), RequestRand(u.cfg.Seed, u.cfg.Service, u.cfg.Instance, n))
	u.record(now, n, r.Header.Get(HeaderRequestID), d)

	if !sleep(r.Context(), d.Delay) {
		u.count(func(s *UpstreamStats) { s.Canceled++ })
		panic(http.ErrAbortHandler) // the client or the upstream is gone: write nothing
	}
	if d.Reset {
		u.count(func(s *UpstreamStats) { s.Resets++ })
		reset(w)
		return
	}
	u.count(func(s *UpstreamStats) { s.Statuses[d.Status]++ })
	h := w.Header()
	h.Set(HeaderInstance, u.id)
	h.Set(HeaderSeq, strconv.FormatUint(n, 10))
	withBody := d.Status != http.StatusNoContent && d.Status != http.StatusNotModified
	if withBody {
		h.Set("content-type", "application/octet-stream")
		h.Set("content-length", strconv.Itoa(len(u.body)))
	}
	w.WriteHeader(d.Status)
	if withBody && r.Method != http.MethodHead {
		_, _ = w.Write(u.body)
	}
}

// enter registers a request in flight unless the upstream is closing.
func (u *Upstream) enter() bool {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed {
		return false
	}
	u.handlers.Add(1)
	return true
}

// record counts the request and its applied faults, and emits one event per applied fault.
func (u *Upstream) record(now time.Time, seq uint64, requestID string, d Decision) {
	u.count(func(s *UpstreamStats) {
		s.Requests++
		for _, a := range d.Applied {
			s.Applied[a.Fault+"/"+a.Kind]++
		}
	})
	if u.cfg.OnEvent == nil {
		return
	}
	for _, a := range d.Applied {
		u.cfg.OnEvent(Event{
			Time:      now,
			Service:   u.cfg.Service,
			Instance:  u.cfg.Instance,
			Seq:       seq,
			RequestID: requestID,
			Fault:     a.Fault,
			Kind:      a.Kind,
			Detail:    a.Detail,
		})
	}
}

func (u *Upstream) count(f func(*UpstreamStats)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.stats)
}

// sleep waits d, and reports false if ctx ended first.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// reset closes the connection with SO_LINGER 0, so the peer sees a TCP RST (ECONNRESET) and no
// response byte.
func reset(w http.ResponseWriter) {
	conn, _, err := http.NewResponseController(w).Hijack()
	if err != nil {
		panic(http.ErrAbortHandler) // cannot hijack: abort the response without writing it
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		_ = tc.SetLinger(0)
	}
	_ = conn.Close()
}

// pattern returns n bytes of a repeating, recognisable pattern.
func pattern(n int) []byte {
	const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
	b := make([]byte, n)
	for i := range b {
		b[i] = alphabet[i%len(alphabet)]
	}
	return b
}

// clone copies a rule so the caller's pointers cannot change it while serving.
func clone(f Fault) Fault {
	if f.Latency != nil {
		l := *f.Latency
		f.Latency = &l
	}
	if f.Abort != nil {
		a := *f.Abort
		f.Abort = &a
	}
	if f.Reset != nil {
		r := *f.Reset
		f.Reset = &r
	}
	return f
}

// withPath prefixes each error joined in err with path.
func withPath(path string, err error) []error {
	if err == nil {
		return nil
	}
	joined, ok := err.(interface{ Unwrap() []error })
	if !ok {
		return []error{fmt.Errorf("%s.%w", path, err)}
	}
	var errs []error
	for _, e := range joined.Unwrap() {
		errs = append(errs, fmt.Errorf("%s.%w", path, e))
	}
	return errs
}
