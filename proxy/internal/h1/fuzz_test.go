package h1_test

// Native Go fuzz targets of the package's parsers (`make fuzz`; `go test` runs their seed corpus and
// testdata/fuzz/ as ordinary tests). Each checks properties, not only the absence of a panic:
//
//   - FuzzRequest: the server's request parser and net/http (http.ReadRequest plus the checks its server
//     makes) agree on accept/reject for the same bytes, and on the request and its framing when both
//     accept: method, target, Host, header fields, Close, chunked or not, the body and where the next
//     message starts. Disagreements are allowed only where h1 is the stricter one, for the reasons listed
//     at stricterThanNetHTTP.
//   - FuzzChunked: the server's chunked body reader and net/http's (httputil.NewChunkedReader and a
//     textproto trailer) agree on the body and on where it ends; h1 may only be stricter.
//   - FuzzResponse: the pool's response parser accepts only what net/http's http.ReadResponse accepts,
//     with the same status, framing and body.
//   - FuzzPipeline: a byte stream of pipelined requests sent on one loopback connection to a real Server
//     is answered in order, request by request, as net/http parses the same stream (same method, target
//     and body: no request can be smuggled in or out of another), or the connection is closed after a
//     4xx/5xx of the server's own; the connection always ends once the client has sent everything.

import (
	"bufio"
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"hash/crc32"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/textproto"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http/httpguts"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// rawMessages are the raw HTTP messages the package's specs send and answer with (string literals, and
// sums of literals, of its _test.go files that hold an HTTP version), as seeds.
func rawMessages(tb testing.TB) []string {
	files, err := filepath.Glob("*_test.go")
	if err != nil {
		tb.Fatal(err)
	}
	var out []string
	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			tb.Fatal(err)
		}
		ast.Inspect(f, func(n ast.Node) bool {
			e, ok := n.(ast.Expr)
			if !ok {
				return true
			}
			if s, ok := literal(e); ok {
				if strings.Contains(s, "HTTP/1.") && strings.Contains(s, "\n") && !slices.Contains(out, s) {
					out = append(out, s)
				}
				return false
			}
			return true
		})
	}
	if len(out) < 10 {
		tb.Fatalf("found %d raw messages in the specs; the seed extraction is broken", len(out))
	}
	return out
}

// literal evaluates a string literal or a sum of them.
func literal(e ast.Expr) (string, bool) {
	switch x := e.(type) {
	case *ast.BasicLit:
		if x.Kind != token.STRING {
			return "", false
		}
		s, err := strconv.Unquote(x.Value)
		return s, err == nil
	case *ast.BinaryExpr:
		if x.Op != token.ADD {
			return "", false
		}
		a, ok1 := literal(x.X)
		b, ok2 := literal(x.Y)
		return a + b, ok1 && ok2
	case *ast.ParenExpr:
		return literal(x.X)
	}
	return "", false
}

// Requests that mark where h1 and net/http part ways, in the seed corpus of FuzzRequest and FuzzPipeline.
var requestSeeds = []string{
	"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"\r\nGET / HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET http://a.example/p?q HTTP/1.1\r\nHost: b\r\n\r\n",
	"GET * HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.0\r\n\r\n",
	"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
	"GET / HTTP/1.2\r\nHost: x\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
	"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\nabc",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
	"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3;ext=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX: a\r\n b\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nX : a\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
	"CONNECT a.example:443 HTTP/1.1\r\nHost: a.example:443\r\n\r\n",
	"GET /%zz HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET / HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n",
	"GET / HTTP/1.1\nHost: x\n\n",
	"POST / HTTP/1.1\r\nHost: x\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nhi",
	"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
	"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n",
	"GET /a HTTP/1.1\r\nHost: x\r\n\r\nBAD\r\n\r\nGET /c HTTP/1.1\r\nHost: x\r\n\r\n",
}

