package main

import (
	"context"
	"fmt"
	"io"
	"os"

	tclog "github.com/testcontainers/testcontainers-go/log"

	"github.com/meshproof/meshproof/mesh/docker"
)

// Environment of `meshproof run --runner docker`.
const (
	envDockerImage   = "MESHPROOF_DOCKER_IMAGE"   // run this image (e.g. meshproof:dev from `make image`) and keep it
	envDockerBinary  = "MESHPROOF_DOCKER_BINARY"  // build the run's image around this static binary
	envDockerVerbose = "MESHPROOF_DOCKER_VERBOSE" // "1": testcontainers' log and the image build output too
)

// dockerRunner is the docker runner configured from the environment, with its progress lines on w.
func dockerRunner(w io.Writer) docker.Runner {
	verbose := os.Getenv(envDockerVerbose) == "1"
	if !verbose {
		tclog.SetDefault(tclog.NewNoopLogger()) // testcontainers' banner; the runner's own lines still go to w
	}
	return docker.Runner{Options: docker.Options{
		Image:   os.Getenv(envDockerImage),
		Binary:  os.Getenv(envDockerBinary),
		Log:     w,
		Verbose: verbose,
	}}
}

// dockerAvailable says, in terms a user can act on, that Docker cannot be reached.
func dockerAvailable(ctx context.Context) error {
	if err := docker.Available(ctx); err != nil {
		return fmt.Errorf("docker runner: Docker is not reachable (start it, or use --runner embedded): %w", err)
	}
	return nil
}
