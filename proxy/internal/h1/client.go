package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// Pool is the connections to one upstream host: it sends one request at a time on each, keeps the
// idle ones (most recently used first) and never sends a request twice — whether and where to retry
// is the caller's decision.
type Pool struct {
	Addr string
	// Dial opens a connection to Addr; its error is returned as is.
	Dial func(ctx context.Context, addr string) (net.Conn, error)
	// MaxIdle is how many idle connections are kept (0: 1024).
	MaxIdle int
	// IdleTimeout closes a connection idle this long instead of reusing it (0: 1 hour, Envoy's default
	// idle_timeout for upstream connections).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a response head (0: 60 KiB, Envoy's default max_response_headers_kb).
	MaxHeaderBytes int
	// ReapInterval is how often, while it holds idle connections, the pool closes those the upstream
	// closed (which would otherwise sit in CLOSE_WAIT until the next request) and those idle longer
	// than IdleTimeout (0: 1 s). Envoy notices a remote close on an idle connection at once, from its
	// event loop; a sweep keeps the pool free of a goroutine per idle connection.
	ReapInterval time.Duration
	// Limits, when set, are the circuit breakers of the cluster the host belongs to: the pool asks them
	// before a request waits and before it opens a connection. nil: no limits.
	Limits Limits

	mu     sync.Mutex
	idle   []*clientConn
	closed bool
	// draining: a connection that becomes free closes rather than idles, unless a request waits for it
	// (see Drain).
	draining bool
	reaper   *time.Timer // armed while idle connections are held
	// open counts the pool's connections, from their dial to their close (connecting, idle and busy);
	// connecting those being dialed. waiters are the requests waiting for a connection, oldest first.
	open, connecting int
	waiters          []*waiter
	dialCtx          context.Context // ends with Close: the dials under way stop
	dialStop         context.CancelFunc
}

// Limits are the circuit breakers a Pool answers to (Envoy's ResourceManager, as its connection pools
// use it: ConnPoolImplBase in source/common/conn_pool/conn_pool_base.cc). Shared by the pools of a
// cluster's hosts; its methods must be safe for concurrent use and must not call back into a Pool.
type Limits interface {
	// Pending takes a place in the pending queue (max_pending_requests) for a request that finds no
	// idle connection: it waits there for one, a new one or one given back. false: the queue is full
	// and the round trip fails with ErrOverflow.
	Pending() bool
	// Unpending gives the place back: the request has its connection, or stopped waiting.
	Unpending()
	// TryConnection takes a connection slot (max_connections) for a connection about to be dialed.
	// false: the cluster is at its limit (upstream_cx_overflow), and no connection is opened unless
	// the pool has none at all, when ForceConnection takes the slot past the limit.
	TryConnection() bool
	ForceConnection()
	// ConnectionClosed gives a connection's slot back once it is closed (or its dial failed).
	ConnectionClosed()
}

// ErrOverflow fails a round trip the circuit breakers refused: the pending queue was full, or
// Request.Attach refused it.
var ErrOverflow = errors.New("h1: circuit breaker overflow")

// errPoolClosed fails the requests waiting for a connection when the pool is closed.
var errPoolClosed = errors.New("h1: pool closed")

// waiter is a request waiting for a connection: it receives one, or the error of a failed dial.
type waiter struct{ ch chan waitResult }

type waitResult struct {
	cc  *clientConn
	err error
}

// Request is what a Pool sends upstream.
type Request struct {
	Method, URI, Host string
	// Header is sent less the hop-by-hop fields (RFC 9110 §7.6.1) and those its Connection field names,
	// the framing fields (the Pool frames the body itself), Host, the names in Omit and the names in
	// Extra.
	Header http.Header
	Omit   map[string]bool
	// Extra are the fields the caller adds or replaces.
	Extra http.Header
	// Body is the request body, or its first part when BodyRest is set.
	Body []byte
	// BodyRest, when set, is the rest of the body after Body, streamed upstream as it is read (a body
	// too large to hold whole); BodyLength is then the whole body's length, Body's bytes included, or -1
	// when unknown: the body is then sent chunked. A read error of BodyRest fails the exchange and
	// closes the connection (the upstream never sees a complete request).
	BodyRest   io.Reader
	BodyLength int64
	// Deadline, when set, bounds the whole exchange, the body's reads included.
	Deadline time.Time
	// Abort, when set, is how the exchange is interrupted; the context then only bounds the wait for a
	// connection. Without it, the context's end aborts the exchange (at the cost of a context.AfterFunc).
	Abort *Aborter
	// Attach, when set, is called once the request has its connection, before anything is sent; false
	// fails the round trip with ErrOverflow and the connection goes to the next request (Envoy's
	// attachStreamToClient, conn_pool_base.cc, where max_requests is checked).
	Attach func() bool
	// Detach, when set with Attach, is called once the exchange is over (its response body closed, or
	// the round trip failed), before the connection may serve another request.
	Detach func()
}

