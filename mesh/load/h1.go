package load

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP/1.1 client is our own, small and allocation-free on the hot path, so that the generator is
// never the bottleneck (net/http's client costs several times more CPU per request): each request is
// pre-serialized once, then written with its x-request-id in one write; the response is parsed just
// enough to find its status and end (Content-Length, chunked, or connection close) and its body is
// discarded. Connections are kept alive and never shared by two requests at once (no pipelining).

// errMalformed is a response that is not HTTP/1.x.
var errMalformed = errors.New("malformed HTTP response")

// h1Slot is one connection slot of an h1Pool: a TCP (or TLS) connection, dialled when first needed and
// again after it broke or the server closed it.
type h1Slot struct {
	conn   net.Conn // nil until dialled; written under the pool's mutex, read by the slot's holder
	br     *bufio.Reader
	buf    []byte
	reused bool // has carried a complete exchange
}

// h1Pool holds at most max connection slots; a request takes one for its whole exchange, so at most max
// requests are in flight. With fixed set, all max connections are dialled before the run starts.
type h1Pool struct {
	t       *target
	timeout time.Duration
	max     int
	idle    chan *h1Slot

	mu      sync.Mutex
	slots   []*h1Slot
	aborted bool

	dials atomic.Int64
}

func newH1Pool(t *target, max int, timeout time.Duration) *h1Pool {
	return &h1Pool{t: t, timeout: timeout, max: max, idle: make(chan *h1Slot, max)}
}

// prefill creates all max slots and dials them, before the run.
func (p *h1Pool) prefill(ctx context.Context) {
	for range p.max {
		s := p.newSlot()
		_ = p.dial(ctx, s, time.Now().Add(p.timeout)) // a failed dial is retried by the first request
		p.idle <- s
	}
}

func (p *h1Pool) newSlot() *h1Slot {
	s := &h1Slot{}
	p.mu.Lock()
	p.slots = append(p.slots, s)
	p.mu.Unlock()
	return s
}

// acquire takes an idle slot, or makes a new one while fewer than max exist, or waits for one.
func (p *h1Pool) acquire(ctx context.Context) (*h1Slot, error) {
	select {
	case s := <-p.idle:
		return s, nil
	default:
	}
	p.mu.Lock()
	if len(p.slots) < p.max {
		s := &h1Slot{}
		p.slots = append(p.slots, s)
		p.mu.Unlock()
		return s, nil
	}
	p.mu.Unlock()
	select {
	case s := <-p.idle:
		return s, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *h1Pool) release(s *h1Slot) { p.idle <- s }

// dial connects the slot.
func (p *h1Pool) dial(ctx context.Context, s *h1Slot, deadline time.Time) error {
	d := net.Dialer{Deadline: deadline, KeepAlive: 30 * time.Second}
	c, err := d.DialContext(ctx, "tcp", p.t.addr)
	if err != nil {
		return err
	}
	p.dials.Add(1)
	if p.t.tls != nil {
		tc := tls.Client(c, p.t.tls)
		_ = tc.SetDeadline(deadline)
		if err := tc.HandshakeContext(ctx); err != nil {
			_ = c.Close()
			return err
		}
		c = tc
	}
	if s.br == nil {
		s.br = bufio.NewReaderSize(c, 16<<10)
	} else {
		s.br.Reset(c)
	}
	p.mu.Lock()
	s.conn, s.reused = c, false
	if p.aborted {
		_ = c.SetDeadline(time.Unix(1, 0))
	}
	p.mu.Unlock()
	return nil
}

// drop closes the slot's connection; the next request on the slot dials again.
func (p *h1Pool) drop(s *h1Slot) {
	if s.conn == nil {
		return
	}
	_ = s.conn.Close()
	p.mu.Lock()
	s.conn = nil
	p.mu.Unlock()
}

// abort makes every exchange in progress fail at once (the run was cancelled).
func (p *h1Pool) abort() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.aborted = true
	for _, s := range p.slots {
		if s.conn != nil {
			_ = s.conn.SetDeadline(time.Unix(1, 0))
		}
	}
}

