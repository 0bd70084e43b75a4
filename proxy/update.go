package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/stats"
)

// A configuration change, as Envoy's listener manager and cluster manager make one
// (source/common/listener_manager/listener_manager_impl.cc, addOrUpdateListener and removeListener;
// source/common/upstream/cluster_manager_impl.cc, addOrUpdateCluster and removeCluster):
//
//   - The new configuration is built whole before anything changes: its clusters, its listeners'
//     request chains and the sockets of listeners on new addresses. Any error leaves the running
//     configuration as it was.
//   - Then one atomic swap: a request takes the configuration that is current when it starts
//     (a generation) and keeps it until it ends, so in-flight requests finish on the configuration
//     they started with, and a removed cluster is closed once no request holds it.
//   - A cluster whose configuration (endpoints included) is unchanged is the same cluster: its hosts'
//     outlier and health state, breakers and connection pools carry on. A changed one is replaced by
//     a new one (cluster_modified), as Envoy's cluster manager replaces a cluster whose hash changed.
//   - A listener whose address is unchanged keeps its socket. When only its routes, filters or other
//     per-request settings changed, its connections carry on and take the new configuration from their
//     next request (as Envoy's RDS updates do). When its connection settings changed (timeouts, header
//     limit, connection limit), a new server takes the socket over and the old one drains its
//     connections (Connection: close, then closed after the drain time), as Envoy drains a modified
//     listener. A removed listener stops accepting at once and drains the same way.

// generation is one configuration as the proxy runs it: its clusters and each listener's request chain.
// refs counts the requests that hold it plus one while it is current (and one per draining listener
// server pinned to it); the last release closes the clusters no later generation holds.
type generation struct {
	cfg      *config.Bootstrap
	raw      proto.Message
	clusters map[string]*cluster
	chains   map[string]*chain
	refs     atomic.Int64
	s        *Server
}

// chain is a listener's request chain in one generation.
type chain struct {
	cfg     config.Listener
	handler http.Handler
	hcm     *connManager
	tls     *tlsContext // the filter chain's DownstreamTlsContext; nil: clear text
}

// acquire takes a reference unless the generation is retired already.
func (g *generation) acquire() bool {
	for {
		n := g.refs.Load()
		if n <= 0 {
			return false
		}
		if g.refs.CompareAndSwap(n, n+1) {
			return true
		}
	}
}

// release drops a reference; the last one closes the clusters that no other generation holds.
func (g *generation) release() {
	if g.refs.Add(-1) != 0 {
		return
	}
	for _, c := range g.clusters {
		if c.gens.Add(-1) == 0 {
			go g.s.closeCluster(c)
		}
	}
}

// current is the current generation, acquired: the caller releases it.
func (s *Server) current() *generation {
	for {
		if g := s.gen.Load(); g.acquire() {
			return g
		}
	}
}

// newGeneration holds the clusters (each one's generation count taken).
func (s *Server) newGeneration(cfg *config.Bootstrap, raw proto.Message, clusters map[string]*cluster, chains map[string]*chain) *generation {
	g := &generation{cfg: cfg, raw: raw, clusters: clusters, chains: chains, s: s}
	g.refs.Store(1)
	for _, c := range clusters {
		c.gens.Add(1)
	}
	return g
}

// closeCluster closes a cluster no generation holds any more.
func (s *Server) closeCluster(c *cluster) {
	s.mu.Lock()
	delete(s.liveClusters, c)
	s.mu.Unlock()
	c.close()
}

// managerStats are Envoy's listener manager and cluster manager stats.
type managerStats struct {
	listenerAdded, listenerModified, listenerRemoved, listenerStopped *stats.Counter
	clusterAdded, clusterModified, clusterRemoved                     *stats.Counter
	listenersActive, listenersDraining, activeClusters                *stats.Gauge
	// serverState is Envoy's server.state (0 LIVE, 1 DRAINING, 3 INITIALIZING); reloadFailed and reloadOK count the
	// standalone proxy's reloads of its bootstrap (meshproof's: Envoy does not reload a bootstrap).
	serverState, serverLive *stats.Gauge
	reloadFailed, reloadOK  *stats.Counter
}

