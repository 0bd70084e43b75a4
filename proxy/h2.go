package proxy

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// Downstream HTTP/2: a listener's h1.Server hands each connection that starts with the HTTP/2 preface
// (codec_type AUTO), or every connection (codec_type HTTP2), to the listener's h2Server, which serves
// it with golang.org/x/net/http2 on the listener's request chain. A thin wrapper around the connection
// (h2Conn) reads the frame headers going both ways, without copying, to enforce what x/net does not:
// Envoy's inbound flood limits and its premature-reset (CVE-2023-44487) rule.

// Defaults where Envoy's do not fit a goroutine-per-stream codec (see proxy/README.md).
const (
	defaultH2MaxConcurrentStreams = 1000
	defaultH2Window               = 1 << 20
)

// Envoy's premature-reset thresholds: its runtime keys overload.premature_reset_total_stream_count
// (default 500) and overload.premature_reset_min_stream_lifetime_seconds (default 1)
// (ConnectionManagerImpl, source/common/http/conn_manager_impl.h).
const (
	prematureResetTotalStreamCount      = 500
	prematureResetMinStreamLifetimeSecs = 1
)

// h2Stats are Envoy's HTTP/2 codec stats (http2.*, one set per proxy as Envoy's are per codec type),
// and the connection manager's HTTP/2 and HTTP/1 connection stats of a listener.
type h2Stats struct {
	rxReset, txReset                                      *stats.Counter
	emptyFramesFlood, priorityFramesFlood, windowUpdFlood *stats.Counter
	cxHTTP2Total, cxHTTP1Total                            *stats.Counter
	cxHTTP2Active, cxHTTP1Active                          *stats.Gauge
	tooManyPrematureResets                                *stats.Counter
}

func newH2Stats(store *stats.Store, prefix string) *h2Stats {
	p := "http." + prefix + "."
	return &h2Stats{
		rxReset: store.Counter("http2.rx_reset"), txReset: store.Counter("http2.tx_reset"),
		emptyFramesFlood:    store.Counter("http2.inbound_empty_frames_flood"),
		priorityFramesFlood: store.Counter("http2.inbound_priority_frames_flood"),
		windowUpdFlood:      store.Counter("http2.inbound_window_update_frames_flood"),
		cxHTTP2Total:        store.Counter(p + "downstream_cx_http2_total"), cxHTTP2Active: store.Gauge(p + "downstream_cx_http2_active"),
		cxHTTP1Total: store.Counter(p + "downstream_cx_http1_total"), cxHTTP1Active: store.Gauge(p + "downstream_cx_http1_active"),
		tooManyPrematureResets: store.Counter(p + "downstream_rq_too_many_premature_resets"),
	}
}

// http1 counts the HTTP/1 connections (h1.Server.HTTP1).
func (st *h2Stats) http1(delta int) {
	if delta > 0 {
		st.cxHTTP1Total.Inc()
	}
	st.cxHTTP1Active.Add(int64(delta))
}

// h2Server serves one listener's HTTP/2 connections.
type h2Server struct {
	handler        http.Handler
	opts           config.HTTP2Options
	maxHeaderBytes int
	idle           time.Duration
	hcm            *connManager
	st             *h2Stats
	clk            clock.Clock
	// drainClose is asked, as each stream starts on a connection not yet going away, whether the
	// connection drains: then it sends GOAWAY (where an HTTP/1 response would say Connection: close).
	drainClose func() bool
	// maxRequests is the HCM max_requests_per_connection (0: none).
	maxRequests uint32

	mu      sync.Mutex
	conns   map[*h2Conn]struct{}
	closing bool
	done    chan struct{} // closed when closing and the last connection ended
}

