// Package live is the embedded runner: it runs a plan (mesh/plan) in this process on loopback —
// fault-injecting upstream instances with their TCP fault proxies, the proxies, the load generator —
// and returns the run record. No Docker, no network beyond 127.0.0.1.
package live

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// Runner is the embedded runner.
type Runner struct{}

var _ plan.Runner = Runner{}

// Name is "embedded".
func (Runner) Name() string { return "embedded" }

// Supports refuses container faults: there is no container to kill, pause or cut off in this process.
// Every other fault kind and option is supported.
func (Runner) Supports(p *plan.Plan, _ plan.Options) error {
	var parts []string
	seen := map[string]bool{}
	for _, c := range p.Containers {
		if !seen[c.Name] {
			seen[c.Name] = true
			parts = append(parts, fmt.Sprintf("%s: container fault %q", c.Name, c.Kind))
		}
	}
	if len(parts) > 0 {
		return &plan.Unsupported{Runner: "embedded", Parts: parts, Hint: "container faults need the docker runner: meshproof run --runner docker"}
	}
	return nil
}

// Run runs sc on the embedded runner: plan.Run(ctx, Runner{}, plan.New(sc, seed), opts).
func Run(ctx context.Context, sc *scenarios.Scenario, seed *uint64, opts plan.Options) (*record.Record, error) {
	return plan.Run(ctx, Runner{}, plan.New(sc, seed), opts)
}

// topology is a running plan: its upstream instances and proxies.
type topology struct {
	hosts   []*plan.Host
	proxies map[string]*proxy.Server
	tp      *tracing.Provider // nil: the run is not traced

	mu          sync.Mutex
	events      []faults.Event
	proxyEvents []namedEvent
	attempts    map[string]int // x-request-id → upstream attempts, as the proxies report them
	calls       []instanceCall
	// accessLogDir is where each proxy's access log goes ("": none), plan.Options.AccessLogDir.
	accessLogDir string
	// changes is the scenario's control plane; nil when the scenario has no changes.
	changes *changes
	addrs   map[string]string // instance name → address
	// pki is the run's mesh certificates (mesh.mtls), in a temporary directory removed at close; nil
	// when the mesh is plain. rotateErr is the first failed rotation.
	pki       *plan.PKI
	pkiDir    string
	stop      chan struct{} // closed at close: ends the rotation
	rotations sync.WaitGroup
	rotateErr error
}

// namedEvent is a proxy's event with the proxy's name: an ingress proxy's, or "service/instance" for a
// sidecar.
type namedEvent struct {
	proxy string
	proxy.Event
}

// instanceCall is a call an instance made.
type instanceCall struct {
	in plan.Instance
	faults.CallResult
}

