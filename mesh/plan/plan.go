// Package plan turns a scenario into a plan once — its instances with their fault rules and TCP windows,
// its proxies with their bootstraps, its container faults, the fault kinds it uses — and defines the
// Runner interface every runner implements (mesh/live in this process, mesh/docker as containers), so
// that what a run does is derived in one place and a runner refuses, by name, what it cannot do.
//
// It also holds what every runner does the same way: an upstream instance with its TCP fault proxy
// switched on its windows (Host), the conversion of fault and proxy events into the record (events.go),
// the progress line's accumulator, and a run's mesh certificates for mesh.mtls (PKI, pki.go).
package plan

import (
	"fmt"
	"maps"
	"slices"
	"sort"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/drive"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// Plan is a scenario ready to run, the same for every runner.
type Plan struct {
	Scenario *scenarios.Scenario
	// Seed is the run's seed: the scenario's, or Options.Seed.
	Seed uint64
	// Instances are every service's upstream instances, by service name then index.
	Instances []Instance
	// Proxies are the scenario's proxies, by name.
	Proxies []Proxy
	// Containers are the container-level faults, one per targeted instance, in scenario order.
	Containers []scenarios.ContainerRule
}

// Instance is one upstream instance: how it answers, the HTTP fault rules it applies and the TCP fault
// windows of the proxy in front of it.
type Instance struct {
	Service string
	Index   int
	// Upstream is the fault upstream's configuration, without its event sink and tracer (the runner's).
	Upstream faults.UpstreamConfig
	// TCP are the TCP fault rules on the instance: when there are any, a TCP fault proxy stands in front
	// of it and switches their toxics on for each window (see Host).
	TCP []scenarios.TCPWindow
	// Callees are the services the instance calls, through its own outbound sidecar; empty for a leaf
	// service, which has no sidecar.
	Callees []string
}

// SidecarName is the name of the instance's outbound sidecar in events and traces: the instance's name.
func (in Instance) SidecarName() string { return in.Name() }

// Name is "service/index", the instance's name in events and checks.
func (in Instance) Name() string { return fmt.Sprintf("%s/%d", in.Service, in.Index) }

// Proxy is one of the scenario's proxies.
type Proxy struct {
	Name string
	// Services are the services the proxy routes to (scenarios.Proxy.Services): its routes_to service,
	// or those its routes name.
	Services []string
}

// New plans a run of sc with the given seed (nil: the scenario's).
func New(sc *scenarios.Scenario, seed *uint64) *Plan {
	p := &Plan{Scenario: sc, Seed: sc.Seed, Containers: sc.ContainerFaults()}
	if seed != nil {
		p.Seed = *seed
	}
	for _, name := range slices.Sorted(maps.Keys(sc.Services)) {
		svc := sc.Services[name]
		for i := range svc.Instances {
			p.Instances = append(p.Instances, Instance{
				Service: name,
				Index:   i,
				Upstream: faults.UpstreamConfig{
					Service:  name,
					Instance: i,
					Seed:     p.Seed,
					Response: svc.FaultResponse(),
					Faults:   sc.InstanceFaults(name, i),
					App:      svc.FaultApp(),
					Capacity: svc.FaultCapacity(),
				},
				TCP:     sc.InstanceTCPFaults(name, i),
				Callees: sc.Callees(name),
			})
		}
	}
	for _, name := range slices.Sorted(maps.Keys(sc.Proxies)) {
		p.Proxies = append(p.Proxies, Proxy{Name: name, Services: sc.Proxies[name].Services()})
	}
	return p
}

// CertLifetime is how long the run's mesh certificates are valid (mesh.mtls): short-lived — with
// rotate_every, three rotation periods and 30 s; without, the load's length and 10 minutes.
func (p *Plan) CertLifetime() time.Duration {
	if m := p.Scenario.Mesh; m != nil && m.RotateEvery.Duration > 0 {
		return 3*m.RotateEvery.Duration + 30*time.Second
	}
	return p.Scenario.Load.Total() + 10*time.Minute
}

// NewPKI makes the run's mesh certificates under dir (mesh.mtls): a CA, and one certificate per
// workload of the scenario (scenarios.Scenario.Workloads).
func (p *Plan) NewPKI(dir string) (*PKI, error) {
	return NewPKI(dir, p.Scenario.Workloads(), p.CertLifetime())
}

// Instance returns the planned instance index of service, and whether there is one.
func (p *Plan) Instance(service string, index int) (Instance, bool) {
	for _, in := range p.Instances {
		if in.Service == service && in.Index == index {
			return in, true
		}
	}
	return Instance{}, false
}

// Bootstrap is the Envoy v3 bootstrap of one proxy, its listener and admin at the given addresses and its
// cluster's endpoints at the addresses of the instances of the service it routes to (in instance order).
func (p *Plan) Bootstrap(proxy string, addrs scenarios.Addresses) (*bootstrapv3.Bootstrap, error) {
	return scenarios.BuildBootstrap(p.Scenario, proxy, addrs)
}

// SidecarBootstrap is the Envoy v3 bootstrap of an instance's outbound sidecar (see
// scenarios.SidecarBootstrap); addrs.Endpoints holds the addresses of every callee's instances.
func (p *Plan) SidecarBootstrap(in Instance, addrs scenarios.SidecarAddresses) (*bootstrapv3.Bootstrap, error) {
	return scenarios.SidecarBootstrap(p.Scenario, in.Service, addrs)
}

// StartOrder lists the instances callees first: an instance's callees are all before it, so a runner
// that starts them in this order knows every address a sidecar routes to when it starts it.
func (p *Plan) StartOrder() []Instance {
	depth := p.Scenario.Depth()
	out := append([]Instance(nil), p.Instances...)
	sort.SliceStable(out, func(i, j int) bool { return depth[out[i].Service] > depth[out[j].Service] })
	return out
}

// Graph is the call graph as the record holds it: the services (the entry one marked) and the edges,
// without their sidecars' counters.
func (p *Plan) Graph() ([]record.Service, []record.Edge) {
	var entry []string
	if px, ok := p.Scenario.Proxies[p.Target()]; ok {
		entry = px.Services()
	}
	var services []record.Service
	for _, name := range slices.Sorted(maps.Keys(p.Scenario.Services)) {
		services = append(services, record.Service{Name: name, Instances: p.Scenario.Services[name].Instances, Entry: slices.Contains(entry, name)})
	}
	var edges []record.Edge
	for _, e := range p.Scenario.Edges() {
		edges = append(edges, record.Edge{Caller: e.Caller, Callee: e.Callee})
	}
	return services, edges
}

// Endpoints lists, in instance order, addr(instance) for the instances of service.
func (p *Plan) Endpoints(service string, addr func(Instance) string) []string {
	var out []string
	for _, in := range p.Instances {
		if in.Service == service {
			out = append(out, addr(in))
		}
	}
	return out
}

// ProxyEndpoints maps each service px routes to onto addr(instance) of its instances, in instance
// order: the endpoints of the proxy's bootstrap (scenarios.Addresses).
func (p *Plan) ProxyEndpoints(px Proxy, addr func(Instance) string) map[string][]string {
	out := map[string][]string{}
	for _, svc := range px.Services {
		out[svc] = p.Endpoints(svc, addr)
	}
	return out
}

// LoadConfig is the load generator's configuration for the scenario's load against the target proxy's
// listener at baseURL ("http://host:port").
// The load's mix draws each request's entry from the run's seed.
func (p *Plan) LoadConfig(baseURL string) load.Config {
	cfg := drive.Config(p.Scenario.Load, baseURL)
	cfg.Seed = p.Seed
	return cfg
}

// Target is the proxy the load is sent to.
func (p *Plan) Target() string { return p.Scenario.Load.Target }

// NewRecord starts the run's record: identity, planned load, samples and fault windows.
func (p *Plan) NewRecord(loadStart time.Time, samples []record.Sample) *record.Record {
	return p.Scenario.NewRecord(p.Seed, loadStart, samples)
}

// Kinds lists every fault kind the scenario uses, once each, in scenario order: the HTTP kinds
// ("abort", "latency", …), "tcp:<toxic type>" for each TCP toxic type and "container:<kind>".
func (p *Plan) Kinds() []string {
	seen := map[string]bool{}
	var out []string
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			out = append(out, k)
		}
	}
	for _, f := range p.Scenario.Faults {
		switch {
		case f.Container != "":
			add("container:" + f.Container)
		case f.TCP != nil:
			for _, tx := range f.TCP.Toxics {
				add("tcp:" + tx.Type)
			}
		default:
			for _, k := range f.Kinds() {
				add(k)
			}
		}
	}
	return out
}
