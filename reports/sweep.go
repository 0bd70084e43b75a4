package reports

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"
)

// SweepVersion is the version of the sweep.json schema (see README.md).
const SweepVersion = 1

// The files WriteSweepAll writes into a sweep directory: summary.md and report.html by the same names as
// a run's, sweep.json for machines.
const FileSweepJSON = "sweep.json"

// Sweep is a policy sweep as reported (`meshproof sweep`): one scenario run at every point of a grid of
// --set values, each point's checks' verdicts and key outcomes; with FindMaxRate, the highest load rate
// at which every check held, searched at each point.
type Sweep struct {
	Version  int
	Scenario string
	File     string
	Seed     uint64
	Runner   string
	Started  time.Time
	// Dimensions are the --set flags, in order: the first varies along a heat map's x axis, the second
	// along its y axis, further ones give one heat map per combination.
	Dimensions []SweepDimension
	// Checks are the scenario's checks as written, in order; each point's Verdicts follow it.
	Checks []string
	// Points are the grid's points in grid order: the first dimension's values outermost, the last's
	// innermost (as nested loops over the --set flags in order).
	Points []SweepPoint
	// FindMaxRate is set when each point is a search for its highest passing rate (SweepPoint.MaxRate).
	FindMaxRate *RateSearch
}

// SweepDimension is one --set flag: a field path and its values as given.
type SweepDimension struct {
	Path   string
	Values []string
}

// The status of a sweep point or a rate probe.
const (
	StatusPass  = "pass"  // every check held
	StatusFail  = "fail"  // the run completed and a check failed
	StatusError = "error" // the run did not complete (its error is said); never a pass
)

// SweepPoint is one point of the grid.
type SweepPoint struct {
	Values []string // one per dimension
	// Seed is the seed the point's run used (0: no run reported one): the sweep's, or the point's own
	// when a --set sets `seed`.
	Seed   uint64
	Status string // StatusPass, StatusFail or StatusError
	Error  string // why the run did not complete (StatusError)
	// Verdicts and Outcomes are the run's (with FindMaxRate: the run at the highest passing rate, or
	// the last probe's when none passed).
	Verdicts []Verdict
	Outcomes SweepOutcomes
	MaxRate  *MaxRate
}

// SweepOutcomes are a run's key outcomes, from its Report.
type SweepOutcomes struct {
	Requests    uint64
	SuccessRate float64 // percent
	// RetryAmplification is upstream attempts per client request; AmplificationKnown is false when the
	// run did not record attempts.
	RetryAmplification float64
	AmplificationKnown bool
	Retries, Ejections uint64
	Overflows          uint64 // pending + retry overflows of the circuit breakers
	P50, P99           time.Duration
}

// SweepOutcomesOf takes the key outcomes of a run's report.
func SweepOutcomesOf(r Report) SweepOutcomes {
	return SweepOutcomes{
		Requests:           r.Summary.Requests,
		SuccessRate:        r.Summary.SuccessRate,
		RetryAmplification: r.Summary.RetryAmplification,
		AmplificationKnown: r.Summary.AttemptsFrom != "",
		Retries:            r.Summary.Retries,
		Ejections:          r.Summary.Ejections,
		Overflows:          r.Outcomes.Overflows(),
		P50:                r.Summary.Latency.P50,
		P99:                r.Summary.Latency.P99,
	}
}

// RateSearch is how --find-max-rate searched: the bracket of rates and the precision, in requests/s
// (the peak rate of the load: its rate, or its highest phase rate when the load has phases).
type RateSearch struct {
	Min, Max, Precision float64
}

// MaxRate is one point's search for its highest passing rate.
type MaxRate struct {
	Probes []RateProbe // in the order they ran
	// Rate is the highest probed rate at which every check held; 0 when none did. Result says how the
	// search ended: RateFound (Rate passes and Rate+precision is known to fail, or the bracket is
	// closed), RateAtMax (it held even at the bracket's top), RateBelowMin (it failed at the bottom) or
	// RateError (a probe's run did not complete).
	Rate   float64
	Result string
}

// How a rate search ended (MaxRate.Result).
const (
	RateFound    = "found"
	RateAtMax    = "holds at --rate-max"
	RateBelowMin = "fails at --rate-min"
	RateError    = "error"
)

// RateProbe is one run of a rate search.
type RateProbe struct {
	Rate   float64
	Status string
	Error  string
	Failed []string // the checks that failed
}

// Passed reports whether the point passed: every check held (with FindMaxRate: at some rate of the bracket).
func (p SweepPoint) Passed() bool { return p.Status == StatusPass }

