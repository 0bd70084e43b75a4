// Package h1 is the proxy's own HTTP/1.1 fast path: a server that hands requests to an http.Handler and
// a client with a per-host connection pool. Both parse message heads into one string per head and reuse
// their header maps, buffers and request / response values per connection, so that a proxied request
// costs a handful of allocations and no goroutine hand-offs beyond the one per downstream request.
//
// What they implement of RFC 9112: persistent connections (HTTP/1.1 by default, HTTP/1.0 with
// keep-alive), Content-Length and chunked framing, Expect: 100-continue, HEAD and the bodiless statuses,
// pipelined requests (answered in order). What they reject: obsolete line folding, whitespace before a
// field's colon, bytes that are not allowed in a field, a bare CR (at once, without waiting for an
// LF), a message with both Content-Length and Transfer-Encoding, conflicting Content-Lengths, transfer
// codings other than chunked, chunked framing that is not exactly RFC 9112's (see chunkedReader),
// CONNECT and upgrades.
package h1

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
)

// Errors of message parsing. A server answers them with the status in parenthesis.
var (
	errHeadTooLarge  = errors.New("h1: message head too large")      // 431
	errMalformed     = errors.New("h1: malformed message head")      // 400
	errBadLength     = errors.New("h1: invalid Content-Length")      // 400
	errBadTE         = errors.New("h1: unsupported transfer coding") // 501
	errBadVersion    = errors.New("h1: unsupported HTTP version")    // 505
	errLengthAndTE   = errors.New("h1: both Content-Length and Transfer-Encoding")
	errTooManyBlanks = errors.New("h1: too many empty lines before the message")
)

// field is one header field of a head, as offsets into it.
type field struct{ k0, k1, v0, v1 int }

// head is a parsed message head: the three parts of its start line and its fields, as offsets into the
// bytes read; after str, as substrings of one string. Its slices are reused from message to message.
type head struct {
	buf    []byte
	fields []field
	start  [3][2]int // start-line tokens: method, target, version (request) or version, code, reason
	s      string
}

