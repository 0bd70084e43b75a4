// Command meshproof runs resilience scenarios against a real Envoy-configured proxy, and runs that same
// proxy standalone.
//
//	meshproof run FILE [--out DIR] [--seed N]   run a scenario end to end; exit 0 pass, 1 check failed, 2 bad input
//	meshproof validate FILE…                    check scenario files without running them
//	meshproof proxy -c BOOTSTRAP.yaml           run the proxy from an Envoy v3 bootstrap (reloaded on SIGHUP)
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/cmd/internal/proxycmd"
	"github.com/meshproof/meshproof/cmd/internal/sysmon"
	"github.com/meshproof/meshproof/scenarios"
)

const usage = `meshproof — prove a service mesh's resilience policies before rollout.

Usage:
  meshproof run FILE [--out DIR] [--seed N] [--runner embedded|docker|sim]
                                              run a scenario (in this process, as containers, or on virtual time) and check it
  meshproof validate FILE...                  validate scenario files without running them
  meshproof sweep FILE --set PATH=v1,v2 ...   run a scenario at every point of a grid of settings (sweep --help)
  meshproof proxy -c BOOTSTRAP.yaml           run the proxy standalone from an Envoy v3 bootstrap
  meshproof upstream --scenario FILE --service S --instance I   run one fault upstream instance (docker runner)
  meshproof load URL --rate R --duration D   drive HTTP load at any endpoint (open or closed loop; load --help)
  meshproof report compare RUN_A RUN_B        compare two runs' report.json side by side (baseline, candidate)
  meshproof fidelity FILE [--seed N] [--out DIR] [--format text|markdown]
                                              run a scenario on the embedded runner and the simulator; are they within bounds?
  meshproof clean [--all]                     remove what killed docker runs left behind (containers, networks, images)
  meshproof version                           print the version and the commit it was built from
  meshproof help                              show this help (every command takes --help too)

Exit codes: 0 every check holds, 1 a check failed (or the run broke), 2 invalid input,
130 the run was interrupted (its partial report is written, marked INCOMPLETE).
`

func main() {
	if len(os.Args) > 1 && os.Args[1] == "proxy" {
		if err := sysmon.Reexec(); err != nil { // returns only when it did not re-execute
			fmt.Fprintf(os.Stderr, "meshproof: running with Go's default system monitor: %v\n", err)
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Main runs the command line and returns the exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return cli.ExitInvalid
	}
	switch args[0] {
	case "run":
		return cmdRun(ctx, args[1:], stdout, stderr)
	case "sweep":
		return cmdSweep(ctx, args[1:], stdout, stderr)
	case "validate":
		return cmdValidate(args[1:], stdout, stderr)
	case "proxy":
		return proxycmd.Main(ctx, "meshproof proxy", args[1:], stdout, stderr)
	case "load":
		return cmdLoad(ctx, args[1:], stdout, stderr)
	case "upstream":
		return cmdUpstream(ctx, args[1:], stdout, stderr)
	case "report":
		return cmdReport(args[1:], stdout, stderr)
	case "fidelity":
		return cmdFidelity(ctx, args[1:], stdout, stderr)
	case "clean":
		return cmdClean(ctx, args[1:], stdout, stderr)
	case "version", "--version":
		return cmdVersion(stdout)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return cli.ExitOK
	}
	fmt.Fprintf(stderr, "meshproof: unknown command %q\n\n%s", args[0], usage)
	return cli.ExitInvalid
}

// printWarnings prints a scenario's warnings (legal settings with a surprising consequence), one a line.
func printWarnings(w io.Writer, sc *scenarios.Scenario) {
	for _, warning := range sc.Warnings {
		fmt.Fprintf(w, "meshproof: %v\n", warning)
	}
}
