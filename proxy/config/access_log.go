package config

import (
	accesslogv3 "github.com/envoyproxy/go-control-plane/envoy/config/accesslog/v3"
	filev3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/file/v3"
	streamv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/access_loggers/stream/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// The access loggers meshproof implements (the HCM's access_log entries' typed_config).
const (
	fileLogType   = "envoy.extensions.access_loggers.file.v3.FileAccessLog"
	stdoutLogType = "envoy.extensions.access_loggers.stream.v3.StdoutAccessLog"
	stderrLogType = "envoy.extensions.access_loggers.stream.v3.StderrAccessLog"
)

// Where an access log writes besides a file path.
const (
	AccessLogStdout = "/dev/stdout" // envoy.access_loggers.stdout
	AccessLogStderr = "/dev/stderr" // envoy.access_loggers.stderr
)

// AccessLog is one HCM access_log entry (envoy.config.accesslog.v3.AccessLog) with a file, stdout or
// stderr logger: each downstream request that ends writes one line formatted by Format.
type AccessLog struct {
	// Path is the file's path; AccessLogStdout or AccessLogStderr for the stream loggers.
	Path string
	// Format is the log_format (or the deprecated format / json_format); nil: Envoy's default format
	// (DefaultAccessLogFormat).
	Format *BodyFormat
	// Filter is the entry's filter: status_code_filter or header_filter; nil: every request.
	Filter *AccessLogFilter
}

// AccessLogFilter is an access log filter meshproof implements: exactly one field is set.
type AccessLogFilter struct {
	StatusCode *StatusCodeFilter // on the response code sent (0 when none was)
	Header     *HeaderMatcher    // on the request headers
}

// DefaultAccessLogFormat is Envoy's default access log format, used when an access log has no format
// (docs: configuration/observability/access_log/usage, "Default format string").
const DefaultAccessLogFormat = `[%START_TIME%] "%REQ(:METHOD)% %REQ(X-ENVOY-ORIGINAL-PATH?:PATH)% %PROTOCOL%" ` +
	`%RESPONSE_CODE% %RESPONSE_FLAGS% %BYTES_RECEIVED% %BYTES_SENT% %DURATION% ` +
	`%RESP(X-ENVOY-UPSTREAM-SERVICE-TIME)% "%REQ(X-FORWARDED-FOR)%" "%REQ(USER-AGENT)%" "%REQ(X-REQUEST-ID)%" ` +
	`"%REQ(:AUTHORITY)%" "%UPSTREAM_HOST%"` + "\n"

// accessLogs converts the HCM's access_log entries.
func (c *converter) accessLogs(logs []*accesslogv3.AccessLog, path string) []AccessLog {
	var out []AccessLog
	for i, l := range logs {
		lpath := indexPath(path, i)
		al := AccessLog{Filter: c.accessLogFilter(l.GetFilter(), joinPath(lpath, "filter"))}
		tpath := joinPath(lpath, "typed_config")
		a := l.GetTypedConfig()
		if a == nil {
			c.fail(tpath, "required: a typed_config of type %s, %s or %s", fileLogType, stdoutLogType, stderrLogType)
			continue
		}
		switch a.MessageName() {
		case fileLogType:
			al.Path, al.Format = c.fileAccessLog(a, tpath)
		case stdoutLogType:
			if m, ok := unpack[*streamv3.StdoutAccessLog](c, a, tpath); ok {
				al.Path, al.Format = AccessLogStdout, c.bodyFormat(m.GetLogFormat(), joinPath(tpath, "log_format"), true)
			}
		case stderrLogType:
			if m, ok := unpack[*streamv3.StderrAccessLog](c, a, tpath); ok {
				al.Path, al.Format = AccessLogStderr, c.bodyFormat(m.GetLogFormat(), joinPath(tpath, "log_format"), true)
			}
		default: // the decoder's allowlist has refused any other type already
			c.fail(tpath, "supported: %s, %s, %s", fileLogType, stdoutLogType, stderrLogType)
			continue
		}
		out = append(out, al)
	}
	return out
}

// fileAccessLog converts a FileAccessLog: its path (required) and its format, log_format or one of the
// deprecated format (a text format string) and json_format.
func (c *converter) fileAccessLog(a *anypb.Any, path string) (string, *BodyFormat) {
	m, ok := unpack[*filev3.FileAccessLog](c, a, path)
	if !ok {
		return "", nil
	}
	var f *BodyFormat
	switch t := m.GetAccessLogFormat().(type) {
	case *filev3.FileAccessLog_Format:
		// An empty format is the default one, as in Envoy's FileAccessLogFactory
		// (source/extensions/access_loggers/file/config.cc).
		//lint:ignore SA1019 Envoy deprecates format for log_format but still honours it
		if format := t.Format; format != "" {
			f = &BodyFormat{Text: c.formatString(format, joinPath(path, "format"), true)}
		}
	case *filev3.FileAccessLog_JsonFormat:
		//lint:ignore SA1019 Envoy deprecates json_format for log_format but still honours it
		f = &BodyFormat{JSON: c.jsonTemplate(t.JsonFormat, joinPath(path, "json_format"), true)}
	case *filev3.FileAccessLog_LogFormat:
		f = c.bodyFormat(t.LogFormat, joinPath(path, "log_format"), true)
	}
	return m.GetPath(), f
}

// accessLogFilter converts an access log's filter: status_code_filter or header_filter, as the local
// reply mappers' (the decoder's allowlist refuses the others).
func (c *converter) accessLogFilter(f *accesslogv3.AccessLogFilter, path string) *AccessLogFilter {
	if f == nil {
		return nil
	}
	switch t := f.GetFilterSpecifier().(type) {
	case *accesslogv3.AccessLogFilter_StatusCodeFilter:
		cmp := t.StatusCodeFilter.GetComparison()
		return &AccessLogFilter{StatusCode: &StatusCodeFilter{Op: cmp.GetOp().String(), Value: cmp.GetValue().GetDefaultValue()}}
	case *accesslogv3.AccessLogFilter_HeaderFilter:
		h := c.headerMatcher(t.HeaderFilter.GetHeader(), joinPath(joinPath(path, "header_filter"), "header"))
		return &AccessLogFilter{Header: &h}
	}
	c.fail(path, "supported: status_code_filter, header_filter")
	return nil
}
