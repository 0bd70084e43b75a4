package reports

import (
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// ReportVersion is the version of the report.json schema (see README.md). Version 2 split version 1's
// upstream_requests (the instances' count over the whole run, the proxy's attempts within a phase) and
// retry_amplification (received / requests over the whole run) into upstream_attempts and
// retry_amplification (the proxy's attempts, everywhere) and upstream_received and
// delivered_amplification (what the instances received). Version 3 added the call graph: outcomes.edges
// and outcomes.services, the sidecar deciding an ejection (outcomes.hosts[].proxy), and the instances'
// arrivals and capacity (upstreams[]). ReadReport reads all three.
const ReportVersion = 3

// Report is a finished run as reported: its summary, what the upstreams and the proxy counted, and the
// checks' verdicts. Passed is true when every check passed (and with no checks).
type Report struct {
	Version    int
	Scenario   string
	File       string
	Seed       uint64
	Started    time.Time
	Summary    Summary
	Upstreams  []record.UpstreamRecord
	ProxyStats map[string]uint64
	Checks     []Verdict
	Passed     bool
	// Outcomes are the resilience outcomes: phases, attempts, ejections, recovery, overflows.
	Outcomes Outcomes
	// Partial says why the run is incomplete (e.g. "interrupted at 3.2s of 10s"); "" for a run that
	// completed. A partial report holds what was recorded until then, and never passes.
	Partial string
	// Series is the run over time (TimeSeries): the data behind the report's charts.
	Series Series
}

// NewReport summarizes the record, computes its outcomes, and judges the checks against it (EvaluateRun).
func NewReport(rec *record.Record, checks []checks.Check) Report {
	r := Report{
		Version:    ReportVersion,
		Scenario:   rec.Scenario,
		File:       rec.File,
		Seed:       rec.Seed,
		Started:    rec.Started,
		Summary:    Summarize(rec),
		Upstreams:  rec.Upstreams,
		ProxyStats: rec.ProxyStats,
		Passed:     true,
		Outcomes:   ComputeOutcomes(rec),
	}
	r.Series = TimeSeries(rec, r.Outcomes.End, r.Outcomes.Hosts)
	r.Checks = evaluateRun(checks, rec, r.Summary, &r.Outcomes)
	for _, v := range r.Checks {
		r.Passed = r.Passed && v.Passed
	}
	return r
}

// failed counts the checks that failed.
func (r Report) failed() int {
	n := 0
	for _, v := range r.Checks {
		if !v.Passed {
			n++
		}
	}
	return n
}
