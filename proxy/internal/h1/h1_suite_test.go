package h1_test

import (
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/internal/leakcheck"
)

func TestH1(t *testing.T) {
	RegisterFailHandler(Fail)
	SetDefaultEventuallyTimeout(5 * time.Second)
	SetDefaultEventuallyPollingInterval(5 * time.Millisecond)
	SetDefaultConsistentlyDuration(150 * time.Millisecond)
	RunSpecs(t, "H1 Suite")
}

// Every spec is checked for goroutines left running after its cleanups.
var _ = leakcheck.Goroutines()
