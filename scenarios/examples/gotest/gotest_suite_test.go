package gotest_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestCheckoutResilience(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "checkout resilience")
}
