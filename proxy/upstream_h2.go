//lint:file-ignore SA1019 x/net's http2.Transport and ClientConn are deprecated for net/http's, which neither take a connection the caller dialed and handshook (ours: counted, with the cluster's TLS) nor expose a reset's HTTP/2 error code (REFUSED_STREAM decides a retry) on Go 1.26.

package proxy

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http2"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/stats"
)

// h2Upstream is the HTTP/2 connection pool to one host, Envoy's multiplexed pool
// (source/common/http/http2/conn_pool.cc over ConnPoolImplBase, source/common/conn_pool/conn_pool_base.cc):
// a request takes a stream on a connection with room for one — fewer streams open than both the
// configured max_concurrent_streams and the peer's SETTINGS_MAX_CONCURRENT_STREAMS, and, with
// max_requests_per_connection, fewer started than that — else it waits in the pending queue while a
// connection is dialed for it. The circuit breakers keep their HTTP/2 meanings (Envoy's circuit breaking
// overview, docs/root/intro/arch_overview/upstream/circuit_breaking.rst): max_connections bounds the
// connections, max_pending_requests the requests waiting for a stream, max_requests (Request.Attach) the
// streams open. It never sends a request twice.
type h2Upstream struct {
	addr string
	dial func(ctx context.Context, addr string) (net.Conn, error)
	// limits are the cluster's breakers (nil: none); tr makes the connections' codecs.
	limits h1.Limits
	tr     *http2.Transport
	opts   config.UpstreamHTTP
	scheme string
	st     *upH2Stats // nil: not counted (health checks)

	mu         sync.Mutex
	conns      []*upH2Conn
	connecting int
	waiters    []*h2Waiter
	closed     bool
	// draining: connections close once idle (see Drain).
	draining bool
	reaper   *time.Timer
	// reapEvery is the sweep's period (0: 1 s).
	reapEvery time.Duration
	dialCtx   context.Context
	dialStop  context.CancelFunc
}

var _ upstream = (*h2Upstream)(nil)

// upH2Stats are the cluster's stats an HTTP/2 pool keeps, under Envoy's names: upstream_cx_http2_total
// (ClusterTrafficStats), upstream_cx_close_notify (a GOAWAY received), and the codec's http2.rx_reset
// and http2.tx_reset (source/common/http/http2/codec_stats.h, under the cluster's prefix upstream).
type upH2Stats struct {
	cxHTTP2Total, closeNotify, rxReset, txReset *stats.Counter
}

func newUpH2Stats(store *stats.Store, prefix string) *upH2Stats {
	return &upH2Stats{cxHTTP2Total: store.Counter(prefix + "upstream_cx_http2_total"),
		closeNotify: store.Counter(prefix + "upstream_cx_close_notify"),
		rxReset:     store.Counter(prefix + "http2.rx_reset"), txReset: store.Counter(prefix + "http2.tx_reset")}
}

// upH2Conn is one HTTP/2 connection of the pool. Its counts are under the pool's lock.
type upH2Conn struct {
	cc *http2.ClientConn
	// active: streams open; started: streams ever started (max_requests_per_connection).
	active  int
	started uint64
	// dead: the connection takes no new stream (a GOAWAY came, it closed, it reached
	// max_requests_per_connection, or the pool drains); it closes once its streams end.
	dead      bool
	idleSince time.Time
	goaway    bool // upstream_cx_close_notify counted
	closed    bool
	// peerMax is the peer's SETTINGS_MAX_CONCURRENT_STREAMS as last read (0: not known yet), read
	// outside the pool's lock: ClientConn.State waits for the connection's write lock, which a write
	// blocked on a slow peer holds.
	peerMax atomic.Uint32
	// goingAway: the connection is closing but not closed — a GOAWAY came (the pool neither shuts
	// connections down nor marks them single-use).
	goingAway atomic.Bool
}

// refresh reads the peer's stream limit and whether a GOAWAY came; never under the pool's lock.
func (c *upH2Conn) refresh() {
	st := c.cc.State()
	c.peerMax.Store(st.MaxConcurrentStreams)
	if st.Closing && !st.Closed {
		c.goingAway.Store(true)
	}
}

type h2Waiter struct{ ch chan h2Wait }

type h2Wait struct {
	c   *upH2Conn
	err error
}

