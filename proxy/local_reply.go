package proxy

import (
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
)

// noGrpcStatus: a local reply whose gRPC status, for a gRPC request, is mapped from its HTTP status.
const noGrpcStatus = -1

// sendLocalReply answers r itself, as Envoy's Utility::sendLocalReply / prepareLocalReply
// (source/common/http/utility.cc): hdr's headers (the caller's modify_headers), then the
// local_reply_config's rewrite of code, body and headers. A gRPC request (Envoy's
// Grpc::Common::isGrpcRequestHeaders: content-type application/grpc or application/grpc+…) gets a
// trailers-only gRPC response instead of that code and body: HTTP 200, content-type application/grpc,
// grpc-status — unless the rewrite added one — grpcStatus when given (≥ 0), else the code's
// (Grpc::Utility::httpToGrpcStatus), and the body, percent-encoded, as grpc-message (a json_format
// body without its final newline; none for a HEAD request); no body. Over HTTP/1.1 it goes out with
// Content-Length: 0, as Envoy's HTTP/1 codec writes a headers-only response; over HTTP/2 without one
// (Utility::sendLocalReply removes content-length from a gRPC reply, source/common/http/utility.cc). The downstream stats and
// the access log see the status sent, 200 (ActiveStream::chargeStats reads the response headers).
func (cm *connManager) sendLocalReply(w http.ResponseWriter, r *http.Request, hdr http.Header, code int, body string, grpcStatus int) {
	h := w.Header()
	for k, v := range hdr {
		h[k] = v
	}
	contentType := "text/plain"
	if cm.localReplies != nil {
		if r == nil {
			r = &http.Request{Header: http.Header{}}
		}
		code, body, contentType = cm.localReplies.rewrite(r, h, code, body, cm.replyFormat(w, r, nil, code))
	}
	if r != nil && isGrpcRequest(r) {
		h.Set(hdrContentType, grpcContentType)
		if headerValue(h, hdrGrpcStatus) == "" {
			if grpcStatus < 0 {
				grpcStatus = httpToGrpcStatus(code)
			}
			h.Set(hdrGrpcStatus, strconv.Itoa(grpcStatus))
		}
		if body != "" && r.Method != http.MethodHead {
			if contentType == "application/json" && body[len(body)-1] == '\n' {
				body = body[:len(body)-1]
			}
			h.Set(hdrGrpcMessage, grpcPercentEncode(body))
		}
		if r.ProtoMajor < 2 {
			h.Set(hdrContentLength, "0")
		} else {
			// None, as Envoy's sendLocalReply removes it (its HTTP/1 codec alone adds the 0); a nil
			// value keeps x/net's server from adding "content-length: 0" to a bodiless response.
			h[hdrContentLength] = nil
		}
		w.WriteHeader(http.StatusOK)
		cm.st.status(http.StatusOK)
		infoOf(r).sent(http.StatusOK, 0)
		return
	}
	if body != "" {
		h.Set(hdrContentType, contentType)
	}
	h.Set(hdrContentLength, strconv.Itoa(len(body)))
	w.WriteHeader(code)
	_, _ = io.WriteString(w, body)
	cm.st.status(code)
	infoOf(r).sent(code, int64(len(body)))
}

// localReplies is the HCM local_reply_config, applied to every local reply of the connection manager,
// its filters and the router (Envoy's LocalReplyImpl, source/common/local_reply/local_reply.cc).
type localReplies struct {
	cfg *config.LocalReplyConfig
}

func newLocalReplies(cfg *config.LocalReplyConfig) *localReplies {
	if cfg == nil {
		return nil
	}
	return &localReplies{cfg: cfg}
}

