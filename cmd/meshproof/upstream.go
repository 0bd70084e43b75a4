package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sort"
	"strconv"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

const upstreamUsage = "usage: meshproof upstream --scenario FILE --service S --instance I [--seed N] [--listen ADDR] [--control ADDR] [--sidecar BOOTSTRAP] [--otlp-endpoint URL]"

// cmdUpstream runs one fault-injecting upstream instance of a scenario until interrupted: the data port
// answers as the scenario's service and faults say, the control port serves the docker runner
// (GET /ready, POST /start?at=…, GET /record; see mesh/docker). An instance of a service that calls
// others runs with its outbound sidecar in the same process (a pod: what cuts the instance off cuts
// its sidecar off too), configured by the --sidecar bootstrap the runner generated for it.
func cmdUpstream(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("upstream", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("scenario", "", "scenario file")
	service := fs.String("service", "", "the service this instance belongs to")
	instance := fs.Int("instance", 0, "the instance's index in its service, from 0")
	seedFlag := fs.String("seed", "", "override the scenario's seed")
	listen := fs.String("listen", "0.0.0.0:8080", "data address (the proxy's traffic)")
	control := fs.String("control", "0.0.0.0:9000", "control address (/ready, /start, /record)")
	sidecarFile := fs.String("sidecar", "", "Envoy v3 bootstrap of the instance's outbound sidecar (required when its service calls others)")
	otlp := fs.String("otlp-endpoint", "", cli.OTLPEndpointHelp("export the instance's spans over OTLP/HTTP to this URL (the docker runner's receiver)"))
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, upstreamUsage, fs)
	}
	if err := fs.Parse(args); err != nil {
		fmt.Fprintln(stderr, upstreamUsage)
		return cli.ExitInvalid
	}
	if *file == "" || *service == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, upstreamUsage)
		return cli.ExitInvalid
	}
	if err := cli.DefaultOTLPEndpoint(fs, otlp, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "meshproof upstream: %v\n", err)
		return cli.ExitInvalid
	}
	sc, err := scenarios.LoadFile(*file)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	seed := sc.Seed
	if *seedFlag != "" {
		if seed, err = strconv.ParseUint(*seedFlag, 10, 64); err != nil {
			fmt.Fprintf(stderr, "meshproof upstream: --seed %q: want a non-negative integer\n", *seedFlag)
			return cli.ExitInvalid
		}
	}
	svc, ok := sc.Services[*service]
	if !ok {
		names := make([]string, 0, len(sc.Services))
		for n := range sc.Services {
			names = append(names, n)
		}
		sort.Strings(names)
		fmt.Fprintf(stderr, "meshproof upstream: --service %q: want one of the services of %s (%s)\n", *service, *file, strings.Join(names, ", "))
		return cli.ExitInvalid
	}
	if *instance < 0 || *instance >= svc.Instances {
		fmt.Fprintf(stderr, "meshproof upstream: --instance %d: service %s has instances 0 to %d\n", *instance, *service, svc.Instances-1)
		return cli.ExitInvalid
	}

	// The instance as every runner plans it: its HTTP fault rules, and a TCP fault proxy in front of it
	// on --listen when TCP rules target it (plan.Host), so that no fault kind is lost in a container.
	in, _ := plan.New(sc, &seed).Instance(*service, *instance)
	var sidecar *bootstrapv3.Bootstrap
	switch {
	case len(in.Callees) > 0 && *sidecarFile == "":
		fmt.Fprintf(stderr, "meshproof upstream: service %s calls %s: --sidecar BOOTSTRAP is required (its outbound sidecar's)\n", *service, strings.Join(in.Callees, ", "))
		return cli.ExitInvalid
	case len(in.Callees) == 0 && *sidecarFile != "":
		fmt.Fprintf(stderr, "meshproof upstream: --sidecar: service %s calls no other service: it has no sidecar\n", *service)
		return cli.ExitInvalid
	case *sidecarFile != "":
		if _, sidecar, err = config.LoadBootstrap(*sidecarFile); err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitInvalid
		}
	}
	check := in.Upstream
	if check.App != nil { // the sidecar's address is known once it listens
		app := *check.App
		app.Sidecar, check.App = "127.0.0.1:15001", &app
	}
	if _, err := faults.NewUpstream(check); err != nil { // validated before anything listens
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	ctl := docker.NewControl(*service, *instance, 0)
	// The control port first, so that /ready can answer 503 until the data port listens.
	cln, err := net.Listen("tcp", *control)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	csrv := &http.Server{Handler: ctl.Handler(time.Now), ReadHeaderTimeout: 10 * time.Second}
	served := make(chan error, 1)
	go func() { served <- csrv.Serve(cln) }()
	defer func() {
		_ = csrv.Close()
		<-served
	}()

	var itp trace.TracerProvider // the instance's and its sidecar's spans; nil: untraced
	if *otlp != "" {
		// Spans follow the caller's sampling decision (ParentBased), as in the embedded runner.
		tp, err := tracing.New(tracing.Config{ServiceName: *service, OTLPEndpoint: *otlp})
		if err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitInvalid
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tp.Shutdown(sctx) // flushes the exporter when the container is stopped
		}()
		// The resource of the embedded runner's instances: service.name, service.instance.id.
		itp = tp.For(*service, in.Name())
	}
	hcfg := plan.HostConfig{Listen: *listen, OnEvent: ctl.Record, Upstream: func(c *faults.UpstreamConfig) {
		if itp != nil {
			c.Tracer, c.Propagator = itp.Tracer(tracing.ScopeUpstream), tracing.Propagator()
		}
		if c.App != nil {
			c.App.OnCall = ctl.RecordCall
		}
	}}
	if sidecar != nil {
		// As the embedded runner's sidecars: randomness from the run's seed and the sidecar's name,
		// its decisions and per-call attempts into the control (joined to the calls by x-request-id).
		opts := proxy.Options{OnEvent: ctl.RecordProxyEvent, OnRequest: ctl.RecordAttempts, Rand: proxy.SeededRand(seed, in.SidecarName()),
			Warn: func(m string) { fmt.Fprintf(stderr, "meshproof: sidecar: %s\n", m) }}
		if itp != nil {
			opts.TracerProvider, opts.Propagator = itp, tracing.Propagator()
		}
		hcfg.Sidecar = &plan.SidecarConfig{Bootstrap: sidecar, Options: opts}
	}
	start := time.Now()
	up, err := plan.StartHost(in, hcfg)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	defer up.Close()
	up.SetRunStart(start)
	ctl.Attach(up, up.Addr(), start)
	tcpNote := ""
	if len(in.TCP) > 0 {
		tcpNote = fmt.Sprintf(" (TCP fault proxy in front of the upstream on %s)", up.Upstream().Addr())
	}
	fmt.Fprintf(stdout, "upstream %s/%d on %s%s\ncontrol on %s\n", *service, *instance, up.Addr(), tcpNote, cln.Addr())
	if sc := up.Sidecar(); sc != nil {
		fmt.Fprintf(stdout, "sidecar on %s", sc.ListenerAddr(scenarios.SidecarListener))
		if a := sc.AdminAddr(); a != "" {
			fmt.Fprintf(stdout, ", admin on %s", a)
		}
		fmt.Fprintln(stdout)
	}

	select {
	case <-ctx.Done():
		return cli.ExitOK
	case err := <-served:
		served <- err // for the deferred Close
		if !errors.Is(err, http.ErrServerClosed) {
			cli.PrintErr(stderr, fmt.Errorf("control: %w", err))
			return cli.ExitFailed
		}
		return cli.ExitOK
	}
}
