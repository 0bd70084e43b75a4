package faults

import (
	"errors"
	"regexp"
	"strings"

	"github.com/meshproof/meshproof/faults/field"
)

// Match selects the requests a rule applies to. Every condition set must hold; an unset (or nil)
// Match selects every request. Paths are compared without the query string.
type Match struct {
	Path       string            `yaml:"path"`        // exact path
	PathPrefix string            `yaml:"path_prefix"` // path prefix
	PathRegex  string            `yaml:"path_regex"`  // RE2, must match the whole path
	Method     string            `yaml:"method"`      // exact, e.g. "POST"
	Headers    map[string]string `yaml:"headers"`     // name (any case) → exact value, among the header's values

	re *regexp.Regexp // PathRegex compiled once by NewUpstream; nil = compile on use
}

// Matches reports whether req is selected. A nil Match selects every request.
func (m *Match) Matches(req Request) bool {
	if m == nil {
		return true
	}
	switch {
	case m.Path != "" && req.Path != m.Path,
		m.PathPrefix != "" && !strings.HasPrefix(req.Path, m.PathPrefix),
		m.Method != "" && req.Method != m.Method:
		return false
	}
	if m.PathRegex != "" {
		re := m.re
		if re == nil {
			var err error
			if re, err = compilePath(m.PathRegex); err != nil {
				return false
			}
		}
		if !re.MatchString(req.Path) {
			return false
		}
	}
	for name, want := range m.Headers {
		found := false
		for _, v := range req.Header.Values(name) {
			if v == want {
				found = true
				break
			}
		}
		if !found {
			return false
		}
	}
	return true
}

func compilePath(expr string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:` + expr + `)$`)
}

func (m *Match) validate() error {
	if m == nil {
		return nil
	}
	var errs []error
	if m.PathRegex != "" {
		if _, err := compilePath(m.PathRegex); err != nil {
			errs = append(errs, field.Errorf("path_regex", "%q does not compile: %w", m.PathRegex, err))
		}
	}
	for name := range m.Headers {
		if name == "" || strings.ContainsAny(name, " :\r\n") {
			errs = append(errs, field.Errorf("headers", "%q is not a header name", name))
		}
	}
	if m.Method != "" && m.Method != strings.ToUpper(m.Method) {
		errs = append(errs, field.Errorf("method", "%q is not upper case, want e.g. %q", m.Method, strings.ToUpper(m.Method)))
	}
	return errors.Join(errs...)
}

// compiled returns a copy of m with PathRegex compiled (m is valid).
func (m *Match) compiled() *Match {
	if m == nil {
		return nil
	}
	c := *m
	c.Headers = make(map[string]string, len(m.Headers))
	for k, v := range m.Headers {
		c.Headers[k] = v
	}
	if c.PathRegex != "" {
		c.re, _ = compilePath(c.PathRegex)
	}
	return &c
}