// IsHopByHop reports whether a field (canonical name) is one a proxy never forwards (RFC 9110 §7.6.1).
func IsHopByHop(k string) bool {
	switch k {
	case "Connection", "Keep-Alive", "Proxy-Connection", "Proxy-Authenticate", "Proxy-Authorization",
		"Te", "Trailer", "Transfer-Encoding", "Upgrade":
		return true
	}
	return false
}

// writtenByPool reports whether a request field is not copied from Request.Header or Extra: the
// hop-by-hop ones, and Host and Content-Length, which the pool writes itself.
func writtenByPool(k string) bool { return IsHopByHop(k) || k == "Host" || k == "Content-Length" }

// Errors of a round trip besides those of Dial and of the connection.
var (
	ErrBodyClosed = errors.New("h1: read on a closed response body")
	errUpgradeRsp = errors.New("h1: protocol switch in response")
)

// RoundTrip sends the request on an idle connection, or on the first connection that becomes free
// for it (a new one, or one given back), and reads the response head. The response's body must be
// closed; its connection is reused when the body was read to its end. ctx ending aborts the exchange,
// the body's reads included.
func (p *Pool) RoundTrip(ctx context.Context, req *Request) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Abort != nil && req.Abort.isGone() {
		return nil, context.Canceled
	}
	cc, err := p.get(ctx, req.Deadline)
	if err != nil {
		return nil, err
	}
	if req.Attach != nil && !req.Attach() {
		p.ready(cc)
		return nil, ErrOverflow
	}
	cc.detach = req.Detach
	cc.stop, cc.ab, cc.deadline = nil, nil, false
	cc.aborted.Store(false)
	switch {
	case req.Abort != nil:
		if !req.Abort.set(cc.abortFn) {
			cc.fail()
			return nil, context.Canceled
		}
		cc.ab = req.Abort
		if ctx.Err() != nil {
			cc.abort() // ended before the abort was registered
		}
	case ctx.Done() != nil:
		cc.stop = context.AfterFunc(ctx, cc.abortFn)
	}
	if !req.Deadline.IsZero() {
		_ = cc.nc.SetDeadline(req.Deadline)
		cc.deadline = true
	}
	if err := cc.write(req); err != nil {
		cc.fail()
		return nil, err
	}
	if err := cc.readResponse(req.Method); err != nil {
		cc.fail()
		return nil, err
	}
	return &cc.resp, nil
}

// CloseIdle closes the idle connections.
func (p *Pool) CloseIdle() {
	p.mu.Lock()
	idle := p.idle
	p.idle = nil
	p.mu.Unlock()
	for _, cc := range idle {
		cc.close()
	}
}

// Drain closes the idle connections now and the others once no request waits for them, while it
// still serves every request, those waiting for a connection and those that come after (dialing for
// them as needed): what Envoy does to a removed host's pools (DrainBehavior::DrainAndDelete,
// ConnPoolImplBase::drainConnectionsImpl → checkForIdleAndCloseIdleConnsIfDraining,
// source/common/conn_pool/conn_pool_base.cc), where Close would fail the waiting requests.
func (p *Pool) Drain() {
	p.mu.Lock()
	p.draining = true
	p.mu.Unlock()
	p.CloseIdle()
}

