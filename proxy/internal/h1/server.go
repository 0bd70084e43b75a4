package h1

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// Server serves HTTP/1.1 connections to a Handler.
//
// Each connection has two goroutines: a reader, which parses requests and then keeps reading the
// socket while its request is handled, so that a client going away cancels the request's context at
// once (as Envoy resets the upstream request); and a handler goroutine, which runs the Handler and
// writes the response. The request's context is the connection's: HTTP/1.1 handles one request at a
// time, and it ends when the connection does.
//
// A Handler must not keep the *http.Request, its Header or URL, or the ResponseWriter after it
// returns: they are reused for the connection's next request.
type Server struct {
	Handler http.Handler
	// ReadHeaderTimeout bounds the time from a request's first byte to its last header (0: 1 minute).
	ReadHeaderTimeout time.Duration
	// HeaderTimeoutBody, when set, is the body of the 408 that answers a head ReadHeaderTimeout ended
	// (default: the status text).
	HeaderTimeoutBody string
	// IdleTimeout closes a connection without a request this long: before its first request, and
	// between requests (0: never; a connection must then bring its first request within
	// ReadHeaderTimeout).
	IdleTimeout time.Duration
	// MaxHeaderBytes bounds a request head; a larger one is answered 431 (0: 60 KiB, Envoy's default
	// max_request_headers_kb).
	MaxHeaderBytes int
	// ConnState, when set, hears of each connection's StateNew and StateClosed.
	ConnState func(net.Conn, http.ConnState)
	// Rejected, when set, hears of each request that the server answers itself because its head could
	// not be read, with the status it sends (400, 408, 431, 501, 505), before it is sent: Envoy's
	// codec answers such requests before any filter sees them, and the connection manager counts them.
	Rejected func(code int)
	// IdleTimedOut, when set, hears of each connection that IdleTimeout closes.
	IdleTimedOut func()
	// RejectHTTP10 answers an HTTP/1.0 request 426 Upgrade Required and closes the connection, as
	// Envoy's HTTP/1 codec does unless http_protocol_options.accept_http_10 is set
	// (ServerConnectionImpl::checkProtocolVersion, source/common/http/http1/codec_impl.cc).
	RejectHTTP10 bool
	// MaxRequestsPerConnection, when positive, is how many requests a connection serves: the last one's
	// response says Connection: close and the connection closes after it (Envoy's HCM
	// common_http_protocol_options.max_requests_per_connection for HTTP/1). 0: no limit.
	MaxRequestsPerConnection int
	// MaxRequestsReached, when set, hears of each connection that reached MaxRequestsPerConnection, as
	// its last request is dispatched.
	MaxRequestsReached func()
	// DrainClose, when set, is asked as each request is dispatched whether its response closes the
	// connection (Connection: close), as Envoy's connection manager asks its drain manager
	// (ConnectionManagerImpl::ActiveStream::encodeHeaders, drainClose) while a listener drains.
	DrainClose func() bool
	// BaseContext is the parent of every connection's context (nil: context.Background()).
	BaseContext context.Context
	// Handoff, when set, takes over each connection whose first bytes are the HTTP/2 client connection
	// preface (RFC 9113 §3.4, which reads as the request line "PRI * HTTP/2.0"), as Envoy's codec_type
	// AUTO picks its HTTP/2 codec on that preface (HttpConnectionManagerConfig::createCodec,
	// source/extensions/filters/network/http_connection_manager/config.cc). It is called on the
	// connection's reader goroutine once the server has let go of the connection, with what was read
	// of it so far (a copy, the preface included); from then on the connection is the callee's, which
	// closes it. ConnState hears of StateNew only: the callee reports the end itself. Only the first
	// bytes of a connection are looked at: the HTTP/1 path pays one comparison per connection.
	Handoff func(nc net.Conn, buffered []byte)
	// HandoffAll hands every connection to Handoff, preface or not, as it brings its first bytes
	// (codec_type HTTP2: the HTTP/2 codec then refuses a connection that does not start with the preface).
	HandoffAll bool
	// HTTP1, when set, hears +1 as a connection's first bytes show it speaks HTTP/1 (Envoy counts
	// downstream_cx_http1_total and _active as it creates the codec on the first bytes read), and -1
	// as that connection ends.
	HTTP1 func(delta int)

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
	buffers   atomic.Int64 // read and write buffers the connections hold (specs read it)
}

