package faults

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"golang.org/x/net/http2"

	"github.com/meshproof/meshproof/faults/field"
	"github.com/meshproof/meshproof/faults/internal/netx"
	"github.com/meshproof/meshproof/proxy/clock"
)

// ErrInvalidConfig is wrapped by every error NewUpstream returns for a bad config.
var ErrInvalidConfig = errors.New("invalid upstream config")

// Response headers written by an Upstream.
const (
	HeaderInstance  = "x-meshproof-instance" // "<service>/<instance>"
	HeaderSeq       = "x-meshproof-seq"      // n-th request at the instance, from 1
	HeaderRequestID = "x-request-id"         // read from requests into Event.RequestID
)

// GRPCMessage is the grpc-message of an injected gRPC abort.
const GRPCMessage = "meshproof: injected fault"

// Event is one fault application (kept in the run record). Connection-level faults (refuse) have
// Seq 0 and no RequestID.
type Event struct {
	Time      time.Time
	Service   string
	Instance  int
	Seq       uint64 // n-th request at that instance
	RequestID string // the request's x-request-id header, if any
	Fault     string
	Kind      string // one of the Kind constants
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

	// Tracer, when set, records a SERVER span per request, child of the request's trace context as
	// extracted by Propagator (nil: W3C trace context), carrying the faults applied (see trace.go).
	// nil: no tracing.
	Tracer     trace.Tracer
	Propagator propagation.TextMapPropagator

	// App, when set, makes the instance call other services for each request it serves (see App);
	// nil: a leaf that only answers.
	App *App
	// Capacity, when set, gives the instance finite workers and a bounded queue (see Capacity); nil:
	// every request is served at once.
	Capacity *Capacity
	// TLS, when set, serves every connection over TLS with this configuration (e.g. a mesh's mutual
	// TLS: ClientAuth tls.RequireAndVerifyClientCert): the handshake comes first, then HTTP/1.1 or
	// h2c-style HTTP/2 inside it as on a plain port. A failed handshake closes the connection and is
	// counted in UpstreamStats.TLSHandshakeErrors. nil: plain TCP.
	TLS *tls.Config
}

// tlsHandshakeTimeout bounds a TLS handshake at an Upstream.
const tlsHandshakeTimeout = 10 * time.Second

// BucketWidth is the width of the UpstreamStats.Received and OK buckets.
const BucketWidth = 100 * time.Millisecond

// UpstreamStats is a snapshot of what an Upstream received and did.
// Every request ends as exactly one of: a status (answered, possibly slowly), a reset (before
// headers or mid-body), truncated (close_after), a hang, an RST_STREAM, a GOAWAY, or canceled.
// With a Capacity, a request turned away ends the same way: a 503 status (queue full or queue
// timeout), a reset (queue full, WhenFullRefuse), or canceled (its client left while it waited).
type UpstreamStats struct {
	Requests     uint64 // every request that arrived, admitted or not
	Statuses     map[int]uint64
	Resets       uint64
	Applied      map[string]uint64 // key "fault/kind"
	Canceled     uint64            // client went away or the upstream closed during the delay or the body
	Connections  uint64            // TCP connections accepted
	Truncated    uint64            // bodies cut by a clean close (close_after)
	Hangs        uint64            // requests held until the client went away
	StreamResets uint64            // HTTP/2 RST_STREAM answers
	GoAways      uint64            // HTTP/2 GOAWAY answers
	Refusals     uint64            // times the listener was closed by a refuse rule

	// Received counts the requests that arrived in each BucketWidth of the run (bucket i is
	// [i·BucketWidth, (i+1)·BucketWidth) from the run start, the origin of the fault windows;
	// requests before it are in no bucket), and OK those of them answered with a 2xx or 3xx status
	// (not a gRPC error, not a cut body), in the bucket of their arrival. OK is as long as Received.
	Received []uint32
	OK       []uint32
	// Capacity is what the finite capacity did; nil without one.
	Capacity *CapacityStats
	// Calls counts the calls the instance made (every CallResult, also those not sent for lack of
	// deadline), CallFailures those that failed, optional or not.
	Calls        uint64
	CallFailures uint64
	// TLSHandshakes counts the TLS handshakes completed (UpstreamConfig.TLS), TLSHandshakeErrors those
	// that failed in TLS — a client without a certificate, with one the configuration refuses, or
	// speaking plain HTTP — not those cut below it (the peer closed or reset the connection, a
	// timeout: see transportError).
	TLSHandshakes      uint64
	TLSHandshakeErrors uint64
}

