package main

import (
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// Regression (issue #18): run, proxy and upstream --help exited 2 ("flag: help requested"), validate
// --help tried to open a file named --help, report compare --help complained about its arguments.
var _ = Describe("help and version", func() {
	DescribeTable("every subcommand's --help prints its usage to stdout and exits 0",
		func(args []string, usage string) {
			code, stdout, stderr := run(args...)
			Expect(code).To(Equal(0), "stderr: %s", stderr)
			Expect(stdout).To(ContainSubstring(usage))
			Expect(stderr).To(BeEmpty())
		},
		Entry("run", []string{"run", "--help"}, "usage: meshproof run FILE"),
		Entry("run -h after a file", []string{"run", "x.yaml", "-h"}, "-runner string"),
		Entry("validate", []string{"validate", "--help"}, "usage: meshproof validate FILE..."),
		Entry("proxy", []string{"proxy", "--help"}, "-drain-time duration"),
		Entry("upstream", []string{"upstream", "-help"}, "usage: meshproof upstream"),
		Entry("load", []string{"load", "--help"}, "--max-error-rate P"),
		Entry("report compare", []string{"report", "compare", "--help"}, "usage: meshproof report compare RUN_A RUN_B"),
		Entry("report", []string{"report", "--help"}, "usage: meshproof report compare"),
		Entry("the top level", []string{"--help"}, "meshproof version"),
	)

	It("still treats a file named after a flag after -- as a file", func() {
		code, _, stderr := run("validate", "--", "--help")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("--help"))
	})

	It("prints the version and the commit it was built from", func() {
		code, stdout, _ := run("version")
		Expect(code).To(Equal(0))
		Expect(stdout).To(MatchRegexp(`^meshproof \S+ commit \S+.* go1\.\d+`))
	})
})

// A runner refuses what it cannot do before anything starts, with exit 2 (issue #12).
var _ = Describe("meshproof run --runner", func() {
	It("refuses container faults on the embedded runner, naming the rule", func() {
		code, _, stderr := run("run", "../../mesh/docker/testdata/partition-scenario.yaml", "--out", GinkgoT().TempDir())
		Expect(code).To(Equal(2))
		Expect(stderr).To(MatchRegexp(`the embedded runner cannot do faults\[\d+\]: container fault "partition"`))
	})

	It("refuses mesh.mtls on the docker runner by name rather than run it in clear text (issue #16)", func() {
		code, _, stderr := run("run", "--runner", "docker", "../../scenarios/examples/mesh-mtls.yaml", "--out", GinkgoT().TempDir())
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("the docker runner cannot do mesh.mtls: mutual TLS between the proxies and the instances"))
	})
})