const (
	defaultMaxHeaderBytes    = 60 << 10
	defaultReadHeaderTimeout = time.Minute
	readBufferSize           = 4 << 10
	writeBufferSize          = 8 << 10
	// maxDiscard is the most of an unread request body the server reads away to keep the connection.
	maxDiscard = 256 << 10
)

// Connection states, for Shutdown: a connection is closed by Shutdown only while idle.
const (
	stateIdle int32 = iota
	stateActive
	stateClosed
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = http.ErrServerClosed

// Serve accepts connections on ln and serves them until Shutdown or Close; it closes ln when it returns.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	if s.listeners == nil {
		s.listeners = map[net.Listener]struct{}{}
		s.conns = map[*conn]struct{}{}
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
		ln.Close()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			if errors.Is(err, net.ErrClosed) {
				return err
			}
			// Out of file descriptors, say: wait for some to be freed, as net/http does.
			backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
			time.Sleep(backoff)
			continue
		}
		backoff = 0
		c := s.newConn(nc)
		if c == nil {
			continue
		}
		go c.readLoop()
	}
}

func (s *Server) newConn(nc net.Conn) *conn {
	ctx := s.BaseContext
	if ctx == nil {
		ctx = context.Background()
	}
	c := &conn{srv: s, nc: nc, br: s.getReader(nc), hdr: make(http.Header, 16), work: make(chan struct{}), handled: make(chan struct{}, 1),
		bodyDone: make(chan struct{}, 1), remote: nc.RemoteAddr().String()}
	// The local address under net/http's key: the proxy's %DOWNSTREAM_LOCAL_ADDRESS% reads it.
	ctx = context.WithValue(ctx, http.LocalAddrContextKey, nc.LocalAddr())
	c.ctx, c.cancel = context.WithCancel(context.WithValue(ctx, aborterKey{}, &c.ab))
	c.tmpl = (&http.Request{}).WithContext(c.ctx)
	c.w.c = c
	c.w.hdr = make(http.Header, 16)
	if rawIO {
		c.raw = rawConn(nc)
		c.readableFn = c.readable
	}
	c.body.c = c
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		nc.Close()
		c.cancel()
		return nil
	}
	s.conns[c] = struct{}{}
	s.wg.Add(1)
	s.mu.Unlock()
	if s.ConnState != nil {
		s.ConnState(nc, http.StateNew)
	}
	go c.handleLoop()
	return c
}

// Shutdown stops accepting, closes idle connections, lets in-flight requests finish (their responses
// say Connection: close) and waits for every connection to close, or for ctx to end.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.closeListeners()
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for {
		if s.closeIdle() == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// Close closes the listeners and every connection at once.
func (s *Server) Close() error {
	s.closing.Store(true)
	s.closeListeners()
	s.mu.Lock()
	for c := range s.conns {
		c.state.Store(stateClosed)
		c.nc.Close()
	}
	s.mu.Unlock()
	return nil
}

func (s *Server) closeListeners() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for ln := range s.listeners {
		ln.Close()
	}
}

// closeIdle closes the idle connections and says how many connections are left.
func (s *Server) closeIdle() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		if c.state.CompareAndSwap(stateIdle, stateClosed) {
			c.nc.Close()
		}
	}
	return len(s.conns)
}

// conn is one downstream connection.
type conn struct {
	srv *Server
	nc  net.Conn
	// The buffers, from pools, held only while they are needed: an idle keep-alive connection holds
	// neither (see peek), so it costs its socket, its two goroutines and this struct.
	br         *bufio.Reader // the reader goroutine's; nil while peek waits
	bw         *bufio.Writer // the handler goroutine's while it serves a request, else nil (see writer)
	raw        syscall.RawConn
	readableFn func(fd uintptr) bool // c.readable, made once
	waited     bool                  // readable's state: it was called once in this wait
	ctx        context.Context
	cancel     context.CancelFunc
	remote     string
	state      atomic.Int32
	ab         Aborter // interrupts the upstream exchange of the request handled when the client goes away

	// The request being handled, reused: the reader fills it while the handler goroutine is idle.
	head head
	hdr  http.Header
	vals []string
	tmpl *http.Request // a request carrying the connection's context, copied into req
	req  http.Request
	url  url.URL
	body requestBody
	w    response

	work     chan struct{} // reader → handler: a request is ready
	handled  chan struct{} // handler → reader: the response is written
	bodyDone chan struct{} // handler → reader: the request body was read to its end
	requests int           // how many requests the connection has dispatched
	http1    bool          // HTTP1 heard +1 for it
	handoff  []byte        // non-nil: the connection goes to Server.Handoff with these bytes as it ends here
}

