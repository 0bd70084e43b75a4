package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// run runs the command line in process and returns its exit code and output.
func run(args ...string) (int, string, string) {
	var stdout, stderr bytes.Buffer
	code := Main(context.Background(), args, &stdout, &stderr)
	return code, stdout.String(), stderr.String()
}

var _ = Describe("meshproof run", func() {
	var out string
	BeforeEach(func() { out = GinkgoT().TempDir() })

	examples, _ := filepath.Glob("../../scenarios/examples/*.yaml")
	It("has example scenarios to run", func() {
		Expect(len(examples)).To(BeNumerically(">=", 3))
	})
	for _, file := range examples {
		// Serial: each example drives real-time load, and its latency checks should not share the CPU.
		It("runs "+filepath.Base(file)+" end to end and passes its checks", Label("slow", "e2e"), Serial, func() {
			code, stdout, stderr := run("run", file, "--out", out)
			Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			Expect(stdout).To(ContainSubstring("PASS"))
			Expect(stdout).To(ContainSubstring("p99"))

			data, err := os.ReadFile(filepath.Join(out, "report.json"))
			Expect(err).NotTo(HaveOccurred())
			var rep map[string]any
			Expect(json.Unmarshal(data, &rep)).To(Succeed())
			Expect(rep).To(HaveKeyWithValue("passed", true))
			Expect(rep).To(HaveKey("summary"))
		})
	}

	It("exits 1 and names the failed check, observed vs required, when a check is violated", Label("e2e"), func() {
		code, stdout, _ := run("run", "testdata/violated.yaml", "--out", out)
		Expect(code).To(Equal(1))
		Expect(stdout).To(MatchRegexp(`FAIL.*success_rate >= 99%`))
		Expect(stdout).To(ContainSubstring("success_rate = "))
		Expect(filepath.Join(out, "report.json")).To(BeAnExistingFile())
	})

	It("logs its progress to a non-terminal stderr, ending with the final counts", Label("e2e"), func() {
		_, _, stderr := run("run", "testdata/violated.yaml", "--out", out)
		// The final line's elapsed time is wall clock: on a loaded machine the run's end (in-flight
		// requests finishing) can read 1.1s of a 1s run.
		Expect(stderr).To(MatchRegexp(`progress: 1(\.\d)?s/1s  \d+ req/s  p99 \S+  errors \d+  retries 0  ejected 0\n`))
	})

	It("exits 2 on a malformed file, naming file and line, and starts nothing", func() {
		code, stdout, stderr := run("run", "testdata/malformed.yaml", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stderr).To(MatchRegexp(`testdata/malformed\.yaml:\d+:\d+: `))
		Expect(stdout).To(BeEmpty())
		Expect(filepath.Join(out, "report.json")).NotTo(BeAnExistingFile())
	})

	It("exits 2 on an unknown field, naming file, line, field and the accepted fields", func() {
		code, _, stderr := run("run", "testdata/unknown-field.yaml", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring(`testdata/unknown-field.yaml:5:5: services.backend.replicas: unknown field "replicas"; accepted here: instances, response`))
	})

	It("exits 2 on a missing file and on bad flags", func() {
		code, _, stderr := run("run", "testdata/nope.yaml")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("nope.yaml"))
		code, _, _ = run("run", "testdata/violated.yaml", "--seed", "minus-one")
		Expect(code).To(Equal(2))
		code, _, _ = run("run")
		Expect(code).To(Equal(2))
	})
})

var _ = Describe("meshproof validate", func() {
	It("accepts every example and rejects a bad file with exit 2", func() {
		examples, _ := filepath.Glob("../../scenarios/examples/*.yaml")
		code, stdout, _ := run(append([]string{"validate"}, examples...)...)
		Expect(code).To(Equal(0))
		Expect(strings.Count(stdout, ": ok")).To(Equal(len(examples)))
		code, _, _ = run("validate", "testdata/unknown-field.yaml")
		Expect(code).To(Equal(2))
	})
})

var _ = Describe("meshproof", func() {
	It("prints usage and exits 2 on an unknown command", func() {
		code, _, stderr := run("frobnicate")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("Usage:"))
	})
})
