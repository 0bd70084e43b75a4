package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/reports"
)

const reportUsage = `usage: meshproof report compare RUN_A RUN_B
  Compare two run directories (each holding the report.json that "meshproof run --out DIR" wrote):
  RUN_A is the baseline, RUN_B the candidate. Exit 0 when both were read, 2 when one is missing or invalid.
`

// cmdReport runs "meshproof report SUBCOMMAND".
func cmdReport(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, "meshproof report: missing subcommand\n"+reportUsage)
		return cli.ExitInvalid
	}
	switch args[0] {
	case "compare":
		return cmdReportCompare(args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, reportUsage)
		return cli.ExitOK
	}
	fmt.Fprintf(stderr, "meshproof report: unknown subcommand %q; accepted: compare\n%s", args[0], reportUsage)
	return cli.ExitInvalid
}

// cmdReportCompare prints two runs side by side with the candidate's deltas.
func cmdReportCompare(args []string, stdout, stderr io.Writer) int {
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, strings.TrimRight(reportUsage, "\n"), nil)
	}
	if len(args) != 2 {
		fmt.Fprintf(stderr, "meshproof report compare: want two run directories, got %d\n%s", len(args), reportUsage)
		return cli.ExitInvalid
	}
	var runs [2]reports.Report
	for i, dir := range args {
		r, err := readRun(dir)
		if err != nil {
			fmt.Fprintf(stderr, "meshproof report compare: %v\n", err)
			return cli.ExitInvalid
		}
		runs[i] = r
	}
	if err := reports.WriteComparison(stdout, runs[0], runs[1], args[0], args[1]); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	return cli.ExitOK
}

// readRun reads the report.json of a run directory, saying precisely what is wrong when it cannot.
func readRun(dir string) (reports.Report, error) {
	fi, err := os.Stat(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return reports.Report{}, fmt.Errorf("run directory %s does not exist", dir)
	case err != nil:
		return reports.Report{}, err
	case !fi.IsDir():
		return reports.Report{}, fmt.Errorf("%s is not a directory: want a run directory holding %s", dir, reports.FileJSON)
	}
	if why := incomplete(dir); why != "" {
		return reports.Report{}, fmt.Errorf("%s is not a complete run (%s holds: %s)", dir, FileIncomplete, why)
	}
	path := filepath.Join(dir, reports.FileJSON)
	r, err := reports.ReadReport(path)
	if errors.Is(err, fs.ErrNotExist) {
		return reports.Report{}, fmt.Errorf("%s holds no %s: is it a run directory (meshproof run --out DIR)?", dir, reports.FileJSON)
	}
	return r, err
}