// newH2Transport is the codec of an HTTP/2 pool: Http2ProtocolOptions' receive windows, no compression
// asked for on the client's behalf, and the peer's stream limit waited for rather than failed (the pool
// keeps below it; a peer lowering it later makes a stream wait, not fail).
func newH2Transport(o config.UpstreamHTTP2Options) *http2.Transport {
	t1 := &http.Transport{HTTP2: &http.HTTP2Config{
		MaxReceiveBufferPerConnection: int(o.InitialConnectionWindowSize),
		MaxReceiveBufferPerStream:     int(o.InitialStreamWindowSize),
	}}
	tr, err := http2.ConfigureTransports(t1)
	if err != nil { // only when t1 was configured for HTTP/2 already, which it was not
		tr = &http2.Transport{}
	}
	tr.DisableCompression = true
	tr.StrictMaxConcurrentStreams = true
	tr.AllowHTTP = true
	return tr
}

// newH2Upstream is the HTTP/2 pool to one host; tls says whether its connections are TLS (the scheme
// sent as :scheme).
func newH2Upstream(addr string, dial func(ctx context.Context, addr string) (net.Conn, error), limits h1.Limits,
	opts config.UpstreamHTTP, tls bool, st *upH2Stats) *h2Upstream {
	p := &h2Upstream{addr: addr, dial: dial, limits: limits, tr: newH2Transport(opts.HTTP2), opts: opts, scheme: "http", st: st}
	if tls {
		p.scheme = "https"
	}
	if p.opts.HTTP2.MaxConcurrentStreams == 0 {
		p.opts.HTTP2.MaxConcurrentStreams = config.DefaultUpstreamHTTP2Options().MaxConcurrentStreams
	}
	return p
}

// capacity is how many more streams c may open now; p.mu held.
func (p *h2Upstream) capacity(c *upH2Conn) int {
	if c.dead || c.closed {
		return 0
	}
	limit := int(p.opts.HTTP2.MaxConcurrentStreams)
	if !c.cc.CanTakeNewRequest() { // strict mode: false only once closing (a GOAWAY) or closed
		// A GOAWAY came, or the connection closed: no new stream (Envoy's pool drains a connection
		// on GOAWAY, CodecClient::onGoAway → ActiveClient's drain).
		c.dead = true
		if !c.goaway && c.goingAway.Load() && p.st != nil {
			c.goaway = true
			p.st.closeNotify.Inc()
		}
		return 0
	}
	peer := int(c.peerMax.Load())
	if peer == 0 {
		peer = 100 // until the peer's SETTINGS: the codec's own assumption
	}
	limit = min(limit, peer)
	if m := uint64(p.opts.MaxRequestsPerConnection); m > 0 {
		if c.started >= m {
			return 0
		}
		limit = min(limit, c.active+int(m-c.started))
	}
	return max(limit-c.active, 0)
}

// take gives c's stream to a request; p.mu held.
func (p *h2Upstream) take(c *upH2Conn) {
	c.active++
	c.started++
	if m := p.opts.MaxRequestsPerConnection; m > 0 && c.started >= uint64(m) {
		c.dead = true // Envoy's ActiveClient drains a connection that reached it (conn_pool_base.cc)
	}
}

// RoundTrip sends the request on a stream of a connection with room for one, or of the first that
// has room for it, and returns the response head. The response body must be closed.
func (p *h2Upstream) RoundTrip(ctx context.Context, req *h1.Request) (*http.Response, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	if req.Abort != nil && req.Abort.Gone() {
		return nil, context.Canceled
	}
	c, err := p.get(ctx, req.Deadline)
	if err != nil {
		return nil, err
	}
	if req.Attach != nil && !req.Attach() {
		p.release(c)
		return nil, h1.ErrOverflow
	}
	s := &upH2Stream{p: p, c: c, detach: req.Detach}
	base := ctx
	if req.Abort != nil {
		base = context.WithoutCancel(ctx) // the aborter ends the exchange; ctx only bounded the wait
	}
	sctx, cancel := context.WithCancelCause(base)
	s.cancel = cancel
	if !req.Deadline.IsZero() {
		var stop context.CancelFunc
		sctx, stop = context.WithDeadline(sctx, req.Deadline)
		s.stopDeadline = stop
	}
	if req.Abort != nil {
		if !req.Abort.Register(s.abort) {
			s.end()
			return nil, context.Canceled
		}
		s.ab = req.Abort
	}
	hreq, err := p.request(sctx, req)
	if err != nil {
		s.end()
		return nil, err
	}
	resp, err := c.cc.RoundTrip(hreq)
	if err != nil {
		err = p.roundTripError(sctx, s, err)
		s.end()
		return nil, err
	}
	s.body = resp.Body
	resp.Body = s
	return resp, nil
}