// Run starts the plan's topology, drives its load, and returns the record. Everything it started is
// stopped before it returns, whatever happened.
func (Runner) Run(ctx context.Context, p *plan.Plan, opts plan.Options) (*record.Record, error) {
	topo := &topology{proxies: map[string]*proxy.Server{}, attempts: map[string]int{}, accessLogDir: opts.AccessLogDir}
	if opts.AccessLogDir != "" {
		if err := os.MkdirAll(opts.AccessLogDir, 0o755); err != nil {
			return nil, fmt.Errorf("access logs: %w", err)
		}
	}
	if opts.Tracing != nil {
		tp, err := tracing.New(tracing.Config{SampleRatio: opts.Tracing.SampleRatio, OTLPEndpoint: opts.Tracing.OTLPEndpoint,
			Collect: opts.Tracing.Spans != nil})
		if err != nil {
			return nil, err
		}
		topo.tp = tp
		// Stopped after the topology (deferred before it): every span has ended by then.
		defer topo.endTracing(opts.Tracing.Spans)
	}
	defer topo.close()
	if len(p.Scenario.Changes) > 0 {
		ch, err := startChanges()
		if err != nil {
			return nil, err
		}
		topo.changes = ch
	}
	if p.Scenario.MTLSOn() {
		if err := topo.startPKI(p); err != nil {
			return nil, fmt.Errorf("mesh.mtls: %w", err)
		}
	}
	if err := topo.startHosts(p); err != nil {
		return nil, err
	}
	if err := topo.startProxies(p); err != nil {
		return nil, err
	}

	target := topo.proxies[p.Target()]
	cfg := p.LoadConfig("http://" + target.ListenerAddr(p.Target()))
	if topo.tp != nil {
		cfg.Tracer, cfg.Propagator = topo.tp.For(tracing.LoadServiceName, "").Tracer(tracing.ScopeLoad), tracing.Propagator()
	}
	tracker := plan.NewTracker()
	if opts.Progress != nil {
		cfg.OnSample = tracker.Sample
	}
	// One clock for the run: fault windows (HTTP rules and TCP toxics) count from the load's own origin
	// (the instant its intended send times count from), set before its first request is due.
	cfg.OnStart = func(origin time.Time) {
		for _, h := range topo.hosts {
			h.SetRunStart(origin)
		}
		if topo.changes != nil {
			topo.schedule(p, origin, topo.addrs)
		}
		topo.rotate(p)
	}
	started := time.Now() // progress only
	finishProgress := tracker.Report(ctx, opts, started, p.Scenario.Load.Total(), func() map[string]uint64 { return target.Stats().Values() })
	samples, loadStart, err := load.Run(ctx, cfg)
	finishProgress()
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	rec := p.NewRecord(loadStart, samples)
	rec.ProxyStats = target.Stats().Values()
	for _, h := range topo.hosts {
		rec.Upstreams = append(rec.Upstreams, plan.UpstreamRecord(h.Instance(), h.Upstream().Addr(), h.Stats()))
	}
	rec.Events = topo.faultEvents(loadStart)
	plan.ExtendRefuseWindows(rec.Windows, rec.Events)
	rec.ProxyEvents = topo.proxyRecord(loadStart)
	topo.fillAttempts(rec.Samples)
	rec.Services, rec.Edges = p.Graph()
	topo.fillGraph(rec, loadStart)
	if topo.pki != nil {
		topo.stopRotation()
		if topo.rotateErr != nil {
			return nil, fmt.Errorf("mesh.mtls: %w", topo.rotateErr)
		}
		rec.MTLS = &record.MTLS{Workloads: len(p.Scenario.Workloads()), Rotations: topo.pki.Rotations(),
			ClientCertificates: topo.pki.ClientCertificates()}
	}
	if topo.changes != nil {
		if err := topo.changes.err(); err != nil {
			return nil, fmt.Errorf("control plane: %w", err)
		}
		topo.changeRecords(rec, loadStart, p)
	}
	return rec, ctx.Err()
}

// startHosts starts every instance, callees first, so that each sidecar's endpoints are known when it
// starts; the hosts are kept in plan order.
func (t *topology) startHosts(p *plan.Plan) error {
	started := map[string]*plan.Host{}
	for _, in := range p.StartOrder() {
		hc := plan.HostConfig{Listen: "127.0.0.1:0", OnEvent: t.record, Upstream: func(c *faults.UpstreamConfig) {
			if t.tp != nil {
				c.Tracer, c.Propagator = t.tp.For(in.Service, in.Name()).Tracer(tracing.ScopeUpstream), tracing.Propagator()
			}
			if c.App != nil {
				c.App.OnCall = func(r faults.CallResult) { t.recordCall(in, r) }
			}
		}}
		if t.pki != nil {
			hc.TLS = t.pki.ServerConfig(in.Service, p.Scenario.AllowedCallers(in.Service))
		}
		if len(in.Callees) > 0 {
			endpoints := map[string][]string{}
			for _, callee := range in.Callees {
				endpoints[callee] = p.Endpoints(callee, func(c plan.Instance) string { return started[c.Name()].Addr() })
			}
			b, err := p.SidecarBootstrap(in, scenarios.SidecarAddresses{Listener: "127.0.0.1:0", Admin: "127.0.0.1:0", Endpoints: endpoints, TLS: t.meshTLS()})
			if err != nil {
				return fmt.Errorf("%s: sidecar: %w", in.Name(), err)
			}
			name := in.SidecarName()
			// As Envoy's with --service-cluster: a sidecar's spans carry its service's name.
			hc.Sidecar = &plan.SidecarConfig{Bootstrap: b, Options: t.proxyOptions(p, name, in.Service, in.Name())}
		}
		h, err := plan.StartHost(in, hc)
		if err != nil {
			return err
		}
		started[in.Name()] = h
	}
	for _, in := range p.Instances {
		t.hosts = append(t.hosts, started[in.Name()])
	}
	return nil
}

