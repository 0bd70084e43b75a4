package reports

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Check is one parsed check, "[<scope>:] <metric> <op> <value>", e.g. "p99 < 50ms" or
// "during faults[0]: p99 < 50ms", or "[<scope>:] ejected(<host>) [within <duration>]".
type Check struct {
	Expr string // the check as written
	// Scope is the phase the check is judged in, in canonical form (Scope.String): "before fault",
	// "during faults[1]", "after fault", "during phase steady"; "" judges the whole run.
	Scope  string
	Metric string  // canonical metric name, e.g. "p99", "status(503)", "status(5xx)", "ejected(checkout/2)"
	Op     string  // one of < <= > >= == !=; for ejected(): "within", or "" without a time bound
	Value  float64 // normalized: seconds for latencies, percent for rates, requests/s for achieved_rate, plain for counts and ratios
	Unit   string  // the unit as written: "ms", "%", "/s", or "" for counts and ratios
}

// Verdict is the outcome of one check, in words for people: Observed "p99 = 12.3ms", Required "< 50ms".
type Verdict struct {
	Check    string
	Passed   bool
	Observed string
	Required string
}

var operators = []string{"<", "<=", ">", ">=", "==", "!="}

// kind is what a metric measures; it decides the units its value takes.
type kind struct {
	what    string             // "a latency"
	units   map[string]float64 // unit as written → scale to the normalized value
	accept  string             // the accepted units, for messages
	example string             // an example check, %s = the metric
}