// Upstream is a fault-injecting server for one service instance. It speaks HTTP/1.1 and, on the
// same port, HTTP/2 over cleartext with prior knowledge (h2c; the Upgrade dance is not
// supported): a connection that opens with the HTTP/2 preface is served by a small framer-based
// server that can answer RST_STREAM and GOAWAY of any code. With an App it calls other services
// through its sidecar for each request it answers (app.go); with a Capacity it serves a bounded
// number of requests at a time (capacity.go). See serve for the order of one request's life.
type Upstream struct {
	cfg       UpstreamConfig
	id        string // "<service>/<instance>"
	hasRefuse bool
	app       *App            // cfg.App with its defaults; nil = no calls
	own       *http.Transport // the default call client's transport, closed by Close; nil = none
	workers   *workers        // nil = no finite capacity

	seq     atomic.Uint64
	callSeq atomic.Uint64             // calls made, numbering their request ids
	start   atomic.Pointer[time.Time] // origin of fault windows
	conns   atomic.Uint64

	mu         sync.Mutex // guards the fields below
	addr       string     // where the upstream listens, kept while refusing
	ln         net.Listener
	h1         *connQueue
	srv        *http.Server
	ctx        context.Context // ends at Close
	cancel     context.CancelFunc
	served     chan struct{} // closed when srv.Serve returns
	stop       chan struct{} // closed at Close, ends the refuse schedule
	wake       chan struct{} // pokes the refuse schedule
	refusing   string        // the refuse rule in force, "" = accepting
	serveErr   error
	closed     bool
	goroutines sync.WaitGroup // accept loops, sniffers and HTTP/2 connections, schedule; Add only under mu while !closed
	handlers   sync.WaitGroup // requests in flight; Add only under mu while !closed
	stats      UpstreamStats

	openMu sync.Mutex // guards open
	open   map[*serverConn]struct{}
}

// NewUpstream validates cfg and returns an Upstream that is not yet listening.
func NewUpstream(cfg UpstreamConfig) (*Upstream, error) {
	var errs []error
	if cfg.Service == "" {
		errs = append(errs, field.Errorf("service", "empty, want a service name"))
	}
	if cfg.Instance < 0 {
		errs = append(errs, field.Errorf("instance", "%d is negative, want >= 0", cfg.Instance))
	}
	errs = append(errs, field.Within("response", cfg.Response.Validate())...)
	rules := make([]Fault, len(cfg.Faults))
	seen := make(map[string]string, len(cfg.Faults))
	hasRefuse := false
	for i, f := range cfg.Faults {
		path := fmt.Sprintf("faults[%d]", i)
		if f.Name == "" {
			f.Name = path
		}
		if first, dup := seen[f.Name]; dup {
			errs = append(errs, field.Errorf(path, "name %q is already used by %s", f.Name, first))
		}
		seen[f.Name] = path
		rerr := f.Validate()
		errs = append(errs, field.Within(path, rerr)...)
		if rerr == nil {
			rules[i] = clone(f)
		}
		hasRefuse = hasRefuse || f.Refuse != nil
	}
	if cfg.App != nil {
		errs = append(errs, field.Within("app", cfg.App.Validate())...)
	}
	if cfg.Capacity != nil {
		errs = append(errs, field.Within("capacity", cfg.Capacity.Validate())...)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("faults: %w for %s/%d:\n%w", ErrInvalidConfig, cfg.Service, cfg.Instance, err)
	}
	cfg.Faults = rules
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	u := &Upstream{
		cfg:       cfg,
		id:        cfg.Service + "/" + strconv.Itoa(cfg.Instance),
		hasRefuse: hasRefuse,
		wake:      make(chan struct{}, 1),
		open:      map[*serverConn]struct{}{},
		stats: UpstreamStats{
			Statuses: map[int]uint64{},
			Applied:  map[string]uint64{},
		},
	}
	if cfg.App != nil {
		var client *http.Client
		if cfg.App.Client == nil {
			u.own = newCallTransport()
			client = callClient(u.own)
		}
		app := cfg.App.withDefaults(client)
		u.app, u.cfg.App = &app, &app
	}
	if c := cfg.Capacity; c != nil {
		cp := *c
		if cp.WhenFull == "" {
			cp.WhenFull = WhenFullReject
		}
		u.cfg.Capacity = &cp
		u.workers = &workers{cap: cp, now: cfg.Now, onQueue: func() { u.count(func(s *UpstreamStats) { s.Capacity.Queued++ }) }}
		u.stats.Capacity = &CapacityStats{Workers: cp.Workers, Queue: cp.Queue}
	}
	return u, nil
}

