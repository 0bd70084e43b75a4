package scenarios

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"github.com/goccy/go-yaml/token"

	"github.com/meshproof/meshproof/proxy/config"
)

// Setting is one override of a scenario file's field (`meshproof sweep --set PATH=VALUE`): Path is the
// field's path as written in the file ("proxies.edge.route.retry_policy.num_retries", list items as
// "faults[1].abort.percent"), Value a YAML value ("2", "250ms", "[0, 1]").
type Setting struct {
	Path, Value string
}

func (s Setting) String() string { return s.Path + "=" + s.Value }

// ParseSetFlag splits a --set argument, "PATH=v1,v2,…", into the path and its values. Values are split
// at the commas outside quotes and brackets, so that "5xx,reset" (quoted) and [0,1] are one value each.
func ParseSetFlag(arg string) (path string, values []string, err error) {
	path, list, ok := strings.Cut(arg, "=")
	path = strings.TrimSpace(path)
	if !ok || path == "" {
		return "", nil, fmt.Errorf("--set %q: want PATH=v1,v2,… such as proxies.edge.route.retry_policy.num_retries=0,1,2", arg)
	}
	if _, err := splitPath(path); err != nil {
		return "", nil, fmt.Errorf("--set %s: %w", arg, err)
	}
	var (
		depth int
		quote rune
		cur   strings.Builder
	)
	flush := func() error {
		v := strings.TrimSpace(cur.String())
		cur.Reset()
		if v == "" {
			return fmt.Errorf("--set %s: an empty value; want YAML values separated by commas, such as 0,1,2 or 250ms,1s", arg)
		}
		values = append(values, v)
		return nil
	}
	for _, r := range list {
		switch {
		case quote != 0:
			if r == quote {
				quote = 0
			}
		case r == '"' || r == '\'':
			quote = r
		case r == '[' || r == '{':
			depth++
		case r == ']' || r == '}':
			depth--
		case r == ',' && depth == 0:
			if err := flush(); err != nil {
				return "", nil, err
			}
			continue
		}
		cur.WriteRune(r)
	}
	if quote != 0 || depth != 0 {
		return "", nil, fmt.Errorf("--set %s: an unclosed quote or bracket in the values", arg)
	}
	if err := flush(); err != nil {
		return "", nil, err
	}
	return path, values, nil
}

// pathSeg is one segment of a setting's path: a mapping key and the list indexes after it ("faults[1]").
type pathSeg struct {
	key     string
	indexes []int
}

// splitPath parses a setting's path.
func splitPath(path string) ([]pathSeg, error) {
	var segs []pathSeg
	for _, part := range strings.Split(path, ".") {
		key, rest, _ := strings.Cut(part, "[")
		seg := pathSeg{key: key}
		if key == "" {
			return nil, fmt.Errorf("path %q has an empty segment; want keys separated by dots, list items as key[N]", path)
		}
		for rest != "" {
			num, after, ok := strings.Cut(rest, "]")
			n, err := strconv.Atoi(num)
			if !ok || err != nil || n < 0 {
				return nil, fmt.Errorf("path %q: %q is not a list index; want key[N] with N a whole number from 0", path, part)
			}
			seg.indexes = append(seg.indexes, n)
			if after != "" && !strings.HasPrefix(after, "[") {
				return nil, fmt.Errorf("path %q: %q is not a list index; want key[N] with N a whole number from 0", path, part)
			}
			rest = strings.TrimPrefix(after, "[")
		}
		segs = append(segs, seg)
	}
	return segs, nil
}

// ParseWith parses a scenario as Parse does, after putting each setting's value at its path in the
// file's YAML tree: the scenario is then decoded and validated as written that way, so a bad value gets
// the loader's own error, at the line of the field it replaced, prefixed with the setting. A path must
// lead through fields present in the file; only its last key may be absent, and is then added to the
// mapping that holds it (a field the scenario leaves at its default).
func ParseWith(data []byte, file string, settings []Setting) (*Scenario, error) {
	f, err := config.ParseYAML(data, file)
	if err != nil {
		return nil, err
	}
	if len(settings) > 0 && (len(f.Docs) != 1 || f.Docs[0].Body == nil) {
		return decode(f, file) // the document's own error
	}
	for _, s := range settings {
		if err := apply(f.Docs[0].Body, file, s); err != nil {
			return nil, fmt.Errorf("--set %s: %w", s, err)
		}
	}
	sc, err := decode(f, file)
	if err != nil {
		return nil, attribute(err, settings)
	}
	return sc, nil
}