// errStreamAborted is the cause of a stream the downstream's aborter interrupted.
var errStreamAborted = errors.New("h2: exchange aborted")

// h2ResetError is a stream the upstream reset or whose connection was lost, with Envoy's reset reason
// (Http::Utility::resetReasonToString, source/common/http/utility.cc) for the router's reply and flags.
type h2ResetError struct {
	// reason: "remote refused stream reset", "remote reset" or "connection termination".
	reason string
	// refused: the upstream did not process the stream (REFUSED_STREAM, or a GOAWAY's last-stream-id
	// below it): retriable under refused-stream as well as reset.
	refused bool
	err     error
}

func (e *h2ResetError) Error() string { return "upstream " + e.reason + ": " + e.err.Error() }
func (e *h2ResetError) Unwrap() error { return e.err }

// Errors of golang.org/x/net/http2's ClientConn that it does not export: a stream above a GOAWAY's
// last-stream-id, and a connection that could not take the stream after all.
const (
	h2GoAwayUnprocessed = "http2: Transport received Server's graceful shutdown GOAWAY"
	h2ConnUnusable      = "http2: client conn not usable"
)

// roundTripError classifies a failed round trip as Envoy's codec and pool would: a REFUSED_STREAM
// reset is RemoteRefusedStreamReset and any other RST_STREAM RemoteReset (ConnectionImpl::onStreamClose,
// source/common/http/http2/codec_impl.cc); a stream above a GOAWAY's last-stream-id was never processed,
// which the codec reports as refused too (nghttp2 and oghttp2 close such streams with REFUSED_STREAM);
// a connection lost is ConnectionTermination. The deadline and the aborter are the router's own ends.
func (p *h2Upstream) roundTripError(sctx context.Context, s *upH2Stream, err error) error {
	if cause := context.Cause(sctx); cause != nil && p.st != nil {
		// Ended on our side before the response headers (the downstream went away, a timeout): the
		// codec resets the stream (RST_STREAM CANCEL), as Envoy's resetStream, counted in
		// http2.tx_reset (source/common/http/http2/codec_stats.h).
		p.st.txReset.Inc()
	}
	switch cause := context.Cause(sctx); {
	case cause == errStreamAborted:
		return context.Canceled
	case errors.Is(cause, context.DeadlineExceeded):
		return os.ErrDeadlineExceeded
	case cause != nil:
		return cause
	}
	var se http2.StreamError
	switch {
	case errors.As(err, &se) && se.Code == http2.ErrCodeRefusedStream:
		return &h2ResetError{reason: "remote refused stream reset", refused: true, err: err}
	case errors.As(err, &se):
		if p.st != nil {
			p.st.rxReset.Inc()
		}
		return &h2ResetError{reason: "remote reset", err: err}
	case err.Error() == h2GoAwayUnprocessed:
		p.mu.Lock()
		s.c.dead = true
		if !s.c.goaway && p.st != nil {
			s.c.goaway = true
			p.st.closeNotify.Inc()
		}
		p.mu.Unlock()
		return &h2ResetError{reason: "remote refused stream reset", refused: true, err: err}
	case err.Error() == h2ConnUnusable:
		p.markDead(s.c)
		return &h2ResetError{reason: "remote refused stream reset", refused: true, err: err}
	}
	p.markDead(s.c)
	return &h2ResetError{reason: "connection termination", err: err}
}

func (p *h2Upstream) markDead(c *upH2Conn) {
	p.mu.Lock()
	c.dead = true
	p.mu.Unlock()
}