// Start listens on addr (e.g. "127.0.0.1:0") and serves in the background until Close.
func (u *Upstream) Start(addr string) error {
	u.mu.Lock()
	defer u.mu.Unlock()
	switch {
	case u.closed:
		return fmt.Errorf("faults: upstream %s: %w", u.id, net.ErrClosed)
	case u.srv != nil:
		return fmt.Errorf("faults: upstream %s: already started on %s", u.id, u.addr)
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
	u.ctx, u.cancel = context.WithCancel(context.Background())
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true) // HTTP/2 connections are told apart by their preface and served by serveH2
	u.h1 = newConnQueue(ln.Addr())
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(u.serveHTTP),
		Protocols:         protocols,
		ReadHeaderTimeout: 10 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return u.ctx },
	}
	u.ln, u.addr, u.served, u.stop = ln, ln.Addr().String(), make(chan struct{}), make(chan struct{})
	go func(srv *http.Server, h1 *connQueue, served chan<- struct{}) {
		defer close(served)
		if err := srv.Serve(h1); !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
			u.mu.Lock()
			u.serveErr = errors.Join(u.serveErr, err)
			u.mu.Unlock()
		}
	}(u.srv, u.h1, u.served)
	u.goroutines.Add(1)
	go u.acceptLoop(ln)
	if u.hasRefuse {
		u.goroutines.Add(1)
		go u.schedule(u.stop)
	}
	return nil
}

// SetRunStart moves the origin of the fault windows, e.g. to the moment the load starts once every
// instance and proxy is up. Call it after Start.
func (u *Upstream) SetRunStart(t time.Time) {
	u.start.Store(&t)
	select {
	case u.wake <- struct{}{}:
	default:
	}
}

// Addr returns the host:port the upstream listens on, or "" before Start. It stays the same while
// a refuse rule holds the listener closed.
func (u *Upstream) Addr() string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.addr
}

// Refresh applies the connection-level faults (refuse) for the clock's current time: it closes
// the listener and the open connections when a refuse rule becomes active, and listens again on
// the same address when none is. The upstream calls it by itself at every change on the wall
// clock and when a connection arrives; call it after moving an injected clock.
func (u *Upstream) Refresh() error {
	var (
		events []Event
		down   bool // close the open connections, outside mu
	)
	defer func() {
		if down {
			u.closeOpen()
		}
		u.emit(events)
	}()
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.closed || u.srv == nil {
		return nil
	}
	now := u.cfg.Now()
	name, refuse := Refusing(u.cfg.Faults, now.Sub(*u.start.Load()))
	switch {
	case refuse && u.refusing == "":
		_ = u.ln.Close()
		u.ln, u.refusing = nil, name
		u.stats.Refusals++
		u.stats.Applied[name+"/"+KindRefuse]++
		events = append(events, u.event(now, 0, "", Applied{Fault: name, Kind: KindRefuse, Detail: RefuseClosed}))
		down = true
	case !refuse && u.refusing != "":
		ln, err := net.Listen("tcp", u.addr)
		if err != nil {
			return fmt.Errorf("faults: upstream %s: reopen after refuse: %w", u.id, err)
		}
		// Stamped once the listener is open again, so that every connection attempt after the stamp is
		// accepted: the run record ends the refuse window there (a timer fires late, never early).
		events = append(events, u.event(u.cfg.Now(), 0, "", Applied{Fault: u.refusing, Kind: KindRefuse, Detail: RefuseReopened}))
		u.ln, u.refusing = ln, ""
		u.goroutines.Add(1)
		go u.acceptLoop(ln)
	}
	return nil
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
	srv, ln, cancel, served := u.srv, u.ln, u.cancel, u.served
	u.ln = nil
	close(u.stop)
	u.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	err := srv.Close() // the HTTP/1.1 queue and tracked connections first, so no response is written after
	u.closeOpen()      // then sniffing, hijacked and HTTP/2 connections
	cancel()           // then wake handlers waiting out a delay
	<-served
	u.goroutines.Wait()
	u.handlers.Wait()
	if u.own != nil {
		u.own.CloseIdleConnections() // no call is in flight any more
	}

	u.mu.Lock()
	defer u.mu.Unlock()
	return errors.Join(err, u.serveErr)
}

// Stats returns a snapshot of the counters.
func (u *Upstream) Stats() UpstreamStats {
	u.mu.Lock()
	defer u.mu.Unlock()
	s := u.stats.Clone()
	s.Connections = u.conns.Load()
	return s
}

// Clone is a copy of s that shares nothing with it, its OK buckets as many as its Received ones (a
// bucket without a success yet is 0): the snapshot Stats returns, and the simulator's instances too.
func (s UpstreamStats) Clone() UpstreamStats {
	s.Statuses = maps.Clone(s.Statuses)
	s.Applied = maps.Clone(s.Applied)
	s.Received = slices.Clone(s.Received)
	s.OK = slices.Clone(s.OK)
	if n := len(s.Received) - len(s.OK); n > 0 {
		s.OK = append(s.OK, make([]uint32, n)...)
	}
	if s.Capacity != nil {
		c := *s.Capacity
		s.Capacity = &c
	}
	return s
}