// stricterThanNetHTTP says why h1 rejects a request net/http accepts, when that is one of the
// deliberate differences below; "" when it is not. Each follows Envoy's HTTP/1 codec, which is stricter
// than net/http in the same places, and none can make h1 take a request net/http does not:
func stricterThanNetHTTP(b []byte, req *http.Request) string {
	head := string(b[:max(bytes.Index(b, []byte("\n\r\n")), bytes.Index(b, []byte("\n\n")), 0)])
	hasField := func(name string) bool { _, ok := req.Header[name]; return ok }
	switch {
	// CONNECT and protocol upgrades are not proxied (Envoy needs an upgrade_configs entry for them).
	case req.Method == http.MethodConnect:
		return "CONNECT"
	case hasField("Upgrade") && httpguts.HeaderValuesContainsToken(req.Header["Connection"], "upgrade"):
		return "upgrade"
	// Obsolete line folding (a field line starting with a space or tab): RFC 9112 §5.2 lets a server
	// reject it with 400; net/http unfolds it, Envoy rejects it.
	case strings.Contains(head, "\n ") || strings.Contains(head, "\n\t"):
		return "obsolete line folding"
	// Only HTTP/1.0 and 1.1: net/http takes any HTTP/1.x.
	case req.ProtoMajor != 1 || req.ProtoMinor > 1:
		return "version"
	// Content-Length and Transfer-Encoding together: net/http drops the Content-Length (RFC 9112 §6.3
	// allows either); h1, like Envoy without allow_chunked_length, answers 400.
	case len(req.TransferEncoding) > 0 && strings.Contains(strings.ToLower(head), "\ncontent-length:"):
		return "Content-Length with Transfer-Encoding"
	// Transfer-Encoding on HTTP/1.0, which net/http ignores (framing the body by Content-Length or as
	// empty): RFC 9112 §6.1 has the framing treated as faulty; h1 refuses a coding other than chunked.
	case req.ProtoMinor == 0 && strings.Contains(strings.ToLower(head), "\ntransfer-encoding:"):
		return "Transfer-Encoding on HTTP/1.0"
	// Content-Length of 19 digits (net/http takes up to 2^63-1): h1 takes at most 18, 10^18-1 bytes.
	case req.ContentLength >= 1e18:
		return "Content-Length of 19 digits"
	// A request target in absolute form needs a host (net/http takes "http:x" as an opaque URL).
	case req.URL.Scheme != "" && req.URL.Host == "":
		return "absolute form without a host"
	// A target net/http takes that is neither origin form, absolute form nor "*": h1 refuses it.
	case !strings.HasPrefix(req.RequestURI, "/") && req.RequestURI != "*" && req.URL.Scheme == "":
		return "target form"
	// A percent sign that does not start an escape in the path (net/http checks only some of them).
	case strings.Contains(req.RequestURI, "%") && func() bool {
		p, _, _ := strings.Cut(req.RequestURI, "?")
		_, err := urlPathUnescape(p)
		return err != nil
	}():
		return "bad escape in the path"
	}
	return ""
}