// preface is the HTTP/2 client connection preface (RFC 9113 §3.4).
const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

// sawPreface says whether the connection starts with the HTTP/2 preface, waiting (under the head
// deadline) for the rest of it when what is buffered so far is a prefix of it.
func (c *conn) sawPreface() bool {
	b, _ := c.br.Peek(c.br.Buffered())
	n := min(len(b), len(preface))
	if string(b[:n]) != preface[:n] {
		return false
	}
	if n < len(preface) {
		if b, err := c.br.Peek(len(preface)); err != nil || string(b) != preface {
			return false
		}
	}
	return true
}

// readLoop reads and dispatches requests until the connection ends.
func (c *conn) readLoop() {
	s := c.srv
	defer func() { // after close (deferred last, runs first) let go of the connection
		if c.handoff != nil {
			s.Handoff(c.nc, c.handoff)
		}
	}()
	defer c.close()
	maxHead := s.MaxHeaderBytes
	if maxHead <= 0 {
		maxHead = defaultMaxHeaderBytes
	}
	headTimeout := s.ReadHeaderTimeout
	if headTimeout <= 0 {
		headTimeout = defaultReadHeaderTimeout
	}
	// A connection must bring its first request within the idle timeout, or else the head timeout.
	first := s.IdleTimeout
	if first <= 0 {
		first = headTimeout
	}
	_ = c.nc.SetReadDeadline(time.Now().Add(first))
	for {
		// Wait for the first byte of a request; then the rest of its head must come within headTimeout.
		if err := c.peek(); err != nil {
			c.idleTimedOut(err) // the only deadline of this wait is the idle timeout's
			return
		}
		if !c.state.CompareAndSwap(stateIdle, stateActive) {
			return // closed by Shutdown
		}
		deadline := !headComplete(c.br)
		if deadline {
			_ = c.nc.SetReadDeadline(time.Now().Add(headTimeout))
		}
		if c.requests == 0 && !c.http1 {
			if s.Handoff != nil && (s.HandoffAll || c.sawPreface()) {
				_ = c.nc.SetReadDeadline(time.Time{})
				read, _ := c.br.Peek(c.br.Buffered())
				c.handoff = append(make([]byte, 0, len(read)), read...)
				return // close lets go of the connection, then hands it off
			}
			if s.HTTP1 != nil {
				c.http1 = true
				s.HTTP1(1)
			}
		}
		err := c.head.read(c.br, maxHead, true)
		if deadline || s.IdleTimeout > 0 || first > 0 {
			first = 0
			_ = c.nc.SetReadDeadline(time.Time{}) // no deadline while the request is handled
		}
		if err == nil {
			err = c.readRequest()
		}
		if err != nil {
			c.reject(err)
			return
		}
		c.requests++
		if limit := s.MaxRequestsPerConnection; limit > 0 && c.requests >= limit {
			// The last request: its response closes the connection (Envoy's
			// ConnectionManagerImpl::newStream sets saw_connection_close_ for HTTP/1 and counts
			// downstream_cx_max_requests_reached, source/common/http/conn_manager_impl.cc).
			c.req.Close = true
			if s.MaxRequestsReached != nil {
				s.MaxRequestsReached()
			}
		}
		if !c.req.Close && s.DrainClose != nil && s.DrainClose() {
			c.req.Close = true
		}
		select {
		case <-c.bodyDone: // a stale signal, from a body read to its end after its request
		default:
		}
		hasBody := c.body.framed // read before the handler may touch the request
		c.work <- struct{}{}
		if hasBody {
			select {
			case <-c.bodyDone:
			case <-c.handled:
				if !c.afterRequest() {
					return
				}
				continue
			}
		}
		// While the request is handled, keep reading: bytes of a pipelined request wait in the buffer,
		// an end of stream or an error means the client is gone. The wait usually finds nothing and
		// costs one empty recvfrom() before the goroutine parks (see peek).
		if err := c.peek(); err != nil {
			c.cancel()
			c.ab.close()
			<-c.handled
			if c.state.Load() == stateIdle {
				// The handler was done: this read went on as the wait for the next request, under the
				// idle deadline that handleLoop set.
				c.idleTimedOut(err)
			}
			return
		}
		<-c.handled
		if !c.afterRequest() {
			return
		}
	}
}

// idleTimedOut tells IdleTimedOut of an error of a wait for a request, if the idle deadline ended it.
func (c *conn) idleTimedOut(err error) {
	var ne net.Error
	if s := c.srv; s.IdleTimeout > 0 && s.IdleTimedOut != nil && errors.As(err, &ne) && ne.Timeout() {
		s.IdleTimedOut()
	}
}

