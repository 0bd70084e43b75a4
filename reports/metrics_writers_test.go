package reports_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"fmt"
	"html"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// readmeMetrics returns every metric named in the first column of the tables of README.md's Metrics
// section (backquoted names, or the plain text of a cell without any), as they are written
// (a "…" range names its members in parentheses).
func readmeMetrics() []string {
	GinkgoHelper()
	data, err := os.ReadFile("README.md")
	Expect(err).NotTo(HaveOccurred())
	text := string(data)
	start := strings.Index(text, "\n## Metrics\n")
	Expect(start).To(BeNumerically(">=", 0), "README.md has a Metrics section")
	section := text[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	code := regexp.MustCompile("`([^`]+)`")
	var names []string
	inMetricTable := false
	for _, line := range strings.Split(section, "\n") {
		if !strings.HasPrefix(line, "|") {
			inMetricTable = false
			continue
		}
		cells := strings.Split(strings.Trim(line, "|"), "|")
		first := strings.TrimSpace(cells[0])
		switch {
		case first == "metric":
			inMetricTable = true
			continue
		case !inMetricTable || strings.HasPrefix(first, "---"):
			continue
		}
		found := code.FindAllStringSubmatch(first, -1)
		if len(found) == 0 {
			names = append(names, first)
			continue
		}
		for _, m := range found {
			names = append(names, m[1])
		}
	}
	slices.Sort(names)
	return slices.Compact(names)
}

// jsonAt reads a dotted path ("summary.latency_ms.p50") of a decoded report.json.
func jsonAt(doc map[string]any, path string) any {
	GinkgoHelper()
	var cur any = doc
	for _, key := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		Expect(ok).To(BeTrue(), "report.json %s: %q is not an object", path, key)
		cur, ok = m[key]
		Expect(ok).To(BeTrue(), "report.json has no %s", path)
	}
	return cur
}

// A metric's view: a check naming it that cannot hold (so that JUnit carries its observed text as well),
// and its value in report.json formatted as the writers show it. A metric without a check (target rate,
// max send lag, …) must show that value in the terminal (and so JUnit's system-out), summary.md and
// report.html.
type metricView struct {
	check string
	shown func(doc map[string]any) string // "" for a predicate without a number (ejected)
}

func count(path string) func(map[string]any) string {
	return func(doc map[string]any) string { return strconv.Itoa(int(jsonAt(doc, path).(float64))) }
}

func percent(path string) func(map[string]any) string {
	return func(doc map[string]any) string {
		return reports.FormatPercentForTest(jsonAt(doc, path).(float64)) + "%"
	}
}

func ratio(path string) func(map[string]any) string {
	return func(doc map[string]any) string { return reports.FormatRatioForTest(jsonAt(doc, path).(float64)) }
}

func perSecond(path string) func(map[string]any) string {
	return func(doc map[string]any) string { return reports.FormatRateForTest(jsonAt(doc, path).(float64)) }
}

func latency(path string) func(map[string]any) string {
	return func(doc map[string]any) string {
		return reports.FormatDurationForTest(time.Duration(jsonAt(doc, path).(float64) * 1e6))
	}
}

func delay(path string) func(map[string]any) string {
	return func(doc map[string]any) string {
		return reports.FormatDelayForTest(time.Duration(jsonAt(doc, path).(float64) * 1e6))
	}
}

