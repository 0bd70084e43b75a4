package sim

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// Defaults of a Runner.
const (
	// DefaultHop is the one-way network delay of every hop (client → proxy, proxy → instance, instance →
	// sidecar, and each way back): a loopback round trip on Linux is some tens of µs.
	DefaultHop = 50 * time.Microsecond
	// DefaultBandwidth is the rate a body is sent at without slow_body, in bytes per second: loopback-like.
	DefaultBandwidth = 1 << 30
)

// Runner is the virtual-time runner: `meshproof run --runner sim`. Its zero value uses the defaults.
type Runner struct {
	// Hop is the one-way network delay of each hop; 0: DefaultHop.
	Hop time.Duration
	// Bandwidth is the bytes per second of a body without slow_body; 0: DefaultBandwidth.
	Bandwidth int64
	// ChangeDelay is the time from a configuration change's push to the proxy using it; 0:
	// DefaultChangeDelay.
	ChangeDelay time.Duration
}

var _ plan.Runner = Runner{}

// Name is "sim".
func (Runner) Name() string { return "sim" }

// Supports refuses, by name, what the simulator does not model: container faults, the TCP toxics the
// TCP front does not model (tcpRefusals), HTTP/2 faults and gRPC aborts, h2c and gRPC loads, traces, access
// logs, and every proxy configuration field the proxy model would ignore (Unsupported).
func (r Runner) Supports(p *plan.Plan, opts plan.Options) error {
	addrs := addresses(p)
	confs, err := configs(p, addrs)
	if err != nil {
		return err
	}
	chs, err := planChanges(p, listenerAddrs(confs), addrs)
	if err != nil {
		return err
	}
	return refusals(p, opts, append(confs, changeConfs(chs)...))
}

// refusals is Supports with the proxies' configurations built.
func refusals(p *plan.Plan, opts plan.Options, confs []proxyConf) error {
	sc := p.Scenario
	var parts []string
	for _, c := range p.Containers {
		parts = append(parts, fmt.Sprintf("%s: container fault %q", c.Name, c.Kind))
	}
	for i, f := range sc.Faults {
		name := fmt.Sprintf("faults[%d]", i)
		switch {
		case f.Container != "":
			// listed above, per instance
		case f.TCP != nil:
			// the toxics the TCP front cannot model, below
		case f.H2 != nil:
			parts = append(parts, name+": h2 fault (HTTP/2 RST_STREAM/GOAWAY)")
		case f.Abort != nil && f.Abort.GRPCStatus != 0:
			parts = append(parts, name+": abort.grpc_status (gRPC answers)")
		}
	}
	parts = append(parts, tcpRefusals(p)...)
	if l := sc.Load; l.Protocol != "" && l.Protocol != scenarios.ProtocolHTTP1 {
		parts = append(parts, fmt.Sprintf("load.protocol: %s (the simulated load speaks HTTP/1.1)", l.Protocol))
	}
	if opts.Tracing != nil {
		parts = append(parts, "--trace-ratio/--otlp-endpoint: traces (use --trace-ratio 0)")
	}
	if opts.AccessLogDir != "" {
		parts = append(parts, "access logs (Options.AccessLogDir): the simulator writes none")
	}
	// The proxy model's own refusals, once per ingress proxy and per calling service.
	seen := map[string]bool{}
	checked := map[*config.Bootstrap]bool{} // a service's sidecars share one configuration (configs)
	for _, c := range confs {
		if checked[c.cfg] {
			continue
		}
		checked[c.cfg] = true
		who := "proxy " + c.name
		if c.instance != nil {
			who = "sidecar of " + c.instance.Service
		}
		for _, path := range Unsupported(c.cfg) {
			if part := who + ": " + path; !seen[part] {
				seen[part] = true
				parts = append(parts, part)
			}
		}
	}
	if len(parts) > 0 {
		return &plan.Unsupported{Runner: "sim", Parts: parts, Hint: "run it on the embedded runner (--runner embedded)"}
	}
	return nil
}

// errStalled is a simulation whose load has not ended and that has nothing left to do: a bug of a model.
var errStalled = errors.New("sim: the run stalled: requests in flight and no event left")

// Run runs the plan on virtual time and returns its record. Record.Started is the wall-clock start; every
// offset in the record is virtual. On cancellation it returns the record so far (requests in flight
// canceled, those not yet due left out) with ctx's error.
func (r Runner) Run(ctx context.Context, p *plan.Plan, opts plan.Options) (*record.Record, error) {
	started := time.Now()
	addrs := addresses(p)
	confs, err := configs(p, addrs)
	if err != nil {
		return nil, err
	}
	chs, err := planChanges(p, listenerAddrs(confs), addrs)
	if err != nil {
		return nil, err
	}
	// A runner never runs what it does not support, whoever calls it.
	if err := refusals(p, opts, append(confs[:len(confs):len(confs)], changeConfs(chs)...)); err != nil {
		return nil, err
	}
	en := &Engine{}
	w, err := newWorld(en, p, addrs, confs, cmp.Or(r.Hop, DefaultHop), cmp.Or(r.Bandwidth, DefaultBandwidth))
	if err != nil {
		return nil, err
	}
	target, ok := w.proxies[p.Target()]
	if !ok {
		return nil, fmt.Errorf("sim: load.target %q: no such proxy", p.Target())
	}
	listener := w.listeners[p.Target()]
	c, err := newClient(en, p.LoadConfig("http://"+listener), target, listener, w.hop)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}
	tracker := plan.NewTracker()
	if opts.Progress != nil {
		c.onSample = tracker.Sample
	}
	var end *snapshot
	c.onIdle = func() { end = w.snapshot(target) }
	w.scheduleChanges(chs, cmp.Or(r.ChangeDelay, DefaultChangeDelay))
	w.start()
	c.start()

	planned := p.Scenario.Load.Total()
	interval := cmp.Or(opts.ProgressInterval, time.Second)
	for end == nil {
		if ctx.Err() != nil {
			c.cancel()
			end = w.snapshot(target)
			break
		}
		if en.Pending() == 0 {
			return nil, errStalled
		}
		en.Run(en.Now() + interval)
		if opts.Progress != nil && end == nil && en.Now() < planned {
			opts.Progress(c.progress(tracker, planned))
		}
	}
	if opts.Progress != nil {
		opts.Progress(tracker.Snapshot(end.at, planned, end.proxyStats))
	}
	w.stop()
	return w.record(started, c.samples, end), ctx.Err()
}
