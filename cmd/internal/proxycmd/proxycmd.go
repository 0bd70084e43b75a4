// Package proxycmd is the standalone proxy command, shared by `meshproof proxy` and the proxy-only
// binary cmd/meshproof-proxy. It links the proxy, its configuration and tracing, and nothing of the
// runners, the docker client or the reports (checked by `make deps-proxy`).
package proxycmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// Usage is the command's usage line; name is how it is invoked ("meshproof proxy", "meshproof-proxy").
func Usage(name string) string {
	return "usage: " + name + " -c BOOTSTRAP.yaml [--drain-time 5s] [--otlp-endpoint URL] [--enable-pprof]"
}

// Main runs the proxy standalone until ctx ends or POST /quitquitquit, and returns the exit code; name
// is how the command was invoked, for its usage line.
func Main(ctx context.Context, name string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "Envoy v3 static bootstrap (YAML or JSON)")
	fs.StringVar(path, "config-path", "", "same as -c (Envoy's long form)")
	drain := fs.Duration("drain-time", 5*time.Second, "how long in-flight requests may finish on shutdown")
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
	if err := cli.DefaultOTLPEndpoint(fs, otlp, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
		return cli.ExitInvalid
	}
	cfg, raw, err := config.LoadBootstrap(*path)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	opts := proxy.Options{Bootstrap: raw, EnablePprof: *pprof, Warn: func(m string) { fmt.Fprintf(stderr, "meshproof: %s\n", m) }}
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
	srv, err := proxy.New(cfg, opts)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	if err := srv.Start(); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	for _, l := range cfg.Listeners {
		fmt.Fprintf(stdout, "listener %s on %s\n", l.Name, srv.ListenerAddr(l.Name))
	}
	if a := srv.AdminAddr(); a != "" {
		fmt.Fprintf(stdout, "admin on %s\n", a)
	}
	select {
	case <-ctx.Done():
	case <-srv.Quit():
	}
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		fmt.Fprintf(stderr, "meshproof: shutdown: %v\n", err)
	}
	return cli.ExitOK
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
