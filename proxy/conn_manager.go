package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	// maxStreamDuration is the HCM common_http_protocol_options.max_stream_duration (0: none): a
	// route's max_stream_duration.max_stream_duration overrides it.
	maxStreamDuration time.Duration
	// streamIdleTimeout is the HCM stream_idle_timeout (0: none): a route's idle_timeout overrides it.
	streamIdleTimeout time.Duration
	// bufferLimit is the listener's per_connection_buffer_limit_bytes: the most of a request body held.
	bufferLimit uint32
	// stripPort is the HCM strip_port_mode; localPort the listener's port (strip_matching_host_port).
	stripPort config.StripPort
	localPort int
	st        hcmStats
	clk       clock.Clock
	router    *router
	// countHeaderTimeouts: the listener's server answers a head that timed out by the HCM
	// request_headers_timeout, counted in downstream_rq_header_timeout.
	countHeaderTimeouts bool
	// localReplies is the HCM local_reply_config; nil: none.
	localReplies *localReplies
}

var _ http.Handler = (*connManager)(nil)

type hcmStats struct {
	rqTotal, noRoute, rqTimeout, cxTotal, rqHeaderTimeout *stats.Counter
	noCluster                                             *stats.Counter // the router's no_cluster: a route's cluster does not exist
	rqClass                                               classCounters  // downstream_rq_2xx … _5xx
	// rqMaxDurationReached: a request ended by its max_stream_duration; rqIdleTimeout: one ended by its
	// stream idle timeout.
	rqMaxDurationReached, rqIdleTimeout *stats.Counter
	// cxProtocolError: a downstream connection ended by a protocol error (a request head or body
	// that cannot be read); cxDestroyRemoteActiveRq: one the client closed with a request in progress;
	// cxIdleTimeout: one closed by the HCM idle_timeout; cxMaxRequestsReached: one that reached
	// max_requests_per_connection.
	cxProtocolError, cxDestroyRemoteActiveRq, cxIdleTimeout, cxMaxRequestsReached *stats.Counter
	// cxDrainClose: a response that said Connection: close because the listener drains.
	cxDrainClose *stats.Counter
	// rqRxReset: a request stream reset before its response ended (downstream_rq_rx_reset).
	rqRxReset          *stats.Counter
	rqActive, cxActive *stats.Gauge
	rqTime             *stats.Histogram
}

func newHCMStats(store *stats.Store, prefix string) hcmStats {
	p := "http." + prefix + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	return hcmStats{
		rqTotal: c("downstream_rq_total"), noRoute: c("no_route"), rqTimeout: c("downstream_rq_timeout"), noCluster: c("no_cluster"),
		rqHeaderTimeout: c("downstream_rq_header_timeout"),
		rqClass:         newClassCounters(c, "downstream_rq"),
		cxTotal:         c("downstream_cx_total"), rqActive: store.Gauge(p + "downstream_rq_active"), cxActive: store.Gauge(p + "downstream_cx_active"),
		cxProtocolError: c("downstream_cx_protocol_error"), cxDestroyRemoteActiveRq: c("downstream_cx_destroy_remote_active_rq"),
		cxIdleTimeout: c("downstream_cx_idle_timeout"), cxMaxRequestsReached: c("downstream_cx_max_requests_reached"),
		cxDrainClose:         c("downstream_cx_drain_close"),
		rqRxReset:            c("downstream_rq_rx_reset"),
		rqTime:               store.Histogram(p + "downstream_rq_time"),
		rqMaxDurationReached: c("downstream_rq_max_duration_reached"),
		rqIdleTimeout:        c("downstream_rq_idle_timeout"),
	}
}

func (s *hcmStats) status(code int) { s.rqClass.inc(code) }

func newConnManager(l config.Listener, store *stats.Store, clk clock.Clock, rt *router) *connManager {
	limit := l.BufferLimit
	if limit == 0 {
		limit = defaultBufferLimit
	}
	return &connManager{routes: l.Routes, requestTimeout: l.RequestTimeout, maxStreamDuration: l.MaxStreamDuration,
		streamIdleTimeout: l.StreamIdleTimeout,
		bufferLimit:       limit, stripPort: l.StripPort,
		st: newHCMStats(store, l.StatPrefix), clk: clk, router: rt, localReplies: newLocalReplies(l.LocalReply)}
}

