package reports_test

import (
	"math"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/meshproof/meshproof/reports/checks"
)

// FuzzParseCheck fuzzes the check expression parser, seeded with every check of the example scenarios
// and the checks of the package's specs' tables. Properties:
//   - no panic; an error is a message naming the check ("check …: …" or "empty check …");
//   - a parsed check has a known operator and a finite, non-negative value;
//   - a parsed check round-trips: printed from its parts (Check.String without Expr), it parses back to
//     the same scope, metric, operator and unit, and the same value (latencies to the nanosecond the
//     printing rounds to).
func FuzzParseCheck(f *testing.F) {
	for _, s := range []string{
		"success_rate >= 99.9%", "p99 < 50ms", "retry_amplification <= 1.5", "status(503) == 0", "status(5xx) < 10",
		"achieved_rate >= 95/s", "during faults[0]: p99 < 50ms", "before fault: success_rate == 100%",
		"during phase steady: p99 < 20ms", "recovery_time < 5s", "time_to_first_ejection < 2s", "attempts_max <= 4",
		"overflows == 0", "during fault: ejected(checkout/2) within 2s", "ejected(10.0.0.1:80)", "p99 < 1.5µs",
		"", ":", "p99 <", "p99 < -1ms", "error_rate > 101%", "upstream_requests < 3", "after faults[01]: p99 < 1s",
		// A finding, fixed: a latency in minutes overflowed to +Inf (1e308 × 60e9 ns), and the check
		// "p99 < +Inf" passed whatever p99 was, printed as "+Infm"; it is now refused.
		"p99 < 1e308m",
		// Edges and services of the call graph.
		"edge(cart->payments): retry_amplification <= 1.5", "service(payments): amplification <= 3",
		"during fault: service(frontend): success_rate >= 99%", "after faults[0]: edge(frontend->cart): p99 < 100ms",
		"EDGE( a -> b ) : P99 < 1s", "edge(a-b): p99 < 1s", "edge(a->b): during fault: p99 < 1s", "service(p): utilisation <= 80%",
		"during fault: service(p): utilisation <= 80%", "edge(a->b requests == 1", "service(a=b): requests == 1",
	} {
		f.Add(s)
	}
	// The checks of the example scenarios (one per "- " line under checks:).
	item := regexp.MustCompile(`(?m)^\s+- "?([^"\n]+)"?\s*$`)
	for _, dir := range []string{"../scenarios/examples"} {
		entries, err := os.ReadDir(dir)
		if err != nil {
			f.Fatal(err)
		}
		for _, e := range entries {
			if e.IsDir() || !strings.HasSuffix(e.Name(), ".yaml") { // examples/gotest is a Go package
				continue
			}
			b, err := os.ReadFile(dir + "/" + e.Name())
			if err != nil {
				f.Fatal(err)
			}
			for _, m := range item.FindAllStringSubmatch(string(b), -1) {
				f.Add(m[1])
			}
		}
	}
	f.Fuzz(func(t *testing.T, expr string) {
		c, err := checks.Parse(expr)
		if err != nil {
			return
		}
		if math.IsNaN(c.Value) || math.IsInf(c.Value, 0) || c.Value < 0 {
			t.Fatalf("ParseCheck(%q) = value %v: want a finite value ≥ 0", expr, c.Value)
		}
		switch c.Op {
		case "<", "<=", ">", ">=", "==", "!=":
		case "within", "":
			if c.Metric[:min(len(c.Metric), 8)] != "ejected(" {
				t.Fatalf("ParseCheck(%q): operator %q for metric %q", expr, c.Op, c.Metric)
			}
		default:
			t.Fatalf("ParseCheck(%q): operator %q", expr, c.Op)
		}
		printed := c
		printed.Expr = ""
		text := printed.String()
		back, err := checks.Parse(text)
		if err != nil {
			t.Fatalf("ParseCheck(%q) = %+v, printed %q, which does not parse: %v", expr, c, text, err)
		}
		if back.Scope != c.Scope || back.Target != c.Target || back.Metric != c.Metric || back.Op != c.Op || back.Unit != c.Unit ||
			!sameValue(back.Value, c.Value, c.Unit) {
			t.Fatalf("ParseCheck(%q) = %+v, printed %q, parses back to %+v", expr, c, text, back)
		}
	})
}

// sameValue compares a value with its printed and re-parsed form: latencies are printed rounded to the
// nanosecond.
func sameValue(a, b float64, unit string) bool {
	switch unit {
	case "ns", "us", "µs", "μs", "ms", "s", "m":
		return math.Abs(a-b) <= 1e-9*(1+1e-9*math.Abs(b)) || strconv.FormatFloat(a, 'g', 12, 64) == strconv.FormatFloat(b, 'g', 12, 64)
	}
	return a == b
}
