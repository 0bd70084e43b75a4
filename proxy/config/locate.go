package config

import (
	"strconv"
	"strings"

	"github.com/goccy/go-yaml/ast"
)

// locate fills in File, Line and Column of the *Error values in err (as FromProto returns them, with
// a Path only) from the YAML document root they were decoded from. An error whose path does not exist
// in the document (a required field left out) points at the deepest part of the path that does.
func locate(err error, root ast.Node, file string) error {
	d := &decoder{file: file, anchors: anchorsIn(root)}
	for _, e := range Errors(err) {
		e.File = file
		e.Line, e.Column = position(d.find(root, e.Path))
	}
	return err
}

// pathSegment is one step of a field path: a field name and the list indexes or map keys after it.
type pathSegment struct {
	name    string
	indexes []string
}

// find returns the node at path below root, or the deepest node on the way there.
func (d *decoder) find(root ast.Node, path string) ast.Node {
	node := root
	for _, seg := range splitPath(path) {
		e, ok := d.findEntry(node, seg.name)
		if !ok {
			return node
		}
		node = e.value
		if d.isNull(node) {
			node = e.key
		}
		for _, index := range seg.indexes {
			next, ok := d.findItem(node, index)
			if !ok {
				return node
			}
			node = next
		}
	}
	return node
}

// findEntry finds the key of a mapping that sets the field name (proto or JSON spelling); an explicit
// key wins over a merged one.
func (d *decoder) findEntry(node ast.Node, name string) (entry, bool) {
	if _, ok := d.structural(node).(ast.MapNode); !ok {
		return entry{}, false
	}
	entries, _ := d.entries(node, "", false)
	var found entry
	ok := false
	for _, e := range entries {
		if (e.name == name || e.name == jsonName(name)) && (!ok || found.merged) {
			found, ok = e, true
		}
	}
	return found, ok
}

// findItem finds item i of a sequence, or the value of key i in a mapping.
func (d *decoder) findItem(node ast.Node, index string) (ast.Node, bool) {
	if seq, isSeq := d.structural(node).(*ast.SequenceNode); isSeq {
		i, err := strconv.Atoi(index)
		if err != nil || i < 0 || i >= len(seq.Values) {
			return nil, false
		}
		return seq.Values[i], true
	}
	e, ok := d.findEntry(node, index)
	return e.value, ok
}

// splitPath splits "a.b[0].c[k]" into its segments; brackets may hold dots.
func splitPath(path string) []pathSegment {
	var segs []pathSegment
	for path != "" {
		end := strings.IndexAny(path, ".[")
		if end < 0 {
			end = len(path)
		}
		seg := pathSegment{name: path[:end]}
		path = path[end:]
		for strings.HasPrefix(path, "[") {
			closing := strings.IndexByte(path, ']')
			if closing < 0 {
				closing = len(path) - 1
			}
			seg.indexes = append(seg.indexes, path[1:closing])
			path = path[closing+1:]
		}
		path = strings.TrimPrefix(path, ".")
		segs = append(segs, seg)
	}
	return segs
}

// jsonName is protojson's lowerCamel JSON name of a proto field name.
func jsonName(name string) string {
	var b strings.Builder
	upper := false
	for _, r := range name {
		switch {
		case r == '_':
			upper = true
		case upper && 'a' <= r && r <= 'z':
			b.WriteRune(r - 'a' + 'A')
			upper = false
		default:
			b.WriteRune(r)
			upper = false
		}
	}
	return b.String()
}