// request is the HTTP/2 request of req: its end-to-end fields less those the pool leaves out (as the
// HTTP/1.1 pool: hop-by-hop ones, those Connection names, Omit, the ones Extra replaces), with "te:
// trailers" kept — the one TE an HTTP/2 request may carry, which Envoy forwards (gRPC needs it).
func (p *h2Upstream) request(ctx context.Context, req *h1.Request) (*http.Request, error) {
	u := &url.URL{Scheme: p.scheme, Host: req.Host}
	if u.Host == "" {
		u.Host = p.addr
	}
	switch {
	case strings.HasPrefix(req.URI, "/") && !strings.HasPrefix(req.URI, "//"), req.URI == "*":
		u.Opaque = req.URI // sent as :path as is
	default:
		parsed, err := url.ParseRequestURI(req.URI)
		if err != nil {
			return nil, err
		}
		u.Path, u.RawPath, u.RawQuery = parsed.Path, parsed.RawPath, parsed.RawQuery
	}
	hdr := make(http.Header, len(req.Header)+len(req.Extra)+1)
	conn := req.Header["Connection"]
	for k, vs := range req.Header {
		if k == "Te" {
			if h1.HasToken(vs, "trailers") {
				hdr["Te"] = []string{"trailers"}
			}
			continue
		}
		if h1.IsHopByHop(k) || k == "Host" || k == "Content-Length" || req.Omit[k] || len(conn) > 0 && h1.HasToken(conn, k) {
			continue
		}
		if _, ok := req.Extra[k]; ok {
			continue
		}
		hdr[k] = vs
	}
	for k, vs := range req.Extra {
		if !h1.IsHopByHop(k) && k != "Host" && k != "Content-Length" {
			hdr[k] = vs
		}
	}
	if _, ok := hdr["User-Agent"]; !ok {
		hdr["User-Agent"] = nil // no Go default: the downstream sent none
	}
	hreq := &http.Request{Method: req.Method, URL: u, Host: u.Host, Header: hdr, Proto: "HTTP/2.0", ProtoMajor: 2}
	switch {
	case req.BodyRest != nil:
		hreq.Body = io.NopCloser(io.MultiReader(bytes.NewReader(req.Body), req.BodyRest))
		hreq.ContentLength = req.BodyLength
	case len(req.Body) > 0:
		hreq.Body = io.NopCloser(bytes.NewReader(req.Body))
		hreq.ContentLength = int64(len(req.Body))
	default:
		hreq.Body = http.NoBody
	}
	return hreq.WithContext(ctx), nil
}

// upH2Stream is a response body: its close ends the stream (a reset when the body was not read to its
// end) and gives the stream back to its connection.
type upH2Stream struct {
	p            *h2Upstream
	c            *upH2Conn
	body         io.ReadCloser
	detach       func()
	cancel       context.CancelCauseFunc
	stopDeadline context.CancelFunc
	ab           *h1.Aborter
	eof          bool
	failed       bool // a read failed: the stream is over already
	once         sync.Once
}

func (s *upH2Stream) abort() { s.cancel(errStreamAborted) }

func (s *upH2Stream) Read(b []byte) (int, error) {
	n, err := s.body.Read(b)
	if err == io.EOF {
		s.eof = true
	} else if err != nil {
		s.failed = true
		var se http2.StreamError
		if errors.As(err, &se) && s.p.st != nil {
			s.p.st.rxReset.Inc()
		}
	}
	return n, err
}

func (s *upH2Stream) Close() error {
	s.once.Do(func() {
		if !s.eof && !s.failed && s.p.st != nil {
			s.p.st.txReset.Inc() // the codec resets a stream closed before its end (RST_STREAM CANCEL)
		}
		_ = s.body.Close()
		s.end()
	})
	return nil
}

// end releases what the exchange held: its abort, its context, its max_requests slot (Detach) and
// its stream on the connection.
func (s *upH2Stream) end() {
	if s.ab != nil {
		s.ab.Unregister()
	}
	s.cancel(nil)
	if s.stopDeadline != nil {
		s.stopDeadline()
	}
	if s.detach != nil {
		s.detach()
		s.detach = nil
	}
	s.p.release(s.c)
}

