package config

import (
	"slices"

	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/types/known/structpb"
)

// LocalReplyConfig is the HCM local_reply_config (Envoy's LocalReplyImpl, source/common/local_reply/
// local_reply.cc): the first mapper whose filter matches a local reply rewrites it, then the body is
// formatted by that mapper's body_format_override, else body_format.
type LocalReplyConfig struct {
	Mappers    []ResponseMapper
	BodyFormat *BodyFormat // nil: the body as it is, text/plain
}

// ResponseMapper is one local_reply_config mapper.
type ResponseMapper struct {
	// Filter: StatusCode compares the reply's status; Header matches a request header. Exactly one is set.
	StatusCode *StatusCodeFilter
	Header     *HeaderMatcher
	Status     int     // status_code: the new status; 0: unchanged
	Body       *string // body (inline): the new body; nil: unchanged
	BodyFormat *BodyFormat
	Headers    HeaderMutation // headers_to_add
}

// StatusCodeFilter is an access log status_code_filter: the status compared to Value by Op.
type StatusCodeFilter struct {
	Op    string // "EQ", "GE" or "LE"
	Value uint32 // comparison.value.default_value (meshproof has no runtime)
}

// BodyFormat is a SubstitutionFormatString: a text template (text_format, text_format_source) or a
// JSON object template (json_format), with the substitution commands header values take too (see Format).
type BodyFormat struct {
	Text        Format // text_format; nil when JSON is set
	JSON        *JSONTemplate
	ContentType string // content_type, else text/plain (text) or application/json (JSON)
}

// JSONTemplate is a json_format object: each key's value is a format string, a number, a boolean or
// a nested object.
type JSONTemplate struct {
	Keys   []string // sorted
	Values map[string]JSONValue
}

// JSONValue is one json_format value: exactly one field is set.
type JSONValue struct {
	Format Format
	Plain  *structpb.Value // a number or a boolean, written as it is
	Object *JSONTemplate
}

func (c *converter) localReplyConfig(lr *hcmv3.LocalReplyConfig, path string) *LocalReplyConfig {
	if lr == nil {
		return nil
	}
	out := &LocalReplyConfig{BodyFormat: c.bodyFormat(lr.GetBodyFormat(), joinPath(path, "body_format"), false)}
	for i, m := range lr.GetMappers() {
		mpath := indexPath(joinPath(path, "mappers"), i)
		rm := ResponseMapper{Status: int(m.GetStatusCode().GetValue()),
			BodyFormat: c.bodyFormat(m.GetBodyFormatOverride(), joinPath(mpath, "body_format_override"), false),
			Headers:    HeaderMutation{Add: c.headerOptions(m.GetHeadersToAdd(), joinPath(mpath, "headers_to_add"))}}
		if v := m.GetStatusCode(); v != nil && (v.GetValue() < 200 || v.GetValue() >= 600) {
			c.fail(joinPath(mpath, "status_code"), "%d is out of range 200..599", v.GetValue())
		}
		if b := m.GetBody(); b != nil {
			c.inlineOnly(b, joinPath(mpath, "body"))
			s := string(b.GetInlineBytes())
			if _, ok := b.GetSpecifier().(*corev3.DataSource_InlineString); ok {
				s = b.GetInlineString()
			}
			rm.Body = &s
		}
		fpath := joinPath(mpath, "filter")
		switch f := m.GetFilter().GetFilterSpecifier().(type) {
		case *accesslogv3.AccessLogFilter_StatusCodeFilter:
			cmp := f.StatusCodeFilter.GetComparison()
			rm.StatusCode = &StatusCodeFilter{Op: cmp.GetOp().String(), Value: cmp.GetValue().GetDefaultValue()}
		case *accesslogv3.AccessLogFilter_HeaderFilter:
			h := c.headerMatcher(f.HeaderFilter.GetHeader(), joinPath(joinPath(fpath, "header_filter"), "header"))
			rm.Header = &h
		default:
			c.fail(fpath, "supported: status_code_filter, header_filter")
		}
		out.Mappers = append(out.Mappers, rm)
	}
	return out
}

// bodyFormat converts a SubstitutionFormatString: a local reply's body format, or with accessLog an
// access log's format (which takes the commands of the finished request too, see ParseAccessLogFormat).
func (c *converter) bodyFormat(f *corev3.SubstitutionFormatString, path string, accessLog bool) *BodyFormat {
	if f == nil {
		return nil
	}
	out := &BodyFormat{ContentType: f.GetContentType()}
	switch t := f.GetFormat().(type) {
	case *corev3.SubstitutionFormatString_TextFormat:
		//lint:ignore SA1019 Envoy deprecates text_format for text_format_source but still honours it
		out.Text = c.formatString(t.TextFormat, joinPath(path, "text_format"), accessLog)
	case *corev3.SubstitutionFormatString_TextFormatSource:
		c.inlineOnly(t.TextFormatSource, joinPath(path, "text_format_source"))
		s := string(t.TextFormatSource.GetInlineBytes())
		if _, ok := t.TextFormatSource.GetSpecifier().(*corev3.DataSource_InlineString); ok {
			s = t.TextFormatSource.GetInlineString()
		}
		out.Text = c.formatString(s, joinPath(path, "text_format_source"), accessLog)
	case *corev3.SubstitutionFormatString_JsonFormat:
		out.JSON = c.jsonTemplate(t.JsonFormat, joinPath(path, "json_format"), accessLog)
	default:
		c.fail(path, "required: text_format, text_format_source or json_format")
	}
	if out.Text == nil && out.JSON == nil {
		out.Text = Format{} // an empty text format: an empty body
	}
	return out
}

func (c *converter) jsonTemplate(s *structpb.Struct, path string, accessLog bool) *JSONTemplate {
	out := &JSONTemplate{Values: map[string]JSONValue{}}
	for k, v := range s.GetFields() {
		out.Keys = append(out.Keys, k)
		kpath := joinPath(path, k)
		switch v.GetKind().(type) {
		case *structpb.Value_StringValue:
			out.Values[k] = JSONValue{Format: c.formatString(v.GetStringValue(), kpath, accessLog)}
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue:
			out.Values[k] = JSONValue{Plain: v}
		case *structpb.Value_StructValue:
			out.Values[k] = JSONValue{Object: c.jsonTemplate(v.GetStructValue(), kpath, accessLog)}
		default:
			c.fail(kpath, "supported values: strings (format strings), numbers, booleans and objects")
		}
	}
	slices.Sort(out.Keys)
	return out
}

// formatString parses a format string's substitution commands with the header values' parser
// (ParseFormat: Envoy has one SubstitutionFormatParser, source/common/formatter/substitution_formatter.cc,
// for both); an unknown command is an error rather than a literal. accessLog: an access log's format.
func (c *converter) formatString(s, path string, accessLog bool) Format {
	parse := ParseFormat
	if accessLog {
		parse = ParseAccessLogFormat
	}
	f, plain, err := parse(s)
	switch {
	case err != nil:
		c.fail(path, "%v", err)
		return Format{}
	case f == nil:
		return Format{{Literal: plain}}
	}
	return f
}
