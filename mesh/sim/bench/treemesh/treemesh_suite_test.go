package treemesh_test

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestTreemesh(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "treemesh")
}