// headComplete reports whether the reader's buffer already holds a whole head.
func headComplete(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	for i := 0; i+1 < len(b); i++ {
		if b[i] == '\n' && (b[i+1] == '\n' || b[i+1] == '\r' && i+2 < len(b) && b[i+2] == '\n') {
			return true
		}
	}
	return false
}

// afterRequest reads away what the handler left of the request body and says whether the connection
// goes on. The handler goroutine is idle.
func (c *conn) afterRequest() bool {
	if c.w.closeAfter || c.srv.closing.Load() {
		return false
	}
	if c.body.framed && !c.body.eof {
		if c.body.expect && !c.body.continued {
			return false // 100-continue was never sent: the client may not send the body at all
		}
		n, err := io.CopyN(io.Discard, &c.body, maxDiscard+1)
		if err == nil || n > maxDiscard || !c.body.eof {
			return false
		}
	}
	if !c.state.CompareAndSwap(stateActive, stateIdle) && c.state.Load() != stateIdle {
		return false // closed by Shutdown
	}
	if t := c.srv.IdleTimeout; t > 0 {
		_ = c.nc.SetReadDeadline(time.Now().Add(t))
	}
	return true
}

// errHTTP10 is an HTTP/1.0 request on a server that rejects them (Server.RejectHTTP10): 426.
var errHTTP10 = errors.New("h1: upgrade required for HTTP/1.0")

// readRequest builds c.req from the head read.
func (c *conn) readRequest() error {
	h := &c.head
	if err := h.parse(); err != nil {
		return err
	}
	h.str()
	c.vals = h.fill(c.hdr, c.vals)
	method, target, version := h.part(0), h.part(1), h.part(2)
	major, minor, err := parseVersion(version)
	if err != nil {
		return err
	}
	if minor == 0 && c.srv.RejectHTTP10 {
		return errHTTP10
	}
	if method == http.MethodConnect {
		return errConnect
	}
	for i := 0; i < len(method); i++ {
		if !isTokenByte(method[i]) {
			return errMalformed
		}
	}
	if _, te := c.hdr["Transfer-Encoding"]; te && minor == 0 {
		// RFC 9112 §6.1: an HTTP/1.0 message with Transfer-Encoding has faulty framing (net/http ignores
		// the field there, this codec would have decoded it: a smuggling-shaped difference).
		return errMalformed
	}
	fr, err := bodyFraming(c.hdr)
	if err != nil {
		return err
	}
	c.req = *c.tmpl
	r := &c.req
	r.Method, r.RequestURI, r.Proto, r.ProtoMajor, r.ProtoMinor = method, target, version, major, minor
	r.Header, r.RemoteAddr = c.hdr, c.remote
	c.url = url.URL{}
	r.URL = &c.url
	if err := parseTarget(&c.url, target); err != nil {
		return err
	}
	hosts := c.hdr["Host"]
	switch {
	case len(hosts) > 1:
		return errMalformed
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		return errMalformed // RFC 9110 §7.2 / RFC 3986 authority syntax, as net/http checks it
	case len(hosts) == 1:
		r.Host = hosts[0]
	case minor == 1:
		return errMalformed // RFC 9112 §3.2: an HTTP/1.1 request must carry Host
	}
	if c.url.Host != "" {
		r.Host = c.url.Host // absolute form: its authority wins over Host
	}
	delete(c.hdr, "Host")
	conn := c.hdr["Connection"]
	r.Close = minor == 0 && !HasToken(conn, "keep-alive") || HasToken(conn, "close")
	if _, ok := c.hdr["Upgrade"]; ok && HasToken(conn, "upgrade") {
		return errUpgrade
	}
	c.body.reset(fr)
	switch {
	case fr.chunked:
		r.ContentLength, r.TransferEncoding, r.Body = -1, chunkedTE, &c.body
	case fr.length > 0:
		r.ContentLength, r.Body = fr.length, &c.body
	default:
		r.ContentLength, r.Body = 0, http.NoBody
	}
	c.body.framed = r.Body != http.NoBody
	if r.Body != http.NoBody && minor == 1 && HasToken(c.hdr["Expect"], "100-continue") {
		c.body.expect = true
	}
	return nil
}

var (
	chunkedTE  = []string{"chunked"}
	errConnect = errors.New("h1: CONNECT is not supported")
	errUpgrade = errors.New("h1: protocol upgrades are not supported")
)

