package config

import (
	"fmt"
	"maps"
	"net/http"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// Format is a header value with substitution commands, as Envoy's substitution formatter parses it for
// headers_to_add (Formatter::SubstitutionFormatParser, source/common/formatter/substitution_formatter.h,
// used by HeaderParser::configure in source/common/router/header_parser.cc): literal text, "%%" for a
// "%", and commands %COMMAND%, %COMMAND(arg)% or %COMMAND(arg):N% (N the most characters kept). A
// value that is not available formats as "" (Envoy's omit_empty_values for headers).
type Format []FormatPart

// FormatPart is literal text (Command "") or one substitution command.
type FormatPart struct {
	Literal string
	Command string // e.g. "REQ", "DOWNSTREAM_REMOTE_ADDRESS"; "": Literal
	// Header and Alt are REQ(Header?Alt) and RESP(Header?Alt): the header, and the one read when it is
	// absent (canonical names, or a pseudo-header such as ":path"). Layout is START_TIME's (strftime).
	Header, Alt string
	Layout      string
	MaxLen      int // :N; 0: no limit
}

// The substitution commands meshproof formats in header values, and how each is written (Envoy's
// CommandSyntaxChecker: COMMAND_ONLY, PARAMS_REQUIRED with LENGTH_ALLOWED, PARAMS_OPTIONAL).
const (
	commandOnly = iota
	headerArg   // (header?alternative), :N allowed
	layoutArg   // (optional strftime layout)
)

var formatCommands = map[string]int{
	"REQ": headerArg, "RESP": headerArg, "REQ_WITHOUT_QUERY": headerArg,
	"START_TIME":                                    layoutArg,
	"PROTOCOL":                                      commandOnly,
	"RESPONSE_CODE":                                 commandOnly,
	"LOCAL_REPLY_BODY":                              commandOnly, // a local reply's body; "" elsewhere
	"HOSTNAME":                                      commandOnly,
	"REQUESTED_SERVER_NAME":                         commandOnly,
	"ROUTE_NAME":                                    commandOnly,
	"UPSTREAM_CLUSTER":                              commandOnly,
	"UPSTREAM_HOST":                                 commandOnly,
	"UPSTREAM_REMOTE_ADDRESS":                       commandOnly,
	"UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":          commandOnly,
	"DOWNSTREAM_REMOTE_ADDRESS":                     commandOnly,
	"DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":        commandOnly,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS":              commandOnly,
	"DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT": commandOnly,
	"DOWNSTREAM_LOCAL_ADDRESS":                      commandOnly,
	"DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":         commandOnly,
	"DOWNSTREAM_LOCAL_PORT":                         commandOnly,
}

// accessLogCommands are the commands only an access log formats: they read the finished request
// (Envoy's StreamInfo once the stream ended: stream_info_formatter.cc).
var accessLogCommands = map[string]int{
	"RESPONSE_FLAGS":                 commandOnly,
	"RESPONSE_CODE_DETAILS":          commandOnly,
	"BYTES_RECEIVED":                 commandOnly,
	"BYTES_SENT":                     commandOnly,
	"DURATION":                       commandOnly,
	"RESPONSE_DURATION":              commandOnly,
	"UPSTREAM_REQUEST_ATTEMPT_COUNT": commandOnly,
}

// NumericCommand reports whether a command's value is a number, which a json_format value made of
// that command alone writes as a JSON number (Envoy's typed JSON formatter).
func NumericCommand(command string) bool {
	switch command {
	case "RESPONSE_CODE", "BYTES_RECEIVED", "BYTES_SENT", "DURATION", "RESPONSE_DURATION", "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return true
	}
	return false
}

// formatCommand is Envoy's command grammar at a "%": the name, the argument in parentheses, the
// length after ":", the closing "%".
var formatCommand = regexp.MustCompile(`^%((?:[A-Z]|[0-9]|_)+)(?:\((.*?)\))?(?::([0-9]+))?%`)

// ParseFormat parses a header value or a local reply's body format. A value without a command is
// returned as nil with the "%%" escapes resolved in plain.
func ParseFormat(value string) (f Format, plain string, err error) { return parseFormat(value, false) }

// ParseAccessLogFormat parses an access log's format: the same grammar and commands as ParseFormat,
// and the commands of the finished request (accessLogCommands).
func ParseAccessLogFormat(value string) (f Format, plain string, err error) {
	return parseFormat(value, true)
}

func parseFormat(value string, accessLog bool) (f Format, plain string, err error) {
	var lit strings.Builder
	for i := 0; i < len(value); i++ {
		if value[i] != '%' {
			lit.WriteByte(value[i])
			continue
		}
		if i+1 < len(value) && value[i+1] == '%' {
			lit.WriteByte('%')
			i++
			continue
		}
		m := formatCommand.FindStringSubmatch(value[i:])
		if m == nil {
			return nil, "", fmt.Errorf("%q: no valid command at position %d (write %%%% for a literal %%)", value, i)
		}
		part, err := formatPart(m[1], m[2], m[3], strings.Contains(m[0], "("), accessLog)
		if err != nil {
			return nil, "", fmt.Errorf("%q: %w", value, err)
		}
		if lit.Len() > 0 {
			f = append(f, FormatPart{Literal: lit.String()})
			lit.Reset()
		}
		f = append(f, part)
		i += len(m[0]) - 1
	}
	if f == nil {
		return nil, lit.String(), nil
	}
	if lit.Len() > 0 {
		f = append(f, FormatPart{Literal: lit.String()})
	}
	return f, "", nil
}

// formatPart checks one command's syntax as Envoy's CommandSyntaxChecker::checkSyntax does.
func formatPart(command, arg, length string, hasArg, accessLog bool) (FormatPart, error) {
	switch command { // the newer names of REQ and RESP, which Envoy's default format now uses
	case "REQUEST_HEADER":
		command = "REQ"
	case "RESPONSE_HEADER":
		command = "RESP"
	}
	kind, ok := formatCommands[command]
	if k, logOnly := accessLogCommands[command]; logOnly {
		if !accessLog {
			return FormatPart{}, fmt.Errorf("command %%%s%% is supported in access log formats only", command)
		}
		kind, ok = k, true
	}
	if !ok {
		names := slices.Collect(maps.Keys(formatCommands))
		if accessLog {
			names = slices.AppendSeq(names, maps.Keys(accessLogCommands))
		}
		slices.Sort(names)
		return FormatPart{}, fmt.Errorf("command %%%s%% is unknown or not supported by meshproof (supported: %s)",
			command, strings.Join(names, ", "))
	}
	part := FormatPart{Command: command}
	switch {
	case kind == commandOnly && (hasArg || length != ""):
		return part, fmt.Errorf("%%%s%% takes no parameters or length", command)
	case kind == headerArg && arg == "":
		return part, fmt.Errorf("%%%s%% requires a header: %%%s(name)%% or %%%s(name?alternative)%%", command, command, command)
	case kind == layoutArg && length != "":
		return part, fmt.Errorf("%%%s%% takes no length", command)
	}
	if length != "" {
		n, err := strconv.Atoi(length)
		if err != nil {
			return part, fmt.Errorf("%%%s%%: length %q is not an integer", command, length)
		}
		part.MaxLen = n
	}
	switch kind {
	case headerArg:
		name, alt, _ := strings.Cut(arg, "?")
		if strings.Contains(alt, "?") {
			return part, fmt.Errorf("%%%s(%s)%%: more than one alternative header", command, arg)
		}
		part.Header, part.Alt = formatHeaderName(name), formatHeaderName(alt)
	case layoutArg:
		part.Layout = arg
		if err := CheckTimeLayout(arg); err != nil {
			return part, fmt.Errorf("%%%s(%s)%%: %w", command, arg, err)
		}
	}
	return part, nil
}

// formatHeaderName is a REQ/RESP header name as the proxy looks it up: canonical, or a pseudo-header
// in lower case.
func formatHeaderName(name string) string {
	if strings.HasPrefix(name, ":") || name == "" {
		return strings.ToLower(name)
	}
	return http.CanonicalHeaderKey(name)
}

// timeSpecifiers are the strftime conversions START_TIME formats (Envoy's DateFormatter, which adds
// %E<n>S (seconds with n fractional digits), %Es (epoch seconds) and %<n>f (n fractional digits)).
const timeSpecifiers = "YmdHMSyjbBaAeTFDzZsfp%"

// CheckTimeLayout checks a START_TIME layout's conversions.
func CheckTimeLayout(layout string) error {
	for i := 0; i < len(layout); i++ {
		if layout[i] != '%' {
			continue
		}
		j := i + 1
		if j < len(layout) && layout[j] == 'E' {
			j++
		}
		for j < len(layout) && layout[j] >= '0' && layout[j] <= '9' {
			j++
		}
		if j >= len(layout) || !strings.ContainsRune(timeSpecifiers, rune(layout[j])) {
			return fmt.Errorf("time conversion %q at %d is not supported (supported: %%Y %%m %%d %%H %%M %%S %%y %%j %%b %%B %%a %%A %%e %%T %%F %%D %%z %%Z %%s %%p %%%%, %%E<n>S, %%Es, %%<n>f)", layout[i:min(j+1, len(layout))], i)
		}
		i = j
	}
	return nil
}
