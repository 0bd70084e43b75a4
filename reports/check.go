package reports

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// Verdict is the outcome of one check, in words for people: Observed "p99 = 12.3ms", Required "< 50ms".
type Verdict struct {
	Check    string
	Passed   bool
	Observed string
	Required string
	// Value is the metric's value the check compared, in its normalized unit (seconds for latencies,
	// percent for rates, plain for counts and ratios; +Inf for an ejection or recovery that never came),
	// when Measured. A check that could not be judged, and ejected(), measure nothing. Not written to
	// report.json: the Gomega matchers (package mesh/meshtest) compare it with their own matchers.
	Value    float64
	Measured bool
}

// measured records x as the check's value and judges it.
func (v *Verdict) measured(c checks.Check, x float64) {
	v.Value, v.Measured = x, true
	v.Passed = compare(x, c.Op, c.Value)
}

// metric is how a check's metric is computed from a summary, in normalized units. Metrics without a
// value are computed from the run's outcomes (see judgeOutcome).
type metric struct {
	checks.Metric
	value func(Summary) float64
	// missing, when set, says why a summary does not hold the metric ("" when it does).
	missing func(Summary) string
}

// missingAttempts and missingReceived say why a summary holds no upstream attempts / received counts.
func missingAttempts(s Summary) string {
	if s.AttemptsFrom != "" {
		return ""
	}
	return "the samples carry no attempt counts"
}

func missingReceived(s Summary) string {
	switch {
	case !s.ReceivedKnown:
		return "the run has no upstream records (the instances' request counts)"
	case s.Requests == 0:
		return "no requests"
	}
	return ""
}

// summaryValues are the clients' metrics a summary holds, by canonical name (see checks.Lookup).
var summaryValues = func() map[string]metric {
	count := func(f func(Summary) uint64) metric {
		return metric{value: func(s Summary) float64 { return float64(f(s)) }}
	}
	latency := func(f func(Summary) record.Percentiles, pick func(record.Percentiles) float64) metric {
		return metric{value: func(s Summary) float64 { return pick(f(s)) }}
	}
	m := map[string]metric{
		"requests":      count(func(s Summary) uint64 { return s.Requests }),
		"successes":     count(func(s Summary) uint64 { return s.Successes }),
		"errors":        count(func(s Summary) uint64 { return s.Errors }),
		"retries":       count(func(s Summary) uint64 { return s.Retries }),
		"ejections":     count(func(s Summary) uint64 { return s.Ejections }),
		"success_rate":  {value: func(s Summary) float64 { return s.SuccessRate }},
		"error_rate":    {value: func(s Summary) float64 { return s.ErrorRate }},
		"achieved_rate": {value: func(s Summary) float64 { return s.AchievedRate }},

		"upstream_attempts":       {value: func(s Summary) float64 { return float64(s.UpstreamAttempts) }, missing: missingAttempts},
		"retry_amplification":     {value: func(s Summary) float64 { return s.RetryAmplification }, missing: missingAttempts},
		"upstream_received":       {value: func(s Summary) float64 { return float64(s.UpstreamReceived) }, missing: missingReceived},
		"delivered_amplification": {value: func(s Summary) float64 { return s.DeliveredAmplification }, missing: missingReceived},
	}
	picks := map[string]func(record.Percentiles) float64{
		"p50":  func(p record.Percentiles) float64 { return p.P50.Seconds() },
		"p90":  func(p record.Percentiles) float64 { return p.P90.Seconds() },
		"p99":  func(p record.Percentiles) float64 { return p.P99.Seconds() },
		"p999": func(p record.Percentiles) float64 { return p.P999.Seconds() },
		"max":  func(p record.Percentiles) float64 { return p.Max.Seconds() },
	}
	for name, pick := range picks {
		m[name] = latency(func(s Summary) record.Percentiles { return s.Latency }, pick)
		m["uncorrected_"+name] = latency(func(s Summary) record.Percentiles { return s.Uncorrected }, pick)
	}
	return m
}()

