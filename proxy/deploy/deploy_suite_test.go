// Package deploy_test checks the proxy's deployment files: the Kubernetes manifests under k8s/ (decoded
// strictly with the Kubernetes API types, their bootstraps loaded by the proxy's own decoder) and, with
// Docker, the image of Dockerfile running as an edge proxy and as a sidecar.
package deploy_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
)

func TestDeploy(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "proxy/deploy Suite")
}

// Every spec must end the goroutines it started: checked after its own cleanups (gleak; this cleanup,
// registered first, runs last).
var _ = BeforeEach(func() {
	baseline := gleak.Goroutines()
	DeferCleanup(func() {
		Eventually(gleak.Goroutines).WithTimeout(5 * time.Second).ShouldNot(gleak.HaveLeaked(baseline))
	})
})
