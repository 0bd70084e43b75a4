package reports

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Check is one parsed check, "<metric> <op> <value>", e.g. "p99 < 50ms".
type Check struct {
	Expr string // the check as written
	// Scope names the phase a check is judged in ("during fault"). Reserved: ParseCheck rejects scoped
	// checks with ErrScopedCheck for now, and Evaluate judges every check against the whole run. Scoped
	// checks will set it, and Evaluate will pick the summary of that phase.
	Scope  string
	Metric string  // canonical metric name, e.g. "p99", "status(503)", "status(5xx)"
	Op     string  // one of < <= > >= == !=
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

// ErrScopedCheck is wrapped by ParseCheck's error for a phase-scoped check such as "during fault: p99 < 50ms".
var ErrScopedCheck = errors.New("phase-scoped checks are not supported yet")

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

// metric is something a check can compare; value returns it from a summary in normalized units.
type metric struct {
	kind  *kind
	value func(Summary) float64
}

// metricNames lists the metrics in the order messages show them.
var metricNames = []string{"requests", "successes", "errors", "success_rate", "error_rate", "achieved_rate",
	"p50", "p90", "p99", "p999", "max", "uncorrected_p50", "uncorrected_p90", "uncorrected_p99", "uncorrected_p999",
	"uncorrected_max", "retries", "ejections", "upstream_requests", "retry_amplification", "status(N)", "status(Nxx)"}

var metrics = func() map[string]metric {
	count := func(f func(Summary) uint64) metric {
		return metric{kindCount, func(s Summary) float64 { return float64(f(s)) }}
	}
	latency := func(f func(Summary) Percentiles, pick func(Percentiles) float64) metric {
		return metric{kindLatency, func(s Summary) float64 { return pick(f(s)) }}
	}
	m := map[string]metric{
		"requests":            count(func(s Summary) uint64 { return s.Requests }),
		"successes":           count(func(s Summary) uint64 { return s.Successes }),
		"errors":              count(func(s Summary) uint64 { return s.Errors }),
		"retries":             count(func(s Summary) uint64 { return s.Retries }),
		"ejections":           count(func(s Summary) uint64 { return s.Ejections }),
		"upstream_requests":   count(func(s Summary) uint64 { return s.UpstreamRequests }),
		"success_rate":        {kindPct, func(s Summary) float64 { return s.SuccessRate }},
		"error_rate":          {kindPct, func(s Summary) float64 { return s.ErrorRate }},
		"achieved_rate":       {kindRate, func(s Summary) float64 { return s.AchievedRate }},
		"retry_amplification": {kindRatio, func(s Summary) float64 { return s.RetryAmplification }},
	}
	picks := map[string]func(Percentiles) float64{
		"p50":  func(p Percentiles) float64 { return p.P50.Seconds() },
		"p90":  func(p Percentiles) float64 { return p.P90.Seconds() },
		"p99":  func(p Percentiles) float64 { return p.P99.Seconds() },
		"p999": func(p Percentiles) float64 { return p.P999.Seconds() },
		"max":  func(p Percentiles) float64 { return p.Max.Seconds() },
	}
	for name, pick := range picks {
		m[name] = latency(func(s Summary) Percentiles { return s.Latency }, pick)
		m["uncorrected_"+name] = latency(func(s Summary) Percentiles { return s.Uncorrected }, pick)
	}
	return m
}()

// lookupMetric resolves a metric name (already lower-cased, without spaces) to its canonical name.
func lookupMetric(name string) (string, metric, error) {
	if m, ok := metrics[name]; ok {
		return name, m, nil
	}
	arg, isStatus := strings.CutPrefix(name, "status(")
	arg, closed := strings.CutSuffix(arg, ")")
	if !isStatus || !closed {
		return "", metric{}, fmt.Errorf("unknown metric %q; accepted: %s", name, strings.Join(metricNames, ", "))
	}
	if len(arg) == 3 && arg[0] >= '1' && arg[0] <= '5' && arg[1:] == "xx" {
		lo := int(arg[0]-'0') * 100
		return name, metric{kindCount, func(s Summary) float64 {
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
		return name, metric{kindCount, func(s Summary) float64 { return float64(s.StatusCodes[code]) }}, nil
	}
	return "", metric{}, fmt.Errorf("bad status %q in %s: want a code 100..599 such as status(503) or a class 1xx..5xx such as status(5xx)", arg, name)
}

var number = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`)

// ParseCheck parses one check, "<metric> <operator> <value>":
//
//	success_rate >= 99.9%   p99 < 50ms   retry_amplification <= 1.5   status(503) == 0   achieved_rate >= 95/s
//
// Metrics: requests, successes, errors, retries, ejections, upstream_requests, status(N), status(Nxx)
// (counts: a plain number); success_rate, error_rate (percent: "%"); achieved_rate (requests/s: "/s");
// retry_amplification (a plain ratio); p50, p90, p99, p999, max and their uncorrected_ forms (latencies
// from the intended and from the actual send time: a number with ns, us, µs, ms, s or m).
// Operators: < <= > >= == !=. Metric names are case-insensitive; spaces between the parts are optional.
// A phase-scoped check ("during fault: ...") is rejected with an error wrapping ErrScopedCheck.
func ParseCheck(expr string) (Check, error) {
	c := Check{Expr: strings.TrimSpace(expr)}
	fail := func(format string, args ...any) (Check, error) {
		return Check{}, fmt.Errorf("check %q: %s", c.Expr, fmt.Sprintf(format, args...))
	}
	if c.Expr == "" {
		return Check{}, errors.New(`empty check: want "<metric> <operator> <value>", e.g. "p99 < 50ms"`)
	}
	if scope, _, ok := strings.Cut(c.Expr, ":"); ok {
		return Check{}, fmt.Errorf("check %q: %w (scope %q); write the check without %q to judge the whole run",
			c.Expr, ErrScopedCheck, strings.TrimSpace(scope), strings.TrimSpace(scope)+":")
	}
	i := strings.IndexAny(c.Expr, "<>=!")
	if i < 0 {
		return fail(`no comparison operator; want "<metric> <operator> <value>" with an operator among %s`, strings.Join(operators, " "))
	}
	rest := c.Expr[i:]
	c.Op = rest[:len(rest)-len(strings.TrimLeft(rest, "<>=!"))]
	if !slices.Contains(operators, c.Op) {
		return fail("unknown operator %q; accepted: %s", c.Op, strings.Join(operators, " "))
	}
	name := strings.ToLower(strings.Join(strings.Fields(c.Expr[:i]), ""))
	if name == "" {
		return fail("missing metric before %q; accepted: %s", c.Op, strings.Join(metricNames, ", "))
	}
	name, m, err := lookupMetric(name)
	if err != nil {
		return fail("%v", err)
	}
	c.Metric = name
	example := fmt.Sprintf(m.kind.example, name)

	raw := strings.TrimSpace(rest[len(c.Op):])
	if raw == "" {
		return fail("missing value after %q; e.g. %q", c.Op, example)
	}
	num := number.FindString(raw)
	x, err := strconv.ParseFloat(num, 64)
	if err != nil {
		return fail("value %q is not a number; %s is %s, e.g. %q", raw, name, m.kind.what, example)
	}
	c.Unit = strings.TrimSpace(raw[len(num):])
	scale, ok := m.kind.units[c.Unit]
	switch {
	case ok:
	case c.Unit == "":
		return fail("%s is %s: give the value a unit (%s), e.g. %q", name, m.kind.what, m.kind.accept, example)
	default:
		return fail("unit %q does not fit %s, %s; accepted: %s, e.g. %q", c.Unit, name, m.kind.what, m.kind.accept, example)
	}
	switch {
	case x < 0:
		return fail("value %s is negative; %s is never negative", raw, name)
	case m.kind == kindPct && x > 100:
		return fail("value %s is above 100%%", raw)
	}
	c.Value = x * scale
	if m.kind == kindLatency {
		c.Value /= 1e9
	}
	return c, nil
}

// String returns the check as written, or rebuilt from its parts when it was not parsed.
func (c Check) String() string {
	if c.Expr != "" {
		return c.Expr
	}
	return c.Metric + " " + c.Op + " " + c.value()
}

// value formats the check's value in its own unit ("50ms", "99.9%").
func (c Check) value() string {
	x := c.Value
	if scale, ok := kindLatency.units[c.Unit]; ok {
		x = math.Round(c.Value*1e9) / scale
	}
	return strconv.FormatFloat(x, 'f', -1, 64) + c.Unit
}

// Evaluate judges every check against the summary, in order. Checks are judged over the whole run; when
// phase-scoped checks come, Evaluate will take a summary per phase and pick the one named by Check.Scope.
func Evaluate(checks []Check, s Summary) []Verdict {
	out := make([]Verdict, len(checks))
	for i, c := range checks {
		out[i] = evaluate(c, s)
	}
	return out
}

func evaluate(c Check, s Summary) Verdict {
	v := Verdict{Check: c.String(), Required: c.Op + " " + c.value()}
	if c.Scope != "" {
		v.Observed = fmt.Sprintf("scope %q: %v", c.Scope, ErrScopedCheck)
		return v
	}
	name, m, err := lookupMetric(c.Metric)
	if err != nil {
		v.Observed = err.Error()
		return v
	}
	x := m.value(s)
	v.Observed = name + " = " + observed(m.kind, x, s, name)
	v.Passed = compare(x, c.Op, c.Value)
	return v
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
		return fmt.Sprintf("%s%% (%d/%d)", formatFloat(x, 4), n, s.Requests)
	case kindRate:
		return formatFloat(x, 1) + "/s"
	case kindRatio:
		return formatFloat(x, 4)
	}
	return strconv.FormatFloat(x, 'f', -1, 64)
}

// compare applies op to a and b, taking values within a relative 1e-12 as equal (float rounding).
func compare(a float64, op string, b float64) bool {
	c := 0
	if d := a - b; math.Abs(d) > 1e-12*math.Max(math.Abs(a), math.Abs(b)) {
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
