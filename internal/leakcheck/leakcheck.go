// Package leakcheck makes a Ginkgo suite check every spec for leaked goroutines (Gomega's gleak).
//
// A suite calls it once at the top level of one of its files:
//
//	var _ = leakcheck.Goroutines()
//
// Before each spec it takes the goroutines running as the baseline; after the spec, once every cleanup
// of the spec has run (the check is the first DeferCleanup registered, so the last to run), the
// goroutines started since must all have ended within the timeout. A goroutine that legitimately
// outlives its spec is named with an option, each with a comment in the suite saying why.
package leakcheck

import (
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
)

// Timeout is how long the goroutines started by a spec get to end after its cleanups: connections
// closed by a cleanup take a moment to see their end.
const Timeout = 5 * time.Second

// Goroutines registers the check for the suite. ignoring are gleak options (IgnoringTopFunction,
// IgnoringInBacktrace, IgnoringCreator …) for goroutines that legitimately outlive a spec.
func Goroutines(ignoring ...any) bool {
	ginkgo.BeforeEach(func() {
		baseline := gleak.Goroutines()
		ginkgo.DeferCleanup(func() {
			gomega.Eventually(gleak.Goroutines).WithTimeout(Timeout).WithPolling(10*time.Millisecond).
				ShouldNot(gleak.HaveLeaked(append([]any{baseline}, ignoring...)...),
					"goroutines started by the spec are still running after its cleanups")
		})
	})
	return true
}