// attribute prefixes each of the loader's errors with the setting at (or above) its field path; an
// error elsewhere (a cross-field rule) with every setting.
func attribute(err error, settings []Setting) error {
	if len(settings) == 0 {
		return err
	}
	errs := []error{err}
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		errs = joined.Unwrap()
	}
	out := make([]error, len(errs))
	for i, e := range errs {
		var names []string
		var se *Error
		if errors.As(e, &se) {
			for _, s := range settings {
				if se.Path == s.Path || strings.HasPrefix(se.Path, s.Path+".") || strings.HasPrefix(se.Path, s.Path+"[") ||
					strings.HasPrefix(s.Path, se.Path+".") {
					names = append(names, "--set "+s.String())
				}
			}
		}
		if len(names) == 0 {
			for _, s := range settings {
				names = append(names, "--set "+s.String())
			}
		}
		out[i] = fmt.Errorf("%s: %w", strings.Join(names, " "), e)
	}
	if len(out) == 1 {
		return out[0]
	}
	return errors.Join(out...)
}

// CheckPath reports whether a setting's path leads through fields present in the file (its last key
// may be absent): the error ParseWith would return for any value at the path, without the setting.
func CheckPath(data []byte, file, path string) error {
	f, err := config.ParseYAML(data, file)
	if err != nil {
		return err
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		_, err := decode(f, file)
		return err
	}
	_, err = walk(f.Docs[0].Body, file, path)
	return err
}

// apply puts s.Value at s.Path in the tree under root.
func apply(root ast.Node, file string, s Setting) error {
	put, err := walk(root, file, s.Path)
	if err != nil {
		return err
	}
	value, err := valueNode(s.Value)
	if err != nil {
		return err
	}
	put(value)
	return nil
}

// walk follows path in the tree under root and returns the function that puts a value there.
func walk(root ast.Node, file, path string) (func(ast.Node), error) {
	segs, err := splitPath(path)
	if err != nil {
		return nil, err
	}
	cur, at := root, ""  // the node reached, and its field path
	var key *token.Token // the key cur is the value of: where messages about cur point
	for i, seg := range segs {
		m, ok := mappingOf(cur)
		if !ok {
			return nil, pathError(file, cur, key, at, fmt.Sprintf("is %s, not a mapping: it has no field %q", kindOf(cur), seg.key))
		}
		mv := entryOf(m, seg.key)
		last := i == len(segs)-1
		if mv == nil {
			if last && len(seg.indexes) == 0 {
				// A field left at its default: added, positioned at its mapping.
				field := joinPath(at, seg.key)
				return func(value ast.Node) {
					pos := *m.GetToken().Position
					k := ast.String(token.New(seg.key, seg.key, &pos))
					k.SetPath(yamlPath(field))
					place(value, m.GetToken(), field)
					entry := ast.MappingValue(token.New(":", ":", &pos), k, value)
					entry.SetPath(k.GetPath())
					m.Values = append(m.Values, entry)
				}, nil
			}
			return nil, pathError(file, cur, key, at, fmt.Sprintf("has no field %q (the first segment of the path missing from the file); fields here: %s",
				seg.key, strings.Join(keysOf(m), ", ")))
		}
		at = joinPath(at, seg.key)
		if last && len(seg.indexes) == 0 {
			field := at
			return func(value ast.Node) {
				place(value, mv.Value.GetToken(), field)
				if a, ok := mv.Value.(*ast.AnchorNode); ok {
					a.Value = value // the anchor stays: its aliases take the new value too
					return
				}
				mv.Value = value
			}, nil
		}
		cur, key = mv.Value, mv.Key.GetToken()
		for j, idx := range seg.indexes {
			sq, ok := unanchor(cur).(*ast.SequenceNode)
			if !ok {
				return nil, pathError(file, cur, key, at, fmt.Sprintf("is %s, not a list: it has no item [%d]", kindOf(cur), idx))
			}
			if idx >= len(sq.Values) {
				return nil, pathError(file, cur, key, at, fmt.Sprintf("has %d items (indexes 0 to %d): it has no item [%d]", len(sq.Values), len(sq.Values)-1, idx))
			}
			at = fmt.Sprintf("%s[%d]", at, idx)
			if last && j == len(seg.indexes)-1 {
				field := at
				return func(value ast.Node) {
					place(value, sq.Values[idx].GetToken(), field)
					if a, ok := sq.Values[idx].(*ast.AnchorNode); ok {
						a.Value = value // the anchor stays: its aliases take the new value too
						return
					}
					sq.Values[idx] = value
				}, nil
			}
			cur, key = sq.Values[idx], nil
		}
	}
	return nil, fmt.Errorf("path %q is empty", path)
}