// get takes a stream for a request: on the connection with room that has the most streams open
// (Envoy's pool fills its busy connections first), else the request waits in the pending queue
// (max_pending_requests) for the first stream that frees or connection that comes up, while
// connections are dialed for the requests waiting beyond what those being dialed will carry.
func (p *h2Upstream) get(ctx context.Context, deadline time.Time) (*upH2Conn, error) {
	// The connections whose peer's SETTINGS had not come when last looked at: look again (outside
	// the lock; see refresh). Later changes of the limit are seen as streams end.
	// Connections without a stream that closed or took a GOAWAY are closed first: they must not keep
	// a max_connections slot from the connection this request may need.
	p.mu.Lock()
	var unknown []*upH2Conn
	closing := p.pruneLocked()
	for _, c := range p.conns {
		if c.peerMax.Load() == 0 {
			unknown = append(unknown, c)
		}
	}
	p.mu.Unlock()
	for _, c := range closing {
		p.closeConn(c)
	}
	for _, c := range unknown {
		c.refresh()
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errPoolClosed
	}
	if c := p.pickLocked(); c != nil {
		p.take(c)
		p.mu.Unlock()
		return c, nil
	}
	if p.limits != nil && !p.limits.Pending() {
		p.mu.Unlock()
		return nil, h1.ErrOverflow
	}
	w := &h2Waiter{ch: make(chan h2Wait, 1)}
	p.waiters = append(p.waiters, w)
	p.tryConnectLocked()
	p.mu.Unlock()
	if p.limits != nil {
		defer p.limits.Unpending()
	}
	r, handed, err := h1.Await(ctx, deadline, w.ch, &p.mu, &p.waiters, w, func(r h2Wait) {
		if r.c != nil { // handed a stream as it gave up
			p.release(r.c)
		}
	})
	if handed {
		return r.c, r.err
	}
	return nil, err
}

// errPoolClosed fails the requests of a closed pool.
var errPoolClosed = errors.New("h2: pool closed")

// pruneLocked takes out of the pool the connections without a stream that take no more (closed by
// the peer, a GOAWAY, max_requests_per_connection), to be closed; p.mu held.
func (p *h2Upstream) pruneLocked() []*upH2Conn {
	var out []*upH2Conn
	keep := p.conns[:0]
	for _, c := range p.conns {
		p.capacity(c) // notices a close or a GOAWAY
		if c.dead && c.active == 0 {
			out = append(out, c)
			continue
		}
		keep = append(keep, c)
	}
	clear(p.conns[len(keep):])
	p.conns = keep
	return out
}

// pickLocked is the connection with room for a stream and the most streams open; nil if none.
func (p *h2Upstream) pickLocked() *upH2Conn {
	var best *upH2Conn
	for _, c := range p.conns {
		if p.capacity(c) > 0 && (best == nil || c.active > best.active) {
			best = c
		}
	}
	return best
}

// tryConnectLocked dials a connection while the requests waiting outnumber the streams the
// connections being dialed will carry (Envoy's tryCreateNewConnections, with each connecting client's
// capacity its concurrent stream limit), as the breakers allow: at max_connections none is dialed unless
// the pool has no connection at all. p.mu held.
func (p *h2Upstream) tryConnectLocked() {
	per := int(p.opts.HTTP2.MaxConcurrentStreams)
	if m := p.opts.MaxRequestsPerConnection; m > 0 {
		per = min(per, int(m))
	}
	for range 3 {
		if p.closed || len(p.waiters) <= p.connecting*per {
			return
		}
		within := true
		if p.limits != nil && !p.limits.TryConnection() {
			if len(p.conns) > 0 || p.connecting > 0 {
				return
			}
			p.limits.ForceConnection()
			within = false
		}
		if p.dialCtx == nil {
			p.dialCtx, p.dialStop = context.WithCancel(context.Background())
		}
		p.connecting++
		go p.connect(p.dialCtx)
		if !within {
			return
		}
	}
}