func newH2Server(l config.Listener, handler http.Handler, hcm *connManager, store *stats.Store, clk clock.Clock, drainClose func() bool) *h2Server {
	o := l.HTTP2
	if o == (config.HTTP2Options{}) {
		o = config.HTTP2Options{MaxConsecutiveInboundFramesWithEmptyPayload: config.DefaultMaxConsecutiveInboundFramesWithEmptyPayload,
			MaxInboundPriorityFramesPerStream:            config.DefaultMaxInboundPriorityFramesPerStream,
			MaxInboundWindowUpdateFramesPerDataFrameSent: config.DefaultMaxInboundWindowUpdateFramesPerDataFrameSent}
	}
	if o.MaxConcurrentStreams == 0 {
		o.MaxConcurrentStreams = defaultH2MaxConcurrentStreams
	}
	if o.InitialStreamWindowSize == 0 {
		o.InitialStreamWindowSize = defaultH2Window
	}
	if o.InitialConnectionWindowSize == 0 {
		o.InitialConnectionWindowSize = defaultH2Window
	}
	maxHeader := l.MaxRequestHeadersBytes
	if maxHeader == 0 {
		maxHeader = 60 << 10 // Envoy's max_request_headers_kb default, its HTTP/2 codec's header list bound too
	}
	return &h2Server{handler: handler, opts: o, maxHeaderBytes: maxHeader, idle: l.IdleTimeout, hcm: hcm,
		st: newH2Stats(store, l.StatPrefix), clk: clk, drainClose: drainClose, maxRequests: l.MaxRequestsPerConnection,
		conns: map[*h2Conn]struct{}{}, done: make(chan struct{})}
}

// serveConn serves a connection the listener's h1.Server handed over (h1.Server.Handoff), read bytes
// first. It returns when the connection ends; the connection's StateClosed is reported here.
func (s *h2Server) serveConn(nc net.Conn, read []byte) {
	c := &h2Conn{Conn: nc, srv: s, pending: read, streams: map[uint32]*h2Stream{}}
	c.in.skip = len(http2.ClientPreface) // not a frame
	defer s.hcm.connState(nc, http.StateClosed)
	// One http2.Server and http.Server per connection: ConfigureServer ties x/net's graceful shutdown
	// (GOAWAY, streams in flight finish, then the connection closes) to http.Server.Shutdown, so a
	// connection of its own can be told to go away while others go on (drainClose).
	// The settings through http.Server.HTTP2, which x/net's server reads (configFromServer).
	hs := &http.Server{Handler: s.handler, MaxHeaderBytes: s.maxHeaderBytes, ErrorLog: discardLog, IdleTimeout: s.idle,
		HTTP2: &http.HTTP2Config{MaxConcurrentStreams: int(s.opts.MaxConcurrentStreams),
			// SETTINGS_MAX_FRAME_SIZE: RFC 9113's initial 16384, which Envoy's codec keeps (x/net's own is 1 MiB).
			MaxReadFrameSize:              16384,
			MaxReceiveBufferPerStream:     int(s.opts.InitialStreamWindowSize),
			MaxReceiveBufferPerConnection: int(s.opts.InitialConnectionWindowSize)}}
	h2s := &http2.Server{} //lint:ignore SA1019 as below
	//lint:ignore SA1019 x/net's own server: its ServeConn takes a connection handed over mid-read, net/http's cannot (proxy/README.md)
	if err := http2.ConfigureServer(hs, h2s); err != nil {
		nc.Close()
		return
	}
	// x/net calls ConnState first once it registered the connection with hs (its serverConn.serve,
	// after serverInternalState.registerConn), where hs.Shutdown finds it: a shutdown that came
	// between the connection's entry in s.conns and then found nothing to send GOAWAY on, and is
	// asked again here (x/net runs its shutdown hook on every Shutdown; the connection's own
	// graceful shutdown happens once).
	hs.ConnState = func(net.Conn, http.ConnState) {
		if c.registered { // only x/net's serve goroutine calls it
			return
		}
		c.registered = true
		s.mu.Lock()
		closing := s.closing
		s.mu.Unlock()
		if closing {
			c.shutdownHS()
		}
	}
	c.hs = hs // before c is published in s.conns: goAway reads it
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		nc.Close()
		return
	}
	s.conns[c] = struct{}{}
	s.mu.Unlock()
	s.st.cxHTTP2Total.Inc()
	s.st.cxHTTP2Active.Inc()
	defer func() {
		nc.Close()
		s.st.cxHTTP2Active.Dec()
		s.mu.Lock()
		delete(s.conns, c)
		if s.closing && len(s.conns) == 0 {
			close(s.done)
		}
		s.mu.Unlock()
	}()
	var served net.Conn = c
	if ts, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
		served = &h2TLSConn{h2Conn: c, ts: ts} // x/net reads the TLS state through it (r.TLS, cipher checks)
	}
	//lint:ignore SA1019 as above
	h2s.ServeConn(served, &http2.ServeConnOpts{Context: context.Background(), BaseConfig: hs,
		Handler: http.HandlerFunc(c.serveStream)})
}

