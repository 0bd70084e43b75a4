package reports_test

import (
	"bytes"
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

var _ = Describe("Report", func() {
	var rec *record.Record

	mustParse := func(exprs ...string) []checks.Check {
		var out []checks.Check
		for _, e := range exprs {
			c, err := checks.Parse(e)
			Expect(err).NotTo(HaveOccurred())
			out = append(out, c)
		}
		return out
	}

	BeforeEach(func() {
		rec = &record.Record{
			Scenario: "outlier-ejects", File: "examples/outlier.yaml", Seed: 7,
			Started:    time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
			TargetRate: 10, Duration: time.Second,
			Samples:    steady(10, 10, func(i int) time.Duration { return time.Duration(i+1) * ms }),
			ProxyStats: map[string]uint64{"cluster.checkout.upstream_rq_retry": 2},
			Upstreams: []record.UpstreamRecord{
				{Service: "checkout", Instance: 0, Address: "127.0.0.1:1001", Requests: 6, Statuses: map[int]uint64{200: 6}},
				{Service: "checkout", Instance: 1, Address: "127.0.0.1:1002", Requests: 6, Statuses: map[int]uint64{200: 4, 503: 2},
					Applied: map[string]uint64{"faults[0]/abort": 2}},
			},
		}
	})

	It("passes when every check passes, and without checks", func() {
		Expect(reports.NewReport(rec, nil).Passed).To(BeTrue())
		Expect(reports.NewReport(rec, mustParse("success_rate == 100%", "retries == 2")).Passed).To(BeTrue())
		r := reports.NewReport(rec, mustParse("success_rate == 100%", "p99 < 5ms"))
		Expect(r.Passed).To(BeFalse())
		Expect(r.Version).To(Equal(3))
		// 12 requests received by the instances for 10 client requests; the samples carry no attempt
		// counts and the proxy reported no upstream_rq_total: the attempts are not recorded.
		Expect(r.Summary.DeliveredAmplification).To(Equal(1.2))
		Expect(r.Summary.AttemptsFrom).To(BeEmpty())
	})

	Describe("WriteTerminal", func() {
		It("shows the summary, each check and the verdict", func() {
			var b bytes.Buffer
			Expect(reports.WriteTerminal(&b, reports.NewReport(rec, mustParse("success_rate == 100%", "p99 < 5ms")))).To(Succeed())
			out := b.String()
			GinkgoWriter.Print(out)
			Expect(out).To(ContainSubstring("meshproof report: outlier-ejects (examples/outlier.yaml), seed 7, started 2026-05-01T10:00:00Z\n"))
			Expect(out).To(MatchRegexp(`load +10 requests in 1s: achieved 10/s of target 10/s, max send lag 0ns\n`))
			Expect(out).To(MatchRegexp(`success +100% \(10 ok, 0 failed\)\n`))
			Expect(out).To(MatchRegexp(`statuses +200: 10\n`))
			Expect(out).To(MatchRegexp(`\ntransport errors +none\n`))
			Expect(out).To(MatchRegexp(`latency +p50 5ms  p90 9ms  p99 10ms  p99.9 10ms  max 10ms +\(corrected: from intended send\)\n`))
			Expect(out).To(MatchRegexp(`uncorrected +p50 5ms .*\(from actual send\)\n`))
			Expect(out).To(MatchRegexp(`proxy +retries 2, ejections 0\n`))
			Expect(out).To(MatchRegexp(`upstream +retry amplification not recorded\n +delivered amplification 1.2 \(12 received / 10 requests\)\n`))
			Expect(out).To(MatchRegexp(`checkout/1 +127.0.0.1:1002 +requests 6 +statuses 200: 4, 503: 2 +resets 0 +faults faults\[0\]/abort: 2\n`))
			Expect(out).To(MatchRegexp(`PASS +success_rate == 100% +success_rate = 100% \(10/10\), required == 100%\n`))
			Expect(out).To(MatchRegexp(`FAIL +p99 < 5ms +p99 = 10ms, required < 5ms\n`))
			Expect(out).To(HaveSuffix("FAIL: 1 of 2 checks failed\n"))
			Expect(out).NotTo(ContainSubstring("RATE NOT HELD"))
		})

		It("warns loudly when the rate was not held", func() {
			rec.TargetRate = 20
			var b bytes.Buffer
			Expect(reports.WriteTerminal(&b, reports.NewReport(rec, nil))).To(Succeed())
			Expect(b.String()).To(ContainSubstring("!!! RATE NOT HELD: achieved 10/s of target 20/s (50%), max send lag 0ns.\n"))
			Expect(b.String()).To(HaveSuffix("PASS: no checks\n"))
		})
	})

	Describe("WriteJSON", func() {
		var dir, path string

		BeforeEach(func() {
			dir = GinkgoT().TempDir()
			path = filepath.Join(dir, "report.json")
		})

		read := func() map[string]any {
			data, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			var m map[string]any
			Expect(json.Unmarshal(data, &m)).To(Succeed())
			return m
		}

		It("writes the documented keys, durations in milliseconds, and no temporary file", func() {
			Expect(os.WriteFile(path, []byte("old"), 0o644)).To(Succeed())
			Expect(reports.WriteJSON(path, reports.NewReport(rec, mustParse("p99 < 5ms")))).To(Succeed())

			m := read()
			Expect(slices.Sorted(maps.Keys(m))).To(Equal([]string{
				"checks", "file", "outcomes", "passed", "proxy_stats", "scenario", "seed", "series", "started", "summary", "upstreams", "version"}))
			Expect(m).To(HaveKeyWithValue("version", 3.0))
			Expect(m).To(HaveKeyWithValue("started", "2026-05-01T10:00:00Z"))
			Expect(m).To(HaveKeyWithValue("passed", false))
			summary := m["summary"].(map[string]any)
			Expect(slices.Sorted(maps.Keys(summary))).To(Equal([]string{
				"achieved_rate", "attempts_from", "attempts_over", "delivered_amplification", "duration_ms", "ejections",
				"error_kinds", "error_rate", "errors", "latency_ms", "max_send_lag_ms", "rate_held", "requests", "retries",
				"retry_amplification", "status_codes", "success_rate", "successes", "target_rate", "uncorrected_latency_ms",
				"upstream_attempts", "upstream_received"}))
			Expect(summary).To(HaveKeyWithValue("retry_amplification", BeNil())) // no attempt counts, no upstream_rq_total
			Expect(summary).To(HaveKeyWithValue("upstream_received", 12.0))
			Expect(summary).To(HaveKeyWithValue("delivered_amplification", 1.2))
			Expect(summary).To(HaveKeyWithValue("latency_ms", HaveKeyWithValue("max", 10.0)))
			Expect(summary).To(HaveKeyWithValue("latency_ms", HaveKeyWithValue("p50", BeNumerically("~", 5, 0.005))))
			Expect(summary).To(HaveKeyWithValue("duration_ms", 1000.0))
			Expect(summary).To(HaveKeyWithValue("status_codes", map[string]any{"200": 10.0}))
			Expect(summary).To(HaveKeyWithValue("error_kinds", map[string]any{}))
			Expect(m["checks"]).To(HaveExactElements(map[string]any{
				"check": "p99 < 5ms", "passed": false, "observed": "p99 = 10ms", "required": "< 5ms"}))
			Expect(m["upstreams"]).To(HaveLen(2))
			Expect(m["upstreams"].([]any)[0]).To(Equal(map[string]any{
				"service": "checkout", "instance": 0.0, "address": "127.0.0.1:1001", "requests": 6.0,
				"statuses": map[string]any{"200": 6.0}, "resets": 0.0, "applied_faults": map[string]any{},
				"canceled": 0.0, "hangs": 0.0, "truncated": 0.0, "stream_resets": 0.0, "goaways": 0.0}))

			entries, err := os.ReadDir(dir)
			Expect(err).NotTo(HaveOccurred())
			Expect(entries).To(HaveLen(1))
			info, err := os.Stat(path)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Mode().Perm()).To(Equal(os.FileMode(0o644)))
		})

		It("documents every key it writes in README.md", func() {
			Expect(reports.WriteJSON(path, reports.NewReport(rec, mustParse("p99 < 5ms")))).To(Succeed())
			readme, err := os.ReadFile("README.md")
			Expect(err).NotTo(HaveOccurred())
			// Maps of data (status → count, stat → value) hold values, not schema keys.
			data := map[string]bool{"status_codes": true, "error_kinds": true, "proxy_stats": true, "statuses": true, "applied_faults": true,
				"distribution": true}
			var keys func(v any)
			keys = func(v any) {
				switch v := v.(type) {
				case map[string]any:
					for k, x := range v {
						Expect(string(readme)).To(ContainSubstring("`"+k+"`"), "key %q", k)
						if !data[k] {
							keys(x)
						}
					}
				case []any:
					for _, x := range v {
						keys(x)
					}
				}
			}
			keys(read())
		})

		It("leaves nothing behind when it cannot write", func() {
			Expect(os.Mkdir(path, 0o755)).To(Succeed()) // a directory where the file should go
			Expect(reports.WriteJSON(path, reports.NewReport(rec, nil))).To(MatchError(ContainSubstring("report " + path)))
			entries, err := os.ReadDir(dir)
			Expect(err).NotTo(HaveOccurred())
			Expect(entries).To(HaveLen(1))
			Expect(reports.WriteJSON(filepath.Join(dir, "missing", "report.json"), reports.NewReport(rec, nil))).NotTo(Succeed())
		})
	})
})

var _ = Describe("the terminal summary of phases", func() {
	It("leaves out a phase covering no time, never showing it as 0% success", func() {
		rec := &record.Record{Scenario: "s", TargetRate: 10, Duration: time.Second,
			Samples: []record.Sample{{Seq: 1, Intended: 0, Sent: 0, Latency: time.Millisecond, Status: 200, Attempts: 1}},
			Windows: []record.FaultWindow{{Name: "faults[0]", Service: "a", Kind: "abort"}}}
		var b strings.Builder
		Expect(reports.WriteTerminal(&b, reports.NewReport(rec, nil))).To(Succeed())
		Expect(b.String()).NotTo(ContainSubstring("before fault")) // 0s–0s
		Expect(b.String()).To(MatchRegexp(`(?m)^\s+during fault\s+0s–1s\s+requests 1\s`))
		Expect(b.String()).NotTo(ContainSubstring("success 0%"))
	})
})
