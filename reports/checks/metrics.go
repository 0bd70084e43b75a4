package checks

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
)

// Kind is what a metric measures; it decides the units its value takes.
type Kind struct {
	what    string             // "a latency"
	units   map[string]float64 // unit as written → scale to the normalized value
	accept  string             // the accepted units, for messages
	example string             // an example check, %s = the metric
}

// The kinds of metric, by the value a check gives them.
var (
	Count   = &Kind{what: "a count", units: map[string]float64{"": 1}, accept: "a plain number without unit", example: "%s <= 100"}
	Ratio   = &Kind{what: "a ratio", units: map[string]float64{"": 1}, accept: "a plain number without unit", example: "%s <= 1.5"}
	Percent = &Kind{what: "a percentage", units: map[string]float64{"%": 1}, accept: "%", example: "%s >= 99.9%%"}
	Rate    = &Kind{what: "a rate", units: map[string]float64{"/s": 1}, accept: "/s", example: "%s >= 95/s"}
	// Latency units scale to nanoseconds here; the normalized value is in seconds.
	Latency = &Kind{what: "a latency", accept: "ns, us, µs, ms, s, m", example: "%s < 50ms",
		units: map[string]float64{"ns": 1, "us": 1e3, "µs": 1e3, "μs": 1e3, "ms": 1e6, "s": 1e9, "m": 60e9}}
)

// ScopeRule is which scopes a metric may be judged in.
type ScopeRule int

const (
	AnyScope   ScopeRule = iota // the whole run or any phase
	WholeRun                    // the whole run only
	FaultStart                  // measured from a fault's start: no scope, "during fault" or "during faults[N]"
	FaultEnd                    // measured from a fault's end: no scope, "after fault" or "after faults[N]"
)

// Metric is what a check knows of a metric before a run: its kind and the scopes it takes.
type Metric struct {
	Kind   *Kind
	Scopes ScopeRule
	// Whole says where a WholeRun metric comes from, for the message refusing a scope.
	Whole string
}

// metricNames lists the clients' metrics in the order messages show them.
var metricNames = []string{"requests", "successes", "errors", "success_rate", "error_rate", "achieved_rate",
	"p50", "p90", "p99", "p999", "max", "uncorrected_p50", "uncorrected_p90", "uncorrected_p99", "uncorrected_p999",
	"uncorrected_max", "retries", "ejections", "upstream_attempts", "retry_amplification", "upstream_received",
	"delivered_amplification", "status(N)", "status(Nxx)", "grpc_status(CODE)",
	"attempts_max", "overflows", "pending_overflows", "retry_overflows", "time_to_first_ejection", "recovery_time",
	"ejected(HOST) [within DURATION]", "changes_applied", "changes_rejected", "changes_unexpected", "change_apply_time",
	"ssl_handshakes", "ssl_handshake_errors", "cert_rotations"}

var metrics = func() map[string]Metric {
	m := map[string]Metric{
		"requests":      {Kind: Count},
		"successes":     {Kind: Count},
		"errors":        {Kind: Count},
		"retries":       {Kind: Count},
		"ejections":     {Kind: Count},
		"success_rate":  {Kind: Percent},
		"error_rate":    {Kind: Percent},
		"achieved_rate": {Kind: Rate},

		// Upstream attempts the proxy made, in every scope; requests the instances received, whole run.
		"upstream_attempts":       {Kind: Count},
		"retry_amplification":     {Kind: Ratio},
		"upstream_received":       {Kind: Count, Scopes: WholeRun, Whole: "from the instances' request counts"},
		"delivered_amplification": {Kind: Ratio, Scopes: WholeRun, Whole: "from the instances' request counts"},

		"attempts_max":           {Kind: Count},
		"overflows":              {Kind: Count, Scopes: WholeRun, Whole: "from the proxy's stats"},
		"pending_overflows":      {Kind: Count, Scopes: WholeRun, Whole: "from the proxy's stats"},
		"retry_overflows":        {Kind: Count, Scopes: WholeRun, Whole: "from the proxy's stats"},
		"time_to_first_ejection": {Kind: Latency, Scopes: FaultStart},
		"recovery_time":          {Kind: Latency, Scopes: FaultEnd},

		// The scenario's configuration changes (record.Change): how many the proxy applied (ACKed),
		// rejected (NACKed), or answered otherwise than the scenario expected, and the longest time it
		// took to answer one. Unscoped: every change; "during changes[N]": that change; "during change":
		// every change; any other scope: the changes pushed (Start) within it.
		"changes_applied":    {Kind: Count},
		"changes_rejected":   {Kind: Count},
		"changes_unexpected": {Kind: Count},
		"change_apply_time":  {Kind: Latency},

		// A mutual-TLS mesh (mesh.mtls): the proxies' completed TLS handshakes to the instances, the
		// failed ones (the proxies' and the instances'), and the certificate rotations.
		"ssl_handshakes":       {Kind: Count, Scopes: WholeRun, Whole: "from the proxies' ssl.* stats"},
		"ssl_handshake_errors": {Kind: Count, Scopes: WholeRun, Whole: "from the proxies' ssl.* stats and the instances' counts"},
		"cert_rotations":       {Kind: Count, Scopes: WholeRun, Whole: "from the run's certificate authority"},
	}
	for _, name := range []string{"p50", "p90", "p99", "p999", "max"} {
		m[name] = Metric{Kind: Latency}
		m["uncorrected_"+name] = Metric{Kind: Latency}
	}
	return m
}()

