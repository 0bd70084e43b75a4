package h1_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// ioTimeout bounds every raw socket exchange of a spec.
const ioTimeout = 5 * time.Second

// listen opens a loopback listener closed at the end of the spec.
func listen() net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = ln.Close() })
	return ln
}

// running is a Server serving on a loopback listener.
type running struct {
	srv  *h1.Server
	addr string
	done chan struct{} // closed when Serve returned
	err  error         // what Serve returned, once done is closed
}

// start serves srv on a new loopback listener; at the end of the spec the server is closed and
// Serve must have returned ErrServerClosed.
func start(srv *h1.Server) *running {
	ln := listen()
	r := &running{srv: srv, addr: ln.Addr().String(), done: make(chan struct{})}
	go func() {
		r.err = srv.Serve(ln)
		close(r.done)
	}()
	DeferCleanup(func() {
		Expect(srv.Close()).To(Succeed())
		Eventually(r.done).Should(BeClosed())
		Expect(r.err).To(MatchError(h1.ErrServerClosed))
	})
	return r
}

// serve starts a Server for h.
func serve(h http.HandlerFunc) string { return start(&h1.Server{Handler: h}).addr }

// dialRaw opens a raw TCP connection (closed at the end of the spec, with a deadline bounding it).
func dialRaw(addr string) (net.Conn, *bufio.Reader) {
	c, err := net.Dial("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(func() { _ = c.Close() })
	Expect(c.SetDeadline(time.Now().Add(ioTimeout))).To(Succeed())
	return c, bufio.NewReader(c)
}

func send(c net.Conn, s string) {
	GinkgoHelper()
	_, err := io.WriteString(c, s)
	Expect(err).NotTo(HaveOccurred())
}

// readHead reads a message head up to and including its empty line.
func readHead(br *bufio.Reader) (string, error) {
	var b strings.Builder
	for {
		line, err := br.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\r\n" {
			return b.String(), nil
		}
	}
}

// rawResponse is a response read off a raw connection: its head as sent and its body decoded by hand,
// so that the framing the server chose is visible.
type rawResponse struct {
	head    string
	resp    *http.Response // parsed from head; its Body is not the body
	body    []byte
	trailer string
	bodyErr error
}

// readRaw reads one response to a request of method from br, body included.
func readRaw(br *bufio.Reader, method string) rawResponse {
	GinkgoHelper()
	head, err := readHead(br)
	Expect(err).NotTo(HaveOccurred(), "reading a response head; got %q", head)
	resp, err := http.ReadResponse(bufio.NewReader(strings.NewReader(head)), &http.Request{Method: method})
	Expect(err).NotTo(HaveOccurred(), "parsing %q", head)
	rr := rawResponse{head: head, resp: resp}
	switch {
	case method == http.MethodHead, resp.StatusCode < 200, resp.StatusCode == http.StatusNoContent,
		resp.StatusCode == http.StatusNotModified:
	case len(resp.TransferEncoding) > 0 && resp.TransferEncoding[0] == "chunked":
		rr.body, rr.bodyErr = io.ReadAll(httputil.NewChunkedReader(br))
		if rr.bodyErr == nil {
			rr.trailer, rr.bodyErr = readHead(br)
		}
	case resp.ContentLength >= 0:
		rr.body = make([]byte, resp.ContentLength)
		var n int
		n, rr.bodyErr = io.ReadFull(br, rr.body)
		rr.body = rr.body[:n]
	default:
		rr.body, rr.bodyErr = io.ReadAll(br)
	}
	return rr
}

// expectClosed asserts that the server closed the connection: the next read is a clean end of stream.
func expectClosed(br *bufio.Reader) {
	GinkgoHelper()
	b, err := br.ReadByte()
	Expect(err).To(MatchError(io.EOF), "expected the connection to be closed, read %q", b)
}

// stateLog records what ConnState hears, per client address.
type stateLog struct {
	mu sync.Mutex
	m  map[string][]http.ConnState
}

func (l *stateLog) hook(c net.Conn, s http.ConnState) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.m == nil {
		l.m = map[string][]http.ConnState{}
	}
	k := c.RemoteAddr().String()
	l.m[k] = append(l.m[k], s)
}

func (l *stateLog) snapshot() map[string][]http.ConnState {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := make(map[string][]http.ConnState, len(l.m))
	for k, v := range l.m {
		out[k] = append([]http.ConnState(nil), v...)
	}
	return out
}

// echoPath answers "path=<path>" with a Content-Length.
func echoPath(w http.ResponseWriter, r *http.Request) {
	b := "path=" + r.URL.Path
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = io.WriteString(w, b)
}