// shutdown has every connection go away (GOAWAY, in-flight streams finish) and waits until they all
// ended, or ctx ends: then it closes those left.
func (s *h2Server) shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.markClosing()
	conns := make([]*h2Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.mu.Unlock()
	for _, c := range conns {
		c.goAway()
	}
	select {
	case <-s.done:
		return nil
	case <-ctx.Done():
		s.close()
		return ctx.Err()
	}
}

// close closes every connection at once.
func (s *h2Server) close() {
	s.mu.Lock()
	s.markClosing()
	for c := range s.conns {
		c.Conn.Close()
	}
	s.mu.Unlock()
}

// markClosing has the server take no more connections (s.mu held); done closes once none is left.
func (s *h2Server) markClosing() {
	if !s.closing {
		s.closing = true
		if len(s.conns) == 0 {
			close(s.done)
		}
	}
}

// h2Conn is a downstream HTTP/2 connection as x/net reads and writes it: the bytes read before the
// hand-over first, and the frame headers of both directions seen on the way (see h2_frames.go).
type h2Conn struct {
	net.Conn
	srv     *h2Server
	hs      *http.Server
	pending []byte // read by the h1 server before the hand-over
	// The read-ahead buffer: rbuf[rpos:rend] is read from the socket, not yet by x/net; rerr is the
	// error the socket returned with it, for after it.
	rbuf       []byte
	rpos, rend int
	rerr       error

	mu        sync.Mutex
	in, out   frameScanner
	streams   map[uint32]*h2Stream // the client's streams not closed yet
	free      []*h2Stream          // records of closed streams, for newStream to reuse
	lastID    uint32               // the highest stream id the client opened
	opened    uint64               // streams the client opened
	closed    uint64               // streams closed (Envoy's closed_non_internally_destroyed_requests_)
	premature uint64               // of which prematurely reset (number_premature_stream_resets_)
	emptyRun  uint32               // consecutive inbound frames with an empty payload
	priority  uint64               // inbound PRIORITY frames
	windowUpd uint64               // inbound WINDOW_UPDATE frames
	dataOut   uint64               // outbound DATA frames
	failed    error                // the flood or reset rule that ended the connection
	goingAway bool
	requests  uint32 // streams dispatched to the handler

	registered bool // x/net registered the connection (hs.ConnState called); its serve goroutine's alone
}

// h2Stream is what the connection keeps of an open client stream.
type h2Stream struct {
	start                 time.Time
	responded             bool // response headers were sent (Envoy: the stream has a response code)
	remoteDone, localDone bool // END_STREAM seen each way
}

// h2TLSConn is an h2Conn over TLS: x/net reads the connection state through it.
type h2TLSConn struct {
	*h2Conn
	ts interface{ ConnectionState() tls.ConnectionState }
}

func (c *h2TLSConn) ConnectionState() tls.ConnectionState { return c.ts.ConnectionState() }

// h2ReadBuffer is the size of a connection's read-ahead buffer (h2Conn.Read).
const h2ReadBuffer = 4 << 10