func newManagerStats(store *stats.Store) managerStats {
	c, g := store.Counter, store.Gauge
	return managerStats{
		listenerAdded: c("listener_manager.listener_added"), listenerModified: c("listener_manager.listener_modified"),
		listenerRemoved: c("listener_manager.listener_removed"), listenerStopped: c("listener_manager.listener_stopped"),
		clusterAdded: c("cluster_manager.cluster_added"), clusterModified: c("cluster_manager.cluster_modified"),
		clusterRemoved:  c("cluster_manager.cluster_removed"),
		listenersActive: g("listener_manager.total_listeners_active"), listenersDraining: g("listener_manager.total_listeners_draining"),
		activeClusters: g("cluster_manager.active_clusters"),
		serverState:    g("server.state"), serverLive: g("server.live"),
		reloadFailed: c("server.config_reload_failed"), reloadOK: c("server.config_reload_success"),
	}
}

// CountReload counts a reload of the bootstrap by the standalone proxy: server.config_reload_success
// when err is nil, else server.config_reload_failed.
func (s *Server) CountReload(err error) {
	if err != nil {
		s.mgr.reloadFailed.Inc()
		return
	}
	s.mgr.reloadOK.Inc()
}

// Update swaps the running configuration for cfg; raw is what /config_dump shows from now on (the
// bootstrap, or an admin ConfigDump with the dynamic resources' versions; nil: keep the current one).
// cfg is built whole first: on error the running configuration is untouched. See the comment at the
// top of this file for what carries over. Update satisfies package xds's Applier (Apply).
func (s *Server) Update(cfg *config.Bootstrap, raw proto.Message) error {
	if cfg == nil {
		return errors.New("proxy: nil configuration")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stopped {
		return errors.New("proxy: stopped")
	}
	if raw == nil {
		raw = s.gen.Load().raw
	}
	return s.applyLocked(cfg, raw)
}

// Apply is Update: the proxy as an xds.Applier.
func (s *Server) Apply(cfg *config.Bootstrap, raw proto.Message) error { return s.Update(cfg, raw) }

// serverKey is what a listener's h1 server is made with: when it changes, a new server takes the
// socket over.
type serverKey struct {
	headTimeout     time.Duration
	headTimeoutBody string
	idle            time.Duration
	maxHeader       int
	maxRequests     uint32
	limit           config.ConnectionLimit
	limited         bool
	// statPrefix: the server's connection callbacks count into the HCM stats of this prefix.
	statPrefix string
	tls        string // the TLS context's Key ("" clear text): its server terminates TLS with it
	// codec and h2: the HCM codec_type and http2_protocol_options, which its h1 and h2 servers are made with.
	codec config.Codec
	h2    config.HTTP2Options
}

func keyOf(l config.Listener) serverKey {
	k := serverKey{headTimeout: time.Minute, idle: l.IdleTimeout, maxHeader: l.MaxRequestHeadersBytes,
		maxRequests: l.MaxRequestsPerConnection, statPrefix: l.StatPrefix, codec: l.Codec, h2: l.HTTP2}
	if l.TLS != nil {
		k.tls = l.TLS.Key
	}
	if l.RequestHeadersTimeout > 0 {
		k.headTimeout, k.headTimeoutBody = l.RequestHeadersTimeout, "request header timeout"
	}
	if l.ConnectionLimit != nil {
		k.limit, k.limited = *l.ConnectionLimit, true
	}
	return k
}

// boundListener is a listener's socket and the server accepting on it.
type boundListener struct {
	cfg  config.Listener
	key  serverKey
	sock *socket
	srv  *h1.Server
	ls   *listenerServer // srv and its HTTP/2 server: the stopper in Server.servers
	vl   *socketListener
}

// applyLocked builds cfg and swaps it in (s.mu held). Before Start it only builds the clusters.
func (s *Server) applyLocked(cfg *config.Bootstrap, raw proto.Message) (err error) {
	old := s.gen.Load()
	var created []*cluster
	var opened []*socket
	defer func() {
		if err == nil {
			return
		}
		for _, c := range created {
			delete(s.liveClusters, c)
			c.close()
		}
		for _, so := range opened {
			so.close()
		}
		if old != nil {
			for _, c := range old.clusters {
				c.publishHealth() // a cluster built and dropped set the shared gauges
			}
		}
	}()
	clusters := make(map[string]*cluster, len(cfg.Clusters))
	var added, modified []string
	for _, c := range cfg.Clusters {
		var oc *cluster
		if old != nil {
			oc = old.clusters[c.Name]
		}
		if oc != nil && reflect.DeepEqual(oc.cfg, c) {
			clusters[c.Name] = oc
			continue
		}
		var cl *cluster
		var err error
		if oc != nil && endpointsOnly(oc.cfg, c) {
			cl, err = oc.carry(c) // an EDS update: the same cluster, new hosts
		} else {
			cl, err = newCluster(c, s.store, s.opts.OnEvent, s.clk, s.seeds)
		}
		if err != nil {
			return err
		}
		created = append(created, cl)
		s.liveClusters[cl] = struct{}{}
		clusters[c.Name] = cl
		switch {
		case oc == nil:
			added = append(added, c.Name)
		case !endpointsOnly(oc.cfg, c):
			modified = append(modified, c.Name)
		}
	}
	chains := map[string]*chain{}
	sockets := map[string]*socket{}
	if s.started {
		claimed := map[*socket]bool{}
		for _, l := range cfg.Listeners { // the same listener on the same address keeps its socket
			if b := s.bound[l.Name]; b != nil && b.cfg.Address == l.Address {
				sockets[l.Name], claimed[b.sock] = b.sock, true
			}
		}
		for _, l := range cfg.Listeners {
			if sockets[l.Name] != nil {
				continue
			}
			for _, b := range s.bound { // another listener's address (a rename): its socket
				if !claimed[b.sock] && b.cfg.Address == l.Address && !anyPort(l.Address) {
					sockets[l.Name], claimed[b.sock] = b.sock, true
					break
				}
			}
			if sockets[l.Name] != nil {
				continue
			}
			ln, err := net.Listen("tcp", l.Address)
			if err != nil {
				return fmt.Errorf("listener %q: %w", l.Name, err)
			}
			so := newSocket(ln)
			opened = append(opened, so)
			sockets[l.Name], claimed[so] = so, true
		}
		for _, l := range cfg.Listeners {
			ch, err := s.buildChain(l, clusters, sockets[l.Name].ln.Addr())
			if err != nil {
				return fmt.Errorf("listener %q: %w", l.Name, err)
			}
			chains[l.Name] = ch
		}
	}
	g := s.newGeneration(cfg, raw, clusters, chains)
	if old != nil {
		for name := range old.clusters {
			if clusters[name] == nil {
				s.mgr.clusterRemoved.Inc()
			}
		}
	}
	s.mgr.clusterAdded.Add(uint64(len(added)))
	s.mgr.clusterModified.Add(uint64(len(modified)))
	s.mgr.activeClusters.Set(int64(len(clusters)))
	s.cfg = cfg

	// Listeners whose server goes: they drain on the generation they served.
	var drain []*boundListener
	next := map[string]*boundListener{}
	if s.started {
		for _, l := range cfg.Listeners {
			so, b := sockets[l.Name], s.bound[l.Name]
			k := keyOf(l)
			switch {
			case b == nil:
				s.mgr.listenerAdded.Inc()
			case !reflect.DeepEqual(b.cfg, l):
				s.mgr.listenerModified.Inc()
			}
			if b != nil && b.sock == so && b.key == k {
				b.cfg = l
				next[l.Name] = b
				continue
			}
			if b != nil {
				drain = append(drain, b)
			}
			next[l.Name] = s.serve(l, k, so, chains[l.Name])
		}
		for name, b := range s.bound {
			if _, ok := next[name]; !ok {
				s.mgr.listenerRemoved.Inc()
				drain = append(drain, b)
			}
		}
	}
	var pins []*generation
	for range drain {
		old.refs.Add(1) // a draining server serves on the generation it had (old is current: refs > 0)
		pins = append(pins, old)
	}
	for _, c := range created {
		c.commit() // nothing fails from here: the pools an endpoint update took over are its own
	}
	s.gen.Store(g)
	for _, c := range created {
		c.inUse() // the hosts an endpoint update removed are marked so once no request can get the old set
	}
	if old != nil {
		old.release()
	}
	for _, c := range created {
		if s.started {
			c.start()
		}
	}
	if s.started {
		inUse := map[*socket]bool{}
		for _, b := range next {
			inUse[b.sock] = true
		}
		for i, b := range drain {
			if !inUse[b.sock] {
				b.sock.close() // a removed listener, or one on a new address: no new connection
			}
			s.drainServer(b, pins[i])
		}
		s.bound = next
		for name := range s.listeners {
			if next[name] == nil {
				delete(s.listeners, name)
			}
		}
		s.mgr.listenersActive.Set(int64(len(next)))
	}
	return nil
}

// anyPort says whether addr asks for any free port (":0"): two such listeners never share a socket.
func anyPort(addr string) bool {
	_, p, err := net.SplitHostPort(addr)
	return err != nil || p == "0"
}

// serve starts a server for listener l on so (s.mu held).
func (s *Server) serve(l config.Listener, k serverKey, so *socket, ch *chain) *boundListener {
	e := &entry{s: s, name: l.Name, hcm: ch.hcm}
	vl := so.listener()
	var served net.Listener = vl
	if l.ConnectionLimit != nil {
		served = newLimitListener(vl, l.ConnectionLimit, s.store)
	}
	if ch.tls != nil {
		served = &tlsListener{Listener: served, t: ch.tls}
	}
	hcm := ch.hcm
	srv := &h1.Server{Handler: e, ReadHeaderTimeout: k.headTimeout, HeaderTimeoutBody: k.headTimeoutBody,
		IdleTimeout: l.IdleTimeout, MaxHeaderBytes: l.MaxRequestHeadersBytes,
		ConnState: hcm.connState, Rejected: hcm.rejected, IdleTimedOut: hcm.st.cxIdleTimeout.Inc,
		MaxRequestsPerConnection: int(l.MaxRequestsPerConnection), MaxRequestsReached: hcm.st.cxMaxRequestsReached.Inc,
		RejectHTTP10: true, // Envoy's default: http_protocol_options.accept_http_10 false
		DrainClose:   e.drainClose}
	// HTTP/2 (see h2.go): the h1 server hands over the connections that start with the preface (codec
	// AUTO), or all of them (HTTP2); with codec HTTP1 it serves them all.
	h2 := newH2Server(l, e, hcm, s.store, s.clk, e.drainClose)
	srv.HTTP1 = h2.st.http1
	if l.Codec != config.CodecHTTP1 {
		srv.Handoff, srv.HandoffAll = h2.serveConn, l.Codec == config.CodecHTTP2
	}
	e.srv = srv
	ls := &listenerServer{h1: srv, h2: h2}
	s.servers = append(s.servers, ls)
	s.listeners[l.Name] = so.ln
	go func() { _ = srv.Serve(served) }()
	return &boundListener{cfg: l, key: k, sock: so, srv: srv, ls: ls, vl: vl}
}

// listenerServer is a listener's servers, stopped together: the h1 server accepting its connections,
// and the h2 server of those it handed over.
type listenerServer struct {
	h1 *h1.Server
	h2 *h2Server
}

// Shutdown stops accepting, has the HTTP/2 connections go away (GOAWAY) while the HTTP/1 ones close
// as their requests end, and waits for both, or ctx.
func (ls *listenerServer) Shutdown(ctx context.Context) error {
	errc := make(chan error, 1)
	go func() { errc <- ls.h1.Shutdown(ctx) }()
	err := ls.h2.shutdown(ctx)
	return errors.Join(<-errc, err)
}

// Close closes every connection at once.
func (ls *listenerServer) Close() error {
	err := ls.h1.Close()
	ls.h2.close()
	return err
}

// drainServer drains a listener's server that a configuration change retired (s.mu held): it accepts
// no more connections, every response says Connection: close (gradually over the drain time, as the
// drain strategy says), and once the drain time passed its connections close as their requests end;
// then it lets go of the generation it served on.
func (s *Server) drainServer(b *boundListener, pin *generation) {
	b.vl.Close()
	e := b.srv.Handler.(*entry)
	e.pin.Store(pin)
	e.drain.Store(s.newDrainer(s.drainTime()))
	s.mgr.listenersDraining.Inc()
	go func() {
		defer pin.release()
		defer s.mgr.listenersDraining.Dec()
		t := s.clk.NewTimer(s.drainTime())
		select {
		case <-t.C():
		case <-s.stop:
			t.Stop()
			return // Shutdown or Close ends the server
		}
		_ = b.ls.Shutdown(closedAfter(s.stop))
		s.mu.Lock()
		s.servers = slices.DeleteFunc(s.servers, func(x stopper) bool { return x == stopper(b.ls) })
		s.mu.Unlock()
	}()
}

// entry is a listener server's handler: each request runs on the current generation's chain for the
// listener (or, for a draining server, on the generation it was retired from).
type entry struct {
	s     *Server
	name  string
	hcm   *connManager // the connection manager the server was made with: its connection stats
	srv   *h1.Server
	pin   atomic.Pointer[generation]
	drain atomic.Pointer[drainer] // this server's own drain (retired by a configuration change)
}

func (e *entry) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	g := e.pin.Load()
	if g == nil {
		g = e.s.current()
		defer g.release()
	}
	ch := g.chains[e.name]
	if ch == nil { // a listener removed between the accept and the request
		w.Header().Set("Connection", "close")
		http.Error(w, "listener removed", http.StatusServiceUnavailable)
		return
	}
	ch.handler.ServeHTTP(w, r)
}