// Safe lists the points where every check held: the safe region.
func (s Sweep) Safe() []SweepPoint {
	var out []SweepPoint
	for _, p := range s.Points {
		if p.Passed() {
			out = append(out, p)
		}
	}
	return out
}

// Setting is the point's settings as --set flags would write them: "a=1 b=250ms".
func (s Sweep) Setting(p SweepPoint) string {
	parts := make([]string, len(p.Values))
	for i, v := range p.Values {
		parts[i] = s.Dimensions[i].Path + "=" + v
	}
	return strings.Join(parts, " ")
}

// failedChecks lists the checks of the point that failed.
func failedChecks(vs []Verdict) []string {
	var out []string
	for _, v := range vs {
		if !v.Passed {
			out = append(out, v.Check)
		}
	}
	return out
}

// FailedChecks lists the checks a run's verdicts failed (for a RateProbe).
func FailedChecks(vs []Verdict) []string { return failedChecks(vs) }

// sweepColumns are the key outcomes' column headers and cells, shared by the terminal and summary.md.
var sweepColumns = []string{"success", "retry amp.", "retries", "ejections", "overflows", "p50", "p99"}

func outcomeCells(p SweepPoint) []string {
	if p.Status == StatusError && p.Outcomes.Requests == 0 {
		return []string{"-", "-", "-", "-", "-", "-", "-"}
	}
	o := p.Outcomes
	amp := "not recorded"
	if o.AmplificationKnown {
		amp = formatRatio(o.RetryAmplification)
	}
	return []string{formatPercent(o.SuccessRate) + "%", amp, fmt.Sprint(o.Retries), fmt.Sprint(o.Ejections),
		fmt.Sprint(o.Overflows), formatDuration(o.P50), formatDuration(o.P99)}
}

func statusWord(p SweepPoint) string {
	switch p.Status {
	case StatusPass:
		return "PASS"
	case StatusFail:
		return "FAIL"
	}
	return "ERROR"
}

func maxRateCell(p SweepPoint) string {
	m := p.MaxRate
	switch {
	case m == nil:
		return "-"
	case m.Result == RateFound:
		return rate(m.Rate)
	case m.Result == RateAtMax:
		return "≥ " + rate(m.Rate)
	case m.Result == RateBelowMin:
		return "none (" + m.Result + ")"
	}
	return "error"
}

// sweepRows are the table's header and rows: the settings, the verdict, (the max rate,) the key
// outcomes and the failed checks.
func sweepRows(s Sweep) ([]string, [][]string) {
	head := make([]string, 0, len(s.Dimensions)+len(sweepColumns)+3)
	for _, d := range s.Dimensions {
		head = append(head, d.Path)
	}
	head = append(head, "verdict")
	if s.FindMaxRate != nil {
		head = append(head, "max rate")
	}
	head = append(head, sweepColumns...)
	head = append(head, "failed checks")
	var rows [][]string
	for _, p := range s.Points {
		row := append([]string{}, p.Values...)
		row = append(row, statusWord(p))
		if s.FindMaxRate != nil {
			row = append(row, maxRateCell(p))
		}
		row = append(row, outcomeCells(p)...)
		switch {
		case p.Status == StatusError:
			row = append(row, "run error: "+p.Error)
		default:
			row = append(row, strings.Join(failedChecks(p.Verdicts), "; "))
		}
		rows = append(rows, row)
	}
	return head, rows
}

// WriteSweepTerminal writes the sweep's table and its safe region for a terminal.
func WriteSweepTerminal(w io.Writer, s Sweep) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "sweep of %s: %d points on the %s runner, seed %d\n", s.Scenario, len(s.Points), s.Runner, s.Seed)
	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	head, rows := sweepRows(s)
	fmt.Fprintln(t, strings.Join(head, "\t"))
	for _, r := range rows {
		fmt.Fprintln(t, strings.Join(r, "\t"))
	}
	if err := t.Flush(); err != nil {
		return err
	}
	writeSafeText(&b, s)
	_, err := w.Write(b.Bytes())
	return err
}

func writeSafeText(b *bytes.Buffer, s Sweep) {
	safe := s.Safe()
	if len(safe) == 0 {
		fmt.Fprintf(b, "safe region: none of the %d points passes every check\n", len(s.Points))
		return
	}
	if len(s.Dimensions) == 0 {
		fmt.Fprintf(b, "safe region: the scenario as written passes every check\n")
		return
	}
	fmt.Fprintf(b, "safe region: %d of %d points pass every check:\n", len(safe), len(s.Points))
	for _, p := range safe {
		fmt.Fprintf(b, "  %s\n", s.Setting(p))
	}
}