// lookupMetric resolves a clients' metric name to its canonical name, its kind and scopes, and how a
// summary holds it.
func lookupMetric(name string) (string, metric, error) {
	name, info, err := checks.Lookup(name)
	if err != nil {
		return "", metric{}, err
	}
	m := summaryValues[name]
	m.Metric = info
	if lo, hi, ok, _ := checks.Status(name); ok {
		m.value = func(s Summary) float64 {
			var n uint64
			for code, c := range s.StatusCodes {
				if code >= lo && code < hi {
					n += c
				}
			}
			return float64(n)
		}
	}
	if code, ok, _ := checks.GRPCStatus(strings.ToLower(name)); ok {
		m.value = func(s Summary) float64 { return float64(s.GRPCStatuses[code]) }
	}
	return name, m, nil
}

// Evaluate judges every check against the summary of the whole run, in order. Checks that need the run
// record — a scope, an edge or service target, or a metric computed from the outcomes (attempts_max,
// overflows, time_to_first_ejection, recovery_time, ejected()) — fail, saying so: judge those with
// EvaluateRun.
func Evaluate(checks []checks.Check, s Summary) []Verdict {
	out := make([]Verdict, len(checks))
	for i, c := range checks {
		out[i] = judge(c, s, nil, nil)
	}
	return out
}

// EvaluateRun judges every check against the run's record, in order: unscoped checks over the whole run,
// scoped ones over their phase. A check that cannot be judged (an unknown phase, a value the record does
// not hold, a phase without requests for a rate or latency) fails, and its Observed says why.
func EvaluateRun(checks []checks.Check, rec *record.Record) []Verdict {
	s, o := Summarize(rec), ComputeOutcomes(rec)
	return evaluateRun(checks, rec, s, &o)
}

func evaluateRun(checks []checks.Check, rec *record.Record, s Summary, o *Outcomes) []Verdict {
	out := make([]Verdict, len(checks))
	for i, c := range checks {
		out[i] = judge(c, s, rec, o)
	}
	return out
}

// judge evaluates one check; rec and o are nil when only the summary is known.
func judge(c checks.Check, s Summary, rec *record.Record, o *Outcomes) Verdict {
	v := Verdict{Check: c.String(), Required: c.Op + " " + c.ValueText()}
	var sc *checks.Scope
	if c.Scope != "" {
		parsed, err := checks.ParseScope(c.Scope)
		if err != nil {
			v.Observed = err.Error()
			return v
		}
		sc = &parsed
	}
	if c.Target != (checks.Target{}) {
		if rec == nil {
			v.Observed = needsRecord(c.Target.String() + " " + c.Metric)
			return v
		}
		return judgeTarget(v, c, sc, rec)
	}
	if host, ok := strings.CutPrefix(c.Metric, "ejected("); ok {
		host = strings.TrimSuffix(host, ")")
		v.Required = "ejected " + ejectedRequirement(c, sc)
		if rec == nil {
			v.Observed = needsRecord(c.Metric)
			return v
		}
		if sc != nil && sc.Changes { // a check built by hand (mesh's views): parsed ones were refused already
			if err := checks.Fits("ejected()", checks.Metric{Kind: checks.Latency, Scopes: checks.FaultStart}, *sc); err != nil {
				v.Observed = err.Error()
				return v
			}
		}
		return judgeEjected(v, c, host, sc, rec, o)
	}
	name, m, err := lookupMetric(c.Metric)
	if err != nil {
		v.Observed = err.Error()
		return v
	}
	if sc != nil {
		if err := checks.Fits(name, m.Metric, *sc); err != nil {
			v.Observed = err.Error()
			return v
		}
	}
	if rec == nil && (sc != nil || m.value == nil) {
		v.Observed = needsRecord(name)
		return v
	}
	if m.value == nil || m.Scopes == checks.FaultStart || m.Scopes == checks.FaultEnd {
		return judgeOutcome(v, c, name, sc, rec, o)
	}
	if sc == nil {
		if m.missing != nil {
			if why := m.missing(s); why != "" {
				v.Observed = fmt.Sprintf("%s not recorded: %s", name, why)
				return v
			}
		}
		x := m.value(s)
		v.Observed = name + " = " + observed(m.Kind, x, s, name)
		if name == "upstream_attempts" || name == "retry_amplification" {
			v.Observed += attemptsNote(s)
		}
		v.measured(c, x)
		return v
	}

	p, err := PhaseOf(rec, *sc)
	if err != nil {
		v.Observed = fmt.Sprintf("scope %q: %v", c.Scope, err)
		return v
	}
	ps := p.Summary
	where := fmt.Sprintf("%s (%s, %d requests)", c.Scope, formatSpans(p.Spans), ps.Requests)
	switch {
	case ps.Requests == 0 && (m.Kind == checks.Percent || m.Kind == checks.Latency || m.Kind == checks.Ratio):
		v.Observed = "no requests " + where + ": nothing to judge " + name + " on"
		return v
	case name == "retries" && p.Attempts.Known == 0:
		v.Observed = fmt.Sprintf("%s not recorded %s: the samples carry no attempt counts", name, where)
		return v
	case m.missing != nil && m.missing(ps) != "":
		v.Observed = fmt.Sprintf("%s not recorded %s: %s", name, where, m.missing(ps))
		return v
	case name == "ejections" && !p.EjectionsKnown:
		v.Observed = fmt.Sprintf("ejections not recorded %s: the proxy emitted no ejection events (it counted %d over the run)", where, s.Ejections)
		return v
	}
	x := m.value(ps)
	v.Observed = name + " = " + observed(m.Kind, x, ps, name) + " " + where
	switch name {
	case "retries":
		v.Observed += attemptsCoverage(p.Attempts)
	case "upstream_attempts", "retry_amplification":
		v.Observed += attemptsNote(ps)
	}
	v.measured(c, x)
	return v
}

