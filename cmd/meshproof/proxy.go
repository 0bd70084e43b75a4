package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"time"

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
	if err := fs.Parse(args); err != nil {
		return exitInvalid
	}
	if *path == "" || fs.NArg() > 0 {
		fmt.Fprintln(stderr, "usage: meshproof proxy -c BOOTSTRAP.yaml [--drain-time 5s]")
		return exitInvalid
	}
	cfg, raw, err := config.LoadBootstrap(*path)
	if err != nil {
		printErr(stderr, err)
		return exitInvalid
	}
	srv, err := proxy.New(cfg, proxy.Options{Bootstrap: raw})
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