// WriteSweepMarkdown writes the sweep's summary.md: the settings, the table, and the safe region.
func WriteSweepMarkdown(w io.Writer, s Sweep) error {
	var b bytes.Buffer
	safe := s.Safe()
	verdict := "PASS"
	if len(safe) == 0 {
		verdict = "FAIL"
	}
	fmt.Fprintf(&b, "# meshproof sweep: %s — %s\n\n", mdCell(s.Scenario), verdict)
	if s.File != "" {
		fmt.Fprintf(&b, "`%s` · ", mdCode(s.File))
	}
	fmt.Fprintf(&b, "seed %d · %s runner · %d points · started %s\n\n", s.Seed, s.Runner, len(s.Points), s.Started.UTC().Format(time.RFC3339))
	b.WriteString("## Settings\n\n")
	for _, d := range s.Dimensions {
		fmt.Fprintf(&b, "- `%s`: %s\n", mdCode(d.Path), mdCell(strings.Join(d.Values, ", ")))
	}
	if s.FindMaxRate != nil {
		fmt.Fprintf(&b, "\nEach point searches its highest passing load rate by bisection between %s and %s (precision %s).\n",
			rate(s.FindMaxRate.Min), rate(s.FindMaxRate.Max), rate(s.FindMaxRate.Precision))
	}
	if len(s.Checks) > 0 {
		b.WriteString("\n## Checks\n\n")
		for _, c := range s.Checks {
			fmt.Fprintf(&b, "- `%s`\n", mdCode(c))
		}
	}
	b.WriteString("\n## Points\n\n")
	head, rows := sweepRows(s)
	for i := range head {
		head[i] = mdCell(head[i])
	}
	fmt.Fprintf(&b, "| %s |\n|%s\n", strings.Join(head, " | "), strings.Repeat(" --- |", len(head)))
	for _, r := range rows {
		for i := range r {
			r[i] = mdCell(r[i])
		}
		fmt.Fprintf(&b, "| %s |\n", strings.Join(r, " | "))
	}
	b.WriteString("\n## Safe region\n\n")
	if len(safe) == 0 {
		fmt.Fprintf(&b, "None of the %d points passes every check.\n", len(s.Points))
	} else {
		fmt.Fprintf(&b, "%d of %d points pass every check:\n\n", len(safe), len(s.Points))
		for _, p := range safe {
			fmt.Fprintf(&b, "- `%s`\n", mdCode(s.Setting(p)))
		}
	}
	if s.FindMaxRate != nil {
		b.WriteString("\n## Rate probes\n\n")
		for _, p := range s.Points {
			if p.MaxRate == nil {
				continue
			}
			fmt.Fprintf(&b, "- `%s`: ", mdCode(s.Setting(p)))
			probes := make([]string, len(p.MaxRate.Probes))
			for i, pr := range p.MaxRate.Probes {
				probes[i] = rate(pr.Rate) + " " + strings.ToUpper(pr.Status)
			}
			fmt.Fprintf(&b, "%s → %s\n", mdCell(strings.Join(probes, ", ")), mdCell(maxRateCell(p)))
		}
	}
	_, err := w.Write(b.Bytes())
	return err
}

// sweep.json, as documented in README.md: snake_case keys, durations in float milliseconds.
type (
	jsonSweep struct {
		Version     int              `json:"version"`
		Scenario    string           `json:"scenario"`
		File        string           `json:"file"`
		Seed        uint64           `json:"seed"`
		Runner      string           `json:"runner"`
		Started     time.Time        `json:"started"`
		Passed      bool             `json:"passed"` // at least one point passes every check
		Settings    []jsonDimension  `json:"settings"`
		Checks      []string         `json:"checks"`
		FindMaxRate *jsonRateSearch  `json:"find_max_rate,omitempty"`
		Points      []jsonSweepPoint `json:"points"`
		Safe        []int            `json:"safe"` // indexes of the points that pass every check
	}
	jsonDimension struct {
		Path   string   `json:"path"`
		Values []string `json:"values"`
	}
	jsonRateSearch struct {
		Min       float64 `json:"rate_min"`
		Max       float64 `json:"rate_max"`
		Precision float64 `json:"precision"`
	}
	jsonSweepPoint struct {
		Settings map[string]string `json:"settings"`
		Values   []string          `json:"values"`
		Seed     uint64            `json:"seed,omitempty"`
		Status   string            `json:"status"`
		Error    string            `json:"error,omitempty"`
		Checks   []jsonVerdict     `json:"checks"`
		Outcomes *jsonSweepOutcome `json:"outcomes"`
		MaxRate  *jsonMaxRate      `json:"max_rate,omitempty"`
	}
	jsonSweepOutcome struct {
		Requests           uint64   `json:"requests"`
		SuccessRate        float64  `json:"success_rate"`
		RetryAmplification *float64 `json:"retry_amplification"`
		Retries            uint64   `json:"retries"`
		Ejections          uint64   `json:"ejections"`
		Overflows          uint64   `json:"overflows"`
		P50Ms              float64  `json:"p50_ms"`
		P99Ms              float64  `json:"p99_ms"`
	}
	jsonMaxRate struct {
		Rate   float64         `json:"rate"`
		Result string          `json:"result"`
		Probes []jsonRateProbe `json:"probes"`
	}
	jsonRateProbe struct {
		Rate   float64  `json:"rate"`
		Status string   `json:"status"`
		Error  string   `json:"error,omitempty"`
		Failed []string `json:"failed_checks"`
	}
)

