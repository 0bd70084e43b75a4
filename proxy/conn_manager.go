package proxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/stats"
)

// defaultBufferLimit is Envoy's default per_connection_buffer_limit_bytes (1 MiB,
// api/envoy/config/listener/v3/listener.proto): how much of a request body is held for a retry.
const defaultBufferLimit = 1 << 20

// connManager is one listener's HTTP connection manager (Envoy's ConnectionManagerImpl,
// source/common/http/conn_manager_impl.h): it takes each downstream request, counts it, finds its
// virtual host and route, reads its body under the request_timeout and answers local replies; the
// router (router.go) forwards what it routed.
type connManager struct {
	routes config.RouteConfig
	// requestTimeout is the HCM request_timeout: how long the whole downstream request may take to arrive.
	requestTimeout time.Duration
	// bufferLimit is the listener's per_connection_buffer_limit_bytes: the most of a request body held.
	bufferLimit uint32
	st          hcmStats
	clk         clock.Clock
	router      *router
}

var _ http.Handler = (*connManager)(nil)

type hcmStats struct {
	rqTotal, noRoute, rqTimeout, cxTotal *stats.Counter
	rqClass                              classCounters // downstream_rq_2xx … _5xx
	// rqMaxDurationReached: a request ended by its route's max_stream_duration.
	rqMaxDurationReached *stats.Counter
	// cxProtocolError: a downstream connection ended by a protocol error (a request head or body
	// that cannot be read); cxDestroyRemoteActiveRq: one the client closed with a request in progress;
	// cxIdleTimeout: one closed by the HCM idle_timeout; cxMaxRequestsReached: one that reached
	// max_requests_per_connection.
	cxProtocolError, cxDestroyRemoteActiveRq, cxIdleTimeout, cxMaxRequestsReached *stats.Counter
	rqActive, cxActive                                                            *stats.Gauge
	rqTime                                                                        *stats.Histogram
}

func newHCMStats(store *stats.Store, prefix string) hcmStats {
	p := "http." + prefix + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	return hcmStats{
		rqTotal: c("downstream_rq_total"), noRoute: c("no_route"), rqTimeout: c("downstream_rq_timeout"),
		rqClass: newClassCounters(c, "downstream_rq"),
		cxTotal: c("downstream_cx_total"), rqActive: store.Gauge(p + "downstream_rq_active"), cxActive: store.Gauge(p + "downstream_cx_active"),
		cxProtocolError: c("downstream_cx_protocol_error"), cxDestroyRemoteActiveRq: c("downstream_cx_destroy_remote_active_rq"),
		cxIdleTimeout: c("downstream_cx_idle_timeout"), cxMaxRequestsReached: c("downstream_cx_max_requests_reached"),
		rqTime:               store.Histogram(p + "downstream_rq_time"),
		rqMaxDurationReached: c("downstream_rq_max_duration_reached"),
	}
}

func (s *hcmStats) status(code int) { s.rqClass.inc(code) }

func newConnManager(l config.Listener, store *stats.Store, clk clock.Clock, rt *router) *connManager {
	limit := l.BufferLimit
	if limit == 0 {
		limit = defaultBufferLimit
	}
	return &connManager{routes: l.Routes, requestTimeout: l.RequestTimeout, bufferLimit: limit,
		st: newHCMStats(store, l.StatPrefix), clk: clk, router: rt}
}

// match finds the virtual host for the request's authority and the first route that matches its path.
func (cm *connManager) match(r *http.Request) (*config.VirtualHost, *config.Route) {
	vh := matchVirtualHost(cm.routes.VirtualHosts, r.Host)
	if vh == nil {
		return nil, nil
	}
	var query url.Values // parsed once, by the first route that asks
	for i := range vh.Routes {
		if routeMatches(&vh.Routes[i].Match, r, &query) {
			return vh, &vh.Routes[i]
		}
	}
	return vh, nil
}