// parseTarget reads a request target (RFC 9112 §3.2): origin form, absolute form or "*".
func parseTarget(u *url.URL, target string) error {
	switch {
	case target == "*":
		u.Path = "*"
		return nil
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return errMalformed // control bytes and spaces are not allowed in a target
		}
	}
	switch {
	case len(target) > 0 && target[0] == '/':
		path := target
		for i := 0; i < len(target); i++ {
			if target[i] == '?' {
				path, u.RawQuery, u.ForceQuery = target[:i], target[i+1:], i == len(target)-1
				break
			}
		}
		for i := 0; i < len(path); i++ {
			if path[i] == '%' {
				p, err := url.PathUnescape(path)
				if err != nil {
					return errMalformed
				}
				u.Path, u.RawPath = p, path
				return nil
			}
		}
		u.Path = path
		return nil
	}
	v, err := url.ParseRequestURI(target)
	if err != nil || v.Scheme == "" || v.Host == "" {
		return errMalformed
	}
	*u = *v
	return nil
}

// reject answers a request that could not be read, if anything was read of it, and closes.
func (c *conn) reject(err error) {
	code := http.StatusBadRequest
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed):
		return
	case errors.Is(err, errHeadTooLarge):
		code = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, errBadTE), errors.Is(err, errConnect), errors.Is(err, errUpgrade):
		code = http.StatusNotImplemented
	case errors.Is(err, errBadVersion):
		code = http.StatusHTTPVersionNotSupported
	case errors.Is(err, errHTTP10):
		code = http.StatusUpgradeRequired
	default:
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			code = http.StatusRequestTimeout
		}
	}
	if c.srv.Rejected != nil {
		c.srv.Rejected(code)
	}
	msg := http.StatusText(code)
	if code == http.StatusRequestTimeout && c.srv.HeaderTimeoutBody != "" {
		msg = c.srv.HeaderTimeoutBody
	}
	c.writeErrorBody(code, msg)
}

// writeError writes and flushes the server's own answer to a request it cannot serve: the status, its
// text as body, Connection: close.
func (c *conn) writeError(code int) { c.writeErrorBody(code, http.StatusText(code)) }

// writeErrorBody is writeError with another body.
func (c *conn) writeErrorBody(code int, msg string) {
	c.writer()
	b := c.bw.AvailableBuffer()
	b = appendStatusLine(b, code)
	b = append(b, "Content-Type: text/plain\r\nConnection: close\r\nContent-Length: "...)
	b = strconv.AppendInt(b, int64(len(msg)), 10)
	b = append(b, "\r\n\r\n"...)
	b = append(b, msg...)
	_, _ = c.bw.Write(b)
	_ = c.bw.Flush()
}

// bodyErrorStatus is the status the server answers for a handler that returned without a response
// after its request body failed with err; 0: none, the client is gone (the stream ended or was reset
// mid-body: Envoy then sends nothing either, and counts downstream_cx_destroy_remote_active_rq).
func bodyErrorStatus(err error) int {
	var fe *FramingError
	var ne net.Error
	switch {
	case errors.As(err, &fe):
		return fe.Status
	case errors.As(err, &ne) && ne.Timeout():
		return http.StatusRequestTimeout
	}
	return 0
}

func appendStatusLine(b []byte, code int) []byte {
	b = append(b, "HTTP/1.1 "...)
	b = strconv.AppendInt(b, int64(code), 10)
	b = append(b, ' ')
	b = append(b, http.StatusText(code)...)
	return append(b, "\r\n"...)
}

// close ends the connection: the handler goroutine stops, the context ends.
func (c *conn) close() {
	close(c.work)
	c.cancel()
	c.ab.close()
	c.state.Store(stateClosed)
	if c.handoff == nil {
		c.nc.Close()
	}
	// The handler is idle (every way out of readLoop waits for it): both buffers go back.
	c.srv.putReader(c.br)
	c.br = nil
	c.releaseWriter()
	s := c.srv
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	if c.http1 {
		s.HTTP1(-1)
	}
	if s.ConnState != nil && c.handoff == nil {
		s.ConnState(c.nc, http.StateClosed)
	}
	s.wg.Done()
}

// Pools of the connections' buffers, taken for a request and given back when the connection waits.
var (
	readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, readBufferSize) }}
	writers = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, writeBufferSize) }}
)

func (s *Server) getReader(nc net.Conn) *bufio.Reader {
	s.buffers.Add(1)
	br := readers.Get().(*bufio.Reader)
	br.Reset(nc)
	return br
}

