package proxy

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
)

// formatContext is what the substitution commands of header values read (Envoy's Formatter::Context
// and StreamInfo): the downstream request, the headers of each side, the route, the upstream.
type formatContext struct {
	r *http.Request
	// req and resp are the request and response headers the commands read: on the request side req
	// is the upstream request's headers as they are being mutated, resp nil; on the response side req
	// is the downstream request's, resp the response's being mutated.
	req, resp http.Header
	status    int // the response's code (0 on the request side, as Envoy's RESPONSE_CODE then)
	start     time.Time
	route     *config.Route
	cluster   string // the route's cluster ("": none)
	upstream  string // the upstream host's address, host:port ("": none yet)
	hostname  string
	// si and end are an access log's: the finished request and when it ended (nil, zero elsewhere).
	si  *streamInfo
	end time.Time
}

// format evaluates a header value's commands as Envoy's substitution formatter with omit_empty_values
// (source/common/formatter/substitution_formatter.cc, stream_info_formatter.cc,
// http_specific_formatter.cc): a value that is not available is "".
func (fc *formatContext) format(f config.Format) string {
	var b strings.Builder
	for i := range f {
		p := &f[i]
		if p.Command == "" {
			b.WriteString(p.Literal)
			continue
		}
		v := fc.command(p)
		if p.MaxLen > 0 && len(v) > p.MaxLen {
			v = v[:p.MaxLen]
		}
		b.WriteString(v)
	}
	return b.String()
}

func (fc *formatContext) command(p *config.FormatPart) string {
	switch p.Command {
	case "REQ":
		return fc.header(fc.req, p, true)
	case "RESP":
		return fc.header(fc.resp, p, false)
	case "REQ_WITHOUT_QUERY":
		return withoutQuery(fc.header(fc.req, p, true))
	case "RESPONSE_FLAGS", "RESPONSE_CODE_DETAILS", "BYTES_RECEIVED", "BYTES_SENT", "DURATION", "RESPONSE_DURATION",
		"UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return fc.streamCommand(p.Command)
	case "START_TIME":
		return formatTime(fc.start.UTC(), p.Layout)
	case "PROTOCOL":
		return "HTTP/1.1"
	case "RESPONSE_CODE":
		return strconv.Itoa(fc.status)
	case "HOSTNAME":
		return fc.hostname
	case "REQUESTED_SERVER_NAME":
		return "" // no TLS, no SNI
	case "ROUTE_NAME":
		if fc.route != nil {
			return fc.route.Name
		}
		return ""
	case "UPSTREAM_CLUSTER":
		return fc.cluster
	case "UPSTREAM_HOST", "UPSTREAM_REMOTE_ADDRESS":
		return fc.upstream
	case "UPSTREAM_REMOTE_ADDRESS_WITHOUT_PORT":
		return withoutPort(fc.upstream)
	case "DOWNSTREAM_REMOTE_ADDRESS", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS":
		return fc.r.RemoteAddr
	case "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT", "DOWNSTREAM_DIRECT_REMOTE_ADDRESS_WITHOUT_PORT":
		return withoutPort(fc.r.RemoteAddr)
	case "DOWNSTREAM_LOCAL_ADDRESS":
		return fc.localAddr()
	case "DOWNSTREAM_LOCAL_ADDRESS_WITHOUT_PORT":
		return withoutPort(fc.localAddr())
	case "DOWNSTREAM_LOCAL_PORT":
		_, port, _ := net.SplitHostPort(fc.localAddr())
		return port
	}
	return ""
}

// streamCommand is a command of the finished request, which only access logs format (Envoy's
// stream_info_formatter.cc): "" when not available (written "-").
func (fc *formatContext) streamCommand(command string) string {
	si := fc.si
	if si == nil {
		return ""
	}
	switch command {
	case "RESPONSE_FLAGS":
		return si.flags.String()
	case "RESPONSE_CODE_DETAILS":
		return si.details
	case "BYTES_RECEIVED":
		return itoa64(si.bytesIn.Load())
	case "BYTES_SENT":
		return itoa64(si.bytesOut)
	case "DURATION": // the start to the last byte sent, in whole milliseconds
		return itoa64(fc.end.Sub(si.start).Milliseconds())
	case "RESPONSE_DURATION": // the start to the upstream response's first byte; none for a local reply
		if si.upstreamRx.IsZero() {
			return ""
		}
		return itoa64(si.upstreamRx.Sub(si.start).Milliseconds())
	case "UPSTREAM_REQUEST_ATTEMPT_COUNT":
		return strconv.Itoa(si.attempts)
	}
	return ""
}

// withoutQuery is a path without its query string (REQ_WITHOUT_QUERY).
func withoutQuery(path string) string {
	if i := strings.IndexByte(path, '?'); i >= 0 {
		return path[:i]
	}
	return path
}

