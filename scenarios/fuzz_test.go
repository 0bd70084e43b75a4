package scenarios_test

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// FuzzParse fuzzes scenario loading and validation (scenarios.Parse), seeded with the example scenarios,
// the scenarios of cmd/meshproof's specs and hostile inputs of past defects. Properties:
//   - no panic;
//   - Parse is deterministic: the same bytes give the same scenario (its checks, warnings and load) or
//     the same errors;
//   - every error is a *config.Error (several are joined) naming the file, at a line within the input
//     (1 … its number of lines), and so is every warning of a scenario accepted.
//
// (The checks' round trip is FuzzParseCheck's, in reports.)
// slow bounds one parse of a fuzz input (a few KB): a YAML parser quadratic in some construct once took
// seconds on 80 KB (issue #18 defect 4).
const slow = 2 * time.Second

func FuzzParse(f *testing.F) {
	for _, glob := range []string{"examples/*.yaml", "../cmd/meshproof/testdata/*.yaml"} {
		files, err := filepath.Glob(glob)
		if err != nil || len(files) == 0 {
			f.Fatalf("no seeds in %s (%v)", glob, err)
		}
		for _, name := range files {
			b, err := os.ReadFile(name)
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	for _, s := range []string{
		"checks:\n  ! 0\n",                                           // panicked the YAML decoder (issue #18 defect 2)
		"name: x\nservices: 3\n",                                     // a type error, positioned
		"x: &a [1]\nchecks: [*a, *a]\n",                              // aliases
		"checks: [[[[[[[[[[[[[[[[[[[[[[[[[[\n",                       // nesting
		"name: a\n---\nname: b\n",                                    // two documents
		"services:\n  s:\n    response:\n      size: 100000000000\n", // unbounded size (defect 3)
		"\t\x00\xff",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		const file = "fuzz.yaml"
		start := time.Now()
		sc, err := scenarios.Parse(data, file)
		if d := time.Since(start); d > slow {
			t.Fatalf("parsing %d bytes took %s (more than %s): %q", len(data), d, slow, data)
		}
		sc2, err2 := scenarios.Parse(data, file)
		lines := bytes.Count(data, []byte("\n")) + 1
		if err != nil {
			if err2 == nil || err.Error() != err2.Error() {
				t.Fatalf("Parse is not deterministic on %q:\n%v\n---\n%v", data, err, err2)
			}
			checkErrors(t, data, err, file, lines)
			return
		}
		if err2 != nil {
			t.Fatalf("Parse is not deterministic on %q: accepted, then %v", data, err2)
		}
		if a, b := describe(sc), describe(sc2); a != b {
			t.Fatalf("Parse is not deterministic on %q:\n%s\n---\n%s", data, a, b)
		}
		for name, p := range sc.Proxies {
			q := sc2.Proxies[name]
			if !proto.Equal(p.RouteAction, q.RouteAction) || !proto.Equal(p.ClusterSpec, q.ClusterSpec) || !proto.Equal(p.VHostSpec, q.VHostSpec) {
				t.Fatalf("Parse is not deterministic on %q: proxy %s decodes differently", data, name)
			}
		}
		for _, w := range sc.Warnings {
			checkErrors(t, data, w, file, lines)
		}
	})
}

// checkErrors checks that err is made of *config.Error values at lines of the input.
func checkErrors(t *testing.T, data []byte, err error, file string, lines int) {
	t.Helper()
	var leaves []error
	var walk func(error)
	walk = func(e error) {
		if j, ok := e.(interface{ Unwrap() []error }); ok {
			for _, inner := range j.Unwrap() {
				walk(inner)
			}
			return
		}
		leaves = append(leaves, e)
	}
	walk(err)
	for _, e := range leaves {
		var ce *config.Error
		switch {
		case !errors.As(e, &ce):
			t.Fatalf("error %q (%T) on %q is not a *config.Error", e, e, data)
		case ce.File != file:
			t.Fatalf("error %q on %q names file %q, want %q", e, data, ce.File, file)
		case ce.Line < 1 || ce.Line > lines:
			t.Fatalf("error %q on %q is at line %d, not within 1..%d", e, data, ce.Line, lines)
		}
	}
}

// describe prints what Parse made of a scenario, for comparison.
func describe(sc *scenarios.Scenario) string {
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %q seed %d services %d proxies %d faults %d\n", sc.Name, sc.Description, sc.Seed, len(sc.Services), len(sc.Proxies), len(sc.Faults))
	for _, name := range slices.Sorted(maps.Keys(sc.Services)) {
		fmt.Fprintf(&b, "service %s %+v\n", name, *sc.Services[name])
	}
	for _, name := range slices.Sorted(maps.Keys(sc.Proxies)) {
		fmt.Fprintf(&b, "proxy %s %s\n", name, sc.Proxies[name].Services())
	}
	if l := sc.Load; l != nil {
		fmt.Fprintf(&b, "load %s %v %v %s %s %q %s %q\n", l.Target, l.Rate, l.Duration, l.Path, l.Method, l.Body, l.Timeout, sortedMap(l.Headers))
		for _, p := range l.Phases {
			fmt.Fprintf(&b, "phase %s %v %v", p.Name, p.Duration, p.Rate)
			if p.Ramp != nil {
				fmt.Fprintf(&b, " ramp %+v", *p.Ramp)
			}
			if p.Burst != nil {
				fmt.Fprintf(&b, " burst %+v", *p.Burst)
			}
			b.WriteString("\n")
		}
	}
	for _, f := range sc.Faults {
		fmt.Fprintf(&b, "fault %s %v %v %s tcp %v\n", f.Service, f.Instances, f.Share, f.Container, f.TCP != nil)
	}
	for _, c := range sc.Checks {
		fmt.Fprintf(&b, "check %+v %d:%d\n", c.Check, c.Line, c.Column)
	}
	for _, w := range sc.Warnings {
		fmt.Fprintf(&b, "warning %v\n", w)
	}
	return b.String()
}

func sortedMap(m map[string]string) []string {
	var out []string
	for _, k := range slices.Sorted(maps.Keys(m)) {
		out = append(out, k+"="+m[k])
	}
	return out
}
