package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/reports"
)

// Runs never lose data (issue #18): the run directory is checked before anything starts, an
// interrupted run writes its partial report, clearly marked, and exits 130.
var _ = Describe("the run directory", func() {
	It("is refused before anything starts when it cannot be written", func() {
		parent := filepath.Join(GinkgoT().TempDir(), "a-file")
		Expect(os.WriteFile(parent, []byte("x"), 0o644)).To(Succeed())
		code, stdout, stderr := run("run", "testdata/violated.yaml", "--out", filepath.Join(parent, "run"))
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("--out " + filepath.Join(parent, "run") + ": "))
		Expect(stdout).NotTo(ContainSubstring("running"), "nothing started")
	})

	It("holds the partial report of an interrupted run, marked INCOMPLETE, and the run exits 130", Label("e2e"), func() {
		dir := GinkgoT().TempDir()
		// A stale report from an earlier run in the same directory must not survive as this run's.
		Expect(os.WriteFile(filepath.Join(dir, reports.FileHTML), []byte("stale"), 0o644)).To(Succeed())
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		time.AfterFunc(1500*time.Millisecond, cancel) // the scenario's load lasts 6s
		var stdout, stderr bytes.Buffer
		code := Main(ctx, []string{"run", "../../scenarios/examples/flapping-instance.yaml", "--out", dir, "--trace-ratio", "0"}, &stdout, &stderr)
		Expect(code).To(Equal(cli.ExitInterrupted), "stderr: %s", stderr.String())
		Expect(stdout.String()).To(ContainSubstring("INCOMPLETE: interrupted"))

		marker, err := os.ReadFile(filepath.Join(dir, FileIncomplete))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(marker)).To(HavePrefix("This run did not finish: interrupted"))
		rep, err := reports.ReadReport(filepath.Join(dir, reports.FileJSON))
		Expect(err).NotTo(HaveOccurred())
		Expect(rep.Partial).To(MatchRegexp(`^interrupted \(context canceled\) after \d+(\.\d)?s of the planned 6s$`))
		Expect(rep.Passed).To(BeFalse(), "a partial run never passes")
		Expect(rep.Summary.Requests).To(BeNumerically(">", 0), "what was recorded until the interruption")
		html, err := os.ReadFile(filepath.Join(dir, reports.FileHTML))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(html)).NotTo(Equal("stale"))

		code, _, errOut := run("report", "compare", dir, dir)
		Expect(code).To(Equal(2))
		Expect(errOut).To(ContainSubstring("is not a complete run (INCOMPLETE holds: This run did not finish: interrupted"))
	})

	It("loses its INCOMPLETE marker once every report file of a finished run is written", Label("e2e"), func() {
		dir := GinkgoT().TempDir()
		code, _, _ := run("run", "testdata/violated.yaml", "--out", dir)
		Expect(code).To(Equal(1))
		Expect(filepath.Join(dir, FileIncomplete)).NotTo(BeAnExistingFile())
		Expect(filepath.Join(dir, reports.FileJSON)).To(BeAnExistingFile())
	})
})
