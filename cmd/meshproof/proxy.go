package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// cmdProxy runs the proxy standalone until interrupted or POST /quitquitquit.
func cmdProxy(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("proxy", flag.ContinueOnError)
	fs.SetOutput(stderr)
	path := fs.String("c", "", "Envoy v3 static bootstrap (YAML or JSON)")
	fs.StringVar(path, "config-path", "", "same as -c (Envoy's long form)")
	drain := fs.Duration("drain-time", 5*time.Second, "how long in-flight requests may finish on shutdown")
	otlp := fs.String("otlp-endpoint", "", otlpEndpointHelp("export spans over OTLP/HTTP to this URL when the bootstrap has no tracing.http (e.g. http://127.0.0.1:4318/v1/traces)"))
	pprof := fs.Bool("enable-pprof", false, "serve Go's profiles under /debug/pprof/ on the admin interface")
	const proxyUsage = "usage: meshproof proxy -c BOOTSTRAP.yaml [--drain-time 5s] [--otlp-endpoint URL] [--enable-pprof]"
	if helpRequested(args) {
		return printHelp(stdout, proxyUsage, fs)
	}
	if err := fs.Parse(args); err != nil {
		return exitInvalid
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, proxyUsage)
		return exitInvalid
	}
	if err := defaultOTLPEndpoint(fs, otlp, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "meshproof proxy: %v\n", err)
		return exitInvalid
	}
	cfg, raw, err := config.LoadBootstrap(*path)
	if err != nil {
		printErr(stderr, err)
		return exitInvalid
	}
	opts := proxy.Options{Bootstrap: raw, EnablePprof: *pprof, Warn: func(m string) { fmt.Fprintf(stderr, "meshproof: %s\n", m) }}
	if tc := proxyTracing(cfg, *otlp, os.Getenv(envServiceName)); tc != nil {
		tp, err := tracing.New(*tc)
		if err != nil {
			printErr(stderr, err)
			return exitInvalid
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
		printErr(stderr, err)
		return exitInvalid
	}
	if err := srv.Start(); err != nil {
		printErr(stderr, err)
		return exitFailed
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
	return exitOK
}

// proxyTracing is the tracer configuration of the standalone proxy: the bootstrap's tracing.http
// (envoy.tracers.opentelemetry over OTLP/HTTP), else the --otlp-endpoint flag; nil for neither. Its
// service.name is the bootstrap's service_name, else envName ($OTEL_SERVICE_NAME; "" = "meshproof").
func proxyTracing(cfg *config.Bootstrap, endpoint, envName string) *tracing.Config {
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