// close closes every connection. Call it after every request has finished.
func (p *h1Pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.conn != nil {
			_ = s.conn.Close()
			s.conn = nil
		}
	}
}

func (p *h1Pool) opened() int64 { return p.dials.Load() }

// do makes one exchange on a slot of the pool. sent is when the request started: after it got a slot,
// before a dial if one was needed. A request that fails on a reused connection before any byte of the
// response arrived (the server closed an idle keep-alive connection) is sent once more on a new
// connection, as net/http does, when its method is idempotent.
func (p *h1Pool) do(ctx context.Context, r *prepared, seq uint64, extra []string) (sent time.Time, status int, err error) {
	s, err := p.acquire(ctx)
	if err != nil {
		return time.Now(), 0, err
	}
	defer p.release(s)
	sent = time.Now()
	deadline := sent.Add(p.timeout)
	for attempt := 0; ; attempt++ {
		if s.conn == nil {
			if err := p.dial(ctx, s, deadline); err != nil {
				return sent, 0, err
			}
		}
		reused := s.reused
		var keep, answered bool
		status, keep, answered, err = p.exchange(s, r, seq, extra, deadline)
		if err == nil {
			s.reused = true
			if !keep {
				p.drop(s)
			}
			return sent, status, nil
		}
		p.drop(s)
		if attempt > 0 || !reused || answered || !r.idempotent || ctx.Err() != nil || time.Now().After(deadline) {
			return sent, status, err
		}
	}
}

// exchange writes the request, with the extra headers (name, value pairs: the trace context), and reads
// the response. answered reports whether any byte of a response arrived; keep whether the connection may
// carry another request.
func (p *h1Pool) exchange(s *h1Slot, r *prepared, seq uint64, extra []string, deadline time.Time) (status int, keep, answered bool, err error) {
	c := s.conn
	if err := c.SetDeadline(deadline); err != nil {
		return 0, false, false, err
	}
	b := append(s.buf[:0], r.head...)
	for i := 0; i+1 < len(extra); i += 2 {
		b = append(b, extra[i]...)
		b = append(b, ": "...)
		b = append(b, extra[i+1]...)
		b = append(b, "\r\n"...)
	}
	b = append(b, "X-Request-Id: mp-"...)
	b = strconv.AppendUint(b, seq, 10)
	b = append(b, r.tail...)
	s.buf = b
	if _, err := c.Write(b); err != nil {
		return 0, false, false, err
	}
	return readResponse(s.br, r.isHead)
}