// drainClose says whether the response to the request now dispatched closes its connection, as
// Envoy's DrainManagerImpl::drainClose (source/server/drain_manager_impl.cc): always while the
// health check is failed (POST /healthcheck/fail), else while the listener or the whole proxy drains,
// as its drain strategy says. Each one is counted in http.<stat_prefix>.downstream_cx_drain_close.
func (e *entry) drainClose() bool {
	s := e.s
	close := !s.live.Load()
	if !close {
		if d := e.drain.Load(); d != nil && d.close() {
			close = true
		} else if d := s.drain.Load(); d != nil && d.close() {
			close = true
		}
	}
	if close {
		e.hcm.st.cxDrainClose.Inc()
	}
	return close
}

// buildChain makes a listener's request chain on clusters (s.mu held); bound is its socket's address.
func (s *Server) buildChain(l config.Listener, clusters map[string]*cluster, bound net.Addr) (*chain, error) {
	rt := newRouter(clusters, s.clk, s.seeds)
	rt.onRequest = s.opts.OnRequest
	hcm := newConnManager(l, s.store, s.clk, rt)
	if a, ok := bound.(*net.TCPAddr); ok {
		hcm.localPort = a.Port // strip_matching_host_port compares with the port bound
	}
	rt.hcm = hcm
	rt.rc = &hcm.routes
	rt.vclusters = newVirtualClusters(hcm.routes.VirtualHosts, s.store)
	// The request chain, outermost first: the request header mutations (forwarding), tracing
	// (server span), the HTTP filters before the router in the HCM's order (fault, local rate
	// limit), connection manager (downstream stats, route, body), router (upstream requests, retries).
	var handler http.Handler = hcm
	filters := l.HTTPFilters
	if filters == nil && l.Fault != nil {
		filters = []config.HTTPFilter{{Fault: l.Fault}}
	}
	for i := len(filters) - 1; i >= 0; i-- { // the HCM's http_filters order, the first outermost
		switch f := filters[i]; {
		case f.Fault != nil:
			handler = newFaultFilter(f.Fault, handler, hcm, s.store, l.StatPrefix, s.clk, s.seeds)
		case f.LocalRateLimit != nil:
			handler = newLocalRateLimit(f.LocalRateLimit, handler, hcm, s.store, s.clk, s.seeds)
		}
	}
	if tp := s.opts.TracerProvider; tp != nil {
		rt.tracer, rt.prop = tp.Tracer(TracerName), s.opts.Propagator
		if rt.prop == nil {
			rt.prop = propagation.TraceContext{}
		}
		sampling := 1.0
		if l.Tracing != nil {
			sampling = l.Tracing.RandomSampling
		}
		handler = newTracing(handler, rt.tracer, rt.prop, sampling, s.seeds)
	}
	// Outermost: the connection manager's request header mutations (x-forwarded-for,
	// x-envoy-internal ...), which every filter and the tracer see done, as in Envoy.
	handler = &forwardingHandler{fw: newForwarding(l), next: handler}
	// Before it, the codec's check of header names (headers_with_underscores_action).
	handler = newUnderscores(l.UnderscoresAction, hcm, s.store, handler)
	// Outermost, the access logs: a line for each request once it ended, whatever answered it.
	accessLogs := l.AccessLogs
	if s.opts.AccessLogPath != "" {
		accessLogs = append(slices.Clip(accessLogs), config.AccessLog{Path: s.opts.AccessLogPath})
	}
	if len(accessLogs) > 0 {
		logs, err := s.accessLogs(accessLogs)
		if err != nil {
			return nil, err
		}
		handler = &accessLogHandler{next: handler, logs: logs, clk: s.clk, hostname: rt.hostname}
	}
	if l.RequestHeadersTimeout > 0 {
		hcm.countHeaderTimeouts = true // ActiveStream::onRequestHeaderTimeout: 408 "request header timeout"
	}
	ch := &chain{cfg: l, handler: handler, hcm: hcm}
	if l.TLS != nil {
		var err error
		if ch.tls, err = newTLSContext(l.TLS, true, s.clk, newSSLStats(s.store, listenerStatPrefix(l.Address))); err != nil {
			return nil, fmt.Errorf("transport_socket: %w", err)
		}
	}
	return ch, nil
}