// proxyOptions are the options of the proxy called name (an ingress proxy, or an instance's sidecar):
// events and attempt counts into the topology, randomness from the run's seed and the name, spans with
// the resource of service (and instance).
func (t *topology) proxyOptions(p *plan.Plan, name, service, instance string) proxy.Options {
	opts := proxy.Options{OnEvent: func(e proxy.Event) { t.recordProxy(name, e) }, OnRequest: t.recordAttempts, Rand: proxy.SeededRand(p.Seed, name)}
	if t.tp != nil {
		opts.TracerProvider, opts.Propagator = t.tp.For(service, instance), tracing.Propagator()
	}
	if t.accessLogDir != "" {
		// A sidecar's name is "service/index": its file is service-index.log.
		opts.AccessLogPath = filepath.Join(t.accessLogDir, strings.ReplaceAll(name, "/", "-")+".log")
	}
	return opts
}

func (t *topology) startProxies(p *plan.Plan) error {
	addrs := map[string]string{}
	for _, h := range t.hosts {
		addrs[h.Instance().Name()] = h.Addr()
	}
	t.addrs = addrs
	changed := p.Scenario.ChangedProxies()
	for _, px := range p.Proxies {
		if slices.Contains(changed, px.Name) {
			srv, err := t.startDynamicProxy(p, px, addrs)
			if srv != nil {
				t.proxies[px.Name] = srv
			}
			if err != nil {
				return fmt.Errorf("proxy %s: %w", px.Name, err)
			}
			continue
		}
		endpoints := p.ProxyEndpoints(px, func(in plan.Instance) string { return addrs[in.Name()] })
		b, err := p.Bootstrap(px.Name, scenarios.Addresses{Listener: "127.0.0.1:0", Admin: "127.0.0.1:0", Endpoints: endpoints, TLS: t.meshTLS()})
		if err != nil {
			return fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		cfg, err := config.FromProto(b)
		if err != nil {
			return fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		// The proxy's randomness (back-off jitter, picks) derives from the run's seed and its name.
		popts := t.proxyOptions(p, px.Name, px.Name, px.Name)
		popts.Bootstrap = b
		srv, err := proxy.New(cfg, popts)
		if err != nil {
			return fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("proxy %s: %w", px.Name, err)
		}
		t.proxies[px.Name] = srv
	}
	return nil
}

func (t *topology) recordProxy(name string, e proxy.Event) {
	t.mu.Lock()
	t.proxyEvents = append(t.proxyEvents, namedEvent{name, e})
	t.mu.Unlock()
}

func (t *topology) recordCall(in plan.Instance, r faults.CallResult) {
	t.mu.Lock()
	t.calls = append(t.calls, instanceCall{in, r})
	t.mu.Unlock()
}

// fillGraph completes the record of a call graph: every call with its sidecar's attempt count, in send
// order, and each edge's counters summed over its caller's sidecars.
func (t *topology) fillGraph(rec *record.Record, start time.Time) {
	t.mu.Lock()
	for _, c := range t.calls {
		rc := plan.CallRecord(c.in, c.CallResult, start)
		n, ok := t.attempts[c.RequestID]
		rc.Attempts, rc.ZeroAttempts = n, ok && n == 0
		rec.Calls = append(rec.Calls, rc)
	}
	t.mu.Unlock()
	plan.SortCalls(rec.Calls)
	for i, e := range rec.Edges {
		var stats []map[string]uint64
		for _, h := range t.hosts {
			if h.Instance().Service == e.Caller && h.Sidecar() != nil {
				stats = append(stats, h.Sidecar().Stats().Values())
			}
		}
		rec.Edges[i].SidecarStats = plan.SidecarStats(e.Callee, stats...)
	}
}

func (t *topology) recordAttempts(id string, attempts int) {
	t.mu.Lock()
	t.attempts[id] = attempts
	t.mu.Unlock()
}

// fillAttempts gives each sample the proxy's attempt count for its request ("mp-<seq>").
func (t *topology) fillAttempts(samples []record.Sample) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for i := range samples {
		n, ok := t.attempts[fmt.Sprintf("mp-%d", samples[i].Seq)]
		// The proxy reports every request that reached a cluster, those it made no attempt for (an
		// overflow, no healthy host) with 0: a known count.
		samples[i].Attempts, samples[i].ZeroAttempts = n, ok && n == 0
	}
}

// proxyRecord returns the proxy's events as offsets from the run start, naming hosts "service/instance".
func (t *topology) proxyRecord(start time.Time) []record.ProxyEvent {
	names := map[string]string{}
	for _, h := range t.hosts {
		names[h.Addr()] = h.Instance().Name()
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record.ProxyEvent, 0, len(t.proxyEvents))
	for _, e := range t.proxyEvents {
		host := e.Host
		if n, ok := names[host]; ok {
			host = n
		}
		out = append(out, record.ProxyEvent{At: e.Time.Sub(start), Kind: e.Kind, Cluster: e.Cluster, Host: host, Reason: e.Reason, Proxy: e.proxy})
	}
	plan.SortProxyEvents(out)
	return out
}

func (t *topology) record(e faults.Event) {
	t.mu.Lock()
	t.events = append(t.events, e)
	t.mu.Unlock()
}

// faultEvents returns the fault events in time order, as offsets from the run start.
func (t *topology) faultEvents(start time.Time) []record.FaultEvent {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record.FaultEvent, 0, len(t.events))
	for _, e := range t.events {
		out = append(out, plan.FaultEvent(e, start))
	}
	plan.SortFaultEvents(out)
	return out
}