// routed is a request's route and the cluster it goes to, decided once per request before the HTTP
// filters run, as Envoy's connection manager caches its route (ActiveStream::refreshCachedRoute,
// source/common/http/conn_manager_impl.cc), the cluster of a weighted_clusters or cluster_header route
// chosen with it (RouteEntryImplBase::clusterEntry, source/common/router/config_impl.cc): the fault
// filter's upstream_cluster, the router and the stats all see the same cluster.
type routed struct {
	vh    *config.VirtualHost // nil: no virtual host
	route *config.Route       // nil: no route
	// cluster is the route's cluster name: its cluster, the weighted pick, or the cluster_header's
	// first value ("" when absent). "" for a direct_response or redirect route.
	cluster string
}

// routedKey keys a request's routed in its context, once a filter before the connection manager has
// asked for it.
type routedKey struct{}

// route is the request's routed, for the HTTP filters before the router: the returned request carries
// it, so that the connection manager does not decide it again (a weighted draw could differ).
func (cm *connManager) route(r *http.Request) (*http.Request, routed) {
	if rt, ok := r.Context().Value(routedKey{}).(*routed); ok {
		return r, *rt
	}
	sel := new(routed)
	r = r.WithContext(context.WithValue(r.Context(), routedKey{}, sel)) // a copy: its Host may be stripped
	cm.stripHostPort(r)
	*sel = cm.selectRoute(r)
	return r, *sel
}

// stripHostPort applies the HCM's strip_port_mode to the request's Host, before routing, as Envoy's
// ActiveStream::decodeHeaders with HeaderUtility::stripPortFromHost (source/common/http/
// conn_manager_impl.cc, header_utility.cc): strip_any_host_port removes any numeric port,
// strip_matching_host_port only the listener's own. The upstream gets the stripped Host too.
func (cm *connManager) stripHostPort(r *http.Request) {
	if cm.stripPort == config.StripNoPort {
		return
	}
	i := hostPortStart(r.Host)
	if i < 0 {
		return
	}
	port, err := strconv.ParseUint(r.Host[i+1:], 10, 32)
	if err != nil || cm.stripPort == config.StripMatchingPort && port != uint64(cm.localPort) {
		return
	}
	r.Host = r.Host[:i]
}

// selectRoute matches the request's route and chooses its cluster.
func (cm *connManager) selectRoute(r *http.Request) routed {
	vh, route := cm.match(r)
	rt := routed{vh: vh, route: route}
	if route == nil || route.DirectResponse != nil || route.Redirect != nil {
		return rt
	}
	switch a := &route.Action; {
	case a.WeightedClusters != nil:
		var rng rand.PCG
		cm.router.seeds.request(&rng, headerValue(r.Header, hdrRequestID), saltRoute)
		rt.cluster = PickWeightedCluster(a.WeightedClusters, r.Header, rng.Uint64())
	case a.ClusterHeader != "":
		rt.cluster = headerValue(r.Header, a.ClusterHeader) // only the first value, as Envoy takes it
	default:
		rt.cluster = a.Cluster
	}
	return rt
}

