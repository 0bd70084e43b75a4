package config

import (
	"cmp"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

const (
	anyFullName = "google.protobuf.Any"
	typeURLKey  = "@type"
	typePrefix  = "type.googleapis.com/"
)

// DecodeNode decodes the YAML node into msg (a go-control-plane message), the way protojson decodes
// Envoy's JSON form, and rejects every field outside the supported subset (see SupportedFields).
//
// Mapping keys are proto field names or their JSON (lowerCamel) names. Messages, repeated messages and
// google.protobuf.Any typed configs ("@type" plus the fields of the packed message) are walked node by
// node; scalars, enums, repeated scalars, maps and well-known types (durations such as "0.25s",
// wrappers written as plain values, Struct, …) are converted by protojson. Every error is an *Error
// carrying file, line, column and the full field path below path (path "" for a top-level message);
// all errors found are returned, joined with errors.Join. msg is reset first.
//
// Anchors, aliases and merge keys ("<<") are resolved within node: an alias of an anchor outside node
// is an error. Errors come in document order.
func DecodeNode(node ast.Node, msg proto.Message, file, path string) error {
	proto.Reset(msg)
	d := &decoder{file: file, anchors: anchorsIn(node)}
	d.message(node, msg.ProtoReflect(), path)
	slices.SortStableFunc(d.errs, func(a, b *Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Column, b.Column))
	})
	return joinErrors(d.errs)
}

// decoder holds the state of one DecodeNode call: where errors point, and the anchors aliases name.
type decoder struct {
	file    string
	anchors map[string]ast.Node
	errs    []*Error
}

// entry is one key of a YAML mapping; merged entries come from a "<<" merge key.
type entry struct {
	key    ast.Node
	name   string
	value  ast.Node
	merged bool
}

// field is a mapping entry resolved to the proto field it sets.
type field struct {
	fd protoreflect.FieldDescriptor
	entry
}

func (d *decoder) fail(node ast.Node, path, format string, args ...any) {
	d.errs = append(d.errs, errorAt(d.file, node, path, fmt.Sprintf(format, args...)))
}

// message decodes a YAML mapping (or null, which leaves m empty) into m.
func (d *decoder) message(node ast.Node, m protoreflect.Message, path string) {
	if d.isNull(node) {
		return
	}
	entries, ok := d.entries(node, path, false)
	if !ok {
		return
	}
	for _, f := range d.resolveFields(m.Descriptor(), entries, path) {
		d.field(m, f, joinPath(path, string(f.fd.Name())))
	}
}

// entries lists the keys of a YAML mapping, merge keys expanded, in source order.
func (d *decoder) entries(node ast.Node, path string, merged bool) ([]entry, bool) {
	mapping, ok := d.structural(node).(ast.MapNode)
	if !ok {
		d.fail(node, path, "want a mapping of field names to values, got %s", d.describe(node))
		return nil, false
	}
	var out []entry
	for it := mapping.MapRange(); it.Next(); {
		key, value := ast.Node(it.Key()), it.Value()
		if _, isMerge := key.(*ast.MergeKeyNode); isMerge {
			more, ok := d.mergeEntries(value, path)
			if !ok {
				return nil, false
			}
			out = append(out, more...)
			continue
		}
		out = append(out, entry{key: key, name: keyName(key), value: value, merged: merged})
	}
	return out, true
}

// mergeEntries expands the value of a "<<" merge key: a mapping or a list of mappings.
func (d *decoder) mergeEntries(value ast.Node, path string) ([]entry, bool) {
	seq, isSeq := d.structural(value).(*ast.SequenceNode)
	if !isSeq {
		return d.entries(value, path, true)
	}
	var out []entry
	for _, item := range seq.Values {
		more, ok := d.entries(item, path, true)
		if !ok {
			return nil, false
		}
		out = append(out, more...)
	}
	return out, true
}

// resolveFields maps entries to the fields of md. It reports unknown and unsupported keys, a field set
// twice and two members of one oneof; an explicit key overrides a merged one, and among merged keys
// the first wins, as YAML merge keys do.
func (d *decoder) resolveFields(md protoreflect.MessageDescriptor, entries []entry, path string) []field {
	var out []field
	byNumber := map[protoreflect.FieldNumber]int{}
	for _, e := range entries {
		fd := lookupField(md, e.name)
		if !d.checkKey(md, fd, e, path) {
			continue
		}
		i, seen := byNumber[fd.Number()]
		switch {
		case !seen:
			byNumber[fd.Number()] = len(out)
			out = append(out, field{fd: fd, entry: e})
		case out[i].merged && !e.merged:
			out[i].entry = e
		case !e.merged:
			d.fail(e.key, joinPath(path, string(fd.Name())), "field set twice (first at %s)", lineCol(out[i].key))
		}
	}
	return d.checkOneofs(out, path)
}

