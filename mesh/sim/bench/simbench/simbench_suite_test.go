package main

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestSimbench(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "simbench")
}
