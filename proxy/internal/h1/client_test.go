package h1_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/textproto"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// upstream is a raw loopback server: serveConn runs for each accepted connection, on its own goroutine.
type upstream struct {
	addr     string
	accepted atomic.Int32
	requests atomic.Int32  // counted by serveConn, when it wants
	done     chan struct{} // closed at the end of the spec
}

func startUpstream(serveConn func(u *upstream, c net.Conn, br *bufio.Reader)) *upstream {
	ln := listen()
	u := &upstream{addr: ln.Addr().String(), done: make(chan struct{})}
	var (
		mu     sync.Mutex
		conns  []net.Conn
		closed bool
		wg     sync.WaitGroup
	)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			if closed {
				mu.Unlock()
				c.Close()
				return
			}
			u.accepted.Add(1)
			conns = append(conns, c)
			wg.Add(1)
			mu.Unlock()
			go func() {
				defer wg.Done()
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(ioTimeout))
				serveConn(u, c, bufio.NewReader(c))
			}()
		}
	}()
	DeferCleanup(func() {
		_ = ln.Close()
		mu.Lock()
		closed = true
		close(u.done)
		for _, c := range conns {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return u
}

// rawRequest is a request as an upstream read it.
type rawRequest struct {
	line   string
	header http.Header
	body   []byte
}

func readRequest(br *bufio.Reader) (*rawRequest, error) {
	tp := textproto.NewReader(br)
	line, err := tp.ReadLine()
	if err != nil {
		return nil, err
	}
	mh, err := tp.ReadMIMEHeader()
	if err != nil {
		return nil, err
	}
	r := &rawRequest{line: line, header: http.Header(mh)}
	if cl := mh.Get("Content-Length"); cl != "" {
		n, err := strconv.Atoi(cl)
		if err != nil {
			return nil, err
		}
		r.body = make([]byte, n)
		if _, err := io.ReadFull(br, r.body); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// answer serves every request of a connection with the same raw response, recording the requests.
func answer(response string, seen chan<- *rawRequest) func(*upstream, net.Conn, *bufio.Reader) {
	return func(u *upstream, c net.Conn, br *bufio.Reader) {
		for {
			r, err := readRequest(br)
			if err != nil {
				return
			}
			u.requests.Add(1)
			if seen != nil {
				seen <- r
			}
			if _, err := io.WriteString(c, response); err != nil {
				return
			}
		}
	}
}

// newPool makes a Pool for addr whose Dial counts its calls; it is closed at the end of the spec.
func newPool(addr string) (*h1.Pool, *atomic.Int32) {
	var dials atomic.Int32
	p := &h1.Pool{Addr: addr, Dial: func(ctx context.Context, a string) (net.Conn, error) {
		dials.Add(1)
		var d net.Dialer
		return d.DialContext(ctx, "tcp", a)
	}}
	DeferCleanup(p.Close)
	return p, &dials
}

func get(uri string) *h1.Request {
	return &h1.Request{Method: http.MethodGet, URI: uri, Host: "example.test"}
}

// roundTrip sends req and reads the whole response body, closing it.
func roundTrip(p *h1.Pool, req *h1.Request) (*http.Response, string) {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
	defer cancel()
	resp, err := p.RoundTrip(ctx, req)
	Expect(err).NotTo(HaveOccurred())
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	Expect(resp.Body.Close()).To(Succeed())
	return resp, string(b)
}

const okResponse = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"

var _ = Describe("Pool", func() {
	Describe("against a net/http server", func() {
		var (
			ts      *httptest.Server
			remotes chan string
		)
		BeforeEach(func() {
			remotes = make(chan string, 100)
			ts = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				remotes <- r.RemoteAddr
				switch r.URL.Path {
				case "/created":
					w.Header().Set("X-Test", "value")
					w.Header().Add("X-Multi", "1")
					w.Header().Add("X-Multi", "2")
					w.Header().Set("X-Host", r.Host)
					w.Header().Set("X-URI", r.RequestURI)
					w.Header().Set("Content-Type", "text/plain")
					w.WriteHeader(http.StatusCreated)
					_, _ = io.WriteString(w, "created")
				case "/big":
					w.Header().Set("Content-Length", strconv.Itoa(64<<10))
					_, _ = w.Write(make([]byte, 64<<10))
				case "/stream":
					_, _ = io.WriteString(w, "part1,")
					w.(http.Flusher).Flush()
					_, _ = io.WriteString(w, "part2")
				case "/echo":
					b, _ := io.ReadAll(r.Body)
					w.Header().Set("X-Content-Length", strconv.FormatInt(r.ContentLength, 10))
					_, _ = w.Write(b)
				default:
					_, _ = io.WriteString(w, "path="+r.URL.Path)
				}
			}))
			DeferCleanup(ts.Close)
		})
		addr := func() string { return ts.Listener.Addr().String() }

		It("returns the status, header fields and body, dialing once", func() {
			p, dials := newPool(addr())
			resp, body := roundTrip(p, get("/created?q=1"))
			Expect(resp.StatusCode).To(Equal(http.StatusCreated))
			Expect(resp.Status).To(Equal("201 Created"))
			Expect(resp.Proto).To(Equal("HTTP/1.1"))
			Expect(resp.ProtoMajor).To(Equal(1))
			Expect(resp.ProtoMinor).To(Equal(1))
			Expect(resp.Header.Get("X-Test")).To(Equal("value"))
			Expect(resp.Header["X-Multi"]).To(Equal([]string{"1", "2"}))
			Expect(resp.Header.Get("X-Host")).To(Equal("example.test"))
			Expect(resp.Header.Get("X-URI")).To(Equal("/created?q=1"))
			Expect(resp.ContentLength).To(BeEquivalentTo(7))
			Expect(body).To(Equal("created"))
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		It("sends the Pool's address as Host when the request has none", func() {
			p, _ := newPool(addr())
			resp, _ := roundTrip(p, &h1.Request{Method: http.MethodGet, URI: "/created"})
			Expect(resp.Header.Get("X-Host")).To(Equal(addr()))
		})

		It("reuses one connection for sequential requests whose bodies were read and closed", func() {
			p, dials := newPool(addr())
			for i := range 5 {
				resp, body := roundTrip(p, get(fmt.Sprintf("/seq%d", i)))
				Expect(resp.StatusCode).To(Equal(http.StatusOK))
				Expect(body).To(Equal(fmt.Sprintf("path=/seq%d", i)))
				Expect(p.Idle()).To(Equal(1))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
			seen := map[string]bool{}
			for range 5 {
				seen[<-remotes] = true
			}
			Expect(seen).To(HaveLen(1))
			Expect(h1.IdleAlive(p)).To(Equal([]bool{true}))
		})

		It("does not reuse a connection whose body was closed before its end", func() {
			p, dials := newPool(addr())
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			resp, err := p.RoundTrip(ctx, get("/big"))
			Expect(err).NotTo(HaveOccurred())
			_, err = io.ReadFull(resp.Body, make([]byte, 10))
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body.Close()).To(Succeed())
			Expect(p.Idle()).To(BeZero())
			_, err = resp.Body.Read(make([]byte, 1))
			Expect(err).To(MatchError(h1.ErrBodyClosed))

			resp, err = p.RoundTrip(ctx, get("/big"))
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body.Close()).To(Succeed()) // nothing read
			Expect(p.Idle()).To(BeZero())

			_, body := roundTrip(p, get("/small"))
			Expect(body).To(Equal("path=/small"))
			Expect(dials.Load()).To(BeEquivalentTo(3))
			Expect(p.Idle()).To(Equal(1))
		})

		It("reads a chunked body and reuses the connection", func() {
			p, dials := newPool(addr())
			for range 3 {
				resp, body := roundTrip(p, get("/stream"))
				Expect(resp.TransferEncoding).To(Equal([]string{"chunked"}))
				Expect(resp.ContentLength).To(BeEquivalentTo(-1))
				Expect(body).To(Equal("part1,part2"))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		It("sends a POST body with its Content-Length", func() {
			p, _ := newPool(addr())
			resp, body := roundTrip(p, &h1.Request{Method: http.MethodPost, URI: "/echo", Host: "x", Body: []byte("hello body")})
			Expect(resp.Header.Get("X-Content-Length")).To(Equal("10"))
			Expect(body).To(Equal("hello body"))
		})
	})

	Describe("the request written", func() {
		It("leaves out hop-by-hop fields, those Connection names and Omit, and lets Extra replace fields", func() {
			seen := make(chan *rawRequest, 1)
			u := startUpstream(answer(okResponse, seen))
			p, _ := newPool(u.addr)
			roundTrip(p, &h1.Request{Method: http.MethodGet, URI: "/hop?x=1", Host: "example.test",
				Header: http.Header{
					"Connection":          {"X-Conn-Named, keep-alive", "x-other-named"},
					"Keep-Alive":          {"timeout=5"},
					"Te":                  {"trailers"},
					"Upgrade":             {"websocket"},
					"Proxy-Connection":    {"keep-alive"},
					"Proxy-Authorization": {"Basic eDp5"},
					"Transfer-Encoding":   {"chunked"},
					"Trailer":             {"X-T"},
					"Content-Length":      {"99"},
					"Host":                {"wrong.example"},
					"X-Conn-Named":        {"secret"},
					"X-Other-Named":       {"secret"},
					"X-Omitted":           {"omitted"},
					"X-Replaced":          {"old1", "old2"},
					"X-Kept":              {"k1", "k2"},
				},
				Omit:  map[string]bool{"X-Omitted": true},
				Extra: http.Header{"X-Replaced": {"new"}, "X-Added": {"added"}},
			})
			var r *rawRequest
			Expect(seen).To(Receive(&r))
			Expect(r.line).To(Equal("GET /hop?x=1 HTTP/1.1"))
			Expect(r.header).To(Equal(http.Header{
				"Host":       {"example.test"},
				"X-Replaced": {"new"},
				"X-Added":    {"added"},
				"X-Kept":     {"k1", "k2"},
			}))
			Expect(r.body).To(BeEmpty())
		})

		It("sends Content-Length for a body, and for a POST without one, but not for a bodiless GET", func() {
			seen := make(chan *rawRequest, 3)
			u := startUpstream(answer(okResponse, seen))
			p, dials := newPool(u.addr)
			var r *rawRequest

			roundTrip(p, &h1.Request{Method: http.MethodPost, URI: "/p", Body: []byte("hello world")})
			Expect(seen).To(Receive(&r))
			Expect(r.line).To(Equal("POST /p HTTP/1.1"))
			Expect(r.header["Content-Length"]).To(Equal([]string{"11"}))
			Expect(string(r.body)).To(Equal("hello world"))

			roundTrip(p, &h1.Request{Method: http.MethodPost, URI: "/empty"})
			Expect(seen).To(Receive(&r))
			Expect(r.header["Content-Length"]).To(Equal([]string{"0"}))

			roundTrip(p, &h1.Request{Method: http.MethodGet, URI: "/g"})
			Expect(seen).To(Receive(&r))
			Expect(r.header).NotTo(HaveKey("Content-Length"))
			Expect(r.header).NotTo(HaveKey("Transfer-Encoding"))

			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		It("does not let a line break in a field value split the head", func() {
			seen := make(chan *rawRequest, 1)
			u := startUpstream(answer(okResponse, seen))
			p, _ := newPool(u.addr)
			roundTrip(p, &h1.Request{Method: http.MethodGet, URI: "/", Host: "h\r\nX-Injected: 1",
				Header: http.Header{"X-A": {"a\r\nX-Injected: 2"}}})
			var r *rawRequest
			Expect(seen).To(Receive(&r))
			Expect(r.header).NotTo(HaveKey("X-Injected"))
			Expect(r.header["X-A"]).To(HaveLen(1))
		})
	})

	Describe("responses", func() {
		It("reads a chunked body with a trailer and reuses the connection", func() {
			u := startUpstream(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-T\r\n\r\n"+
				"5\r\nhello\r\n6;ext=v\r\n world\r\n0\r\nX-T: v\r\nX-U: w\r\n\r\n", nil))
			p, dials := newPool(u.addr)
			for range 3 {
				resp, body := roundTrip(p, get("/c"))
				Expect(resp.TransferEncoding).To(Equal([]string{"chunked"}))
				Expect(body).To(Equal("hello world"))
				Expect(p.Idle()).To(Equal(1))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
			Expect(u.accepted.Load()).To(BeEquivalentTo(1))
			Expect(u.requests.Load()).To(BeEquivalentTo(3))
		})

		It("reads a body delimited by the connection's end and does not reuse the connection", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nuntil the end")
			})
			p, dials := newPool(u.addr)
			for i := range 2 {
				resp, body := roundTrip(p, get("/eof"))
				Expect(resp.Close).To(BeTrue())
				Expect(resp.ContentLength).To(BeEquivalentTo(-1))
				Expect(body).To(Equal("until the end"))
				Expect(p.Idle()).To(BeZero())
				Expect(dials.Load()).To(BeEquivalentTo(i + 1))
			}
		})

		It("skips interim 1xx responses", func() {
			u := startUpstream(answer("HTTP/1.1 100 Continue\r\n\r\n"+
				"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n"+
				"HTTP/1.1 200 OK\r\nX-Final: 1\r\nContent-Length: 2\r\n\r\nok", nil))
			p, dials := newPool(u.addr)
			for range 2 {
				resp, body := roundTrip(p, get("/hints"))
				Expect(resp.StatusCode).To(Equal(http.StatusOK))
				Expect(resp.Status).To(Equal("200 OK"))
				Expect(resp.Header.Get("X-Final")).To(Equal("1"))
				Expect(resp.Header).NotTo(HaveKey("Link"))
				Expect(body).To(Equal("ok"))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		DescribeTable("reads no body where there is none and reuses the connection",
			func(method, response string, code int) {
				u := startUpstream(answer(response, nil))
				p, dials := newPool(u.addr)
				for range 2 {
					resp, body := roundTrip(p, &h1.Request{Method: method, URI: "/"})
					Expect(resp.StatusCode).To(Equal(code))
					Expect(body).To(BeEmpty())
				}
				Expect(dials.Load()).To(BeEquivalentTo(1))
				Expect(u.requests.Load()).To(BeEquivalentTo(2))
			},
			Entry("HEAD with a Content-Length", http.MethodHead, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", 200),
			Entry("HEAD with chunked", http.MethodHead, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", 200),
			Entry("204", http.MethodGet, "HTTP/1.1 204 No Content\r\n\r\n", 204),
			Entry("304 with a Content-Length", http.MethodGet, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n", 304),
			Entry("Content-Length: 0", http.MethodGet, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", 200),
			Entry("HTTP/1.0 with keep-alive", http.MethodGet, "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 0\r\n\r\n", 200),
		)

		DescribeTable("do not leave their connection in the pool when it cannot go on",
			func(response string) {
				u := startUpstream(answer(response, nil))
				p, dials := newPool(u.addr)
				for range 2 {
					resp, body := roundTrip(p, get("/"))
					Expect(resp.Close).To(BeTrue())
					Expect(body).To(Equal("ok"))
					Expect(p.Idle()).To(BeZero())
				}
				Expect(dials.Load()).To(BeEquivalentTo(2))
			},
			Entry("Connection: close", "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok"),
			Entry("HTTP/1.0 without keep-alive", "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok"),
		)

		DescribeTable("are errors when unusable",
			func(configure func(*h1.Pool), response string) {
				u := startUpstream(answer(response, nil))
				p, _ := newPool(u.addr)
				if configure != nil {
					configure(p)
				}
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				DeferCleanup(cancel)
				resp, err := p.RoundTrip(ctx, get("/"))
				Expect(err).To(HaveOccurred())
				Expect(resp).To(BeNil())
				Expect(p.Idle()).To(BeZero())
			},
			Entry("101 Switching Protocols", nil, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: upgrade\r\n\r\n"),
			Entry("a two-digit status", nil, "HTTP/1.1 20 OK\r\nContent-Length: 0\r\n\r\n"),
			Entry("HTTP/2.0", nil, "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n"),
			Entry("two Content-Lengths", nil, "HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nok"),
			Entry("Content-Length and chunked", nil, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nTransfer-Encoding: chunked\r\n\r\nok"),
			Entry("a folded field", nil, "HTTP/1.1 200 OK\r\nX-A: a\r\n b\r\nContent-Length: 0\r\n\r\n"),
			// Found by FuzzResponse (testdata/fuzz/FuzzResponse/te-http10, interim-version).
			Entry("Transfer-Encoding on HTTP/1.0 (RFC 9112 §6.1: faulty framing)", nil, "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nok\r\n0\r\n\r\n"),
			Entry("an interim response without a version", nil, "0 100 \r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
			Entry("an empty line before a response (testdata/fuzz/FuzzResponse/f4b8681c4a2a127f)", nil, "HTTP/1.1 100 Continue\r\n\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
			Entry("a head over MaxHeaderBytes", func(p *h1.Pool) { p.MaxHeaderBytes = 256 },
				"HTTP/1.1 200 OK\r\nX-Big: "+strings.Repeat("b", 1000)+"\r\nContent-Length: 0\r\n\r\n"),
		)

		It("fails a body cut short of its Content-Length and drops the connection", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err == nil {
					_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nabc")
				}
			})
			p, _ := newPool(u.addr)
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			resp, err := p.RoundTrip(ctx, get("/"))
			Expect(err).NotTo(HaveOccurred())
			b, err := io.ReadAll(resp.Body)
			Expect(err).To(MatchError(io.ErrUnexpectedEOF))
			Expect(string(b)).To(Equal("abc"))
			Expect(resp.Body.Close()).To(Succeed())
			Expect(p.Idle()).To(BeZero())
		})

		// The pool decodes chunked bodies with the server's strict decoder: a malformed one is a
		// *FramingError (the proxy resets the downstream mid-body), never data, and its connection is
		// dropped.
		DescribeTable("fails a chunked body that breaks its framing with a *FramingError and drops the connection",
			func(body, data string) {
				u := startUpstream(answer("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+body, nil))
				p, _ := newPool(u.addr)
				ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
				DeferCleanup(cancel)
				resp, err := p.RoundTrip(ctx, get("/"))
				Expect(err).NotTo(HaveOccurred())
				b, err := io.ReadAll(resp.Body)
				Expect(err).To(beFramingError(http.StatusBadRequest, Not(BeEmpty())))
				Expect(string(b)).To(Equal(data))
				Expect(resp.Body.Close()).To(Succeed())
				Expect(p.Idle()).To(BeZero())
			},
			Entry("a size that is not hexadecimal", "zz\r\nhello\r\n0\r\n\r\n", ""),
			Entry("a chunk line ending with a bare LF", "5\r\nhello\r\n5\nworld\r\n0\r\n\r\n", "hello"),
			Entry("data longer than its size", "3\r\nhello\r\n0\r\n\r\n", "hel"),
			Entry("a control byte in an extension", "5;a=\x01\r\nhello\r\n0\r\n\r\n", ""),
		)
	})

	Describe("connection failures", func() {
		It("dials anew instead of reusing a connection the upstream closed while idle", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				u.requests.Add(1)
				_, _ = io.WriteString(c, okResponse) // keep-alive, then closed at once
			})
			p, dials := newPool(u.addr)
			_, body := roundTrip(p, get("/1"))
			Expect(body).To(Equal("ok"))
			Expect(p.Idle()).To(Equal(1))
			Eventually(func() []bool { return h1.IdleAlive(p) }).Should(Equal([]bool{false}))

			_, body = roundTrip(p, get("/2"))
			Expect(body).To(Equal("ok"))
			Expect(dials.Load()).To(BeEquivalentTo(2))
			Expect(u.accepted.Load()).To(BeEquivalentTo(2))
			Expect(u.requests.Load()).To(BeEquivalentTo(2))
		})

		// Issue #18, defect 10: connections the upstream closed sat in CLOSE_WAIT until the next request.
		It("closes, within ReapInterval and without a request, an idle connection the upstream closed", func() {
			ours := make(chan error, 1)
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, okResponse)
				_ = c.(*net.TCPConn).CloseWrite() // the upstream is done: FIN, and it waits for ours
				_, err := io.ReadAll(br)
				ours <- err
			})
			p, _ := newPool(u.addr)
			p.ReapInterval = 20 * time.Millisecond
			_, body := roundTrip(p, get("/"))
			Expect(body).To(Equal("ok"))
			Eventually(p.Idle).Should(BeZero())
			Eventually(ours).Should(Receive(BeNil()), "the pool closed its end: no CLOSE_WAIT")
		})

		It("closes an idle connection once it has been idle IdleTimeout, without a request", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				for {
					if _, err := readRequest(br); err != nil {
						return
					}
					_, _ = io.WriteString(c, okResponse)
				}
			})
			p, _ := newPool(u.addr)
			p.ReapInterval, p.IdleTimeout = 20*time.Millisecond, 100*time.Millisecond
			roundTrip(p, get("/"))
			Expect(p.Idle()).To(Equal(1))
			Eventually(p.Idle).Should(BeZero())
		})

		It("dials anew instead of reusing a connection on which the upstream sent unasked bytes", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				for {
					if _, err := readRequest(br); err != nil {
						return
					}
					_, _ = io.WriteString(c, okResponse+"garbage")
				}
			})
			p, dials := newPool(u.addr)
			roundTrip(p, get("/1"))
			Eventually(func() []bool { return h1.IdleAlive(p) }).Should(Equal([]bool{false}))
			_, body := roundTrip(p, get("/2"))
			Expect(body).To(Equal("ok"))
			Expect(dials.Load()).To(BeEquivalentTo(2))
		})

		resetAfterRequest := func(u *upstream, c net.Conn, br *bufio.Reader) {
			for {
				r, err := readRequest(br)
				if err != nil {
					return
				}
				if u.requests.Add(1); strings.Contains(r.line, " /reset ") {
					_ = c.(*net.TCPConn).SetLinger(0)
					_ = c.Close()
					return
				}
				_, _ = io.WriteString(c, okResponse)
			}
		}

		It("fails, without sending the request again, when the upstream resets after reading it", func() {
			u := startUpstream(resetAfterRequest)
			p, dials := newPool(u.addr)
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			resp, err := p.RoundTrip(ctx, &h1.Request{Method: http.MethodGet, URI: "/reset"})
			Expect(err).To(HaveOccurred())
			Expect(resp).To(BeNil())
			Expect(u.requests.Load()).To(BeEquivalentTo(1))
			Expect(dials.Load()).To(BeEquivalentTo(1))
			Consistently(u.accepted.Load).Should(BeEquivalentTo(1))
			Expect(p.Idle()).To(BeZero())
		})

		It("fails, without sending the request again, when a reused connection is reset", func() {
			u := startUpstream(resetAfterRequest)
			p, dials := newPool(u.addr)
			roundTrip(p, get("/first"))
			Expect(p.Idle()).To(Equal(1))
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			_, err := p.RoundTrip(ctx, &h1.Request{Method: http.MethodPost, URI: "/reset", Body: []byte("once")})
			Expect(err).To(HaveOccurred())
			Expect(u.requests.Load()).To(BeEquivalentTo(2))
			Expect(dials.Load()).To(BeEquivalentTo(1))
			Consistently(u.accepted.Load).Should(BeEquivalentTo(1))
		})

		It("returns the Dial error as it is", func() {
			dialErr := errors.New("no route, says the test")
			p := &h1.Pool{Addr: "127.0.0.1:1", Dial: func(context.Context, string) (net.Conn, error) { return nil, dialErr }}
			resp, err := p.RoundTrip(context.Background(), get("/"))
			Expect(err).To(BeIdenticalTo(dialErr))
			Expect(resp).To(BeNil())
		})
	})

	Describe("contexts", func() {
		It("aborts a round trip waiting for the response head when the context is cancelled", func() {
			gotRequest := make(chan struct{}, 1)
			connClosed := make(chan struct{}, 1)
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				gotRequest <- struct{}{}
				_, _ = io.Copy(io.Discard, br) // until the client closes
				connClosed <- struct{}{}
			})
			p, _ := newPool(u.addr)
			ctx, cancel := context.WithCancelCause(context.Background())
			DeferCleanup(func() { cancel(nil) })
			cause := errors.New("the downstream went away")
			result := make(chan error, 1)
			go func() {
				resp, err := p.RoundTrip(ctx, get("/hang"))
				if resp != nil {
					_ = resp.Body.Close()
				}
				result <- err
			}()
			Eventually(gotRequest).Should(Receive())
			Consistently(result).ShouldNot(Receive())
			cancel(cause)
			Eventually(result).Within(2 * time.Second).Should(Receive(HaveOccurred()))
			Expect(context.Cause(ctx)).To(BeIdenticalTo(cause))
			Eventually(connClosed).Should(Receive())
			Expect(p.Idle()).To(BeZero())
		})

		It("does not dial with a context already done", func() {
			u := startUpstream(answer(okResponse, nil))
			p, dials := newPool(u.addr)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			_, err := p.RoundTrip(ctx, get("/"))
			Expect(err).To(MatchError(context.Canceled))
			Expect(dials.Load()).To(BeZero())
		})

		It("fails a body read when the context is cancelled, and drops the connection", func() {
			connClosed := make(chan struct{}, 1)
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
				_, _ = io.Copy(io.Discard, br)
				connClosed <- struct{}{}
			})
			p, _ := newPool(u.addr)
			ctx, cancel := context.WithCancel(context.Background())
			DeferCleanup(cancel)
			resp, err := p.RoundTrip(ctx, get("/slow-body"))
			Expect(err).NotTo(HaveOccurred())
			b := make([]byte, 10)
			_, err = io.ReadFull(resp.Body, b)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(b)).To(Equal("0123456789"))
			readErr := make(chan error, 1)
			go func() {
				_, err := resp.Body.Read(make([]byte, 10))
				readErr <- err
			}()
			Consistently(readErr).ShouldNot(Receive())
			cancel()
			Eventually(readErr).Within(2 * time.Second).Should(Receive(HaveOccurred()))
			Expect(resp.Body.Close()).To(Succeed())
			Expect(p.Idle()).To(BeZero())
			Eventually(connClosed).Should(Receive())
		})

		It("keeps a connection whose exchange ended before its context was cancelled", func() {
			u := startUpstream(answer(okResponse, nil))
			p, dials := newPool(u.addr)
			for range 2 {
				ctx, cancel := context.WithCancel(context.Background())
				resp, err := p.RoundTrip(ctx, get("/"))
				Expect(err).NotTo(HaveOccurred())
				_, err = io.ReadAll(resp.Body)
				Expect(err).NotTo(HaveOccurred())
				Expect(resp.Body.Close()).To(Succeed())
				cancel()
				Expect(p.Idle()).To(Equal(1))
				Expect(h1.IdleAlive(p)).To(Equal([]bool{true}))
			}
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})
	})

	Describe("idle connections", func() {
		closeSignal := func(closed chan<- struct{}) func(*upstream, net.Conn, *bufio.Reader) {
			return func(u *upstream, c net.Conn, br *bufio.Reader) {
				for {
					if _, err := readRequest(br); err != nil {
						closed <- struct{}{}
						return
					}
					_, _ = io.WriteString(c, okResponse)
				}
			}
		}

		It("Close closes the idle connections and those released after it", func() {
			closed := make(chan struct{}, 4)
			u := startUpstream(closeSignal(closed))
			p, dials := newPool(u.addr)
			roundTrip(p, get("/"))
			Expect(p.Idle()).To(Equal(1))

			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			inFlight, err := p.RoundTrip(ctx, get("/")) // a second connection, busy
			Expect(err).NotTo(HaveOccurred())
			Expect(dials.Load()).To(BeEquivalentTo(1)) // it took the idle one
			Expect(p.Idle()).To(BeZero())
			roundTrip(p, get("/")) // a new one, released idle
			Expect(dials.Load()).To(BeEquivalentTo(2))
			Expect(p.Idle()).To(Equal(1))

			p.Close()
			Expect(p.Idle()).To(BeZero())
			Eventually(closed).Should(Receive())

			_, err = io.ReadAll(inFlight.Body)
			Expect(err).NotTo(HaveOccurred())
			Expect(inFlight.Body.Close()).To(Succeed())
			Expect(p.Idle()).To(BeZero())
			Eventually(closed).Should(Receive())
		})

		It("CloseIdle closes the idle connections and keeps pooling", func() {
			closed := make(chan struct{}, 4)
			u := startUpstream(closeSignal(closed))
			p, dials := newPool(u.addr)
			roundTrip(p, get("/"))
			p.CloseIdle()
			Expect(p.Idle()).To(BeZero())
			Eventually(closed).Should(Receive())
			roundTrip(p, get("/"))
			Expect(p.Idle()).To(Equal(1))
			Expect(dials.Load()).To(BeEquivalentTo(2))
		})

		It("does not reuse a connection idle longer than IdleTimeout", func() {
			u := startUpstream(answer(okResponse, nil))
			p, dials := newPool(u.addr)
			p.IdleTimeout = time.Nanosecond
			roundTrip(p, get("/"))
			roundTrip(p, get("/"))
			Expect(dials.Load()).To(BeEquivalentTo(2))
			Expect(u.requests.Load()).To(BeEquivalentTo(2))
		})

		It("keeps at most MaxIdle idle connections", func() {
			closed := make(chan struct{}, 4)
			u := startUpstream(closeSignal(closed))
			p, dials := newPool(u.addr)
			p.MaxIdle = 1
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			r1, err := p.RoundTrip(ctx, get("/"))
			Expect(err).NotTo(HaveOccurred())
			r2, err := p.RoundTrip(ctx, get("/"))
			Expect(err).NotTo(HaveOccurred())
			Expect(dials.Load()).To(BeEquivalentTo(2))
			for _, r := range []*http.Response{r1, r2} {
				_, err := io.ReadAll(r.Body)
				Expect(err).NotTo(HaveOccurred())
				Expect(r.Body.Close()).To(Succeed())
			}
			Expect(p.Idle()).To(Equal(1))
			Eventually(closed).Should(Receive())
			Consistently(closed).ShouldNot(Receive())
		})

		It("reuses the most recently used connection first", func() {
			remotes := make(chan string, 8)
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				for {
					if _, err := readRequest(br); err != nil {
						return
					}
					remotes <- c.RemoteAddr().String()
					_, _ = io.WriteString(c, okResponse)
				}
			})
			p, dials := newPool(u.addr)
			ctx, cancel := context.WithTimeout(context.Background(), ioTimeout)
			DeferCleanup(cancel)
			r1, err := p.RoundTrip(ctx, get("/a"))
			Expect(err).NotTo(HaveOccurred())
			r2, err := p.RoundTrip(ctx, get("/b"))
			Expect(err).NotTo(HaveOccurred())
			first, second := <-remotes, <-remotes
			Expect(first).NotTo(Equal(second))
			for _, r := range []*http.Response{r1, r2} { // r2's connection is released last
				_, _ = io.ReadAll(r.Body)
				Expect(r.Body.Close()).To(Succeed())
			}
			roundTrip(p, get("/c"))
			Expect(<-remotes).To(Equal(second))
			Expect(dials.Load()).To(BeEquivalentTo(2))
		})
	})

	Describe("Request.Deadline", func() {
		It("bounds the wait for the response head", func() {
			connClosed := make(chan struct{}, 1)
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				_, _ = io.Copy(io.Discard, br)
				connClosed <- struct{}{}
			})
			p, _ := newPool(u.addr)
			req := get("/hang")
			req.Deadline = time.Now().Add(200 * time.Millisecond)
			result := make(chan error, 1)
			go func() {
				resp, err := p.RoundTrip(context.Background(), req)
				if resp != nil {
					_ = resp.Body.Close()
				}
				result <- err
			}()
			var err error
			Eventually(result).Within(3 * time.Second).Should(Receive(&err))
			Expect(err).To(MatchError(os.ErrDeadlineExceeded))
			Eventually(connClosed).Should(Receive())
			Expect(p.Idle()).To(BeZero())
		})

		It("bounds the reads of the body", func() {
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
				_, _ = io.Copy(io.Discard, br)
			})
			p, _ := newPool(u.addr)
			req := get("/slow-body")
			req.Deadline = time.Now().Add(200 * time.Millisecond)
			resp, err := p.RoundTrip(context.Background(), req)
			Expect(err).NotTo(HaveOccurred())
			result := make(chan error, 1)
			go func() {
				_, err := io.ReadAll(resp.Body)
				result <- err
			}()
			Eventually(result).Within(3 * time.Second).Should(Receive(MatchError(os.ErrDeadlineExceeded)))
			Expect(resp.Body.Close()).To(Succeed())
			Expect(p.Idle()).To(BeZero())
		})

		It("does not outlive its exchange on a reused connection", func() {
			release := make(chan struct{})
			u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
				for n := 0; ; n++ {
					if _, err := readRequest(br); err != nil {
						return
					}
					if n == 1 {
						select {
						case <-release:
						case <-u.done:
							return
						}
					}
					_, _ = io.WriteString(c, okResponse)
				}
			})
			p, dials := newPool(u.addr)
			req := get("/first")
			deadline := time.Now().Add(100 * time.Millisecond)
			req.Deadline = deadline
			roundTrip(p, req)
			Expect(p.Idle()).To(Equal(1))

			result := make(chan error, 1)
			go func() {
				resp, err := p.RoundTrip(context.Background(), get("/second"))
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					_ = resp.Body.Close()
				}
				result <- err
			}()
			// The first exchange's deadline passes while the second waits for its response.
			Eventually(func() bool { return time.Now().After(deadline.Add(50 * time.Millisecond)) }).Should(BeTrue())
			close(release)
			Eventually(result).Should(Receive(BeNil()))
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})
	})

	Describe("Aborter", func() {
		hangUpstream := func(gotRequest, connClosed chan<- struct{}) func(*upstream, net.Conn, *bufio.Reader) {
			return func(u *upstream, c net.Conn, br *bufio.Reader) {
				if _, err := readRequest(br); err != nil {
					return
				}
				gotRequest <- struct{}{}
				_, _ = io.Copy(io.Discard, br)
				connClosed <- struct{}{}
			}
		}

		It("Interrupt aborts the exchange registered with it, which the context no longer does", func() {
			gotRequest, connClosed := make(chan struct{}, 1), make(chan struct{}, 1)
			u := startUpstream(hangUpstream(gotRequest, connClosed))
			p, _ := newPool(u.addr)
			ab := &h1.Aborter{}
			req := get("/hang")
			req.Abort = ab
			ctx, cancel := context.WithCancel(context.Background())
			DeferCleanup(cancel)
			result := make(chan error, 1)
			go func() {
				resp, err := p.RoundTrip(ctx, req)
				if resp != nil {
					_ = resp.Body.Close()
				}
				result <- err
			}()
			Eventually(gotRequest).Should(Receive())
			cancel()
			Consistently(result).ShouldNot(Receive())
			ab.Interrupt()
			Eventually(result).Within(2 * time.Second).Should(Receive(HaveOccurred()))
			Eventually(connClosed).Should(Receive())
			Expect(p.Idle()).To(BeZero())
		})

		It("lets a connection whose exchange ended go back to the pool", func() {
			u := startUpstream(answer(okResponse, nil))
			p, dials := newPool(u.addr)
			ab := &h1.Aborter{}
			for range 3 {
				req := get("/")
				req.Abort = ab
				_, body := roundTrip(p, req)
				Expect(body).To(Equal("ok"))
			}
			ab.Interrupt() // nothing registered any more
			Expect(p.Idle()).To(Equal(1))
			Expect(h1.IdleAlive(p)).To(Equal([]bool{true}))
			roundTrip(p, get("/"))
			Expect(dials.Load()).To(BeEquivalentTo(1))
		})

		It("is in a server request's context, and aborts the upstream exchange when the client goes away", func() {
			gotRequest, connClosed := make(chan struct{}, 1), make(chan struct{}, 1)
			u := startUpstream(hangUpstream(gotRequest, connClosed))
			p, _ := newPool(u.addr)
			Expect(h1.AborterFrom(context.Background())).To(BeNil())
			results := make(chan error, 2)
			addr := serve(func(w http.ResponseWriter, r *http.Request) {
				ab := h1.AborterFrom(r.Context())
				if ab == nil {
					results <- errors.New("no Aborter in the request context")
					return
				}
				req := get(r.URL.Path)
				req.Abort = ab
				resp, err := p.RoundTrip(r.Context(), req)
				if resp != nil {
					_ = resp.Body.Close()
				}
				results <- err
				// A later exchange for the same gone downstream is refused at once.
				resp, err = p.RoundTrip(context.Background(), &h1.Request{Method: http.MethodGet, URI: "/again", Abort: ab})
				if resp != nil {
					_ = resp.Body.Close()
				}
				results <- err
			})
			c, _ := dialRaw(addr)
			send(c, "GET /proxied HTTP/1.1\r\nHost: x\r\n\r\n")
			Eventually(gotRequest).Should(Receive())
			Consistently(results).ShouldNot(Receive())
			Expect(c.Close()).To(Succeed())
			Eventually(results).Within(2 * time.Second).Should(Receive(HaveOccurred()))
			Eventually(connClosed).Should(Receive())
			Eventually(results).Should(Receive(MatchError(context.Canceled)))
		})
	})

})