// Close closes the idle connections and those released later, stops the dials under way and fails
// the requests waiting for a connection.
func (p *Pool) Close() {
	p.mu.Lock()
	p.closed = true
	if p.reaper != nil {
		p.reaper.Stop()
		p.reaper = nil
	}
	if p.dialStop != nil {
		p.dialStop()
	}
	waiting := p.waiters
	p.waiters = nil
	p.mu.Unlock()
	for _, w := range waiting {
		w.ch <- waitResult{err: errPoolClosed}
	}
	p.CloseIdle()
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout <= 0 {
		return time.Hour
	}
	return p.IdleTimeout
}

// armReaper starts the sweep of the idle connections, unless it is already due; p.mu held.
func (p *Pool) armReaper() {
	if p.reaper != nil || p.closed {
		return
	}
	every := p.ReapInterval
	if every <= 0 {
		every = time.Second
	}
	p.reaper = time.AfterFunc(every, p.reap)
}

// reap closes the idle connections that may not be reused — the upstream closed them, sent bytes
// nobody asked for, or they were idle longer than IdleTimeout — and sweeps again later while some
// remain.
func (p *Pool) reap() {
	timeout := p.idleTimeout()
	p.mu.Lock()
	p.reaper = nil
	var dead []*clientConn
	keep := p.idle[:0]
	for _, cc := range p.idle {
		if time.Since(cc.idleAt) < timeout && cc.alive() {
			keep = append(keep, cc)
		} else {
			dead = append(dead, cc)
		}
	}
	clear(p.idle[len(keep):])
	p.idle = keep
	if len(p.idle) > 0 {
		p.armReaper()
	}
	p.mu.Unlock()
	for _, cc := range dead {
		cc.close()
	}
}

// Idle is how many idle connections the pool holds.
func (p *Pool) Idle() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.idle)
}

// get takes a connection for a request, as Envoy's connection pools do (ConnPoolImplBase::newStreamImpl,
// source/common/conn_pool/conn_pool_base.cc): an idle one (the most recently used), else the request
// waits in the pending queue — counted there even when it waits only for a new connection to be
// established — for the first connection that becomes free for it, while a connection is dialed for
// each request waiting beyond those being dialed, as the breakers allow (tryCreateNewConnection). The
// wait ends with ctx or the deadline.
func (p *Pool) get(ctx context.Context, deadline time.Time) (*clientConn, error) {
	timeout := p.idleTimeout()
	var w *waiter
	for w == nil {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		if n := len(p.idle); n > 0 {
			cc := p.idle[n-1]
			p.idle[n-1] = nil
			p.idle = p.idle[:n-1]
			p.mu.Unlock()
			if time.Since(cc.idleAt) < timeout && cc.alive() {
				return cc, nil
			}
			cc.close() // closed by the upstream while idle, or idle too long
			continue
		}
		if p.Limits != nil && !p.Limits.Pending() {
			p.mu.Unlock()
			return nil, ErrOverflow
		}
		w = &waiter{ch: make(chan waitResult, 1)}
		p.waiters = append(p.waiters, w)
		p.tryConnect()
		p.mu.Unlock()
	}
	if p.Limits != nil {
		defer p.Limits.Unpending()
	}
	r, handed, err := Await(ctx, deadline, w.ch, &p.mu, &p.waiters, w, func(r waitResult) {
		if r.cc != nil { // handed a connection as it gave up: the next request's
			p.ready(r.cc)
		}
	})
	if handed {
		return r.cc, r.err
	}
	return nil, err
}

// tryConnect dials a connection for each request waiting beyond the connections being dialed, at
// most three at a time, as the breakers allow: at max_connections none is dialed unless the pool has
// no connection at all (Envoy's tryCreateNewConnections and tryCreateNewConnection, conn_pool_base.cc:
// a host's waiting requests always have a connection coming). p.mu held.
func (p *Pool) tryConnect() {
	for range 3 {
		if len(p.waiters) <= p.connecting || p.closed {
			return
		}
		within := true
		if p.Limits != nil && !p.Limits.TryConnection() {
			if p.open > 0 {
				return
			}
			p.Limits.ForceConnection()
			within = false
		}
		if p.dialCtx == nil {
			p.dialCtx, p.dialStop = context.WithCancel(context.Background())
		}
		p.open++
		p.connecting++
		go p.connect(p.dialCtx)
		if !within {
			return
		}
	}
}

