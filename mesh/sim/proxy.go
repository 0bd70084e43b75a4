package sim

import (
	"errors"
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// The proxy model: one proxy or sidecar of the simulated mesh, running the same validated Envoy
// configuration (proxy/config) as the embedded runner's proxy, on the engine's virtual time. Its
// decisions are the live proxy's own code wherever the live proxy has it as a function or a policy
// object: route matching, the weighted draw and the expected-timeout header (package proxy's exported
// seams, proxy/shared.go), retries, back-off, load balancing, circuit breakers, outlier detection and
// health checking (proxy/policy). What the model adds is only the waiting: network hops, connection
// set-up, the pending queue and the timers, as events.
//
// The files: proxy.go (the proxy: routing a request, stats), proxy_router.go (a request's attempts and
// retries, Envoy's router filter), proxy_update.go (a configuration pushed over xDS), proxy_cluster.go (clusters, hosts and their HTTP/1.1 connection
// pools), proxy_health.go (active health checks), proxy_unsupported.go (what the model refuses).

// ProxyConfig is one proxy or sidecar of the simulated mesh.
type ProxyConfig struct {
	// Name is the proxy's name ("edge", or "service/index" for a sidecar): events, randomness.
	Name string
	// Config is the proxy's configuration, from config.FromProto of the SAME bootstrap the embedded
	// runner builds. Its first listener takes the requests (see Unsupported for the others).
	Config *config.Bootstrap
	// Resolve is the Upstream at a cluster endpoint's address; false: no instance there (every
	// connection to it is refused).
	Resolve func(addr string) (Upstream, bool)
	// Seed is the run's seed; the proxy's randomness derives from (Seed, Name) as proxy.SeededRand does.
	Seed uint64
	// Hop is the one-way network delay between this proxy and an instance.
	Hop time.Duration
	// OnEvent receives the proxy's decisions (nil: events not kept).
	OnEvent func(ProxyEvent)
}

// Proxy is the model of one proxy on the engine. Not safe for concurrent use: one engine, one goroutine.
//
// The *Request a Proxy gives an Upstream's Serve (and its Header) is the proxy's until the exchange
// ends — done called, or cancel called — and is reused for the request's next attempt or another
// request afterwards: an Upstream copies what it keeps beyond that. The *Request given to Handle is
// the caller's: the proxy reads it (never writes it) until it calls done.
type Proxy struct {
	en      *Engine
	name    string
	hop     time.Duration
	onEvent func(ProxyEvent)
	seeds   proxy.Seeds
	resolve func(addr string) (Upstream, bool) // for the hosts an Update adds

	listener *config.Listener
	routes   *config.RouteConfig
	clusters map[string]*cluster
	ordered  []*cluster // in the bootstrap's order

	// internalPeer: a request without x-forwarded-for is internal, its peer (the caller on loopback, as
	// in the embedded runner) trusted by use_remote_address and internal_address_config (a sidecar
	// taking its app's requests: scenarios' trustLocalApp). xffInternal: without use_remote_address, a
	// request whose x-forwarded-for is one internal address is internal.
	internalPeer, xffInternal bool

	st      hcmCounters
	free    []*forward // finished requests' state, reused
	started bool
	// lastMs and lastMsStr remember the last expected-timeout header value: consecutive requests on a
	// route mostly send the same one.
	lastMs    int64
	lastMsStr string
}

// hcmCounters are the listener's HTTP connection manager stats the model counts.
type hcmCounters struct {
	prefix                      string
	rqTotal, noRoute, noCluster uint64
	rqClass                     [4]uint64 // downstream_rq_2xx … _5xx
	rqActive                    int64
}

// epoch is the virtual instant 0 as the policies' time.Time.
var epoch = time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC)

