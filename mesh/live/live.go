// Package live is the embedded runner: it builds a scenario's topology in this process on loopback —
// fault-injecting upstream instances, the proxies, the load generator — runs it, and returns the run
// record. No Docker, no network beyond 127.0.0.1.
package live

import (
	"cmp"
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/tcp"
	"github.com/meshproof/meshproof/mesh/drive"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// Options change a run without changing the scenario.
type Options struct {
	// Seed overrides the scenario's seed when not nil.
	Seed *uint64
	// Tracing, when set, traces the run: one TracerProvider for the run (never the global one) shared
	// by the load generator, the proxies and the upstreams, W3C trace context between them. nil: no
	// tracing.
	Tracing *Tracing
	// Progress, when set, is called about every ProgressInterval while the load runs, and once at its
	// end.
	Progress         func(Progress)
	ProgressInterval time.Duration // default 1s
}

// Tracing configures a run's traces.
type Tracing struct {
	// SampleRatio is the share of client requests traced, in (0, 1]; 0 = the default 1.0. Proxies and
	// upstreams follow the load generator's decision.
	SampleRatio float64
	// OTLPEndpoint, when set, also exports the spans over OTLP/HTTP to this URL.
	OTLPEndpoint string
	// Spans, when set, receives the run's spans once the run has ended (e.g. for traces.otlp.json,
	// see tracing.WriteFile). Without it the spans are not kept in memory.
	Spans func([]sdktrace.ReadOnlySpan)
}

// topology is a running scenario: its upstream instances and proxies.
type topology struct {
	upstreams []*instance
	proxies   map[string]*proxy.Server
	tp        *tracing.Provider // nil: the run is not traced

	mu          sync.Mutex
	events      []faults.Event
	proxyEvents []proxy.Event
	attempts    map[string]int // x-request-id → upstream attempts, as the proxy reports them
}

type instance struct {
	service string
	index   int
	up      *faults.Upstream
	// tcp is the TCP fault proxy in front of the instance when a TCP fault rule targets it; the proxy's
	// endpoint is then tcp's address.
	tcp     *tcp.Proxy
	windows []scenarios.TCPWindow
}

// endpoint is where the proxy reaches the instance.
func (in *instance) endpoint() string {
	if in.tcp != nil {
		return in.tcp.Addr()
	}
	return in.up.Addr()
}

// Run starts the scenario's topology, drives its load, and returns the record. Everything it started is
// stopped before it returns, whatever happened.
func Run(ctx context.Context, sc *scenarios.Scenario, opts Options) (*record.Record, error) {
	seed := sc.Seed
	if opts.Seed != nil {
		seed = *opts.Seed
	}
	if cf := sc.ContainerFaults(); len(cf) > 0 {
		return nil, fmt.Errorf("%s: container faults (%s) need the docker runner: meshproof run --runner docker", cf[0].Name, cf[0].Kind)
	}
	topo := &topology{proxies: map[string]*proxy.Server{}, attempts: map[string]int{}}
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
	if err := topo.startUpstreams(sc, seed); err != nil {
		return nil, err
	}
	if err := topo.startProxies(sc, seed); err != nil {
		return nil, err
	}

	l := sc.Load
	cfg := drive.Config(l, "http://"+topo.proxies[l.Target].ListenerAddr(l.Target))
	if topo.tp != nil {
		cfg.Tracer, cfg.Propagator = topo.tp.Tracer(tracing.ScopeLoad), tracing.Propagator()
	}
	var prog *progress
	if opts.Progress != nil {
		prog = newProgress()
		cfg.OnSample = prog.sample
	}
	// Fault windows count from the moment the load starts, like the load's own phases.
	started := time.Now()
	for _, in := range topo.upstreams {
		in.up.SetRunStart(started)
	}
	schedCtx, stopSchedules := context.WithCancel(ctx)
	defer stopSchedules()
	for _, in := range topo.upstreams {
		if in.tcp != nil {
			go scheduleToxics(schedCtx, in, started)
		}
	}
	progDone := make(chan struct{})
	if prog != nil {
		target := topo.proxies[l.Target]
		interval := cmp.Or(opts.ProgressInterval, time.Second)
		go func() {
			defer close(progDone)
			t := time.NewTicker(interval)
			defer t.Stop()
			for {
				select {
				case <-t.C:
					if elapsed := time.Since(started); elapsed < l.Total() {
						// From the planned end on, the final report below says it: a tick there
						// printed the last line twice.
						opts.Progress(prog.snapshot(elapsed, l.Total(), target.Stats().Values()))
					}
				case <-schedCtx.Done():
					return
				}
			}
		}()
	}
	samples, loadStart, err := load.Run(ctx, cfg)
	stopSchedules()
	if prog != nil {
		<-progDone // the ticker's last report is out before the final one
		opts.Progress(prog.snapshot(time.Since(started), l.Total(), topo.proxies[l.Target].Stats().Values()))
	}
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	rec := sc.NewRecord(seed, loadStart, samples)
	rec.ProxyStats = topo.proxies[l.Target].Stats().Values()
	for _, in := range topo.upstreams {
		st := in.up.Stats()
		rec.Upstreams = append(rec.Upstreams, record.UpstreamRecord{
			Service: in.service, Instance: in.index, Address: in.up.Addr(),
			Requests: st.Requests, Statuses: st.Statuses, Resets: st.Resets, Applied: st.Applied,
		})
	}
	rec.Events = topo.faultEvents(loadStart)
	rec.ProxyEvents = topo.proxyRecord(loadStart)
	topo.fillAttempts(rec.Samples)
	return rec, ctx.Err()
}

func (t *topology) startUpstreams(sc *scenarios.Scenario, seed uint64) error {
	names := make([]string, 0, len(sc.Services))
	for n := range sc.Services {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		svc := sc.Services[name]
		for i := range svc.Instances {
			ucfg := faults.UpstreamConfig{
				Service:  name,
				Instance: i,
				Seed:     seed,
				Response: svc.FaultResponse(),
				Faults:   sc.InstanceFaults(name, i),
				OnEvent:  t.record,
			}
			if t.tp != nil {
				ucfg.Tracer, ucfg.Propagator = t.tp.Tracer(tracing.ScopeUpstream), tracing.Propagator()
			}
			up, err := faults.NewUpstream(ucfg)
			if err != nil {
				return err
			}
			if err := up.Start("127.0.0.1:0"); err != nil {
				return err
			}
			in := &instance{service: name, index: i, up: up, windows: sc.InstanceTCPFaults(name, i)}
			t.upstreams = append(t.upstreams, in)
			if len(in.windows) > 0 {
				p, err := tcp.NewProxy(tcp.Config{Name: fmt.Sprintf("%s/%d", name, i), Seed: seed, OnEvent: t.recordTCP(name, i)})
				if err != nil {
					return err
				}
				if err := p.Start("127.0.0.1:0", up.Addr()); err != nil {
					return err
				}
				in.tcp = p
			}
		}
	}
	return nil
}

func (t *topology) startProxies(sc *scenarios.Scenario, seed uint64) error {
	for name, p := range sc.Proxies {
		var endpoints []string
		for _, in := range t.upstreams {
			if in.service == p.RoutesTo {
				endpoints = append(endpoints, in.endpoint())
			}
		}
		b, err := scenarios.BuildBootstrap(sc, name, scenarios.Addresses{Listener: "127.0.0.1:0", Admin: "127.0.0.1:0", Endpoints: endpoints})
		if err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		cfg, err := config.FromProto(b)
		if err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		popts := proxy.Options{Bootstrap: b, OnEvent: t.recordProxy, OnRequest: t.recordAttempts, Rand: proxy.SeededRand(seed, name)}
		if t.tp != nil {
			popts.TracerProvider, popts.Propagator = t.tp, tracing.Propagator()
		}
		srv, err := proxy.New(cfg, popts)
		if err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		if err := srv.Start(); err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		t.proxies[name] = srv
	}
	return nil
}

// scheduleToxics switches an instance's TCP toxics on and off at its fault windows' edges, counted from
// the load's start, until ctx ends.
func scheduleToxics(ctx context.Context, in *instance, start time.Time) {
	for {
		elapsed := time.Since(start)
		var active []tcp.Toxic
		next := time.Duration(-1)
		for _, w := range in.windows {
			end := w.Start + w.Duration
			if elapsed >= w.Start && (w.Duration == 0 || elapsed < end) {
				for j, tx := range w.Toxics {
					if tx.Name == "" {
						tx.Name = fmt.Sprintf("%s.tcp.toxics[%d]", w.Name, j)
					}
					active = append(active, tx)
				}
			}
			for _, edge := range []time.Duration{w.Start, end} {
				if edge > elapsed && (w.Duration > 0 || edge == w.Start) && (next < 0 || edge < next) {
					next = edge
				}
			}
		}
		_ = in.tcp.SetToxics(active...) // validated with the scenario
		if next < 0 {
			return
		}
		t := time.NewTimer(next - elapsed)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// recordTCP turns the TCP fault proxy's events into fault events of the instance.
func (t *topology) recordTCP(service string, index int) func(tcp.Event) {
	return func(e tcp.Event) {
		fault, _, _ := strings.Cut(e.Toxic, ".tcp.")
		t.record(faults.Event{Time: e.Time, Service: service, Instance: index, Seq: e.Conn, Fault: fault,
			Kind: "tcp_" + e.Type, Detail: e.Detail})
	}
}

func (t *topology) recordProxy(e proxy.Event) {
	t.mu.Lock()
	t.proxyEvents = append(t.proxyEvents, e)
	t.mu.Unlock()
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
		samples[i].Attempts = t.attempts[fmt.Sprintf("mp-%d", samples[i].Seq)]
	}
}

// proxyRecord returns the proxy's events as offsets from the run start, naming hosts "service/instance".
func (t *topology) proxyRecord(start time.Time) []record.ProxyEvent {
	names := map[string]string{}
	for _, in := range t.upstreams {
		names[in.endpoint()] = fmt.Sprintf("%s/%d", in.service, in.index)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	out := make([]record.ProxyEvent, 0, len(t.proxyEvents))
	for _, e := range t.proxyEvents {
		host := e.Host
		if n, ok := names[host]; ok {
			host = n
		}
		out = append(out, record.ProxyEvent{At: e.Time.Sub(start), Kind: e.Kind, Cluster: e.Cluster, Host: host, Reason: e.Reason})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
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
		out = append(out, record.FaultEvent{At: e.Time.Sub(start), Service: e.Service, Instance: e.Instance,
			Seq: e.Seq, RequestID: e.RequestID, Fault: e.Fault, Kind: e.Kind, Detail: e.Detail})
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].At < out[j].At })
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
	// Errors while stopping change nothing in a finished run's record.
	for _, p := range t.proxies {
		_ = p.Shutdown(ctx)
	}
	for _, in := range t.upstreams {
		if in.tcp != nil {
			_ = in.tcp.Close()
		}
		_ = in.up.Close()
	}
}
