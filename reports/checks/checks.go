// Package checks is the syntax of a scenario's checks: the Check type, its parsing, the metrics a check
// may name with their kinds and units, and the scopes a check may be judged in. It imports only the
// standard library, so that the scenario loader parses and validates checks without linking the report
// writers; package reports judges the checks against a run and writes the verdicts.
package checks

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Check is one parsed check, "[<scope>:] [<target>:] <metric> <op> <value>", e.g. "p99 < 50ms",
// "during faults[0]: p99 < 50ms" or "edge(cart->payments): retry_amplification <= 1.5", or
// "[<scope>:] ejected(<host>) [within <duration>]".
type Check struct {
	Expr string // the check as written
	// Scope is the phase the check is judged in, in canonical form (Scope.String): "before fault",
	// "during faults[1]", "after fault", "during phase steady"; "" judges the whole run.
	Scope string
	// Target narrows the check to one edge or service of the call graph; the zero Target judges the
	// clients' requests.
	Target Target
	Metric string  // canonical metric name, e.g. "p99", "status(503)", "status(5xx)", "ejected(checkout/2)"
	Op     string  // one of < <= > >= == !=; for ejected(): "within", or "" without a time bound
	Value  float64 // normalized: seconds for latencies, percent for rates, requests/s for achieved_rate, plain for counts and ratios
	Unit   string  // the unit as written: "ms", "%", "/s", or "" for counts and ratios
}

// Operators are the comparison operators a check may use.
var Operators = []string{"<", "<=", ">", ">=", "==", "!="}

var number = regexp.MustCompile(`^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?`)

const ejectedForm = `"ejected(SERVICE/INSTANCE)", optionally followed by "within DURATION", e.g. "ejected(checkout/2) within 2s"`

// Parse parses one check, "[<scope>:] [<target>:] <metric> <operator> <value>":
//
//	success_rate >= 99.9%   p99 < 50ms   retry_amplification <= 1.5   status(503) == 0   achieved_rate >= 95/s
//	during faults[0]: p99 < 50ms   before fault: success_rate == 100%   during phase steady: p99 < 20ms
//	recovery_time < 5s   time_to_first_ejection < 2s   attempts_max <= 4   overflows == 0
//	during fault: ejected(checkout/2) within 2s
//	during change[0]: success_rate >= 99.9%   during changes[2]: changes_rejected == 1   change_apply_time < 1s
//
// Metrics (defined in reports' README.md): requests, successes, errors, retries, ejections,
// upstream_attempts, upstream_received, status(N), status(Nxx), grpc_status(CODE) (CODE 0..16 or a name such
// as UNAVAILABLE), attempts_max, overflows, pending_overflows,
// retry_overflows, changes_applied, changes_rejected, changes_unexpected (counts: a plain number);
// success_rate, error_rate (percent: "%"); achieved_rate (requests/s: "/s"); retry_amplification,
// delivered_amplification (plain ratios); p50, p90, p99, p999, max and their uncorrected_ forms,
// time_to_first_ejection, recovery_time, change_apply_time (durations: a number with ns, us, µs, ms, s or
// m). ejected(HOST) holds when the proxy ejected HOST ("service/instance" or its address), within
// DURATION of the fault's start when given.
//
// Scopes (see ParseScope): before|during|after fault (all fault windows together), before|during|after
// faults[N] (one window), during fault down, during faults[N] down (a flapping rule's down periods),
// before|during|after change (all configuration changes' windows together), before|during|after
// changes[N] (one change's window; "change[N]" is read as "changes[N]"), during phase NAME.
// overflows, pending_overflows, retry_overflows, upstream_received and delivered_amplification take no
// scope; time_to_first_ejection and ejected() take "during" a fault, recovery_time "after" a fault (not a
// change: a change is no fault).
// Targets (see ParseTarget), after the scope: edge(CALLER->CALLEE) judges the calls of one caller →
// callee pair of the call graph, service(NAME) the requests one service received, each with metrics of
// its own (MetricNames, LookupFor): "edge(cart->payments): retry_amplification <= 1.5",
// "during fault: service(frontend): success_rate >= 99%".
// Operators: < <= > >= == !=. Keywords and metric names are case-insensitive; spaces between the parts
// are optional.
func Parse(expr string) (Check, error) {
	c := Check{Expr: strings.TrimSpace(expr)}
	fail := func(format string, args ...any) (Check, error) {
		return Check{}, fmt.Errorf("check %q: %s", c.Expr, fmt.Sprintf(format, args...))
	}
	if c.Expr == "" {
		return Check{}, errors.New(`empty check: want "<metric> <operator> <value>", e.g. "p99 < 50ms"`)
	}
	body := c.Expr
	var scope *Scope
	// A phase scope, then a target, each end at a ":" outside the check's parentheses
	// (ejected(10.0.0.1:80)).
	if head, rest, ok := cutColon(body); ok && !isTarget(head) {
		sc, err := ParseScope(head)
		if err != nil {
			return fail("%v", err)
		}
		scope, body = &sc, strings.TrimSpace(rest)
		c.Scope = sc.String()
		if body == "" {
			return fail(`nothing after the scope %q; want "%s: <metric> <operator> <value>", e.g. "%s: p99 < 50ms"`, c.Scope, c.Scope, c.Scope)
		}
	}
	if head, rest, ok := cutColon(body); ok && isTarget(head) {
		t, err := ParseTarget(head)
		if err != nil {
			return fail("%v", err)
		}
		c.Target, body = t, strings.TrimSpace(rest)
		if body == "" {
			return fail(`nothing after %s; want "%s: <metric> <operator> <value>", e.g. "%s: %s"`, t, t, t, targetExample(t))
		}
		if head, _, ok := cutColon(body); ok {
			if _, err := ParseScope(head); err == nil {
				return fail("the phase scope goes before %s: write %q", t, head+": "+t.String()+": "+strings.TrimSpace(body[len(head)+1:]))
			}
		}
	}
	if c.Target == (Target{}) && isTarget(body) {
		return fail(`no ":" after the edge or service, or no ")" closing it; want "%s: <metric> <operator> <value>" or "%s: <metric> <operator> <value>"`,
			"edge(CALLER->CALLEE)", "service(NAME)")
	}
	if strings.HasPrefix(strings.ToLower(body), "ejected") {
		if c.Target != (Target{}) {
			return fail("ejected(HOST) takes no edge or service: write it without %q (the ejections of %s: %q)",
				c.Target.String()+":", c.Target, c.Target.String()+": ejections >= 1")
		}
		return parseEjected(c, body, scope)
	}

	i := strings.IndexAny(body, "<>=!")
	if i < 0 {
		return fail(`no comparison operator; want "<metric> <operator> <value>" with an operator among %s`, strings.Join(Operators, " "))
	}
	rest := body[i:]
	c.Op = rest[:len(rest)-len(strings.TrimLeft(rest, "<>=!"))]
	if !slices.Contains(Operators, c.Op) {
		return fail("unknown operator %q; accepted: %s", c.Op, strings.Join(Operators, " "))
	}
	name := strings.ToLower(strings.Join(strings.Fields(body[:i]), ""))
	if name == "" {
		return fail("missing metric before %q; accepted: %s", c.Op, strings.Join(MetricNames(c.Target), ", "))
	}
	name, m, err := LookupFor(c.Target, name)
	if err != nil {
		return fail("%v", err)
	}
	c.Metric = name
	if scope != nil {
		if err := Fits(name, m, *scope); err != nil {
			return fail("%v", err)
		}
	}
	example := fmt.Sprintf(m.Kind.example, name)

	raw := strings.TrimSpace(rest[len(c.Op):])
	if raw == "" {
		return fail("missing value after %q; e.g. %q", c.Op, example)
	}
	if c.Value, c.Unit, err = parseValue(raw, name, m.Kind, example); err != nil {
		return fail("%v", err)
	}
	return c, nil
}