func needsRecord(name string) string {
	return name + " needs the run record: judge it with EvaluateRun (or NewReport), not Evaluate"
}

func attemptsCoverage(a AttemptStats) string {
	if a.Known == a.Requests {
		return ""
	}
	return fmt.Sprintf(" (attempts known for %d of %d requests)", a.Known, a.Requests)
}

// judgeOutcome judges the metrics computed from the outcomes rather than a summary.
func judgeOutcome(v Verdict, c checks.Check, name string, sc *checks.Scope, rec *record.Record, o *Outcomes) Verdict {
	var x float64
	switch name {
	case "overflows":
		x = float64(o.Overflows())
		v.Observed = fmt.Sprintf("overflows = %d (pending %d, retry %d)", o.Overflows(), o.PendingOverflows, o.RetryOverflows)
	case "pending_overflows":
		x = float64(o.PendingOverflows)
		v.Observed = fmt.Sprintf("pending_overflows = %d", o.PendingOverflows)
	case "retry_overflows":
		x = float64(o.RetryOverflows)
		v.Observed = fmt.Sprintf("retry_overflows = %d", o.RetryOverflows)
	case "ssl_handshakes", "ssl_handshake_errors", "cert_rotations":
		var ok bool
		if v, x, ok = judgeMTLS(v, name, o.MTLS); !ok {
			return v
		}
	case "attempts_max":
		a, where := o.Attempts, ""
		if sc != nil {
			p, err := PhaseOf(rec, *sc)
			if err != nil {
				v.Observed = fmt.Sprintf("scope %q: %v", c.Scope, err)
				return v
			}
			a, where = p.Attempts, fmt.Sprintf(" %s (%s, %d requests)", c.Scope, formatSpans(p.Spans), p.Summary.Requests)
		}
		if a.Known == 0 {
			v.Observed = "attempts_max not recorded" + where + ": the samples carry no attempt counts"
			return v
		}
		x = float64(a.Max)
		v.Observed = fmt.Sprintf("attempts_max = %d%s, attempts per request %s", a.Max, where, distribution(a.Distribution)) + attemptsCoverage(a)
	case "time_to_first_ejection", "recovery_time":
		w, err := pickWindow(o, sc)
		if err != nil {
			v.Observed = fmt.Sprintf("%s: %v", name, err)
			return v
		}
		if name == "time_to_first_ejection" && sc != nil && sc.Down {
			d, ok := firstDownEjection(o, sc.Fault)
			if !ok {
				x = math.Inf(1)
				v.Observed = "time_to_first_ejection: " + noDownEjection(o, sc.Fault)
				if len(rec.ProxyEvents) == 0 {
					v.Observed += " (the proxy emitted no events)"
				}
				v.Observed += windowsWhy(rec, sc.Fault)
				break
			}
			x = d.TimeToFirstEjection.Seconds()
			v.Observed = fmt.Sprintf("time_to_first_ejection = %s (%s ejected at %s, %s down %s)", formatDelay(d.TimeToFirstEjection),
				d.FirstEjection.Host, formatOffset(d.FirstEjection.At), d.window, formatSpans([]Span{d.Span}))
			break
		}
		if name == "time_to_first_ejection" {
			if !w.Ejected {
				x = math.Inf(1)
				v.Observed = "time_to_first_ejection: " + noEjection(w)
				if len(rec.ProxyEvents) == 0 {
					v.Observed += " (the proxy emitted no events)"
				}
				fault := -1
				if sc != nil {
					fault = sc.Fault
				}
				v.Observed += windowsWhy(rec, fault)
				break
			}
			x = w.TimeToFirstEjection.Seconds()
			v.Observed = fmt.Sprintf("time_to_first_ejection = %s (%s ejected at %s, %s started at %s)", formatDelay(w.TimeToFirstEjection),
				w.FirstEjection.Host, formatOffset(w.FirstEjection.At), w.EjectionWindow, formatOffset(w.EjectionStart))
			break
		}
		r := w.Recovery
		switch {
		case !r.Measured:
			v.Observed = "recovery_time not measured: " + r.Why
			return v
		case !r.Recovered:
			x = math.Inf(1)
			v.Observed = "recovery_time: not recovered: " + r.Why
		default:
			x = r.Time.Seconds()
			v.Observed = fmt.Sprintf("recovery_time = %s (%s ended at %s; a whole %s at ≥ %s%% success from %s)", formatDelay(r.Time), w.Name,
				formatOffset(w.Span.End), formatDuration(RecoveryWindow), formatPercent(r.Threshold), formatOffset(w.Span.End+r.Time))
		}
	case "changes_applied", "changes_rejected", "changes_unexpected", "change_apply_time":
		return judgeChanges(v, c, name, sc, rec)
	default:
		v.Observed = fmt.Sprintf("%s cannot be judged here", name)
		return v
	}
	v.measured(c, x)
	return v
}

