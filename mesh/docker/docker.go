// Package docker is the container runner. It builds a scenario's topology as Docker containers with
// testcontainers-go — one container per upstream instance (`meshproof upstream`, with the instance's
// outbound sidecar in the same process when its service calls others) and per proxy (`meshproof
// proxy`), on a network of its own, from an image built FROM scratch around the static meshproof
// binary — drives the load from this process against the proxy's published port, applies
// container-level faults (kill, pause, network partition, restart) on schedule, and returns the same run
// record as the embedded runner (mesh/live).
//
// Nothing is pulled: the image is built with the classic builder, Ryuk is disabled, no ready-made module
// is used. Everything a run creates — containers, network, and the image unless one is given — is
// removed before Run returns, whether the run succeeds, fails or is cancelled.
package docker

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	cerrdefs "github.com/containerd/errdefs"
	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	"github.com/google/uuid"
	"github.com/moby/moby/api/types/container"
	mobynet "github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/network"
	"github.com/testcontainers/testcontainers-go/wait"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/scenarios"
)

// Ports inside the containers, and where the generated files go.
const (
	UpstreamPort  = 8080  // `meshproof upstream --listen`
	ControlPort   = 9000  // `meshproof upstream --control`
	ListenerPort  = 10000 // the proxy's listener
	AdminPort     = 9901  // the proxy's admin interface
	ScenarioPath  = "/etc/meshproof/scenario.yaml"
	BootstrapPath = "/etc/meshproof/bootstrap.yaml"

	// An instance's outbound sidecar, inside its upstream container: the app sends its calls to the
	// listener on loopback; the admin is on the run network (not published: the runner reads the
	// sidecar's stats and decisions through the control port's /record, with the calls).
	SidecarListenerPort  = 15001
	SidecarAdminPort     = 15000
	SidecarBootstrapPath = "/etc/meshproof/sidecar.yaml"
)

// Defaults of Options.
const (
	DefaultReadyTimeout  = 60 * time.Second
	DefaultStatsInterval = 500 * time.Millisecond
)

const (
	cleanupTimeout = 60 * time.Second       // for removing what a run created, even after ctx is cancelled
	startLead      = 250 * time.Millisecond // the run start is set this far ahead, so every upstream has it
	stopGrace      = time.Second            // SIGTERM to SIGKILL when stopping containers
)

// Options configure the docker runner (what plan.Options leave to it).
type Options struct {
	// Image is the tag of a meshproof image to run (e.g. one from BuildImage or `make image`), kept after
	// the run. "" builds an image for this run and removes it at the end.
	Image string
	// Binary is the static Linux meshproof binary to build the image from when Image is "" (see
	// ImageOptions.Binary).
	Binary string
	// Faults are container-level faults, applied on schedule from the load's start.
	Faults []ContainerFault
	// Labels are added to every container, network and image the run creates.
	Labels map[string]string
	// Log receives progress lines; nil discards them.
	Log io.Writer
	// Verbose adds testcontainers' log and the image build output to Log.
	Verbose bool
	// ReadyTimeout bounds each container's start until its /ready answers 200; default 60s.
	ReadyTimeout time.Duration
	// OnStats, when set, receives the target proxy's stats every StatsInterval (default 500ms) while the
	// load runs, with the time since the load's start. It is called from one goroutine.
	OnStats       func(at time.Duration, stats map[string]uint64)
	StatsInterval time.Duration
}

// runner is one run's Docker resources and state.
type runner struct {
	opts   Options
	id     string
	labels map[string]string
	log    io.Writer
	tclog  tclog.Logger
	cli    *testcontainers.DockerClient
	cc     *controlClient
	bindIP string // host address published ports bind to; "" = all interfaces

	image   *Image // built for this run
	network *testcontainers.DockerNetwork
	ips     ipPlan

	mu         sync.Mutex
	containers []*testcontainers.DockerContainer // every container created, for cleanup
	upstreams  []*upstream
	proxies    map[string]*testcontainers.DockerContainer

	evMu   sync.Mutex
	events []record.FaultEvent // container faults

	// Tracing: the load's spans in this process, the containers' through an OTLP receiver on the run
	// network's gateway address (nil: the run is not traced).
	tp   *tracing.Provider
	recv *tracing.Receiver
}

// upstream is one upstream instance's container.
type upstream struct {
	in      plan.Instance
	service string
	index   int
	ip      netip.Addr
	sidecar []byte // the bootstrap of its outbound sidecar; nil for a leaf
	c       *testcontainers.DockerContainer

	mu      sync.Mutex
	earlier []UpstreamReport // what the instance reported before each kill or restart
	down    bool             // stopped by a kill or restart, not started again
	paused  bool
}

func (u *upstream) name() string { return u.service + "/" + strconv.Itoa(u.index) }

// aliases are the instance's DNS names on the run network: "<service>-<i>" and, shared by every
// instance, "<service>".
func (u *upstream) aliases() []string {
	return []string{u.service + "-" + strconv.Itoa(u.index), u.service}
}

// Runner is the docker runner, with its own options.
type Runner struct{ Options }

var _ plan.Runner = Runner{}

// Name is "docker".
func (Runner) Name() string { return "docker" }

