package xds_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
)

func TestXDS(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "xDS Suite")
}

// Every spec must end the goroutines it started (the client's, the control plane's, gRPC's
// connections): checked after its own cleanups.
var _ = BeforeEach(func() {
	baseline := gleak.Goroutines()
	DeferCleanup(func() {
		Eventually(gleak.Goroutines).WithTimeout(5 * time.Second).ShouldNot(gleak.HaveLeaked(baseline))
	})
})