// parseValue parses "<number><unit>" for a metric of kind k, returning the normalized value.
func parseValue(raw, name string, k *Kind, example string) (float64, string, error) {
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
	case k == Percent && x > 100:
		return 0, "", fmt.Errorf("value %s is above 100%%", raw)
	}
	x *= scale
	if k == Latency {
		x /= 1e9
	}
	if math.IsInf(x, 0) || math.IsNaN(x) {
		// "p99 < 1e308m" is +Inf seconds: a bound every value meets, which would pass whatever happened.
		return 0, "", fmt.Errorf("value %s is too large to compare; %s is %s, e.g. %q", raw, name, k.what, example)
	}
	return x, unit, nil
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
		if err := Fits("ejected()", Metric{Kind: Latency, Scopes: FaultStart}, *scope); err != nil {
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
	if c.Value, c.Unit, err = parseValue(raw, "within", Latency, example); err != nil {
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

// Ejected returns the host of an ejected(HOST) check.
func (c Check) Ejected() (host string, ok bool) {
	host, ok = strings.CutPrefix(c.Metric, "ejected(")
	return strings.TrimSuffix(host, ")"), ok
}

// String returns the check as written, or rebuilt from its parts when it was not parsed.
func (c Check) String() string {
	if c.Expr != "" {
		return c.Expr
	}
	s := c.Metric + " " + c.Op + " " + c.ValueText()
	if _, ok := c.Ejected(); ok {
		s = strings.TrimSpace(c.Metric + " " + c.Op + " " + c.ValueText())
	}
	if c.Target != (Target{}) {
		s = c.Target.String() + ": " + s
	}
	if c.Scope != "" {
		s = c.Scope + ": " + s
	}
	return s
}

// cutColon cuts s at its first ":" outside parentheses.
func cutColon(s string) (before, after string, ok bool) {
	depth := 0
	for i, r := range s {
		switch r {
		case '(':
			depth++
		case ')':
			depth = max(depth-1, 0)
		case ':':
			if depth == 0 {
				return s[:i], s[i+1:], true
			}
		}
	}
	return s, "", false
}

// targetExample is a check on a target, for messages.
func targetExample(t Target) string {
	if t.IsEdge() {
		return "retry_amplification <= 1.5"
	}
	return "amplification <= 3"
}

// ValueText formats the check's value in its own unit ("50ms", "99.9%"); "" without an operator.
func (c Check) ValueText() string {
	if c.Op == "" {
		return ""
	}
	x := c.Value
	if scale, ok := Latency.units[c.Unit]; ok {
		x = math.Round(c.Value*1e9) / scale
	}
	return strconv.FormatFloat(x, 'f', -1, 64) + c.Unit
}
