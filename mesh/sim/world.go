package sim

import (
	"fmt"
	"slices"
	"time"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// world is a plan on the engine: its instances (Upstreams at synthetic addresses), the ingress proxies
// and each calling instance's sidecar (proxy models of the same Envoy configuration the embedded runner
// runs), and what the record collects from them.
type world struct {
	en        *Engine
	p         *plan.Plan
	hop       time.Duration
	bandwidth int64 // bytes/s of a body without slow_body

	instances []*instance         // plan order
	byAddr    map[string]Upstream // the instances, behind their TCP fronts
	proxies   map[string]*Proxy   // ingress proxies by name
	listeners map[string]string   // ingress proxies' listener addresses by name

	events      chunked[record.FaultEvent]
	proxyEvents []record.ProxyEvent
	calls       chunked[callEntry]
	answers     map[int]changeAnswer // how the proxies answered the changes, by index (changes.go)

	mtls *meshTLS // mesh.mtls (mtls.go); nil on a plain mesh
}

// callEntry is one call as recorded, and when it ended for its caller (-1 while in flight).
type callEntry struct {
	call record.Call
	end  time.Duration
}

// proxyConf is one proxy of the plan with its configuration: an ingress proxy, or an instance's sidecar
// (Instance set).
type proxyConf struct {
	name     string
	instance *plan.Instance
	cfg      *config.Bootstrap
	listener string // its (synthetic) listener address
}

// instanceAddr is the synthetic address of the i-th instance of the plan: 10.a.b.c:8080, unique for
// up to 2^24 instances.
func instanceAddr(i int) string {
	i++
	return fmt.Sprintf("10.%d.%d.%d:8080", i>>16&0xff, i>>8&0xff, i&0xff)
}

// addresses maps each instance's name to its synthetic address.
func addresses(p *plan.Plan) map[string]string {
	out := make(map[string]string, len(p.Instances))
	for i, in := range p.Instances {
		out[in.Name()] = instanceAddr(i)
	}
	return out
}

// configs builds every proxy's configuration as the embedded runner does: the ingress proxies from
// Plan.Bootstrap, the sidecars from Plan.SidecarBootstrap, each through config.FromProto. The listener
// addresses are synthetic (nothing listens); no admin interface.
func configs(p *plan.Plan, addrs map[string]string) ([]proxyConf, error) {
	addr := func(in plan.Instance) string { return addrs[in.Name()] }
	// Each service's endpoints once (plan.Endpoints walks every instance: once per sidecar's callee it
	// made planning quadratic in the mesh's size), in instance order as plan.Endpoints gives them.
	byService := map[string][]string{}
	for _, in := range p.Instances {
		byService[in.Service] = append(byService[in.Service], addr(in))
	}
	var out []proxyConf
	changed := map[string]bool{}
	for _, name := range p.Scenario.ChangedProxies() {
		changed[name] = true
	}
	for k, px := range p.Proxies {
		listener := proxyListener(k)
		if changed[px.Name] { // its first configuration from the control plane (changes.go)
			cfg, detail, err := stateConfig(p, px.Name, p.Scenario.InitialState(px.Name), listener, addrs)
			if err == nil && detail != "" {
				err = fmt.Errorf("its first configuration from the control plane was rejected: %s", detail)
			}
			if err != nil {
				return nil, fmt.Errorf("proxy %s: %w", px.Name, err)
			}
			out = append(out, proxyConf{name: px.Name, cfg: cfg, listener: listener})
			continue
		}
		b, err := p.Bootstrap(px.Name, scenarios.Addresses{Listener: listener, Endpoints: p.ProxyEndpoints(px, addr)})
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		cfg, err := config.FromProto(b)
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		out = append(out, proxyConf{name: px.Name, cfg: cfg, listener: listener})
	}
	// A sidecar's bootstrap is a function of its service alone (Plan.SidecarBootstrap reads in.Service;
	// the endpoints are its callees' and the listener is the same for all): the instances of a service
	// share one configuration, which the proxy model only reads.
	sidecars := map[string]*config.Bootstrap{}
	for i := range p.Instances {
		in := &p.Instances[i]
		if len(in.Callees) == 0 {
			continue
		}
		if cfg, ok := sidecars[in.Service]; ok {
			out = append(out, proxyConf{name: in.SidecarName(), instance: in, cfg: cfg, listener: "127.0.0.1:15001"})
			continue
		}
		endpoints := map[string][]string{}
		for _, callee := range in.Callees {
			endpoints[callee] = slices.Clone(byService[callee])
		}
		b, err := p.SidecarBootstrap(*in, scenarios.SidecarAddresses{Listener: "127.0.0.1:15001", Endpoints: endpoints})
		if err != nil {
			return nil, fmt.Errorf("%s: sidecar: %w", in.Name(), err)
		}
		cfg, err := config.FromProto(b)
		if err != nil {
			return nil, fmt.Errorf("%s: sidecar: %w", in.Name(), err)
		}
		sidecars[in.Service] = cfg
		out = append(out, proxyConf{name: in.SidecarName(), instance: in, cfg: cfg, listener: "127.0.0.1:15001"})
	}
	return out, nil
}

// newWorld builds the plan's world on en, its instances at addrs (addresses) and its proxies with confs
// (configs).
func newWorld(en *Engine, p *plan.Plan, addrs map[string]string, confs []proxyConf, hop time.Duration, bandwidth int64) (*world, error) {
	w := &world{en: en, p: p, hop: hop, bandwidth: bandwidth, byAddr: map[string]Upstream{}, proxies: map[string]*Proxy{},
		listeners: map[string]string{}, mtls: newMeshTLS(p.Scenario)}
	byName := map[string]*instance{}
	for _, in := range p.Instances {
		it := newInstance(w, in, addrs[in.Name()])
		w.instances = append(w.instances, it)
		w.byAddr[it.addr] = it.upstream()
		byName[it.name] = it
	}
	for _, c := range confs {
		// Each proxy's randomness derives from the run's seed and its name, as the embedded runner's
		// proxy.SeededRand(seed, name).
		px, err := NewProxy(en, ProxyConfig{Name: c.name, Config: c.cfg, Resolve: w.resolve, Seed: p.Seed, Hop: hop,
			OnEvent: w.proxyEvent(c.name)})
		if err != nil {
			return nil, fmt.Errorf("proxy %s: %w", c.name, err)
		}
		if c.instance != nil {
			byName[c.name].sidecar = px
		} else {
			w.proxies[c.name], w.listeners[c.name] = px, c.listener
		}
	}
	return w, nil
}

func (w *world) resolve(addr string) (Upstream, bool) {
	up, ok := w.byAddr[addr]
	if !ok {
		return nil, false
	}
	return up, true
}

func (w *world) proxyEvent(name string) func(ProxyEvent) {
	return func(e ProxyEvent) {
		w.proxyEvents = append(w.proxyEvents, record.ProxyEvent{At: e.At, Kind: e.Kind, Cluster: e.Cluster, Host: e.Host,
			Reason: e.Reason, Proxy: name})
	}
}

// start starts the proxies (sidecars first, in plan order, then the ingress proxies in name order) and
// the instances' refuse schedules, at virtual 0: the load's origin.
func (w *world) start() {
	for _, it := range w.instances {
		if it.sidecar != nil {
			it.sidecar.Start()
		}
	}
	for _, px := range w.p.Proxies {
		w.proxies[px.Name].Start()
	}
	for _, it := range w.instances {
		it.startRefuse()
		if it.front != nil {
			it.front.start()
		}
	}
}

// stop stops every proxy (their timers); the instances hold nothing.
func (w *world) stop() {
	for _, px := range w.p.Proxies {
		w.proxies[px.Name].Stop()
	}
	for _, it := range w.instances {
		if it.sidecar != nil {
			it.sidecar.Stop()
		}
	}
}