// Supports supports every fault kind — HTTP rules in each upstream container, TCP toxics by a TCP fault
// proxy inside it (plan.Host), container faults through Docker — call graphs (each calling instance's
// sidecar runs in its container), finite capacity, and traces (the containers export their spans to a
// receiver of the run). It refuses a scenario without a file, which the upstream containers could not
// read, a scenario with mesh.mtls (no certificates in the containers yet), and container faults in
// r.Faults that do not fit the scenario.
func (r Runner) Supports(p *plan.Plan, _ plan.Options) error {
	var parts []string
	if p.Scenario.File == "" {
		parts = append(parts, "a scenario without a file (the upstream containers read it)")
	}
	for i := range p.Scenario.Changes {
		// The control plane runs in the runner's process; the proxy containers do not reach it.
		parts = append(parts, fmt.Sprintf("changes[%d]: a configuration change pushed over xDS by the scenario's control plane", i))
	}
	if p.Scenario.MTLSOn() {
		// Never run a mutual-TLS scenario in clear text: the containers get no certificates yet.
		parts = append(parts, "mesh.mtls: mutual TLS between the proxies and the instances (certificates are not mounted into the containers yet)")
	}
	if l := p.Scenario.Load; l != nil && (l.Protocol == scenarios.ProtocolH2C || l.Protocol == scenarios.ProtocolGRPC) {
		// The plumbing is the embedded runner's (the same bootstraps and load), but it has not been run
		// in containers yet.
		parts = append(parts, "load.protocol "+l.Protocol+" (not yet run in containers)")
	}
	if err := ValidateFaults(p.Scenario, r.Faults); err != nil {
		return err
	}
	if len(parts) > 0 {
		return &plan.Unsupported{Runner: "docker", Parts: parts, Hint: "use --runner embedded"}
	}
	return nil
}

// Run runs sc in Docker with the given seed (nil: the scenario's): plan.Run(ctx, Runner{opts},
// plan.New(sc, seed), popts).
func Run(ctx context.Context, sc *scenarios.Scenario, seed *uint64, opts Options, popts plan.Options) (*record.Record, error) {
	return plan.Run(ctx, Runner{opts}, plan.New(sc, seed), popts)
}

// Run starts the plan's topology in Docker, drives its load, applies the scenario's and r.Faults'
// container faults, and returns the record, shaped like the embedded runner's. Everything it created is
// removed before it returns, with a fresh context when ctx is cancelled. On cancellation during the load
// it returns the record so far and ctx's error, like mesh/live.
func (rr Runner) Run(ctx context.Context, p *plan.Plan, popts plan.Options) (rec *record.Record, err error) {
	opts, sc := rr.Options, p.Scenario
	if sc.File == "" {
		return nil, errors.New("docker runner: the scenario has no file (the upstream containers read it)")
	}
	scenarioYAML, err := os.ReadFile(sc.File)
	if err != nil {
		return nil, fmt.Errorf("docker runner: %w", err)
	}
	// The scenario's own container faults (faults[i].container) join the ones given in opts.
	for _, c := range p.Containers {
		opts.Faults = append(opts.Faults, ContainerFault{At: c.Start, For: c.Duration, Service: c.Service, Instance: c.Instance, Kind: c.Kind, Name: c.Name})
	}
	if err := ValidateFaults(sc, opts.Faults); err != nil {
		return nil, err
	}
	if opts.ReadyTimeout <= 0 {
		opts.ReadyTimeout = DefaultReadyTimeout
	}
	if opts.StatsInterval <= 0 {
		opts.StatsInterval = DefaultStatsInterval
	}
	r := &runner{
		opts:    opts,
		id:      uuid.NewString()[:8],
		log:     opts.Log,
		tclog:   tclog.NewNoopLogger(),
		cc:      newControlClient(),
		bindIP:  dockerEnv(),
		proxies: map[string]*testcontainers.DockerContainer{},
	}
	if r.log == nil {
		r.log = io.Discard
	}
	var buildLog io.Writer
	if opts.Verbose && opts.Log != nil {
		r.tclog, buildLog = logger(opts.Log), opts.Log
	}
	r.labels = maps.Clone(opts.Labels)
	if r.labels == nil {
		r.labels = map[string]string{}
	}
	r.labels[LabelRun] = r.id
	r.labels[LabelOwner] = owner()
	defer func() { err = errors.Join(err, r.cleanup(ctx)) }()

	if r.cli, err = testcontainers.NewDockerClientWithOpts(ctx); err != nil {
		return nil, fmt.Errorf("docker: %w", err)
	}
	// What earlier runs left behind when their process was killed goes first (see Sweep).
	if swept, err := sweep(ctx, r.cli, false); err != nil {
		r.logf("removing earlier runs' leftovers: %v", err)
	} else if swept != (Swept{}) {
		r.logf("removed earlier runs' leftovers: %s", swept)
	}
	tag := opts.Image
	if tag == "" {
		r.logf("building image (run %s)", r.id)
		if r.image, err = BuildImage(ctx, ImageOptions{Binary: opts.Binary, Labels: r.labels, Log: buildLog}); err != nil {
			return nil, err
		}
		tag = r.image.Tag
	}
	if err := r.createNetwork(ctx); err != nil {
		return nil, err
	}
	if popts.Tracing != nil {
		if err := r.startTracing(popts.Tracing); err != nil {
			return nil, err
		}
		// Before the cleanup deferred above: the containers are stopped gracefully first, so that
		// they flush their spans to the receiver.
		defer r.endTracing(ctx, popts.Tracing)
	}
	if err := r.startUpstreams(ctx, p, tag, scenarioYAML); err != nil {
		return nil, err
	}
	if err := r.startProxies(ctx, p, tag); err != nil {
		return nil, err
	}
	return r.drive(ctx, p, popts)
}

