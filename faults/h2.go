package faults

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshproof/meshproof/faults/internal/netx"
)

// The HTTP/2 server of the upstream. net/http and x/net/http2 cannot answer a stream with an
// RST_STREAM of a chosen code (a handler can only cause INTERNAL_ERROR) nor send a GOAWAY on
// demand, so connections that open with the HTTP/2 preface are served here, on the framer of
// golang.org/x/net/http2: SETTINGS (acked; initial window and max frame size honoured), PING,
// WINDOW_UPDATE and flow control of response bodies, HEADERS+CONTINUATION, request bodies
// (discarded, their window given back at once), RST_STREAM and GOAWAY from the client. Not
// supported: server push, priorities (ignored), the h2c Upgrade from HTTP/1.1, and request
// trailers (ignored). Response trailers end gRPC answers (grpc.go).

const (
	h2MaxStreams   = 1000
	h2DefaultFrame = 16 << 10
	h2DefaultWin   = 65535
)

var errStreamDone = errors.New("faults: http2 stream closed")

// h2Conn is one HTTP/2 connection.
type h2Conn struct {
	u      *Upstream
	c      *serverConn
	ctx    context.Context // ends when the connection does
	cancel context.CancelFunc

	wmu  sync.Mutex // serialises frame writes and the hpack encoder
	fr   *http2.Framer
	bw   *bufio.Writer
	henc *hpack.Encoder
	hbuf bytes.Buffer

	mu         sync.Mutex // guards the fields below
	cond       *sync.Cond // a window grew, or a stream or the connection ended
	connWindow int64      // what we may still send on the connection
	initWindow int64      // the client's SETTINGS_INITIAL_WINDOW_SIZE
	maxFrame   int        // the client's SETTINGS_MAX_FRAME_SIZE
	streams    map[uint32]*h2Stream
	lastStream uint32 // highest stream id the client opened
	goingAway  bool
	goAwayLast uint32
	writeShut  bool // write side closed after a GOAWAY

	handlers sync.WaitGroup
}

// h2Stream is one request on an HTTP/2 connection.
type h2Stream struct {
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc
	req    Request
	head   bool
	grpc   bool  // a gRPC call: its body is kept in req.Body
	window int64 // guarded by h2Conn.mu
	ended  bool  // guarded by h2Conn.mu: reset by either side, answered or abandoned
}

// serveH2 serves an HTTP/2 connection whose preface is buffered in c, until it ends.
func (u *Upstream) serveH2(c *serverConn) {
	ctx, cancel := context.WithCancel(u.ctx)
	h := &h2Conn{
		u: u, c: c, ctx: ctx, cancel: cancel,
		bw:         bufio.NewWriter(c.Conn),
		connWindow: h2DefaultWin,
		initWindow: h2DefaultWin,
		maxFrame:   h2DefaultFrame,
		streams:    map[uint32]*h2Stream{},
	}
	h.cond = sync.NewCond(&h.mu)
	h.fr = http2.NewFramer(h.bw, c)
	h.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	h.henc = hpack.NewEncoder(&h.hbuf)
	defer h.teardown()

	if _, err := io.ReadFull(c, make([]byte, len(http2.ClientPreface))); err != nil {
		return
	}
	if h.writeFrame(func(fr *http2.Framer) error {
		return fr.WriteSettings(http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams})
	}) != nil {
		return
	}
	for {
		f, err := h.fr.ReadFrame()
		var se http2.StreamError
		if errors.As(err, &se) {
			_ = h.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(se.StreamID, se.Code) })
			continue
		}
		if err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				h.connError(http2.ErrCode(ce))
			}
			return
		}
		if err := h.handle(f); err != nil {
			return
		}
	}
}

// handle processes one frame from the client; an error ends the connection.
func (h *h2Conn) handle(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		if f.IsAck() {
			return nil
		}
		h.mu.Lock()
		err := f.ForeachSetting(func(s http2.Setting) error {
			switch s.ID {
			case http2.SettingInitialWindowSize:
				delta := int64(s.Val) - h.initWindow
				h.initWindow = int64(s.Val)
				for _, st := range h.streams {
					st.window += delta
				}
			case http2.SettingMaxFrameSize:
				h.maxFrame = int(s.Val)
			}
			return nil
		})
		h.cond.Broadcast()
		h.mu.Unlock()
		if err != nil {
			return err
		}
		return h.writeFrame(func(fr *http2.Framer) error { return fr.WriteSettingsAck() })
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return h.writeFrame(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
	case *http2.WindowUpdateFrame:
		h.mu.Lock()
		if f.StreamID == 0 {
			h.connWindow += int64(f.Increment)
		} else if st := h.streams[f.StreamID]; st != nil {
			st.window += int64(f.Increment)
		}
		h.cond.Broadcast()
		h.mu.Unlock()
	case *http2.RSTStreamFrame:
		h.mu.Lock()
		if st := h.streams[f.StreamID]; st != nil {
			h.endLocked(st)
		}
		h.mu.Unlock()
	case *http2.MetaHeadersFrame:
		return h.headers(f)
	case *http2.DataFrame:
		return h.data(f)
	case *http2.GoAwayFrame:
		// The client leaves: streams in flight go on; it closes the connection when done.
	}
	return nil
}