// schedule calls Refresh at every change of the refuse rules on the wall clock, and when poked.
func (u *Upstream) schedule(stop <-chan struct{}) {
	defer u.goroutines.Done()
	for {
		err := u.Refresh()
		wait := time.Duration(-1)
		elapsed := u.cfg.Now().Sub(*u.start.Load())
		if next, ok := NextRefuseChange(u.cfg.Faults, elapsed); ok {
			wait = next - elapsed
		}
		if err != nil && (wait < 0 || wait > 100*time.Millisecond) {
			wait = 100 * time.Millisecond // the port may be briefly taken: try again
		}
		var (
			fire  <-chan time.Time
			timer *time.Timer
		)
		if wait >= 0 {
			timer = time.NewTimer(wait)
			fire = timer.C
		}
		select {
		case <-stop:
		case <-u.wake:
		case <-fire:
		}
		if timer != nil {
			timer.Stop()
		}
		select {
		case <-stop:
			return
		default:
		}
	}
}

// acceptLoop accepts connections on ln until it closes, and sniffs each in its own goroutine.
func (u *Upstream) acceptLoop(ln net.Listener) {
	defer u.goroutines.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				u.mu.Lock()
				u.serveErr = errors.Join(u.serveErr, err)
				u.mu.Unlock()
			}
			return
		}
		if u.hasRefuse {
			_ = u.Refresh() // an injected clock may have moved into a refuse window
		}
		u.mu.Lock()
		if u.closed || u.ln != ln {
			u.mu.Unlock()
			netx.RST(c) // accepted as the listener closed: the instance is down
			continue
		}
		u.conns.Add(1)
		raw := c
		if u.cfg.TLS != nil {
			c = tls.Server(c, u.cfg.TLS) // no I/O until sniff's handshake
		}
		sc := u.track(c, raw)
		u.goroutines.Add(1)
		u.mu.Unlock()
		go u.sniff(sc)
	}
}

// sniff tells HTTP/2 (prior knowledge) from HTTP/1.1 by the first bytes and serves accordingly.
func (u *Upstream) sniff(c *serverConn) {
	defer u.goroutines.Done()
	if tc, ok := c.Conn.(*tls.Conn); ok && !u.handshake(tc) {
		_ = c.Close()
		return
	}
	br := bufio.NewReader(c.Conn)
	c.r = br
	for i := 1; i <= len(http2.ClientPreface); i++ {
		b, err := br.Peek(i)
		if err != nil {
			_ = c.Close()
			return
		}
		if b[i-1] != http2.ClientPreface[i-1] {
			if !u.h1.push(c) {
				_ = c.Close()
			}
			return
		}
	}
	u.serveH2(c)
}

// handshake runs a TLS connection's server handshake, within tlsHandshakeTimeout and the upstream's
// life, and counts it.
func (u *Upstream) handshake(tc *tls.Conn) bool {
	ctx, cancel := context.WithTimeout(u.ctx, tlsHandshakeTimeout)
	defer cancel()
	err := tc.HandshakeContext(ctx)
	switch {
	case err == nil:
		u.count(func(s *UpstreamStats) { s.TLSHandshakes++ })
	case !transportError(err):
		u.count(func(s *UpstreamStats) { s.TLSHandshakeErrors++ })
	}
	return err == nil
}

// transportError reports whether a failed handshake failed below TLS: the peer closed or reset the
// connection (mid-handshake too: a proxy closing a connection it no longer needs), or the handshake
// was cut by its timeout or the upstream's Close. As Envoy's SslSocket::drainErrorQueue
// (source/common/tls/ssl_socket.cc), which leaves system errors out of ssl.connection_error (the
// connection stats track them), these are not counted as failed handshakes.
func transportError(err error) bool {
	var op *net.OpError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &op) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded)
}

// serveHTTP serves one HTTP/1.1 request.
func (u *Upstream) serveHTTP(w http.ResponseWriter, r *http.Request) {
	if !u.enter() {
		panic(http.ErrAbortHandler)
	}
	defer u.handlers.Done()

	_, _ = io.Copy(io.Discard, r.Body)
	ex := &h1Exchange{w: w, r: r}
	u.serve(ex, Request{Method: r.Method, Path: r.URL.Path, Header: r.Header}, r.Method == http.MethodHead)
	if ex.aborted {
		panic(http.ErrAbortHandler) // the client or the upstream is gone: write nothing more
	}
}

// inflight is one request at the instance, from its arrival to its answer.
type inflight struct {
	ctx context.Context // the request's: ends when its client goes away; carries its trace context
	// work is what the instance's work on the request (queue wait, service time, calls) runs under:
	// for a service with calls or capacity, a server thread that does not notice its client leaving
	// — it ends only when the upstream closes (see workContext); for a leaf without capacity, ctx.
	work    context.Context
	ex      exchange
	req     Request
	reqID   string // its x-request-id
	head    bool
	arrival time.Time     // on the upstream's clock
	bucket  int           // its Received bucket; -1 before the run start
	budget  time.Duration // its deadline's budget from arrival (HeaderExpectedTimeout); 0 = none
	seq     uint64        // n-th request decided at the instance; 0 = not admitted
}