// rewrite is LocalReplyImpl::rewrite: the first mapper whose filter matches (on the reply's status as
// it was, and r's headers) sets its body, status and headers_to_add, and its body_format_override
// replaces body_format; then the body is formatted. It returns the status, body and content type.
// fc formats the values of the mappers' headers_to_add.
func (lr *localReplies) rewrite(r *http.Request, h http.Header, code int, body string, fc *formatContext) (int, string, string) {
	format := lr.cfg.BodyFormat
	for i := range lr.cfg.Mappers {
		m := &lr.cfg.Mappers[i]
		if !mapperMatches(m, r, code) {
			continue
		}
		if m.Body != nil {
			body = *m.Body
		}
		if m.Status != 0 {
			code = m.Status
		}
		fc.status = code
		applyMutation(h, m.Headers, fc)
		if m.BodyFormat != nil {
			format = m.BodyFormat
		}
		break
	}
	if format == nil {
		return code, body, "text/plain"
	}
	rc := replyContext{h: h, code: code, body: body, fc: fc}
	if format.JSON != nil {
		b, _ := json.Marshal(rc.object(format.JSON)) // maps and strings only: no error
		return code, string(b) + "\n", orDefault(format.ContentType, "application/json")
	}
	return code, rc.text(format.Text), orDefault(format.ContentType, "text/plain")
}

func orDefault(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// mapperMatches applies a mapper's filter: status_code_filter (ComparisonFilter::compareAgainstValue,
// source/common/access_log/access_log_impl.cc) or header_filter on the request headers.
func mapperMatches(m *config.ResponseMapper, r *http.Request, code int) bool {
	switch {
	case m.StatusCode != nil:
		return statusCompare(m.StatusCode, code)
	case m.Header != nil:
		return r != nil && HeaderMatches(*m.Header, r.Header)
	}
	return false
}

// replyContext is what a local reply's format commands read: its headers, status and body, and the
// request's formatContext for every other command (one parser and one set of commands for header
// values and body formats, as Envoy's substitution formatter).
type replyContext struct {
	h    http.Header
	code int
	body string
	fc   *formatContext
}

// value is one command's value; ok is false when it has none (a missing header, an address not known),
// which a text format writes as Envoy's placeholder "-".
func (rc *replyContext) value(p config.FormatPart) (string, bool) {
	var v string
	switch p.Command {
	case "LOCAL_REPLY_BODY":
		v = rc.body
	case "RESPONSE_CODE":
		v = strconv.Itoa(rc.code)
	case "REQ", "RESP", "REQ_WITHOUT_QUERY":
		h, request := rc.fc.req, true
		if p.Command == "RESP" {
			h, request = rc.h, false
		}
		s, ok := rc.fc.headerValue(h, p.Header, request)
		if !ok && p.Alt != "" {
			s, ok = rc.fc.headerValue(h, p.Alt, request)
		}
		if !ok {
			return "", false
		}
		if p.Command == "REQ_WITHOUT_QUERY" {
			s = withoutQuery(s)
		}
		v = s
	default:
		if v = rc.fc.command(&p); v == "" {
			return "", false
		}
	}
	if p.MaxLen > 0 && len(v) > p.MaxLen {
		v = v[:p.MaxLen]
	}
	return v, true
}

// text formats a text format: a command without a value is "-" (Envoy's placeholder).
func (fc *replyContext) text(parts config.Format) string {
	var b strings.Builder
	b.Grow(256) // a line of Envoy's default format, mostly: one allocation
	for _, p := range parts {
		if p.Command == "" {
			b.WriteString(p.Literal)
			continue
		}
		v, ok := fc.value(p)
		if !ok {
			v = "-"
		}
		b.WriteString(v)
	}
	return b.String()
}

// object formats a json_format object: a value that is a single command keeps its type (the
// status, byte counts and durations numbers; a missing value null), any other format string is a
// string.
func (fc *replyContext) object(t *config.JSONTemplate) map[string]any {
	out := make(map[string]any, len(t.Keys))
	for _, k := range t.Keys {
		v := t.Values[k]
		switch {
		case v.Object != nil:
			out[k] = fc.object(v.Object)
		case v.Plain != nil:
			out[k] = v.Plain.AsInterface()
		case len(v.Format) == 1 && v.Format[0].Command != "":
			s, ok := fc.value(v.Format[0])
			switch {
			case !ok:
				out[k] = nil
			case config.NumericCommand(v.Format[0].Command):
				if n, err := strconv.ParseInt(s, 10, 64); err == nil {
					out[k] = n
				} else {
					out[k] = s
				}
			default:
				out[k] = s
			}
		default:
			out[k] = fc.text(v.Format)
		}
	}
	return out
}
