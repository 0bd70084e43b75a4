// STUB: deleted when the proxy model lands (proxy.go of the simproxy branch, same API).

package sim

import (
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
)

// ProxyConfig configures one simulated proxy or sidecar.
type ProxyConfig struct {
	Name    string            // "edge", or "service/index" for a sidecar
	Config  *config.Bootstrap // from config.FromProto of the bootstrap the embedded runner builds
	Resolve func(addr string) (Upstream, bool)
	Seed    uint64
	Hop     time.Duration // one-way network delay proxy <-> instance
	OnEvent func(ProxyEvent)
}

// Proxy is the stand-in: the first route whose prefix matches, its cluster's endpoints round robin,
// one attempt, the route timeout (504 UT); nothing else.
type Proxy struct {
	en    *Engine
	cfg   ProxyConfig
	next  map[string]int
	stats map[string]uint64
}

// NewProxy returns the stand-in proxy.
func NewProxy(en *Engine, cfg ProxyConfig) (*Proxy, error) {
	return &Proxy{en: en, cfg: cfg, next: map[string]int{}, stats: map[string]uint64{}}, nil
}

// Start does nothing.
func (p *Proxy) Start() {}

// Stop does nothing.
func (p *Proxy) Stop() {}

// Stats are the stand-in's few counters.
func (p *Proxy) Stats() map[string]uint64 { return p.stats }

// Unsupported lists nothing.
func Unsupported(*config.Bootstrap) []string { return nil }

// Handle forwards req to one endpoint of its route's cluster.
func (p *Proxy) Handle(req *Request, done func(Result)) {
	action, ok := p.route(req)
	if !ok {
		p.en.At(p.en.Now(), func() { done(Result{Status: 404, Flags: "NR", ZeroAttempts: true}) })
		return
	}
	var cl *config.Cluster
	for i := range p.cfg.Config.Clusters {
		if p.cfg.Config.Clusters[i].Name == action.Cluster {
			cl = &p.cfg.Config.Clusters[i]
		}
	}
	if cl == nil || len(cl.Endpoints) == 0 {
		p.en.At(p.en.Now(), func() { done(Result{Status: 503, Flags: "UH", ZeroAttempts: true}) })
		return
	}
	prefix := "cluster." + cl.Name + "."
	p.stats[prefix+"upstream_rq_total"]++
	i := p.next[cl.Name] % len(cl.Endpoints)
	p.next[cl.Name]++
	up, ok := p.cfg.Resolve(cl.Endpoints[i].Address)
	hop := p.cfg.Hop
	finished := false
	var timer Timer
	var cancel func()
	finish := func(r Result) {
		if finished {
			return
		}
		finished = true
		p.en.Stop(timer)
		r.Attempts = 1
		if r.Status != 0 {
			p.stats[prefix+"upstream_rq_"+strconv.Itoa(r.Status)]++
		}
		done(r)
	}
	if action.Timeout > 0 {
		timer = p.en.After(action.Timeout, func() {
			if cancel != nil {
				cancel()
			}
			p.stats[prefix+"upstream_rq_timeout"]++
			finish(Result{Status: 504, Flags: "UT"})
		})
	}
	p.en.After(hop, func() {
		if finished {
			return
		}
		if !ok || up.Refusing() {
			p.en.After(hop, func() { finish(Result{Status: 503, Flags: "UF"}) })
			return
		}
		cancel = up.Serve(req, func(r Result) {
			p.en.After(hop, func() {
				if r.Err != ErrNone {
					finish(Result{Status: 503, Flags: "UC"})
					return
				}
				finish(r)
			})
		})
	})
}

func (p *Proxy) route(req *Request) (config.RouteAction, bool) {
	path, _, _ := strings.Cut(req.Path, "?")
	for _, l := range p.cfg.Config.Listeners {
		for _, vh := range l.Routes.VirtualHosts {
			if !domainMatches(vh.Domains, req.Authority) {
				continue
			}
			for _, r := range vh.Routes {
				if r.Match.IsPath && r.Match.Path == path || !r.Match.IsPath && strings.HasPrefix(path, r.Match.Prefix) {
					return r.Action, r.Action.Cluster != ""
				}
			}
		}
	}
	return config.RouteAction{}, false
}

func domainMatches(domains []string, host string) bool {
	for _, d := range domains {
		if d == "*" || d == host {
			return true
		}
		if h, _, ok := strings.Cut(host, ":"); ok && d == h {
			return true
		}
	}
	return false
}
