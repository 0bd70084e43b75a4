package main

import (
	"os"
	"testing"
	"time"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
)

func TestMeshproof(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "meshproof command Suite")
}

// The specs start from an environment without the CI and OpenTelemetry variables the commands honour
// (a spec sets the ones it needs): run in a GitHub Actions job, every run would append to its summary.
var _ = BeforeSuite(func() {
	for _, v := range []string{envGitHubActions, envGitHubStepSummary, cli.EnvOTLPEndpoint, cli.EnvOTLPTracesEndpoint, cli.EnvServiceName} {
		Expect(os.Unsetenv(v)).To(Succeed())
	}
})

// Every spec must end the goroutines it started: checked after its own cleanups (gleak; this cleanup,
// registered first, runs last).
var _ = BeforeEach(func() {
	baseline := gleak.Goroutines()
	DeferCleanup(func() {
		Eventually(gleak.Goroutines).WithTimeout(5 * time.Second).ShouldNot(gleak.HaveLeaked(baseline))
	})
})