// endTracing flushes and stops the run's TracerProvider, then hands its spans to sink (if any).
func (t *topology) endTracing(sink func([]sdktrace.ReadOnlySpan)) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_ = t.tp.Shutdown(ctx) // an OTLP endpoint that cannot be reached changes nothing in the record
	if sink != nil {
		sink(t.tp.Spans())
	}
}

func (t *topology) close() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if t.changes != nil {
		t.changes.close()
	}
	// Errors while stopping change nothing in a finished run's record.
	for _, p := range t.proxies {
		_ = p.Shutdown(ctx)
	}
	for _, h := range t.hosts {
		_ = h.Close()
	}
	if t.pki != nil {
		t.stopRotation()
		_ = os.RemoveAll(t.pkiDir)
	}
}

// startPKI makes the run's mesh certificates in a new temporary directory (mesh.mtls).
func (t *topology) startPKI(p *plan.Plan) error {
	dir, err := os.MkdirTemp("", "meshproof-mtls-")
	if err != nil {
		return err
	}
	t.pkiDir, t.stop = dir, make(chan struct{})
	pki, err := p.NewPKI(dir)
	if err != nil {
		_ = os.RemoveAll(dir)
		return err
	}
	t.pki = pki
	return nil
}

// meshTLS is where the proxies find the run's certificates; nil when the mesh is plain.
func (t *topology) meshTLS() *scenarios.MeshTLS {
	if t.pki == nil {
		return nil
	}
	return &t.pki.TLS
}

// rotate re-issues every mesh certificate each mesh.rotate_every from now until the run ends; the
// first failure stops it and fails the run.
func (t *topology) rotate(p *plan.Plan) {
	m := p.Scenario.Mesh
	if t.pki == nil || m.RotateEvery.Duration <= 0 {
		return
	}
	t.rotations.Add(1)
	go func() {
		defer t.rotations.Done()
		tick := time.NewTicker(m.RotateEvery.Duration)
		defer tick.Stop()
		for {
			select {
			case <-t.stop:
				return
			case <-tick.C:
				if err := t.pki.Rotate(); err != nil {
					t.mu.Lock()
					t.rotateErr = err
					t.mu.Unlock()
					return
				}
			}
		}
	}()
}

// stopRotation ends the rotation and waits for it (idempotent).
func (t *topology) stopRotation() {
	t.mu.Lock()
	select {
	case <-t.stop:
	default:
		close(t.stop)
	}
	t.mu.Unlock()
	t.rotations.Wait()
}
