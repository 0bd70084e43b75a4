package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/sweep"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

const sweepUsage = "usage: meshproof sweep FILE --set PATH=v1,v2,… [--set …] [--seed N] [--out DIR] [--jobs N]\n" +
	"                       [--find-max-rate [--rate-min R] [--rate-max R] [--precision P]]\n" +
	"runs the scenario at every point of the grid of --set values (their cartesian product) and reports each\n" +
	"point's checks and key outcomes, and the safe region: the points where every check holds.\n" +
	"PATH is the scenario file's own field path (proxies.edge.route.retry_policy.num_retries,\n" +
	"services.checkout.instances, faults[1].abort.percent); values are YAML values (2, 250ms, \"5xx,reset\", [0,1]).\n" +
	"--find-max-rate bisects the load's rate (every phase's rate scaled alike) for the highest at which every\n" +
	"check still holds, at each point.\n" +
	"exit codes: 0 at least one point passes every check, 1 none does, 2 invalid input (the file, a --set, or the\n" +
	"runner refuses the scenario), 130 interrupted (the report of the points run so far is written)"

// setFlags collects the repeated --set flags in order.
type setFlags []reports.SweepDimension

func (s *setFlags) String() string { return fmt.Sprint(*s) }

func (s *setFlags) Set(arg string) error {
	path, values, err := scenarios.ParseSetFlag(arg)
	if err != nil {
		return err
	}
	*s = append(*s, reports.SweepDimension{Path: path, Values: values})
	return nil
}

// rateFlag is a rate in requests/s: 200, "200/s" or "6000/m".
type rateFlag float64

func (r *rateFlag) String() string { return strconv.FormatFloat(float64(*r), 'g', -1, 64) }

func (r *rateFlag) Set(s string) error {
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	v, err := strconv.ParseFloat(num, 64)
	div := map[string]float64{"": 1, "s": 1, "m": 60}[unit]
	if err != nil || div == 0 || v <= 0 || v != v {
		return fmt.Errorf("want a rate such as 200, 200/s or 6000/m, greater than 0")
	}
	*r = rateFlag(v / div)
	return nil
}