func (s *Server) putReader(br *bufio.Reader) {
	if br != nil {
		s.buffers.Add(-1)
		br.Reset(nil) // drops what it held, and its connection
		readers.Put(br)
	}
}

// writer makes sure the connection holds a write buffer.
func (c *conn) writer() {
	if c.bw == nil {
		c.srv.buffers.Add(1)
		c.bw = writers.Get().(*bufio.Writer)
		c.bw.Reset(c.nc)
	}
}

// releaseWriter gives the write buffer back, with whatever it holds unsent.
func (c *conn) releaseWriter() {
	if c.bw != nil {
		c.srv.buffers.Add(-1)
		c.bw.Reset(nil)
		writers.Put(c.bw)
		c.bw = nil
	}
}

// peek waits until the connection has a byte to read, or its end, an error or the read deadline, and
// leaves it in the reader's buffer. When that buffer is empty (the usual case: nothing pipelined) it
// waits holding no buffer: the read buffer goes back to its pool, the raw connection waits for
// readiness (readable), and a buffer is taken again once there is something to read.
func (c *conn) peek() error {
	if c.raw != nil && c.br.Buffered() == 0 {
		c.srv.putReader(c.br)
		c.br = nil
		c.waited = false
		err := c.raw.Read(c.readableFn)
		c.br = c.srv.getReader(c.nc)
		if err != nil {
			return err
		}
	}
	_, err := c.br.Peek(1)
	return err
}

// readable is peek's raw read callback. Its first call looks at the socket (recvfrom with MSG_PEEK,
// which takes nothing): the raw read has just reset the poller's readiness, so bytes or a FIN that
// arrived before it would otherwise go unseen. Nothing there: false, and the raw read waits for the
// poller; its next call ends the wait, and the reader's own read follows.
func (c *conn) readable(fd uintptr) bool {
	if c.waited {
		return true
	}
	c.waited = true
	return !socketEmpty(fd)
}