// read reads one head, up to and including its empty line, into h.buf. Reading a request, it skips a
// few empty lines before the start line, as RFC 9112 §2.2 asks of a server. io.EOF: the stream ended cleanly before
// any byte of a message. A request head (request set) whose start line cannot begin a request is
// rejected as soon as its bytes arrive (see readLine).
func (h *head) read(br *bufio.Reader, limit int, request bool) error {
	h.buf = h.buf[:0]
	lineStart, blanks := 0, 0
	for {
		// The method is checked while the first line is incomplete; a line split by the buffer's size
		// is checked across the split for a bare CR.
		split := len(h.buf) > lineStart
		line, err := readLine(br, request && !split && lineStart == 0, split && h.buf[len(h.buf)-1] == '\r')
		if len(h.buf)+len(line) > limit {
			return errHeadTooLarge
		}
		if err == errBareCR {
			return errMalformed
		}
		h.buf = append(h.buf, line...)
		if err == bufio.ErrBufferFull {
			continue // a line longer than the reader's buffer: keep reading it
		}
		if err != nil {
			if err == io.EOF && len(h.buf) > 0 {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
		l := h.buf[lineStart:]
		if len(l) == 1 || len(l) == 2 && l[0] == '\r' { // an empty line
			if lineStart > 0 {
				return nil
			}
			if !request {
				// Only a server skips empty lines before a message (RFC 9112 §2.2); a response that
				// starts with one is malformed, as net/http finds it (found by FuzzResponse).
				return errMalformed
			}
			if blanks++; blanks > 4 {
				return errTooManyBlanks
			}
			h.buf = h.buf[:0]
			continue
		}
		lineStart = len(h.buf)
	}
}

// errBareCR: a CR followed by something other than LF, in a line not yet ended.
var errBareCR = errors.New("h1: CR not followed by LF")

// readLine is br.ReadSlice('\n') that does not wait for the LF of a line already invalid. While no
// LF is buffered, it checks what is: a CR followed by anything but LF is errBareCR (RFC 9112 §2.2: a
// bare CR makes its protocol element invalid), and with method set, the line must start with a token
// and a space, or else errMalformed (a TLS handshake or binary garbage sent to a plaintext port, say).
// Envoy's parser rejects these as soon as the byte arrives: http-parser's HPE_LF_EXPECTED and
// HPE_INVALID_METHOD (source/common/http/http1/legacy_parser_impl.cc), BalsaParser since
// envoyproxy/envoy#34829 (source/common/http/http1/balsa_parser.cc). ReadSlice would hold the
// connection until the head timeout and answer 408 instead of 400. A line with an LF is returned
// unchecked, as by ReadSlice: head.parse rejects the control bytes left in it. afterCR: the line is the
// rest of one that ReadSlice would have returned with bufio.ErrBufferFull after a CR, so it must start
// with the LF.
func readLine(br *bufio.Reader, method, afterCR bool) ([]byte, error) {
	scanned := 0 // the bytes buffered that were checked, relative to the line's start
	for {
		b, _ := br.Peek(br.Buffered())
		if afterCR && len(b) > 0 && b[0] != '\n' {
			return nil, errBareCR
		}
		if i := bytes.IndexByte(b[scanned:], '\n'); i >= 0 {
			line := b[:scanned+i+1]
			_, _ = br.Discard(len(line))
			return line, nil
		}
		for ; scanned < len(b); scanned++ {
			c := b[scanned]
			if c == '\r' {
				if scanned+1 < len(b) {
					return nil, errBareCR // the byte after it is not an LF: none is buffered
				}
				break // whether an LF follows is not known yet: check it again
			}
			if method {
				if c == ' ' && scanned > 0 {
					method = false
				} else if !isTokenByte(c) {
					return nil, errMalformed
				}
			}
		}
		if len(b) >= br.Size() {
			_, _ = br.Discard(len(b))
			return b, bufio.ErrBufferFull
		}
		if _, err := br.Peek(len(b) + 1); err != nil {
			b, _ = br.Peek(br.Buffered())
			_, _ = br.Discard(len(b))
			return b, err
		}
	}
}

// parse splits the head read into its start line and fields, checking their syntax, and turns field
// names into their canonical form in place (the form net/http's Header methods use).
func (h *head) parse() error {
	b := h.buf
	h.fields = h.fields[:0]
	end := lineEnd(b, 0)
	if end < 0 {
		return errMalformed
	}
	// The start line: three parts separated by single spaces; the last may contain spaces (a reason).
	sp1 := bytes.IndexByte(b[:end], ' ')
	if sp1 <= 0 {
		return errMalformed
	}
	sp2 := end // a status line may end after its code
	if i := bytes.IndexByte(b[sp1+1:end], ' '); i >= 0 {
		sp2 = sp1 + 1 + i
	}
	if sp2 == sp1+1 {
		return errMalformed
	}
	h.start = [3][2]int{{0, sp1}, {sp1 + 1, sp2}, {min(sp2+1, end), end}}
	for i := lineNext(b, end); ; {
		e := lineEnd(b, i)
		if e < 0 {
			return errMalformed
		}
		if e == i {
			return nil // the empty line
		}
		if b[i] == ' ' || b[i] == '\t' {
			return errMalformed // obsolete line folding
		}
		colon := -1
		for j := i; j < e; j++ {
			c := b[j]
			if c == ':' {
				colon = j
				break
			}
			if !isTokenByte(c) {
				return errMalformed
			}
		}
		if colon <= i {
			return errMalformed
		}
		canonicalize(b[i:colon])
		v0, v1 := colon+1, e
		for v0 < v1 && (b[v0] == ' ' || b[v0] == '\t') {
			v0++
		}
		for v1 > v0 && (b[v1-1] == ' ' || b[v1-1] == '\t') {
			v1--
		}
		for j := v0; j < v1; j++ {
			if c := b[j]; c < ' ' && c != '\t' || c == 0x7f {
				return errMalformed
			}
		}
		h.fields = append(h.fields, field{i, colon, v0, v1})
		i = lineNext(b, e)
	}
}

// str makes the head one string, of which every name and value are substrings.
func (h *head) str() { h.s = string(h.buf) }

func (h *head) part(i int) string { return h.s[h.start[i][0]:h.start[i][1]] }

// fill puts the head's fields into m (cleared first), each value slice cut from vals, which it returns
// for reuse.
func (h *head) fill(m http.Header, vals []string) []string {
	clear(m)
	vals = vals[:0]
	for _, f := range h.fields {
		k, v := h.s[f.k0:f.k1], h.s[f.v0:f.v1]
		if old, ok := m[k]; ok {
			m[k] = append(old, v) // a repeated field: its own slice
			continue
		}
		vals = append(vals, v)
		m[k] = vals[len(vals)-1 : len(vals) : len(vals)]
	}
	return vals
}

// lineEnd is the index of the CR LF (or bare LF) ending the line that starts at i; -1 if none.
func lineEnd(b []byte, i int) int {
	for j := i; j < len(b); j++ {
		if b[j] == '\n' {
			if j > i && b[j-1] == '\r' {
				return j - 1
			}
			return j
		}
	}
	return -1
}

// lineNext is the start of the line after the one ending at e.
func lineNext(b []byte, e int) int {
	if b[e] == '\r' {
		return e + 2
	}
	return e + 1
}

// isTokenByte reports whether c may appear in a field name (RFC 9110 §5.6.2 tchar).
func isTokenByte(c byte) bool {
	return tokenTable[c]
}

var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

// canonicalize rewrites a field name in place to the canonical form (first letter and letters after
// a hyphen upper case, the rest lower case), as textproto.CanonicalMIMEHeaderKey does for valid names.
func canonicalize(k []byte) {
	upper := true
	for i, c := range k {
		if upper && 'a' <= c && c <= 'z' {
			k[i] = c - 'a' + 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			k[i] = c - 'A' + 'a'
		}
		upper = c == '-'
	}
}

// parseVersion reads "HTTP/1.0" or "HTTP/1.1".
func parseVersion(v string) (major, minor int, err error) {
	switch v {
	case "HTTP/1.1":
		return 1, 1, nil
	case "HTTP/1.0":
		return 1, 0, nil
	}
	if len(v) == 8 && v[:5] == "HTTP/" && v[6] == '.' && '0' <= v[5] && v[5] <= '9' && '0' <= v[7] && v[7] <= '9' {
		return 0, 0, errBadVersion
	}
	return 0, 0, errMalformed
}

// framing is how a message's body is delimited.
type framing struct {
	length  int64 // the Content-Length; -1 when absent
	chunked bool
}

// bodyFraming reads Content-Length and Transfer-Encoding (RFC 9112 §6). Several Content-Length values
// are accepted only when equal; Transfer-Encoding must be exactly chunked.
func bodyFraming(m http.Header) (framing, error) {
	f := framing{length: -1}
	if te, ok := m["Transfer-Encoding"]; ok {
		if _, both := m["Content-Length"]; both {
			return f, errLengthAndTE
		}
		if len(te) != 1 || !equalFold(te[0], "chunked") {
			return f, errBadTE
		}
		f.chunked = true
		return f, nil
	}
	for _, v := range m["Content-Length"] {
		n, err := parseLength(v)
		if err != nil || f.length >= 0 && n != f.length {
			return f, errBadLength
		}
		f.length = n
	}
	return f, nil
}

// parseLength parses a Content-Length: digits only.
func parseLength(v string) (int64, error) {
	if v == "" || len(v) > 18 {
		return 0, errBadLength
	}
	for i := 0; i < len(v); i++ {
		if v[i] < '0' || v[i] > '9' {
			return 0, errBadLength
		}
	}
	return strconv.ParseInt(v, 10, 64)
}

// HasToken reports whether a comma-separated header (Connection, Expect) lists token, in ASCII case.
// It allocates nothing: every upstream response has a Connection header.
func HasToken(vals []string, token string) bool {
	for _, v := range vals {
		for len(v) > 0 {
			t := v
			if i := strings.IndexByte(v, ','); i >= 0 {
				t, v = v[:i], v[i+1:]
			} else {
				v = ""
			}
			if equalFold(strings.Trim(t, " \t"), token) {
				return true
			}
		}
	}
	return false
}

// equalFold is ASCII case-insensitive equality: field names and tokens are ASCII (strings.EqualFold
// would also fold non-ASCII letters, such as the Kelvin sign into k).
func equalFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		x, y := a[i], b[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}