// urlPathUnescape is url.PathUnescape, what h1 applies to an origin-form path.
func urlPathUnescape(p string) (string, error) {
	for i := 0; i < len(p); i++ {
		if p[i] != '%' {
			continue
		}
		if i+2 >= len(p) || !isHex(p[i+1]) || !isHex(p[i+2]) {
			return "", errors.New("bad escape")
		}
	}
	return p, nil
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

// refRequest is what net/http makes of the request at the start of b.
type refRequest struct {
	req      *http.Request
	body     []byte
	bodyErr  error
	consumed int
}

// leadingEmptyLines counts the bytes of up to four empty lines before a request: h1, as RFC 9112 §2.2
// asks of a server, skips them before every request; net/http only after a POST (its server discards
// CR and LF bytes there). A deliberate leniency, not a framing difference: the bytes are no message.
func leadingEmptyLines(b []byte) int {
	n := 0
	for range 4 {
		switch {
		case bytes.HasPrefix(b[n:], []byte("\r\n")):
			n += 2
		case bytes.HasPrefix(b[n:], []byte("\n")):
			n++
		default:
			return n
		}
	}
	return n
}

var errBadHost = errors.New("malformed Host header")

// netHTTPRequest parses the request at the start of b as net/http's server does: http.ReadRequest, the
// checks of its conn.readRequest (version, Host, field names and values), then the body.
func netHTTPRequest(b []byte) (refRequest, error) {
	skip := leadingEmptyLines(b)
	src := bytes.NewReader(b[skip:])
	br := bufio.NewReader(src)
	consumed := func() int { return len(b) - src.Len() - br.Buffered() }
	req, err := http.ReadRequest(br)
	if err != nil {
		return refRequest{consumed: consumed()}, err
	}
	// http.ReadRequest drops the Host field net/http's server checks: read the fields again for it.
	tp := textproto.NewReader(bufio.NewReader(bytes.NewReader(b[skip:])))
	_, _ = tp.ReadLine()
	fields, _ := tp.ReadMIMEHeader()
	hosts, haveHost := fields["Host"]
	switch {
	case req.ProtoMajor != 1:
		err = errors.New("unsupported protocol version")
	case req.ProtoAtLeast(1, 1) && (!haveHost || len(hosts) == 0) && req.Method != http.MethodConnect:
		err = errors.New("missing required Host header")
	case len(hosts) == 1 && !httpguts.ValidHostHeader(hosts[0]):
		err = errBadHost
	}
	for k, vv := range req.Header {
		if !httpguts.ValidHeaderFieldName(k) {
			err = errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				err = errors.New("invalid header value")
			}
		}
	}
	if err != nil {
		return refRequest{consumed: consumed()}, err
	}
	r := refRequest{req: req}
	r.body, r.bodyErr = io.ReadAll(io.LimitReader(req.Body, 1<<20))
	r.consumed = consumed()
	return r, nil
}

// incomplete reports whether a parse error only says that the input ended too early.
func incomplete(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF)
}

// compareRequests says how h1's request differs from net/http's, "" when they agree.
func compareRequests(got h1.Parsed, want refRequest) string {
	g, w := got.Req, want.req
	var diffs []string
	differ := func(what string, a, b any) {
		if fmt.Sprint(a) != fmt.Sprint(b) {
			diffs = append(diffs, fmt.Sprintf("%s: got %q, net/http %q", what, fmt.Sprint(a), fmt.Sprint(b)))
		}
	}
	differ("method", g.Method, w.Method)
	differ("target", g.RequestURI, w.RequestURI)
	differ("host", g.Host, w.Host)
	differ("path", g.URL.Path, w.URL.Path)
	differ("query", g.URL.RawQuery, w.URL.RawQuery)
	differ("close", g.Close, w.Close)
	differ("chunked", got.Chunked, len(w.TransferEncoding) > 0)
	differ("body", string(got.Body), string(want.body))
	differ("body error", got.BodyErr != nil, want.bodyErr != nil)
	if got.BodyErr == nil {
		differ("bytes consumed", got.Consumed, want.consumed)
	}
	// The fields: net/http's server drops Host and the framing fields it used (Trailer goes to
	// Request.Trailer; h1 keeps it in the header, and the proxy drops it as hop-by-hop); it adds Cache-Control
	// for Pragma: no-cache (RFC 7234 §5.4).
	gh, wh := g.Header.Clone(), w.Header.Clone()
	for _, h := range []http.Header{gh, wh} {
		for _, k := range []string{"Host", "Content-Length", "Transfer-Encoding", "Trailer"} {
			delete(h, k)
		}
	}
	if p, ok := gh["Pragma"]; ok && len(p) > 0 && p[0] == "no-cache" && gh["Cache-Control"] == nil {
		gh["Cache-Control"] = []string{"no-cache"}
	}
	differ("header", fmt.Sprintf("%q", sortedHeader(gh)), fmt.Sprintf("%q", sortedHeader(wh)))
	return strings.Join(diffs, "; ")
}

