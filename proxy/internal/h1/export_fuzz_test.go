package h1

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net/http"
)

// This file exposes the parsers of server.go and client.go to the fuzz targets (fuzz_test.go), each run
// on a byte slice as the server and the pool run them on a connection's reader.

// Parsed is one message as a parser of this package read it: its head, its body read to the end
// through the framing the parser chose, and how many bytes of the input it consumed.
type Parsed struct {
	Req      *http.Request  // a request (ParseRequest)
	Resp     *http.Response // a response (ParseResponse)
	Chunked  bool           // the body was chunked
	Body     []byte
	BodyErr  error // the error reading the body, nil when it was read to its end
	Consumed int   // bytes of the input read up to the end of the body (or of the head, on an error)
}

// maxFuzzBody bounds the body a parse reads: a fuzz input is small, and a body read past its input
// ends with io.ErrUnexpectedEOF long before.
const maxFuzzBody = 1 << 20

// ParseRequest reads one request from b as the server reads it from a connection: the head (read and
// parse, as readLoop and readRequest do), then the body through the server's own requestBody.
func ParseRequest(b []byte) (Parsed, error) {
	src := bytes.NewReader(b)
	c := &conn{srv: &Server{}, br: bufio.NewReaderSize(src, readBufferSize), hdr: make(http.Header, 16),
		bw: bufio.NewWriter(io.Discard), bodyDone: make(chan struct{}, 1), remote: "192.0.2.1:1234"}
	c.tmpl = (&http.Request{}).WithContext(context.Background())
	c.body.c = c
	consumed := func() int { return len(b) - src.Len() - c.br.Buffered() }
	if err := c.head.read(c.br, defaultMaxHeaderBytes, true); err != nil {
		return Parsed{Consumed: consumed()}, err
	}
	if err := c.readRequest(); err != nil {
		return Parsed{Consumed: consumed()}, err
	}
	req := c.req // a copy: the server would reuse c.req
	p := Parsed{Req: &req, Chunked: c.body.chunked}
	if c.body.framed {
		p.Body, p.BodyErr = io.ReadAll(io.LimitReader(&c.body, maxFuzzBody))
	}
	p.Consumed = consumed()
	return p, nil
}

// ParseChunked reads b as a chunked request body (chunks, last chunk, trailer) through the server's
// requestBody, as a handler reads it.
func ParseChunked(b []byte) (Parsed, error) {
	src := bytes.NewReader(b)
	c := &conn{br: bufio.NewReaderSize(src, readBufferSize), bw: bufio.NewWriter(io.Discard),
		bodyDone: make(chan struct{}, 1)}
	c.body.c = c
	c.body.reset(framing{length: -1, chunked: true})
	body, err := io.ReadAll(io.LimitReader(&c.body, maxFuzzBody))
	return Parsed{Chunked: true, Body: body, BodyErr: err, Consumed: len(b) - src.Len() - c.br.Buffered()}, err
}

// ParseResponse reads one response to a request of method from b as a Pool reads it from an upstream
// connection (interim 1xx responses skipped), then its body through the pool's responseBody.
func ParseResponse(b []byte, method string) (Parsed, error) {
	src := bytes.NewReader(b)
	p := &Pool{Addr: "192.0.2.1:80"}
	cc := &clientConn{pool: p, br: bufio.NewReaderSize(src, readBufferSize), hdr: make(http.Header, 16)}
	cc.body.cc = cc
	consumed := func() int { return len(b) - src.Len() - cc.br.Buffered() }
	if err := cc.readResponse(method); err != nil {
		return Parsed{Consumed: consumed()}, err
	}
	resp := cc.resp
	out := Parsed{Resp: &resp, Chunked: cc.body.chunked}
	out.Body, out.BodyErr = io.ReadAll(io.LimitReader(&cc.body, maxFuzzBody))
	out.Consumed = consumed()
	return out, nil
}