// routeMatches applies a route's match to the request, as Envoy's RouteEntryImplBase::matchRoute and
// its Prefix/Path/Regex/PathSeparatedPrefix route entries do (source/common/router/config_impl.cc): the
// path specifier on the path without its query string, then every header matcher, then every query
// parameter matcher. The first route of the virtual host that matches wins.
func routeMatches(m *config.RouteMatch, r *http.Request, query *url.Values) bool {
	path := r.URL.Path
	switch {
	case m.IsPath:
		if !(path == m.Path || m.IgnoreCase && strings.EqualFold(path, m.Path)) {
			return false
		}
	case m.Regex != nil: // case_sensitive does not apply to safe_regex
		if !m.Regex.MatchString(path) {
			return false
		}
	default:
		n := len(m.Prefix)
		if len(path) < n || !(path[:n] == m.Prefix || m.IgnoreCase && strings.EqualFold(path[:n], m.Prefix)) {
			return false
		}
		// path_separated_prefix: the prefix is the whole path or is followed by "/".
		if m.Separated && len(path) > n && path[n] != '/' {
			return false
		}
	}
	for _, h := range m.Headers {
		if !headerMatches(h, r.Header) {
			return false
		}
	}
	if len(m.QueryParameters) > 0 && *query == nil {
		*query = r.URL.Query()
	}
	for _, q := range m.QueryParameters {
		if !queryParameterMatches(q, *query) {
			return false
		}
	}
	return true
}

// matchVirtualHost follows Envoy's order (VirtualHost.domains, route_components.proto;
// RouteMatcher::findVirtualHost, source/common/router/config_impl.cc): exact domain, then the longest
// suffix wildcard ("*.example.com"), then the longest prefix wildcard ("example.*"), then "*"; a wildcard
// never matches the empty string. The port is ignored unless a domain names it.
func matchVirtualHost(vhosts []config.VirtualHost, authority string) *config.VirtualHost {
	host := strings.ToLower(authority)
	hostNoPort := host
	if i := strings.LastIndexByte(host, ':'); i >= 0 && !strings.HasSuffix(host, "]") {
		hostNoPort = host[:i]
	}
	var best *config.VirtualHost
	bestRank, bestLen := 0, -1
	for i := range vhosts {
		for _, d := range vhosts[i].Domains {
			d = strings.ToLower(d)
			rank, n := 0, 0
			switch {
			case d == host || d == hostNoPort:
				rank, n = 4, len(d)
			case strings.HasPrefix(d, "*") && d != "*" && (wildcardSuffix(hostNoPort, d[1:]) || wildcardSuffix(host, d[1:])):
				rank, n = 3, len(d)
			case strings.HasSuffix(d, "*") && d != "*" && len(host) > len(d)-1 && strings.HasPrefix(host, d[:len(d)-1]):
				rank, n = 2, len(d)
			case d == "*":
				rank, n = 1, 0
			}
			if rank > bestRank || rank == bestRank && rank > 0 && n > bestLen {
				best, bestRank, bestLen = &vhosts[i], rank, n
			}
		}
	}
	return best
}

// wildcardSuffix reports whether host ends in suffix after at least one character of its own.
func wildcardSuffix(host, suffix string) bool {
	return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
}

func (cm *connManager) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	began := cm.clk.Now()
	cm.st.rqTotal.Inc()
	cm.st.rqActive.Inc()
	defer func() {
		cm.st.rqActive.Dec()
		cm.st.rqTime.Record(cm.clk.Since(began))
	}()

	vh, route := cm.match(r)
	if route == nil {
		cm.st.noRoute.Inc()
		cm.localReply(w, nil, http.StatusNotFound, "")
		return
	}
	if route.DirectResponse != nil || route.Redirect != nil {
		cm.respondDirectly(w, r, vh, route)
		return
	}
	// The route's max_stream_duration runs from the stream's start (ActiveStream::refreshDurationTimeout,
	// source/common/http/conn_manager_impl.cc).
	var stream streamLimit
	if d, ok, grpcTimeout := streamDuration(&route.Action, r); ok {
		stream = streamLimit{end: began.Add(d), grpcTimeout: grpcTimeout}
	}
	var body requestBody
	if r.Body != http.NoBody { // net/http gives NoBody to a request without one: nothing to read or time
		var ok bool
		if body, ok = cm.readBody(w, r, cm.retryBufferLimit(vh, route), stream.end); !ok {
			return
		}
	}
	cm.router.forward(w, r, vh, route, body, stream)
}

