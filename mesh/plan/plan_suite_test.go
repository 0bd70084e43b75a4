package plan_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
)

// Every spec must end the goroutines it started: checked after its own cleanups (gleak; this cleanup,
// registered first, runs last).
var _ = BeforeEach(func() {
	baseline := gleak.Goroutines()
	DeferCleanup(func() {
		Eventually(gleak.Goroutines).WithTimeout(5 * time.Second).ShouldNot(gleak.HaveLeaked(baseline))
	})
})

func TestPlan(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "mesh/plan Suite")
}