// drive runs the load and the container faults, then collects the record.
func (r *runner) drive(ctx context.Context, p *plan.Plan, popts plan.Options) (*record.Record, error) {
	l := p.Scenario.Load
	listener, err := r.endpoint(ctx, r.proxies[l.Target], ListenerPort)
	if err != nil {
		return nil, err
	}
	cfg := p.LoadConfig("http://" + listener)
	if r.tp != nil {
		cfg.Tracer, cfg.Propagator = r.tp.For(tracing.LoadServiceName, "").Tracer(tracing.ScopeLoad), tracing.Propagator()
	}
	tracker := plan.NewTracker()
	if popts.Progress != nil {
		cfg.OnSample = tracker.Sample
	}
	stats := func() map[string]uint64 {
		sctx, cancel := context.WithTimeout(ctx, time.Second)
		defer cancel()
		st, _ := r.proxyStats(sctx, l.Target) // a tick without stats shows the client's side alone
		return st
	}

	// Fault windows count from the moment the load starts. Every upstream gets that moment ahead of
	// time, then the load starts on it.
	start := time.Now().Add(startLead)
	if err := r.eachUpstream(func(u *upstream) error { return r.setRunStart(ctx, u, start) }); err != nil {
		return nil, err
	}
	if err := sleepUntil(ctx, start); err != nil {
		return nil, err
	}
	r.logf("load: %s against %s", l.Describe(), cfg.URL)

	loadDone := make(chan struct{})
	var bg sync.WaitGroup
	for i, f := range r.opts.Faults {
		bg.Go(func() { r.runFault(ctx, i, f, start, loadDone) })
	}
	if r.opts.OnStats != nil {
		bg.Go(func() { r.pollStats(ctx, l.Target, start, loadDone) })
	}
	var health []record.ProxyEvent
	bg.Go(func() { health = r.pollHealth(ctx, l.Target, start, loadDone) })
	finishProgress := tracker.Report(ctx, popts, start, l.Total(), stats)
	samples, loadStart, err := load.Run(ctx, cfg)
	close(loadDone)
	finishProgress()
	bg.Wait() // every fault reverted (unless ctx ended)
	if err != nil {
		return nil, fmt.Errorf("load: %w", err)
	}

	// Collect even after a cancellation (with a fresh, short context), so that the record so far holds.
	cctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer cancel()
	rec := p.NewRecord(loadStart, samples)
	var errs []error
	if rec.ProxyStats, err = r.proxyStats(cctx, l.Target); err != nil {
		errs = append(errs, err)
	}
	col, err := r.collectUpstreams(cctx, loadStart)
	if err != nil {
		errs = append(errs, err)
	}
	rec.Upstreams = col.upstreams
	events := col.events
	r.evMu.Lock()
	for _, e := range r.events {
		e.At += start.Sub(loadStart) // container faults were timed from start; the record counts from loadStart
		events = append(events, e)
	}
	r.evMu.Unlock()
	plan.SortFaultEvents(events)
	rec.Events = events
	plan.ExtendRefuseWindows(rec.Windows, rec.Events)
	for _, e := range health {
		e.At += start.Sub(loadStart)
		rec.ProxyEvents = append(rec.ProxyEvents, e)
	}
	rec.ProxyEvents = append(rec.ProxyEvents, col.proxyEvents...)
	plan.SortProxyEvents(rec.ProxyEvents)
	rec.Services, rec.Edges = p.Graph()
	col.fillGraph(rec)
	if ctx.Err() != nil {
		return rec, ctx.Err() // what could not be collected after a cancellation is left out
	}
	return rec, errors.Join(errs...)
}

// createNetwork creates the run's network with a subnet of its own, so that containers keep their
// addresses across partitions, kills and restarts: the proxies' STATIC clusters name them by IP. The
// daemon picks the subnet (as it would for any network: free, per its address pools) on a probe network
// that is then replaced by the real one with that subnet set explicitly.
func (r *runner) createNetwork(ctx context.Context) error {
	var lastErr error
	for range 3 {
		probe, err := network.New(ctx, network.WithLabels(r.labels))
		if err != nil {
			return fmt.Errorf("docker: create network: %w", err)
		}
		insp, err := r.cli.NetworkInspect(ctx, probe.ID, client.NetworkInspectOptions{})
		rmErr := probe.Remove(context.WithoutCancel(ctx))
		if err != nil || rmErr != nil {
			return fmt.Errorf("docker: probe network: %w", errors.Join(err, rmErr))
		}
		var cfg mobynet.IPAMConfig
		for _, c := range insp.Network.IPAM.Config {
			if c.Subnet.Addr().Is4() {
				cfg = mobynet.IPAMConfig{Subnet: c.Subnet, Gateway: c.Gateway}
				break
			}
		}
		if !cfg.Subnet.IsValid() {
			return fmt.Errorf("docker: network %s has no IPv4 subnet", probe.Name)
		}
		nw, err := network.New(ctx, network.WithLabels(r.labels), network.WithIPAM(&mobynet.IPAM{Driver: "default", Config: []mobynet.IPAMConfig{cfg}}))
		if err != nil {
			lastErr = err // another network took the subnet in between: probe again
			continue
		}
		r.network = nw
		r.ips = newIPPlan(cfg.Subnet, cfg.Gateway)
		r.logf("network %s (%s)", nw.Name, cfg.Subnet)
		return nil
	}
	return fmt.Errorf("docker: create network: %w", lastErr)
}

