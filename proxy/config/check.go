package config

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/known/anypb"
)

// checkSupported reports every populated field of m, recursively, that is outside the supported
// subset: a field not in the table, an enum value or a typed_config type it does not accept. It is what
// keeps a proto built in code (or received over xDS) to the same subset as a decoded file.
func checkSupported(m protoreflect.Message, path string) []*Error {
	var errs []*Error
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		fpath := joinPath(path, string(fd.Name()))
		rule, ok := fieldRule(fd)
		if !ok {
			errs = append(errs, &Error{Path: fpath, Msg: notSupportedMsg(fd)})
			return true
		}
		errs = append(errs, checkValue(fd, rule, v, fpath)...)
		return true
	})
	return errs
}

// checkValue checks the value v of field fd (list, map or singular) against its rule.
func checkValue(fd protoreflect.FieldDescriptor, rule []string, v protoreflect.Value, path string) []*Error {
	var errs []*Error
	switch {
	case fd.IsList():
		for i := range v.List().Len() {
			errs = append(errs, checkElem(fd, rule, v.List().Get(i), indexPath(path, i))...)
		}
	case fd.IsMap():
		v.Map().Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
			errs = append(errs, checkElem(fd.MapValue(), rule, mv, path+"["+k.String()+"]")...)
			return true
		})
	default:
		errs = checkElem(fd, rule, v, path)
	}
	return errs
}

// checkElem checks one value of kind fd: an enum value, or a message to recurse into.
func checkElem(fd protoreflect.FieldDescriptor, rule []string, v protoreflect.Value, path string) []*Error {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		if msg := enumProblem(fd.Enum(), rule, v.Enum()); msg != "" {
			return []*Error{{Path: path, Msg: msg}}
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		switch {
		case fd.Message().FullName() == anyFullName:
			return checkAny(rule, v.Message(), path)
		case !isWellKnown(fd.Message()):
			return checkSupported(v.Message(), path)
		}
	}
	return nil
}

// checkAny checks the packed type of a typed_config against rule, then its fields.
func checkAny(rule []string, m protoreflect.Message, path string) []*Error {
	a, ok := m.Interface().(*anypb.Any)
	if !ok {
		return []*Error{{Path: path, Msg: fmt.Sprintf("unexpected %T for %s", m.Interface(), anyFullName)}}
	}
	inner, err := a.UnmarshalNew()
	if msg := anyTypeProblem(rule, a.GetTypeUrl(), !errors.Is(err, protoregistry.NotFound)); msg != "" {
		return []*Error{{Path: joinPath(path, typeURLKey), Msg: msg}}
	}
	if err != nil {
		return []*Error{{Path: path, Msg: fmt.Sprintf("cannot unpack %s: %v", a.GetTypeUrl(), err)}}
	}
	return checkSupported(inner.ProtoReflect(), path)
}

// enumProblem says what is wrong with enum value n under rule, or "" when nothing is.
func enumProblem(ed protoreflect.EnumDescriptor, rule []string, n protoreflect.EnumNumber) string {
	value := ed.Values().ByNumber(n)
	if value == nil {
		return fmt.Sprintf("unknown value %d; want one of %s", n, enumNames(ed, rule))
	}
	if rule != nil && !slices.Contains(rule, string(value.Name())) {
		return fmt.Sprintf("%s is not supported by meshproof (supported: %s)", value.Name(), strings.Join(rule, ", "))
	}
	return ""
}

// enumNames lists the values of ed, with the supported subset when rule restricts it.
func enumNames(ed protoreflect.EnumDescriptor, rule []string) string {
	values := ed.Values()
	names := make([]string, 0, values.Len())
	for i := range values.Len() {
		names = append(names, string(values.Get(i).Name()))
	}
	out := strings.Join(names, ", ")
	if rule != nil {
		out += " (supported by meshproof: " + strings.Join(rule, ", ") + ")"
	}
	return out
}

// anyTypeProblem says what is wrong with a typed_config's type URL under rule, or "" when nothing is.
func anyTypeProblem(rule []string, url string, registered bool) string {
	name := url[strings.LastIndexByte(url, '/')+1:]
	switch {
	case url == "":
		return fmt.Sprintf("missing type URL (accepted: %s)", typeURLs(rule))
	case !registered:
		return fmt.Sprintf("unknown type %q (accepted: %s)", url, typeURLs(rule))
	case rule != nil && !slices.Contains(rule, name):
		return fmt.Sprintf("type %s is not supported here by meshproof (accepted: %s)", name, typeURLs(rule))
	}
	return ""
}

func typeURLs(rule []string) string {
	if rule == nil {
		return "any registered type"
	}
	urls := make([]string, len(rule))
	for i, name := range rule {
		urls[i] = typePrefix + name
	}
	return strings.Join(urls, ", ")
}

// notSupportedMsg is the error for a field that exists in Envoy's API but not in meshproof's subset.
func notSupportedMsg(fd protoreflect.FieldDescriptor) string {
	md := fd.ContainingMessage()
	return "field not supported by meshproof (supported in " + string(md.FullName()) + ": " + supportedList(md) + ")"
}

// supportedMembers lists the supported fields of a oneof.
func supportedMembers(oneof protoreflect.OneofDescriptor) []string {
	var names []string
	fields := oneof.Fields()
	for i := range fields.Len() {
		if _, ok := fieldRule(fields.Get(i)); ok {
			names = append(names, string(fields.Get(i).Name()))
		}
	}
	return names
}

// suggest proposes the field of md closest to an unknown key, as " (did you mean x?)", or "".
func suggest(md protoreflect.MessageDescriptor, key string) string {
	best, bestDist := "", len(key)/3+1
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		for _, name := range []string{string(fd.Name()), fd.JSONName()} {
			if dist := editDistance(strings.ToLower(key), strings.ToLower(name)); dist < bestDist {
				best, bestDist = string(fd.Name()), dist
			}
		}
	}
	if best == "" {
		return ""
	}
	return " (did you mean " + best + "?)"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
