package main

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestMeshproof(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "meshproof command Suite")
}