// Read gives x/net the connection's bytes: the hand-over's first, then what the socket has. x/net's
// framer reads each frame with two reads straight from the connection (its 9-byte header, then its
// payload: Framer.ReadFrame, golang.org/x/net/http2/frame.go), which on a plain socket are two system
// calls per frame; reading ahead into a buffer of h2ReadBuffer bytes takes every frame the socket
// holds in one (a read as large as the buffer, a DATA frame's payload, goes straight to the socket).
// The frame scanner sees the bytes as x/net gets them, so the limits apply at the same frames.
// Only x/net's frame reader calls Read: the buffer needs no lock.
func (c *h2Conn) Read(p []byte) (int, error) {
	var n int
	var err error
	switch {
	case len(c.pending) > 0:
		n = copy(p, c.pending)
		c.pending = c.pending[n:]
	case c.rpos < c.rend:
		n = copy(p, c.rbuf[c.rpos:c.rend])
		c.rpos += n
	case c.rerr != nil:
		return 0, c.rerr
	case len(p) >= h2ReadBuffer:
		n, err = c.Conn.Read(p)
	default:
		if c.rbuf == nil {
			c.rbuf = make([]byte, h2ReadBuffer)
		}
		var m int
		m, err = c.Conn.Read(c.rbuf)
		n = copy(p, c.rbuf[:m])
		c.rpos, c.rend = n, m
		if err != nil && n < m {
			c.rerr, err = err, nil // after the bytes read with it
		}
	}
	if n > 0 {
		c.mu.Lock()
		ferr := c.in.scan(p[:n], c, true)
		c.mu.Unlock()
		if ferr != nil {
			c.Conn.Close()
			return 0, ferr
		}
	}
	return n, err
}

func (c *h2Conn) Write(p []byte) (int, error) {
	c.mu.Lock()
	ferr := c.out.scan(p, c, false)
	c.mu.Unlock()
	if ferr != nil {
		c.Conn.Close()
		return 0, ferr
	}
	return c.Conn.Write(p)
}

// serveStream runs a stream's request on the listener's chain. The first stream that finds the
// listener draining has the connection go away, as Envoy's connection manager starts its HTTP/2 drain
// sequence where an HTTP/1 response would close (ConnectionManagerImpl::ActiveStream::encodeHeaders,
// drain_close_.drainClose(), then startDrainSequence: GOAWAY, streams in flight finish).
//
// max_requests_per_connection ends an HTTP/2 connection the same way: the stream that reaches it is
// served, GOAWAY is sent and downstream_cx_max_requests_reached counted (ConnectionManagerImpl::newStream).
func (c *h2Conn) serveStream(w http.ResponseWriter, r *http.Request) {
	c.mu.Lock()
	going := c.goingAway
	c.requests++
	limit := c.srv.maxRequests > 0 && c.requests == c.srv.maxRequests
	c.mu.Unlock()
	switch {
	case limit && !going:
		c.srv.hcm.st.cxMaxRequestsReached.Inc()
		c.goAway()
	case !going && c.srv.drainClose != nil && c.srv.drainClose():
		c.goAway()
	}
	if r.ContentLength == 0 && r.Header["Content-Length"] == nil {
		// A stream whose HEADERS ended it: x/net still gives it a (never-open) body, where net/http
		// and the h1 server give http.NoBody, which the connection manager takes for "no body to
		// read or time" (connManager.ServeHTTP); the same here spares the h2 stream the body read.
		// (x/net's newWriterAndRequest: an open body has Content-Length's value, or -1 without it.)
		r.Body = http.NoBody
	}
	c.srv.handler.ServeHTTP(w, r)
}

// goAway sends GOAWAY (x/net's graceful shutdown: the last stream id it processed, streams in flight
// finish, then the connection closes).
func (c *h2Conn) goAway() {
	c.mu.Lock()
	already := c.goingAway
	c.goingAway = true
	c.mu.Unlock()
	if !already {
		c.shutdownHS()
	}
}

// shutdownHS has x/net's graceful shutdown start on the connection, if x/net registered it by now
// (see serveConn's ConnState); c.goingAway latched.
func (c *h2Conn) shutdownHS() {
	c.mu.Lock()
	c.goingAway = true
	c.mu.Unlock()
	go func() { _ = c.hs.Shutdown(context.Background()) }() // no listener, no tracked connection: returns at once
}

// forwardTrailers passes an upstream response's trailers (complete once its body was read to its end)
// on to the downstream, as Envoy's router encodes the upstream's trailers (Filter::onUpstreamTrailers,
// source/common/router/router.cc): the HTTP/2 downstream sends them in a closing HEADERS frame (what
// gRPC's status travels in); the HTTP/1 codec sends none (Envoy's too, unless enable_trailers).
func forwardTrailers(w http.ResponseWriter, trailer http.Header) {
	h := w.Header()
	for k, vs := range trailer {
		h[http.TrailerPrefix+k] = vs
	}
}
