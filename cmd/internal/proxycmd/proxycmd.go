// Package proxycmd is the standalone proxy command, shared by `meshproof proxy` and the proxy-only
// binary cmd/meshproof-proxy. It links the proxy, its configuration and tracing, and nothing of the
// runners, the docker client or the reports (checked by `make deps-proxy`).
package proxycmd

import (
	"bytes"
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/xds"
)

// Usage is the command's usage line; name is how it is invoked ("meshproof proxy", "meshproof-proxy").
func Usage(name string) string {
	return "usage: " + name + " -c BOOTSTRAP.yaml [--drain-time 5s] [--drain-time-s 600] [--drain-strategy gradual|immediate] " +
		"[--otlp-endpoint URL] [--enable-pprof]"
}

// Env are the command's seams to the process: the signal that reloads the bootstrap and how often
// its file is polled for a change.
type Env struct {
	// Reload receives a value for each reload asked for (SIGHUP); nil: none.
	Reload <-chan os.Signal
	// PollInterval is how often the bootstrap file is read for a change (0: every second; negative:
	// never).
	PollInterval time.Duration
	// OnReload, when set, hears of each reload's outcome (nil error: applied). For specs.
	OnReload func(error)
}

// Main runs the proxy standalone until ctx ends or POST /quitquitquit, and returns the exit code; name
// is how the command was invoked, for its usage line. SIGHUP reloads the bootstrap.
func Main(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	return Run(ctx, Env{Reload: hup}, name, args, stdout, stderr)
}

// Run is Main with its seams given.
func Run(ctx context.Context, env Env, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "Envoy v3 bootstrap (YAML or JSON)")
	fs.StringVar(path, "config-path", "", "same as -c (Envoy's long form)")
	drain := fs.Duration("drain-time", 5*time.Second, "on SIGTERM or SIGINT: how long the listeners drain (Connection: close, "+
		"still accepting) before they close, and then how long in-flight requests may finish")
	drainS := fs.Int("drain-time-s", 600, "Envoy's: how long, in seconds, listeners drain after POST /drain_listeners?graceful "+
		"or when a reload or LDS removes or replaces them")
	strategy := fs.String("drain-strategy", "gradual", "Envoy's: gradual (the share of responses saying Connection: close grows "+
		"over the drain time) or immediate (all of them)")
	otlp := fs.String("otlp-endpoint", "", cli.OTLPEndpointHelp("export spans over OTLP/HTTP to this URL when the bootstrap has no tracing.http (e.g. http://127.0.0.1:4318/v1/traces)"))
	pprof := fs.Bool("enable-pprof", false, "serve Go's profiles under /debug/pprof/ on the admin interface")
	usage := Usage(name)
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, usage, fs)
	}
	if err := fs.Parse(args); err != nil {
		return cli.ExitInvalid
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, usage)
		return cli.ExitInvalid
	}
	var drainStrategy proxy.DrainStrategy
	switch *strategy {
	case "gradual":
	case "immediate":
		drainStrategy = proxy.DrainImmediate
	default:
		fmt.Fprintf(stderr, "%s: --drain-strategy %q: want gradual or immediate\n", name, *strategy)
		return cli.ExitInvalid
	}
	if *drainS <= 0 || *drain < 0 {
		fmt.Fprintf(stderr, "%s: --drain-time-s must be more than 0 and --drain-time not negative\n", name)
		return cli.ExitInvalid
	}
	if err := cli.DefaultOTLPEndpoint(fs, otlp, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return cli.ExitInvalid
	}
	data, err := os.ReadFile(*path)
	if err != nil {
		cli.PrintErr(stderr, fmt.Errorf("read bootstrap: %w", err))
		return cli.ExitInvalid
	}
	cfg, raw, err := config.ParseBootstrap(data, *path)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	opts := proxy.Options{Bootstrap: raw, EnablePprof: *pprof, Warn: func(m string) { fmt.Fprintf(stderr, "meshproof: %s\n", m) },
		DrainTime: time.Duration(*drainS) * time.Second, DrainStrategy: drainStrategy}
	if tc := Tracing(cfg, *otlp, os.Getenv(cli.EnvServiceName)); tc != nil {
		tp, err := tracing.New(*tc)
		if err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitInvalid
		}
		defer func() {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = tp.Shutdown(sctx) // flushes the exporter
		}()
		opts.TracerProvider = tp
		fmt.Fprintf(stdout, "tracing to %s\n", tc.OTLPEndpoint)
	}
	newServer := proxy.New
	if cfg.Dynamic != nil {
		newServer = xds.NewServer // its listeners start with the first configuration the client applies
	}
	srv, err := newServer(cfg, opts)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	if err := srv.Start(); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	out := &listenerPrinter{w: stdout, srv: srv, seen: map[string]string{}}
	out.print(cfg) // the listeners started (none yet when they come over xDS)
	if a := srv.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "admin on %s\n", a)
	}
	runCtx, stopRun := context.WithCancel(ctx)
	xdsDone := make(chan struct{})
	if cfg.Dynamic != nil {
		if err := runXDS(runCtx, cfg, raw, srv, out, stderr, xdsDone); err != nil {
			stopRun()
			cli.PrintErr(stderr, err)
			_ = srv.Close()
			return cli.ExitInvalid
		}
	} else {
		close(xdsDone)
	}
	r := &reloader{path: *path, last: data, srv: srv, out: out, stderr: stderr, onReload: env.OnReload}
	poll := env.PollInterval
	if poll == 0 {
		poll = time.Second
	}
	var tick <-chan time.Time
	if poll > 0 && cfg.Dynamic == nil {
		t := time.NewTicker(poll)
		defer t.Stop()
		tick = t.C
	}
	quit := false
loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-srv.Quit():
			quit = true
			break loop
		case <-env.Reload:
			if cfg.Dynamic != nil {
				fmt.Fprintf(stderr, "meshproof: reload: a bootstrap with dynamic_resources is not reloaded (its configuration comes over xDS)\n")
				continue
			}
			r.reload(true)
		case <-tick:
			r.reload(false)
		}
	}
	if !quit && *drain > 0 {
		// SIGTERM: drain first, as POST /drain_listeners?graceful would, over --drain-time: /ready
		// fails at once, responses close their connections, then the listeners stop accepting.
		<-srv.Drain(true, *drain)
	}
	stopRun()
	<-xdsDone
	sctx, cancel := context.WithTimeout(context.Background(), max(*drain, time.Second))
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "meshproof: shutdown: %v\n", err)
	}
	return cli.ExitOK
}

// listenerPrinter prints "listener NAME on ADDR" once for each listener bound (and again when it
// moved).
type listenerPrinter struct {
	w    io.Writer
	srv  *proxy.Server
	seen map[string]string
}

func (p *listenerPrinter) print(cfg *config.Bootstrap) {
	for _, l := range cfg.Listeners {
		addr := p.srv.ListenerAddr(l.Name)
		if addr != "" && p.seen[l.Name] != addr {
			p.seen[l.Name] = addr
			fmt.Fprintf(p.w, "listener %s on %s\n", l.Name, addr)
		}
	}
}

// reloader reloads a static bootstrap: on SIGHUP, or when the file's content changed since it was
// last read.
type reloader struct {
	path     string
	last     []byte
	srv      *proxy.Server
	out      *listenerPrinter
	stderr   io.Writer
	onReload func(error)
}

// reload reads the bootstrap again and applies it; unless forced, only when its content changed. An
// invalid bootstrap keeps the running configuration: its field-path error is printed and counted in
// server.config_reload_failed.
func (r *reloader) reload(force bool) {
	data, err := os.ReadFile(r.path)
	if err != nil {
		if force {
			r.done(fmt.Errorf("read bootstrap: %w", err))
		}
		return // a file being replaced: the next poll reads it
	}
	if !force && bytes.Equal(data, r.last) {
		return
	}
	r.last = data
	cfg, raw, err := config.ParseBootstrap(data, r.path)
	if err == nil && cfg.Dynamic != nil {
		err = fmt.Errorf("%s: dynamic_resources: a static bootstrap cannot become a dynamic one by a reload", r.path)
	}
	if err == nil {
		err = r.srv.Update(cfg, raw)
		if err == nil {
			r.out.print(cfg)
		}
	}
	r.done(err)
}

func (r *reloader) done(err error) {
	r.srv.CountReload(err)
	if err != nil {
		fmt.Fprintf(r.stderr, "meshproof: reload of %s failed, the running configuration is kept:\n", r.path)
		cli.PrintErr(r.stderr, err)
	}
	if r.onReload != nil {
		r.onReload(err)
	}
}

// Tracing is the tracer configuration of the standalone proxy: the bootstrap's tracing.http
// (envoy.tracers.opentelemetry over OTLP/HTTP), else the --otlp-endpoint flag; nil for neither. Its
// service.name is the bootstrap's service_name, else envName ($OTEL_SERVICE_NAME; "" = "meshproof").
func Tracing(cfg *config.Bootstrap, endpoint, envName string) *tracing.Config {
	if t := cfg.Tracing; t != nil {
		name := t.ServiceName
		if name == "" {
			name = envName
		}
		return &tracing.Config{ServiceName: name, OTLPEndpoint: t.Endpoint, OTLPTimeout: t.Timeout}
	}
	if endpoint != "" {
		return &tracing.Config{ServiceName: envName, OTLPEndpoint: endpoint}
	}
	return nil
}