// views holds every metric of README.md's Metrics section: a metric added there without an entry here
// (and so without a way to see it in every writer) fails the spec.
var views = map[string]metricView{
	"requests":     {"requests < 0", count("summary.requests")},
	"successes":    {"successes < 0", count("summary.successes")},
	"errors":       {"errors < 0", count("summary.errors")},
	"success_rate": {"success_rate < 0%", percent("summary.success_rate")},
	"error_rate":   {"error_rate < 0%", percent("summary.error_rate")},
	"status(N)":    {"status(503) < 0", count("summary.status_codes.503")},
	"status(Nxx)": {"status(5xx) < 0", func(doc map[string]any) string {
		n := 0
		for code, v := range jsonAt(doc, "summary.status_codes").(map[string]any) {
			if strings.HasPrefix(code, "5") {
				n += int(v.(float64))
			}
		}
		return strconv.Itoa(n)
	}},
	"error_kinds": {"", func(doc map[string]any) string {
		m := map[string]uint64{}
		for k, v := range jsonAt(doc, "summary.error_kinds").(map[string]any) {
			m[k] = uint64(v.(float64))
		}
		return reports.CountsForTest(m)
	}},
	"target rate":   {"", perSecond("summary.target_rate")},
	"achieved_rate": {"achieved_rate < 0/s", perSecond("summary.achieved_rate")},
	"max send lag":  {"", latency("summary.max_send_lag_ms")},
	"rate held":     {"", nil}, // a yes/no: judged below from the "rate not held" warning
	"p50":           {"p50 < 0s", latency("summary.latency_ms.p50")},
	"p90":           {"p90 < 0s", latency("summary.latency_ms.p90")},
	"p99":           {"p99 < 0s", latency("summary.latency_ms.p99")},
	"p999":          {"p999 < 0s", latency("summary.latency_ms.p999")},
	"max":           {"max < 0s", latency("summary.latency_ms.max")},

	"uncorrected_p50":  {"uncorrected_p50 < 0s", latency("summary.uncorrected_latency_ms.p50")},
	"uncorrected_p90":  {"uncorrected_p90 < 0s", latency("summary.uncorrected_latency_ms.p90")},
	"uncorrected_p99":  {"uncorrected_p99 < 0s", latency("summary.uncorrected_latency_ms.p99")},
	"uncorrected_p999": {"uncorrected_p999 < 0s", latency("summary.uncorrected_latency_ms.p999")},
	"uncorrected_max":  {"uncorrected_max < 0s", latency("summary.uncorrected_latency_ms.max")},

	"retries":           {"retries < 0", count("summary.retries")},
	"ejections":         {"ejections < 0", count("summary.ejections")},
	"overflows":         {"overflows < 0", count("outcomes.overflows")},
	"pending_overflows": {"pending_overflows < 0", count("outcomes.pending_overflows")},
	"retry_overflows":   {"retry_overflows < 0", count("outcomes.retry_overflows")},
	"ssl_handshakes":    {"ssl_handshakes < 0", count("outcomes.mtls.handshakes")},
	"ssl_handshake_errors": {"ssl_handshake_errors < 0", func(doc map[string]any) string {
		return strconv.Itoa(int(jsonAt(doc, "outcomes.mtls.handshake_errors").(float64) + jsonAt(doc, "outcomes.mtls.instance_handshake_errors").(float64)))
	}},
	"cert_rotations":          {"cert_rotations < 0", count("outcomes.mtls.rotations")},
	"upstream_attempts":       {"upstream_attempts < 0", count("summary.upstream_attempts")},
	"retry_amplification":     {"retry_amplification < 0", ratio("summary.retry_amplification")},
	"upstream_received":       {"upstream_received < 0", count("summary.upstream_received")},
	"delivered_amplification": {"delivered_amplification < 0", ratio("summary.delivered_amplification")},
	"attempts_max":            {"attempts_max < 0", count("outcomes.attempts.max")},
	"attempts distribution": {"", func(doc map[string]any) string {
		d := map[int]uint64{}
		for k, v := range jsonAt(doc, "outcomes.attempts.distribution").(map[string]any) {
			n, err := strconv.Atoi(k)
			Expect(err).NotTo(HaveOccurred())
			d[n] = uint64(v.(float64))
		}
		return reports.DistributionForTest(d)
	}},
	"time_to_first_ejection": {"time_to_first_ejection < 0s", delay("outcomes.fault.time_to_first_ejection_ms")},
	"recovery_time":          {"recovery_time < 0s", delay("outcomes.fault.recovery.time_ms")},

	"changes_applied":    {"changes_applied < 0", countChanges(func(c map[string]any) bool { return c["outcome"] == "applied" })},
	"changes_rejected":   {"changes_rejected < 0", countChanges(func(c map[string]any) bool { return c["outcome"] == "rejected" })},
	"changes_unexpected": {"changes_unexpected < 0", countChanges(func(c map[string]any) bool { return c["unexpected"] == true })},
	"change_apply_time": {"change_apply_time < 0s", func(doc map[string]any) string {
		longest := 0.0
		for _, c := range jsonAt(doc, "outcomes.changes").([]any) {
			longest = max(longest, c.(map[string]any)["apply_time_ms"].(float64))
		}
		return reports.FormatDelayForTest(time.Duration(longest * 1e6))
	}},
}