// rawConn is the raw connection under nc (through wrappers that say which connection they wrap), or nil.
func rawConn(nc net.Conn) syscall.RawConn {
	for {
		if _, ok := nc.(*tls.Conn); ok {
			return nil // its socket carries TLS records, not the stream: no raw I/O under it
		}
		u, ok := nc.(netConner)
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	if sc, ok := nc.(syscall.Conn); ok {
		if raw, err := sc.SyscallConn(); err == nil {
			return raw
		}
	}
	return nil
}

// handleLoop runs the Handler for each request the reader dispatches.
func (c *conn) handleLoop() {
	for range c.work {
		c.serve()
		c.releaseWriter() // serve flushed what it wrote; an error left it unsent, and it goes
		// Done with the request and nothing of it left to read: the connection is idle (Shutdown may
		// close it) while the reader waits for the next one.
		if !c.w.closeAfter && (!c.body.framed || c.body.eof) && c.state.CompareAndSwap(stateActive, stateIdle) {
			if t := c.srv.IdleTimeout; t > 0 {
				_ = c.nc.SetReadDeadline(time.Now().Add(t)) // the reader waits for the next request under it
			}
		}
		c.handled <- struct{}{}
	}
}

// serve handles one request. A panic (http.ErrAbortHandler above all) ends the connection after what
// was written is flushed: the client sees a truncated response, as Envoy resets a stream mid-body.
func (c *conn) serve() {
	c.writer()
	w := &c.w
	w.reset(&c.req)
	defer func() {
		if p := recover(); p != nil {
			w.closeAfter = true
			_ = c.bw.Flush()
			c.abort()
		}
	}()
	c.srv.Handler.ServeHTTP(w, &c.req)
	w.finish()
}

// abort closes the connection under the reader: it sees an error and ends the connection.
func (c *conn) abort() {
	c.cancel()
	if cw, ok := c.nc.(interface{ CloseWrite() error }); ok { // a *net.TCPConn, or a wrapper of one
		_ = cw.CloseWrite()
	}
	_ = c.nc.SetReadDeadline(aLongTimeAgo)
}

var aLongTimeAgo = time.Unix(1, 0)

// requestBody is the request body as the handler reads it, straight from the connection's reader.
type requestBody struct {
	c         *conn
	remaining int64 // Content-Length framing: bytes left
	chunked   bool  // chunked framing, through dec
	dec       chunkedReader
	eof       bool
	err       error // the read's error, sticky: the connection cannot go on
	framed    bool  // the request has a body (the server's own record: the handler may replace r.Body)
	expect    bool  // the client waits for 100 Continue
	continued bool  // 100 Continue was sent
}

func (b *requestBody) reset(fr framing) {
	*b = requestBody{c: b.c, remaining: fr.length, chunked: fr.chunked}
	if fr.chunked {
		b.dec.reset(b.c.br)
	}
}

func (b *requestBody) Read(p []byte) (int, error) {
	if b.eof {
		return 0, io.EOF
	}
	if b.err != nil {
		return 0, b.err
	}
	if b.expect && !b.continued {
		b.continued = true
		if !b.c.w.wroteHeader {
			_, _ = b.c.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
			if err := b.c.bw.Flush(); err != nil {
				b.err = err
				return 0, err
			}
		}
	}
	n, err := readFramed(b.c.br, p, b.chunked, &b.dec, &b.remaining)
	if err == io.EOF {
		b.eof = true
		select {
		case b.c.bodyDone <- struct{}{}:
		default:
		}
	} else if err != nil {
		b.err = err
	}
	return n, err
}

func (b *requestBody) Close() error { return nil }

// response is the ResponseWriter of the connection's current request.
type response struct {
	c           *conn
	req         *http.Request
	hdr         http.Header
	status      int
	wroteHeader bool
	bodyless    bool  // HEAD, or a status without a body
	length      int64 // the declared Content-Length, -1 if none
	written     int64
	chunked     bool
	closeAfter  bool // the connection closes after this response
	err         error
}

var (
	_ http.ResponseWriter = (*response)(nil)
	_ http.Flusher        = (*response)(nil)
)

func (w *response) reset(r *http.Request) {
	clear(w.hdr)
	*w = response{c: w.c, hdr: w.hdr, req: r, length: -1, closeAfter: r.Close}
}

func (w *response) Header() http.Header { return w.hdr }

// WriteHeader writes the status line and the header fields to the connection's buffer, with the
// framing the server chooses: the handler's Content-Length if it set one, else chunked (HTTP/1.1) or
// close-delimited (HTTP/1.0).
func (w *response) WriteHeader(code int) {
	if w.wroteHeader {
		return
	}
	if code < 100 || code > 999 {
		panic("h1: invalid WriteHeader code " + strconv.Itoa(code))
	}
	if code < 200 { // informational: written at once, the final response follows
		b := appendStatusLine(w.c.bw.AvailableBuffer(), code)
		b = appendFields(b, w.hdr, true)
		_, _ = w.c.bw.Write(append(b, "\r\n"...))
		return
	}
	w.wroteHeader, w.status = true, code
	w.bodyless = w.req.Method == http.MethodHead || code == http.StatusNoContent || code == http.StatusNotModified
	if cl, ok := w.hdr["Content-Length"]; ok && code != http.StatusNoContent {
		if n, err := parseLength(firstOf(cl)); err == nil {
			w.length = n
		} else {
			delete(w.hdr, "Content-Length")
		}
	} else if ok {
		delete(w.hdr, "Content-Length")
	}
	if HasToken(w.hdr["Connection"], "close") || w.c.srv.closing.Load() || w.c.body.expect && !w.c.body.continued ||
		w.c.body.err != nil {
		// (A body the client was told to wait with is never read, and the end of a body whose read
		// failed cannot be found: the connection cannot go on.)
		w.closeAfter = true
	}
	if !w.bodyless && w.length < 0 {
		if w.req.ProtoMinor >= 1 {
			w.chunked = true
		} else {
			w.closeAfter = true
		}
	}
	b := appendStatusLine(w.c.bw.AvailableBuffer(), code)
	b = appendFields(b, w.hdr, false)
	b = append(b, "Date: "...)
	b = append(b, httpDate()...)
	b = append(b, "\r\n"...)
	if w.chunked {
		b = append(b, "Transfer-Encoding: chunked\r\n"...)
	}
	switch {
	case w.closeAfter:
		b = append(b, "Connection: close\r\n"...)
	case w.req.ProtoMinor == 0:
		b = append(b, "Connection: keep-alive\r\n"...)
	}
	b = append(b, "\r\n"...)
	_, w.err = w.c.bw.Write(b)
}

func firstOf(v []string) string {
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// appendFields writes header fields, leaving out those the server sets itself (all of them but the
// handler's for a 1xx). Line breaks in values become spaces: a value cannot split the head.
func appendFields(b []byte, h http.Header, informational bool) []byte {
	for k, vs := range h {
		if !informational {
			switch k {
			case "Connection", "Transfer-Encoding", "Date", "Keep-Alive":
				continue
			}
		}
		for _, v := range vs {
			b = append(b, k...)
			b = append(b, ": "...)
			b = appendValue(b, v)
			b = append(b, "\r\n"...)
		}
	}
	return b
}

func appendValue(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c == '\r' || c == '\n' {
			b = append(b, ' ')
		} else {
			b = append(b, c)
		}
	}
	return b
}

func (w *response) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return 0, w.err
	}
	if w.bodyless {
		if w.req.Method == http.MethodHead {
			return len(p), nil
		}
		return 0, http.ErrBodyNotAllowed
	}
	if len(p) == 0 {
		return 0, nil
	}
	if w.chunked {
		b := strconv.AppendInt(w.c.bw.AvailableBuffer(), int64(len(p)), 16)
		b = append(b, "\r\n"...)
		if _, w.err = w.c.bw.Write(b); w.err == nil {
			if _, w.err = w.c.bw.Write(p); w.err == nil {
				_, w.err = w.c.bw.WriteString("\r\n")
			}
		}
		if w.err != nil {
			return 0, w.err
		}
		w.written += int64(len(p))
		return len(p), nil
	}
	var short error
	if w.length >= 0 && w.written+int64(len(p)) > w.length {
		p, short = p[:w.length-w.written], http.ErrContentLength
	}
	n, err := w.c.bw.Write(p)
	w.written += int64(n)
	if err != nil {
		w.err = err
		return n, err
	}
	return n, short
}

