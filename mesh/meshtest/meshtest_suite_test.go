package meshtest_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestMeshtest(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "mesh/meshtest Suite")
}