// countChanges counts report.json's outcomes.changes[] that match.
func countChanges(match func(map[string]any) bool) func(map[string]any) string {
	return func(doc map[string]any) string {
		n := 0
		for _, c := range jsonAt(doc, "outcomes.changes").([]any) {
			if match(c.(map[string]any)) {
				n++
			}
		}
		return strconv.Itoa(n)
	}
}

var _ = Describe("every metric of README.md's Metrics section (#13)", func() {
	It("is shown the same by the terminal, report.json, summary.md, junit.xml and report.html", func() {
		metrics := readmeMetrics()
		Expect(metrics).To(ContainElements("requests", "p999", "retry_amplification", "time_to_first_ejection", "max send lag"))

		rec := faultRun()
		rec.Samples[3].Status, rec.Samples[3].Error = 0, "refused" // a transport error
		rec.Samples[7].Sent += 3 * ms                              // some send lag
		rec.MTLS = &record.MTLS{Workloads: 2, Rotations: 1}        // a mutual-TLS mesh (#16)
		rec.ProxyStats["cluster.checkout.ssl.handshake"], rec.ProxyStats["cluster.checkout.ssl.fail_verify_san"] = 4, 1
		rec.Changes = []record.Change{ // one applied, one rejected that the scenario expected to apply
			{Name: "changes[0]", Proxy: "edge", What: "routes", Start: time.Second, End: 5 * time.Second,
				Outcome: record.ChangeApplied, Expected: record.ChangeApplied, Answered: 1150 * ms},
			{Name: "changes[1]", Proxy: "edge", What: "cluster checkout", Start: 5 * time.Second,
				Outcome: record.ChangeRejected, Expected: record.ChangeApplied, Answered: 5300 * ms, Detail: "bad cluster"},
		}
		var list []checks.Check
		for _, name := range metrics {
			v, ok := views[name]
			Expect(ok).To(BeTrue(), "README.md names metric %q: give it a view in this spec (and a writer that shows it)", name)
			if v.check != "" {
				list = append(list, mustCheck(v.check))
			}
		}
		r := reports.NewReport(rec, list)
		dir := GinkgoT().TempDir()
		Expect(reports.WriteAll(dir, r, rec)).To(Succeed())
		read := func(name string) string {
			data, err := os.ReadFile(filepath.Join(dir, name))
			Expect(err).NotTo(HaveOccurred())
			return string(data)
		}
		var term bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		var doc map[string]any
		Expect(json.Unmarshal([]byte(read("report.json")), &doc)).To(Succeed())
		var junit junitDoc
		Expect(xml.Unmarshal([]byte(read("junit.xml")), &junit)).To(Succeed())
		failures := map[string]string{}
		for _, c := range junit.Suites[0].Cases {
			if c.Failure != nil {
				failures[c.Name] = c.Failure.Message
			}
		}
		writers := map[string]string{
			"terminal":         term.String(),
			"summary.md":       strings.ReplaceAll(read("summary.md"), `\|`, "|"),
			"report.html":      html.UnescapeString(read("report.html")),
			"junit system-out": junit.Suites[0].SystemOut,
		}
		observed := map[string]string{}
		for _, c := range jsonAt(doc, "checks").([]any) {
			c := c.(map[string]any)
			observed[c["check"].(string)] = c["observed"].(string)
		}

		for _, name := range metrics {
			v := views[name]
			By(name)
			if name == "rate held" {
				held := jsonAt(doc, "summary.rate_held").(bool)
				for w, text := range writers {
					Expect(strings.Contains(strings.ToLower(text), "rate not held")).To(Equal(!held), "%s: rate held %v", w, held)
				}
				continue
			}
			want := ""
			if v.shown != nil {
				want = v.shown(doc)
			}
			if v.check == "" {
				for w, text := range writers {
					Expect(text).To(ContainSubstring(want), "%s shows %s as %q (report.json)", w, name, want)
				}
				continue
			}
			obs, ok := observed[v.check]
			Expect(ok).To(BeTrue(), "report.json judged %q", v.check)
			if want != "" {
				Expect(obs).To(HavePrefix(fmt.Sprintf("%s = %s", strings.Fields(v.check)[0], want)), "the check and report.json agree on %s", name)
			}
			Expect(failures).To(HaveKeyWithValue(v.check, ContainSubstring("observed "+obs+", required")), "junit.xml")
			for w, text := range writers {
				Expect(text).To(ContainSubstring(obs), "%s shows the check %q as report.json does", w, v.check)
			}
		}
	})
})