// WriteSweepJSON writes sweep.json to path atomically.
func WriteSweepJSON(path string, s Sweep) error {
	data, err := sweepJSON(s)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, data)
}

func sweepJSON(s Sweep) ([]byte, error) {
	j := jsonSweep{Version: SweepVersion, Scenario: s.Scenario, File: s.File, Seed: s.Seed, Runner: s.Runner, Started: s.Started,
		Checks: append([]string{}, s.Checks...), Points: []jsonSweepPoint{}, Safe: []int{}}
	for _, d := range s.Dimensions {
		j.Settings = append(j.Settings, jsonDimension(d))
	}
	if s.FindMaxRate != nil {
		j.FindMaxRate = &jsonRateSearch{Min: s.FindMaxRate.Min, Max: s.FindMaxRate.Max, Precision: s.FindMaxRate.Precision}
	}
	for i, p := range s.Points {
		jp := jsonSweepPoint{Settings: map[string]string{}, Values: p.Values, Seed: p.Seed, Status: p.Status, Error: p.Error, Checks: []jsonVerdict{}}
		for k, v := range p.Values {
			jp.Settings[s.Dimensions[k].Path] = v
		}
		for _, v := range p.Verdicts {
			jp.Checks = append(jp.Checks, jsonVerdict{Check: v.Check, Passed: v.Passed, Observed: v.Observed, Required: v.Required})
		}
		if p.Status != StatusError || p.Outcomes.Requests > 0 {
			o := p.Outcomes
			jo := &jsonSweepOutcome{Requests: o.Requests, SuccessRate: o.SuccessRate, Retries: o.Retries, Ejections: o.Ejections,
				Overflows: o.Overflows, P50Ms: ms(o.P50), P99Ms: ms(o.P99)}
			if o.AmplificationKnown {
				amp := o.RetryAmplification
				jo.RetryAmplification = &amp
			}
			jp.Outcomes = jo
		}
		if m := p.MaxRate; m != nil {
			jm := &jsonMaxRate{Rate: m.Rate, Result: m.Result, Probes: []jsonRateProbe{}}
			for _, pr := range m.Probes {
				jm.Probes = append(jm.Probes, jsonRateProbe{Rate: pr.Rate, Status: pr.Status, Error: pr.Error, Failed: append([]string{}, pr.Failed...)})
			}
			jp.MaxRate = jm
		}
		if p.Passed() {
			j.Safe = append(j.Safe, i)
		}
		j.Points = append(j.Points, jp)
	}
	j.Passed = len(j.Safe) > 0
	data, err := json.MarshalIndent(j, "", "  ")
	if err != nil {
		return nil, err
	}
	return append(data, '\n'), nil
}

// WriteSweepAll writes sweep.json, summary.md and report.html into the sweep directory dir (which must
// exist), each atomically. It writes as many as it can and returns every error, joined.
func WriteSweepAll(dir string, s Sweep) error {
	return errors.Join(append([]error{WriteSweepJSON(filepath.Join(dir, FileSweepJSON), s)}, writeFiles(dir, []dirFile{
		{FileMarkdown, func(w io.Writer) error { return WriteSweepMarkdown(w, s) }},
		{FileHTML, func(w io.Writer) error { return WriteSweepHTML(w, s) }},
	})...)...)
}

// FormatRate formats a rate in requests/s as the reports do, without the unit: "199.8".
func FormatRate(x float64) string { return formatSig(x) }
