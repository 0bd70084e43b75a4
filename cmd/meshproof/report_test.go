package main

import (
	"os"
	"path/filepath"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

// writeRun writes the report files of a small run into a new run directory: 100 requests at 10/s,
// failing ones with status 503, latencies given per request.
func writeRun(failures int, latency time.Duration, exprs ...string) string {
	GinkgoHelper()
	rec := &record.Record{Scenario: "compare-me", Seed: 7, TargetRate: 10, Duration: 10 * time.Second,
		Started:    time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
		ProxyStats: map[string]uint64{"cluster.backend.upstream_rq_retry": uint64(failures)}}
	for i := range 100 {
		s := record.Sample{Seq: uint64(i), Intended: time.Duration(i) * 100 * time.Millisecond, Latency: latency, Status: 200}
		s.Sent = s.Intended
		if i < failures {
			s.Status = 503
		}
		rec.Samples = append(rec.Samples, s)
	}
	var cs []checks.Check
	for _, e := range exprs {
		c, err := checks.Parse(e)
		Expect(err).NotTo(HaveOccurred())
		cs = append(cs, c)
	}
	dir := GinkgoT().TempDir()
	Expect(reports.WriteAll(dir, reports.NewReport(rec, cs), rec)).To(Succeed())
	return dir
}

var _ = Describe("meshproof report compare", func() {
	It("prints baseline and candidate side by side with deltas and per-check verdicts, exit 0", func() {
		a := writeRun(0, time.Millisecond, "success_rate == 100%", "p99 < 5ms")
		b := writeRun(5, 2*time.Millisecond, "success_rate == 100%", "p99 < 5ms", "retries <= 10")
		code, stdout, stderr := run("report", "compare", a, b)
		Expect(code).To(Equal(0), stderr)
		GinkgoWriter.Print(stdout)
		Expect(stdout).To(ContainSubstring("baseline:  " + a + " — compare-me, seed 7, started 2026-05-01T10:00:00Z, PASS\n"))
		Expect(stdout).To(ContainSubstring("candidate: " + b + " — compare-me, seed 7, started 2026-05-01T10:00:00Z, FAIL\n"))
		Expect(stdout).To(MatchRegexp(`requests +100 +100 +\+0 \(\+0%\)`))
		Expect(stdout).To(MatchRegexp(`success rate +100% +95% +-5 pp`))
		Expect(stdout).To(MatchRegexp(`p99 +1ms +2ms +\+1ms \(\+100%\)`))
		Expect(stdout).To(MatchRegexp(`retries +0 +5 +\+5`))
		Expect(stdout).To(MatchRegexp(`retry amplification +`))
		Expect(stdout).To(MatchRegexp(`ejections +0 +0`))
		Expect(stdout).To(MatchRegexp(`success_rate == 100% +PASS +FAIL +regressed: success_rate = 95% \(95/100\)`))
		Expect(stdout).To(MatchRegexp(`p99 < 5ms +PASS +PASS`))
		Expect(stdout).To(MatchRegexp(`retries <= 10 +- +PASS +only in one run`))
		Expect(stdout).To(HaveSuffix("verdict: baseline PASS, candidate FAIL\n"))
	})

	It("exits 2 with a clear message on a missing or invalid run directory", func() {
		good := writeRun(0, time.Millisecond)
		missing := filepath.Join(GinkgoT().TempDir(), "nope")
		code, stdout, stderr := run("report", "compare", good, missing)
		Expect(code).To(Equal(2))
		Expect(stdout).To(BeEmpty())
		Expect(stderr).To(Equal("meshproof report compare: run directory " + missing + " does not exist\n"))

		empty := GinkgoT().TempDir()
		code, _, stderr = run("report", "compare", empty, good)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring(empty + " holds no report.json: is it a run directory (meshproof run --out DIR)?"))

		bad := GinkgoT().TempDir()
		Expect(os.WriteFile(filepath.Join(bad, "report.json"), []byte("{not json"), 0o644)).To(Succeed())
		code, _, stderr = run("report", "compare", good, bad)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring(filepath.Join(bad, "report.json") + ": not a meshproof report.json: "))

		file := filepath.Join(good, "report.json")
		code, _, stderr = run("report", "compare", file, good)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring(file + " is not a directory: want a run directory holding report.json"))
	})

	It("exits 2 on bad usage", func() {
		code, _, stderr := run("report", "compare", "only-one")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("want two run directories, got 1"))
		code, _, stderr = run("report")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("usage: meshproof report compare RUN_A RUN_B"))
		code, _, stderr = run("report", "diff")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring(`unknown subcommand "diff"; accepted: compare`))
	})
})