// serve carries one request, over HTTP/1.1 or HTTP/2, through the instance. In order:
//  1. arrival: counted in Requests and its Received bucket;
//  2. the trace context (extracted from the request) and the SERVER span;
//  3. admission, with Capacity: a worker at once, or after a wait in the queue, or turned away
//     (503 queue_full or a reset when the queue is full, 503 queue_timeout, canceled); the worker is
//     held until serve returns;
//  4. the fault decision (the request's sequence number is taken here, so requests turned away
//     do not shift the decisions of the others);
//  5. respond: the delay, then (with App, for an answer) the calls, then the answer.
func (u *Upstream) serve(ex exchange, req Request, head bool) {
	in := &inflight{ctx: ex.context(), ex: ex, req: req, reqID: req.Header.Get(HeaderRequestID), head: head,
		arrival: u.cfg.Now(), budget: budget(req.Header)}
	in.bucket = u.arrive(in.arrival)
	if u.cfg.Tracer != nil || u.app != nil {
		in.ctx = u.propagator().Extract(in.ctx, headerCarrier(req.Header))
	}
	var span trace.Span
	if u.cfg.Tracer != nil {
		in.ctx, span = u.startSpan(in.ctx, req)
	}
	in.work = in.ctx
	if u.app != nil || u.workers != nil {
		var stop context.CancelFunc
		in.work, stop = u.workContext(in.ctx)
		defer stop()
	}
	if u.workers != nil {
		t := u.admit(in)
		if t.outcome != admitted {
			if span != nil {
				u.endOverloadSpan(span, t, ex.canceled())
			}
			return
		}
		defer func() {
			at := u.workers.release()
			u.count(func(s *UpstreamStats) { s.Capacity.Busy += at.Sub(t.since) })
		}()
	}
	d, n := u.decide(req, in.reqID)
	in.seq = n
	d, failed := u.respond(in, d)
	if span != nil {
		var attrs []attribute.KeyValue
		if failed != "" {
			attrs = append(attrs, AttrFailedCall.String(failed))
		}
		u.endSpan(span, d, n, ex.canceled(), attrs...)
	}
}

// workContext is the context of a request's work at a service with calls or capacity: ctx's values
// (its trace context) without its cancellation — like most servers' request threads, the work does
// not notice the client leaving (a propagated deadline is how a service learns to stop; see
// App.PropagateDeadline) — ended only when the upstream closes.
func (u *Upstream) workContext(ctx context.Context) (context.Context, context.CancelFunc) {
	work, cancel := context.WithCancel(context.WithoutCancel(ctx))
	u.mu.Lock()
	life := u.ctx
	u.mu.Unlock()
	if life == nil {
		return work, cancel
	}
	stop := context.AfterFunc(life, cancel)
	return work, func() { stop(); cancel() }
}

// arrive counts a request's arrival at now and returns its Received bucket (-1 before the run start).
func (u *Upstream) arrive(now time.Time) int {
	bucket := -1
	if elapsed := now.Sub(*u.start.Load()); elapsed >= 0 {
		bucket = int(elapsed / BucketWidth)
	}
	u.count(func(s *UpstreamStats) {
		s.Requests++
		if bucket >= 0 {
			s.Received = grow(s.Received, bucket)
			s.Received[bucket]++
		}
	})
	return bucket
}

// grow returns b long enough to index i.
func grow(b []uint32, i int) []uint32 {
	if i < len(b) {
		return b
	}
	return append(b, make([]uint32, i+1-len(b))...)
}

// admit takes a worker for the request, or turns it away: a 503 with HeaderOverload, a reset
// (queue full, WhenFullRefuse), or nothing when it went away while waiting.
func (u *Upstream) admit(in *inflight) ticket {
	t := u.workers.admit(in.work)
	u.count(func(s *UpstreamStats) {
		c := s.Capacity
		if t.queued {
			c.QueueWait += t.wait
			c.MaxQueueWait = max(c.MaxQueueWait, t.wait)
		}
		switch t.outcome {
		case admitFull:
			c.Rejected++
			if u.cfg.Capacity.WhenFull == WhenFullRefuse {
				s.Resets++
			} else {
				s.Statuses[http.StatusServiceUnavailable]++
			}
		case admitTimedOut:
			c.TimedOut++
			s.Statuses[http.StatusServiceUnavailable]++
		case admitCanceled:
			s.Canceled++
		}
	})
	switch t.outcome {
	case admitFull:
		if u.cfg.Capacity.WhenFull == WhenFullRefuse {
			in.ex.reset()
			return t
		}
		u.overloaded(in.ex, OverloadQueueFull)
	case admitTimedOut:
		u.overloaded(in.ex, OverloadQueueTimeout)
	case admitCanceled:
		in.ex.abort()
	}
	return t
}

