package reports_test

import (
	"bytes"
	"context"
	"encoding/json"
	"encoding/xml"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

// runReport is the report of faultRun with checks that pass and checks that fail.
func runReport() (reports.Report, *record.Record) {
	rec := faultRun()
	var list []checks.Check
	for _, e := range []string{"before fault: success_rate == 100%", "during fault: ejected(checkout/2) within 2s",
		"after fault: success_rate >= 99.9%", "overflows == 0", "recovery_time < 5s", "p99 < 1ms"} {
		c, err := checks.Parse(e)
		Expect(err).NotTo(HaveOccurred())
		list = append(list, c)
	}
	return reports.NewReport(rec, list), rec
}

// JUnit XML as CI servers read it.
type junitDoc struct {
	XMLName xml.Name `xml:"testsuites"`
	Tests   int      `xml:"tests,attr"`
	Fails   int      `xml:"failures,attr"`
	Suites  []struct {
		Name      string `xml:"name,attr"`
		Tests     int    `xml:"tests,attr"`
		Failures  int    `xml:"failures,attr"`
		Errors    int    `xml:"errors,attr"`
		Timestamp string `xml:"timestamp,attr"`
		Hostname  string `xml:"hostname,attr"`
		Props     []struct {
			Name  string `xml:"name,attr"`
			Value string `xml:"value,attr"`
		} `xml:"properties>property"`
		Cases []struct {
			Name      string `xml:"name,attr"`
			Classname string `xml:"classname,attr"`
			Failure   *struct {
				Message string `xml:"message,attr"`
				Type    string `xml:"type,attr"`
				Text    string `xml:",chardata"`
			} `xml:"failure"`
		} `xml:"testcase"`
		SystemOut string `xml:"system-out"`
	} `xml:"testsuite"`
}

var _ = Describe("Report files", func() {
	var (
		r   reports.Report
		rec *record.Record
	)
	BeforeEach(func() { r, rec = runReport() })

	Describe("WriteJUnit", func() {
		It("writes one testsuite for the run and one testcase per check, failures with observed vs required", func() {
			var b bytes.Buffer
			Expect(reports.WriteJUnit(&b, r)).To(Succeed())
			Expect(b.String()).To(HavePrefix(`<?xml version="1.0" encoding="UTF-8"?>`))
			var doc junitDoc
			Expect(xml.Unmarshal(b.Bytes(), &doc)).To(Succeed())
			Expect(doc.Tests).To(Equal(6))
			Expect(doc.Fails).To(Equal(3))
			Expect(doc.Suites).To(HaveLen(1))
			s := doc.Suites[0]
			Expect(s.Name).To(Equal("outlier"))
			Expect(s.Tests).To(Equal(6))
			Expect(s.Failures).To(Equal(3))
			Expect(s.Timestamp).To(Equal("2026-05-01T10:00:00"))
			Expect(s.Hostname).NotTo(BeEmpty())
			Expect(s.Props).To(ContainElement(HaveField("Name", "seed")))
			Expect(s.Cases).To(HaveLen(len(r.Checks)))
			for i, c := range s.Cases {
				Expect(c.Name).To(Equal(r.Checks[i].Check))
				Expect(c.Classname).To(Equal("meshproof.outlier"))
				if r.Checks[i].Passed {
					Expect(c.Failure).To(BeNil(), c.Name)
					continue
				}
				Expect(c.Failure).NotTo(BeNil(), c.Name)
				Expect(c.Failure.Message).To(Equal("observed " + r.Checks[i].Observed + ", required " + r.Checks[i].Required))
			}
			Expect(s.Cases[2].Failure.Message).To(Equal("observed success_rate = 87.5% (35/40) after fault (6s–10s, 40 requests), required >= 99.9%"))
			Expect(s.SystemOut).To(ContainSubstring("FAIL: 3 of 6 checks failed"))
		})

		It("writes an empty suite without checks", func() {
			var b bytes.Buffer
			Expect(reports.WriteJUnit(&b, reports.NewReport(rec, nil))).To(Succeed())
			var doc junitDoc
			Expect(xml.Unmarshal(b.Bytes(), &doc)).To(Succeed())
			Expect(doc.Suites).To(HaveLen(1))
			Expect(doc.Suites[0].Cases).To(BeEmpty())
		})
	})

	Describe("WriteMarkdown", func() {
		It("writes the verdict, the checks, the key numbers, the fault windows and the phases", func() {
			var b bytes.Buffer
			Expect(reports.WriteMarkdown(&b, r)).To(Succeed())
			md := b.String()
			GinkgoWriter.Print(md)
			Expect(md).To(HavePrefix("## meshproof: outlier — ❌ FAIL: 3 of 6 checks failed\n\n`examples/outlier.yaml` · seed 7 · started 2026-05-01T10:00:00Z · 100 requests in 10s at 10/s (target 10/s, max send lag 0ns)\n"))
			Expect(md).To(ContainSubstring("| ✅ | `before fault: success_rate == 100%` | success_rate = 100% (30/30) before fault (0s–3s, 30 requests) | == 100% |\n"))
			Expect(md).To(ContainSubstring("| ❌ | `overflows == 0` | overflows = 5 (pending 3, retry 2) | == 0 |\n"))
			Expect(md).To(ContainSubstring("| ❌ | `p99 < 1ms` | p99 = 2ms | &lt; 1ms |\n"))
			Expect(md).To(ContainSubstring("| success rate | 89% |\n"))
			Expect(md).To(ContainSubstring("| attempts per request | 1×65, 2×24, 3×11 (max 3) |\n"))
			Expect(md).To(ContainSubstring("| breaker overflows | 5 (pending 3, retry 2) |\n"))
			Expect(md).To(ContainSubstring("| time to first ejection | 1.2s after faults[0] started (checkout/2) |\n"))
			Expect(md).To(ContainSubstring("| recovery time | 500ms |\n"))
			Expect(md).To(ContainSubstring("| faults[0] | checkout/2 | abort | 3s–6s | 1.2s after faults[0] started (checkout/2) | 500ms (to ≥ 99% success) |\n"))
			Expect(md).To(ContainSubstring("| during fault | 3s–6s | 30 | 80% | 1.5ms | 2ms | 2ms | 2ms | 2.2 | 1 |\n"))
			Expect(md).To(ContainSubstring("| during phase steady | 2s–10s | 80 | 86.25% |"))
			Expect(md).To(ContainSubstring("| checkout | checkout/2 | 4.2s–7.2s (consecutive_5xx) |\n"))
			Expect(md).NotTo(ContainSubstring("Rate not held"))
		})

		It("says PASS when every check holds, and warns when the rate was not held", func() {
			rec.TargetRate = 20
			var b bytes.Buffer
			Expect(reports.WriteMarkdown(&b, reports.NewReport(rec, nil))).To(Succeed())
			Expect(b.String()).To(HavePrefix("## meshproof: outlier — ✅ PASS: no checks\n"))
			Expect(b.String()).To(ContainSubstring("> [!WARNING]\n> **Rate not held**: achieved 10/s of target 20/s"))
		})

		It("escapes table cells", func() {
			r.Checks[0].Observed = "a | b\nc"
			var b bytes.Buffer
			Expect(reports.WriteMarkdown(&b, r)).To(Succeed())
			Expect(b.String()).To(ContainSubstring(`| a \| b c |`))
		})
	})

	Describe("WriteTerminal", func() {
		It("adds the phases, fault windows, attempts, overflows and ejections, plain when not a terminal", func() {
			var b bytes.Buffer
			Expect(reports.WriteTerminal(&b, r)).To(Succeed())
			out := b.String()
			GinkgoWriter.Print(out)
			Expect(out).NotTo(ContainSubstring("\x1b["))
			Expect(out).To(ContainSubstring("attempts  per request 1×65, 2×24, 3×11 (max 3)\n"))
			Expect(out).To(ContainSubstring("overflows 5 (pending 3, retry 2)\n"))
			Expect(out).To(MatchRegexp(`during fault +3s–6s +requests 30 +success 80% +p50 1.5ms +p99 2ms +max 2ms\n`))
			Expect(out).To(MatchRegexp(`faults\[0\] +checkout/2 +abort +3s–6s +first ejection 1.2s after faults\[0\] started \(checkout/2\) +recovery 500ms\n`))
			Expect(out).To(MatchRegexp(`checkout +checkout/2 +4.2s–7.2s \(consecutive_5xx\)\n`))
			Expect(reports.IsTerminal(&b)).To(BeFalse())
		})
	})

	Describe("WriteAll", func() {
		It("writes every file into the run directory, and nothing else", func() {
			dir := GinkgoT().TempDir()
			Expect(reports.WriteAll(dir, r, rec)).To(Succeed())
			entries, err := os.ReadDir(dir)
			Expect(err).NotTo(HaveOccurred())
			var names []string
			for _, e := range entries {
				names = append(names, e.Name())
			}
			Expect(names).To(ConsistOf("report.json", "summary.md", "junit.xml", "report.html"))
			back, err := reports.ReadReport(dir)
			Expect(err).NotTo(HaveOccurred())
			Expect(back.Checks).To(Equal(words(r.Checks)), "report.json keeps the words of each verdict, not the value compared")
			Expect(back.Outcomes.Windows[0].TimeToFirstEjection).To(Equal(1200 * ms))
			Expect(back.Outcomes.Fault.Recovery).To(Equal(r.Outcomes.Fault.Recovery))
			Expect(back.Outcomes.Attempts).To(Equal(r.Outcomes.Attempts))
			Expect(back.Summary.Latency).To(Equal(r.Summary.Latency))
		})

		It("returns an error naming the file it could not write", func() {
			dir := GinkgoT().TempDir()
			Expect(os.Mkdir(filepath.Join(dir, "junit.xml"), 0o755)).To(Succeed())
			Expect(reports.WriteAll(dir, r, rec)).To(MatchError(ContainSubstring("report " + filepath.Join(dir, "junit.xml"))))
			Expect(filepath.Join(dir, "report.html")).To(BeAnExistingFile())
		})
	})

	Describe("report.json outcomes", func() {
		It("documents every key it writes in README.md", func() {
			path := filepath.Join(GinkgoT().TempDir(), "report.json")
			rec.Windows = append(rec.Windows, record.FaultWindow{Name: "faults[1]", Service: "checkout", Start: 8 * time.Second})
			r := reports.NewReport(rec, nil)
			Expect(reports.WriteJSON(path, r)).To(Succeed())
			data, err := os.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			var m map[string]any
			Expect(json.Unmarshal(data, &m)).To(Succeed())
			readme, err := os.ReadFile("README.md")
			Expect(err).NotTo(HaveOccurred())
			data2 := map[string]bool{"status_codes": true, "error_kinds": true, "proxy_stats": true, "statuses": true,
				"applied_faults": true, "distribution": true}
			var keys func(v any)
			keys = func(v any) {
				switch v := v.(type) {
				case map[string]any:
					for k, x := range v {
						Expect(string(readme)).To(ContainSubstring("`"+k+"`"), "key %q", k)
						if !data2[k] {
							keys(x)
						}
					}
				case []any:
					for _, x := range v {
						keys(x)
					}
				}
			}
			keys(m["outcomes"])
			o := m["outcomes"].(map[string]any)
			Expect(o["windows"]).To(HaveLen(2))
			Expect(o["windows"].([]any)[1]).To(HaveKeyWithValue("open_ended", true))
			Expect(o["windows"].([]any)[1]).To(HaveKeyWithValue("time_to_first_ejection_ms", BeNil()))
			Expect(o["hosts"]).To(HaveLen(1))
		})
	})

	Describe("WriteHTML", func() {
		var html string
		BeforeEach(func() {
			var b bytes.Buffer
			Expect(reports.WriteHTML(&b, r, rec)).To(Succeed())
			html = b.String()
		})

		It("is one self-contained page: inline SVG charts, no script, no external URL", func() {
			Expect(html).To(HavePrefix("<!DOCTYPE html>"))
			// rate, latency, histogram, ejections, retries, masked failures, statuses
			Expect(strings.Count(html, "<svg")).To(Equal(7))
			Expect(html).NotTo(ContainSubstring("<script"))
			Expect(html).NotTo(ContainSubstring("<?xml"))
			// The only URLs are the SVG namespaces, which are names, not fetched.
			for _, u := range regexp.MustCompile(`(?:https?:)?//[^\s"'<>)]+`).FindAllString(html, -1) {
				Expect(u).To(Or(Equal("http://www.w3.org/2000/svg"), Equal("http://www.w3.org/1999/xlink")))
			}
			Expect(html).To(ContainSubstring("faults[0]"))
			Expect(html).To(ContainSubstring(`id="chart-latency"`))
		})

		It("says what was not recorded instead of drawing an empty chart", func() {
			rec.ProxyEvents = nil
			for i := range rec.Samples {
				rec.Samples[i].Attempts = 0
			}
			var b bytes.Buffer
			Expect(reports.WriteHTML(&b, reports.NewReport(rec, nil), rec)).To(Succeed())
			Expect(b.String()).To(ContainSubstring("Not recorded: the proxy emitted no ejection events."))
			Expect(b.String()).To(ContainSubstring("Not recorded: the run has neither retry events nor per-request attempt counts (the proxy counted 47 retries over the run)."))
			Expect(strings.Count(b.String(), "<svg")).To(Equal(5), "7 charts but the ejections and retries")
		})

		It("loads in headless Chromium without console errors, with its charts", Label("slow"), func(ctx SpecContext) {
			chromium := findChromium()
			dir := GinkgoT().TempDir()
			page := filepath.Join(dir, "report.html")
			Expect(os.WriteFile(page, []byte(html), 0o644)).To(Succeed())

			// The probe proves that console errors do reach us, so that a clean run means something.
			probe := filepath.Join(dir, "probe.html")
			Expect(os.WriteFile(probe, []byte(`<!DOCTYPE html><html><body><script>console.error("probe-error")</script></body></html>`), 0o644)).To(Succeed())
			_, stderr := runChromium(ctx, chromium, dir, "--dump-dom", "file://"+probe)
			Expect(stderr).To(ContainSubstring("probe-error"), "chromium's console output does not reach stderr; cannot check for errors")

			dom, stderr := runChromium(ctx, chromium, dir, "--dump-dom", "file://"+page)
			Expect(consoleErrors(stderr)).To(BeEmpty(), "stderr:\n%s", stderr)
			Expect(strings.Count(dom, "<svg")).To(Equal(7))
			Expect(dom).To(ContainSubstring(`id="chart-ejections"`))

			shot := filepath.Join(dir, "report.png")
			_, stderr = runChromium(ctx, chromium, dir, "--screenshot="+shot, "--window-size=1280,4200", "--hide-scrollbars", "file://"+page)
			Expect(consoleErrors(stderr)).To(BeEmpty(), "stderr:\n%s", stderr)
			info, err := os.Stat(shot)
			Expect(err).NotTo(HaveOccurred())
			Expect(info.Size()).To(BeNumerically(">", 20_000))
			if keep := os.Getenv("MESHPROOF_SCREENSHOT"); keep != "" {
				data, err := os.ReadFile(shot)
				Expect(err).NotTo(HaveOccurred())
				Expect(os.WriteFile(keep, data, 0o644)).To(Succeed())
				Expect(os.WriteFile(strings.TrimSuffix(keep, ".png")+".html", []byte(html), 0o644)).To(Succeed())
			}
		}, SpecTimeout(3*time.Minute))
	})
})

// findChromium returns the Chromium binary, skipping the spec when there is none unless
// MESHPROOF_REQUIRE_CHROMIUM=1 (CI), where its absence fails.
func findChromium() string {
	GinkgoHelper()
	for _, name := range []string{"chromium", "chromium-browser", "google-chrome", "google-chrome-stable"} {
		if p, err := exec.LookPath(name); err == nil {
			return p
		}
	}
	const why = "no Chromium on PATH (chromium, chromium-browser, google-chrome): install it with `apt-get install -y chromium`"
	if os.Getenv("MESHPROOF_REQUIRE_CHROMIUM") == "1" {
		Fail(why + " (MESHPROOF_REQUIRE_CHROMIUM=1)")
	}
	Skip(why + "; set MESHPROOF_REQUIRE_CHROMIUM=1 to fail instead")
	return ""
}

// runChromium runs headless Chromium with console logging on stderr and returns stdout and stderr.
func runChromium(ctx context.Context, chromium, dir string, args ...string) (string, string) {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	base := []string{"--headless", "--disable-gpu", "--no-sandbox", "--enable-logging=stderr", "--v=0",
		"--user-data-dir=" + filepath.Join(dir, "profile"), "--no-first-run", "--disable-extensions"}
	cmd := exec.CommandContext(ctx, chromium, append(base, args...)...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	Expect(cmd.Run()).To(Succeed(), "chromium %v\nstderr:\n%s", args, stderr.String())
	return stdout.String(), stderr.String()
}

// consoleErrors returns the lines of Chromium's log that report a page error: console messages and
// failed loads.
func consoleErrors(stderr string) []string {
	var out []string
	for _, line := range strings.Split(stderr, "\n") {
		if strings.Contains(line, "CONSOLE") || strings.Contains(line, "Failed to load resource") ||
			strings.Contains(line, "Uncaught") || strings.Contains(line, "net::ERR_") {
			out = append(out, line)
		}
	}
	return out
}