// match finds the virtual host for the request's authority and the first route that matches its path.
func (cm *connManager) match(r *http.Request) (*config.VirtualHost, *config.Route) {
	vh := MatchVirtualHost(cm.routes.VirtualHosts, r.Host, cm.routes.IgnorePortInHostMatching)
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
	if !PathMatches(m, r.URL.Path) {
		return false
	}
	// Header matchers see the pseudo-headers too (:method, :path, :authority, :scheme), as Envoy matches
	// them against the request header map (Http::HeaderUtility::matchHeaders, header_utility.cc).
	if len(m.Headers) > 0 && !requestHeadersMatch(m.Headers, r) {
		return false
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

// PathMatches applies a route match's path specifier to a path without its query string: exact path,
// safe_regex (a full match; case_sensitive does not apply to it), else prefix, path-separated when asked
// (Envoy's PathRouteEntryImpl, RegexRouteEntryImpl, PrefixRouteEntryImpl and
// PathSeparatedPrefixRouteEntryImpl, source/common/router/config_impl.cc). The simulator's router
// (mesh/sim) matches with it too.
func PathMatches(m *config.RouteMatch, path string) bool {
	switch {
	case m.IsPath:
		return path == m.Path || m.IgnoreCase && strings.EqualFold(path, m.Path)
	case m.Regex != nil:
		return m.Regex.MatchString(path)
	}
	n := len(m.Prefix)
	if len(path) < n || !(path[:n] == m.Prefix || m.IgnoreCase && strings.EqualFold(path[:n], m.Prefix)) {
		return false
	}
	// path_separated_prefix: the prefix is the whole path or is followed by "/".
	return !m.Separated || len(path) == n || path[n] == '/'
}

// MatchVirtualHost follows Envoy's order (VirtualHost.domains, route_components.proto;
// RouteMatcher::findVirtualHost, source/common/router/config_impl.cc): exact domain, then the longest
// suffix wildcard ("*.example.com"), then the longest prefix wildcard ("example.*"), then "*"; a wildcard
// never matches the empty string. The authority is matched with its port, unless the route
// configuration's ignore_port_in_host_matching (the HCM's strip_*_host_port strip it before).
func MatchVirtualHost(vhosts []config.VirtualHost, authority string, ignorePort bool) *config.VirtualHost {
	host := strings.ToLower(authority)
	if i := hostPortStart(host); ignorePort && i >= 0 {
		host = host[:i]
	}
	var best *config.VirtualHost
	bestRank, bestLen := 0, -1
	for i := range vhosts {
		for _, d := range vhosts[i].Domains {
			d = strings.ToLower(d)
			rank, n := 0, 0
			switch {
			case d == host:
				rank, n = 4, len(d)
			case strings.HasPrefix(d, "*") && d != "*" && wildcardSuffix(host, d[1:]):
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

	sel, ok := r.Context().Value(routedKey{}).(*routed)
	if !ok {
		cm.stripHostPort(r)
		rt := cm.selectRoute(r)
		sel = &rt
	}
	vh, route := sel.vh, sel.route
	si := infoOf(r)
	if si != nil {
		si.route = route
	}
	if route == nil {
		cm.st.noRoute.Inc()
		si.fail(flagNoRouteFound, "route_not_found") // NR (ActiveStream's router: sendNoRouteResponse)
		cm.localReply(w, r, nil, http.StatusNotFound, "")
		return
	}
	if route.DirectResponse != nil || route.Redirect != nil {
		cm.respondDirectly(w, r, vh, route)
		return
	}
	cl := cm.router.clusters[sel.cluster]
	if cl == nil {
		cm.clusterNotFound(w, r, vh, route)
		return
	}
	// The route's max_stream_duration, else the HCM's, runs from the stream's start
	// (ActiveStream::refreshDurationTimeout, source/common/http/conn_manager_impl.cc).
	var stream streamLimit
	switch d, ok, grpcTimeout, drop := streamDuration(&route.Action, cm.maxStreamDuration, r); {
	case ok:
		stream = streamLimit{end: began.Add(d), grpcTimeout: grpcTimeout}
	case drop:
		r.Header.Del(hdrGrpcTimeout)
	}
	// The stream idle timeout, the route's or the HCM's, runs from the stream's start too
	// (ActiveStream's stream_idle_timer_, refreshIdleTimeout).
	if d := streamIdleTimeout(&route.Action, cm.streamIdleTimeout); d > 0 && !idleTimerMoot(d, r, route, stream.end.Sub(began)) {
		ctx, cancel := context.WithCancelCause(r.Context())
		defer cancel(nil)
		r = r.WithContext(ctx)
		stream.idle = newStreamIdle(cm.clk, d, cancel, h1.AborterFrom(ctx))
		defer stream.idle.stop()
	}
	var body requestBody
	if r.Body != http.NoBody { // net/http gives NoBody to a request without one: nothing to read or time
		var ok bool
		limit := cm.retryBufferLimit(vh, route)
		if isGrpcRequest(r) {
			body = cm.streamBody(w, r, limit, stream.idle) // streamed from the first attempt on (replay_body.go)
		} else if body, ok = cm.readBody(w, r, limit, stream.end, stream.idle); !ok {
			return
		}
	}
	if body.rest != nil {
		defer body.rest.stop() // an upstream's body writer may still be reading it
	}
	cm.router.forward(w, r, vh, route, cl, body, stream)
}

// idleTimerMoot reports whether a stream idle timeout of d cannot end the request before its route
// timeout or max_stream_duration (left: the time to the latter's end; ≤ 0: none) does, so that the
// request needs no timer and context of its own for it. That holds for a request without a body whose
// bound is shorter than d: the stream is idle at most from its start, and the route timeout runs from
// the same start (the request is complete once its head is) to the end of the upstream response
// (RouteAction.timeout, route_components.proto), so it always fires first. Envoy's
// default stream_idle_timeout (5 minutes) and route timeout (15 s) are such a pair: most requests of a
// proxy pay no timer for it.
func idleTimerMoot(d time.Duration, r *http.Request, route *config.Route, left time.Duration) bool {
	if r.Body != http.NoBody {
		return false // reading a body is activity the timer watches, and the route timeout starts after it
	}
	bound := routeTimeout(route, r.Header)
	if left > 0 && (bound <= 0 || left < bound) {
		bound = left
	}
	return bound > 0 && bound < d
}

// clusterNotFound answers a request whose route names a cluster the proxy does not have (a
// cluster_header's value, or no such header), as Envoy's router does before any upstream attempt
// (Filter::decodeHeaders, source/common/router/router.cc): no_cluster, and a local reply of the route's
// cluster_not_found_response_code (default 503) without a body, with the route's response headers.
func (cm *connManager) clusterNotFound(w http.ResponseWriter, r *http.Request, vh *config.VirtualHost, route *config.Route) {
	cm.st.noCluster.Inc()
	infoOf(r).fail(flagNoClusterFound, "cluster_not_found")
	code := route.Action.ClusterNotFoundCode
	if code == 0 {
		code = http.StatusServiceUnavailable
	}
	mutateHeaders(w.Header(), cm.replyFormat(w, r, route, code), route.ResponseHeaders, vh.ResponseHeaders, cm.routes.ResponseHeaders)
	cm.localReply(w, r, nil, code, "")
}

// retryBufferLimit is how much of a request body on route is held for a retry: the listener's
// per_connection_buffer_limit_bytes, or the route's (else its virtual host's)
// per_request_buffer_limit_bytes when smaller (Envoy: RouteEntryImpl::retryShadowBufferLimit and
// Router::Filter::setDecoderFilterCallbacks, source/common/router/config_impl.cc and router.cc).
func (cm *connManager) retryBufferLimit(vh *config.VirtualHost, route *config.Route) int {
	return RetryBufferLimit(cm.bufferLimit, vh, route)
}

// RetryBufferLimit is how much of a request body on route is held for a retry, the listener's limit
// being listener (see connManager.retryBufferLimit); the simulator shares it.
func RetryBufferLimit(listener uint32, vh *config.VirtualHost, route *config.Route) int {
	limit := listener
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
	// replay, for a body streamed from the first attempt on (a gRPC request's), reads rest for each
	// attempt and keeps what a retry sends again; nil: buf and rest are the body.
	replay *replayBody
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
	// count, when set, adds the bytes read from the downstream (the access logs' BYTES_RECEIVED).
	count *atomic.Int64
	// rc interrupts a read in flight when the handler is done with the body (stop).
	rc *http.ResponseController
	// reading is held across a read: stop waits for the one in flight, which may be an HTTP/2
	// upstream's body writer (x/net's ClientConn reads the body in a goroutine of its own, even after
	// the response body was closed).
	reading sync.Mutex
	stopped atomic.Bool // no read may reach the downstream any more
}

// errBodyStopped is a read of a body after its request's handler was done with it.
var errBodyStopped = errors.New("request body: the request is over")

// stop ends the body's reads before the handler returns, so that the HTTP/1.1 server alone reads the
// connection afterwards (it discards the rest of the body or closes the connection): no read starts
// from now on, and one in flight is interrupted (a read deadline in the past, which leaves the body
// failed: the server then closes the connection) and waited for.
func (b *bodyRest) stop() {
	b.stopped.Store(true)
	if !b.reading.TryLock() {
		if b.rc != nil {
			_ = b.rc.SetReadDeadline(aLongTimeAgo)
		}
		b.reading.Lock()
	}
	b.reading.Unlock()
}

// aLongTimeAgo is a read deadline that ends a read at once.
var aLongTimeAgo = time.Unix(1, 0)

func (b *bodyRest) Read(p []byte) (int, error) {
	b.reading.Lock()
	defer b.reading.Unlock()
	if b.stopped.Load() {
		return 0, errBodyStopped
	}
	if len(b.pending) > 0 {
		n := copy(p, b.pending)
		b.pending = b.pending[n:]
		return n, nil
	}
	n, err := b.r.Read(p)
	if b.count != nil {
		b.count.Add(int64(n))
	}
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
func (cm *connManager) readBody(w http.ResponseWriter, r *http.Request, limit int, streamEnd time.Time, idle *streamIdle) (requestBody, bool) {
	rc := http.NewResponseController(w)
	var src io.Reader = r.Body
	if idle != nil {
		// Each piece of the body re-arms the stream idle timer, which ends a read when it fires.
		src = activeReader{r.Body, idle}
		idle.reading(rc)
	}
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
		idle.reading(nil)
		if cm.requestTimeout > 0 || byDuration {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}
	buf, pending, err := bufferBody(src, limit, r.ContentLength)
	si := infoOf(r)
	if si != nil {
		si.bytesIn.Add(int64(len(buf) + len(pending)))
	}
	var ne net.Error
	if err != nil && idle.fired() {
		cm.streamIdleTimedOut(w, r, false)
		return requestBody{}, false
	}
	if err != nil && byDuration && errors.As(err, &ne) && ne.Timeout() {
		cm.streamDurationReached(w, r, false)
		return requestBody{}, false
	}
	if err != nil {
		cm.bodyError(w, r, err)
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
	rest := &bodyRest{pending: pending, r: src, done: clearDeadline, rc: rc}
	if si != nil {
		rest.count = &si.bytesIn
	}
	return requestBody{buf: buf, length: r.ContentLength, rest: rest}, true
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
func (cm *connManager) bodyError(w http.ResponseWriter, r *http.Request, err error) {
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
		infoOf(r).fail(flagDownstreamProtocolError, "codec_error")
		cm.localReply(w, r, connectionClose, fe.Status, http.StatusText(fe.Status))
	case errors.As(err, &ne) && ne.Timeout():
		cm.st.rqTimeout.Inc()
		infoOf(r).setDetails("request_overall_timeout") // ActiveStream::onRequestTimeout: no flag
		cm.localReply(w, r, nil, http.StatusRequestTimeout, "request timeout")
	default:
		cm.downstreamGone(r) // the stream ended or was reset mid-body: nobody to answer
	}
}

// streamDurationReached ends a request at its route's max_stream_duration, as Envoy's
// ActiveStream::onStreamMaxDurationReached (source/common/http/conn_manager_impl.cc):
// downstream_rq_max_duration_reached, and a local reply "downstream duration timeout", 504 once the
// whole request was received and 408 before (Utility::maybeRequestTimeoutCode). Once the response has
// started, the stream is reset instead (the caller's panic).
func (cm *connManager) streamDurationReached(w http.ResponseWriter, r *http.Request, complete bool) {
	cm.st.rqMaxDurationReached.Inc()
	// Envoy sets no response flag here, only the details (DT is max_connection_duration's).
	infoOf(r).setDetails("max_duration_timeout")
	if w == nil { // the response has started: the caller resets the stream
		return
	}
	code := http.StatusRequestTimeout
	if complete {
		code = http.StatusGatewayTimeout
	}
	// A gRPC request gets DEADLINE_EXCEEDED, whatever the code (onStreamMaxDurationReached passes it).
	cm.sendLocalReply(w, r, nil, code, "downstream duration timeout", grpcDeadlineExceeded)
}

// connectionClose is the header of a local reply after which the downstream connection closes.
var connectionClose = http.Header{"Connection": {"close"}}

// downstreamGone counts a request whose client went away before the response: its stream is reset,
// counted in downstream_rq_rx_reset (ActiveStream::onResetStream counts every stream reset,
// source/common/http/conn_manager_impl.cc); an HTTP/1.1 client can only leave by closing its connection,
// which Envoy also counts in downstream_cx_destroy_remote_active_rq (ConnectionManagerImpl::onEvent),
// while an HTTP/2 client resets the one stream (RST_STREAM) and its connection lives on. Nothing is
// sent, no status class is counted, and the stream's response flag is DC (DownstreamConnectionTermination).
func (cm *connManager) downstreamGone(r *http.Request) {
	cm.st.rqRxReset.Inc()
	if r.ProtoMajor < 2 {
		cm.st.cxDestroyRemoteActiveRq.Inc()
	}
	infoOf(r).fail(flagDownstreamConnectionTermination, "downstream_remote_disconnect")
}

// localReply answers r itself: hdr's headers, code and body, as the local_reply_config rewrites them
// (Envoy's Utility::sendLocalReply with LocalReply::rewrite, source/common/http/utility.cc); a gRPC
// request gets them as a trailers-only gRPC response (see sendLocalReply, local_reply.go).
func (cm *connManager) localReply(w http.ResponseWriter, r *http.Request, hdr http.Header, code int, body string) {
	cm.sendLocalReply(w, r, hdr, code, body, noGrpcStatus)
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
	switch {
	case code != http.StatusRequestTimeout:
		cm.st.cxProtocolError.Inc()
	case cm.countHeaderTimeouts:
		cm.st.rqHeaderTimeout.Inc()
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
	infoOf(r).setDetails("direct_response")
	if d := route.DirectResponse; d != nil {
		mutateHeaders(w.Header(), cm.replyFormat(w, r, route, d.Status), route.ResponseHeaders, vh.ResponseHeaders, cm.routes.ResponseHeaders)
		cm.localReply(w, r, nil, d.Status, d.Body)
		return
	}
	w.Header().Set("Location", redirectLocation(r, route))
	mutateHeaders(w.Header(), cm.replyFormat(w, r, route, route.Redirect.Code), route.ResponseHeaders, vh.ResponseHeaders, cm.routes.ResponseHeaders)
	cm.localReply(w, r, nil, route.Redirect.Code, "")
}

// replyFormat is what the substitution commands of a local reply's response headers read.
func (cm *connManager) replyFormat(w http.ResponseWriter, r *http.Request, route *config.Route, code int) *formatContext {
	return &formatContext{r: r, req: r.Header, resp: w.Header(), status: code, start: cm.clk.Now(), route: route,
		hostname: cm.router.hostname}
}

// redirectLocation is a redirect's Location, as Envoy's Http::Utility::newUri
// (source/common/http/utility.cc), after the route's prefix_rewrite or regex_rewrite of the path
// (RouteEntryImplBase::rewritePathHeader, source/common/router/config_impl.cc): the scheme (the
// request's is http: the proxy serves plaintext and, as Envoy's connection manager with no trusted
// hops, takes x-forwarded-proto to be http), the host, ":" port_redirect, and the path, whose query
// path_redirect's own query replaces and strip_query drops (but never path_redirect's). The request's
// port is dropped from its host when port_redirect is set, or when the scheme changes from http and
// the port is :80 (processRequestHost).
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
	switch m := &route.Match; {
	case rd.RegexRewrite != nil:
		path = rd.RegexRewrite.Pattern.ReplaceAllString(path, rd.RegexRewrite.Substitution)
	case rd.PrefixRewrite != "":
		n := len(path)
		if !m.IsPath && m.Regex == nil {
			n = min(len(m.Prefix), n)
		}
		path = rd.PrefixRewrite + path[n:]
	}
	pathHasQuery := false
	if rd.Path != "" {
		path = rd.Path
		if i := strings.IndexByte(path, '?'); i >= 0 {
			path, query, pathHasQuery = path[:i], path[i:], true
		}
	}
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	if rd.StripQuery && !pathHasQuery {
		query = ""
	}
	const requestScheme = "http"
	scheme := requestScheme
	if rd.Scheme != "" {
		scheme = rd.Scheme
	}
	port := ""
	if rd.Port != 0 {
		port = ":" + strconv.FormatUint(uint64(rd.Port), 10)
	}
	host := rd.Host
	if host == "" {
		host = r.Host
		if i := hostPortStart(host); i >= 0 && (port != "" || scheme != requestScheme && host[i:] == ":80") {
			host = host[:i]
		}
	}
	return scheme + "://" + host + port + path + query
}

// hostPortStart is the index of the ":" before an authority's port, -1 when it has none (an IPv6
// literal's colons are inside its brackets), as Envoy's HeaderUtility::getPortStart.
func hostPortStart(host string) int {
	i := strings.LastIndexByte(host, ':')
	if i < 0 || strings.LastIndexByte(host, ']') > i {
		return -1
	}
	return i
}