// overloaded answers 503 with no body and the reason in HeaderOverload.
func (u *Upstream) overloaded(ex exchange, reason string) {
	h := ex.header()
	h.Set(HeaderInstance, u.id)
	h.Set(HeaderOverload, reason)
	h.Set("content-length", "0")
	if err := ex.writeHeader(http.StatusServiceUnavailable, true); err != nil {
		ex.abort()
	}
}

// decide numbers the request, decides and records the decision.
func (u *Upstream) decide(req Request, requestID string) (Decision, uint64) {
	now := u.cfg.Now()
	n := u.seq.Add(1)
	req.Seq, req.Elapsed = n, now.Sub(*u.start.Load())
	d := DecideRequest(u.cfg.Response, u.cfg.Faults, req, RequestRand(u.cfg.Seed, u.cfg.Service, u.cfg.Instance, n))
	u.record(now, n, requestID, d)
	return d, n
}

// exchange is one request's way back to its client, over HTTP/1.1 or HTTP/2.
type exchange interface {
	context() context.Context
	canceled() bool // the client went away, or the exchange was aborted
	header() http.Header
	writeHeader(status int, endStream bool) error
	write(p []byte, endStream bool) error // body bytes, flushed
	writeTrailers(t http.Header) error    // trailers ending the response (gRPC answers)
	reset()                               // TCP RST of the connection, now
	closeConn()                           // clean close (FIN) of the connection, now
	rstStream(code uint32)                // HTTP/2 only
	goAway(code uint32)                   // HTTP/2 only
	abort()                               // the exchange failed: write nothing more
}

// respond carries out a decision: waits out the delay, then resets, hangs or, after the app's
// calls, answers. It returns the decision carried out (the OnFailure answer when a required call
// failed) and the callee of that call.
func (u *Upstream) respond(in *inflight, d Decision) (Decision, string) {
	ctx, ex, head := in.ctx, in.ex, in.head
	delay := d.Delay
	expires := false // a gRPC call whose deadline passes during the delay
	if left, ok := u.grpcDeadlineLeft(in); ok && delay >= left {
		delay, expires = max(left, 0), true
	}
	if !clock.Sleep(in.work, clock.Real{}, delay) {
		u.count(func(s *UpstreamStats) { s.Canceled++ })
		ex.abort()
		return d, ""
	}
	if expires {
		d = deadlineExceeded(d)
	}
	switch {
	case d.Reset:
		u.count(func(s *UpstreamStats) { s.Resets++ })
		ex.reset()
		return d, ""
	case d.RSTStream != "":
		u.count(func(s *UpstreamStats) { s.StreamResets++ })
		code, _ := H2Code(d.RSTStream)
		ex.rstStream(code)
		return d, ""
	case d.GoAway != "":
		u.count(func(s *UpstreamStats) { s.GoAways++ })
		code, _ := H2Code(d.GoAway)
		ex.goAway(code)
		return d, ""
	case d.Hang:
		u.count(func(s *UpstreamStats) { s.Hangs++ })
		<-ctx.Done()
		ex.abort()
		return d, ""
	}

	failed := ""
	if u.app != nil && len(u.app.Steps) > 0 && !d.aborted() && !expires {
		failed = u.callSteps(in)
		if failed != "" {
			d = failedAnswer(d, u.app.OnFailure)
		}
	}
	if ctx.Err() != nil || in.work.Err() != nil {
		// The work is done and its client has gone (or the upstream closes): nobody reads the answer.
		u.count(func(s *UpstreamStats) { s.Canceled++ })
		ex.abort()
		return d, ""
	}

	h := ex.header()
	h.Set(HeaderInstance, u.id)
	h.Set(HeaderSeq, strconv.FormatUint(in.seq, 10))
	if failed != "" {
		h.Set(HeaderFailedCall, failed)
	}
	size := 0           // body bytes
	var grpcBody []byte // the answer's messages, for a gRPC call answered OK (grpc.go)
	grpcMessage := GRPCMessage
	if d.GRPCStatus == grpcDeadlineExceeded && expires {
		grpcMessage = GRPCDeadlineMessage
	}
	if d.GRPCStatus == 0 && d.Status == http.StatusOK && isGRPC(in.req) {
		var code int
		if grpcBody, code, grpcMessage = grpcAnswer(in.req, d.Size); code != 0 {
			d.GRPCStatus = code
		}
	}
	switch {
	case d.GRPCStatus != 0:
		h.Set("content-type", "application/grpc")
		h.Set("grpc-status", strconv.Itoa(d.GRPCStatus))
		h.Set("grpc-message", grpcMessage)
		h.Set("content-length", "0")
	case grpcBody != nil:
		size = len(grpcBody)
		h.Set("content-type", "application/grpc")
	case d.Status != http.StatusNoContent && d.Status != http.StatusNotModified:
		size = d.Size
		h.Set("content-type", "application/octet-stream")
		h.Set("content-length", strconv.Itoa(size))
	}
	if head {
		size = 0
	}
	u.count(func(s *UpstreamStats) {
		switch d.Cut {
		case CutReset:
			s.Resets++
		case CutClose:
			s.Truncated++
		default:
			s.Statuses[d.Status]++
			if in.bucket >= 0 && d.GRPCStatus == 0 && d.Status >= 200 && d.Status < 400 {
				s.OK = grow(s.OK, in.bucket)
				s.OK[in.bucket]++
			}
		}
	})
	limit := size
	if d.Cut != CutNone {
		limit = min(d.CutAfter, size)
	}
	if err := ex.writeHeader(d.Status, limit == 0 && d.Cut == CutNone && grpcBody == nil); err != nil {
		ex.abort()
		return d, failed
	}
	chunk := max(min(limit, maxBodyWrite), 1)
	if d.BytesPerSecond > 0 {
		chunk = max(1, d.BytesPerSecond/20) // 50ms steps
	}
	for off := 0; off < limit; {
		n := min(chunk, limit-off, maxBodyWrite)
		if d.BytesPerSecond > 0 && !clock.Sleep(ctx, clock.Real{}, pace(n, d.BytesPerSecond)) {
			u.count(func(s *UpstreamStats) { s.Canceled++ })
			ex.abort()
			return d, failed
		}
		p := bodyBytes(off, n)
		if grpcBody != nil {
			p = grpcBody[off : off+n]
		}
		if err := ex.write(p, grpcBody == nil && d.Cut == CutNone && off+n == size); err != nil {
			ex.abort()
			return d, failed
		}
		off += n
	}
	if grpcBody != nil && d.Cut == CutNone {
		if err := ex.writeTrailers(grpcTrailers(0, "")); err != nil {
			ex.abort()
			return d, failed
		}
	}
	switch d.Cut {
	case CutReset:
		ex.reset()
	case CutClose:
		ex.closeConn()
	}
	return d, failed
}

