// Command meshproof-proxy is the deployable proxy alone: the same proxy as `meshproof proxy`, built from
// the same packages, without the runners, the docker client, the load generator or the reports.
//
//	meshproof-proxy -c BOOTSTRAP.yaml [--drain-time 5s] [--otlp-endpoint URL] [--enable-pprof]
//	meshproof-proxy --version
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/cmd/internal/proxycmd"
	"github.com/meshproof/meshproof/cmd/internal/sysmon"
)

func main() {
	args := os.Args[1:]
	if len(args) == 1 && (args[0] == "--version" || args[0] == "version") {
		fmt.Println(cli.Version())
		os.Exit(cli.ExitOK)
	}
	if err := sysmon.Reexec(); err != nil { // returns only when it did not re-execute
		fmt.Fprintf(os.Stderr, "meshproof-proxy: running with Go's default system monitor: %v\n", err)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := proxycmd.Main(ctx, "meshproof-proxy", args, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