// connect dials a connection and gives it to the oldest waiting request. A failed dial fails every
// request waiting (Envoy purges its pending requests on a connect failure, onConnectionEvent).
func (p *Pool) connect(ctx context.Context) {
	nc, err := p.Dial(ctx, p.Addr)
	if err != nil {
		if p.Limits != nil {
			p.Limits.ConnectionClosed()
		}
		p.mu.Lock()
		p.open--
		p.connecting--
		waiting := p.waiters
		p.waiters = nil
		p.mu.Unlock()
		for _, w := range waiting {
			w.ch <- waitResult{err: err}
		}
		return
	}
	cc := p.newConn(nc)
	p.mu.Lock()
	p.connecting--
	p.mu.Unlock()
	p.ready(cc)
}

// ready gives a connection free for a request to the oldest waiting request, else keeps it idle (up
// to MaxIdle) — Envoy's onUpstreamReady.
func (p *Pool) ready(cc *clientConn) {
	max := p.MaxIdle
	if max <= 0 {
		max = 1024
	}
	p.mu.Lock()
	switch {
	case p.closed:
	case len(p.waiters) > 0:
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		p.mu.Unlock()
		w.ch <- waitResult{cc: cc}
		return
	case p.draining:
	case len(p.idle) < max:
		cc.idleAt = time.Now()
		p.idle = append(p.idle, cc)
		p.armReaper()
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	cc.close()
}

// Open is how many connections the pool holds: being dialed, idle or in use.
func (p *Pool) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.open
}

// clientConn is one upstream connection with what its exchanges reuse.
type clientConn struct {
	pool     *Pool
	nc       net.Conn
	br       *bufio.Reader
	head     head
	hdr      http.Header
	vals     []string
	resp     http.Response
	body     responseBody
	stop     func() bool // stops the context's abort; nil when the context cannot end
	ab       *Aborter    // where the exchange's abort is registered; nil if none
	deadline bool        // the exchange set a deadline on the connection
	aborted  atomic.Bool
	closed   atomic.Bool // close ran
	detach   func()      // the exchange's Request.Detach; nil once called
	abortFn  func()
	idleAt   time.Time
	probe    prober // checks that an idle connection is still open
	wbuf     []byte // the request being written

	// send's state, kept here so that its raw callback (sendFn, made once) allocates nothing.
	out        []byte
	outErr     error
	outWaiting bool
	sendFn     func(fd uintptr) bool
}

func (p *Pool) newConn(nc net.Conn) *clientConn {
	cc := &clientConn{pool: p, nc: nc, br: bufio.NewReaderSize(nc, readBufferSize),
		hdr: make(http.Header, 16)}
	cc.body.cc = cc
	cc.abortFn = cc.abort
	cc.probe.init(nc)
	cc.sendFn = cc.rawSend
	return cc
}

// abort ends the exchange under way: its reads and writes fail at once.
func (cc *clientConn) abort() {
	cc.aborted.Store(true)
	_ = cc.nc.SetDeadline(aLongTimeAgo)
}

// unregister ends the exchange's abort; true when it was aborted.
func (cc *clientConn) unregister() bool {
	if cc.ab != nil {
		cc.ab.unset()
	}
	if cc.stop != nil && !cc.stop() {
		return true
	}
	return cc.aborted.Load()
}

// fail ends a round trip that failed: the connection is closed.
func (cc *clientConn) fail() {
	cc.unregister()
	cc.detached()
	cc.close()
}

// detached tells the exchange's request that it is over.
func (cc *clientConn) detached() {
	if d := cc.detach; d != nil {
		cc.detach = nil
		d()
	}
}

// close closes the connection once and gives its slot back; a request still waiting may then have a
// connection dialed for it (Envoy's onConnectionEvent releases the client's resources, then calls
// tryCreateNewConnections).
func (cc *clientConn) close() {
	if !cc.closed.CompareAndSwap(false, true) {
		return
	}
	cc.nc.Close()
	p := cc.pool
	if p.Limits != nil {
		p.Limits.ConnectionClosed()
	}
	p.mu.Lock()
	p.open--
	p.tryConnect()
	p.mu.Unlock()
}

// alive reports whether an idle connection may be reused: nothing came on it and it is not closed.
func (cc *clientConn) alive() bool {
	return cc.br.Buffered() == 0 && cc.probe.open()
}

