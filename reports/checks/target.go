package checks

import (
	"fmt"
	"strings"
)

// Target narrows a check from the clients' requests to one edge or one service of the call graph:
// "edge(cart->payments): retry_amplification <= 1.5", "service(payments): amplification <= 3". The zero
// Target is the clients' requests, as a check without a target judges them.
type Target struct {
	// Caller and Callee name an edge, edge(CALLER->CALLEE): the calls the caller's instances made to the
	// callee through their sidecars.
	Caller, Callee string
	// Service names a service, service(NAME): the requests its instances received.
	Service string
}

// IsEdge tells whether the target is an edge.
func (t Target) IsEdge() bool { return t.Caller != "" }

// IsService tells whether the target is a service.
func (t Target) IsService() bool { return t.Service != "" }

// String is the target as a check writes it: "edge(cart->payments)", "service(payments)", or "" for the
// clients.
func (t Target) String() string {
	switch {
	case t.IsEdge():
		return "edge(" + t.Caller + "->" + t.Callee + ")"
	case t.IsService():
		return "service(" + t.Service + ")"
	}
	return ""
}

// what names the target in messages: "edge cart->payments", "service payments", "the clients".
func (t Target) what() string {
	switch {
	case t.IsEdge():
		return "an edge"
	case t.IsService():
		return "a service"
	}
	return "the clients"
}

const (
	edgeForm    = `edge(CALLER->CALLEE), e.g. "edge(cart->payments)"`
	serviceForm = `service(NAME), e.g. "service(payments)"`
)

// isTarget tells whether the text before a ":" names a target (edge(…) or service(…)) rather than a
// phase scope.
func isTarget(text string) bool {
	word := strings.ToLower(strings.TrimSpace(text))
	for _, kw := range []string{"edge", "service"} {
		if rest, ok := strings.CutPrefix(word, kw); ok && strings.HasPrefix(strings.TrimSpace(rest), "(") {
			return true
		}
	}
	return false
}

// ParseTarget parses "edge(CALLER->CALLEE)" (spaces allowed around the names and the arrow) or
// "service(NAME)". Keywords are case-insensitive; names are kept as written.
func ParseTarget(text string) (Target, error) {
	text = strings.TrimSpace(text)
	kw, rest, _ := strings.Cut(text, "(")
	kw = strings.ToLower(strings.TrimSpace(kw))
	form := edgeForm
	if kw == "service" {
		form = serviceForm
	}
	arg, ok := strings.CutSuffix(strings.TrimSpace(rest), ")")
	if !ok || !strings.Contains(text, "(") {
		return Target{}, fmt.Errorf("target %q: want %s", text, form)
	}
	switch kw {
	case "service":
		name := strings.TrimSpace(arg)
		if err := checkName(name); err != nil {
			return Target{}, fmt.Errorf("target %q: %v; want %s", text, err, form)
		}
		return Target{Service: name}, nil
	case "edge":
		caller, callee, ok := strings.Cut(arg, "->")
		if !ok {
			return Target{}, fmt.Errorf("target %q: no \"->\" between the caller and the callee; want %s", text, form)
		}
		caller, callee = strings.TrimSpace(caller), strings.TrimSpace(callee)
		for _, name := range []string{caller, callee} {
			if err := checkName(name); err != nil {
				return Target{}, fmt.Errorf("target %q: %v; want %s", text, err, form)
			}
		}
		return Target{Caller: caller, Callee: callee}, nil
	}
	return Target{}, fmt.Errorf("target %q: want %s or %s", text, edgeForm, serviceForm)
}

// checkName says why a service name written in a target cannot be one.
func checkName(name string) error {
	switch {
	case name == "":
		return fmt.Errorf("empty service name")
	case strings.ContainsAny(name, " \t()<>:,") || strings.Contains(name, "->"):
		return fmt.Errorf("bad service name %q", name)
	}
	return nil
}

// Edge metrics: the calls of one caller → callee pair, as the caller saw them (after its sidecar's
// retries), and what its sidecars did for them.
var edgeMetricNames = []string{"requests", "successes", "errors", "success_rate", "actual_success_rate", "retries",
	"retry_amplification", "overflows", "ejections", "p50", "p90", "p99", "p999", "max", "status(N)", "status(Nxx)"}

var edgeMetrics = map[string]Metric{
	"requests": {Kind: Count}, "successes": {Kind: Count}, "errors": {Kind: Count},
	"success_rate": {Kind: Percent}, "actual_success_rate": {Kind: Percent},
	"retries": {Kind: Count}, "retry_amplification": {Kind: Ratio}, "overflows": {Kind: Count}, "ejections": {Kind: Count},
	"p50": {Kind: Latency}, "p90": {Kind: Latency}, "p99": {Kind: Latency}, "p999": {Kind: Latency}, "max": {Kind: Latency},
}

// Service metrics: the requests a service's instances received, and what their capacity did.
var serviceMetricNames = []string{"requests", "successes", "errors", "success_rate", "amplification", "utilisation",
	"queue_time_mean", "queue_time_max", "rejected", "queue_timeouts"}

const fromCapacity = "from the instances' capacity records"

var serviceMetrics = map[string]Metric{
	"requests": {Kind: Count}, "successes": {Kind: Count}, "errors": {Kind: Count},
	"success_rate": {Kind: Percent}, "amplification": {Kind: Ratio},
	"utilisation":     {Kind: Percent, Scopes: WholeRun, Whole: fromCapacity},
	"queue_time_mean": {Kind: Latency, Scopes: WholeRun, Whole: fromCapacity},
	"queue_time_max":  {Kind: Latency, Scopes: WholeRun, Whole: fromCapacity},
	"rejected":        {Kind: Count, Scopes: WholeRun, Whole: fromCapacity},
	"queue_timeouts":  {Kind: Count, Scopes: WholeRun, Whole: fromCapacity},
}

// MetricNames lists the metrics a target takes, in the order messages show them.
func MetricNames(t Target) []string {
	switch {
	case t.IsEdge():
		return edgeMetricNames
	case t.IsService():
		return serviceMetricNames
	}
	return metricNames
}

// LookupFor resolves a metric name (lower-cased, without spaces) of a target to its canonical name:
// Lookup for the clients, the edge and service metrics for the others.
func LookupFor(t Target, name string) (string, Metric, error) {
	if !t.IsEdge() && !t.IsService() {
		return Lookup(name)
	}
	table := serviceMetrics
	if t.IsEdge() {
		table = edgeMetrics
	}
	if m, ok := table[name]; ok {
		return name, m, nil
	}
	if _, _, ok, err := Status(name); ok && t.IsEdge() {
		return name, Metric{Kind: Count}, err
	}
	return "", Metric{}, fmt.Errorf("%s is not a metric of %s; %s takes: %s", name, t.what(), t, strings.Join(MetricNames(t), ", "))
}
