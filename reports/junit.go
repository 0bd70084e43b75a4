package reports

import (
	"encoding/xml"
	"fmt"
	"io"
	"strconv"
	"time"
)

// JUnit XML, in the common schema CI servers read (Jenkins, GitLab, GitHub test reporters, Ant's
// JUnit.xsd): <testsuites> holding one <testsuite> for the run, one <testcase> per check.
type (
	junitSuites struct {
		XMLName  xml.Name     `xml:"testsuites"`
		Name     string       `xml:"name,attr"`
		Tests    int          `xml:"tests,attr"`
		Failures int          `xml:"failures,attr"`
		Errors   int          `xml:"errors,attr"`
		Time     string       `xml:"time,attr"`
		Suites   []junitSuite `xml:"testsuite"`
	}
	junitSuite struct {
		Name       string          `xml:"name,attr"`
		Package    string          `xml:"package,attr"`
		ID         int             `xml:"id,attr"`
		Tests      int             `xml:"tests,attr"`
		Failures   int             `xml:"failures,attr"`
		Errors     int             `xml:"errors,attr"`
		Skipped    int             `xml:"skipped,attr"`
		Time       string          `xml:"time,attr"`
		Timestamp  string          `xml:"timestamp,attr"`
		Hostname   string          `xml:"hostname,attr"`
		Properties []junitProperty `xml:"properties>property"`
		Cases      []junitCase     `xml:"testcase"`
		SystemOut  string          `xml:"system-out"`
		SystemErr  string          `xml:"system-err"`
	}
	junitProperty struct {
		Name  string `xml:"name,attr"`
		Value string `xml:"value,attr"`
	}
	junitCase struct {
		Name      string        `xml:"name,attr"`
		Classname string        `xml:"classname,attr"`
		Time      string        `xml:"time,attr"`
		Failure   *junitFailure `xml:"failure"`
	}
	junitFailure struct {
		Message string `xml:"message,attr"`
		Type    string `xml:"type,attr"`
		Text    string `xml:",chardata"`
	}
)

// WriteJUnit writes the checks as JUnit XML: one testsuite named after the scenario, one testcase per
// check (named by the check as written), failed checks with a <failure> whose message gives observed vs
// required. The suite's properties hold the scenario file, seed and key numbers; system-out holds the
// terminal summary.
func WriteJUnit(w io.Writer, r Report) error {
	secs := strconv.FormatFloat(r.Summary.Duration.Seconds(), 'f', 3, 64)
	suite := junitSuite{
		Name: r.Scenario, Package: "meshproof", Tests: len(r.Checks), Failures: r.failed(), Time: secs,
		Timestamp: r.Started.UTC().Format("2006-01-02T15:04:05"), Hostname: "localhost",
		Properties: []junitProperty{
			{"file", r.File}, {"seed", strconv.FormatUint(r.Seed, 10)},
			{"requests", strconv.FormatUint(r.Summary.Requests, 10)},
			{"success_rate", formatPercent(r.Summary.SuccessRate) + "%"},
			{"p99", formatDuration(r.Summary.Latency.P99)},
			{"retry_amplification", retryAmplificationText(r.Summary)},
			{"delivered_amplification", deliveredAmplificationText(r.Summary)},
		},
	}
	if r.Started.IsZero() {
		suite.Timestamp = time.Unix(0, 0).UTC().Format("2006-01-02T15:04:05")
	}
	for _, v := range r.Checks {
		c := junitCase{Name: v.Check, Classname: "meshproof." + r.Scenario, Time: "0"}
		if !v.Passed {
			msg := fmt.Sprintf("observed %s, required %s", v.Observed, v.Required)
			c.Failure = &junitFailure{Message: msg, Type: "CheckFailed", Text: fmt.Sprintf("check: %s\n%s\n", v.Check, msg)}
		}
		suite.Cases = append(suite.Cases, c)
	}
	var term bytesWriter
	if err := WriteTerminal(&term, r); err == nil {
		suite.SystemOut = string(term)
	}
	doc := junitSuites{Name: "meshproof", Tests: suite.Tests, Failures: suite.Failures, Time: secs, Suites: []junitSuite{suite}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

// bytesWriter collects what is written (never a terminal, so no colours).
type bytesWriter []byte

func (b *bytesWriter) Write(p []byte) (int, error) { *b = append(*b, p...); return len(p), nil }