// write sends the request head and body: in one write when the body is small.
func (cc *clientConn) write(req *Request) error {
	host := req.Host
	if host == "" {
		host = cc.pool.Addr
	}
	b := cc.wbuf[:0]
	b = append(b, req.Method...)
	b = append(b, ' ')
	b = append(b, req.URI...)
	b = append(b, " HTTP/1.1\r\nHost: "...)
	b = appendValue(b, host)
	b = append(b, "\r\n"...)
	conn := req.Header["Connection"]
	for k, vs := range req.Header {
		if writtenByPool(k) || req.Omit[k] || len(conn) > 0 && HasToken(conn, k) {
			continue
		}
		if _, ok := req.Extra[k]; ok {
			continue
		}
		b = appendField(b, k, vs)
	}
	for k, vs := range req.Extra {
		if !writtenByPool(k) {
			b = appendField(b, k, vs)
		}
	}
	if req.BodyRest != nil {
		return cc.writeStreamed(b, req)
	}
	if len(req.Body) > 0 || req.Method == http.MethodPost || req.Method == http.MethodPut || req.Method == http.MethodPatch {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, int64(len(req.Body)), 10)
		b = append(b, "\r\n"...)
	}
	b = append(b, "\r\n"...)
	if len(req.Body) > inlineBody {
		if cap(b) <= maxKeptBuffer {
			cc.wbuf = b
		}
		if _, err := cc.nc.Write(b); err != nil {
			return err
		}
		_, err := cc.nc.Write(req.Body)
		return err
	}
	b = append(b, req.Body...)
	if cap(b) <= maxKeptBuffer {
		cc.wbuf = b
	}
	return cc.send(b)
}

// writeStreamed sends a head (b, without its framing fields) and a body that is not held whole: Body,
// then BodyRest as it is read, with a Content-Length when BodyLength is known, else chunked.
func (cc *clientConn) writeStreamed(b []byte, req *Request) error {
	chunked := req.BodyLength < 0
	if chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n\r\n"...)
	} else {
		b = append(b, "Content-Length: "...)
		b = strconv.AppendInt(b, req.BodyLength, 10)
		b = append(b, "\r\n\r\n"...)
	}
	if cap(b) <= maxKeptBuffer {
		cc.wbuf = b
	}
	if _, err := cc.nc.Write(b); err != nil {
		return err
	}
	bp := copyBufs.Get().(*[]byte)
	defer copyBufs.Put(bp)
	buf := *bp
	const frame = 18 // room for a chunk's size line: up to 16 hex digits and CRLF
	send := func(p []byte) error {
		if !chunked {
			_, err := cc.nc.Write(p)
			return err
		}
		for len(p) > 0 {
			n := min(len(p), len(buf)-frame-2)
			c := strconv.AppendInt(buf[:0], int64(n), 16)
			c = append(c, "\r\n"...)
			c = append(c, p[:n]...)
			c = append(c, "\r\n"...)
			if _, err := cc.nc.Write(c); err != nil {
				return err
			}
			p = p[n:]
		}
		return nil
	}
	if err := send(req.Body); err != nil {
		return err
	}
	// Read into the upper part of the buffer, so that a chunk's framing fits before the data.
	in := buf[frame : len(buf)-2]
	for {
		n, err := req.BodyRest.Read(in)
		if n > 0 {
			if werr := send(in[:n]); werr != nil {
				return werr
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return err
		}
	}
	if chunked {
		_, err := cc.nc.Write([]byte("0\r\n\r\n"))
		return err
	}
	return nil
}

// copyBufs are the buffers of streamed request bodies.
var copyBufs = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

const (
	inlineBody    = 16 << 10 // a body up to this size goes in the head's write
	maxKeptBuffer = 64 << 10 // a connection keeps a write buffer up to this size
)

func appendField(b []byte, k string, vs []string) []byte {
	for _, v := range vs {
		b = append(b, k...)
		b = append(b, ": "...)
		b = appendValue(b, v)
		b = append(b, "\r\n"...)
	}
	return b
}

