package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

var _ = Describe("meshproof run --runner sim", func() {
	var out string
	BeforeEach(func() { out = GinkgoT().TempDir() })

	readReport := func() map[string]any {
		GinkgoHelper()
		data, err := os.ReadFile(filepath.Join(out, "report.json"))
		Expect(err).NotTo(HaveOccurred())
		var rep map[string]any
		Expect(json.Unmarshal(data, &rep)).To(Succeed())
		return rep
	}

	It("runs a scenario on virtual time, writes report.json, no traces and no access logs, and exits 0 when the checks hold", func() {
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--runner", "sim", "--out", out)
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(stdout).To(ContainSubstring("PASS"))
		Expect(readReport()).To(HaveKeyWithValue("passed", true))
		Expect(filepath.Join(out, "traces.otlp.json")).NotTo(BeAnExistingFile())
		Expect(filepath.Join(out, "access")).NotTo(BeAnExistingFile())
	})

	It("exits 1 when a check fails", func() {
		code, stdout, stderr := run("run", "testdata/violated.yaml", "--runner", "sim", "--out", out)
		Expect(code).To(Equal(1), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(readReport()).To(HaveKeyWithValue("passed", false))
	})

	It("exits 2 naming what it cannot do: traces asked for explicitly", func() {
		code, _, stderr := run("run", "testdata/passing.yaml", "--runner", "sim", "--trace-ratio", "0.5", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("the sim runner cannot do --trace-ratio/--otlp-endpoint: traces"))
		Expect(filepath.Join(out, "report.json")).NotTo(BeAnExistingFile())
	})

	It("exits 2 naming what it cannot do: a TCP toxic it does not model", func() {
		// tcp-partial-failure.yaml with a bandwidth toxic instead of its latency one.
		data, err := os.ReadFile("../../scenarios/examples/tcp-partial-failure.yaml")
		Expect(err).NotTo(HaveOccurred())
		yaml := strings.Replace(string(data), "{type: latency, latency: 300ms, stream: downstream}", "{type: bandwidth, rate: 1}", 1)
		Expect(yaml).NotTo(Equal(string(data)))
		file := filepath.Join(GinkgoT().TempDir(), "bandwidth.yaml")
		Expect(os.WriteFile(file, []byte(yaml), 0o644)).To(Succeed())
		code, _, stderr := run("run", file, "--runner", "sim", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stderr).To(MatchRegexp(`the sim runner cannot do faults\[\d+\]\.tcp\.toxics\[0\]: toxic bandwidth`))
	})
})
