package gotest_test

import (
	"testing"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh"
	"github.com/meshproof/meshproof/mesh/meshtest"
)

// The same API from a plain `testing` test: RunT fails the test on a run error, and Gomega's
// NewWithT asserts with the same matchers.
func TestNoFaultNoRetry(t *testing.T) {
	spec := checkout()
	spec.Name, spec.Faults = "checkout-healthy", nil
	spec.Load.Duration = "1s"
	spec.Checks = []string{"success_rate == 100%", "retries == 0"}
	sc, err := spec.Build()
	if err != nil {
		t.Fatal(err)
	}
	run := meshtest.RunT(t, sc, mesh.Options{})
	g := gomega.NewWithT(t)
	g.Expect(run).To(meshtest.Pass())
	g.Expect(run).To(meshtest.HaveRetryAmplification(gomega.BeNumerically("==", 1)))
}