// headers opens a stream, or ends a request body with its trailers.
func (h *h2Conn) headers(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	h.mu.Lock()
	if st := h.streams[id]; st != nil { // request trailers
		h.mu.Unlock()
		if f.StreamEnded() {
			h.start(st)
		}
		return nil
	}
	if id%2 == 0 || id <= h.lastStream {
		h.mu.Unlock()
		h.connError(http2.ErrCodeProtocol)
		return errStreamDone
	}
	h.lastStream = id
	if h.goingAway && id > h.goAwayLast {
		h.mu.Unlock()
		return nil // RFC 9113 6.8: streams above the last-stream-id of a GOAWAY are ignored
	}
	ctx, cancel := context.WithCancel(h.ctx)
	st := &h2Stream{id: id, ctx: ctx, cancel: cancel, window: h.initWindow}
	st.req = Request{Method: f.PseudoValue("method"), Header: http.Header{}, HTTP2: true}
	path := f.PseudoValue("path")
	if i := strings.IndexByte(path, '?'); i >= 0 {
		path = path[:i]
	}
	st.req.Path = path
	for _, hf := range f.RegularFields() {
		st.req.Header.Add(hf.Name, hf.Value)
	}
	st.head = st.req.Method == http.MethodHead
	st.grpc = isGRPC(st.req)
	h.streams[id] = st
	h.mu.Unlock()
	if f.StreamEnded() {
		h.start(st)
	}
	return nil
}

// data discards request body bytes, giving their flow-control window back at once.
func (h *h2Conn) data(f *http2.DataFrame) error {
	n := f.Length
	h.mu.Lock()
	st := h.streams[f.StreamID]
	if st != nil && st.grpc && len(st.req.Body)+len(f.Data()) <= maxGRPCRequest {
		st.req.Body = append(st.req.Body, f.Data()...) // the framer reuses its buffer
	}
	h.mu.Unlock()
	if n > 0 {
		err := h.writeFrame(func(fr *http2.Framer) error {
			if err := fr.WriteWindowUpdate(0, n); err != nil {
				return err
			}
			if st != nil && !f.StreamEnded() {
				return fr.WriteWindowUpdate(f.StreamID, n)
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	if st != nil && f.StreamEnded() {
		h.start(st)
	}
	return nil
}

// start runs the stream's handler once its request is complete.
func (h *h2Conn) start(st *h2Stream) {
	if !h.u.enter() {
		h.rst(st, http2.ErrCodeRefusedStream)
		return
	}
	h.handlers.Add(1)
	go func() {
		defer h.handlers.Done()
		defer h.u.handlers.Done()
		h.u.serve(&h2Exchange{h: h, st: st, hdr: http.Header{}}, st.req, st.head)
		h.mu.Lock()
		h.endLocked(st)
		h.mu.Unlock()
	}()
}

// endLocked forgets a stream; after a GOAWAY the last one to end shuts the write side.
func (h *h2Conn) endLocked(st *h2Stream) {
	if !st.ended {
		st.ended = true
		st.cancel()
		delete(h.streams, st.id)
		h.cond.Broadcast()
	}
	if h.goingAway && len(h.streams) == 0 && !h.writeShut {
		h.writeShut = true
		_ = h.c.CloseWrite() // FIN after the GOAWAY; the client closes its side
	}
}

// rst answers a stream with RST_STREAM code.
func (h *h2Conn) rst(st *h2Stream, code http2.ErrCode) {
	h.mu.Lock()
	ended := st.ended
	h.endLocked(st)
	h.mu.Unlock()
	if !ended {
		_ = h.writeFrame(func(fr *http2.Framer) error { return fr.WriteRSTStream(st.id, code) })
	}
}

// goAway sends a GOAWAY whose last-stream-id is the highest stream below st, and abandons st and
// every later stream.
func (h *h2Conn) goAway(st *h2Stream, code http2.ErrCode) {
	last := uint32(0)
	if st.id > 2 {
		last = st.id - 2
	}
	h.mu.Lock()
	if h.goingAway {
		last = min(last, h.goAwayLast)
	}
	h.goingAway, h.goAwayLast = true, last
	var abandoned []*h2Stream
	for _, other := range h.streams {
		if other.id > last {
			abandoned = append(abandoned, other)
		}
	}
	h.mu.Unlock()
	_ = h.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, []byte(GRPCMessage)) })
	h.mu.Lock()
	for _, other := range abandoned {
		h.endLocked(other)
	}
	h.endLocked(st)
	h.mu.Unlock()
}

// connError ends the connection with a GOAWAY of code.
func (h *h2Conn) connError(code http2.ErrCode) {
	h.mu.Lock()
	last := h.lastStream
	h.mu.Unlock()
	_ = h.writeFrame(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, nil) })
}