// WriteString spares io.WriteString a conversion.
func (w *response) WriteString(s string) (int, error) {
	if w.wroteHeader && !w.chunked && !w.bodyless && w.err == nil && (w.length < 0 || w.written+int64(len(s)) <= w.length) {
		n, err := w.c.bw.WriteString(s)
		w.written += int64(n)
		w.err = err
		return n, err
	}
	return w.Write([]byte(s))
}

// Flush sends what is buffered to the client.
func (w *response) Flush() {
	_ = w.FlushError()
}

// FlushError is Flush with its error, for http.ResponseController.
func (w *response) FlushError() error {
	if !w.wroteHeader {
		w.WriteHeader(http.StatusOK)
	}
	if w.err != nil {
		return w.err
	}
	w.err = w.c.bw.Flush()
	return w.err
}

// SetReadDeadline and SetWriteDeadline serve http.ResponseController.
func (w *response) SetReadDeadline(t time.Time) error  { return w.c.nc.SetReadDeadline(t) }
func (w *response) SetWriteDeadline(t time.Time) error { return w.c.nc.SetWriteDeadline(t) }

// finish completes the response after the handler returned: the header if it was never written, the
// chunked terminator, the flush. A response shorter than its Content-Length closes the connection.
func (w *response) finish() {
	if !w.wroteHeader && (w.c.body.err != nil || w.c.ctx.Err() != nil) {
		// The handler gave up without answering on a body it could not read, or on a client gone
		// away: not a 200. A body that breaks its framing is answered as Envoy's codec does (400,
		// Connection: close); to a client gone nothing is sent.
		w.closeAfter = true
		if w.c.body.err != nil {
			if code := bodyErrorStatus(w.c.body.err); code != 0 {
				w.c.writeError(code)
			}
		}
		w.c.abort()
		return
	}
	if !w.wroteHeader {
		if _, ok := w.hdr["Content-Length"]; !ok {
			w.hdr["Content-Length"] = zeroLength
		}
		w.WriteHeader(http.StatusOK)
	}
	if w.chunked && w.err == nil {
		_, w.err = w.c.bw.WriteString("0\r\n\r\n")
	}
	if w.length >= 0 && w.written < w.length && !w.bodyless {
		w.closeAfter = true
	}
	if w.err == nil {
		w.err = w.c.bw.Flush()
	}
	if w.err != nil {
		w.closeAfter = true
	}
	if w.closeAfter {
		w.c.abort() // the reader sees the end and closes the connection
	}
}

var zeroLength = []string{"0"}

// httpDate is the current time in the IMF-fixdate form, recomputed once a second.
func httpDate() string {
	now := time.Now()
	sec := now.Unix()
	if d := cachedDate.Load(); d != nil && d.sec == sec {
		return d.s
	}
	d := &dateStamp{sec: sec, s: now.UTC().Format(http.TimeFormat)}
	cachedDate.Store(d)
	return d.s
}

type dateStamp struct {
	sec int64
	s   string
}

var cachedDate atomic.Pointer[dateStamp]
