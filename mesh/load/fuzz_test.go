package load

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"testing"
)

// next is a response appended after every fuzz input: reading it back after the input's response shows
// that the parser framed that response where net/http does (a response read too short or too long
// leaves the connection out of step, and the generator would count the next request's status wrong).
const next = "HTTP/1.1 299 Next\r\nContent-Length: 0\r\n\r\n"

// FuzzReadResponse fuzzes the load generator's own HTTP/1.1 response parser (readResponse). Properties:
//   - no panic, and a status within 0..999;
//   - where net/http (http.ReadResponse, interim responses skipped) reads a keep-alive response with the
//     same status and a body of known length followed by another response, readResponse reads it too,
//     with the same status, says keep, and the next response it reads is that other one.
func FuzzReadResponse(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;x=y\r\nhello\r\n0\r\nT: 1\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n",
		"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 3\r\n\r\nbad",
		"HTTP/1.1 304 Not Modified\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\nabcd",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 1\n\nx",
		"HTTP/1.1 200 OK\r\n\r\n",
		// Found by fuzzing (#18): an interim response of another HTTP version, which net/http skips.
		"HTTP/0.0 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
	} {
		f.Add([]byte(s), false)
	}
	f.Add([]byte("HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n"), true)
	f.Fuzz(func(t *testing.T, b []byte, isHead bool) {
		in := append(bytes.Clone(b), next...)
		br := bufio.NewReaderSize(bytes.NewReader(in), 4096)
		status, keep, _, err := readResponse(br, isHead)
		if status < 0 || status > 999 {
			t.Fatalf("readResponse(%q) = status %d", b, status)
		}
		method := http.MethodGet
		if isHead {
			method = http.MethodHead
		}
		ref := bufio.NewReader(bytes.NewReader(in))
		resp, rerr := readFinal(ref, method)
		if rerr != nil || resp.Close || resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 || resp.StatusCode == 101 {
			return // net/http rejects it, or its body runs to the end of the connection
		}
		nextResp, nerr := readFinal(ref, http.MethodGet)
		if nerr != nil || nextResp.StatusCode != 299 {
			return // net/http does not see the next response in step either
		}
		if err != nil || status != resp.StatusCode || !keep {
			t.Fatalf("readResponse(%q) = %d keep %v, %v; net/http reads %d, keep-alive", b, status, keep, err, resp.StatusCode)
		}
		if s, _, _, err := readResponse(br, false); s != 299 || err != nil {
			t.Fatalf("after %q, readResponse reads %d, %v, not the next response", b, s, err)
		}
	})
}

// readFinal reads the next final response (interim ones skipped) and its body, as net/http's
// Transport does: only 1xx other than 101 is interim (a status below 100, "000" say, is final there).
func readFinal(br *bufio.Reader, method string) (*http.Response, error) {
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: method})
		if err != nil {
			return nil, err
		}
		if _, err := io.Copy(io.Discard, resp.Body); err != nil {
			return nil, err
		}
		if resp.StatusCode < 100 || resp.StatusCode >= 200 || resp.StatusCode == 101 {
			return resp, nil
		}
	}
}
