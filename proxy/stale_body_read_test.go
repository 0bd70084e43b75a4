package proxy_test

import (
	"bufio"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

// An HTTP/2 upstream's codec (x/net's ClientConn) writes a request body from a goroutine of its own,
// which goes on reading after the response ended the exchange; the downstream HTTP/1.1 connection
// must not be read by it once the request's handler returned (a data race on the connection's reader
// with the server discarding the rest of the body, and framing corruption: request smuggling).
var _ = Describe("a streamed HTTP/1.1 request body an HTTP/2 upstream did not read", func() {
	DescribeTable("is read no more once the request is answered: the next request on the connection is answered, or the connection closed",
		func(contentType string, bufferLimit uint32) {
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodGet {
					_, _ = io.WriteString(w, "hello")
					return
				}
				// Answered at once without reading the body: trailers-only for gRPC, else a 200.
				if contentType == "application/grpc" {
					w.Header().Set("content-type", "application/grpc")
					w.Header().Set("grpc-status", "12")
				}
				w.Header().Set("content-length", "0")
				w.WriteHeader(http.StatusOK)
			})
			_, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, b.addr())},
				routes: []config.Route{prefixRoute("/", "h2", nil)}, bufferLimit: bufferLimit})
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(conn.Close)
			Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
			br := bufio.NewReader(conn)
			first := strings.Repeat("x", 64) // beyond the buffer limit: the rest streams upstream
			_, err = io.WriteString(conn, "POST /svc/Method HTTP/1.1\r\nHost: x\r\nContent-Type: "+contentType+
				"\r\nTE: trailers\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n"+first+"\r\n")
			Expect(err).NotTo(HaveOccurred())
			resp, err := http.ReadResponse(br, nil)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			_, err = io.Copy(io.Discard, resp.Body)
			Expect(err).NotTo(HaveOccurred())
			// The rest of the body, slowly, then the next request on the same connection.
			for _, piece := range []string{"5\r\nhello\r\n", "5\r\nworld\r\n", "0\r\n\r\n"} {
				time.Sleep(50 * time.Millisecond)
				if _, err = io.WriteString(conn, piece); err != nil {
					break // the proxy closed the connection
				}
			}
			if err == nil {
				_, err = io.WriteString(conn, "GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			}
			if err != nil {
				return // closed: nothing of the connection was misread
			}
			resp, err = http.ReadResponse(br, nil)
			if err != nil {
				var ne net.Error
				Expect(errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.As(err, &ne) && !ne.Timeout()).
					To(BeTrue(), "the connection is closed, not left hanging: %v", err)
				return
			}
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			body, err := io.ReadAll(resp.Body)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(body)).To(Equal("hello"))
		},
		Entry("a gRPC body, streamed from the first attempt on, answered trailers-only", "application/grpc", uint32(0)),
		Entry("a body beyond the buffer limit", "application/octet-stream", uint32(16)),
	)
})