// pace is how long n bytes take at bps bytes per second, rounded up.
func pace(n, bps int) time.Duration {
	return time.Duration((int64(n)*int64(time.Second) + int64(bps) - 1) / int64(bps))
}

// A response body is the pattern repeated; it is written in slices of one shared block, so a large
// size costs no memory (a body of size bytes was once allocated whole per instance and per answer).
const (
	patternPeriod = 64       // the pattern's length
	maxBodyWrite  = 64 << 10 // the most one write sends
)

var bodyBlock = pattern(maxBodyWrite + patternPeriod)

// bodyBytes returns the n bytes (n <= maxBodyWrite) of the body that start at offset off.
func bodyBytes(off, n int) []byte {
	start := off % patternPeriod
	return bodyBlock[start : start+n]
}

// h1Exchange answers an HTTP/1.1 request through net/http; the connection-level effects hijack it.
type h1Exchange struct {
	w           http.ResponseWriter
	r           *http.Request
	wroteHeader bool
	aborted     bool
}

var _ exchange = (*h1Exchange)(nil)

func (e *h1Exchange) context() context.Context { return e.r.Context() }
func (e *h1Exchange) canceled() bool           { return e.r.Context().Err() != nil || e.aborted }
func (e *h1Exchange) header() http.Header      { return e.w.Header() }

func (e *h1Exchange) writeHeader(status int, _ bool) error {
	e.wroteHeader = true
	e.w.WriteHeader(status)
	return http.NewResponseController(e.w).Flush()
}

func (e *h1Exchange) write(p []byte, _ bool) error {
	if _, err := e.w.Write(p); err != nil {
		return err
	}
	return http.NewResponseController(e.w).Flush()
}

// writeTrailers sends t as HTTP/1.1 chunked trailers (gRPC calls come over HTTP/2; this is for
// completeness).
func (e *h1Exchange) writeTrailers(t http.Header) error {
	for name, values := range t {
		for _, v := range values {
			e.w.Header().Add(http.TrailerPrefix+name, v)
		}
	}
	return nil
}

func (e *h1Exchange) reset() {
	if c := e.hijack(); c != nil {
		netx.RST(c)
	}
}

func (e *h1Exchange) closeConn() {
	if c := e.hijack(); c != nil {
		_ = c.Close()
	}
}

// hijack takes the connection over, after flushing what was written; nil if it cannot.
func (e *h1Exchange) hijack() net.Conn {
	rc := http.NewResponseController(e.w)
	if e.wroteHeader {
		_ = rc.Flush() // a Flush before WriteHeader would send a 200
	}
	conn, _, err := rc.Hijack()
	if err != nil {
		e.aborted = true // cannot hijack: abort the response without writing more
		return nil
	}
	return conn
}