// startUpstreams starts every instance's container, callees first (plan.StartOrder), one tier of the
// call graph at a time and the instances of a tier together, so that every sidecar's callees listen
// when it starts. Each container has its planned address; a calling instance's sidecar bootstrap,
// copied in with the scenario, has its callees' containers' addresses as its STATIC endpoints.
func (r *runner) startUpstreams(ctx context.Context, p *plan.Plan, tag string, scenarioYAML []byte) error {
	byName := map[string]*upstream{}
	for _, in := range p.Instances {
		ip, err := r.ips.next()
		if err != nil {
			return err
		}
		u := &upstream{in: in, service: in.Service, index: in.Index, ip: ip}
		r.upstreams = append(r.upstreams, u)
		byName[in.Name()] = u
	}
	for _, u := range r.upstreams {
		if len(u.in.Callees) == 0 {
			continue
		}
		endpoints := map[string][]string{}
		for _, callee := range u.in.Callees {
			endpoints[callee] = p.Endpoints(callee, func(c plan.Instance) string { return hostPort(byName[c.Name()].ip.String(), UpstreamPort) })
		}
		b, err := p.SidecarBootstrap(u.in, scenarios.SidecarAddresses{Listener: hostPort("127.0.0.1", SidecarListenerPort),
			Admin: hostPort("0.0.0.0", SidecarAdminPort), Endpoints: endpoints})
		if err == nil {
			u.sidecar, err = BootstrapJSON(b)
		}
		if err != nil {
			return fmt.Errorf("upstream %s: sidecar: %w", u.name(), err)
		}
	}
	var tiers [][]*upstream
	depth := p.Scenario.Depth()
	last := -1
	for _, in := range p.StartOrder() {
		if d := depth[in.Service]; d != last || len(tiers) == 0 {
			tiers, last = append(tiers, nil), d
		}
		tiers[len(tiers)-1] = append(tiers[len(tiers)-1], byName[in.Name()])
	}
	r.logf("starting %d upstream containers (%d tiers, callees first)", len(r.upstreams), len(tiers))
	for _, tier := range tiers {
		if err := each(tier, func(u *upstream) error { return r.startUpstream(ctx, u, p.Seed, tag, scenarioYAML) }); err != nil {
			return err
		}
	}
	return nil
}

func (r *runner) startUpstream(ctx context.Context, u *upstream, seed uint64, tag string, scenarioYAML []byte) error {
	args := []string{"upstream", "--scenario", ScenarioPath, "--service", u.service,
		"--instance", strconv.Itoa(u.index), "--seed", strconv.FormatUint(seed, 10),
		"--listen", hostPort("0.0.0.0", UpstreamPort), "--control", hostPort("0.0.0.0", ControlPort)}
	files := []testcontainers.ContainerFile{{Reader: bytes.NewReader(scenarioYAML), ContainerFilePath: ScenarioPath, FileMode: 0o644}}
	if u.sidecar != nil {
		args = append(args, "--sidecar", SidecarBootstrapPath)
		files = append(files, testcontainers.ContainerFile{Reader: bytes.NewReader(u.sidecar), ContainerFilePath: SidecarBootstrapPath, FileMode: 0o644})
	}
	c, err := testcontainers.Run(ctx, tag,
		testcontainers.WithLogger(r.tclog),
		testcontainers.WithName(fmt.Sprintf("meshproof-%s-%s-%d", r.id, u.service, u.index)),
		testcontainers.WithCmd(append(args, r.otlpArgs()...)...),
		testcontainers.WithLabels(r.containerLabels("upstream", u.name())),
		testcontainers.WithFiles(files...),
		network.WithNetwork(u.aliases(), r.network),
		testcontainers.WithEndpointSettingsModifier(r.staticIP(u.ip)),
		testcontainers.WithExposedPorts(tcpPort(ControlPort)),
		testcontainers.WithHostConfigModifier(r.publish(ControlPort)),
		testcontainers.WithWaitStrategyAndDeadline(r.opts.ReadyTimeout,
			wait.ForHTTP(PathReady).WithPort(tcpPort(ControlPort)).WithPollInterval(100*time.Millisecond)),
	)
	r.track(c)
	if busyPort(err) && c != nil {
		err = startAgain(ctx, c)
	}
	if err != nil {
		return fmt.Errorf("docker: upstream %s: %w", u.name(), err)
	}
	u.c = c
	return nil
}

