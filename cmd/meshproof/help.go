package main

import (
	"flag"
	"fmt"
	"io"
	"runtime/debug"
)

// helpRequested reports whether args ask for help (-h, -help, --help, or "help" alone), looking only
// before a "--" that ends the flags.
func helpRequested(args []string) bool {
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

// printHelp writes a subcommand's usage line and its flags (fs may be nil) to w; help is asked for on
// purpose, so it goes to standard output and the command exits 0.
func printHelp(w io.Writer, usage string, fs *flag.FlagSet) int {
	fmt.Fprintln(w, usage)
	if fs != nil {
		fmt.Fprintln(w, "\nFlags:")
		fs.SetOutput(w)
		fs.PrintDefaults()
	}
	return exitOK
}

// cmdVersion prints the module version and the VCS revision the binary was built from.
func cmdVersion(stdout io.Writer) int {
	fmt.Fprintln(stdout, versionString())
	return exitOK
}

func versionString() string {
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
