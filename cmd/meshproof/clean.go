package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/mesh/docker"
	tclog "github.com/testcontainers/testcontainers-go/log"
)

const cleanUsage = `usage: meshproof clean [--all]
  Remove the Docker containers, networks and images that meshproof runs left behind because their process
  was killed (each carries the label io.meshproof.owner=<host>:<pid> of a process that is gone). Every
  docker run does this first by itself. With --all: every meshproof container, network and image, also
  those of runs still going. Exit 0 when done, 1 when Docker refused a removal or cannot be reached.`

// cmdClean removes docker leftovers of meshproof runs.
func cmdClean(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("clean", flag.ContinueOnError)
	fs.SetOutput(stderr)
	all := fs.Bool("all", false, "remove every meshproof container, network and image, in use or not")
	if cli.HelpRequested(args) {
		return cli.PrintHelp(stdout, cleanUsage, fs)
	}
	if err := fs.Parse(args); err != nil || fs.NArg() > 0 {
		fmt.Fprintln(stderr, cleanUsage)
		return cli.ExitInvalid
	}
	if os.Getenv(envDockerVerbose) != "1" {
		tclog.SetDefault(tclog.NewNoopLogger()) // testcontainers' banner
	}
	if err := dockerAvailable(ctx); err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	swept, err := docker.Sweep(ctx, *all)
	fmt.Fprintf(stdout, "removed %s\n", swept)
	if err != nil {
		cli.PrintErr(stderr, err)
		return cli.ExitFailed
	}
	return cli.ExitOK
}