// send writes a request and, where the socket allows it, waits until the response can be read
// without trying a read first: the write is made inside a raw read operation, after the poller's
// readiness for reading was reset, so the response's arrival cannot be missed, and the read that
// Go's netpoll model would make (and that would find nothing yet) is saved. Elsewhere, or when the
// write is partial, it is a plain write.
func (cc *clientConn) send(b []byte) error {
	if !rawIO || cc.probe.raw == nil {
		_, err := cc.nc.Write(b)
		return err
	}
	cc.out, cc.outErr, cc.outWaiting = b, nil, false
	if err := cc.probe.raw.Read(cc.sendFn); err != nil {
		return err // a deadline while waiting: the exchange was aborted or timed out
	}
	if cc.outErr != nil {
		return cc.outErr
	}
	if len(cc.out) > 0 { // partial: the rest the usual way
		_, err := cc.nc.Write(cc.out)
		return err
	}
	return nil
}

// readResponse reads the response head (skipping interim 1xx responses) and prepares its body.
func (cc *clientConn) readResponse(method string) error {
	limit := cc.pool.MaxHeaderBytes
	if limit <= 0 {
		limit = defaultMaxHeaderBytes
	}
	h := &cc.head
	for {
		if err := h.read(cc.br, limit, false); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF // the connection closed before a response
			}
			return err
		}
		if err := h.parse(); err != nil {
			return err
		}
		code, err := parseCode(h.buf[h.start[1][0]:h.start[1][1]])
		if err != nil {
			return err
		}
		if code < 200 { // an interim response is a response: its version is checked like the final one's
			if _, _, err := parseVersion(string(h.buf[h.start[0][0]:h.start[0][1]])); err != nil {
				return err
			}
		}
		if code == http.StatusSwitchingProtocols {
			return errUpgradeRsp
		}
		if code >= 200 {
			break
		}
	}
	h.str()
	cc.vals = h.fill(cc.hdr, cc.vals)
	version := h.part(0)
	major, minor, err := parseVersion(version)
	if err != nil {
		return err
	}
	code, _ := parseCode(h.buf[h.start[1][0]:h.start[1][1]])
	conn := cc.hdr["Connection"]
	cc.resp = http.Response{
		Status: h.s[h.start[1][0]:h.start[2][1]], StatusCode: code, Proto: version, ProtoMajor: major, ProtoMinor: minor,
		Header: cc.hdr, Body: &cc.body, ContentLength: -1,
		Close: minor == 0 && !HasToken(conn, "keep-alive") || HasToken(conn, "close"),
	}
	cc.body.reset()
	if method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified {
		if code == http.StatusNoContent {
			cc.resp.ContentLength = 0
		}
		cc.body.eof = true
		return nil
	}
	if _, te := cc.hdr["Transfer-Encoding"]; te && minor == 0 {
		return errMalformed // RFC 9112 §6.1: Transfer-Encoding on HTTP/1.0 is faulty framing
	}
	fr, err := bodyFraming(cc.hdr)
	if err != nil {
		return err
	}
	switch {
	case fr.chunked:
		cc.resp.TransferEncoding = chunkedTE
		cc.body.chunked = true
		cc.body.dec.reset(cc.br)
	case fr.length >= 0:
		cc.resp.ContentLength = fr.length
		cc.body.remaining = fr.length
		cc.body.eof = fr.length == 0
	default: // delimited by the connection's end
		cc.resp.Close = true
		cc.body.remaining = -1
	}
	return nil
}

// parseCode reads a three-digit status code.
func parseCode(b []byte) (int, error) {
	if len(b) != 3 || b[0] < '1' || b[0] > '9' || b[1] < '0' || b[1] > '9' || b[2] < '0' || b[2] > '9' {
		return 0, errMalformed
	}
	return int(b[0]-'0')*100 + int(b[1]-'0')*10 + int(b[2]-'0'), nil
}

// responseBody reads a response body straight from its connection's reader.
type responseBody struct {
	cc        *clientConn
	remaining int64 // Content-Length framing: bytes left; -1: until the connection ends
	chunked   bool  // chunked framing, through dec
	dec       chunkedReader
	eof       bool
	closed    bool
	err       error
}

func (b *responseBody) reset() { *b = responseBody{cc: b.cc} }

