package scenarios

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/checks"
)

// Error is a problem in a scenario file, pointing at the line and field ("faults[0].abort.percent"). It is
// the proxy config decoder's error type, so that Envoy fields and scenario fields read alike.
type Error = config.Error

// nodeError is an *Error at a node (the file is filled in by Load).
func nodeError(n ast.Node, format string, args ...any) *Error {
	e := &Error{Path: fieldPath(n.GetPath()), Msg: fmt.Sprintf(format, args...)}
	if t := n.GetToken(); t != nil && t.Position != nil {
		e.Line, e.Column = t.Position.Line, t.Position.Column
	}
	return e
}

// fieldPath turns a YAML path ("$.faults[0].abort") into the field form used in messages.
func fieldPath(p string) string {
	return strings.TrimPrefix(strings.TrimPrefix(p, "$"), ".")
}

// scalar returns a scalar node's text, or an error naming what was expected.
func scalar(n ast.Node, want string) (string, error) {
	switch v := n.(type) {
	case *ast.StringNode:
		return v.Value, nil
	case *ast.IntegerNode, *ast.FloatNode:
		return v.GetToken().Value, nil
	case ast.ScalarNode:
		if _, isNull := v.(*ast.NullNode); !isNull {
			return v.GetToken().Value, nil
		}
	}
	return "", nodeError(n, "expected %s", want)
}

// Duration is a time span written as Go or Envoy durations: "250ms", "1.5s", "2m", "0.25s".
type Duration struct{ time.Duration }

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (d *Duration) UnmarshalYAML(n ast.Node) error {
	const want = `a duration such as "250ms", "1.5s" or "2m"`
	s, err := scalar(n, want)
	if err != nil {
		return err
	}
	v, perr := time.ParseDuration(strings.TrimSpace(s))
	if perr != nil {
		if s == "0" {
			v = 0
		} else {
			return nodeError(n, "%q is not %s", s, want)
		}
	}
	if v < 0 {
		return nodeError(n, "%q is negative; expected %s", s, want)
	}
	d.Duration = v
	return nil
}

// Rate is a request rate: "200/s", "6000/m" or a plain number of requests per second.
type Rate struct{ PerSecond float64 }

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (r *Rate) UnmarshalYAML(n ast.Node) error {
	const want = `a rate such as "200/s", "6000/m" or 200 (per second), greater than 0`
	s, err := scalar(n, want)
	if err != nil {
		return err
	}
	num, unit, _ := strings.Cut(strings.TrimSpace(s), "/")
	v, perr := strconv.ParseFloat(strings.TrimSpace(num), 64)
	div := map[string]float64{"": 1, "s": 1, "m": 60, "h": 3600}[strings.TrimSpace(unit)]
	if perr != nil || div == 0 || v <= 0 {
		return nodeError(n, "%q is not %s", s, want)
	}
	r.PerSecond = v / div
	return nil
}

// Percent is a share in [0, 100], written as 25, 25.5 or "25%". Set tells an explicit 0 from absent.
type Percent struct {
	Value float64
	Set   bool
}

// UnmarshalYAML implements yaml.NodeUnmarshaler.
func (p *Percent) UnmarshalYAML(n ast.Node) error {
	const want = `a percentage from 0 to 100, such as 25 or "2.5%"`
	s, err := scalar(n, want)
	if err != nil {
		return err
	}
	v, perr := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(s), "%"), 64)
	if perr != nil || v < 0 || v > 100 {
		return nodeError(n, "%q is not %s", s, want)
	}
	p.Value, p.Set = v, true
	return nil
}

// Or returns the value, or def when it was not set.
func (p Percent) Or(def float64) float64 {
	if p.Set {
		return p.Value
	}
	return def
}

// UnmarshalYAML implements yaml.NodeUnmarshaler: a check is one string in the checks syntax.
func (c *Check) UnmarshalYAML(n ast.Node) error {
	const want = `a check such as "success_rate >= 99.9%", "p99 < 50ms" or "during fault: p99 < 100ms"`
	var s string
	if m, ok := n.(*ast.MappingNode); ok && len(m.Values) == 1 {
		// A scoped check written unquoted, "- during fault: p99 < 50ms", is a one-key mapping in YAML.
		scope, err1 := scalar(m.Values[0].Key, want)
		expr, err2 := scalar(m.Values[0].Value, want)
		if err1 != nil || err2 != nil {
			return nodeError(n, "expected %s", want)
		}
		s = scope + ": " + expr
	} else {
		var err error
		if s, err = scalar(n, want); err != nil {
			return err
		}
	}
	parsed, perr := checks.Parse(s)
	if perr != nil {
		c.parseErr = nodeError(n, "%v", perr)
		return nil
	}
	c.Check = parsed
	if t := n.GetToken(); t != nil && t.Position != nil {
		c.Line, c.Column = t.Position.Line, t.Position.Column
	}
	return nil
}