// readResponse reads one HTTP/1.x response (skipping 1xx interim ones) and discards its body.
func readResponse(br *bufio.Reader, isHead bool) (status int, keep, answered bool, err error) {
	for {
		line, err := readLine(br)
		if err != nil {
			return 0, false, len(line) > 0, err
		}
		answered = true
		// "HTTP/1.1 200 OK": HTTP-version is "HTTP/" DIGIT "." DIGIT (RFC 9112 §2.3); a version below
		// 1.1 closes the connection unless it says keep-alive, as net/http reads it.
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/")) || !isDigit(line[5]) || line[6] != '.' ||
			!isDigit(line[7]) || line[8] != ' ' {
			return 0, false, true, fmt.Errorf("%w: status line %q", errMalformed, trunc(line))
		}
		http10, major0 := line[5] < '1' || line[5] == '1' && line[7] == '0', line[5] == '0'
		status = 0
		for _, c := range line[9:12] {
			if c < '0' || c > '9' {
				return 0, false, true, fmt.Errorf("%w: status line %q", errMalformed, trunc(line))
			}
			status = status*10 + int(c-'0')
		}
		keep = !http10
		length, chunked := int64(-1), false
		for {
			line, err := readLine(br)
			if err != nil {
				return status, false, true, eofIsUnexpected(err)
			}
			if len(line) == 0 {
				break
			}
			colon := bytes.IndexByte(line, ':')
			if colon <= 0 {
				return status, false, true, fmt.Errorf("%w: header %q", errMalformed, trunc(line))
			}
			name, value := line[:colon], bytes.TrimSpace(line[colon+1:])
			switch {
			case asciiEqualFold(name, "content-length"):
				n, perr := strconv.ParseInt(string(value), 10, 64)
				if perr != nil || n < 0 {
					return status, false, true, fmt.Errorf("%w: content-length %q", errMalformed, trunc(value))
				}
				length = n
			case asciiEqualFold(name, "transfer-encoding"):
				chunked = lastToken(value, "chunked") // chunked is the last coding when present (RFC 9112 §6.1)
			case asciiEqualFold(name, "connection"):
				if hasToken(value, "close") {
					keep = false
				} else if hasToken(value, "keep-alive") {
					keep = true
				}
			}
		}
		if major0 {
			keep = false // before HTTP/1.0 there is no keep-alive at all
		}
		if status >= 100 && status < 200 && status != 101 {
			continue // interim response: the final one follows
		}
		switch {
		case isHead || status == 204 || status == 304 || status == 101:
			if status == 101 {
				keep = false
			}
		case chunked:
			if err := discardChunked(br); err != nil {
				return status, false, true, eofIsUnexpected(err)
			}
		case length >= 0:
			if _, err := br.Discard(int(length)); err != nil {
				return status, false, true, eofIsUnexpected(err)
			}
		default: // the body runs to the connection's end
			if _, err := io.Copy(io.Discard, br); err != nil {
				return status, false, true, err
			}
			keep = false
		}
		return status, keep, true, nil
	}
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

// discardChunked reads and discards a chunked body and its trailer.
func discardChunked(br *bufio.Reader) error {
	for {
		line, err := readLine(br)
		if err != nil {
			return err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseUint(string(bytes.TrimSpace(line)), 16, 63)
		if err != nil {
			return fmt.Errorf("%w: chunk size %q", errMalformed, trunc(line))
		}
		if size == 0 {
			for { // trailer
				line, err := readLine(br)
				if err != nil {
					return err
				}
				if len(line) == 0 {
					return nil
				}
			}
		}
		if _, err := br.Discard(int(size)); err != nil {
			return err
		}
		if line, err := readLine(br); err != nil || len(line) != 0 {
			if err == nil {
				err = fmt.Errorf("%w: no CRLF after a chunk", errMalformed)
			}
			return err
		}
	}
}

// readLine reads one line without its CRLF (or LF). The returned slice is valid until the next read.
func readLine(br *bufio.Reader) ([]byte, error) {
	line, err := br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return line, fmt.Errorf("%w: line longer than %d bytes", errMalformed, br.Size())
	}
	if err != nil {
		return line, err
	}
	line = line[:len(line)-1]
	if n := len(line); n > 0 && line[n-1] == '\r' {
		line = line[:n-1]
	}
	return line, nil
}

func eofIsUnexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

func trunc(b []byte) string {
	if len(b) > 64 {
		return string(b[:64]) + "…"
	}
	return string(b)
}

// asciiEqualFold compares an ASCII header name with a lowercase one.
func asciiEqualFold(b []byte, lower string) bool {
	if len(b) != len(lower) {
		return false
	}
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// hasToken reports whether a comma-separated field value lists the lowercase token, ignoring case: a
// whole token, not a substring ("Connection: close0" is not close).
func hasToken(b []byte, lower string) bool {
	for len(b) > 0 {
		t := b
		if i := bytes.IndexByte(b, ','); i >= 0 {
			t, b = b[:i], b[i+1:]
		} else {
			b = nil
		}
		if asciiEqualFold(bytes.Trim(t, " \t"), lower) {
			return true
		}
	}
	return false
}

// lastToken reports whether the last token of a comma-separated field value is the lowercase token.
func lastToken(b []byte, lower string) bool {
	if i := bytes.LastIndexByte(b, ','); i >= 0 {
		b = b[i+1:]
	}
	return asciiEqualFold(bytes.Trim(b, " \t"), lower)
}