// limits is a Pool's Limits with a connection limit, counting what the pool asks.
type limits struct {
	mu                                sync.Mutex
	maxConns, conns, overflows        int
	maxPending, pending, pendingTotal int
}

func (l *limits) Pending() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending >= l.maxPending {
		return false
	}
	l.pending++
	l.pendingTotal++
	return true
}

func (l *limits) Unpending() { l.mu.Lock(); l.pending--; l.mu.Unlock() }

func (l *limits) TryConnection() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.conns >= l.maxConns {
		l.overflows++
		return false
	}
	l.conns++
	return true
}

func (l *limits) ForceConnection()  { l.mu.Lock(); l.conns++; l.mu.Unlock() }
func (l *limits) ConnectionClosed() { l.mu.Lock(); l.conns--; l.mu.Unlock() }

func (l *limits) read() (conns, overflows, pending, pendingTotal int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.conns, l.overflows, l.pending, l.pendingTotal
}

// Envoy's connection pools (ConnPoolImplBase, source/common/conn_pool/conn_pool_base.cc): a connection
// holds its max_connections slot from its dial to its close, idle included; a request that finds no
// ready connection waits in the pending queue for the first that becomes free.
var _ = Describe("Pool with Limits", func() {
	It("holds a connection's slot from its dial to its close, idle included, and counts the wait for a new one as pending", func() {
		u := startUpstream(answer(okResponse, nil))
		p, _ := newPool(u.addr)
		l := &limits{maxConns: 1, maxPending: 10}
		p.Limits = l
		roundTrip(p, get("/1"))
		conns, overflows, pending, total := l.read()
		Expect([]int{conns, overflows, pending, total}).To(Equal([]int{1, 0, 0, 1}), "the idle connection keeps its slot")
		roundTrip(p, get("/2"))
		_, _, _, total = l.read()
		Expect(total).To(Equal(1), "the idle connection served the second request at once")
		p.CloseIdle()
		conns, _, _, _ = l.read()
		Expect(conns).To(BeZero())
		Expect(p.Open()).To(BeZero())
	})

	It("queues a request while the limit allows no new connection, and serves it on the busy one once it is free", func() {
		release := make(chan struct{})
		u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
			for {
				if _, err := readRequest(br); err != nil {
					return
				}
				if u.requests.Add(1) == 1 {
					<-release
				}
				if _, err := io.WriteString(c, okResponse); err != nil {
					return
				}
			}
		})
		p, dials := newPool(u.addr)
		l := &limits{maxConns: 1, maxPending: 10}
		p.Limits = l
		first := make(chan string, 1)
		go func() { defer GinkgoRecover(); _, body := roundTrip(p, get("/1")); first <- body }()
		Eventually(u.requests.Load).Should(BeEquivalentTo(1))
		second := make(chan string, 1)
		go func() { defer GinkgoRecover(); _, body := roundTrip(p, get("/2")); second <- body }()
		Eventually(func() int { _, overflows, _, _ := l.read(); return overflows }).Should(Equal(1))
		Consistently(second).ShouldNot(Receive())
		close(release)
		Eventually(first).Should(Receive(Equal("ok")))
		Eventually(second).Should(Receive(Equal("ok")))
		Expect(dials.Load()).To(BeEquivalentTo(1))
		Expect(u.accepted.Load()).To(BeEquivalentTo(1))
	})

	It("Drain serves the request waiting for a connection, and the ones after it, then closes the connection", func() {
		// Regression (#17 review): a host pending removal that failed its checks had its pool closed,
		// failing the requests queued for a connection (errPoolClosed, a reset to the router); Envoy
		// drains it (DrainAndDelete): they are still served.
		release := make(chan struct{})
		closed := make(chan struct{}, 4)
		u := startUpstream(func(u *upstream, c net.Conn, br *bufio.Reader) {
			for {
				if _, err := readRequest(br); err != nil {
					closed <- struct{}{}
					return
				}
				if u.requests.Add(1) == 1 {
					<-release
				}
				if _, err := io.WriteString(c, okResponse); err != nil {
					return
				}
			}
		})
		p, dials := newPool(u.addr)
		l := &limits{maxConns: 1, maxPending: 10}
		p.Limits = l
		first := make(chan string, 1)
		go func() { defer GinkgoRecover(); _, body := roundTrip(p, get("/1")); first <- body }()
		Eventually(u.requests.Load).Should(BeEquivalentTo(1))
		second := make(chan string, 1)
		go func() { defer GinkgoRecover(); _, body := roundTrip(p, get("/2")); second <- body }()
		Eventually(func() int { _, _, pending, _ := l.read(); return pending }).Should(Equal(1))

		p.Drain()
		close(release)
		Eventually(first).Should(Receive(Equal("ok")))
		Eventually(second).Should(Receive(Equal("ok")), "the waiting request is served on the connection given back")
		Eventually(closed).Should(Receive(), "free with nobody waiting: closed")
		Expect(p.Idle()).To(BeZero())
		Eventually(p.Open).Should(BeZero())

		_, body := roundTrip(p, get("/3")) // a request that comes after: served on a connection of its own
		Expect(body).To(Equal("ok"))
		Expect(dials.Load()).To(BeEquivalentTo(2))
		Eventually(closed).Should(Receive())
		Expect(p.Idle()).To(BeZero())
	})

	It("opens a connection past the limit when it has none, so that its requests are served", func() {
		u := startUpstream(answer(okResponse, nil))
		p, _ := newPool(u.addr)
		l := &limits{maxConns: 0, maxPending: 10}
		p.Limits = l
		_, body := roundTrip(p, get("/"))
		Expect(body).To(Equal("ok"))
		conns, overflows, _, _ := l.read()
		Expect([]int{conns, overflows}).To(Equal([]int{1, 1}))
	})

	It("fails at once with ErrOverflow when the pending queue is full, dialing nothing", func() {
		u := startUpstream(answer(okResponse, nil))
		p, dials := newPool(u.addr)
		p.Limits = &limits{maxConns: 1, maxPending: 0}
		_, err := p.RoundTrip(context.Background(), get("/"))
		Expect(err).To(MatchError(h1.ErrOverflow))
		Expect(dials.Load()).To(BeZero())
	})

	It("fails every request waiting for a connection with the error of the dial that failed, and gives its slot back", func() {
		dialErr := errors.New("refused, says the test")
		gate := make(chan struct{})
		p := &h1.Pool{Addr: "127.0.0.1:1", Dial: func(context.Context, string) (net.Conn, error) { <-gate; return nil, dialErr }}
		DeferCleanup(p.Close)
		l := &limits{maxConns: 1, maxPending: 10}
		p.Limits = l
		errs := make(chan error, 2)
		for range 2 {
			go func() { _, err := p.RoundTrip(context.Background(), get("/")); errs <- err }()
		}
		Eventually(func() int { _, _, pending, _ := l.read(); return pending }).Should(Equal(2))
		close(gate)
		Eventually(errs).Should(Receive(BeIdenticalTo(dialErr)))
		Eventually(errs).Should(Receive(BeIdenticalTo(dialErr)))
		conns, _, pending, _ := l.read()
		Expect([]int{conns, pending}).To(Equal([]int{0, 0}))
	})

	It("ends a request's wait with its context, leaving the connection being dialed to the pool", func() {
		u := startUpstream(answer(okResponse, nil))
		gate := make(chan struct{})
		p := &h1.Pool{Addr: u.addr, Dial: func(ctx context.Context, a string) (net.Conn, error) {
			<-gate
			var d net.Dialer
			return d.DialContext(ctx, "tcp", a)
		}}
		DeferCleanup(p.Close)
		l := &limits{maxConns: 1, maxPending: 10}
		p.Limits = l
		ctx, cancel := context.WithCancel(context.Background())
		result := make(chan error, 1)
		go func() { _, err := p.RoundTrip(ctx, get("/")); result <- err }()
		Eventually(func() int { _, _, pending, _ := l.read(); return pending }).Should(Equal(1))
		cancel()
		Eventually(result).Should(Receive(MatchError(context.Canceled)))
		close(gate)
		Eventually(p.Idle).Should(Equal(1), "the connection dialed for it is kept for the next request")
		_, _, pending, _ := l.read()
		Expect(pending).To(BeZero())
	})
})