func sortedHeader(h http.Header) []string {
	var out []string
	for k, vs := range h {
		out = append(out, k+": "+strings.Join(vs, "\x00"))
	}
	slices.Sort(out)
	return out
}

// tolerated lists findings already reported (by name, comma-separated in MESHPROOF_FUZZ_TOLERATE), so
// that a local fuzzing run can get past one to find the next. Nothing is tolerated by default: the
// committed crashers under testdata/fuzz fail until the finding is fixed.
func tolerated(name string) bool {
	return slices.Contains(strings.Split(os.Getenv("MESHPROOF_FUZZ_TOLERATE"), ","), name)
}

// knownFinding names a reported disagreement the input hits, "" for none.
func knownFinding(b []byte, got h1.Parsed, want refRequest, werr error) string {
	if got.Req != nil && got.Req.ProtoMinor == 0 && got.Chunked {
		return "te-http10" // h1 decodes chunked on HTTP/1.0; net/http ignores Transfer-Encoding there
	}
	if got.Req != nil && werr != nil && werr.Error() == errBadHost.Error() {
		return "host-syntax" // h1 does not check the Host field's syntax
	}
	if got.Chunked && got.BodyErr == nil && want.req != nil && want.bodyErr != nil && bytes.Equal(got.Body, want.body) {
		// h1 reads a chunked body's trailer to the first empty line, a bare LF one included, checking
		// nothing; net/http wants fields ending in CRLF CRLF.
		return "trailer"
	}
	return ""
}

func FuzzRequest(f *testing.F) {
	for _, s := range append(rawMessages(f), requestSeeds...) {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := h1.ParseRequest(b)
		want, werr := netHTTPRequest(b)
		if name := knownFinding(b, got, want, werr); name != "" && tolerated(name) {
			t.Skip(name)
		}
		switch {
		case gerr != nil && incomplete(gerr):
			// h1 reads the whole head before parsing it; it would wait for more bytes.
		case gerr == nil && werr != nil && incomplete(werr):
			t.Fatalf("h1 took a whole request where net/http waits for more (%v):\n%q", werr, b)
		case gerr == nil && werr != nil:
			t.Fatalf("h1 accepts what net/http rejects (%v):\n%q\nh1: %s %s Host %q chunked=%v body %q",
				werr, b, got.Req.Method, got.Req.RequestURI, got.Req.Host, got.Chunked, got.Body)
		case gerr != nil && werr == nil:
			if why := stricterThanNetHTTP(b[leadingEmptyLines(b):], want.req); why == "" {
				t.Fatalf("h1 rejects (%v) what net/http accepts, for no listed reason:\n%q", gerr, b)
			}
		case gerr == nil && werr == nil:
			var fe *h1.FramingError
			if errors.As(got.BodyErr, &fe) && want.bodyErr == nil {
				// Stricter, which is allowed: h1 refuses a body's framing that net/http reads (a bare LF
				// line in a trailer section that a CRLF CRLF follows later, which textproto accepts). The
				// server answers 400 and closes; nothing of the body is forwarded.
				return
			}
			if d := compareRequests(got, want); d != "" {
				t.Fatalf("h1 and net/http read the request differently: %s\n%q", d, b)
			}
		}
	})
}

// netHTTPChunked decodes a chunked body as net/http's server does: httputil's chunked reader, then the
// trailer read as a MIME header.
func netHTTPChunked(b []byte) ([]byte, int, error) {
	src := bytes.NewReader(b)
	br := bufio.NewReader(src)
	body, err := io.ReadAll(httputil.NewChunkedReader(br))
	if err == nil { // net/http's body.readTrailer: CRLF, or fields ending in CRLF CRLF
		if p, _ := br.Peek(2); string(p) == "\r\n" {
			_, _ = br.Discard(2)
		} else if p, _ := br.Peek(br.Buffered()); !bytes.Contains(p, []byte("\r\n\r\n")) {
			err = errors.New("no CRLF CRLF ending the trailer")
		} else {
			_, err = textproto.NewReader(br).ReadMIMEHeader()
		}
	}
	return body, len(b) - src.Len() - br.Buffered(), err
}