func (r *runner) startProxies(ctx context.Context, p *plan.Plan, tag string) error {
	ips := map[string]netip.Addr{}
	for _, u := range r.upstreams {
		ips[u.name()] = u.ip
	}
	for _, px := range p.Proxies {
		name := px.Name
		endpoints := p.ProxyEndpoints(px, func(in plan.Instance) string { return hostPort(ips[in.Name()].String(), UpstreamPort) })
		b, err := p.Bootstrap(name, scenarios.Addresses{
			Listener: hostPort("0.0.0.0", ListenerPort), Admin: hostPort("0.0.0.0", AdminPort), Endpoints: endpoints,
		})
		if err == nil {
			err = r.traceAs(b, name)
		}
		if err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		bootstrap, err := BootstrapJSON(b)
		if err != nil {
			return fmt.Errorf("proxy %s: %w", name, err)
		}
		ip, err := r.ips.next()
		if err != nil {
			return err
		}
		var to []string
		for _, svc := range px.Services {
			to = append(to, svc+" "+strings.Join(endpoints[svc], ", "))
		}
		r.logf("starting proxy %s -> %s", name, strings.Join(to, "; "))
		c, err := testcontainers.Run(ctx, tag,
			testcontainers.WithLogger(r.tclog),
			testcontainers.WithName(fmt.Sprintf("meshproof-%s-proxy-%s", r.id, name)),
			testcontainers.WithCmd(append([]string{"proxy", "-c", BootstrapPath, "--drain-time", "1s"}, r.otlpArgs()...)...),
			testcontainers.WithLabels(r.containerLabels("proxy", name)),
			testcontainers.WithFiles(testcontainers.ContainerFile{Reader: bytes.NewReader(bootstrap), ContainerFilePath: BootstrapPath, FileMode: 0o644}),
			network.WithNetwork([]string{name}, r.network),
			testcontainers.WithEndpointSettingsModifier(r.staticIP(ip)),
			testcontainers.WithExposedPorts(tcpPort(ListenerPort), tcpPort(AdminPort)),
			testcontainers.WithHostConfigModifier(r.publish(ListenerPort, AdminPort)),
			testcontainers.WithWaitStrategyAndDeadline(r.opts.ReadyTimeout,
				wait.ForHTTP("/ready").WithPort(tcpPort(AdminPort)).WithPollInterval(100*time.Millisecond)),
		)
		r.track(c)
		if busyPort(err) && c != nil {
			err = startAgain(ctx, c)
		}
		if err != nil {
			return fmt.Errorf("docker: proxy %s: %w", name, err)
		}
		r.proxies[name] = c
	}
	return nil
}

// traceAs has a traced run's proxy export its spans to the run's receiver with service.name = name, as
// the embedded runner's proxies do: through the bootstrap's tracing.http (envoy.tracers.opentelemetry),
// which `meshproof proxy` prefers to --otlp-endpoint, whose spans would carry no name of the proxy's. A
// bootstrap with a tracing provider of its own keeps it. (Envoy deprecates the bootstrap's tracing for
// the HCM's tracing.provider but still honours it; it is the one meshproof's proxy reads.)
func (r *runner) traceAs(b *bootstrapv3.Bootstrap, name string) error {
	//lint:ignore SA1019 see above
	if r.recv == nil || b.GetTracing() != nil {
		return nil
	}
	// Envoy sends through http_uri.cluster, which it requires; meshproof sends to the uri directly.
	cfg, err := anypb.New(&tracev3.OpenTelemetryConfig{ServiceName: name, HttpService: &corev3.HttpService{
		HttpUri: &corev3.HttpUri{Uri: r.recv.URL(), HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: "meshproof_run_traces"},
			Timeout: durationpb.New(5 * time.Second)}}})
	if err != nil {
		return err
	}
	//lint:ignore SA1019 see above
	b.Tracing = &tracev3.Tracing{Http: &tracev3.Tracing_Http{Name: "envoy.tracers.opentelemetry",
		ConfigType: &tracev3.Tracing_Http_TypedConfig{TypedConfig: cfg}}}
	return nil
}

// BootstrapJSON renders a bootstrap as `meshproof proxy -c` (and Envoy) read it: JSON, which is YAML.
func BootstrapJSON(b proto.Message) ([]byte, error) {
	return protojson.MarshalOptions{Multiline: true, Indent: "  ", UseProtoNames: true}.Marshal(b)
}

// proxyStats reads a proxy's /stats.
func (r *runner) proxyStats(ctx context.Context, name string) (map[string]uint64, error) {
	admin, err := r.endpoint(ctx, r.proxies[name], AdminPort)
	if err != nil {
		return nil, err
	}
	text, err := r.cc.text(ctx, "http://"+admin+"/stats")
	if err != nil {
		return nil, fmt.Errorf("proxy %s: %w", name, err)
	}
	return ParseStats(text)
}

// pollStats hands the target proxy's stats to opts.OnStats every StatsInterval until the load is done.
func (r *runner) pollStats(ctx context.Context, target string, start time.Time, done <-chan struct{}) {
	t := time.NewTicker(r.opts.StatsInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-done:
			return
		case <-t.C:
		}
		sctx, cancel := context.WithTimeout(ctx, r.opts.StatsInterval+time.Second)
		st, err := r.proxyStats(sctx, target)
		cancel()
		if err == nil {
			r.opts.OnStats(time.Since(start), st)
		}
	}
}

// healthInterval is how often the runner reads the proxy's /clusters for ejections.
const healthInterval = 100 * time.Millisecond