func (b *responseBody) Read(p []byte) (int, error) {
	switch {
	case b.closed:
		return 0, ErrBodyClosed
	case b.eof:
		return 0, io.EOF
	case b.err != nil:
		return 0, b.err
	}
	n, err := readFramed(b.cc.br, p, b.chunked, &b.dec, &b.remaining)
	if err == io.EOF {
		b.eof = true
	} else if err != nil {
		b.err = err
	}
	return n, err
}

// Close releases the connection: back to the pool when the body was read to its end and the
// exchange can be followed by another, else closed.
func (b *responseBody) Close() error {
	if b.closed {
		return nil
	}
	b.closed = true
	cc := b.cc
	aborted := cc.unregister()
	cc.detached()
	if aborted || !b.eof || b.err != nil || cc.resp.Close || b.remaining < 0 {
		cc.close()
		return nil
	}
	if cc.deadline {
		_ = cc.nc.SetDeadline(time.Time{})
	}
	cc.pool.ready(cc)
	return nil
}

// readFramed reads a message body by its framing: through the chunked decoder (which reads the
// trailer too), as much as the Content-Length leaves (remaining counts down), or to the stream's end
// (remaining < 0).
func readFramed(br *bufio.Reader, p []byte, chunked bool, dec *chunkedReader, remaining *int64) (int, error) {
	switch {
	case chunked:
		return dec.Read(p)
	case *remaining < 0:
		return br.Read(p)
	}
	if int64(len(p)) > *remaining {
		p = p[:*remaining]
	}
	n, err := br.Read(p)
	*remaining -= int64(n)
	if *remaining == 0 {
		err = io.EOF
	} else if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return n, err
}

// prober checks, without blocking, that the peer has not closed an idle connection: a connection
// closed by the upstream while idle is dropped rather than failing the next request on it (Envoy's
// event loop sees such a close at once; here the check runs when the connection is taken).
type prober struct {
	raw    syscall.RawConn // nil: no check possible
	fn     func(fd uintptr) bool
	closed bool // what the last peek saw (raw.Read runs fn on the calling goroutine)
	// tls is the TLS connection under the pool's connection, tlsRaw its socket: the socket is only
	// peeked at (its bytes are TLS records), and what it holds is read through tls. raw is nil then.
	tls    *tls.Conn
	tlsRaw syscall.RawConn
}

// tlsOpen checks an idle TLS connection: with nothing on its socket it is open (no cost beyond the
// peek). Something there is read through TLS, briefly: a session ticket (TLS 1.3 servers send them
// after the handshake) is taken in and the connection stays open; a close_notify alert, the end of the
// stream, or bytes nobody asked for mean it is not reusable. (crypto/tls keeps a connection usable
// after a read deadline passes.)
func (pr *prober) tlsOpen() bool {
	pr.closed = true
	if err := pr.tlsRaw.Read(pr.fn); err != nil || !pr.closed {
		return err == nil
	}
	_ = pr.tls.SetReadDeadline(time.Now().Add(time.Millisecond))
	var b [1]byte
	n, err := pr.tls.Read(b[:])
	_ = pr.tls.SetReadDeadline(time.Time{})
	var ne net.Error
	return n == 0 && errors.As(err, &ne) && ne.Timeout()
}

// netConner is a connection wrapping another (as the proxy's counted connections do).
type netConner interface{ NetConn() net.Conn }

func (pr *prober) init(nc net.Conn) {
	if raw := rawConn(nc); raw != nil {
		pr.raw = raw
		pr.fn = pr.peek
		return
	}
	if tc := tlsUnder(nc); tc != nil {
		if raw := rawConn(tc.NetConn()); raw != nil {
			pr.tls, pr.tlsRaw, pr.fn = tc, raw, pr.peek
		}
	}
}

// tlsUnder is the *tls.Conn nc is or wraps, or nil.
func tlsUnder(nc net.Conn) *tls.Conn {
	for nc != nil {
		if tc, ok := nc.(*tls.Conn); ok {
			return tc
		}
		u, ok := nc.(netConner)
		if !ok {
			return nil
		}
		nc = u.NetConn()
	}
	return nil
}

func (pr *prober) open() bool {
	if pr.tls != nil {
		return pr.tlsOpen()
	}
	if pr.raw == nil {
		return true
	}
	pr.closed = true
	if err := pr.raw.Read(pr.fn); err != nil {
		return false
	}
	return !pr.closed
}