func FuzzChunked(f *testing.F) {
	for _, s := range []string{
		"0\r\n\r\n", "3\r\nabc\r\n0\r\n\r\n", "3;x=1\r\nabc\r\n0\r\nX-T: 1\r\n\r\nNEXT", "A\r\n0123456789\r\n0\r\n\r\n",
		"zz\r\n", "-5\r\nabc\r\n0\r\n\r\n", "1000000000000000000\r\n", "3\nabc\n0\n\n", "3\r\nabcdef\r\n0\r\n\r\n",
		"3 \r\nabc\r\n0\r\n\r\n", "0\r\nX: a\r\n b\r\n\r\n",
	} {
		f.Add([]byte(s))
	}
	for _, s := range rawMessages(f) {
		if _, body, ok := strings.Cut(s, "\r\n\r\n"); ok && strings.Contains(s, "chunked") {
			f.Add([]byte(body))
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		got, gerr := h1.ParseChunked(b)
		want, consumed, werr := netHTTPChunked(b)
		switch {
		case gerr == nil && werr != nil:
			// Stricter than h1 only in the trailer, which h1 reads to its empty line and drops (it is
			// never forwarded): a field net/http's textproto refuses there is no framing difference.
			if !bytes.Equal(got.Body, want) {
				t.Fatalf("h1 takes a chunked body net/http rejects (%v), with another body:\n%q\nh1 %q, net/http %q", werr, b, got.Body, want)
			}
			if _, err := io.ReadAll(httputil.NewChunkedReader(bufio.NewReader(bytes.NewReader(b)))); err != nil {
				t.Fatalf("h1 takes chunks net/http rejects (%v):\n%q", err, b)
			}
		case gerr == nil && werr == nil:
			if !bytes.Equal(got.Body, want) || got.Consumed != consumed {
				t.Fatalf("chunked body of %q: h1 read %q up to byte %d, net/http %q up to byte %d", b, got.Body, got.Consumed, want, consumed)
			}
		}
	})
}

// netHTTPResponse reads a response to method as net/http's client does (interim responses skipped).
//
// Up to four empty lines before the status line are skipped first, as h1 skips them before any message
// head: net/http refuses them before a response. A deliberate leniency, not a framing difference: the
// bytes are no message (an upstream's stray CRLF after a body).
func netHTTPResponse(b []byte, method string) (*http.Response, []byte, error) {
	br := bufio.NewReader(bytes.NewReader(b[leadingEmptyLines(b):]))
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return nil, nil, err
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
			return resp, body, err
		}
	}
}

func FuzzResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\n\r\nto the end",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.1 503\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\n\r\n",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	for _, s := range rawMessages(f) {
		if strings.HasPrefix(s, "HTTP/1.") {
			f.Add([]byte(s), false)
		}
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, head bool) {
		method := http.MethodGet
		if head {
			method = http.MethodHead
		}
		got, gerr := h1.ParseResponse(b, method)
		resp, body, werr := netHTTPResponse(b, method)
		if gerr == nil && got.Resp.ProtoMinor == 0 && got.Chunked && tolerated("te-http10") {
			t.Skip("te-http10") // h1 decodes chunked on HTTP/1.0; net/http ignores Transfer-Encoding there
		}
		if gerr == nil && werr != nil && strings.Contains(werr.Error(), "malformed HTTP") && bytes.Contains(b, []byte(" 1")) &&
			tolerated("interim-version") {
			t.Skip("interim-version") // h1 checks no version of an interim (1xx) response it skips
		}
		switch {
		case gerr != nil:
			// Stricter is fine: the proxy answers 502 where a net/http client would have taken it.
		case werr != nil && got.BodyErr == nil && bodyless(got.Resp.StatusCode, method) && framingError(werr):
			// A response without a body (to HEAD, 1xx, 204, 304) whatever its fields say (RFC 9112 §6.3):
			// h1 does not look at its framing fields, net/http checks them anyway.
		case werr != nil && got.BodyErr == nil:
			t.Fatalf("h1 takes a response net/http rejects (%v):\n%q", werr, b)
		case werr == nil && got.BodyErr == nil:
			// (A response without a body has no framing for h1; net/http still notes its Transfer-Encoding.)
			chunkedDiffers := got.Chunked != (len(resp.TransferEncoding) > 0) && !bodyless(resp.StatusCode, method)
			if got.Resp.StatusCode != resp.StatusCode || !bytes.Equal(got.Body, body) || chunkedDiffers {
				t.Fatalf("response %q: h1 read status %d chunked=%v body %q; net/http %d chunked=%v %q",
					b, got.Resp.StatusCode, got.Chunked, got.Body, resp.StatusCode, len(resp.TransferEncoding) > 0, body)
			}
		}
	})
}