// writeFrame writes and flushes frames under the write lock. After the write side is shut,
// writes are dropped.
func (h *h2Conn) writeFrame(write func(*http2.Framer) error) error {
	h.wmu.Lock()
	defer h.wmu.Unlock()
	h.mu.Lock()
	shut := h.writeShut
	h.mu.Unlock()
	if shut {
		return nil
	}
	if err := write(h.fr); err != nil {
		return err
	}
	return h.bw.Flush()
}

// teardown ends every stream and the connection, and waits for the handlers.
func (h *h2Conn) teardown() {
	h.mu.Lock()
	for _, st := range h.streams {
		st.ended = true
		st.cancel()
	}
	h.streams = map[uint32]*h2Stream{}
	h.cond.Broadcast()
	h.mu.Unlock()
	h.cancel()
	_ = h.c.Close()
	h.handlers.Wait()
}

// h2Exchange answers one stream.
type h2Exchange struct {
	h   *h2Conn
	st  *h2Stream
	hdr http.Header
}

var _ exchange = (*h2Exchange)(nil)

func (e *h2Exchange) context() context.Context { return e.st.ctx }
func (e *h2Exchange) canceled() bool           { return e.st.ctx.Err() != nil }
func (e *h2Exchange) header() http.Header      { return e.hdr }

func (e *h2Exchange) writeHeader(status int, endStream bool) error {
	fields := []hpack.HeaderField{{Name: ":status", Value: strconv.Itoa(status)}}
	return e.writeFields(appendFields(fields, e.hdr), endStream)
}

// writeTrailers ends the stream with a HEADERS frame of trailers.
func (e *h2Exchange) writeTrailers(t http.Header) error {
	return e.writeFields(appendFields(nil, t), true)
}

// appendFields appends the fields of h, names lower-cased.
func appendFields(fields []hpack.HeaderField, h http.Header) []hpack.HeaderField {
	for name, values := range h {
		for _, v := range values {
			fields = append(fields, hpack.HeaderField{Name: strings.ToLower(name), Value: v})
		}
	}
	return fields
}

// writeFields sends a header block, in HEADERS and CONTINUATION frames.
func (e *h2Exchange) writeFields(fields []hpack.HeaderField, endStream bool) error {
	h := e.h
	h.mu.Lock()
	ended, maxFrame := e.st.ended, h.maxFrame
	h.mu.Unlock()
	if ended {
		return errStreamDone
	}
	return h.writeFrame(func(fr *http2.Framer) error {
		h.hbuf.Reset()
		for _, hf := range fields {
			if err := h.henc.WriteField(hf); err != nil {
				return err
			}
		}
		block := h.hbuf.Bytes()
		first := min(len(block), maxFrame)
		if err := fr.WriteHeaders(http2.HeadersFrameParam{
			StreamID: e.st.id, BlockFragment: block[:first], EndStream: endStream, EndHeaders: first == len(block),
		}); err != nil {
			return err
		}
		for rest := block[first:]; len(rest) > 0; {
			n := min(len(rest), maxFrame)
			if err := fr.WriteContinuation(e.st.id, n == len(rest), rest[:n]); err != nil {
				return err
			}
			rest = rest[n:]
		}
		return nil
	})
}

// write sends p as DATA frames as the flow-control windows allow.
func (e *h2Exchange) write(p []byte, endStream bool) error {
	h := e.h
	for {
		h.mu.Lock()
		for !e.st.ended && len(p) > 0 && (h.connWindow <= 0 || e.st.window <= 0) {
			h.cond.Wait()
		}
		if e.st.ended {
			h.mu.Unlock()
			return errStreamDone
		}
		n := int(min(int64(len(p)), int64(h.maxFrame), h.connWindow, e.st.window))
		h.connWindow -= int64(n)
		e.st.window -= int64(n)
		h.mu.Unlock()
		end := endStream && n == len(p)
		if err := h.writeFrame(func(fr *http2.Framer) error { return fr.WriteData(e.st.id, end, p[:n]) }); err != nil {
			return err
		}
		p = p[n:]
		if len(p) == 0 {
			return nil
		}
	}
}

func (e *h2Exchange) reset() { netx.RST(e.h.c) }

func (e *h2Exchange) closeConn() { _ = e.h.c.Close() }

func (e *h2Exchange) rstStream(code uint32) { e.h.rst(e.st, http2.ErrCode(code)) }

func (e *h2Exchange) goAway(code uint32) { e.h.goAway(e.st, http2.ErrCode(code)) }

// abort cancels the stream if the connection is still there to hear it.
func (e *h2Exchange) abort() { e.h.rst(e.st, http2.ErrCodeCancel) }
