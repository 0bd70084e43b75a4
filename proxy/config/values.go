package config

import (
	"errors"
	"regexp"
	"strings"

	"github.com/goccy/go-yaml"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// wellKnownForms describes the JSON form of the well-known types, as protojson accepts them.
var wellKnownForms = map[protoreflect.FullName]string{
	"google.protobuf.Duration":    `a duration such as "0.25s"`,
	"google.protobuf.Timestamp":   `an RFC 3339 timestamp such as "2025-01-02T15:04:05Z"`,
	"google.protobuf.UInt32Value": "an integer in 0..4294967295",
	"google.protobuf.UInt64Value": "an integer in 0..18446744073709551615",
	"google.protobuf.Int32Value":  "an integer in -2147483648..2147483647",
	"google.protobuf.Int64Value":  "an integer in -9223372036854775808..9223372036854775807",
	"google.protobuf.BoolValue":   "true or false",
	"google.protobuf.StringValue": "a string",
	"google.protobuf.BytesValue":  "base64-encoded bytes",
	"google.protobuf.DoubleValue": "a number",
	"google.protobuf.FloatValue":  "a number",
	"google.protobuf.Struct":      "a mapping",
	"google.protobuf.ListValue":   "a list",
	"google.protobuf.Value":       "any value",
	"google.protobuf.FieldMask":   `a comma-separated list of field paths such as "a.b,c"`,
	"google.protobuf.Empty":       "an empty mapping {}",
}

var kindForms = map[protoreflect.Kind]string{
	protoreflect.BoolKind:     "true or false",
	protoreflect.StringKind:   "a string",
	protoreflect.BytesKind:    "base64-encoded bytes",
	protoreflect.Int32Kind:    "an integer in -2147483648..2147483647",
	protoreflect.Sint32Kind:   "an integer in -2147483648..2147483647",
	protoreflect.Sfixed32Kind: "an integer in -2147483648..2147483647",
	protoreflect.Uint32Kind:   "an integer in 0..4294967295",
	protoreflect.Fixed32Kind:  "an integer in 0..4294967295",
	protoreflect.Int64Kind:    "an integer in -9223372036854775808..9223372036854775807",
	protoreflect.Sint64Kind:   "an integer in -9223372036854775808..9223372036854775807",
	protoreflect.Sfixed64Kind: "an integer in -9223372036854775808..9223372036854775807",
	protoreflect.Uint64Kind:   "an integer in 0..18446744073709551615",
	protoreflect.Fixed64Kind:  "an integer in 0..18446744073709551615",
	protoreflect.FloatKind:    "a number",
	protoreflect.DoubleKind:   "a number",
}

// want describes the YAML form field fd accepts, for "…; want X" messages.
func want(fd protoreflect.FieldDescriptor) string {
	switch {
	case fd.IsList():
		return "a list of " + singular(fd)
	case fd.IsMap():
		return "a mapping of " + singular(fd.MapKey()) + " to " + singular(fd.MapValue())
	}
	return singular(fd)
}

// singular describes one value of fd's kind.
func singular(fd protoreflect.FieldDescriptor) string {
	switch fd.Kind() {
	case protoreflect.EnumKind:
		rule, _ := fieldRule(fd)
		return "one of " + enumNames(fd.Enum(), rule)
	case protoreflect.MessageKind, protoreflect.GroupKind:
		if form, ok := wellKnownForms[fd.Message().FullName()]; ok {
			return form
		}
		return "a mapping (" + string(fd.Message().FullName()) + ")"
	}
	return kindForms[fd.Kind()]
}

var (
	// protojsonPrefix is protojson's position prefix, meaningless for a one-field fragment.
	// (protobuf-go randomly uses a non-breaking space in its messages, to discourage matching them.)
	protojsonPrefix = regexp.MustCompile(`^proto:[\s\x{a0}]*(syntax error[\s\x{a0}]*)?(\(line \d+:\d+\):[\s\x{a0}]*)?`)
	// protojsonField is protojson's "invalid value for <kind> field <json name>: <value>".
	protojsonField = regexp.MustCompile(`^invalid value for \S+ field \S+:[\s\x{a0}]`)
)

// protojsonMessage is protojson's error for a one-field fragment, without its meaningless position.
func protojsonMessage(err error) string {
	msg := protojsonPrefix.ReplaceAllString(err.Error(), "")
	msg = protojsonField.ReplaceAllString(msg, "invalid value ")
	if rest, ok := strings.CutPrefix(msg, "unexpected token "); ok {
		msg = "invalid value " + rest
	}
	return msg
}

// yamlMessage is the message of a goccy/go-yaml error without its source excerpt.
func yamlMessage(err error) string {
	var yerr yaml.Error
	if errors.As(err, &yerr) {
		return yerr.GetMessage()
	}
	return err.Error()
}