// judgeChanges judges the metrics of the scenario's configuration changes: how many the proxy applied
// (ACKed), rejected (NACKed) or answered otherwise than expected, and the longest it took to answer one.
// Unscoped they judge every change; "during changes[N]" that change, "during change" every change, any
// other scope the changes pushed within its spans (changesInScope). change_apply_time fails when a change
// in scope is unacknowledged: the proxy answered neither way by the run's end.
func judgeChanges(v Verdict, c checks.Check, name string, sc *checks.Scope, rec *record.Record) Verdict {
	if len(rec.Changes) == 0 {
		v.Observed = name + ": the run made no configuration changes"
		return v
	}
	idx, where, err := changesInScope(rec, sc)
	if err != nil {
		v.Observed = fmt.Sprintf("scope %q: %v", c.Scope, err)
		return v
	}
	of := fmt.Sprintf("%d of %d changes", len(idx), len(rec.Changes))
	if sc == nil {
		of = fmt.Sprintf("%d changes", len(idx))
	}
	if name != "change_apply_time" {
		n := 0
		for _, i := range idx {
			co := ChangeOutcome{Change: rec.Changes[i]}
			switch {
			case name == "changes_applied" && co.Change.Outcome == record.ChangeApplied,
				name == "changes_rejected" && co.Change.Outcome == record.ChangeRejected,
				name == "changes_unexpected" && co.Unexpected():
				n++
			}
		}
		v.Observed = fmt.Sprintf("%s = %d%s", name, n, where)
		if len(idx) == 0 {
			v.Observed += ": no change pushed in it"
		} else {
			v.Observed += fmt.Sprintf(" (%s: %s)", of, changeList(rec, idx))
		}
		v.measured(c, float64(n))
		return v
	}
	if len(idx) == 0 {
		v.Observed = "no configuration change pushed" + where + ": nothing to judge change_apply_time on"
		return v
	}
	var longest ChangeOutcome
	var silent []string
	answered := 0
	for _, i := range idx {
		co := ChangeOutcome{Change: rec.Changes[i]}
		switch {
		case !co.Answered():
			silent = append(silent, fmt.Sprintf("%s (pushed at %s)", co.Change.Name, formatOffset(co.Change.Start)))
			continue
		case answered == 0 || co.ApplyTime() > longest.ApplyTime():
			longest = co
		}
		answered++
	}
	if len(silent) > 0 {
		v.Observed = fmt.Sprintf("change_apply_time%s: %s unacknowledged: the proxy answered neither ACK nor NACK before the run ended at %s",
			where, strings.Join(silent, ", "), formatOffset(RunEnd(rec)))
		if answered > 0 {
			v.Observed += fmt.Sprintf("; the longest answered change took %s (%s)", formatDelay(longest.ApplyTime()), longest.Change.Name)
		}
		return v
	}
	ch := longest.Change
	v.Observed = fmt.Sprintf("change_apply_time = %s%s (%s, the longest of %d: pushed at %s, %s at %s)", formatDelay(longest.ApplyTime()), where,
		ch.Name, answered, formatOffset(ch.Start), ch.Outcome, formatOffset(ch.Answered))
	v.measured(c, longest.ApplyTime().Seconds())
	return v
}