// connect dials a connection, starts its codec and gives its streams to the waiting requests. A failed
// dial fails every request waiting (Envoy purges the pending requests on a connect failure).
func (p *h2Upstream) connect(ctx context.Context) {
	nc, err := p.dial(ctx, p.addr)
	var c *upH2Conn
	if err == nil {
		cc, cerr := p.tr.NewClientConn(nc)
		if cerr != nil {
			nc.Close()
			err = &connectError{err: cerr}
		} else {
			c = &upH2Conn{cc: cc, idleSince: time.Now()}
			c.refresh()
		}
	}
	p.mu.Lock()
	p.connecting--
	if err != nil {
		if p.limits != nil {
			p.limits.ConnectionClosed()
		}
		waiting := p.waiters
		p.waiters = nil
		p.mu.Unlock()
		for _, w := range waiting {
			w.ch <- h2Wait{err: err}
		}
		return
	}
	if p.st != nil {
		p.st.cxHTTP2Total.Inc()
	}
	if p.closed {
		p.mu.Unlock()
		p.closeConn(c)
		return
	}
	p.conns = append(p.conns, c)
	p.dispatchLocked()
	if p.draining && c.active == 0 {
		// Dialed after Drain for a request that no longer waits: nothing will release a stream on it,
		// so it closes now, its slot with it (Envoy's DrainAndDelete closes idle clients at once).
		c.dead = true
		idle := p.removeLocked(c)
		p.mu.Unlock()
		for _, c := range idle {
			p.closeConn(c)
		}
		return
	}
	p.armReaperLocked()
	p.mu.Unlock()
}

// dispatchLocked gives the streams with room to the waiting requests, oldest first; p.mu held.
func (p *h2Upstream) dispatchLocked() {
	for len(p.waiters) > 0 {
		c := p.pickLocked()
		if c == nil {
			break
		}
		w := p.waiters[0]
		p.waiters = slices.Delete(p.waiters, 0, 1)
		p.take(c)
		w.ch <- h2Wait{c: c}
	}
	p.tryConnectLocked()
}

// release gives a stream back: to a waiting request, else the connection may idle or, when it takes
// no more streams and none is open, close.
func (p *h2Upstream) release(c *upH2Conn) {
	c.refresh()
	p.mu.Lock()
	c.active--
	if c.active == 0 {
		c.idleSince = time.Now()
	}
	p.dispatchLocked()
	var closing []*upH2Conn
	if c.active == 0 && (c.dead || p.closed || p.draining && len(p.waiters) == 0) {
		closing = p.removeLocked(c)
	}
	p.mu.Unlock()
	for _, c := range closing {
		p.closeConn(c)
	}
}

// removeLocked takes c out of the pool; p.mu held. It returns it, to be closed.
func (p *h2Upstream) removeLocked(c *upH2Conn) []*upH2Conn {
	if i := slices.Index(p.conns, c); i >= 0 {
		p.conns = slices.Delete(p.conns, i, i+1)
		return []*upH2Conn{c}
	}
	return nil
}

// closeConn closes a connection taken out of the pool and gives its slot back; a request still
// waiting may then have a connection dialed for it.
func (p *h2Upstream) closeConn(c *upH2Conn) {
	if c.closed {
		return
	}
	c.closed = true
	_ = c.cc.Close()
	if p.limits != nil {
		p.limits.ConnectionClosed()
	}
	p.mu.Lock()
	p.tryConnectLocked()
	p.mu.Unlock()
}

// armReaperLocked starts the sweep of the pool's connections; p.mu held.
func (p *h2Upstream) armReaperLocked() {
	if p.reaper != nil || p.closed || len(p.conns) == 0 {
		return
	}
	every := p.reapEvery
	if every <= 0 {
		every = time.Second
	}
	p.reaper = time.AfterFunc(every, p.reap)
}

// reap closes the connections without a stream that closed, took a GOAWAY, were idle longer than
// idle_timeout or are idle in a draining pool (Envoy's CodecClient idle timer, upstream_cx_idle_timeout), and sweeps again later
// while some remain.
func (p *h2Upstream) reap() {
	p.mu.Lock()
	all := slices.Clone(p.conns)
	p.mu.Unlock()
	for _, c := range all {
		c.refresh()
	}
	p.mu.Lock()
	p.reaper = nil
	var dead []*upH2Conn
	keep := p.conns[:0]
	for _, c := range p.conns {
		p.capacity(c) // notices a GOAWAY or a close
		idleTooLong := !p.opts.NoIdleTimeout && p.opts.IdleTimeout > 0 && time.Since(c.idleSince) >= p.opts.IdleTimeout
		if c.active == 0 && (c.dead || idleTooLong || p.draining) { // draining: idle ones close
			dead = append(dead, c)
			continue
		}
		keep = append(keep, c)
	}
	clear(p.conns[len(keep):])
	p.conns = keep
	p.armReaperLocked()
	p.mu.Unlock()
	for _, c := range dead {
		p.closeConn(c)
	}
}

