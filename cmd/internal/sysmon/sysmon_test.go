package sysmon

import (
	"testing"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

func TestSysmon(t *testing.T) {
	RegisterFailHandler(Fail)
	RunSpecs(t, "sysmon Suite")
}

var _ = Describe("the environment Reexec runs the proxy again with", func() {
	It("adds schedtrace to an environment without GODEBUG and keeps every other variable", func() {
		env, ok := reexecEnv([]string{"HOME=/root", "PATH=/bin"})
		Expect(ok).To(BeTrue())
		Expect(env).To(ConsistOf("GODEBUG=schedtrace=2147483647", "HOME=/root", "PATH=/bin"))
	})

	It("keeps the user's GODEBUG settings, from the entry the runtime reads, in one GODEBUG entry", func() {
		env, ok := reexecEnv([]string{"GODEBUG=gctrace=1,madvdontneed=1", "A=b", "GODEBUG=ignored=1"})
		Expect(ok).To(BeTrue())
		Expect(env).To(ConsistOf("GODEBUG=gctrace=1,madvdontneed=1,schedtrace=2147483647", "A=b"))
	})

	DescribeTable("does not re-execute",
		func(environ []string) {
			env, ok := reexecEnv(environ)
			Expect(ok).To(BeFalse())
			Expect(env).To(BeNil())
		},
		Entry("the re-executed process itself", []string{"GODEBUG=schedtrace=2147483647"}),
		Entry("a schedtrace the user chose", []string{"GODEBUG=gctrace=1, schedtrace=1000"}),
		Entry("MESHPROOF_SYSMON=sleep: Go's default monitor", []string{"MESHPROOF_SYSMON=sleep", "PATH=/bin"}),
	)

	It("re-executes for any other MESHPROOF_SYSMON value", func() {
		_, ok := reexecEnv([]string{"MESHPROOF_SYSMON=awake"})
		Expect(ok).To(BeTrue())
	})
})
