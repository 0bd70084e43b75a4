package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/reports/record"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/meshproof/meshproof/mesh"
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/scenarios"
)

// cmdRun runs one scenario end to end on the embedded runner.
const runUsage = "usage: meshproof run FILE [--out DIR] [--seed N] [--runner embedded|docker|sim] [--trace-ratio R] [--otlp-endpoint URL] [--junit PATH] [--json PATH]\n" +
	"exit codes: 0 every check holds, 1 a check failed (or the run broke), 2 invalid input, 130 interrupted (partial report written)"

func cmdRun(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("run", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "run directory for report.json (default runs/<scenario>-<time>)")
	seedFlag := fs.String("seed", "", "override the scenario's seed")
	runner := fs.String("runner", "embedded", "where the topology runs: embedded (this process), docker (containers) or sim (virtual time: no traces, no access logs)")
	traceRatio := fs.Float64("trace-ratio", 1, "share of requests traced into "+tracing.FileOTLP+" (0 disables tracing; the sim runner traces nothing and refuses it)")
	otlpEndpoint := fs.String("otlp-endpoint", "", cli.OTLPEndpointHelp("also export the run's spans over OTLP/HTTP to this URL"))
	junitPath := fs.String("junit", "", "also write junit.xml to this path (for a CI's test report), after the run directory")
	jsonPath := fs.String("json", "", "also write report.json to this path, after the run directory")
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, runUsage, fs)
	}
	file, err := parseInterspersed(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "meshproof run: %v\n%s\n", err, runUsage)
		return cli.ExitInvalid
	}
	if err := cli.DefaultOTLPEndpoint(fs, otlpEndpoint, os.Getenv); err != nil {
		fmt.Fprintf(stderr, "meshproof run: %v\n", err)
		return cli.ExitInvalid
	}
	for _, err := range []error{checkReportCopy("junit", *junitPath), checkReportCopy("json", *jsonPath)} {
		if err != nil {
			fmt.Fprintf(stderr, "meshproof run: %v\n", err)
			return cli.ExitInvalid
		}
	}
	if *junitPath != "" && filepath.Clean(*junitPath) == filepath.Clean(*jsonPath) {
		fmt.Fprintf(stderr, "meshproof run: --junit and --json both name %s: want two files\n", *junitPath)
		return cli.ExitInvalid
	}
	github := inGitHubActions(os.Getenv)
	if *runner != "embedded" && *runner != "docker" && *runner != "sim" {
		fmt.Fprintf(stderr, "meshproof run: --runner %q: want embedded, docker or sim\n", *runner)
		return cli.ExitInvalid
	}
	if *runner == "sim" && !flagSet(fs, "trace-ratio") && !flagSet(fs, "otlp-endpoint") {
		// The simulator records no traces: off unless asked for, and then refused by name (exit 2).
		*traceRatio = 0
	}
	var opts plan.Options
	seed, ok := parseSeed("run", *seedFlag, stderr)
	if !ok {
		return cli.ExitInvalid
	}
	var spans []sdktrace.ReadOnlySpan
	var received []*coltracepb.ExportTraceServiceRequest
	if *traceRatio > 0 {
		opts.Tracing = &plan.Tracing{SampleRatio: min(*traceRatio, 1), OTLPEndpoint: *otlpEndpoint,
			Spans:    func(s []sdktrace.ReadOnlySpan) { spans = s },
			Received: func(r []*coltracepb.ExportTraceServiceRequest) { received = r }}
	}
	sc, err := scenarios.LoadFile(file)
	if err != nil {
		cli.PrintErr(stderr, err)
		if github {
			ghInvalid(stdout, file, err)
		}
		return cli.ExitInvalid
	}
	printWarnings(stderr, sc)
	if github {
		ghWarnings(stdout, file, sc)
	}
	var r plan.Runner = live.Runner{}
	switch *runner {
	case "docker":
		r = dockerRunner(stderr)
	case "sim":
		r = sim.Runner{}
	}
	p := plan.New(sc, seed)
	if err := r.Supports(p, opts); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	dir := *out
	if dir == "" {
		dir = filepath.Join("runs", sc.Name+"-"+time.Now().Format("20060102-150405"))
	}
	// The run directory is checked, and marked incomplete, before anything starts: a run that crashes
	// or is killed leaves the marker, one interrupted leaves its partial report beside it.
	marker, err := startRunDir(dir, file)
	if err != nil {
		cli.PrintErr(stderr, fmt.Errorf("--out %s: %w", dir, err))
		return cli.ExitInvalid
	}

	if *runner != "sim" { // the simulator writes no access logs (and refuses the option)
		opts.AccessLogDir = filepath.Join(dir, "access") // each proxy's access log (embedded runner)
	}
	fmt.Fprintf(stdout, "meshproof: running %s (%s): %s\n", sc.Name, file, sc.Load.Describe())
	opts.Progress, opts.ProgressInterval = progressPrinter(stderr)
	if *runner == "docker" {
		err = dockerAvailable(ctx)
	}
	var rec *record.Record
	if err == nil {
		rec, err = r.Run(ctx, p, opts)
	}
	partial := ""
	switch {
	case err != nil && rec != nil && ctx.Err() != nil:
		// Interrupted during the load: the record so far is reported, clearly marked.
		partial = fmt.Sprintf("interrupted (%v) after %s of the planned %s", context.Cause(ctx), time.Since(rec.Started).Round(100*time.Millisecond), sc.Load.Total())
		fmt.Fprintf(stderr, "meshproof: %s; writing the partial report\n", partial)
	case err != nil:
		cli.PrintErr(stderr, err)
		_ = marker.fail(err)
		return cli.ExitFailed
	}
	list := make([]checks.Check, len(sc.Checks))
	for i, c := range sc.Checks {
		list[i] = c.Check
	}
	rep := reports.NewReport(rec, list)
	if partial != "" {
		rep.Partial, rep.Passed = partial, false
	}
	if err := reports.WriteTerminal(stdout, rep); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	reportPath := filepath.Join(dir, "report.json")
	if err := reports.WriteJSON(reportPath, rep); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	fmt.Fprintf(stdout, "report: %s\n", reportPath)
	if spans != nil {
		if err := tracing.WriteFile(filepath.Join(dir, tracing.FileOTLP), spans, received...); err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitFailed
		}
		fmt.Fprintf(stdout, "traces: %s (%d spans%s)\n", filepath.Join(dir, tracing.FileOTLP), len(spans), receivedNote(received))
	}
	// summary.md, junit.xml and report.html beside report.json (WriteAll rewrites report.json identically).
	if err := reports.WriteAll(dir, rep, rec); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	fmt.Fprintf(stdout, "also: %s, %s, %s\n", filepath.Join(dir, reports.FileMarkdown), filepath.Join(dir, reports.FileJUnit), filepath.Join(dir, reports.FileHTML))
	if partial != "" {
		if err := marker.fail(errors.New(partial)); err != nil {
			cli.PrintErr(stderr, err)
		}
	} else if err := marker.done(); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	// The run directory is complete: now what CI systems read.
	if github {
		ghFailedChecks(stdout, file, sc, rep)
		if err := appendStepSummary(os.Getenv, rep); err != nil {
			fmt.Fprintf(stderr, "meshproof: warning: %v\n", err)
		}
	}
	written, copyErr := writeReportCopies(*junitPath, *jsonPath, rep)
	if len(written) > 0 {
		fmt.Fprintf(stdout, "also: %s\n", strings.Join(written, ", "))
	}
	if copyErr != nil {
		cli.PrintErr(stderr, copyErr)
	}
	switch {
	case partial != "":
		return cli.ExitInterrupted
	case copyErr != nil || !rep.Passed:
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// flagSet reports whether the flag name was given on the command line.
func flagSet(fs *flag.FlagSet, name string) bool {
	set := false
	fs.Visit(func(f *flag.Flag) { set = set || f.Name == name })
	return set
}

// parseInterspersed parses flags that may come before or after the one positional FILE argument.
func parseInterspersed(fs *flag.FlagSet, args []string) (string, error) {
	var positional []string
	for {
		if err := fs.Parse(args); err != nil {
			return "", err
		}
		if fs.NArg() == 0 {
			break
		}
		positional = append(positional, fs.Arg(0))
		args = fs.Args()[1:]
	}
	if len(positional) != 1 {
		return "", fmt.Errorf("want exactly one scenario FILE, got %d", len(positional))
	}
	return positional[0], nil
}

// cmdValidate loads each scenario file and reports every error, without running anything.
func cmdValidate(args []string, stdout, stderr io.Writer) int {
	const validateUsage = "usage: meshproof validate FILE...\nexit codes: 0 every file is valid, 2 a file is invalid (every error is printed)"
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, validateUsage, nil)
	}
	if len(args) == 0 {
		fmt.Fprintln(stderr, validateUsage)
		return cli.ExitInvalid
	}
	code := cli.ExitOK
	for _, f := range args {
		sc, err := scenarios.LoadFile(f)
		if err != nil {
			cli.PrintErr(stderr, err)
			code = cli.ExitInvalid
			continue
		}
		printWarnings(stderr, sc)
		fmt.Fprintf(stdout, "%s: ok\n", f)
	}
	return code
}

// progressPrinter shows a run's progress: on a terminal a status line rewritten in place twice a
// second, elsewhere (CI logs) one line every five seconds.
func progressPrinter(w io.Writer) (func(plan.Progress), time.Duration) {
	tty := reports.IsTerminal(w)
	return func(p plan.Progress) {
		line := mesh.ProgressLine(p)
		if tty {
			end := ""
			if p.Elapsed >= p.Planned {
				end = "\n"
			}
			fmt.Fprintf(w, "\r\033[K%s%s", line, end)
			return
		}
		fmt.Fprintf(w, "progress: %s\n", line)
	}, map[bool]time.Duration{true: 500 * time.Millisecond, false: 5 * time.Second}[tty]
}

// receivedNote counts the spans other processes (the docker runner's containers) exported to the run.
func receivedNote(received []*coltracepb.ExportTraceServiceRequest) string {
	n := 0
	for _, req := range received {
		for _, rs := range req.GetResourceSpans() {
			for _, ss := range rs.GetScopeSpans() {
				n += len(ss.GetSpans())
			}
		}
	}
	if n == 0 {
		return ""
	}
	return fmt.Sprintf(" here, %d from the containers", n)
}