// noEjection says what a window without an ejection of its own waited for.
func noEjection(w WindowOutcome) string {
	if w.Name == "fault" {
		return fmt.Sprintf("no ejection of a host a fault window targets, between that window's start and %s after its end", formatDuration(EjectionGrace))
	}
	return fmt.Sprintf("no ejection of a host %s targets (%s) between its start at %s and %s after its end (%s)", w.Name,
		windowTarget(w.Window), formatOffset(w.Span.Start), formatDuration(EjectionGrace), formatOffset(w.Span.End+EjectionGrace))
}

// windowsWhy says why the proxy ejected no host of window fault (-1: any window), from its counters.
func windowsWhy(rec *record.Record, fault int) string {
	hosts := hostLabels(rec)
	var services []string
	var ws []record.FaultWindow
	for i, w := range rec.Windows {
		if fault < 0 || i == fault {
			services, ws = append(services, w.Service), append(ws, w)
		}
	}
	return whyNoEjection(rec, services, func(h string) bool {
		return slices.ContainsFunc(ws, func(w record.FaultWindow) bool { return targets(w, h, hosts) })
	})
}

// downEjection is a down period's outcome with the window it belongs to.
type downEjection struct {
	DownOutcome
	window string
}

// firstDownEjection returns the earliest ejection credited to a down period of window fault (-1: any
// window); a window that does not flap counts as one down period, its whole window.
func firstDownEjection(o *Outcomes, fault int) (downEjection, bool) {
	var best downEjection
	found := false
	for i, w := range o.Windows {
		if fault >= 0 && i != fault {
			continue
		}
		downs := w.Down
		if len(w.Window.Down) == 0 {
			downs = []DownOutcome{{Span: w.Span, Ejected: w.Ejected, FirstEjection: w.FirstEjection, TimeToFirstEjection: w.TimeToFirstEjection}}
		}
		for _, d := range downs {
			if d.Ejected && (!found || d.FirstEjection.At < best.FirstEjection.At) {
				best, found = downEjection{d, w.Name}, true
			}
		}
	}
	return best, found
}

// noDownEjection says what the down periods without an ejection of their own waited for.
func noDownEjection(o *Outcomes, fault int) string {
	which := "a fault window"
	if fault >= 0 {
		which = o.Windows[fault].Name
	}
	var periods []Span
	for i, w := range o.Windows {
		if fault < 0 || i == fault {
			for _, d := range w.Down {
				periods = append(periods, d.Span)
			}
			if len(w.Window.Down) == 0 {
				periods = append(periods, w.Span)
			}
		}
	}
	slices.SortFunc(periods, func(a, b Span) int { return cmp.Compare(a.Start, b.Start) })
	shown := formatSpans(periods[:min(len(periods), 5)])
	if len(periods) > 5 {
		shown += fmt.Sprintf(" and %d more", len(periods)-5)
	}
	return fmt.Sprintf("no ejection of a host %s targets in its down periods (%s) nor %s after each", which, shown, formatDuration(EjectionGrace))
}