// pollHealth watches the target proxy's /clusters while the load runs and turns each host's
// /failed_outlier_check flag going up or down into an ejected or unejected event (timed to within
// healthInterval): the proxy runs in its own container, so the runner sees its decisions from outside.
func (r *runner) pollHealth(ctx context.Context, target string, start time.Time, done <-chan struct{}) []record.ProxyEvent {
	names := r.hostNames()
	var events []record.ProxyEvent
	ejected := map[string]bool{}
	t := time.NewTicker(healthInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return events
		case <-done:
			return events
		case <-t.C:
		}
		admin, err := r.endpoint(ctx, r.proxies[target], AdminPort)
		if err != nil {
			continue
		}
		text, err := r.cc.text(ctx, "http://"+admin+"/clusters")
		if err != nil {
			continue
		}
		at := time.Since(start)
		for _, line := range strings.Split(text, "\n") {
			parts := strings.Split(line, "::")
			if len(parts) != 4 || parts[2] != "health_flags" {
				continue
			}
			host := cmp.Or(names[parts[1]], parts[1])
			now := strings.Contains(parts[3], "/failed_outlier_check")
			if now == ejected[host] {
				continue
			}
			ejected[host] = now
			kind := record.ProxyUnejected
			if now {
				kind = record.ProxyEjected
			}
			events = append(events, record.ProxyEvent{At: at, Kind: kind, Cluster: parts[0], Host: host, Reason: "seen on /clusters", Proxy: target})
		}
	}
}

// hostNames maps each instance's data address on the run network, as proxies name their hosts, to
// "service/instance".
func (r *runner) hostNames() map[string]string {
	names := map[string]string{}
	for _, u := range r.upstreams {
		names[netip.AddrPortFrom(u.ip, UpstreamPort).String()] = u.name()
	}
	return names
}

// collected is what the instances reported at the end of a run, as the record holds it.
type collected struct {
	upstreams   []record.UpstreamRecord
	events      []record.FaultEvent
	calls       []record.Call
	proxyEvents []record.ProxyEvent // the sidecars' decisions
	sidecars    []sidecarStats
}

// sidecarStats are the stats of one calling instance's sidecar.
type sidecarStats struct {
	service string
	stats   map[string]uint64
}

// fillGraph completes the record of a call graph as the embedded runner's: every call in send order,
// and each edge's counters summed over its caller's sidecars. rec.Edges is set.
func (col collected) fillGraph(rec *record.Record) {
	rec.Calls = col.calls
	plan.SortCalls(rec.Calls)
	for i, e := range rec.Edges {
		var stats []map[string]uint64
		for _, sc := range col.sidecars {
			if sc.service == e.Caller {
				stats = append(stats, sc.stats)
			}
		}
		rec.Edges[i].SidecarStats = plan.SidecarStats(e.Callee, stats...)
	}
}

// collectUpstreams fetches every instance's report and merges it with what it reported before kills and
// restarts. A killed instance that was not started again contributes what it reported before.
func (r *runner) collectUpstreams(ctx context.Context, loadStart time.Time) (collected, error) {
	var (
		col   collected
		errs  []error
		names = r.hostNames()
	)
	for _, u := range r.upstreams {
		u.mu.Lock()
		parts := append([]UpstreamReport(nil), u.earlier...)
		down := u.down
		u.mu.Unlock()
		if !down {
			base, err := r.controlBase(ctx, u)
			var rep UpstreamReport
			if err == nil {
				rep, err = r.cc.record(ctx, base)
			}
			if err != nil {
				errs = append(errs, fmt.Errorf("upstream %s: %w", u.name(), err))
			} else {
				parts = append(parts, rep)
			}
		}
		stats := make([]UpstreamStats, 0, len(parts))
		sidecar := map[string]uint64{}
		for i, p := range parts {
			stats = append(stats, p.Stats)
			for _, e := range p.Events {
				col.events = append(col.events, plan.FaultEvent(faults.Event{Time: e.Time, Service: u.service, Instance: u.index,
					Seq: e.Seq, RequestID: e.RequestID, Fault: e.Fault, Kind: e.Kind, Detail: e.Detail}, loadStart))
			}
			for _, c := range p.Calls {
				rc := plan.CallRecord(u.in, faults.CallResult{Start: c.Start, Latency: c.Latency, Callee: c.Callee, Path: c.Path,
					Status: c.Status, Error: c.Error, Optional: c.Optional, RequestID: c.RequestID}, loadStart)
				// The sidecar runs in the instance's process, which joins its attempt count to each call.
				rc.Attempts, rc.ZeroAttempts = c.Attempts, c.AttemptsKnown && c.Attempts == 0
				col.calls = append(col.calls, rc)
			}
			for _, e := range p.SidecarEvents {
				col.proxyEvents = append(col.proxyEvents, record.ProxyEvent{At: e.Time.Sub(loadStart), Kind: e.Kind, Cluster: e.Cluster,
					Host: cmp.Or(names[e.Host], e.Host), Reason: e.Reason, Proxy: u.in.SidecarName()})
			}
			// Each life of the instance counts from zero: counters add up; gauges are the last life's.
			for k, v := range p.SidecarCounters {
				sidecar[k] += v
			}
			if i == len(parts)-1 {
				maps.Copy(sidecar, p.SidecarGauges)
			}
			if n := p.DroppedEvents + p.DroppedCalls + p.DroppedSidecarEvents; n > 0 {
				r.logf("upstream %s: %d events and calls over its bound left out", u.name(), n)
			}
		}
		col.upstreams = append(col.upstreams, plan.UpstreamRecord(u.in, hostPort(u.ip.String(), UpstreamPort), MergeStats(stats...)))
		if len(u.in.Callees) > 0 {
			col.sidecars = append(col.sidecars, sidecarStats{service: u.service, stats: sidecar})
		}
	}
	return col, errors.Join(errs...)
}