func (e *h1Exchange) rstStream(uint32) { e.reset() } // never decided for HTTP/1.1
func (e *h1Exchange) goAway(uint32)    { e.reset() } // never decided for HTTP/1.1
func (e *h1Exchange) abort()           { e.aborted = true }

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

// record counts the request's applied faults, and emits one event per applied fault.
func (u *Upstream) record(now time.Time, seq uint64, requestID string, d Decision) {
	u.count(func(s *UpstreamStats) {
		for _, a := range d.Applied {
			s.Applied[a.Fault+"/"+a.Kind]++
		}
	})
	if u.cfg.OnEvent == nil {
		return
	}
	for _, a := range d.Applied {
		u.cfg.OnEvent(u.event(now, seq, requestID, a))
	}
}

func (u *Upstream) event(now time.Time, seq uint64, requestID string, a Applied) Event {
	return Event{Time: now, Service: u.cfg.Service, Instance: u.cfg.Instance, Seq: seq, RequestID: requestID,
		Fault: a.Fault, Kind: a.Kind, Detail: a.Detail}
}

func (u *Upstream) emit(events []Event) {
	if u.cfg.OnEvent == nil {
		return
	}
	for _, e := range events {
		u.cfg.OnEvent(e)
	}
}

func (u *Upstream) count(f func(*UpstreamStats)) {
	u.mu.Lock()
	defer u.mu.Unlock()
	f(&u.stats)
}

// track registers an accepted connection c (a TLS connection over raw, or raw itself) so that refuse
// and Close can close it.
func (u *Upstream) track(c, raw net.Conn) *serverConn {
	sc := &serverConn{Conn: c, raw: raw, r: c}
	sc.onClose = func() {
		u.openMu.Lock()
		delete(u.open, sc)
		u.openMu.Unlock()
	}
	u.openMu.Lock()
	u.open[sc] = struct{}{}
	u.openMu.Unlock()
	return sc
}

// closeOpen closes every tracked connection.
func (u *Upstream) closeOpen() {
	u.openMu.Lock()
	open := make([]*serverConn, 0, len(u.open))
	for c := range u.open {
		open = append(open, c)
	}
	u.openMu.Unlock()
	for _, c := range open {
		_ = c.Close()
	}
}

// serverConn is an accepted connection: it reads through the sniffing buffer and unregisters
// itself when closed.
type serverConn struct {
	net.Conn
	raw     net.Conn    // the TCP connection (under TLS, Conn is a *tls.Conn over it)
	rst     atomic.Bool // SetLinger(0) was called: Close resets, without TLS's close_notify first
	r       io.Reader
	once    sync.Once
	onClose func()
}

func (c *serverConn) Read(p []byte) (int, error) { return c.r.Read(p) }

func (c *serverConn) Close() error {
	c.once.Do(c.onClose)
	if c.rst.Load() && c.raw != c.Conn {
		// A reset under TLS: closing the TLS connection would send a close_notify alert, which the
		// client reads as a clean end of stream before the RST; close the TCP connection alone.
		return c.raw.Close()
	}
	return c.Conn.Close()
}

// CloseWrite half-closes the connection (FIN), as net/http does before closing.
func (c *serverConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// SetLinger sets SO_LINGER on the TCP connection.
func (c *serverConn) SetLinger(sec int) error {
	if tc, ok := c.raw.(*net.TCPConn); ok {
		c.rst.Store(sec == 0)
		return tc.SetLinger(sec)
	}
	return nil
}

// connQueue is the net.Listener net/http serves: the HTTP/1.1 connections the sniffers hand over.
type connQueue struct {
	addr   net.Addr
	conns  chan net.Conn
	done   chan struct{}
	closed sync.Once
}

func newConnQueue(addr net.Addr) *connQueue {
	return &connQueue{addr: addr, conns: make(chan net.Conn), done: make(chan struct{})}
}

// push hands c to Accept, and reports false if the queue is closed.
func (q *connQueue) push(c net.Conn) bool {
	select {
	case q.conns <- c:
		return true
	case <-q.done:
		return false
	}
}

func (q *connQueue) Accept() (net.Conn, error) {
	select {
	case c := <-q.conns:
		return c, nil
	case <-q.done:
		return nil, net.ErrClosed
	}
}

func (q *connQueue) Close() error {
	q.closed.Do(func() { close(q.done) })
	return nil
}

func (q *connQueue) Addr() net.Addr { return q.addr }

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
	f.Match = f.Match.compiled()
	f.Flap = clonePtr(f.Flap)
	for _, k := range kinds {
		k.clone(&f)
	}
	return f
}