var (
	kindCount = &kind{what: "a count", units: map[string]float64{"": 1}, accept: "a plain number without unit", example: "%s <= 100"}
	kindRatio = &kind{what: "a ratio", units: map[string]float64{"": 1}, accept: "a plain number without unit", example: "%s <= 1.5"}
	kindPct   = &kind{what: "a percentage", units: map[string]float64{"%": 1}, accept: "%", example: "%s >= 99.9%%"}
	kindRate  = &kind{what: "a rate", units: map[string]float64{"/s": 1}, accept: "/s", example: "%s >= 95/s"}
	// Latency units scale to nanoseconds here; the normalized value is in seconds.
	kindLatency = &kind{what: "a latency", accept: "ns, us, µs, ms, s, m", example: "%s < 50ms",
		units: map[string]float64{"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9}}
)

// scopeRule is which scopes a metric may be judged in.
type scopeRule int

const (
	anyScope   scopeRule = iota // the whole run or any phase
	wholeRun                    // the whole run only
	faultStart                  // measured from a fault's start: no scope, "during fault" or "during faults[N]"
	faultEnd                    // measured from a fault's end: no scope, "after fault" or "after faults[N]"
)

// metric is something a check can compare; value returns it from a summary in normalized units. Metrics
// with a nil value are computed from the run's outcomes (see evalOutcome).
type metric struct {
	kind   *kind
	value  func(Summary) float64
	scopes scopeRule
	// missing, when set, says why a summary does not hold the metric ("" when it does).
	missing func(Summary) string
	// whole says where a wholeRun metric comes from, for the message refusing a scope.
	whole string
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

// metricNames lists the metrics in the order messages show them.
var metricNames = []string{"requests", "successes", "errors", "success_rate", "error_rate", "achieved_rate",
	"p50", "p90", "p99", "p999", "max", "uncorrected_p50", "uncorrected_p90", "uncorrected_p99", "uncorrected_p999",
	"uncorrected_max", "retries", "ejections", "upstream_attempts", "retry_amplification", "upstream_received",
	"delivered_amplification", "status(N)", "status(Nxx)",
	"attempts_max", "overflows", "pending_overflows", "retry_overflows", "time_to_first_ejection", "recovery_time",
	"ejected(HOST) [within DURATION]"}

var metrics = func() map[string]metric {
	count := func(f func(Summary) uint64) metric {
		return metric{kind: kindCount, value: func(s Summary) float64 { return float64(f(s)) }}
	}
	latency := func(f func(Summary) record.Percentiles, pick func(record.Percentiles) float64) metric {
		return metric{kind: kindLatency, value: func(s Summary) float64 { return pick(f(s)) }}
	}
	m := map[string]metric{
		"requests":      count(func(s Summary) uint64 { return s.Requests }),
		"successes":     count(func(s Summary) uint64 { return s.Successes }),
		"errors":        count(func(s Summary) uint64 { return s.Errors }),
		"retries":       count(func(s Summary) uint64 { return s.Retries }),
		"ejections":     count(func(s Summary) uint64 { return s.Ejections }),
		"success_rate":  {kind: kindPct, value: func(s Summary) float64 { return s.SuccessRate }},
		"error_rate":    {kind: kindPct, value: func(s Summary) float64 { return s.ErrorRate }},
		"achieved_rate": {kind: kindRate, value: func(s Summary) float64 { return s.AchievedRate }},

		// Upstream attempts the proxy made, in every scope; requests the instances received, whole run.
		"upstream_attempts": {kind: kindCount, value: func(s Summary) float64 { return float64(s.UpstreamAttempts) },
			missing: missingAttempts},
		"retry_amplification": {kind: kindRatio, value: func(s Summary) float64 { return s.RetryAmplification },
			missing: missingAttempts},
		"upstream_received": {kind: kindCount, value: func(s Summary) float64 { return float64(s.UpstreamReceived) },
			missing: missingReceived, scopes: wholeRun, whole: "from the instances' request counts"},
		"delivered_amplification": {kind: kindRatio, value: func(s Summary) float64 { return s.DeliveredAmplification },
			missing: missingReceived, scopes: wholeRun, whole: "from the instances' request counts"},

		"attempts_max":           {kind: kindCount},
		"overflows":              {kind: kindCount, scopes: wholeRun, whole: "from the proxy's stats"},
		"pending_overflows":      {kind: kindCount, scopes: wholeRun, whole: "from the proxy's stats"},
		"retry_overflows":        {kind: kindCount, scopes: wholeRun, whole: "from the proxy's stats"},
		"time_to_first_ejection": {kind: kindLatency, scopes: faultStart},
		"recovery_time":          {kind: kindLatency, scopes: faultEnd},
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

// lookupMetric resolves a metric name (already lower-cased, without spaces) to its canonical name.
func lookupMetric(name string) (string, metric, error) {
	if m, ok := metrics[name]; ok {
		return name, m, nil
	}
	if name == "upstream_requests" {
		return "", metric{}, errors.New(`upstream_requests is retired: it meant the requests the instances received over the whole ` +
			`run but the proxy's attempts within a scope; write upstream_attempts (upstream attempts the proxy made, any scope) ` +
			`or upstream_received (requests the instances received, whole run)`)
	}
	arg, isStatus := strings.CutPrefix(name, "status(")
	arg, closed := strings.CutSuffix(arg, ")")
	if !isStatus || !closed {
		return "", metric{}, fmt.Errorf("unknown metric %q; accepted: %s", name, strings.Join(metricNames, ", "))
	}
	if len(arg) == 3 && arg[0] >= '1' && arg[0] <= '5' && arg[1:] == "xx" {
		lo := int(arg[0]-'0') * 100
		return name, metric{kind: kindCount, value: func(s Summary) float64 {
			var n uint64
			for code, c := range s.StatusCodes {
				if code >= lo && code < lo+100 {
					n += c
				}
			}
			return float64(n)
		}}, nil
	}
	if code, err := strconv.Atoi(arg); err == nil && len(arg) == 3 && code >= 100 && code <= 599 {
		return name, metric{kind: kindCount, value: func(s Summary) float64 { return float64(s.StatusCodes[code]) }}, nil
	}
	return "", metric{}, fmt.Errorf("bad status %q in %s: want a code 100..599 such as status(503) or a class 1xx..5xx such as status(5xx)", arg, name)
}

var number = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`)

const ejectedForm = `"ejected(SERVICE/INSTANCE)", optionally followed by "within DURATION", e.g. "ejected(checkout/2) within 2s"`

// ParseCheck parses one check, "[<scope>:] <metric> <operator> <value>":
//
//	success_rate >= 99.9%   p99 < 50ms   retry_amplification <= 1.5   status(503) == 0   achieved_rate >= 95/s
//	during faults[0]: p99 < 50ms   before fault: success_rate == 100%   during phase steady: p99 < 20ms
//	recovery_time < 5s   time_to_first_ejection < 2s   attempts_max <= 4   overflows == 0
//	during fault: ejected(checkout/2) within 2s
//
// Metrics (defined in README.md): requests, successes, errors, retries, ejections, upstream_attempts,
// upstream_received, status(N), status(Nxx), attempts_max, overflows, pending_overflows, retry_overflows
// (counts: a plain number); success_rate, error_rate (percent: "%"); achieved_rate (requests/s: "/s");
// retry_amplification, delivered_amplification (plain ratios); p50, p90, p99, p999, max and their
// uncorrected_ forms, time_to_first_ejection, recovery_time (durations: a number with ns, us, µs, ms, s or
// m). ejected(HOST) holds when the proxy ejected HOST ("service/instance" or its address), within
// DURATION of the fault's start when given.
//
// Scopes (see ParseScope): before|during|after fault (all fault windows together), before|during|after
// faults[N] (one window), during phase NAME. overflows, pending_overflows, retry_overflows,
// upstream_received and delivered_amplification take no scope; time_to_first_ejection and ejected() take
// "during" a fault, recovery_time "after" a fault.
// Operators: < <= > >= == !=. Keywords and metric names are case-insensitive; spaces between the parts
// are optional.
func ParseCheck(expr string) (Check, error) {
	c := Check{Expr: strings.TrimSpace(expr)}
	fail := func(format string, args ...any) (Check, error) {
		return Check{}, fmt.Errorf("check %q: %s", c.Expr, fmt.Sprintf(format, args...))
	}
	if c.Expr == "" {
		return Check{}, errors.New(`empty check: want "<metric> <operator> <value>", e.g. "p99 < 50ms"`)
	}
	body := c.Expr
	var scope *Scope
	// The scope ends at the first ":" that is not inside the check's parentheses (ejected(10.0.0.1:80)).
	if i := strings.Index(body, ":"); i >= 0 && !strings.Contains(body[:i], "(") {
		sc, err := ParseScope(body[:i])
		if err != nil {
			return fail("%v", err)
		}
		scope, body = &sc, strings.TrimSpace(body[i+1:])
		c.Scope = sc.String()
		if body == "" {
			return fail(`nothing after the scope %q; want "%s: <metric> <operator> <value>", e.g. "%s: p99 < 50ms"`, c.Scope, c.Scope, c.Scope)
		}
	}
	if strings.HasPrefix(strings.ToLower(body), "ejected") {
		return parseEjected(c, body, scope)
	}

	i := strings.IndexAny(body, "<>=!")
	if i < 0 {
		return fail(`no comparison operator; want "<metric> <operator> <value>" with an operator among %s`, strings.Join(operators, " "))
	}
	rest := body[i:]
	c.Op = rest[:len(rest)-len(strings.TrimLeft(rest, "<>=!"))]
	if !slices.Contains(operators, c.Op) {
		return fail("unknown operator %q; accepted: %s", c.Op, strings.Join(operators, " "))
	}
	name := strings.ToLower(strings.Join(strings.Fields(body[:i]), ""))
	if name == "" {
		return fail("missing metric before %q; accepted: %s", c.Op, strings.Join(metricNames, ", "))
	}
	name, m, err := lookupMetric(name)
	if err != nil {
		return fail("%v", err)
	}
	c.Metric = name
	if scope != nil {
		if err := scopeFits(name, m.scopes, *scope); err != nil {
			return fail("%v", err)
		}
	}
	example := fmt.Sprintf(m.kind.example, name)

	raw := strings.TrimSpace(rest[len(c.Op):])
	if raw == "" {
		return fail("missing value after %q; e.g. %q", c.Op, example)
	}
	if c.Value, c.Unit, err = parseValue(raw, name, m.kind, example); err != nil {
		return fail("%v", err)
	}
	return c, nil
}

// parseValue parses "<number><unit>" for a metric of kind k, returning the normalized value.
func parseValue(raw, name string, k *kind, example string) (float64, string, error) {
	num := number.FindString(raw)
	x, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return 0, "", fmt.Errorf("value %q is not a number; %s is %s, e.g. %q", raw, name, k.what, example)
	}
	unit := strings.TrimSpace(raw[len(num):])
	scale, ok := k.units[unit]
	switch {
	case ok:
	case unit == "":
		return 0, "", fmt.Errorf("%s is %s: give the value a unit (%s), e.g. %q", name, k.what, k.accept, example)
	default:
		return 0, "", fmt.Errorf("unit %q does not fit %s, %s; accepted: %s, e.g. %q", unit, name, k.what, k.accept, example)
	}
	switch {
	case x < 0:
		return 0, "", fmt.Errorf("value %s is negative; %s is never negative", raw, name)
	case k == kindPct && x > 100:
		return 0, "", fmt.Errorf("value %s is above 100%%", raw)
	}
	x *= scale
	if k == kindLatency {
		x /= 1e9
	}
	if math.IsInf(x, 0) || math.IsNaN(x) {
		// "p99 < 1e308m" is +Inf seconds: a bound every value meets, which would pass whatever happened.
		return 0, "", fmt.Errorf("value %s is too large to compare; %s is %s, e.g. %q", raw, name, k.what, example)
	}
	return x, unit, nil
}

// scopeFits says why a metric cannot be judged in a scope.
func scopeFits(name string, rule scopeRule, sc Scope) error {
	switch {
	case rule == wholeRun:
		return fmt.Errorf("%s is counted over the whole run only (%s); write the check without %q", name, metrics[name].whole, sc.String()+":")
	case rule == faultStart && (sc.Phase != "" || sc.Relation != During):
		return fmt.Errorf(`%s is measured from a fault's start: scope it "during fault" or "during faults[N]", or leave the scope out, not %q`, name, sc.String())
	case rule == faultEnd && (sc.Phase != "" || sc.Relation != After):
		return fmt.Errorf(`%s is measured from a fault's end: scope it "after fault" or "after faults[N]", or leave the scope out, not %q`, name, sc.String())
	}
	return nil
}

// parseEjected parses "ejected(HOST) [within DURATION]".
func parseEjected(c Check, body string, scope *Scope) (Check, error) {
	fail := func(format string, args ...any) (Check, error) {
		return Check{}, fmt.Errorf("check %q: %s", c.Expr, fmt.Sprintf(format, args...))
	}
	arg, ok := strings.CutPrefix(strings.TrimSpace(body[len("ejected"):]), "(")
	if !ok {
		return fail("want %s", ejectedForm)
	}
	host, rest, ok := strings.Cut(arg, ")")
	host = strings.TrimSpace(host)
	switch {
	case !ok:
		return fail(`missing ")" after the host; want %s`, ejectedForm)
	case host == "" || strings.ContainsAny(host, " \t("):
		return fail("bad host %q in ejected(); want %s", host, ejectedForm)
	}
	c.Metric = "ejected(" + host + ")"
	if scope != nil {
		if err := scopeFits("ejected()", faultStart, *scope); err != nil {
			return fail("%v", err)
		}
	}
	rest = strings.TrimSpace(rest)
	if rest == "" {
		return c, nil
	}
	raw, ok := cutPrefixFold(rest, "within")
	if !ok {
		return fail("unexpected %q after %s; want nothing or \"within DURATION\", e.g. \"%s within 2s\"", rest, c.Metric, c.Metric)
	}
	c.Op = "within"
	example := c.Metric + " within 2s"
	if raw = strings.TrimSpace(raw); raw == "" {
		return fail("missing duration after \"within\"; e.g. %q", example)
	}
	var err error
	if c.Value, c.Unit, err = parseValue(raw, "within", kindLatency, example); err != nil {
		return fail("%v", err)
	}
	return c, nil
}

func cutPrefixFold(s, prefix string) (string, bool) {
	if len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix) {
		return s[len(prefix):], true
	}
	return s, false
}

// String returns the check as written, or rebuilt from its parts when it was not parsed.
func (c Check) String() string {
	if c.Expr != "" {
		return c.Expr
	}
	s := c.Metric + " " + c.Op + " " + c.value()
	if strings.HasPrefix(c.Metric, "ejected(") {
		s = strings.TrimSpace(c.Metric + " " + c.Op + " " + c.value())
	}
	if c.Scope != "" {
		s = c.Scope + ": " + s
	}
	return s
}

// value formats the check's value in its own unit ("50ms", "99.9%").
func (c Check) value() string {
	if c.Op == "" {
		return ""
	}
	x := c.Value
	if scale, ok := kindLatency.units[c.Unit]; ok {
		x = math.Round(c.Value*1e9) / scale
	}
	return strconv.FormatFloat(x, 'f', -1, 64) + c.Unit
}

// Evaluate judges every check against the summary of the whole run, in order. Checks that need the run
// record — a scope, or a metric computed from the outcomes (attempts_max, overflows,
// time_to_first_ejection, recovery_time, ejected()) — fail, saying so: judge those with EvaluateRun.
func Evaluate(checks []Check, s Summary) []Verdict {
	out := make([]Verdict, len(checks))
	for i, c := range checks {
		out[i] = judge(c, s, nil, nil)
	}
	return out
}

// EvaluateRun judges every check against the run's record, in order: unscoped checks over the whole run,
// scoped ones over their phase. A check that cannot be judged (an unknown phase, a value the record does
// not hold, a phase without requests for a rate or latency) fails, and its Observed says why.
func EvaluateRun(checks []Check, rec *record.Record) []Verdict {
	s, o := Summarize(rec), ComputeOutcomes(rec)
	return evaluateRun(checks, rec, s, &o)
}

func evaluateRun(checks []Check, rec *record.Record, s Summary, o *Outcomes) []Verdict {
	out := make([]Verdict, len(checks))
	for i, c := range checks {
		out[i] = judge(c, s, rec, o)
	}
	return out
}

// judge evaluates one check; rec and o are nil when only the summary is known.
func judge(c Check, s Summary, rec *record.Record, o *Outcomes) Verdict {
	v := Verdict{Check: c.String(), Required: c.Op + " " + c.value()}
	var sc *Scope
	if c.Scope != "" {
		parsed, err := ParseScope(c.Scope)
		if err != nil {
			v.Observed = err.Error()
			return v
		}
		sc = &parsed
	}
	if host, ok := strings.CutPrefix(c.Metric, "ejected("); ok {
		host = strings.TrimSuffix(host, ")")
		v.Required = "ejected " + ejectedRequirement(c, sc)
		if rec == nil {
			v.Observed = needsRecord(c.Metric)
			return v
		}
		return judgeEjected(v, c, host, sc, rec, o)
	}
	name, m, err := lookupMetric(c.Metric)
	if err != nil {
		v.Observed = err.Error()
		return v
	}
	if sc != nil {
		if err := scopeFits(name, m.scopes, *sc); err != nil {
			v.Observed = err.Error()
			return v
		}
	}
	if rec == nil && (sc != nil || m.value == nil) {
		v.Observed = needsRecord(name)
		return v
	}
	if m.value == nil || m.scopes == faultStart || m.scopes == faultEnd {
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
		v.Observed = name + " = " + observed(m.kind, x, s, name)
		if name == "upstream_attempts" || name == "retry_amplification" {
			v.Observed += attemptsNote(s)
		}
		v.Passed = compare(x, c.Op, c.Value)
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
	case ps.Requests == 0 && (m.kind == kindPct || m.kind == kindLatency || m.kind == kindRatio):
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
	v.Observed = name + " = " + observed(m.kind, x, ps, name) + " " + where
	switch name {
	case "retries":
		v.Observed += attemptsCoverage(p.Attempts)
	case "upstream_attempts", "retry_amplification":
		v.Observed += attemptsNote(ps)
	}
	v.Passed = compare(x, c.Op, c.Value)
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
func judgeOutcome(v Verdict, c Check, name string, sc *Scope, rec *record.Record, o *Outcomes) Verdict {
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
	default:
		v.Observed = fmt.Sprintf("%s cannot be judged here", name)
		return v
	}
	v.Passed = compare(x, c.Op, c.Value)
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
func pickWindow(o *Outcomes, sc *Scope) (WindowOutcome, error) {
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

func ejectedRequirement(c Check, sc *Scope) string {
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
		return "within " + c.value() + " of " + target
	case sc != nil:
		return c.Scope
	}
	return "at any time in the run"
}

// judgeEjected judges "ejected(HOST) [within D]": HOST was ejected within D of the start of a fault window
// (one targeting HOST when the scope names no window and some window targets it), or during the scope's
// windows without D, or at any time without either.
func judgeEjected(v Verdict, c Check, host string, sc *Scope, rec *record.Record, o *Outcomes) Verdict {
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
func observed(k *kind, x float64, s Summary, name string) string {
	switch k {
	case kindLatency:
		return formatDuration(secondsToDuration(x))
	case kindPct:
		n := s.Successes
		if name == "error_rate" {
			n = s.Errors
		}
		return fmt.Sprintf("%s%% (%d/%d)", formatPercent(x), n, s.Requests)
	case kindRate:
		return rate(x)
	case kindRatio:
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