func bodyless(code int, method string) bool {
	return method == http.MethodHead || code < 200 || code == http.StatusNoContent || code == http.StatusNotModified
}

func framingError(err error) bool {
	return strings.Contains(err.Error(), "transfer encoding") || strings.Contains(err.Error(), "Content-Length")
}

// pipelineIOTimeout bounds one connection of FuzzPipeline: the server must have answered and closed by then.
const pipelineIOTimeout = 5 * time.Second

// echo answers each request with what the server made of it, in fields (so that HEAD shows them too).
func echo(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(r.Body)
	w.Header().Set("X-Echo", hex.EncodeToString([]byte(r.Method+" "+r.RequestURI)))
	w.Header().Set("X-Echo-Body", fmt.Sprintf("%d/%08x", len(body), crc32.ChecksumIEEE(body)))
	if err != nil { // a body the server could not read: the handler answers 400, and the connection ends
		w.Header().Set("X-Echo-Body-Error", "1")
		w.WriteHeader(http.StatusBadRequest)
		return
	}
	w.WriteHeader(http.StatusOK)
}

// expected is one request of a pipelined stream as net/http parses it.
type expected struct {
	method, target string
	body           []byte
	ok             bool // net/http took it (head and body); false: the stream goes wrong here
	offset         int  // where it starts in the stream
}

// netHTTPStream parses a stream of pipelined requests as net/http does, up to the first error.
func netHTTPStream(b []byte) []expected {
	var out []expected
	for off := 0; off < len(b); {
		r, err := netHTTPRequest(b[off:])
		if err != nil || r.bodyErr != nil {
			return append(out, expected{offset: off})
		}
		out = append(out, expected{method: r.req.Method, target: r.req.RequestURI, body: r.body, ok: true, offset: off})
		off += r.consumed
		if r.req.Close {
			break
		}
	}
	return out
}