// NewProxy builds the proxy model of cfg on en. It does not check what the model cannot do: the runner
// asks Unsupported first and refuses those configurations by name.
func NewProxy(en *Engine, cfg ProxyConfig) (*Proxy, error) {
	if en == nil {
		return nil, errors.New("sim: NewProxy: nil engine")
	}
	if cfg.Config == nil || len(cfg.Config.Listeners) == 0 {
		return nil, fmt.Errorf("sim: proxy %s: the configuration has no listener", cfg.Name)
	}
	if cfg.Hop < 0 {
		return nil, fmt.Errorf("sim: proxy %s: hop %v is negative", cfg.Name, cfg.Hop)
	}
	p := &Proxy{en: en, name: cfg.Name, hop: cfg.Hop, onEvent: cfg.OnEvent, resolve: cfg.Resolve,
		seeds:    proxy.NewSeeds(proxy.SeededRand(cfg.Seed, cfg.Name)),
		listener: &cfg.Config.Listeners[0], clusters: make(map[string]*cluster, len(cfg.Config.Clusters))}
	p.routes = &p.listener.Routes
	l := p.listener
	if len(l.InternalAddresses) > 0 && l.XffNumTrustedHops == 0 {
		p.internalPeer = l.UseRemoteAddress && internalAddr(l, loopback)
		p.xffInternal = !l.UseRemoteAddress
	}
	p.st.prefix = "http." + p.listener.StatPrefix + "."
	for i := range cfg.Config.Clusters {
		c, err := newCluster(p, &cfg.Config.Clusters[i], cfg.Resolve)
		if err != nil {
			return nil, fmt.Errorf("sim: proxy %s: %w", cfg.Name, err)
		}
		p.clusters[c.name] = c
		p.ordered = append(p.ordered, c)
	}
	return p, nil
}

// Start starts the proxy's timers (outlier detection sweeps, health checks) at Now.
func (p *Proxy) Start() {
	if p.started {
		return
	}
	p.started = true
	for _, c := range p.ordered {
		c.start()
	}
}

// Stop stops the proxy's timers (the run has ended).
func (p *Proxy) Stop() {
	for _, c := range p.ordered {
		c.stop()
	}
	p.started = false
}

// now is the engine's Now as the policies' time.
func (p *Proxy) now() time.Time { return epoch.Add(p.en.Now()) }

func (p *Proxy) event(kind, cluster, host, reason string) {
	if p.onEvent != nil {
		p.onEvent(ProxyEvent{At: p.en.Now(), Kind: kind, Cluster: cluster, Host: host, Reason: reason})
	}
}

// Handle routes a request that reached the proxy's listener at Now; done gets the proxy's answer at the
// instant the proxy sends it (the caller adds its own way back).
func (p *Proxy) Handle(req *Request, done func(Result)) {
	p.st.rqTotal++
	// Envoy's connection manager: the virtual host by :authority, then the first route whose match
	// holds (ConnectionManagerImpl → RouteMatcher::route, source/common/router/config_impl.cc), with
	// the live proxy's own matchers.
	vh := proxy.MatchVirtualHost(p.routes.VirtualHosts, req.Authority, p.routes.IgnorePortInHostMatching)
	var route *config.Route
	if vh != nil {
		route = matchRoute(vh, req)
	}
	switch {
	case route == nil:
		p.st.noRoute++
		p.reply(done, Result{Status: 404, Flags: "NR"})
		return
	case route.DirectResponse != nil:
		p.reply(done, Result{Status: route.DirectResponse.Status})
		return
	case route.Redirect != nil:
		code := route.Redirect.Code
		if code == 0 {
			code = 301
		}
		p.reply(done, Result{Status: code})
		return
	}
	c := p.clusters[p.clusterOf(route, req)]
	if c == nil {
		p.st.noCluster++
		code := route.Action.ClusterNotFoundCode
		if code == 0 {
			code = 503
		}
		p.reply(done, Result{Status: code, Flags: "NC"})
		return
	}
	f := p.forward()
	p.st.rqActive++
	f.begin(req, done, vh, route, c)
}

var loopback = netip.MustParseAddr("127.0.0.1")