// pickWindow returns the fault window a scope names: all of them together without a scope or for "fault".
func pickWindow(o *Outcomes, sc *checks.Scope) (WindowOutcome, error) {
	switch {
	case len(o.Windows) == 0:
		return WindowOutcome{}, errors.New("the run has no fault windows to measure from")
	case sc == nil || sc.Fault < 0:
		return o.Fault, nil
	case sc.Fault >= len(o.Windows):
		names := make([]string, len(o.Windows))
		for i, w := range o.Windows {
			names[i] = w.Name
		}
		return WindowOutcome{}, fmt.Errorf("the run has no faults[%d]; its fault windows: %s", sc.Fault, strings.Join(names, ", "))
	}
	return o.Windows[sc.Fault], nil
}

func ejectedRequirement(c checks.Check, sc *checks.Scope) string {
	target := "a fault's start"
	switch {
	case sc != nil && sc.Down && sc.Fault >= 0:
		target = fmt.Sprintf("the start of a down period of faults[%d]", sc.Fault)
	case sc != nil && sc.Down:
		target = "the start of a fault's down period"
	case sc != nil && sc.Fault >= 0:
		target = fmt.Sprintf("faults[%d]'s start", sc.Fault)
	}
	switch {
	case c.Op == "within":
		return "within " + c.ValueText() + " of " + target
	case sc != nil:
		return c.Scope
	}
	return "at any time in the run"
}

// judgeEjected judges "ejected(HOST) [within D]": HOST was ejected within D of the start of a fault window
// (one targeting HOST when the scope names no window and some window targets it), or during the scope's
// windows without D, or at any time without either.
func judgeEjected(v Verdict, c checks.Check, host string, sc *checks.Scope, rec *record.Record, o *Outcomes) Verdict {
	hosts := hostLabels(rec)
	var times []time.Duration
	for _, e := range rec.ProxyEvents {
		if e.Kind == record.ProxyEjected && (e.Host == host || hostLabel(hosts, e.Host) == host) {
			times = append(times, e.At)
		}
	}
	slices.Sort(times)
	noEvents := ""
	if len(rec.ProxyEvents) == 0 {
		noEvents = fmt.Sprintf(" (the proxy emitted no events; it counted %d ejections)", sumClusterStat(rec.ProxyStats, "outlier_detection.ejections_enforced_total"))
	}
	when := func() string {
		if len(times) == 0 {
			return host + " never ejected" + noEvents
		}
		parts := make([]string, 0, len(times))
		for _, t := range times[:min(len(times), 5)] {
			parts = append(parts, formatOffset(t))
		}
		more := ""
		if len(times) > 5 {
			more = fmt.Sprintf(" and %d more", len(times)-5)
		}
		return host + " ejected at " + strings.Join(parts, ", ") + more
	}

	var windows []int // the windows to measure from
	switch {
	case sc != nil && sc.Fault >= len(rec.Windows):
		v.Observed = fmt.Sprintf("scope %q: the run has no faults[%d]", c.Scope, sc.Fault)
		if len(rec.Windows) > 0 {
			v.Observed += "; its fault windows: " + windowNames(rec.Windows)
		}
		return v
	case sc != nil && sc.Fault >= 0:
		windows = []int{sc.Fault}
	default:
		for i, w := range rec.Windows {
			if targets(w, host, hosts) {
				windows = append(windows, i)
			}
		}
		if len(windows) == 0 {
			for i := range rec.Windows {
				windows = append(windows, i)
			}
		}
	}
	if (c.Op == "within" || sc != nil) && len(windows) == 0 {
		v.Observed = "the run has no fault windows to measure from; " + when()
		return v
	}
	svc, _, _ := strings.Cut(hostLabel(hosts, host), "/")
	why := func() string { // said when HOST was never ejected: a late ejection is no counter's doing
		if len(times) > 0 {
			return ""
		}
		return whyNoEjection(rec, []string{svc}, func(h string) bool { return h == host || hostLabel(hosts, h) == hostLabel(hosts, host) })
	}

	if c.Op != "within" {
		var spans []Span
		if sc != nil {
			spans, _ = ScopeSpans(rec, *sc) // the window exists: checked above
		}
		for _, t := range times {
			if sc == nil || inSpans(spans, t) {
				v.Passed = true
				v.Observed = fmt.Sprintf("%s ejected at %s", host, formatOffset(t))
				return v
			}
		}
		v.Observed = when()
		if sc != nil {
			v.Observed += fmt.Sprintf("; %s is %s", c.Scope, formatSpans(spans))
		}
		v.Observed += why()
		return v
	}

	limit := secondsToDuration(c.Value)
	for _, i := range windows {
		starts := []Span{windowSpan(rec.Windows[i], o.End)}
		if sc != nil && sc.Down {
			starts = downSpans(rec.Windows[i], o.End)
		}
		for _, sp := range starts {
			for _, t := range times {
				if t >= sp.Start && t <= sp.Start+limit {
					v.Passed = true
					what := "started"
					if sc != nil && sc.Down {
						what = "went down"
					}
					v.Observed = fmt.Sprintf("%s ejected at %s, %s after faults[%d] %s at %s", host, formatOffset(t), formatDelay(t-sp.Start), i, what, formatOffset(sp.Start))
					return v
				}
			}
		}
	}
	if sc != nil && sc.Down {
		v.Observed = fmt.Sprintf("%s; the down periods: %s", when(), formatSpans(faultSpans(rec, sc.Fault, true, o.End))) + why()
		return v
	}
	first := windowSpan(rec.Windows[windows[0]], o.End).Start
	v.Observed = fmt.Sprintf("%s; faults[%d] started at %s", when(), windows[0], formatOffset(first)) + why()
	return v
}