// setRunStart sets an upstream's run start through its control port.
func (r *runner) setRunStart(ctx context.Context, u *upstream, at time.Time) error {
	base, err := r.controlBase(ctx, u)
	if err != nil {
		return err
	}
	if err := r.cc.start(ctx, base, at); err != nil {
		return fmt.Errorf("upstream %s: %w", u.name(), err)
	}
	return nil
}

// controlBase is "http://host:port" of an upstream's control port (its published port changes when the
// container is started again or reconnected).
func (r *runner) controlBase(ctx context.Context, u *upstream) (string, error) {
	ep, err := r.endpoint(ctx, u.c, ControlPort)
	if err != nil {
		return "", fmt.Errorf("upstream %s: %w", u.name(), err)
	}
	return "http://" + ep, nil
}

// endpoint is host:port where a container's port is published.
func (r *runner) endpoint(ctx context.Context, c *testcontainers.DockerContainer, port int) (string, error) {
	host, err := c.Host(ctx)
	if err != nil {
		return "", fmt.Errorf("docker: %w", err)
	}
	p, err := c.MappedPort(ctx, tcpPort(port))
	if err != nil {
		return "", fmt.Errorf("docker: port %d: %w", port, err)
	}
	return net.JoinHostPort(host, p.Port()), nil
}

// eachUpstream calls f for every upstream concurrently and joins the errors.
func (r *runner) eachUpstream(f func(*upstream) error) error { return each(r.upstreams, f) }