func cmdSweep(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("sweep", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var sets setFlags
	fs.Var(&sets, "set", "PATH=v1,v2,…: a field of the scenario file and its values (repeatable: the grid is their product)")
	seedFlag := fs.String("seed", "", "override the scenario's seed (every point runs with the same seed)")
	out := fs.String("out", "", "sweep directory for sweep.json, summary.md and report.html (default runs/<scenario>-sweep-<time>)")
	jobs := fs.Int("jobs", 0, "points run at once (default GOMAXPROCS)")
	findMax := fs.Bool("find-max-rate", false, "search each point's highest load rate at which every check holds (bisection)")
	var rateMin, rateMax, precision rateFlag
	fs.Var(&rateMin, "rate-min", "the search's lowest rate (default a tenth of the scenario's peak rate)")
	fs.Var(&rateMax, "rate-max", "the search's highest rate (default ten times the scenario's peak rate)")
	fs.Var(&precision, "precision", "stop when the passing and the failing rates are this close (default 1% of --rate-max)")
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, sweepUsage, fs)
	}
	file, err := parseInterspersed(fs, args)
	if err != nil {
		fmt.Fprintf(stderr, "meshproof sweep: %v\n%s\n", err, sweepUsage)
		return cli.ExitInvalid
	}
	if *jobs < 0 {
		fmt.Fprintf(stderr, "meshproof sweep: --jobs %d: want a number of points from 1 (0: GOMAXPROCS)\n", *jobs)
		return cli.ExitInvalid
	}
	if !*findMax && (rateMin != 0 || rateMax != 0 || precision != 0) {
		fmt.Fprintln(stderr, "meshproof sweep: --rate-min, --rate-max and --precision go with --find-max-rate")
		return cli.ExitInvalid
	}
	seed, ok := parseSeed("sweep", *seedFlag, stderr)
	if !ok {
		return cli.ExitInvalid
	}
	data, err := os.ReadFile(file)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	cfg := sweep.Config{Data: data, File: file, Grid: sets, Seed: seed, Runner: sweepRunner, Jobs: *jobs}
	if *findMax {
		base, err := scenarios.Parse(data, file)
		if err != nil {
			cli.PrintErr(stderr, err)
			return cli.ExitInvalid
		}
		b := sweep.DefaultBracket(base, float64(rateMin), float64(rateMax), float64(precision))
		cfg.MaxRate = &b
		cfg.OnProbe = func(_ int, setting string, p reports.RateProbe) {
			line := fmt.Sprintf("probe %s: %s/s %s", setting, reports.FormatRate(p.Rate), strings.ToUpper(p.Status))
			if len(p.Failed) > 0 {
				line += " (" + strings.Join(p.Failed, "; ") + ")"
			}
			if p.Error != "" {
				line += ": " + p.Error
			}
			fmt.Fprintln(stdout, line)
		}
	}
	cfg.OnPoint = func(i int, setting string, p reports.SweepPoint) {
		line := fmt.Sprintf("point %d: %s: %s", i+1, setting, strings.ToUpper(p.Status))
		if p.MaxRate != nil {
			line += fmt.Sprintf(" (highest passing rate: %s)", maxRateText(p.MaxRate))
		}
		if p.Error != "" {
			line += ": " + p.Error
		}
		fmt.Fprintln(stdout, line)
	}
	sw, err := sweep.Prepare(cfg)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitInvalid
	}
	sc := sw.Scenario()
	printWarnings(stderr, sc)
	dir := *out
	if dir == "" {
		dir = filepath.Join("runs", sc.Name+"-sweep-"+time.Now().Format("20060102-150405"))
	}
	marker, err := startRunDir(dir, file)
	if err == nil {
		if rerr := os.Remove(filepath.Join(dir, reports.FileSweepJSON)); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			err = rerr
		}
	}
	if err != nil {
		cli.PrintErr(stderr, fmt.Errorf("--out %s: %w", dir, err))
		return cli.ExitInvalid
	}
	what := fmt.Sprintf("%d points", sw.Len())
	if cfg.MaxRate != nil {
		what += fmt.Sprintf(", each a search of the highest passing rate in %s/s..%s/s", reports.FormatRate(cfg.MaxRate.Min), reports.FormatRate(cfg.MaxRate.Max))
	}
	fmt.Fprintf(stdout, "meshproof: sweeping %s (%s): %s (%s each)\n", sc.Name, file, what, sc.Load.Describe())
	res := sw.Run(ctx)
	if err := reports.WriteSweepTerminal(stdout, res); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	if err := reports.WriteSweepAll(dir, res); err != nil {
		cli.PrintErr(stderr, err)
		_ = marker.fail(err)
		return cli.ExitFailed
	}
	fmt.Fprintf(stdout, "sweep: %s, %s, %s\n", filepath.Join(dir, reports.FileSweepJSON), filepath.Join(dir, reports.FileMarkdown), filepath.Join(dir, reports.FileHTML))
	if ctx.Err() != nil {
		_ = marker.fail(fmt.Errorf("interrupted (%v)", context.Cause(ctx)))
		return cli.ExitInterrupted
	}
	if err := marker.done(); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	if len(res.Safe()) == 0 {
		return cli.ExitFailed
	}
	return cli.ExitOK
}

func maxRateText(m *reports.MaxRate) string {
	switch m.Result {
	case reports.RateFound:
		return reports.FormatRate(m.Rate) + "/s"
	case reports.RateAtMax:
		return "≥ " + reports.FormatRate(m.Rate) + "/s (it holds at --rate-max)"
	case reports.RateBelowMin:
		return "none (it fails at --rate-min)"
	}
	return "not found (a run failed)"
}