// route is the route a request takes (nil: none), for the HTTP filters before the router.
func (cm *connManager) route(r *http.Request) *config.Route {
	_, route := cm.match(r)
	return route
}

// retryBufferLimit is how much of a request body on route is held for a retry: the listener's
// per_connection_buffer_limit_bytes, or the route's (else its virtual host's)
// per_request_buffer_limit_bytes when smaller (Envoy: RouteEntryImpl::retryShadowBufferLimit and
// Router::Filter::setDecoderFilterCallbacks, source/common/router/config_impl.cc and router.cc).
func (cm *connManager) retryBufferLimit(vh *config.VirtualHost, route *config.Route) int {
	limit := cm.bufferLimit
	per := route.PerRequestBufferLimit
	if per == nil {
		per = vh.PerRequestBufferLimit
	}
	if per != nil && *per < limit {
		limit = *per
	}
	return int(limit)
}

// requestBody is a downstream request body on its way upstream: held whole when it fits the buffer
// limit, so that a retry can send it again; else its first limit bytes are held and the rest streams
// upstream as it arrives, and the request cannot be retried (see forward.run).
type requestBody struct {
	buf  []byte    // the whole body, or its first part when rest is set
	rest *bodyRest // the body beyond the limit; nil: buf is the whole body
	// length is the whole body's length when rest is set: its Content-Length, or -1 (chunked).
	length int64
}

// bodyRest is the part of a request body beyond the buffer limit, read from the downstream as the
// upstream request is written. It keeps the downstream's read error, which the connection manager
// answers (see connManager.bodyError), and calls done at the body's end.
type bodyRest struct {
	pending []byte // read past the limit to learn that there was more
	r       io.Reader
	err     error
	done    func()
	eof     bool // the whole body was read
}

func (b *bodyRest) Read(p []byte) (int, error) {
	if len(b.pending) > 0 {
		n := copy(p, b.pending)
		b.pending = b.pending[n:]
		return n, nil
	}
	n, err := b.r.Read(p)
	switch {
	case err == io.EOF:
		b.eof = true
		if b.done != nil {
			b.done()
			b.done = nil
		}
	case err != nil:
		b.err = err
	}
	return n, err
}