// Drain stops new streams on the connections open now (each closes once its streams end) while the
// pool still serves every request, dialing for them as needed; the connections dialed later close
// once idle. Envoy's DrainBehavior::DrainAndDelete of a removed host's pools
// (ConnPoolImplBase::drainConnectionsImpl, source/common/conn_pool/conn_pool_base.cc).
func (p *h2Upstream) Drain() {
	p.mu.Lock()
	p.draining = true
	var idle []*upH2Conn
	for _, c := range slices.Clone(p.conns) {
		c.dead = true
		if c.active == 0 {
			idle = append(idle, p.removeLocked(c)...)
		}
	}
	p.tryConnectLocked()
	p.mu.Unlock()
	for _, c := range idle {
		p.closeConn(c)
	}
}

// Close closes the connections without a stream now and the others as their streams end, stops the
// dials under way and fails the requests waiting for a stream.
func (p *h2Upstream) Close() {
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
	var idle []*upH2Conn
	for _, c := range slices.Clone(p.conns) {
		c.dead = true
		if c.active == 0 {
			idle = append(idle, p.removeLocked(c)...)
		}
	}
	p.mu.Unlock()
	for _, w := range waiting {
		w.ch <- h2Wait{err: errPoolClosed}
	}
	for _, c := range idle {
		p.closeConn(c)
	}
}

// Open is how many connections the pool holds (being dialed, or open).
func (p *h2Upstream) Open() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns) + p.connecting
}

// autoUpstream is auto_config: the protocol is the one ALPN negotiates on the host's first connection
// — HTTP/2 for "h2", else HTTP/1.1 — and the pool of that protocol serves the host from then on,
// that first connection included (as Envoy's HttpConnPoolImplMixed, source/common/http/mixed_conn_pool.cc,
// which picks the codec from the first connection's ALPN).
type autoUpstream struct {
	dial func(ctx context.Context, addr string) (net.Conn, error)
	addr string
	mk   func(proto string, dial func(ctx context.Context, addr string) (net.Conn, error)) upstream

	decide sync.Mutex // held while the first connection is dialed
	chosen atomic.Pointer[upstream]
	mu     sync.Mutex
	first  net.Conn // the first connection, until the chosen pool dials it
	closed bool
}

var _ upstream = (*autoUpstream)(nil)

// negotiated is the ALPN protocol of a TLS connection (the proxy's wrappers looked through), "" if none.
func negotiated(nc net.Conn) string {
	for nc != nil {
		if tc, ok := nc.(interface{ ConnectionState() tls.ConnectionState }); ok {
			return tc.ConnectionState().NegotiatedProtocol
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			return ""
		}
		nc = u.NetConn()
	}
	return ""
}

func (a *autoUpstream) RoundTrip(ctx context.Context, req *h1.Request) (*http.Response, error) {
	if u := a.chosen.Load(); u != nil {
		return (*u).RoundTrip(ctx, req)
	}
	a.decide.Lock()
	if u := a.chosen.Load(); u != nil {
		a.decide.Unlock()
		return (*u).RoundTrip(ctx, req)
	}
	nc, err := a.dial(ctx, a.addr)
	if err != nil {
		a.decide.Unlock()
		return nil, err
	}
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		a.decide.Unlock()
		nc.Close()
		return nil, errPoolClosed
	}
	a.first = nc
	a.mu.Unlock()
	u := a.mk(negotiated(nc), a.dialFirst)
	a.chosen.Store(&u)
	a.decide.Unlock()
	return u.RoundTrip(ctx, req)
}

// dialFirst hands the chosen pool the first connection, then dials.
func (a *autoUpstream) dialFirst(ctx context.Context, addr string) (net.Conn, error) {
	a.mu.Lock()
	nc := a.first
	a.first = nil
	a.mu.Unlock()
	if nc != nil {
		return nc, nil
	}
	return a.dial(ctx, addr)
}

func (a *autoUpstream) Close() {
	a.mu.Lock()
	a.closed = true
	nc := a.first
	a.first = nil
	a.mu.Unlock()
	if nc != nil {
		nc.Close()
	}
	if u := a.chosen.Load(); u != nil {
		(*u).Close()
	}
}

func (a *autoUpstream) Drain() {
	if u := a.chosen.Load(); u != nil {
		(*u).Drain()
	}
}