// echoBody answers with the request body, with a Content-Length.
func echoBody(w http.ResponseWriter, r *http.Request) {
	b, err := io.ReadAll(r.Body)
	if err != nil {
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Length", strconv.Itoa(len(b)))
	_, _ = w.Write(b)
}

var _ = Describe("Server", func() {
	Describe("persistent connections", func() {
		It("answers several sequential GETs on one keep-alive connection", func() {
			var states stateLog
			r := start(&h1.Server{Handler: http.HandlerFunc(echoPath), ConnState: states.hook})
			c, br := dialRaw(r.addr)
			for i := range 3 {
				send(c, fmt.Sprintf("GET /r%d HTTP/1.1\r\nHost: example.com\r\n\r\n", i))
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
				Expect(rr.resp.Proto).To(Equal("HTTP/1.1"))
				Expect(rr.resp.Close).To(BeFalse())
				Expect(rr.bodyErr).NotTo(HaveOccurred())
				Expect(string(rr.body)).To(Equal(fmt.Sprintf("path=/r%d", i)))
				Expect(rr.resp.Header.Get("Date")).NotTo(BeEmpty())
			}
			Expect(states.snapshot()).To(Equal(map[string][]http.ConnState{c.LocalAddr().String(): {http.StateNew}}))
		})

		It("holds no buffer while keep-alive connections wait for their next request, and serves them after", func() {
			srv := &h1.Server{Handler: http.HandlerFunc(echoPath)}
			r := start(srv)
			type client struct {
				c  net.Conn
				br *bufio.Reader
			}
			clients := make([]client, 20)
			for i := range clients {
				c, br := dialRaw(r.addr)
				clients[i] = client{c, br}
				send(c, "GET /first HTTP/1.1\r\nHost: x\r\n\r\n")
				Expect(string(readRaw(br, "GET").body)).To(Equal("path=/first"))
			}
			Eventually(func() int64 { return h1.BuffersHeld(srv) }).Should(BeZero())
			for _, cl := range clients {
				send(cl.c, "GET /second HTTP/1.1\r\nHost: x\r\n\r\n")
				Expect(string(readRaw(cl.br, "GET").body)).To(Equal("path=/second"))
			}
			for _, cl := range clients {
				Expect(cl.c.Close()).To(Succeed())
			}
			Eventually(func() int64 { return h1.BuffersHeld(srv) }).Should(BeZero())
		})

		It("lets a net/http client reuse one connection", func() {
			addr := serve(echoPath)
			var dials atomic.Int32
			tr := &http.Transport{DialContext: func(ctx context.Context, network, a string) (net.Conn, error) {
				dials.Add(1)
				var d net.Dialer
				return d.DialContext(ctx, network, a)
			}}
			DeferCleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr, Timeout: ioTimeout}
			for i := range 5 {
				resp, err := client.Get(fmt.Sprintf("http://%s/n%d", addr, i))
				Expect(err).NotTo(HaveOccurred())
				b, err := io.ReadAll(resp.Body)
				Expect(err).NotTo(HaveOccurred())
				Expect(resp.Body.Close()).To(Succeed())
				Expect(string(b)).To(Equal(fmt.Sprintf("path=/n%d", i)))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		It("writes no body for HEAD, even when the handler writes one", func() {
			writes := make(chan error, 4)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/cl" {
					w.Header().Set("Content-Length", "5")
				}
				n, err := io.WriteString(w, "hello")
				if r.Method == http.MethodHead {
					if err == nil && n != 5 {
						err = fmt.Errorf("wrote %d", n)
					}
					writes <- err
				}
			})
			c, br := dialRaw(addr)
			send(c, "HEAD /cl HTTP/1.1\r\nHost: x\r\n\r\nHEAD /nocl HTTP/1.1\r\nHost: x\r\n\r\nGET /cl HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "HEAD")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(rr.head).To(ContainSubstring("\r\nContent-Length: 5\r\n"))
			rr = readRaw(br, "HEAD")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(rr.head).NotTo(ContainSubstring("Transfer-Encoding"))
			// Had a body been written after either HEAD response, this would not parse as a response.
			rr = readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("hello"))
			Expect(writes).To(Receive(BeNil()))
			Expect(writes).To(Receive(BeNil()))
		})

		It("writes no body for 204 and 304", func() {
			writes := make(chan error, 4)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				switch r.URL.Path {
				case "/204":
					w.Header().Set("Content-Length", "5")
					w.WriteHeader(http.StatusNoContent)
				case "/304":
					w.WriteHeader(http.StatusNotModified)
				default:
					echoPath(w, r)
					return
				}
				_, err := io.WriteString(w, "hello")
				writes <- err
			})
			c, br := dialRaw(addr)
			send(c, "GET /204 HTTP/1.1\r\nHost: x\r\n\r\nGET /304 HTTP/1.1\r\nHost: x\r\n\r\nGET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusNoContent))
			Expect(rr.head).NotTo(ContainSubstring("Content-Length"))
			Expect(rr.head).NotTo(ContainSubstring("Transfer-Encoding"))
			rr = readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusNotModified))
			Expect(rr.head).NotTo(ContainSubstring("Transfer-Encoding"))
			rr = readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/after"))
			Expect(writes).To(Receive(MatchError(http.ErrBodyNotAllowed)))
			Expect(writes).To(Receive(MatchError(http.ErrBodyNotAllowed)))
		})

		It("frames a response without Content-Length as chunked on HTTP/1.1", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "abc")
				w.(http.Flusher).Flush()
				_, _ = io.WriteString(w, "def")
			})
			c, br := dialRaw(addr)
			for range 2 {
				send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
				Expect(rr.head).To(ContainSubstring("\r\nTransfer-Encoding: chunked\r\n"))
				Expect(rr.head).NotTo(ContainSubstring("Content-Length"))
				Expect(rr.head).NotTo(ContainSubstring("Connection: close"))
				Expect(rr.bodyErr).NotTo(HaveOccurred())
				Expect(string(rr.body)).To(Equal("abcdef"))
			}
		})

		It("delimits a response without Content-Length by closing on HTTP/1.0", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "abc")
				w.(http.Flusher).Flush()
				_, _ = io.WriteString(w, "def")
			})
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
			Expect(rr.head).NotTo(ContainSubstring("Transfer-Encoding"))
			Expect(rr.head).NotTo(ContainSubstring("Content-Length"))
			Expect(rr.bodyErr).NotTo(HaveOccurred()) // read to a clean end of stream
			Expect(string(rr.body)).To(Equal("abcdef"))
		})

		It("keeps an HTTP/1.0 connection that asks for keep-alive", func() {
			addr := serve(echoPath)
			c, br := dialRaw(addr)
			for i := range 3 {
				send(c, fmt.Sprintf("GET /k%d HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", i))
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
				Expect(rr.head).To(ContainSubstring("\r\nConnection: keep-alive\r\n"))
				Expect(string(rr.body)).To(Equal(fmt.Sprintf("path=/k%d", i)))
			}
		})

		It("closes an HTTP/1.0 connection without keep-alive after the response", func() {
			addr := serve(echoPath)
			c, br := dialRaw(addr)
			send(c, "GET /once HTTP/1.0\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
			Expect(string(rr.body)).To(Equal("path=/once"))
			expectClosed(br)
		})

		It("closes the connection after the response when the client sends Connection: close", func() {
			addr := serve(echoPath)
			c, br := dialRaw(addr)
			send(c, "GET /bye HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
			Expect(string(rr.body)).To(Equal("path=/bye"))
			expectClosed(br)
		})

		It("closes the connection when the handler sets Connection: close, saying it once", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Connection", "close")
				echoPath(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "GET /h HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(strings.Count(rr.head, "Connection:")).To(Equal(1))
			Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
			Expect(string(rr.body)).To(Equal("path=/h"))
			expectClosed(br)
		})

		It("answers Content-Length: 0 when the handler writes nothing", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) { w.Header().Set("X-Nothing", "1") })
			c, br := dialRaw(addr)
			for range 2 {
				send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
				Expect(rr.head).To(ContainSubstring("\r\nContent-Length: 0\r\n"))
				Expect(rr.resp.Header.Get("X-Nothing")).To(Equal("1"))
				Expect(rr.body).To(BeEmpty())
			}
		})

		It("closes the connection after a body shorter than its Content-Length", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "10")
				_, _ = io.WriteString(w, "abc")
			})
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.ContentLength).To(BeEquivalentTo(10))
			Expect(string(rr.body)).To(Equal("abc"))
			Expect(rr.bodyErr).To(MatchError(io.ErrUnexpectedEOF))
		})

		It("cuts a body longer than its Content-Length and keeps the connection", func() {
			writes := make(chan error, 1)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/long" {
					echoPath(w, r)
					return
				}
				w.Header().Set("Content-Length", "3")
				_, err := io.WriteString(w, "abcdef")
				writes <- err
			})
			c, br := dialRaw(addr)
			send(c, "GET /long HTTP/1.1\r\nHost: x\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(string(rr.body)).To(Equal("abc"))
			Expect(writes).To(Receive(MatchError(http.ErrContentLength)))
			rr = readRaw(br, "GET")
			Expect(string(rr.body)).To(Equal("path=/next"))
		})

		It("sends what the handler flushed before the handler returns", func() {
			release := make(chan struct{})
			DeferCleanup(func() { close(release) })
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.WriteString(w, "first")
				_ = http.NewResponseController(w).Flush()
				select {
				case <-release:
				case <-r.Context().Done():
				}
				_, _ = io.WriteString(w, "second")
			})
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			head, err := readHead(br)
			Expect(err).NotTo(HaveOccurred())
			Expect(head).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			Expect(head).To(ContainSubstring("Transfer-Encoding: chunked"))
			chunk := make([]byte, len("5\r\nfirst\r\n"))
			_, err = io.ReadFull(br, chunk)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(chunk)).To(Equal("5\r\nfirst\r\n"))
		})

		It("sends a 1xx response the handler writes before the final one", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Link", "</a.css>; rel=preload")
				w.WriteHeader(http.StatusEarlyHints)
				w.Header().Del("Link")
				echoPath(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "GET /hints HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusEarlyHints))
			Expect(rr.resp.Header.Get("Link")).To(Equal("</a.css>; rel=preload"))
			rr = readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(rr.resp.Header.Get("Link")).To(BeEmpty())
			Expect(string(rr.body)).To(Equal("path=/hints"))
		})

		It("closes a keep-alive connection idle for IdleTimeout, telling IdleTimedOut", func() {
			var idle atomic.Int32
			r := start(&h1.Server{Handler: http.HandlerFunc(echoPath), IdleTimeout: 200 * time.Millisecond,
				IdleTimedOut: func() { idle.Add(1) }})
			c, br := dialRaw(r.addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			closed := make(chan error, 1)
			go func() {
				_, err := br.ReadByte()
				closed <- err
			}()
			Eventually(closed).Should(Receive(MatchError(io.EOF)))
			Expect(idle.Load()).To(BeEquivalentTo(1))
		})

		It("closes a connection that brings no request within IdleTimeout, telling IdleTimedOut", func() {
			var idle atomic.Int32
			r := start(&h1.Server{Handler: http.HandlerFunc(echoPath), IdleTimeout: 200 * time.Millisecond,
				IdleTimedOut: func() { idle.Add(1) }})
			_, br := dialRaw(r.addr)
			b, err := io.ReadAll(br)
			Expect(err).NotTo(HaveOccurred())
			Expect(b).To(BeEmpty())
			Expect(idle.Load()).To(BeEquivalentTo(1))
		})
	})

	Describe("request bodies", func() {
		It("hands the handler a Content-Length body", func() {
			got := make(chan *http.Request, 1)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				got <- &http.Request{ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding}
				echoBody(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n\r\nhello world")
			rr := readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("hello world"))
			var r *http.Request
			Expect(got).To(Receive(&r))
			Expect(r.ContentLength).To(BeEquivalentTo(11))
			Expect(r.TransferEncoding).To(BeEmpty())
		})

		It("hands the handler a body sent in several pieces", func() {
			addr := serve(echoBody)
			c, br := dialRaw(addr)
			send(c, "PUT /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhel")
			send(c, "lo wo")
			send(c, "rl")
			send(c, "d")
			rr := readRaw(br, "PUT")
			Expect(string(rr.body)).To(Equal("hello worl"))
		})

		It("hands the handler a chunked body, reading its trailer", func() {
			got := make(chan *http.Request, 2)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				got <- &http.Request{ContentLength: r.ContentLength, TransferEncoding: r.TransferEncoding}
				echoBody(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nTrailer: X-Sum\r\n\r\n"+
				"5\r\nhello\r\n6;ext=1\r\n world\r\n0\r\nX-Sum: abc\r\n\r\n"+
				"POST /c2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nxyz")
			rr := readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("hello world"))
			var r *http.Request
			Expect(got).To(Receive(&r))
			Expect(r.ContentLength).To(BeEquivalentTo(-1))
			Expect(r.TransferEncoding).To(Equal([]string{"chunked"}))
			// The trailer was consumed: the next request is read from the right place.
			rr = readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("xyz"))
		})

		It("discards a Content-Length body the handler did not read and serves the next request", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) { echoPath(w, r) })
			c, br := dialRaw(addr)
			send(c, "POST /unread HTTP/1.1\r\nHost: x\r\nContent-Length: 20\r\n\r\n0123456789")
			rr := readRaw(br, "POST")
			Expect(string(rr.body)).To(Equal("path=/unread"))
			send(c, "0123456789GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			rr = readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/next"))
		})

		It("discards a chunked body the handler did not read and serves the next request", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) { echoPath(w, r) })
			c, br := dialRaw(addr)
			send(c, "POST /unread HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+
				"3\r\nabc\r\n0\r\nX-T: 1\r\n\r\nGET /next HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(string(readRaw(br, "POST").body)).To(Equal("path=/unread"))
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/next"))
		})

		It("discards a partly read body and serves the next request", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				b := make([]byte, 4)
				_, _ = io.ReadFull(r.Body, b)
				w.Header().Set("Content-Length", "4")
				_, _ = w.Write(b)
			})
			c, br := dialRaw(addr)
			send(c, "POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n0123456789POST /b HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\n\r\nwxyz")
			Expect(string(readRaw(br, "POST").body)).To(Equal("0123"))
			Expect(string(readRaw(br, "POST").body)).To(Equal("wxyz"))
		})

		Context("when the body breaks its chunked framing (issue #18)", func() {
			var (
				addr   string
				errs   chan error
				answer atomic.Bool // the handler answers the error itself
			)
			BeforeEach(func() {
				errs = make(chan error, 1)
				answer.Store(false)
				// A handler that gives up on a body it cannot read, as the proxy's router used to.
				addr = serve(func(w http.ResponseWriter, r *http.Request) {
					_, err := io.ReadAll(r.Body)
					errs <- err
					if err != nil && answer.Load() {
						w.Header().Set("Content-Length", "4")
						w.WriteHeader(http.StatusTeapot)
						_, _ = io.WriteString(w, "oops")
					}
				})
			})

			// Regression: the body's error was taken for a client gone away, and the server's default
			// 200 went out.
			DescribeTable("answers 400 Bad Request with Connection: close and closes the connection, not 200",
				func(body string) {
					c, br := dialRaw(addr)
					send(c, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+body)
					rr := readRaw(br, "POST")
					Expect(rr.head).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
					Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
					Expect(string(rr.body)).To(Equal("Bad Request"))
					expectClosed(br)
					var err error
					Expect(errs).To(Receive(&err))
					Expect(err).To(beFramingError(http.StatusBadRequest, Not(BeEmpty())))
				},
				Entry("a size that is not hexadecimal", "zz\r\nhello\r\n0\r\n\r\n"),
				Entry("a size of 2^72", "1000000000000000000\r\nhello\r\n0\r\n\r\n"),
				Entry("a negative size", "-5\r\nhello\r\n0\r\n\r\n"),
				Entry("a chunk line ending with a bare LF", "5\nhello\r\n0\r\n\r\n"),
				Entry("data followed by a bare LF", "5\r\nhello\n0\r\n\r\n"),
				Entry("data longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
				// Nothing more is sent: the 400 must not wait for an LF, nor for the connection to end.
				Entry("a bare CR in a chunk line, no LF ever", "5\rhello"),
				Entry("data longer than its size, nothing after", "3\r\nhello"),
			)

			It("closes the connection after the handler's own answer to the error, saying so", func() {
				answer.Store(true)
				c, br := dialRaw(addr)
				send(c, "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"+
					"GET /next HTTP/1.1\r\nHost: x\r\n\r\n")
				rr := readRaw(br, "POST")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusTeapot))
				Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
				Expect(string(rr.body)).To(Equal("oops"))
				expectClosed(br)
			})
		})

		DescribeTable("sends nothing to a client gone mid-body, and closes",
			func(head, partial string) {
				errs := make(chan error, 1)
				addr := serve(func(w http.ResponseWriter, r *http.Request) {
					_, err := io.ReadAll(r.Body)
					errs <- err
				})
				c, br := dialRaw(addr)
				send(c, head+partial)
				Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed()) // the client's end of stream
				b, err := io.ReadAll(br)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).To(BeEmpty(), "no response, not the default 200")
				Expect(errs).To(Receive(MatchError(io.ErrUnexpectedEOF)))
			},
			Entry("fewer bytes than the Content-Length", "POST /c HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n", "hello"),
			Entry("in a chunk's data", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhel"),
			Entry("in a chunk line", "POST /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n", "5\r\nhello\r\n1"),
		)

		It("lets a handler replace r.Body: the server keeps its own record of the request's body", func() {
			// Regression: the reader goroutine read r.Body after dispatching the request, racing a
			// handler that replaces it (the race detector reported it).
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				orig := r.Body
				r.Body = http.NoBody
				b, err := io.ReadAll(orig)
				Expect(err).NotTo(HaveOccurred())
				w.Header().Set("Content-Length", strconv.Itoa(len(b)))
				_, _ = w.Write(b)
			})
			c, br := dialRaw(addr)
			for i := range 20 {
				body := fmt.Sprintf("payload-%02d", i)
				send(c, fmt.Sprintf("POST /r HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", len(body), body))
				Expect(string(readRaw(br, "POST").body)).To(Equal(body))
			}
		})

		It("serves many sequential POSTs whose bodies the handler reads on one connection", func() {
			addr := serve(echoBody)
			c, br := dialRaw(addr)
			for i := range 100 {
				body := fmt.Sprintf("body-%03d", i)
				send(c, fmt.Sprintf("POST /%d HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", i, len(body), body))
				rr := readRaw(br, "POST")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
				Expect(string(rr.body)).To(Equal(body))
			}
		})

		It("sends 100 Continue before the handler reads the body", func() {
			addr := serve(echoBody)
			c, br := dialRaw(addr)
			send(c, "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			rr := readRaw(br, "POST")
			Expect(rr.head).To(Equal("HTTP/1.1 100 Continue\r\n\r\n"))
			send(c, "hello")
			rr = readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("hello"))
			// The connection goes on.
			send(c, "GET /after HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
		})

		It("does not send 100 Continue when the handler answers without reading, and closes", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Length", "0")
				w.WriteHeader(http.StatusExpectationFailed)
			})
			c, br := dialRaw(addr)
			send(c, "POST /e HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			rr := readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusExpectationFailed))
			expectClosed(br)
		})

		It("reads a later request's body after discarding an earlier unread body (100-continue)", func() {
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/ignore" {
					w.WriteHeader(http.StatusNoContent) // its body is left for the server to discard
					return
				}
				entered <- struct{}{}
				select {
				case <-release:
				case <-r.Context().Done():
					return
				}
				echoBody(w, r)
			})
			c, br := dialRaw(addr)
			Expect(c.SetDeadline(time.Now().Add(3 * time.Second))).To(Succeed())
			send(c, "POST /ignore HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello")
			Expect(readRaw(br, "POST").resp.StatusCode).To(Equal(http.StatusNoContent))

			send(c, "POST /echo HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
			Eventually(entered).Should(Receive())
			first := make(chan string, 1)
			go func() {
				line, _ := br.ReadString('\n')
				first <- line
			}()
			Consistently(first).ShouldNot(Receive()) // nothing is sent before the handler reads
			close(release)
			Eventually(first).Should(Receive(Equal("HTTP/1.1 100 Continue\r\n")))
			Expect(br.ReadString('\n')).To(Equal("\r\n"))
			send(c, "world")
			rr := readRaw(br, "POST")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("world"))
		})
	})

	It("answers pipelined requests in order", func() {
		addr := serve(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == http.MethodPost {
				echoBody(w, r)
				return
			}
			echoPath(w, r)
		})
		c, br := dialRaw(addr)
		send(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"+
			"GET /2 HTTP/1.1\r\nHost: x\r\n\r\n"+
			"POST /3 HTTP/1.1\r\nHost: x\r\nContent-Length: 6\r\n\r\nbody-3"+
			"GET /4 HTTP/1.1\r\nHost: x\r\n\r\n"+
			"GET /5 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
		Expect(string(readRaw(br, "GET").body)).To(Equal("path=/1"))
		Expect(string(readRaw(br, "GET").body)).To(Equal("path=/2"))
		Expect(string(readRaw(br, "POST").body)).To(Equal("body-3"))
		Expect(string(readRaw(br, "GET").body)).To(Equal("path=/4"))
		Expect(string(readRaw(br, "GET").body)).To(Equal("path=/5"))
		expectClosed(br)
	})

	Describe("malformed requests", func() {
		var (
			addr     string
			calls    atomic.Int32
			rejected chan int // what Rejected heard
		)
		BeforeEach(func() {
			calls.Store(0)
			ch := make(chan int, 1) // this spec's: a server of an earlier spec may still be closing
			rejected = ch
			addr = start(&h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				calls.Add(1)
				echoPath(w, r)
			}), MaxHeaderBytes: 1024, Rejected: func(code int) { ch <- code }}).addr
		})

		DescribeTable("are answered with an error status and the connection closed",
			func(request string, code int) {
				c, br := dialRaw(addr)
				send(c, request)
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(code))
				Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
				Expect(string(rr.body)).To(Equal(http.StatusText(code)))
				expectClosed(br)
				Expect(calls.Load()).To(BeZero())
				Expect(rejected).To(Receive(Equal(code)))
			},
			Entry("obsolete line folding", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n", 400),
			Entry("obsolete line folding with a tab", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n\tfolded\r\n\r\n", 400),
			Entry("space before a colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A : a\r\n\r\n", 400),
			Entry("a field without a colon", "GET / HTTP/1.1\r\nHost: x\r\nX-A a\r\n\r\n", 400),
			Entry("an empty field name", "GET / HTTP/1.1\r\nHost: x\r\n: a\r\n\r\n", 400),
			Entry("a control byte in a value", "GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x01b\r\n\r\n", 400),
			Entry("a NUL in a field name", "GET / HTTP/1.1\r\nHost: x\r\nX-\x00A: a\r\n\r\n", 400),
			Entry("a non-numeric Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: abc\r\n\r\n", 400),
			Entry("a negative Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
			Entry("a signed Content-Length", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: +3\r\n\r\n", 400),
			Entry("two different Content-Lengths", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n", 400),
			Entry("Content-Length and Transfer-Encoding",
				"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n", 400),
			Entry("HTTP/1.1 without Host", "GET / HTTP/1.1\r\nX-A: a\r\n\r\n", 400),
			Entry("two Host fields", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400),
			Entry("two spaces in the request line", "GET  / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
			Entry("a request line without version", "GET /\r\nHost: x\r\n\r\n", 400),
			Entry("a garbage version", "GET / FOO/1.1\r\nHost: x\r\n\r\n", 400),
			Entry("a bad percent escape in the path", "GET /a%zz HTTP/1.1\r\nHost: x\r\n\r\n", 400),
			Entry("a method with a non-token byte", "G@T / HTTP/1.1\r\nHost: x\r\n\r\n", 400),
			Entry("Transfer-Encoding: gzip", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n\r\n", 501),
			Entry("Transfer-Encoding: gzip, chunked", "POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", 501),
			// Found by FuzzRequest (testdata/fuzz/FuzzRequest/te-http10, host-syntax): net/http ignores
			// Transfer-Encoding on HTTP/1.0, so a message framed by it is faulty (RFC 9112 §6.1); a Host
			// that is no authority is refused as net/http refuses it.
			Entry("Transfer-Encoding on HTTP/1.0", "POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n", 400),
			Entry("a Host with a space", "GET / HTTP/1.0\r\nHost: 0 0\r\n\r\n", 400),
			Entry("HTTP/2.0", "GET / HTTP/2.0\r\nHost: x\r\n\r\n", 505),
			Entry("HTTP/1.2", "GET / HTTP/1.2\r\nHost: x\r\n\r\n", 505),
			Entry("CONNECT", "CONNECT example.com:443 HTTP/1.1\r\nHost: example.com:443\r\n\r\n", 501),
			Entry("an upgrade", "GET / HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", 501),
			Entry("a head larger than MaxHeaderBytes",
				"GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 2000)+"\r\n\r\n", 431),
			Entry("many fields larger than MaxHeaderBytes together",
				"GET / HTTP/1.1\r\nHost: x\r\n"+strings.Repeat("X-Field: "+strings.Repeat("f", 50)+"\r\n", 40)+"\r\n", 431),
		)

		// The request-target is forwarded upstream: a control byte in it (a bare CR above all, which
		// some parsers take for a line end) must not get through (RFC 9112 §3.2, §2.2).
		DescribeTable("reject control bytes in the request target",
			func(request string) {
				c, br := dialRaw(addr)
				send(c, request)
				rr := readRaw(br, "GET")
				Expect(rr.resp.StatusCode).To(Equal(http.StatusBadRequest))
				Expect(calls.Load()).To(BeZero())
			},
			Entry("a bare CR", "GET /a\rb HTTP/1.1\r\nHost: x\r\n\r\n"),
			Entry("a NUL", "GET /a\x00b HTTP/1.1\r\nHost: x\r\n\r\n"),
			Entry("a DEL", "GET /a\x7fb HTTP/1.1\r\nHost: x\r\n\r\n"),
		)

		// Regression (issue #18, defect 10): a head without an LF was held until ReadHeaderTimeout
		// (one minute here, longer than a spec's I/O deadline), then answered 408. Envoy's parser
		// rejects a bare CR, or a byte that cannot start a request, as soon as it arrives.
		DescribeTable("are answered 400 at once when they cannot become valid, without waiting for an LF",
			func(request string) {
				c, br := dialRaw(addr)
				send(c, request)
				rr := readRaw(br, "GET")
				Expect(rr.head).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
				Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
				expectClosed(br)
				Expect(calls.Load()).To(BeZero())
				Expect(rejected).To(Receive(Equal(http.StatusBadRequest)))
			},
			Entry("a request line ended by a bare CR", "GET / HTTP/1.1\rHost: x\r\r"),
			Entry("a field ended by a bare CR", "GET / HTTP/1.1\r\nHost: x\rX-A: 1\r\r"),
			Entry("a bare CR in an empty line", "GET / HTTP/1.1\r\nHost: x\r\n\rX"),
			Entry("a bare CR before the request", "\rGET / HTTP/1.1"),
			Entry("a TLS ClientHello", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03"),
			Entry("binary garbage", "\x00\x01\x02\x03"),
			Entry("a space before the method", " GET / HTTP/1.1"),
			Entry("a method with a non-token byte", "G@T / HTTP/1.1"),
		)

		It("answers 400 at once to a bare CR wherever the read buffer's end falls", func() {
			addr := serve(echoPath) // the default head limit, larger than the read buffer
			for n := 4060; n <= 4110; n++ {
				c, br := dialRaw(addr)
				send(c, "GET / HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", n)+"\rb")
				rr := readRaw(br, "GET")
				Expect(rr.head).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"), "with %d bytes before the CR", n)
			}
		})

		It("waits for the LF after a CR that ends what was received", func() {
			c, br := dialRaw(addr)
			send(c, "GET /cr HTTP/1.1\r")
			send(c, "\nHost: x\r")
			send(c, "\n\r")
			send(c, "\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/cr"))
		})

		It("accepts a head just under MaxHeaderBytes", func() {
			c, br := dialRaw(addr)
			send(c, "GET /big HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 900)+"\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/big"))
		})

		It("does not tell Rejected of a connection closed before any request", func() {
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			send(c, "GET /cut HTTP/1.1\r\n")
			Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed())
			expectClosed(br)
			Expect(rejected).NotTo(Receive())
		})

		It("skips a few empty lines before a request", func() {
			c, br := dialRaw(addr)
			send(c, "\r\n\r\nGET /blank HTTP/1.1\r\nHost: x\r\n\r\n")
			rr := readRaw(br, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/blank"))
		})
	})

	Describe("the request", func() {
		It("has canonical header names whatever case the client sent", func() {
			got := make(chan http.Header, 1)
			hosts := make(chan string, 1)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				got <- r.Header.Clone()
				hosts <- r.Host
				echoPath(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.1\r\nhost: example.com\r\nx-lower-case: a\r\nCONTENT-TYPE: text/x\r\n"+
				"x-multi: 1\r\nX-MULTI: 2\r\nx-pad: \t padded value \t\r\nx-empty:\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			var h http.Header
			Expect(got).To(Receive(&h))
			Expect(h.Get("X-Lower-Case")).To(Equal("a"))
			Expect(h).To(HaveKeyWithValue("X-Lower-Case", []string{"a"}))
			Expect(h).To(HaveKeyWithValue("Content-Type", []string{"text/x"}))
			Expect(h).To(HaveKeyWithValue("X-Multi", []string{"1", "2"}))
			Expect(h).To(HaveKeyWithValue("X-Pad", []string{"padded value"}))
			Expect(h).To(HaveKeyWithValue("X-Empty", []string{""}))
			Expect(h).NotTo(HaveKey("Host"))
			for k := range h {
				Expect(k).To(Equal(http.CanonicalHeaderKey(k)))
			}
			Expect(hosts).To(Receive(Equal("example.com")))
		})

		It("does not leak one request's header fields into the next", func() {
			got := make(chan http.Header, 2)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				got <- r.Header.Clone()
				echoPath(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\nX-First: 1\r\n\r\nGET / HTTP/1.1\r\nHost: x\r\nX-Second: 2\r\n\r\n")
			readRaw(br, "GET")
			readRaw(br, "GET")
			Expect(got).To(Receive(Equal(http.Header{"X-First": {"1"}})))
			Expect(got).To(Receive(Equal(http.Header{"X-Second": {"2"}})))
		})

		type seen struct {
			Method, Host, Path, RawPath, EscapedPath, RawQuery, RequestURI, Proto, RemoteAddr string
			ProtoMajor, ProtoMinor                                                            int
			Close                                                                             bool
		}
		record := func(ch chan seen) http.HandlerFunc {
			return func(w http.ResponseWriter, r *http.Request) {
				ch <- seen{Method: r.Method, Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath,
					EscapedPath: r.URL.EscapedPath(), RawQuery: r.URL.RawQuery, RequestURI: r.RequestURI,
					Proto: r.Proto, RemoteAddr: r.RemoteAddr, ProtoMajor: r.ProtoMajor, ProtoMinor: r.ProtoMinor,
					Close: r.Close}
				echoPath(w, r)
			}
		}

		It("has the host, path, query and request URI of an origin-form target", func() {
			ch := make(chan seen, 1)
			addr := serve(record(ch))
			c, br := dialRaw(addr)
			send(c, "GET /a%20b/c%2Fd?q=1%202&x HTTP/1.1\r\nHost: example.com:8080\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			var s seen
			Expect(ch).To(Receive(&s))
			Expect(s).To(Equal(seen{Method: "GET", Host: "example.com:8080", Path: "/a b/c/d", RawPath: "/a%20b/c%2Fd",
				EscapedPath: "/a%20b/c%2Fd", RawQuery: "q=1%202&x", RequestURI: "/a%20b/c%2Fd?q=1%202&x",
				Proto: "HTTP/1.1", RemoteAddr: c.LocalAddr().String(), ProtoMajor: 1, ProtoMinor: 1}))
		})

		It("has a plain path without RawPath and keeps an empty query", func() {
			ch := make(chan seen, 1)
			addr := serve(record(ch))
			c, br := dialRaw(addr)
			send(c, "DELETE /plain/path? HTTP/1.0\r\nHost: h\r\n\r\n")
			Expect(readRaw(br, "DELETE").resp.StatusCode).To(Equal(http.StatusOK))
			var s seen
			Expect(ch).To(Receive(&s))
			Expect(s.Method).To(Equal("DELETE"))
			Expect(s.Path).To(Equal("/plain/path"))
			Expect(s.RawPath).To(BeEmpty())
			Expect(s.RawQuery).To(BeEmpty())
			Expect(s.RequestURI).To(Equal("/plain/path?"))
			Expect(s.Proto).To(Equal("HTTP/1.0"))
			Expect(s.ProtoMinor).To(Equal(0))
			Expect(s.Close).To(BeTrue())
		})

		It("takes the host of an absolute-form target over the Host field", func() {
			ch := make(chan seen, 1)
			addr := serve(record(ch))
			c, br := dialRaw(addr)
			send(c, "GET http://origin.example:81/abs?z=1 HTTP/1.1\r\nHost: other.example\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			var s seen
			Expect(ch).To(Receive(&s))
			Expect(s.Host).To(Equal("origin.example:81"))
			Expect(s.Path).To(Equal("/abs"))
			Expect(s.RawQuery).To(Equal("z=1"))
			Expect(s.RequestURI).To(Equal("http://origin.example:81/abs?z=1"))
		})

		It("accepts the asterisk form", func() {
			ch := make(chan seen, 1)
			addr := serve(record(ch))
			c, br := dialRaw(addr)
			send(c, "OPTIONS * HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(br, "OPTIONS").resp.StatusCode).To(Equal(http.StatusOK))
			var s seen
			Expect(ch).To(Receive(&s))
			Expect(s.Method).To(Equal("OPTIONS"))
			Expect(s.Path).To(Equal("*"))
			Expect(s.RequestURI).To(Equal("*"))
		})

		It("has a context derived from BaseContext", func() {
			type key struct{}
			vals := make(chan any, 1)
			base := context.WithValue(context.Background(), key{}, "base-value")
			r := start(&h1.Server{BaseContext: base, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				vals <- r.Context().Value(key{})
				echoPath(w, r)
			})})
			c, br := dialRaw(r.addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(br, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			Expect(vals).To(Receive(Equal("base-value")))
		})

		It("has its context cancelled when the client closes the connection", func() {
			entered := make(chan struct{}, 1)
			cancelled := make(chan error, 1)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				select {
				case <-r.Context().Done():
					cancelled <- r.Context().Err()
				case <-time.After(ioTimeout):
					cancelled <- errors.New("the context was not cancelled")
				}
			})
			c, _ := dialRaw(addr)
			send(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
			Eventually(entered).Should(Receive())
			Consistently(cancelled).ShouldNot(Receive())
			Expect(c.Close()).To(Succeed())
			Eventually(cancelled).Should(Receive(MatchError(context.Canceled)))
		})

		// Regression (issue #18): a handler that returned without answering a client gone away got the
		// server's default 200 written to it, which a client that had only half-closed would read.
		It("sends nothing when its handler returns without answering a client gone away", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				<-r.Context().Done()
			})
			c, br := dialRaw(addr)
			send(c, "GET /wait HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed())
			b, err := io.ReadAll(br)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(b)).To(BeEmpty())
		})
	})

	Describe("handler panics", func() {
		It("truncates the response after an ErrAbortHandler panic, past the headers", func() {
			var calls atomic.Int32
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				if calls.Add(1) > 1 {
					echoPath(w, r)
					return
				}
				w.Header().Set("X-Before", "yes")
				w.WriteHeader(http.StatusOK)
				_, _ = io.WriteString(w, "partial")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler)
			})
			tr := &http.Transport{}
			DeferCleanup(tr.CloseIdleConnections)
			client := &http.Client{Transport: tr, Timeout: ioTimeout}
			resp, err := client.Get("http://" + addr + "/abort")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(http.StatusOK))
			Expect(resp.Header.Get("X-Before")).To(Equal("yes"))
			b, err := io.ReadAll(resp.Body)
			Expect(err).To(HaveOccurred())
			Expect(string(b)).To(Equal("partial"))
			_ = resp.Body.Close()

			// The server goes on.
			resp, err = client.Get("http://" + addr + "/after")
			Expect(err).NotTo(HaveOccurred())
			b, err = io.ReadAll(resp.Body)
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body.Close()).To(Succeed())
			Expect(string(b)).To(Equal("path=/after"))
		})

		It("closes the connection on a panic before anything was written", func() {
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/panic" {
					panic("boom")
				}
				echoPath(w, r)
			})
			c, br := dialRaw(addr)
			send(c, "GET /panic HTTP/1.1\r\nHost: x\r\n\r\n")
			expectClosed(br)
			c2, br2 := dialRaw(addr)
			send(c2, "GET /ok HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(string(readRaw(br2, "GET").body)).To(Equal("path=/ok"))
		})
	})

	Describe("lifecycle", func() {
		It("Shutdown closes idle connections, waits for an in-flight request and stops accepting", func() {
			entered := make(chan struct{}, 1)
			release := make(chan struct{})
			var once sync.Once
			DeferCleanup(func() { once.Do(func() { close(release) }) })
			r := start(&h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					entered <- struct{}{}
					<-release
				}
				echoPath(w, r)
			})})
			idle, ibr := dialRaw(r.addr)
			send(idle, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(ibr, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			busy, bbr := dialRaw(r.addr)
			send(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			Eventually(entered).Should(Receive())

			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			shutdown := make(chan error, 1)
			go func() { shutdown <- r.srv.Shutdown(ctx) }()

			idleClosed := make(chan error, 1)
			go func() {
				_, err := ibr.ReadByte()
				idleClosed <- err
			}()
			Eventually(idleClosed).Should(Receive(MatchError(io.EOF)))
			Eventually(r.done).Should(BeClosed())
			Expect(r.err).To(MatchError(h1.ErrServerClosed))
			_, err := net.Dial("tcp", r.addr)
			Expect(err).To(HaveOccurred())
			Consistently(shutdown).ShouldNot(Receive())

			once.Do(func() { close(release) })
			rr := readRaw(bbr, "GET")
			Expect(rr.resp.StatusCode).To(Equal(http.StatusOK))
			Expect(string(rr.body)).To(Equal("path=/slow"))
			Expect(rr.head).To(ContainSubstring("\r\nConnection: close\r\n"))
			expectClosed(bbr)
			Eventually(shutdown).Should(Receive(BeNil()))
		})

		It("Shutdown gives up when its context ends", func() {
			entered := make(chan struct{}, 1)
			r := start(&h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				entered <- struct{}{}
				<-r.Context().Done()
			})})
			c, _ := dialRaw(r.addr)
			send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			Eventually(entered).Should(Receive())
			ctx, cancel := context.WithCancel(context.Background())
			shutdown := make(chan error, 1)
			go func() { shutdown <- r.srv.Shutdown(ctx) }()
			Consistently(shutdown).ShouldNot(Receive())
			cancel()
			Eventually(shutdown).Should(Receive(MatchError(context.Canceled)))
		})

		It("Close closes every connection at once and cancels in-flight requests", func() {
			entered := make(chan struct{}, 1)
			cancelled := make(chan struct{}, 1)
			r := start(&h1.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/slow" {
					entered <- struct{}{}
					<-r.Context().Done()
					cancelled <- struct{}{}
					return
				}
				echoPath(w, r)
			})})
			idle, ibr := dialRaw(r.addr)
			send(idle, "GET /fast HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(readRaw(ibr, "GET").resp.StatusCode).To(Equal(http.StatusOK))
			busy, bbr := dialRaw(r.addr)
			send(busy, "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
			Eventually(entered).Should(Receive())

			Expect(r.srv.Close()).To(Succeed())
			Eventually(r.done).Should(BeClosed())
			Expect(r.err).To(MatchError(h1.ErrServerClosed))
			Eventually(cancelled).Should(Receive())
			_, err := ibr.ReadByte()
			Expect(err).To(HaveOccurred())
			_, err = bbr.ReadByte()
			Expect(err).To(HaveOccurred())
		})

		It("Serve after Close returns ErrServerClosed and closes the listener", func() {
			srv := &h1.Server{Handler: http.HandlerFunc(echoPath)}
			Expect(srv.Close()).To(Succeed())
			ln := listen()
			Expect(srv.Serve(ln)).To(MatchError(h1.ErrServerClosed))
			_, err := ln.Accept()
			Expect(err).To(MatchError(net.ErrClosed))
		})

		It("tells ConnState of StateNew and StateClosed once per connection", func() {
			var states stateLog
			r := start(&h1.Server{Handler: http.HandlerFunc(echoPath), ConnState: states.hook})
			want := map[string][]http.ConnState{}
			both := []http.ConnState{http.StateNew, http.StateClosed}

			// Closed by the client after two requests.
			c1, br1 := dialRaw(r.addr)
			send(c1, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
			readRaw(br1, "GET")
			readRaw(br1, "GET")
			want[c1.LocalAddr().String()] = both
			Expect(c1.Close()).To(Succeed())
			// Closed by the server after Connection: close.
			c2, br2 := dialRaw(r.addr)
			send(c2, "GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
			readRaw(br2, "GET")
			expectClosed(br2)
			want[c2.LocalAddr().String()] = both
			// Closed by the server after a malformed request.
			c3, br3 := dialRaw(r.addr)
			send(c3, "GET / HTTP/1.1\r\n\r\n")
			Expect(readRaw(br3, "GET").resp.StatusCode).To(Equal(http.StatusBadRequest))
			expectClosed(br3)
			want[c3.LocalAddr().String()] = both
			// Closed by the client before sending anything.
			c4, _ := dialRaw(r.addr)
			want[c4.LocalAddr().String()] = both
			Eventually(func() int { return len(states.snapshot()) }).Should(Equal(4))
			Expect(c4.Close()).To(Succeed())

			Eventually(states.snapshot).Should(Equal(want))
			Consistently(states.snapshot).Should(Equal(want))
		})

		Describe("Handoff (HTTP/2)", func() {
			const preface = "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
			type handed struct {
				nc   net.Conn
				read string
			}
			// Each spec's own: a server of an earlier spec may still run its goroutines.
			var got chan handed
			var http1 *atomic.Int32
			var states *stateLog
			srv := func(all bool) *h1.Server {
				g, n, st := make(chan handed, 1), new(atomic.Int32), new(stateLog)
				got, http1, states = g, n, st
				return &h1.Server{Handler: http.HandlerFunc(echoPath), ConnState: st.hook, HandoffAll: all,
					HTTP1:   func(d int) { n.Add(int32(d)) },
					Handoff: func(nc net.Conn, read []byte) { g <- handed{nc, string(read)} }}
			}

			It("hands over a connection that starts with the preface, with what it read, and forgets it", func() {
				r := start(srv(false))
				c, _ := dialRaw(r.addr)
				send(c, preface[:5]) // a preface in two pieces
				time.Sleep(20 * time.Millisecond)
				send(c, preface[5:]+"\x00\x00\x00\x04\x00\x00\x00\x00\x00")
				var h handed
				Eventually(got).Should(Receive(&h))
				Expect(h.read).To(HavePrefix(preface))
				_, err := h.nc.Write([]byte("mine now")) // the connection is open and the callee's
				Expect(err).NotTo(HaveOccurred())
				buf := make([]byte, 8)
				_, err = io.ReadFull(c, buf)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(buf)).To(Equal("mine now"))
				Expect(http1.Load()).To(BeZero())
				Expect(h.nc.Close()).To(Succeed())
				Consistently(states.snapshot).Should(Equal(map[string][]http.ConnState{c.LocalAddr().String(): {http.StateNew}}),
					"StateClosed is the callee's to report")
			})

			It("serves HTTP/1 on a connection that does not start with the preface, counting it once", func() {
				r := start(srv(false))
				c, br := dialRaw(r.addr)
				send(c, "GET /1 HTTP/1.1\r\nHost: x\r\n\r\nGET /2 HTTP/1.1\r\nHost: x\r\n\r\n")
				readRaw(br, "GET")
				readRaw(br, "GET")
				Expect(http1.Load()).To(Equal(int32(1)))
				Expect(c.Close()).To(Succeed())
				Eventually(http1.Load).Should(BeZero())
				Expect(got).NotTo(Receive())
			})

			It("looks for the preface only at a connection's start", func() {
				r := start(srv(false))
				c, br := dialRaw(r.addr)
				send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				readRaw(br, "GET")
				send(c, preface)
				Expect(readRaw(br, "PRI").resp.StatusCode).To(Equal(http.StatusHTTPVersionNotSupported))
				Expect(got).NotTo(Receive())
			})

			It("hands over every connection with HandoffAll", func() {
				r := start(srv(true))
				c, _ := dialRaw(r.addr)
				send(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				var h handed
				Eventually(got).Should(Receive(&h))
				Expect(h.read).To(Equal("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
				Expect(h.nc.Close()).To(Succeed())
			})
		})

		It("answers a head that stalls past ReadHeaderTimeout with 408, or closes; that is not idleness", func() {
			var calls, idle atomic.Int32
			r := start(&h1.Server{ReadHeaderTimeout: 200 * time.Millisecond, IdleTimeout: time.Hour,
				IdleTimedOut: func() { idle.Add(1) },
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					calls.Add(1)
					echoPath(w, r)
				})})
			c, br := dialRaw(r.addr)
			send(c, "GET /slow HTTP/1.1\r\nHost: x\r\n")
			got := make(chan string, 1)
			go func() {
				b, _ := io.ReadAll(br)
				got <- string(b)
			}()
			var out string
			Eventually(got).Should(Receive(&out))
			Expect(out).To(Or(BeEmpty(), HavePrefix("HTTP/1.1 408 ")))
			Expect(calls.Load()).To(BeZero())
			Expect(idle.Load()).To(BeZero())
		})

		It("does not apply ReadHeaderTimeout to the time a request is handled", func() {
			release := make(chan struct{})
			entered := make(chan struct{}, 1)
			cancelled := make(chan struct{}, 1)
			r := start(&h1.Server{ReadHeaderTimeout: 100 * time.Millisecond,
				Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					entered <- struct{}{}
					select {
					case <-release:
					case <-r.Context().Done():
						cancelled <- struct{}{}
					}
					echoPath(w, r)
				})})
			c, br := dialRaw(r.addr)
			send(c, "GET /h HTTP/1.1\r\nHost: x\r\n")
			send(c, "\r\n")
			Eventually(entered).Should(Receive())
			Consistently(cancelled, 400*time.Millisecond).ShouldNot(Receive())
			close(release)
			rr := readRaw(br, "GET")
			Expect(string(rr.body)).To(Equal("path=/h"))
		})

	})
})
