package live_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/internal/leakcheck"
)

func TestLive(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "Live Runner Suite")
}

// Every spec is checked for goroutines left running after its cleanups.
var _ = leakcheck.Goroutines()