// each calls f for every upstream of us concurrently and joins the errors.
func each(us []*upstream, f func(*upstream) error) error {
	errs := make([]error, len(us))
	var wg sync.WaitGroup
	for i, u := range us {
		wg.Go(func() { errs[i] = f(u) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

func (r *runner) track(c *testcontainers.DockerContainer) {
	if c == nil {
		return
	}
	r.mu.Lock()
	r.containers = append(r.containers, c)
	r.mu.Unlock()
}

func (r *runner) containerLabels(role, name string) map[string]string {
	l := maps.Clone(r.labels)
	l["io.meshproof.role"] = role
	l["io.meshproof.name"] = name
	return l
}

// publish binds the given container ports to random host ports on r.bindIP.
func (r *runner) publish(ports ...int) func(*container.HostConfig) {
	return func(hc *container.HostConfig) {
		if hc.PortBindings == nil {
			hc.PortBindings = mobynet.PortMap{}
		}
		var ip netip.Addr
		if r.bindIP != "" {
			ip = netip.MustParseAddr(r.bindIP)
		}
		for _, p := range ports {
			hc.PortBindings[mobynet.MustParsePort(tcpPort(p))] = []mobynet.PortBinding{{HostIP: ip}}
		}
	}
}

// staticIP gives the container its planned address on the run network.
func (r *runner) staticIP(ip netip.Addr) func(map[string]*mobynet.EndpointSettings) {
	return func(eps map[string]*mobynet.EndpointSettings) {
		if ep, ok := eps[r.network.Name]; ok {
			ep.IPAMConfig = &mobynet.EndpointIPAMConfig{IPv4Address: ip}
		}
	}
}

// cleanup removes everything the run created, with a fresh context: containers (unpaused first), the
// network, then the image built for the run.
func (r *runner) cleanup(ctx context.Context) error {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	var errs []error
	r.mu.Lock()
	containers := append([]*testcontainers.DockerContainer(nil), r.containers...)
	r.mu.Unlock()
	if r.cli != nil {
		for _, u := range r.upstreams {
			if u.paused && u.c != nil {
				_, _ = r.cli.ContainerUnpause(ctx, u.c.GetContainerID(), client.ContainerUnpauseOptions{})
			}
		}
	}
	cerrs := make([]error, len(containers))
	var wg sync.WaitGroup
	for i, c := range containers {
		wg.Go(func() {
			if err := c.Terminate(ctx, testcontainers.StopTimeout(stopGrace)); err != nil && !isGone(err) {
				cerrs[i] = fmt.Errorf("docker: remove container %s: %w", c.GetContainerID()[:12], err)
			}
		})
	}
	wg.Wait()
	errs = append(errs, cerrs...)
	if r.network != nil {
		if err := r.network.Remove(ctx); err != nil && !isGone(err) {
			errs = append(errs, fmt.Errorf("docker: remove network %s: %w", r.network.Name, err))
		}
	}
	if r.image != nil {
		if err := r.image.Remove(ctx); err != nil {
			errs = append(errs, err)
		}
	}
	if r.cli != nil {
		_ = r.cli.Close()
	}
	if len(containers) > 0 || r.network != nil {
		r.logf("removed %d containers and the network of run %s", len(containers), r.id)
	}
	return errors.Join(errs...)
}

// startTracing starts the load's TracerProvider and the receiver the containers export to, on the run
// network's gateway address (the host, as the containers see it).
func (r *runner) startTracing(t *plan.Tracing) error {
	tp, err := tracing.New(tracing.Config{SampleRatio: t.SampleRatio, OTLPEndpoint: t.OTLPEndpoint, Collect: t.Spans != nil})
	if err != nil {
		return err
	}
	r.tp = tp
	gw := r.ips.gateway
	if !gw.IsValid() {
		gw = r.ips.subnet.Addr().Next()
	}
	r.recv = tracing.NewReceiver(0, t.OTLPEndpoint)
	if err := r.recv.Start(hostPort(gw.String(), 0)); err != nil {
		return err
	}
	r.logf("traces: the containers export to %s", r.recv.URL())
	return nil
}

// otlpArgs are the containers' flags to export their spans to the run's receiver (none untraced).
func (r *runner) otlpArgs() []string {
	if r.recv == nil {
		return nil
	}
	return []string{"--otlp-endpoint", r.recv.URL()}
}

// endTracing stops the containers gracefully (SIGTERM: each flushes its exporter on the way out), then
// the receiver and the load's provider, and hands the spans over.
func (r *runner) endTracing(ctx context.Context, t *plan.Tracing) {
	ctx, cancel := cleanupContext(ctx)
	defer cancel()
	r.mu.Lock()
	containers := append([]*testcontainers.DockerContainer(nil), r.containers...)
	r.mu.Unlock()
	var wg sync.WaitGroup
	for _, c := range containers {
		wg.Go(func() {
			timeout := 5 * time.Second
			_ = c.Stop(ctx, &timeout) // a container that will not stop is removed by the cleanup
		})
	}
	wg.Wait()
	_ = r.recv.Close()
	_ = r.tp.Shutdown(ctx)
	if kept, dropped := r.recv.Spans(); dropped > 0 {
		r.logf("traces: kept %d spans of the containers, dropped %d over the limit", kept, dropped)
	}
	if t.Spans != nil {
		t.Spans(r.tp.Spans())
	}
	if t.Received != nil {
		t.Received(r.recv.Requests())
	}
}

func (r *runner) logf(format string, args ...any) {
	fmt.Fprintf(r.log, "docker: "+format+"\n", args...)
}

func (r *runner) faultEvent(e record.FaultEvent) {
	r.evMu.Lock()
	r.events = append(r.events, e)
	r.evMu.Unlock()
}

// ipPlan hands out the addresses of a subnet after its gateway, in order.
type ipPlan struct {
	subnet  netip.Prefix
	gateway netip.Addr
	last    netip.Addr
	mu      sync.Mutex
}

func newIPPlan(subnet netip.Prefix, gateway netip.Addr) ipPlan {
	return ipPlan{subnet: subnet.Masked(), gateway: gateway, last: subnet.Masked().Addr()}
}

func (p *ipPlan) next() (netip.Addr, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for a := p.last.Next(); p.subnet.Contains(a); a = a.Next() {
		if a == p.gateway {
			continue
		}
		if !p.subnet.Contains(a.Next()) {
			break // the broadcast address
		}
		p.last = a
		return a, nil
	}
	return netip.Addr{}, fmt.Errorf("docker: subnet %s is full", p.subnet)
}

// dockerEnv prepares testcontainers' process-wide settings before its first use and returns the host
// address published ports bind to:
//   - TESTCONTAINERS_RYUK_DISABLED=true: Ryuk is an image to pull; the runner removes what it creates.
//   - published ports bind to 127.0.0.1, and testcontainers dials them there
//     (TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1), when the daemon is local (no DOCKER_HOST, or a unix
//     socket) and the override is not set already. Otherwise ports bind to all interfaces and are dialled
//     where testcontainers finds the daemon (or the override says).
var dockerEnv = sync.OnceValue(func() string {
	os.Setenv("TESTCONTAINERS_RYUK_DISABLED", "true")
	if _, set := os.LookupEnv("TESTCONTAINERS_HOST_OVERRIDE"); set {
		return ""
	}
	if h := os.Getenv("DOCKER_HOST"); h != "" && !strings.HasPrefix(h, "unix://") {
		return ""
	}
	os.Setenv("TESTCONTAINERS_HOST_OVERRIDE", "127.0.0.1")
	return "127.0.0.1"
})

// Available reports whether a Docker daemon answers, as the runner would reach it. It never panics.
func Available(ctx context.Context) (err error) {
	dockerEnv()
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("docker: %v", p)
		}
	}()
	p, err := testcontainers.ProviderDefault.GetProvider(testcontainers.WithLogger(tclog.NewNoopLogger()))
	if err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	defer p.Close()
	if err := p.Health(ctx); err != nil {
		return fmt.Errorf("docker: %w", err)
	}
	return nil
}

func cleanupContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.WithoutCancel(ctx), cleanupTimeout)
}

// isGone reports an error removing something already removed.
func isGone(err error) bool {
	return cerrdefs.IsNotFound(err) || strings.Contains(err.Error(), "is already in progress")
}

// busyPort reports the daemon's failure to publish a port on a host port that is in use: its allocator
// hands out ports of the ephemeral range without checking them (Docker 20.10), and a client connection
// of any process on the host may hold one. Starting again picks the next port.
func busyPort(err error) bool {
	return err != nil && strings.Contains(err.Error(), "address already in use")
}

// startAgain starts a created container whose ports could not be published, up to 5 more times.
func startAgain(ctx context.Context, c *testcontainers.DockerContainer) error {
	var err error
	for range 5 {
		if err = c.Start(ctx); !busyPort(err) {
			return err
		}
	}
	return err
}

func sleepUntil(ctx context.Context, t time.Time) error {
	timer := time.NewTimer(time.Until(t))
	defer timer.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-timer.C:
		return nil
	}
}

func tcpPort(p int) string            { return strconv.Itoa(p) + "/tcp" }
func hostPort(h string, p int) string { return net.JoinHostPort(h, strconv.Itoa(p)) }
