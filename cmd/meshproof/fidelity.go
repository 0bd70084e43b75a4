package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

const fidelityUsage = `usage: meshproof fidelity FILE [--seed N] [--out DIR] [--format text|markdown]
  Run the scenario on the embedded runner and on the simulator (the same plan, the same seed), then show
  both runs side by side, judging four metrics: success rate within 1 percentage point, retry
  amplification within 5% and p99 within 25% (relative to the embedded run's) or 5 ms, and the same
  set of ejected hosts. --out DIR keeps both runs' report files in DIR/embedded and DIR/sim (compare them with
  "meshproof report compare DIR/embedded DIR/sim"), and the table in DIR/fidelity.md.
exit codes: 0 within every bound, 1 out of a bound (or a run broke), 2 invalid input, or the simulator
  refuses the scenario ("refused: <reason>"), 130 interrupted`

// Where --out keeps the two runs and the table.
const (
	fidelityEmbeddedDir = "embedded"
	fidelitySimDir      = "sim"
	fileFidelity        = "fidelity.md"
)

// cmdFidelity runs "meshproof fidelity": the embedded runner against the simulator.
func cmdFidelity(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return fidelity(ctx, args, stdout, stderr, live.Runner{}, fidelitySimRunner())
}

// fidelity runs the scenario of args on embedded and on sim with one plan, and
// writes the comparison (reports.Fidelity) to stdout. Everything that can be refused is refused before
// anything runs.
func fidelity(ctx context.Context, args []string, stdout, stderr io.Writer, embedded, sim plan.Runner) int {
	fs := flag.NewFlagSet("fidelity", flag.ContinueOnError)
	fs.SetOutput(stderr)
	seedFlag := fs.String("seed", "", "override the scenario's seed (both runs take it)")
	out := fs.String("out", "", "keep both runs' report files in DIR/embedded and DIR/sim, and the table in DIR/"+fileFidelity)
	format := fs.String("format", "text", "how to print the table: text or markdown")
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, fidelityUsage, fs)
	}
	file, err := parseInterspersed(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "meshproof fidelity: %v\n%s\n", err, fidelityUsage)
		return cli.ExitInvalid
	}
	write := map[string]func(io.Writer, reports.FidelityTable) error{
		"text": reports.WriteFidelityText, "markdown": reports.WriteFidelityMarkdown}[*format]
	if write == nil {
		fmt.Fprintf(stderr, "meshproof fidelity: --format %q: want text or markdown\n", *format)
		return cli.ExitInvalid
	}
	seed, ok := parseSeed("fidelity", *seedFlag, stderr)
	if !ok {
		return cli.ExitInvalid
	}
	sc, err := scenarios.LoadFile(file)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	printWarnings(stderr, sc)
	p := plan.New(sc, seed)
	var opts plan.Options
	if err := embedded.Supports(p, opts); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	if err := sim.Supports(p, opts); err != nil {
		// The simulator refuses by name what it does not model: that is the comparison's result.
		t := reports.FidelityTable{Scenario: sc.Name, File: file, Seed: p.Seed, Refused: err.Error()}
		if err := write(stdout, t); err != nil {
			cli.PrintErr(stderr, err)
		}
		return cli.ExitInvalid
	}

	// Both run directories are checked, and marked incomplete, before anything starts.
	type run struct {
		runner plan.Runner
		dir    string
		marker *runMarker
		rec    *record.Record
	}
	runs := []*run{{runner: embedded}, {runner: sim}}
	if *out != "" {
		for i, name := range []string{fidelityEmbeddedDir, fidelitySimDir} {
			runs[i].dir = filepath.Join(*out, name)
			if runs[i].marker, err = startRunDir(runs[i].dir, file); err != nil {
				cli.PrintErr(stderr, fmt.Errorf("--out %s: %w", runs[i].dir, err))
				return cli.ExitInvalid
			}
		}
	}
	for _, r := range runs {
		fmt.Fprintf(stderr, "meshproof: running %s (%s) on the %s runner: %s\n", sc.Name, file, r.runner.Name(), sc.Load.Describe())
		r.rec, err = r.runner.Run(ctx, p, opts)
		if err == nil && r.rec == nil {
			err = errors.New("the runner returned no record")
		}
		if err != nil {
			err = fmt.Errorf("the %s run: %w", r.runner.Name(), err)
			cli.PrintErr(stderr, err)
			if r.marker != nil {
				_ = r.marker.fail(err)
			}
			if ctx.Err() != nil {
				return cli.ExitInterrupted
			}
			return cli.ExitFailed
		}
	}

	t := reports.Fidelity(runs[0].rec, runs[1].rec)
	if t.File == "" {
		t.File = file
	}
	if *out != "" {
		for _, r := range runs {
			if err := writeRunDir(r.dir, r.marker, reports.NewReport(r.rec, sc.CheckList()), r.rec); err != nil {
				cli.PrintErr(stderr, fmt.Errorf("--out %s: %w", r.dir, err))
				return cli.ExitFailed
			}
		}
		var md bytes.Buffer
		err := reports.WriteFidelityMarkdown(&md, t)
		if err == nil {
			err = os.WriteFile(filepath.Join(*out, fileFidelity), md.Bytes(), 0o644)
		}
		if err != nil {
			cli.PrintErr(stderr, fmt.Errorf("--out %s: %w", *out, err))
			return cli.ExitFailed
		}
		fmt.Fprintf(stderr, "meshproof: runs in %s and %s (meshproof report compare %[1]s %[2]s), the table in %s\n",
			runs[0].dir, runs[1].dir, filepath.Join(*out, fileFidelity))
	}
	if err := write(stdout, t); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	if !t.OK() {
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// writeRunDir writes a run's report files into its directory and removes its INCOMPLETE marker.
func writeRunDir(dir string, marker *runMarker, rep reports.Report, rec *record.Record) error {
	if err := reports.WriteAll(dir, rep, rec); err != nil {
		_ = marker.fail(err)
		return err
	}
	return marker.done()
}