func FuzzPipeline(f *testing.F) {
	for _, s := range append(rawMessages(f), requestSeeds...) {
		if !strings.HasPrefix(s, "HTTP/") {
			f.Add([]byte(s))
		}
	}
	srv := &h1.Server{Handler: http.HandlerFunc(echo), ReadHeaderTimeout: pipelineIOTimeout}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	go func() { _ = srv.Serve(ln) }()
	f.Cleanup(func() { _ = srv.Close() })

	f.Fuzz(func(t *testing.T, b []byte) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(pipelineIOTimeout))
		go func() {
			_, _ = c.Write(b)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		want := netHTTPStream(b)
		// skipKnown skips an input whose i-th request hits a finding already reported and tolerated.
		skipKnown := func(i int) {
			if i < len(want) {
				rest := b[want[i].offset:]
				got, _ := h1.ParseRequest(rest)
				ref, werr := netHTTPRequest(rest)
				if name := knownFinding(rest, got, ref, werr); name != "" && tolerated(name) {
					t.Skip(name)
				}
			}
		}
		br := bufio.NewReader(c)
		for i := 0; ; i++ {
			method := http.MethodGet
			if i < len(want) && want[i].ok {
				method = want[i].method
			}
			resp, err := readFinal(br, method)
			if err != nil {
				if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("request %d of %q: no answer and no close within %s", i, b, pipelineIOTimeout)
				}
				if incomplete(err) || errors.Is(err, net.ErrClosed) || isReset(err) {
					checkUnanswered(t, b, want, i)
					return
				}
				t.Fatalf("request %d of %q: unreadable response: %v", i, b, err)
			}
			if resp.Header.Get("X-Echo") == "" { // the server's own answer: it must close after it
				if resp.StatusCode < 400 || !resp.Close {
					t.Fatalf("request %d of %q: the server answered %d (close %v) of its own", i, b, resp.StatusCode, resp.Close)
				}
				// (Its body is there even for a HEAD: the server could not read the request it answers, as
				// net/http's server does. The client drops it with the connection.)
				if _, err := io.Copy(io.Discard, br); err != nil && !isReset(err) {
					t.Fatalf("request %d of %q: the connection goes on after the server's %d (%v)", i, b, resp.StatusCode, err)
				}
				if i < len(want) && want[i].ok && stricterInStream(b, i) == "" {
					t.Fatalf("request %d of %q: the server answered %d where net/http takes %s %s", i, b, resp.StatusCode, want[i].method, want[i].target)
				}
				return
			}
			bodyErr := resp.Header.Get("X-Echo-Body-Error") != ""
			switch {
			case bodyErr && i < len(want) && want[i].ok:
				skipKnown(i)
				t.Fatalf("request %d of %q: the handler could not read a body net/http reads (%q)", i, b, want[i].body)
			case bodyErr:
				// The stream breaks in this request's body for net/http too: nothing may follow.
				if _, err := io.Copy(io.Discard, br); err != nil && !isReset(err) {
					t.Fatalf("request %d of %q: the connection goes on after a body the server could not read (%v)", i, b, err)
				}
				return
			case i >= len(want) || !want[i].ok:
				skipKnown(i)
				t.Fatalf("request %d of %q: answered as %s, where net/http takes no request", i, b, decodeEcho(resp))
			}
			w := want[i]
			wantEcho := fmt.Sprintf("%s %s, %d/%08x", w.method, w.target, len(w.body), crc32.ChecksumIEEE(w.body))
			if got := decodeEcho(resp); got != wantEcho {
				skipKnown(i)
				t.Fatalf("request %d of %q: the server handled %q, net/http reads %q", i, b, got, wantEcho)
			}
		}
	})
}

func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || strings.Contains(err.Error(), "broken pipe"))
}

// readFinal reads the next final response (interim ones skipped) and its body.
func readFinal(br *bufio.Reader, method string) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return nil, err
		}
		if resp.StatusCode >= 200 {
			return resp, nil
		}
	}
}

func decodeEcho(resp *http.Response) string {
	mt, _ := hex.DecodeString(resp.Header.Get("X-Echo"))
	return string(mt) + ", " + resp.Header.Get("X-Echo-Body")
}

// checkUnanswered: the connection ended after i answers; every request net/http takes in the stream
// before the end must have been answered, unless h1 is deliberately stricter with it.
func checkUnanswered(t *testing.T, b []byte, want []expected, i int) {
	t.Helper()
	if i < len(want) && want[i].ok && stricterInStream(b, i) == "" {
		t.Fatalf("request %d of %q (%s %s) was never answered: the connection ended", i, b, want[i].method, want[i].target)
	}
}

// stricterInStream says why h1 rejects the i-th request of a stream net/http takes ("" if it does not).
func stricterInStream(b []byte, i int) string {
	for range i {
		r, err := netHTTPRequest(b)
		if err != nil {
			return ""
		}
		b = b[r.consumed:]
	}
	r, err := netHTTPRequest(b)
	if err != nil {
		return ""
	}
	if _, gerr := h1.ParseRequest(b); gerr == nil {
		return ""
	}
	return stricterThanNetHTTP(b[leadingEmptyLines(b):], r.req)
}