// targets tells whether a fault window applies to host ("service/instance", or an address of one).
func targets(w record.FaultWindow, host string, hosts map[string]string) bool {
	host = hostLabel(hosts, host)
	svc, idx, ok := strings.Cut(host, "/")
	if !ok || svc != w.Service {
		return false
	}
	n, err := strconv.Atoi(idx)
	return err == nil && (len(w.Instances) == 0 || slices.Contains(w.Instances, n))
}

// distribution formats attempts → requests as "1×950, 2×48, 3×2".
func distribution(d map[int]uint64) string {
	keys := slices.Sorted(maps.Keys(d))
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%d×%d", k, d[k])
	}
	return strings.Join(parts, ", ")
}

// observed formats a metric's value for a verdict; rates show their counts too.
func observed(k *checks.Kind, x float64, s Summary, name string) string {
	switch k {
	case checks.Latency:
		return formatDuration(secondsToDuration(x))
	case checks.Percent:
		n := s.Successes
		if name == "error_rate" {
			n = s.Errors
		}
		return fmt.Sprintf("%s%% (%d/%d)", formatPercent(x), n, s.Requests)
	case checks.Rate:
		return rate(x)
	case checks.Ratio:
		return formatRatio(x) + " (" + amplificationCounts(s, name) + ")"
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// compare applies op to a and b, taking values within a relative 1e-12 as equal (float rounding).
func compare(a float64, op string, b float64) bool {
	c := 0
	switch d := a - b; {
	case math.IsInf(a, 0) || math.IsInf(b, 0): // a missed ejection, a run that never recovered
		c = cmp.Compare(a, b)
	case math.Abs(d) > 1e-12*math.Max(math.Abs(a), math.Abs(b)):
		c = int(math.Copysign(1, d))
	}
	switch op {
	case "<":
		return c < 0
	case "<=":
		return c <= 0
	case ">":
		return c > 0
	case ">=":
		return c >= 0
	case "==":
		return c == 0
	case "!=":
		return c != 0
	}
	return false
}
