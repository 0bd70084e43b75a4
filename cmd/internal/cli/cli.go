// Package cli holds what meshproof's commands share: exit codes, help, error printing, the
// OpenTelemetry environment variables and the version line. It imports nothing of meshproof's, so the
// proxy-only binary (cmd/meshproof-proxy) links it without the runners.
package cli

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// Exit codes.
const (
	ExitOK      = 0
	ExitFailed  = 1 // a check failed, or the run could not complete
	ExitInvalid = 2 // invalid input: usage, scenario or configuration
	// ExitInterrupted: the run was interrupted (Ctrl-C, SIGTERM); its partial report was written.
	ExitInterrupted = 130
)

// HelpRequested reports whether args ask for help (-h, -help, --help, or "help" alone), looking only
// before a "--" that ends the flags.
func HelpRequested(args []string) bool {
	if len(args) == 1 && args[0] == "help" {
		return true
	}
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// PrintHelp writes a subcommand's usage line and its flags (fs may be nil) to w; help is asked for on
// purpose, so it goes to standard output and the command exits 0.
func PrintHelp(w io.Writer, usage string, fs *flag.FlagSet) int {
	fmt.Fprintln(w, usage)
	if fs != nil {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	return ExitOK
}

// PrintErr prints an error, one joined error per line.
func PrintErr(w io.Writer, err error) {
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			fmt.Fprintf(w, "meshproof: %v\n", e)
		}
		return
	}
	fmt.Fprintf(w, "meshproof: %v\n", err)
}

// Version is the version line: the module version and the VCS revision the binary was built from.
func Version() string {
	info, ok := debug.ReadBuildInfo()
	if !ok {
		return "meshproof (no build information)"
	}
	version, revision, modified, built := info.Main.Version, "unknown", "", ""
	for _, s := range info.Settings {
		switch s.Key {
		case "vcs.revision":
			revision = s.Value
		case "vcs.modified":
			if s.Value == "true" {
				modified = " (modified)"
			}
		case "vcs.time":
			built = " " + s.Value
		}
	}
	if version == "" {
		version = "(devel)"
	}
	return fmt.Sprintf("meshproof %s commit %s%s%s %s", version, revision, modified, built, info.GoVersion)
}
