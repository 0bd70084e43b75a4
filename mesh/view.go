package mesh

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

// Window names fault or change windows for a scope: Fault(i) is the window of the scenario's
// faults[i], AnyFault all of them together; ChangeWindow(i) the window of its changes[i], AnyChange all of
// them together.
type Window struct{ text string }

// ChangeWindow is the window of the scenario's i-th configuration change ("changes[i]").
func ChangeWindow(i int) Window { return Window{fmt.Sprintf("changes[%d]", i)} }

// AnyChange is every change window together ("change").
var AnyChange = Window{"change"}

// Fault is the window of the scenario's i-th fault rule ("faults[i]").
func Fault(i int) Window { return Window{fmt.Sprintf("faults[%d]", i)} }

// AnyFault is every fault window together ("fault").
var AnyFault = Window{"fault"}

// View is part of a run that checks are judged on: a scope (a phase of the run), a target (an edge or
// a service of the call graph), both, or neither (the clients' requests over the whole run). It is
// what a check's "<scope>: <target>:" prefix selects.
type View struct {
	r      *Result
	scope  string
	target checks.Target
}

// All is the whole run, as the clients saw it.
func (r *Result) All() View { return View{r: r} }

// Before is the part of the run before the window starts ("before faults[0]").
func (r *Result) Before(w Window) View { return View{r: r, scope: "before " + w.text} }

// During is the window itself ("during faults[0]", "during fault").
func (r *Result) During(w Window) View { return View{r: r, scope: "during " + w.text} }

// DuringDown is the down periods of a flapping rule's window ("during faults[1] down"); a rule that does
// not flap is down its whole window.
func (r *Result) DuringDown(w Window) View { return View{r: r, scope: "during " + w.text + " down"} }

// After is the part of the run after the window ends ("after faults[0]").
func (r *Result) After(w Window) View { return View{r: r, scope: "after " + w.text} }

// Phase is a named phase of the load ("during phase steady").
func (r *Result) Phase(name string) View { return View{r: r, scope: "during phase " + name} }

// Edge is the calls of caller to callee, over the whole run.
func (r *Result) Edge(caller, callee string) View { return r.All().Edge(caller, callee) }

// Service is what a service's instances received, over the whole run.
func (r *Result) Service(name string) View { return r.All().Service(name) }

// Edge narrows the view to the calls of caller to callee.
func (v View) Edge(caller, callee string) View {
	v.target = checks.Target{Caller: caller, Callee: callee}
	return v
}

// Service narrows the view to what a service's instances received.
func (v View) Service(name string) View {
	v.target = checks.Target{Service: name}
	return v
}

// Result is the run the view is part of.
func (v View) Result() *Result { return v.r }

// String is the view as a check's prefix writes it: "during faults[0]: edge(cart->payments):", or ""
// for the whole run.
func (v View) String() string {
	var parts []string
	if v.scope != "" {
		parts = append(parts, v.scope+":")
	}
	if v.target != (checks.Target{}) {
		parts = append(parts, v.target.String()+":")
	}
	return strings.Join(parts, " ")
}

// Measurement is one metric measured on a view by the checks' own evaluator.
type Measurement struct {
	// Metric is the metric's canonical name ("p99", "status(5xx)").
	Metric string
	// Value is the metric's value, typed by its kind: time.Duration for latencies (math.MaxInt64 for an
	// ejection or a recovery that never came), int for counts, float64 for percentages (0 to 100),
	// ratios and rates (per second).
	Value any
	// Observed says what was measured and where, as a failed check prints it.
	Observed string
}

// Measure measures a metric of the view, by the name a check gives it ("p99", "success_rate",
// "status(503)", "retry_amplification"). An unknown metric, a scope that does not exist in the run, or
// a value the run does not hold is an error saying why, as a check would fail.
func (v View) Measure(metric string) (Measurement, error) {
	name, m, err := checks.LookupFor(v.target, strings.ToLower(strings.ReplaceAll(metric, " ", "")))
	if err != nil {
		return Measurement{}, err
	}
	if strings.HasPrefix(name, "ejected(") {
		return Measurement{}, fmt.Errorf("%s is a condition, not a value: use Ejected", name)
	}
	c := checks.Check{Scope: v.scope, Target: v.target, Metric: name, Op: ">=", Value: math.Inf(-1), Unit: unitOf(m.Kind)}
	c.Expr = c.String()
	verdict := reports.EvaluateRun([]checks.Check{c}, v.r.Record)[0]
	if !verdict.Measured {
		return Measurement{}, fmt.Errorf("%s%s", prefixed(v), verdict.Observed)
	}
	return Measurement{Metric: name, Value: typed(m.Kind, verdict.Value), Observed: verdict.Observed}, nil
}

// Ejected judges "ejected(host)" on the view, or "ejected(host) within d" when within > 0: whether any
// proxy ejected the host ("service/instance" or its address) in the view's scope, within that time of
// the fault's start. The verdict says when it was ejected, or why not.
func (v View) Ejected(host string, within time.Duration) reports.Verdict {
	c := checks.Check{Scope: v.scope, Metric: "ejected(" + host + ")"}
	if within > 0 {
		c.Op, c.Value, c.Unit = "within", within.Seconds(), "s"
	}
	c.Expr = c.String()
	return reports.EvaluateRun([]checks.Check{c}, v.r.Record)[0]
}

// Judge judges checks written without their prefix on the view ("p99 < 50ms" on r.During(Fault(0)) is
// "during faults[0]: p99 < 50ms").
func (v View) Judge(exprs ...string) ([]reports.Verdict, error) {
	full := make([]string, len(exprs))
	for i, e := range exprs {
		full[i] = strings.TrimSpace(v.String() + " " + e)
	}
	return v.r.Judge(full...)
}

func prefixed(v View) string {
	if s := v.String(); s != "" {
		return s + " "
	}
	return ""
}

// unitOf is the unit a check of the kind writes its value in (the normalized one).
func unitOf(k *checks.Kind) string {
	switch k {
	case checks.Latency:
		return "s"
	case checks.Percent:
		return "%"
	case checks.Rate:
		return "/s"
	}
	return ""
}

// typed converts a normalized value to the Go type of its kind.
func typed(k *checks.Kind, x float64) any {
	switch k {
	case checks.Latency:
		if math.IsInf(x, 1) || x*1e9 >= math.MaxInt64 {
			return time.Duration(math.MaxInt64)
		}
		return time.Duration(math.Round(x * 1e9))
	case checks.Count:
		return int(x)
	}
	return x
}