// header is REQ or RESP: the header's first value, else the alternative's (Envoy's HeaderFormatter);
// the request's pseudo-headers read its target, method and authority.
func (fc *formatContext) header(h http.Header, p *config.FormatPart, request bool) string {
	if v, ok := fc.headerValue(h, p.Header, request); ok {
		return v
	}
	if p.Alt != "" {
		v, _ := fc.headerValue(h, p.Alt, request)
		return v
	}
	return ""
}

func (fc *formatContext) headerValue(h http.Header, name string, request bool) (string, bool) {
	if h == nil {
		return "", false
	}
	if strings.HasPrefix(name, ":") {
		if !request { // the response's only pseudo-header, :status, is RESPONSE_CODE's
			return "", false
		}
		switch name {
		case ":path":
			return fc.r.RequestURI, true
		case ":method":
			return fc.r.Method, true
		case ":authority":
			return fc.r.Host, true
		case ":scheme":
			return "http", true
		}
		return "", false
	}
	if v := h[name]; len(v) > 0 {
		return v[0], true
	}
	return "", false
}

// localAddr is the downstream connection's local address, as the listener's server records it.
func (fc *formatContext) localAddr() string {
	if a, ok := fc.r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		return a.String()
	}
	return ""
}

// withoutPort is an address's IP, as Envoy's *_WITHOUT_PORT commands (IPv6 without brackets).
func withoutPort(addr string) string {
	if host, _, err := net.SplitHostPort(addr); err == nil {
		return host
	}
	return addr
}

// defaultTimeLayout is START_TIME's format without a layout (Envoy's AccessLogDateTimeFormatter).
const defaultTimeLayout = "%Y-%m-%dT%H:%M:%E3SZ"

// formatTime formats t with a strftime layout as Envoy's DateFormatter: the C conversions, %E<n>S
// (seconds with n fractional digits), %Es (epoch seconds) and %<n>f (n fractional digits, 9 by
// default). The layout was checked when the configuration was loaded (config.CheckTimeLayout).
func formatTime(t time.Time, layout string) string {
	if layout == "" && t.Location() == time.UTC && t.Year() >= 1000 && t.Year() <= 9999 {
		return t.Format("2006-01-02T15:04:05.000Z") // defaultTimeLayout, in one step (every access log line)
	}
	if layout == "" {
		layout = defaultTimeLayout
	}
	var b strings.Builder
	for i := 0; i < len(layout); i++ {
		if layout[i] != '%' || i+1 == len(layout) {
			b.WriteByte(layout[i])
			continue
		}
		j := i + 1
		ext := layout[j] == 'E'
		if ext {
			j++
		}
		digits := -1
		if k := j; k < len(layout) && layout[k] >= '0' && layout[k] <= '9' {
			for k < len(layout) && layout[k] >= '0' && layout[k] <= '9' {
				k++
			}
			digits, _ = strconv.Atoi(layout[j:k])
			j = k
		}
		if j >= len(layout) {
			b.WriteString(layout[i:])
			break
		}
		fraction := func(n int) string {
			if n <= 0 || n > 9 {
				n = 9
			}
			return strconv.FormatInt(int64(t.Nanosecond())+1e9, 10)[1 : 1+n]
		}
		switch c := layout[j]; {
		case ext && c == 'S':
			b.WriteString(t.Format("05"))
			if digits > 0 {
				b.WriteString("." + fraction(digits))
			}
		case ext && c == 's':
			b.WriteString(strconv.FormatInt(t.Unix(), 10))
		case c == 'f':
			b.WriteString(fraction(digits))
		default:
			b.WriteString(strftime(t, c))
		}
		i = j
	}
	return b.String()
}

// strftime is one C strftime conversion of t.
func strftime(t time.Time, c byte) string {
	switch c {
	case 'Y':
		return strconv.Itoa(t.Year())
	case 'm':
		return t.Format("01")
	case 'd':
		return t.Format("02")
	case 'H':
		return t.Format("15")
	case 'M':
		return t.Format("04")
	case 'S':
		return t.Format("05")
	case 'y':
		return t.Format("06")
	case 'j':
		return t.Format("002")
	case 'b':
		return t.Format("Jan")
	case 'B':
		return t.Format("January")
	case 'a':
		return t.Format("Mon")
	case 'A':
		return t.Format("Monday")
	case 'e':
		return t.Format("_2")
	case 'T':
		return t.Format("15:04:05")
	case 'F':
		return t.Format("2006-01-02")
	case 'D':
		return t.Format("01/02/06")
	case 'z':
		return t.Format("-0700")
	case 'Z':
		return t.Format("MST")
	case 's':
		return strconv.FormatInt(t.Unix(), 10)
	case 'p':
		return t.Format("PM")
	case '%':
		return "%"
	}
	return "%" + string(c)
}
