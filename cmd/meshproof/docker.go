package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/meshproof/meshproof/reports/record"

	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/scenarios"
)

// Environment of `meshproof run --runner docker`.
const (
	envDockerImage   = "MESHPROOF_DOCKER_IMAGE"   // run this image (e.g. meshproof:dev from `make image`) and keep it
	envDockerBinary  = "MESHPROOF_DOCKER_BINARY"  // build the run's image around this static binary
	envDockerVerbose = "MESHPROOF_DOCKER_VERBOSE" // "1": testcontainers' log and the image build output too
)

// runDocker runs the scenario on the docker runner, with progress on w.
func runDocker(ctx context.Context, sc *scenarios.Scenario, seed *uint64, w io.Writer) (*record.Record, error) {
	verbose := os.Getenv(envDockerVerbose) == "1"
	if !verbose {
		tclog.SetDefault(tclog.NewNoopLogger()) // testcontainers' banner; the runner's own lines still go to w
	}
	if err := docker.Available(ctx); err != nil {
		return nil, fmt.Errorf("docker runner: Docker is not reachable (start it, or use --runner embedded): %w", err)
	}
	return docker.Run(ctx, sc, docker.Options{
		Seed:    seed,
		Image:   os.Getenv(envDockerImage),
		Binary:  os.Getenv(envDockerBinary),
		Log:     w,
		Verbose: verbose,
	})
}
