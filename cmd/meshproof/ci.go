package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

// GitHub Actions' environment (docs.github.com/actions/reference/workflows-and-actions/variables).
const (
	envGitHubActions     = "GITHUB_ACTIONS"      // "true" in a GitHub Actions job
	envGitHubStepSummary = "GITHUB_STEP_SUMMARY" // the file a step appends its job summary's Markdown to
)

// inGitHubActions says whether the process runs in a GitHub Actions job.
func inGitHubActions(getenv func(string) string) bool { return getenv(envGitHubActions) == "true" }

// Escaping of GitHub workflow commands (as @actions/core's command.ts does): the message escapes %, CR
// and LF; a property value also escapes : and , (which separate the properties).
var (
	ghData     = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A")
	ghProperty = strings.NewReplacer("%", "%25", "\r", "%0D", "\n", "%0A", ":", "%3A", ",", "%2C")
)

// ghAnnotation writes one workflow command (::error or ::warning) annotating line of file; line 0 (not
// known) names the file only.
func ghAnnotation(w io.Writer, command, file string, line int, title, msg string) {
	props := "file=" + ghProperty.Replace(file)
	if line > 0 {
		props += ",line=" + strconv.Itoa(line)
	}
	if title != "" {
		props += ",title=" + ghProperty.Replace(title)
	}
	fmt.Fprintf(w, "::%s %s::%s\n", command, props, ghData.Replace(msg))
}

// ghWarnings annotates each warning of the scenario at its line of file (the path as given).
func ghWarnings(w io.Writer, file string, sc *scenarios.Scenario) {
	for _, warning := range sc.Warnings {
		msg := strings.TrimPrefix(warning.Msg, "warning: ")
		if warning.Path != "" {
			msg = warning.Path + ": " + msg
		}
		ghAnnotation(w, "warning", file, warning.Line, "meshproof scenario warning", msg)
	}
}

// ghInvalid annotates each error of a scenario that did not load at its line of file (the path as
// given); an error without a position (a missing file) annotates the file.
func ghInvalid(w io.Writer, file string, err error) {
	errs := []error{err}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	for _, e := range errs {
		var se *scenarios.Error
		if !errors.As(e, &se) {
			ghAnnotation(w, "error", file, 0, "meshproof invalid scenario", e.Error())
			continue
		}
		msg := se.Msg
		if se.Path != "" {
			msg = se.Path + ": " + msg
		}
		ghAnnotation(w, "error", file, se.Line, "meshproof invalid scenario", msg)
	}
}

// ghFailedChecks annotates each failed check at its line in the scenario file: rep.Checks are the
// verdicts of sc.Checks, in order.
func ghFailedChecks(w io.Writer, file string, sc *scenarios.Scenario, rep reports.Report) {
	for i, v := range rep.Checks {
		if v.Passed {
			continue
		}
		line := 0
		if i < len(sc.Checks) {
			line = sc.Checks[i].Line
		}
		ghAnnotation(w, "error", file, line, "meshproof check failed",
			fmt.Sprintf("%s: observed %s, required %s", v.Check, v.Observed, v.Required))
	}
}

// appendStepSummary appends the run's summary.md (the same Markdown as the run directory's) to the
// job summary file GitHub names in $GITHUB_STEP_SUMMARY. GitHub creates that file; a missing one is an
// error, not created here.
func appendStepSummary(getenv func(string) string, rep reports.Report) error {
	path := getenv(envGitHubStepSummary)
	if path == "" {
		return fmt.Errorf("%s=true but %s is not set: no job summary written", envGitHubActions, envGitHubStepSummary)
	}
	var md bytes.Buffer
	if err := reports.WriteMarkdown(&md, rep); err != nil {
		return fmt.Errorf("job summary: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("job summary %s=%s: %w", envGitHubStepSummary, path, err)
	}
	_, err = f.Write(md.Bytes())
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("job summary %s=%s: %w", envGitHubStepSummary, path, err)
	}
	return nil
}

// checkReportCopy refuses, before the run starts, a --junit or --json path that cannot be a file.
func checkReportCopy(flagName, path string) error {
	if path == "" {
		return nil
	}
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		return fmt.Errorf("--%s %s is a directory: want the path of the file to write", flagName, path)
	}
	return nil
}

// writeReportCopies writes junit.xml to junitPath and report.json to jsonPath ("" = not asked for),
// each atomically, creating their directories. It returns every error, joined, and the paths written.
func writeReportCopies(junitPath, jsonPath string, rep reports.Report) ([]string, error) {
	var (
		errs    []error
		written []string
	)
	if junitPath != "" {
		var b bytes.Buffer
		err := reports.WriteJUnit(&b, rep)
		if err == nil {
			err = os.MkdirAll(filepath.Dir(junitPath), 0o755)
		}
		if err == nil {
			err = reports.WriteFileAtomic(junitPath, b.Bytes())
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--junit: %w", err))
		} else {
			written = append(written, junitPath)
		}
	}
	if jsonPath != "" {
		err := os.MkdirAll(filepath.Dir(jsonPath), 0o755)
		if err == nil {
			err = reports.WriteJSON(jsonPath, rep)
		}
		if err != nil {
			errs = append(errs, fmt.Errorf("--json: %w", err))
		} else {
			written = append(written, jsonPath)
		}
	}
	return written, errors.Join(errs...)
}