// pathError is an error about the node n at field path at ("" is the scenario itself), pointing at the
// key it is the value of, or a block mapping's first key.
func pathError(file string, n ast.Node, key *token.Token, at, msg string) error {
	e := &Error{File: file, Path: at, Msg: msg}
	if at == "" {
		e.Msg = "the scenario " + msg
	}
	t := key
	if m, ok := n.(*ast.MappingNode); t == nil && ok && !m.IsFlowStyle && len(m.Values) > 0 {
		t = m.Values[0].Key.GetToken()
	}
	if t == nil {
		t = n.GetToken()
	}
	if t != nil && t.Position != nil {
		e.Line, e.Column = t.Position.Line, t.Position.Column
	}
	return e
}

// valueNode parses a setting's value as a YAML document of its own.
func valueNode(v string) (ast.Node, error) {
	f, err := config.ParseYAML([]byte(v), "")
	if err != nil {
		return nil, fmt.Errorf("the value %q is not YAML: %w", v, err)
	}
	if len(f.Docs) != 1 || f.Docs[0].Body == nil {
		return nil, fmt.Errorf("the value %q is not one YAML value", v)
	}
	return f.Docs[0].Body, nil
}

// place gives a value node (and everything in it) the position of the node it replaces, so that the
// loader's errors point at the field's line, and the field paths of where it now is.
func place(n ast.Node, at *token.Token, path string) {
	var pos token.Position
	if at != nil && at.Position != nil {
		pos = *at.Position
	}
	ast.Walk(visitorFunc(func(c ast.Node) bool {
		if t := c.GetToken(); t != nil {
			p := pos
			t.Position = &p
		}
		return true
	}), n)
	setPaths(n, yamlPath(path))
}

// setPaths sets the YAML path of n and of the nodes in it, as the parser would have.
func setPaths(n ast.Node, path string) {
	n.SetPath(path)
	switch v := n.(type) {
	case *ast.MappingNode:
		for _, mv := range v.Values {
			setPaths(mv, path)
		}
	case *ast.MappingValueNode:
		p := path + "." + v.Key.GetToken().Value
		v.SetPath(p)
		v.Key.SetPath(p)
		setPaths(v.Value, p)
	case *ast.SequenceNode:
		for i, item := range v.Values {
			setPaths(item, fmt.Sprintf("%s[%d]", path, i))
		}
	case *ast.AnchorNode:
		setPaths(v.Value, path)
	}
}

// yamlPath is the parser's form of a field path: "$.faults[0].abort".
func yamlPath(field string) string {
	if field == "" {
		return "$"
	}
	return "$." + field
}

func unanchor(n ast.Node) ast.Node {
	if a, ok := n.(*ast.AnchorNode); ok {
		return a.Value
	}
	return n
}

// mappingOf returns n as a mapping (the parser makes every mapping, one-key ones too, a MappingNode).
func mappingOf(n ast.Node) (*ast.MappingNode, bool) {
	m, ok := unanchor(n).(*ast.MappingNode)
	return m, ok
}

func entryOf(m *ast.MappingNode, key string) *ast.MappingValueNode {
	for _, mv := range m.Values {
		if t := mv.Key.GetToken(); t != nil && t.Value == key {
			return mv
		}
	}
	return nil
}

func keysOf(m *ast.MappingNode) []string {
	var keys []string
	for _, mv := range m.Values {
		if t := mv.Key.GetToken(); t != nil {
			keys = append(keys, t.Value)
		}
	}
	if len(keys) == 0 {
		return []string{"(none)"}
	}
	return keys
}

// kindOf says what a node holds, in a scenario author's words.
func kindOf(n ast.Node) string {
	switch v := unanchor(n).(type) {
	case *ast.MappingNode:
		return "a mapping"
	case *ast.SequenceNode:
		return "a list"
	case *ast.NullNode:
		return "empty"
	case *ast.AliasNode:
		return "an alias (*" + v.Value.GetToken().Value + ")"
	default:
		if t := n.GetToken(); t != nil {
			return fmt.Sprintf("the value %q", t.Value)
		}
		return "a value"
	}
}
