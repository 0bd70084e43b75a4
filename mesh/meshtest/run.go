package meshtest

import (
	"context"
	"os"
	"testing"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh"
	"github.com/meshproof/meshproof/mesh/docker"
)

// EnvRequireDocker, when set, turns the skip of a docker run without Docker into a failure (for CI,
// where a missing Docker must not pass silently).
const EnvRequireDocker = "MESHPROOF_REQUIRE_DOCKER"

// Run runs the scenario from a Ginkgo node (a spec, or a BeforeAll of an Ordered container) and returns
// its result; its checks are not asserted (use Pass or the metric matchers). A run error fails the
// node. Without opts.Dir the run's files go to a new temporary directory, attached to the spec report
// as "meshproof run", and removed after the node unless it failed. A docker run without Docker skips the
// spec, saying so (fails it when MESHPROOF_REQUIRE_DOCKER is set). Runs in parallel processes
// (ginkgo -p) do not collide: every port is picked free on loopback, every directory is new.
func Run(ctx context.Context, sc *mesh.Scenario, opts mesh.Options) *mesh.Result {
	ginkgo.GinkgoHelper()
	if opts.Runner == mesh.Docker {
		if err := docker.Available(ctx); err != nil {
			if os.Getenv(EnvRequireDocker) != "" {
				ginkgo.Fail("the docker runner needs Docker, and " + EnvRequireDocker + " is set: " + err.Error())
			}
			ginkgo.Skip("the docker runner needs Docker: " + err.Error())
		}
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "meshproof-"+sc.Name+"-")
		gomega.Expect(err).NotTo(gomega.HaveOccurred())
		opts.Dir = dir
		ginkgo.DeferCleanup(func() {
			if !ginkgo.CurrentSpecReport().Failed() {
				_ = os.RemoveAll(dir)
			}
		})
	}
	if opts.Progress == nil {
		opts.Progress = ginkgo.GinkgoWriter
	}
	res, err := mesh.Run(ctx, sc, opts)
	ginkgo.AddReportEntry("meshproof run", opts.Dir)
	gomega.Expect(err).NotTo(gomega.HaveOccurred(), "meshproof run of %s", sc.Name)
	return res
}

// RunT runs the scenario from a `testing` test and returns its result; its checks are not asserted. A
// run error fails the test (t.Fatal). Without opts.Dir the run's files go to a new temporary directory,
// logged, and removed at the end of the test unless it failed. A docker run without Docker skips the
// test, saying so (fails it when MESHPROOF_REQUIRE_DOCKER is set). The run stops when the test's
// context ends.
func RunT(t testing.TB, sc *mesh.Scenario, opts mesh.Options) *mesh.Result {
	t.Helper()
	if opts.Runner == mesh.Docker {
		if err := docker.Available(t.Context()); err != nil {
			if os.Getenv(EnvRequireDocker) != "" {
				t.Fatalf("the docker runner needs Docker, and %s is set: %v", EnvRequireDocker, err)
			}
			t.Skipf("the docker runner needs Docker: %v", err)
		}
	}
	if opts.Dir == "" {
		dir, err := os.MkdirTemp("", "meshproof-"+sc.Name+"-")
		if err != nil {
			t.Fatal(err)
		}
		opts.Dir = dir
		t.Cleanup(func() {
			if !t.Failed() {
				_ = os.RemoveAll(dir)
			}
		})
	}
	res, err := mesh.Run(t.Context(), sc, opts)
	t.Logf("meshproof run of %s: %s", sc.Name, opts.Dir)
	if err != nil {
		t.Fatalf("meshproof run of %s: %v", sc.Name, err)
	}
	return res
}