// Lookup resolves a metric name (lower-cased, without spaces) to its canonical name.
func Lookup(name string) (string, Metric, error) {
	if m, ok := metrics[name]; ok {
		return name, m, nil
	}
	if name == "upstream_requests" {
		return "", Metric{}, errors.New(`upstream_requests is retired: it meant the requests the instances received over the whole ` +
			`run but the proxy's attempts within a scope; write upstream_attempts (upstream attempts the proxy made, any scope) ` +
			`or upstream_received (requests the instances received, whole run)`)
	}
	if _, _, ok, err := Status(name); ok {
		return name, Metric{Kind: Count}, err
	}
	if code, ok, err := GRPCStatus(name); ok {
		if err != nil {
			return "", Metric{}, err
		}
		return "grpc_status(" + GRPCCodeNames[code] + ")", Metric{Kind: Count}, nil
	}
	return "", Metric{}, fmt.Errorf("unknown metric %q; accepted: %s", name, strings.Join(metricNames, ", "))
}

// Status parses a status metric, "status(503)" or "status(5xx)": the range of codes [lo, hi) it counts.
// ok is false when name is not a status metric; err says why a status metric is malformed.
func Status(name string) (lo, hi int, ok bool, err error) {
	arg, isStatus := strings.CutPrefix(name, "status(")
	arg, closed := strings.CutSuffix(arg, ")")
	if !isStatus || !closed {
		return 0, 0, false, nil
	}
	if len(arg) == 3 && arg[0] >= '1' && arg[0] <= '5' && arg[1:] == "xx" {
		lo = int(arg[0]-'0') * 100
		return lo, lo + 100, true, nil
	}
	if code, err := strconv.Atoi(arg); err == nil && len(arg) == 3 && code >= 100 && code <= 599 {
		return code, code + 1, true, nil
	}
	return 0, 0, true, fmt.Errorf("bad status %q in %s: want a code 100..599 such as status(503) or a class 1xx..5xx such as status(5xx)", arg, name)
}

// Fits says why a metric cannot be judged in a scope (nil when it can).
func Fits(name string, m Metric, sc Scope) error {
	switch rule := m.Scopes; {
	case rule == WholeRun:
		return fmt.Errorf("%s is counted over the whole run only (%s); write the check without %q", name, m.Whole, sc.String()+":")
	case (rule == FaultStart || rule == FaultEnd) && sc.Changes:
		which := map[ScopeRule]string{FaultStart: "start", FaultEnd: "end"}[rule]
		scopes := map[ScopeRule]string{FaultStart: `"during fault" or "during faults[N]"`, FaultEnd: `"after fault" or "after faults[N]"`}[rule]
		return fmt.Errorf(`%s is measured from a fault's %s, and %q is a configuration change's window, not a fault's: scope it %s, or leave the scope out`,
			name, which, sc.String(), scopes)
	case rule == FaultStart && (sc.Phase != "" || sc.Relation != During):
		return fmt.Errorf(`%s is measured from a fault's start: scope it "during fault" or "during faults[N]", or leave the scope out, not %q`, name, sc.String())
	case rule == FaultEnd && (sc.Phase != "" || sc.Relation != After):
		return fmt.Errorf(`%s is measured from a fault's end: scope it "after fault" or "after faults[N]", or leave the scope out, not %q`, name, sc.String())
	}
	return nil
}

// GRPCCodeNames are gRPC's status codes (grpc/grpc doc/statuscodes.md), indexed by number.
var GRPCCodeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// GRPCStatus parses a gRPC status metric, "grpc_status(14)" or "grpc_status(unavailable)" (a code by
// number 0..16 or by name, in any case): the gRPC calls that ended with that code. ok is false when
// name is not a gRPC status metric; err says why one is malformed.
func GRPCStatus(name string) (code int, ok bool, err error) {
	arg, isStatus := strings.CutPrefix(name, "grpc_status(")
	arg, closed := strings.CutSuffix(arg, ")")
	if !isStatus || !closed {
		return 0, false, nil
	}
	if n, err := strconv.Atoi(arg); err == nil && n >= 0 && n < len(GRPCCodeNames) {
		return n, true, nil
	}
	for i, c := range GRPCCodeNames {
		if strings.EqualFold(arg, c) {
			return i, true, nil
		}
	}
	return 0, true, fmt.Errorf("bad gRPC status %q in %s: want a code 0..16 or its name, such as grpc_status(14) or grpc_status(UNAVAILABLE) (%s)",
		arg, name, strings.Join(GRPCCodeNames[:], ", "))
}
