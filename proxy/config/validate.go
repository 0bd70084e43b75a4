package config

import (
	"strings"

	"google.golang.org/protobuf/reflect/protoreflect"
)

// pgvEmbedded is protoc-gen-validate's reason for an error inside a nested message.
const pgvEmbedded = "embedded message failed validation"

// pgvFieldError is the shape of protoc-gen-validate's per-message XxxValidationError.
type pgvFieldError interface {
	Field() string
	Reason() string
	Cause() error
}

// pgvErrors turns the error of ValidateAll (protoc-gen-validate rules, as generated into
// go-control-plane) on a message of type md into *Error values whose paths, below path, use proto field
// names: PGV's "Clusters[0]" › "LoadAssignment" › "ClusterName" becomes
// "clusters[0].load_assignment.cluster_name".
func pgvErrors(err error, md protoreflect.MessageDescriptor, path string) []*Error {
	switch e := err.(type) {
	case nil:
		return nil
	case interface{ AllErrors() []error }:
		var out []*Error
		for _, inner := range e.AllErrors() {
			out = append(out, pgvErrors(inner, md, path)...)
		}
		return out
	case pgvFieldError:
		seg := pgvSegment(md, path, e.Field())
		if e.Reason() == pgvEmbedded && e.Cause() != nil && seg.next != nil {
			return pgvErrors(e.Cause(), seg.next, seg.path)
		}
		msg := e.Reason()
		if e.Cause() != nil {
			msg += ": " + e.Cause().Error()
		}
		if seg.oneof != nil {
			msg += " (set one of " + strings.Join(supportedMembers(seg.oneof), ", ") + ")"
		}
		return []*Error{{Path: seg.path, Msg: msg}}
	default:
		return []*Error{{Path: path, Msg: err.Error()}}
	}
}

// pgvSeg is one PGV field reference resolved against a message descriptor.
type pgvSeg struct {
	path  string                         // the path down to the field, in proto names
	next  protoreflect.MessageDescriptor // the field's message type, if it has one
	oneof protoreflect.OneofDescriptor   // set when the reference names a oneof
}

// pgvSegment resolves PGV's field reference ("LoadAssignment", "Clusters[0]", "Metadata[key]",
// "PathSpecifier") in md: PGV uses Go names, which match proto names once underscores and case go.
func pgvSegment(md protoreflect.MessageDescriptor, path, ref string) pgvSeg {
	name, suffix := ref, ""
	if i := strings.IndexByte(ref, '['); i >= 0 {
		name, suffix = ref[:i], ref[i:]
	}
	key := normalizeName(name)
	fields := md.Fields()
	for i := range fields.Len() {
		fd := fields.Get(i)
		if normalizeName(string(fd.Name())) != key {
			continue
		}
		seg := pgvSeg{path: joinPath(path, string(fd.Name())) + suffix}
		switch {
		case fd.IsMap() && fd.MapValue().Message() != nil:
			seg.next = fd.MapValue().Message()
		case !fd.IsMap():
			seg.next = fd.Message()
		}
		return seg
	}
	oneofs := md.Oneofs()
	for i := range oneofs.Len() {
		if od := oneofs.Get(i); normalizeName(string(od.Name())) == key {
			return pgvSeg{path: joinPath(path, string(od.Name())), oneof: od}
		}
	}
	return pgvSeg{path: joinPath(path, ref)}
}

func normalizeName(name string) string {
	return strings.ToLower(strings.ReplaceAll(name, "_", ""))
}