// checkKey reports a key that names no field of md, or a field outside the supported subset.
func (d *decoder) checkKey(md protoreflect.MessageDescriptor, fd protoreflect.FieldDescriptor, e entry, path string) bool {
	if fd == nil {
		d.fail(e.key, joinPath(path, e.name), "unknown field %q in %s%s; supported: %s",
			e.name, md.FullName(), suggest(md, e.name), supportedList(md))
		return false
	}
	if _, ok := fieldRule(fd); !ok {
		d.fail(e.key, joinPath(path, string(fd.Name())), "%s", notSupportedMsg(fd))
		return false
	}
	return true
}

// checkOneofs drops, and reports, every field of a oneof after the first one set.
func (d *decoder) checkOneofs(fields []field, path string) []field {
	first := map[protoreflect.FullName]field{}
	out := fields[:0]
	for _, f := range fields {
		oneof := f.fd.ContainingOneof()
		if oneof == nil || oneof.IsSynthetic() {
			out = append(out, f)
			continue
		}
		if prev, ok := first[oneof.FullName()]; ok {
			d.fail(f.key, joinPath(path, string(f.fd.Name())), "only one of %s may be set (%s is set at %s)",
				strings.Join(supportedMembers(oneof), ", "), prev.fd.Name(), lineCol(prev.key))
			continue
		}
		first[oneof.FullName()] = f
		out = append(out, f)
	}
	return out
}

// field decodes one mapping entry into its field of m.
func (d *decoder) field(m protoreflect.Message, f field, path string) {
	fd, node := f.fd, f.value
	switch {
	case d.isNull(node) && !isMessage(fd, "google.protobuf.Value"):
		// null leaves the field unset, as in protojson.
	case fd.IsList() && walked(fd):
		d.list(m, fd, node, path)
	case !fd.IsList() && !fd.IsMap() && isMessage(fd, anyFullName):
		if a := d.any(fd, node, path); a != nil {
			m.Set(fd, protoreflect.ValueOfMessage(a.ProtoReflect()))
		}
	case !fd.IsList() && !fd.IsMap() && walked(fd):
		sub := m.NewField(fd)
		d.message(node, sub.Message(), path)
		m.Set(fd, sub)
	default:
		d.viaJSON(m, fd, node, path)
	}
}

// list decodes a YAML sequence into a repeated message field, item by item.
func (d *decoder) list(m protoreflect.Message, fd protoreflect.FieldDescriptor, node ast.Node, path string) {
	seq, ok := d.structural(node).(*ast.SequenceNode)
	if !ok {
		d.fail(node, path, "want a list of %s, got %s", fd.Message().FullName(), d.describe(node))
		return
	}
	list := m.Mutable(fd).List()
	for i, item := range seq.Values {
		if isMessage(fd, anyFullName) {
			if a := d.any(fd, item, indexPath(path, i)); a != nil {
				list.Append(protoreflect.ValueOfMessage(a.ProtoReflect()))
			}
			continue
		}
		elem := list.NewElement()
		d.message(item, elem.Message(), indexPath(path, i))
		list.Append(elem)
	}
}

// any decodes a typed config: "@type" names the packed message, the other keys are its fields.
func (d *decoder) any(fd protoreflect.FieldDescriptor, node ast.Node, path string) *anypb.Any {
	if d.isNull(node) {
		return nil
	}
	entries, ok := d.entries(node, path, false)
	if !ok {
		return nil
	}
	rule, _ := fieldRule(fd)
	i := slices.IndexFunc(entries, func(e entry) bool { return e.name == typeURLKey })
	if i < 0 {
		d.fail(node, path, "missing %q (accepted: %s)", typeURLKey, typeURLs(rule))
		return nil
	}
	typeNode := entries[i].value
	url, _ := d.scalarValue(typeNode).(string)
	mt, err := protoregistry.GlobalTypes.FindMessageByURL(url)
	if msg := anyTypeProblem(rule, url, err == nil); msg != "" {
		d.fail(typeNode, joinPath(path, typeURLKey), "%s", msg)
		return nil
	}
	inner := mt.New()
	for _, f := range d.resolveFields(inner.Descriptor(), slices.Delete(entries, i, i+1), path) {
		d.field(inner, f, joinPath(path, string(f.fd.Name())))
	}
	packed, err := anypb.New(inner.Interface())
	if err != nil {
		d.fail(node, path, "cannot pack %s: %v", mt.Descriptor().FullName(), err)
		return nil
	}
	return packed
}