// readBody reads the downstream request body under the HCM request_timeout, up to limit bytes; false
// when the request was answered (400, 408, 431) or the downstream went away. A body within the limit
// is read whole before the first attempt, so that an attempt never starts with a body that cannot be
// read and a retry sends the same bytes. A larger one is not an error (Envoy streams bodies of any
// size through the router): its rest streams upstream, still under the request_timeout. The buffer
// grows with what arrives, never from the Content-Length a client declares.
func (cm *connManager) readBody(w http.ResponseWriter, r *http.Request, limit int, streamEnd time.Time) (requestBody, bool) {
	rc := http.NewResponseController(w)
	reqDeadline := time.Now().Add(cm.requestTimeout)
	if cm.requestTimeout > 0 { // a socket deadline: the real clock's
		_ = rc.SetReadDeadline(reqDeadline)
	}
	// The route's max_stream_duration bounds the buffered part too, when it ends first.
	byDuration := !streamEnd.IsZero() && (cm.requestTimeout == 0 || streamEnd.Sub(cm.clk.Now()) < cm.requestTimeout)
	if byDuration {
		_ = rc.SetReadDeadline(time.Now().Add(streamEnd.Sub(cm.clk.Now())))
	}
	clearDeadline := func() {
		if cm.requestTimeout > 0 || byDuration {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}
	buf, pending, err := bufferBody(r.Body, limit, r.ContentLength)
	var ne net.Error
	if err != nil && byDuration && errors.As(err, &ne) && ne.Timeout() {
		cm.streamDurationReached(w, false)
		return requestBody{}, false
	}
	if err != nil {
		cm.bodyError(w, err)
		return requestBody{}, false
	}
	if pending != nil && byDuration {
		// The rest streams upstream under the router's deadline, which the stream's end bounds; the
		// downstream reads keep only the request_timeout.
		_ = rc.SetReadDeadline(time.Time{})
		if cm.requestTimeout > 0 {
			_ = rc.SetReadDeadline(reqDeadline)
		}
	}
	if pending == nil {
		clearDeadline()
		return requestBody{buf: buf}, true
	}
	return requestBody{buf: buf, length: r.ContentLength,
		rest: &bodyRest{pending: pending, r: r.Body, done: clearDeadline}}, true
}

// Sizes of a request body's buffer: the first allocation, at most, then doubling up to the limit.
const (
	firstBodyBuffer = 16 << 10
	minBodyBuffer   = 512
)

// bufferBody reads r up to limit bytes. pending is nil when buf holds the whole body; else r has more,
// and pending holds what was read past buf to find out (the rest is still in r). hint is the declared
// length (-1: unknown): it only keeps the first allocation small for a small body.
func bufferBody(r io.Reader, limit int, hint int64) (buf, pending []byte, err error) {
	size := min(limit, firstBodyBuffer)
	if hint >= 0 && hint < int64(size) {
		size = int(hint)
	}
	buf = make([]byte, 0, max(size, min(limit, minBodyBuffer)))
	for len(buf) < limit {
		if len(buf) == cap(buf) {
			buf = slices.Grow(buf, min(2*cap(buf), limit)-len(buf))
		}
		n, err := r.Read(buf[len(buf):min(cap(buf), limit)])
		buf = buf[:len(buf)+n]
		if err == io.EOF {
			return buf, nil, nil
		}
		if err != nil {
			return nil, nil, err
		}
	}
	var probe [1]byte
	for {
		n, err := r.Read(probe[:])
		switch {
		case n > 0:
			return buf, []byte{probe[0]}, nil
		case err == io.EOF:
			return buf, nil, nil
		case err != nil:
			return nil, nil, err
		}
	}
}

// bodyError answers a request whose body could not be read from the downstream.
func (cm *connManager) bodyError(w http.ResponseWriter, err error) {
	var (
		fe *h1.FramingError
		ne net.Error
	)
	switch {
	case errors.As(err, &fe):
		// A body that breaks its framing is a codec protocol error: Envoy's HTTP/1 codec answers
		// it itself, 400 "Bad Request" (431 for trailers over the limit), and the connection
		// manager closes the connection (ServerConnectionImpl::sendProtocolError,
		// source/common/http/http1/codec_impl.cc; ConnectionManagerImpl::handleCodecError,
		// source/common/http/conn_manager_impl.cc: response flag DPE, downstream_cx_protocol_error).
		cm.st.cxProtocolError.Inc()
		cm.localReply(w, connectionClose, fe.Status, http.StatusText(fe.Status))
	case errors.As(err, &ne) && ne.Timeout():
		cm.st.rqTimeout.Inc()
		cm.localReply(w, nil, http.StatusRequestTimeout, "request timeout")
	default:
		cm.downstreamGone() // the stream ended or was reset mid-body: nobody to answer
	}
}

// streamDurationReached ends a request at its route's max_stream_duration, as Envoy's
// ActiveStream::onStreamMaxDurationReached (source/common/http/conn_manager_impl.cc):
// downstream_rq_max_duration_reached, and a local reply "downstream duration timeout", 504 once the
// whole request was received and 408 before (Utility::maybeRequestTimeoutCode). Once the response has
// started, the stream is reset instead (the caller's panic).
func (cm *connManager) streamDurationReached(w http.ResponseWriter, complete bool) {
	cm.st.rqMaxDurationReached.Inc()
	if w == nil { // the response has started: the caller resets the stream
		return
	}
	code := http.StatusRequestTimeout
	if complete {
		code = http.StatusGatewayTimeout
	}
	cm.localReply(w, nil, code, "downstream duration timeout")
}

// connectionClose is the header of a local reply after which the downstream connection closes.
var connectionClose = http.Header{"Connection": {"close"}}

// downstreamGone counts a request whose client closed its connection before the response: Envoy counts
// downstream_cx_destroy_remote_active_rq, sends nothing and counts no status class
// (ConnectionManagerImpl::onEvent, source/common/http/conn_manager_impl.cc).
func (cm *connManager) downstreamGone() { cm.st.cxDestroyRemoteActiveRq.Inc() }

func (cm *connManager) localReply(w http.ResponseWriter, hdr http.Header, code int, body string) {
	for k, v := range hdr {
		w.Header()[k] = v
	}
	if body != "" {
		w.Header().Set(hdrContentType, "text/plain")
	}
	w.Header().Set(hdrContentLength, strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
	cm.st.status(code)
}

// countStatus counts a response's status class in the downstream stats.
func (cm *connManager) countStatus(code int) { cm.st.status(code) }

// rejected counts a request that the listener's server answered itself, its head unreadable: Envoy's
// codec makes a stream of it too, so it counts in downstream_rq_total and its status class, and but for
// a timeout it is a protocol error (ServerConnectionImpl::sendProtocolError,
// source/common/http/http1/codec_impl.cc; ConnectionManagerImpl::handleCodecError).
func (cm *connManager) rejected(code int) {
	cm.st.rqTotal.Inc()
	cm.st.status(code)
	if code != http.StatusRequestTimeout {
		cm.st.cxProtocolError.Inc()
	}
}

// connState keeps the downstream connection stats.
func (cm *connManager) connState(_ net.Conn, state http.ConnState) {
	switch state {
	case http.StateNew:
		cm.st.cxTotal.Inc()
		cm.st.cxActive.Inc()
	case http.StateClosed, http.StateHijacked:
		cm.st.cxActive.Dec()
	}
}

// respondDirectly answers a direct_response or redirect route itself, as Envoy's router does with a
// local reply (Filter::decodeHeaders, source/common/router/router.cc): the route's response headers
// mutations apply, after the Location of a redirect.
func (cm *connManager) respondDirectly(w http.ResponseWriter, r *http.Request, vh *config.VirtualHost, route *config.Route) {
	if d := route.DirectResponse; d != nil {
		mutateHeaders(w.Header(), route.ResponseHeaders, vh.ResponseHeaders, cm.routes.ResponseHeaders)
		cm.localReply(w, nil, d.Status, d.Body)
		return
	}
	w.Header().Set("Location", redirectLocation(r, route))
	mutateHeaders(w.Header(), route.ResponseHeaders, vh.ResponseHeaders, cm.routes.ResponseHeaders)
	cm.localReply(w, nil, route.Redirect.Code, "")
}

// redirectLocation is a redirect's Location, as Envoy's RouteEntryImplBase::newUri
// (source/common/router/config_impl.cc): the request's URL with the scheme, the host, the path
// (path_redirect, whose own query replaces the request's) or the matched prefix (prefix_rewrite)
// replaced, and its query dropped under strip_query. When the scheme changes, a port that is the
// default of the other scheme (":80" to https, ":443" to http) is dropped from the request's host.
func redirectLocation(r *http.Request, route *config.Route) string {
	rd := route.Redirect
	uri := r.RequestURI
	if len(uri) == 0 || uri[0] != '/' {
		uri = r.URL.RequestURI()
	}
	path, query := uri, ""
	if i := strings.IndexByte(uri, '?'); i >= 0 {
		path, query = uri[:i], uri[i:]
	}
	if rd.StripQuery {
		query = ""
	}
	switch m := &route.Match; {
	case rd.Path != "":
		path = rd.Path
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path, query = path[:i], path[i:]
		}
	case rd.PrefixRewrite != "":
		n := len(path)
		if !m.IsPath && m.Regex == nil {
			n = min(len(m.Prefix), n)
		}
		path = rd.PrefixRewrite + path[n:]
	}
	scheme, host := "http", r.Host
	if rd.Scheme != "" && !strings.EqualFold(rd.Scheme, scheme) {
		scheme = strings.ToLower(rd.Scheme)
		if scheme == "https" {
			host = strings.TrimSuffix(host, ":80")
		} else if scheme == "http" {
			host = strings.TrimSuffix(host, ":443")
		}
	}
	if rd.Host != "" {
		host = rd.Host
	}
	return scheme + "://" + host + path + query
}