func internalAddr(l *config.Listener, a netip.Addr) bool {
	for _, p := range l.InternalAddresses {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// internal reports whether req is an internal request, whose router headers (x-envoy-retry-on,
// x-envoy-upstream-rq-timeout-ms, …) the router honours, as the live connection manager decides it
// (proxy/forwarded.go, Envoy's ConnectionManagerUtility::mutateRequestHeaders): x-forwarded-for holds
// a single address, after the peer's append under use_remote_address (a loopback peer appends none),
// and that address is internal.
func (p *Proxy) internal(req *Request) bool {
	xff, ok := req.Header["x-forwarded-for"]
	switch {
	case p.internalPeer:
		return !ok
	case p.xffInternal && ok && !strings.Contains(xff, ","):
		a, err := netip.ParseAddr(strings.TrimSpace(xff))
		return err == nil && internalAddr(p.listener, a)
	}
	return false
}

// reply answers a request the connection manager answers itself (no attempt: not a count of the
// router's, as the live proxy's OnRequest never hears of it).
func (p *Proxy) reply(done func(Result), r Result) {
	p.countStatus(r.Status)
	done(r)
}

func (p *Proxy) countStatus(code int) {
	if i := code/100 - 2; i >= 0 && i < 4 {
		p.st.rqClass[i]++
	}
}

// matchRoute is the virtual host's first route whose match holds for req: the live connection
// manager's path and header matchers (proxy.PathMatches, proxy.HeaderMatches). The path is matched
// without its query string. Query parameter matchers are refused by Unsupported.
func matchRoute(vh *config.VirtualHost, req *Request) *config.Route {
	path := req.Path
	for i := 0; i < len(path); i++ {
		if path[i] == '?' {
			path = path[:i]
			break
		}
	}
	for i := range vh.Routes {
		r := &vh.Routes[i]
		if !proxy.PathMatches(&r.Match, path) {
			continue
		}
		if len(r.Match.Headers) > 0 && !headersMatch(r.Match.Headers, req) {
			continue
		}
		return r
	}
	return nil
}

// headersMatch applies a route's header matchers to the request, through the live proxy's matcher on
// an http.Header made for it (only for routes that have header matchers).
func headersMatch(ms []config.HeaderMatcher, req *Request) bool {
	h := httpHeader(req)
	for _, m := range ms {
		var ok bool
		switch m.Name {
		case ":path", ":method", ":authority", ":scheme":
			v := map[string]string{":path": req.Path, ":method": req.Method, ":authority": req.Authority, ":scheme": "http"}[m.Name]
			ok = proxy.HeaderMatches(m, map[string][]string{m.Name: {v}})
		default:
			ok = proxy.HeaderMatches(m, h)
		}
		if !ok {
			return false
		}
	}
	return true
}

// clusterOf is the route's cluster for req: its cluster, the cluster_header's first value, or the
// weighted draw from the request's route stream (proxy.PickWeightedCluster, as the live connection
// manager draws it).
func (p *Proxy) clusterOf(route *config.Route, req *Request) string {
	a := &route.Action
	switch {
	case a.WeightedClusters != nil:
		var f forward // only for its rng's storage
		p.seeds.Route(&f.rng, req.ID)
		var h map[string][]string
		if a.WeightedClusters.HeaderName != "" || weightedByHeader(a.WeightedClusters) {
			h = httpHeader(req)
		}
		return proxy.PickWeightedCluster(a.WeightedClusters, h, f.rng.Uint64())
	case a.ClusterHeader != "":
		return req.Header[lower(a.ClusterHeader)]
	}
	return a.Cluster
}

func weightedByHeader(wc *config.WeightedClusters) bool {
	for _, c := range wc.Clusters {
		if c.ClusterHeader != "" {
			return true
		}
	}
	return false
}

// expectedMs is the x-envoy-expected-rq-timeout-ms value as a string.
func (p *Proxy) expectedMs(ms int64) string {
	if ms != p.lastMs || p.lastMsStr == "" {
		p.lastMs, p.lastMsStr = ms, strconv.FormatInt(ms, 10)
	}
	return p.lastMsStr
}

// Stats are the proxy's counters with the names the live proxy's Stats().Values() uses: only those the
// model counts, with the live proxy's meaning.
func (p *Proxy) Stats() map[string]uint64 {
	m := make(map[string]uint64, 64*len(p.ordered)+8)
	s := &p.st
	m[s.prefix+"downstream_rq_total"] = s.rqTotal
	m[s.prefix+"no_route"] = s.noRoute
	m[s.prefix+"no_cluster"] = s.noCluster
	m[s.prefix+"downstream_rq_active"] = uint64(max(s.rqActive, 0))
	for i, n := range s.rqClass {
		m[s.prefix+"downstream_rq_"+strconv.Itoa(i+2)+"xx"] = n
	}
	for _, c := range p.ordered {
		c.stats(m)
	}
	return m
}

// httpHeader is the request's headers as an http.Header keyed by the lower-case names (the live
// matchers canonicalise the name they look up, so the names are canonicalised here).
func httpHeader(req *Request) map[string][]string {
	h := make(map[string][]string, len(req.Header))
	for k, v := range req.Header {
		h[canonical(k)] = []string{v}
	}
	return h
}