// viaJSON decodes a scalar, enum, repeated scalar, map or well-known type with protojson: the node is
// turned into JSON, unmarshalled as {"<json name>": value} into a fresh message of m's type, and the
// field is copied over. protojson's complaint, and the form the field wants, become the error.
func (d *decoder) viaJSON(m protoreflect.Message, fd protoreflect.FieldDescriptor, node ast.Node, path string) {
	node = d.resolve(node)
	if alias, ok := node.(*ast.AliasNode); ok {
		d.fail(node, path, "%s", unknownAnchor(alias))
		return
	}
	var value any
	if err := NodeToValue(node, &value); err != nil {
		d.fail(node, path, "cannot read value: %s; want %s", yamlMessage(err), want(fd))
		return
	}
	fragment, err := json.Marshal(map[string]any{fd.JSONName(): value})
	if err != nil {
		d.fail(node, path, "cannot convert value to JSON: %v; want %s", err, want(fd))
		return
	}
	fresh := m.Type().New()
	if err := protojson.Unmarshal(fragment, fresh.Interface()); err != nil {
		d.fail(node, path, "%s; want %s", protojsonMessage(err), want(fd))
		return
	}
	m.Set(fd, fresh.Get(fd))
	rule, _ := fieldRule(fd)
	for _, e := range checkValue(fd, rule, m.Get(fd), path) {
		e.File = d.file
		e.Line, e.Column = position(node)
		d.errs = append(d.errs, e)
	}
}

// resolve follows anchors and aliases to the node they stand for.
func (d *decoder) resolve(node ast.Node) ast.Node {
	for range 100 { // bounds alias chains
		switch n := node.(type) {
		case *ast.AnchorNode:
			node = n.Value
		case *ast.AliasNode:
			target, ok := d.anchors[nodeText(n.Value)]
			if !ok {
				return node
			}
			node = target
		default:
			return node
		}
	}
	return node
}

// structural is resolve plus tags (e.g. "!!map") dropped: the node to dispatch on.
func (d *decoder) structural(node ast.Node) ast.Node {
	node = d.resolve(node)
	for {
		tag, ok := node.(*ast.TagNode)
		if !ok {
			return node
		}
		node = d.resolve(tag.Value)
	}
}

func (d *decoder) isNull(node ast.Node) bool {
	if node == nil {
		return true
	}
	_, null := d.structural(node).(*ast.NullNode)
	return null
}

// scalarValue is the Go value of a scalar node, or nil.
func (d *decoder) scalarValue(node ast.Node) any {
	scalar, ok := d.structural(node).(ast.ScalarNode)
	if !ok {
		return nil
	}
	return scalar.GetValue()
}

// anchorsIn collects the anchors defined in node, by name.
func anchorsIn(node ast.Node) map[string]ast.Node {
	anchors := map[string]ast.Node{}
	if node == nil {
		return anchors
	}
	ast.Walk(visitorFunc(func(n ast.Node) {
		if a, ok := n.(*ast.AnchorNode); ok {
			anchors[nodeText(a.Name)] = a.Value
		}
	}), node)
	return anchors
}

type visitorFunc func(ast.Node)

func (f visitorFunc) Visit(n ast.Node) ast.Visitor {
	f(n)
	return f
}

// lookupField finds a field by proto name or JSON name, as protojson does.
func lookupField(md protoreflect.MessageDescriptor, name string) protoreflect.FieldDescriptor {
	fields := md.Fields()
	if fd := fields.ByName(protoreflect.Name(name)); fd != nil {
		return fd
	}
	return fields.ByJSONName(name)
}

// walked reports whether fd's messages are decoded node by node (true) or via protojson (false).
func walked(fd protoreflect.FieldDescriptor) bool {
	if fd.Kind() != protoreflect.MessageKind && fd.Kind() != protoreflect.GroupKind || fd.IsMap() {
		return false
	}
	return fd.Message().FullName() == anyFullName || !isWellKnown(fd.Message())
}

func isWellKnown(md protoreflect.MessageDescriptor) bool {
	return md.ParentFile().Package() == "google.protobuf"
}

func isMessage(fd protoreflect.FieldDescriptor, name protoreflect.FullName) bool {
	return fd.Message() != nil && fd.Message().FullName() == name
}

func keyName(key ast.Node) string {
	if k, ok := key.(*ast.MappingKeyNode); ok {
		key = k.Value
	}
	return nodeText(key)
}

func nodeText(node ast.Node) string {
	if s, ok := node.(*ast.StringNode); ok {
		return s.Value
	}
	if node == nil {
		return ""
	}
	return node.String()
}

// describe names the kind of a YAML node for "want X, got Y" messages.
func (d *decoder) describe(node ast.Node) string {
	switch n := d.structural(node).(type) {
	case *ast.AliasNode:
		return unknownAnchor(n)
	case *ast.SequenceNode:
		return "a list"
	case *ast.MappingNode, *ast.MappingValueNode:
		return "a mapping"
	case nil, *ast.NullNode:
		return "null"
	default:
		return fmt.Sprintf("%q", n.String())
	}
}

func unknownAnchor(alias *ast.AliasNode) string {
	return fmt.Sprintf("an alias of anchor %q, which is not defined in the decoded node", nodeText(alias.Value))
}
