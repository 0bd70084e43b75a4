package config

import (
	"errors"
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// Error is one configuration error. File, Line and Column point into the YAML source when there is
// one (they are empty for a proto built in code); Path is the full field path in proto field names,
// e.g. "static_resources.clusters[0].load_assignment.endpoints[0].lb_endpoints[1].endpoint.address".
// Several errors are returned together with errors.Join; use errors.As, or Errors, to get at them.
type Error struct {
	File   string
	Line   int
	Column int
	Path   string
	Msg    string
}

// Error formats the error as "file:line:col: path: msg", omitting the empty parts.
func (e *Error) Error() string {
	var b strings.Builder
	if e.File != "" {
		b.WriteString(e.File)
		b.WriteString(":")
	}
	if e.Line > 0 {
		b.WriteString(strconv.Itoa(e.Line))
		b.WriteString(":")
		if e.Column > 0 {
			b.WriteString(strconv.Itoa(e.Column))
			b.WriteString(":")
		}
	}
	if b.Len() > 0 {
		b.WriteString(" ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors flattens err (as returned by this package, possibly joined) into its *Error values, in order.
// Errors that are not *Error are skipped.
func Errors(err error) []*Error {
	var out []*Error
	var walk func(error)
	walk = func(err error) {
		var e *Error
		switch x := err.(type) {
		case nil:
		case interface{ Unwrap() []error }:
			for _, inner := range x.Unwrap() {
				walk(inner)
			}
		default:
			if errors.As(err, &e) {
				out = append(out, e)
			}
		}
	}
	walk(err)
	return out
}

// errorAt builds an *Error positioned at node in file.
func errorAt(file string, node ast.Node, path, msg string) *Error {
	line, col := position(node)
	return &Error{File: file, Line: line, Column: col, Path: path, Msg: msg}
}

// position is where node starts in its source: a mapping starts at its first key, not at its first ':'.
func position(node ast.Node) (line, col int) {
	switch n := node.(type) {
	case nil:
		return 0, 0
	case *ast.MappingNode:
		if len(n.Values) > 0 && !n.IsFlowStyle {
			return position(n.Values[0].Key)
		}
	case *ast.MappingValueNode:
		return position(n.Key)
	}
	tk := node.GetToken()
	if tk == nil || tk.Position == nil {
		return 0, 0
	}
	return tk.Position.Line, tk.Position.Column
}

// lineCol is node's position as "line:col".
func lineCol(node ast.Node) string {
	line, col := position(node)
	return strconv.Itoa(line) + ":" + strconv.Itoa(col)
}

// joinPath appends a field name to a path.
func joinPath(path string, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// indexPath appends a list index to a path.
func indexPath(path string, i int) string {
	return path + "[" + strconv.Itoa(i) + "]"
}
