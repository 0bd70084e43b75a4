package proxy_test

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// The proxy's edges against clients it cannot trust (issue #18): bounded memory per request and per
// connection, and limits that close what goes over them, each as Envoy does.
var _ = Describe("The proxy's edges", func() {
	// Regression (issue #18, defect 6): request bodies were buffered whole up to 16 MiB, allocated up
	// front from the Content-Length a client declared; 64 slow uploads took 1.1 GB.
	Describe("request bodies and the buffer limit (per_connection_buffer_limit_bytes)", func() {
		var (
			seen chan []byte // each attempt's body as the upstream read it
			u    *upstream
		)
		BeforeEach(func() {
			seen = make(chan []byte, 8)
			u = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				b, err := io.ReadAll(r.Body)
				Expect(err).NotTo(HaveOccurred())
				seen <- b
				w.WriteHeader(http.StatusServiceUnavailable)
			})
		})

		post := func(url string, body []byte, chunked bool) int {
			GinkgoHelper()
			var rd io.Reader = bytes.NewReader(body)
			if chunked {
				rd = io.MultiReader(rd) // no length known: the client sends it chunked
			}
			req, err := http.NewRequest("POST", url+"/upload", rd)
			Expect(err).NotTo(HaveOccurred())
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return resp.StatusCode
		}

		DescribeTable("streams a body over the limit whole and does not retry it, counting retry_or_shadow_abandoned",
			func(chunked bool) {
				srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "5xx"))},
					clusters: []config.Cluster{cluster("backend", u.addr())}, bufferLimit: 64 << 10})
				body := bytes.Repeat([]byte("0123456789abcdef"), 200<<10/16) // 200 KiB
				Expect(post(url, body, chunked)).To(Equal(http.StatusServiceUnavailable))
				var got []byte
				Expect(seen).To(Receive(&got))
				Expect(got).To(Equal(body), "the upstream got the whole body")
				Consistently(seen, 100*time.Millisecond).ShouldNot(Receive(), "no retry")
				Expect(u.requests.Load()).To(BeEquivalentTo(1))
				Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeEquivalentTo(1))
				Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
				Expect(stat(srv, "http.ingress.downstream_rq_5xx")).To(BeEquivalentTo(1))
			},
			Entry("with a Content-Length", false),
			Entry("chunked", true),
		)

		It("retries a body within the limit with the same bytes", func() {
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))},
				clusters: []config.Cluster{cluster("backend", u.addr())}, bufferLimit: 64 << 10})
			body := bytes.Repeat([]byte("x"), 64<<10) // exactly the limit
			Expect(post(url, body, true)).To(Equal(http.StatusServiceUnavailable))
			var first, second []byte
			Expect(seen).To(Receive(&first))
			Expect(seen).To(Receive(&second))
			Expect(first).To(Equal(body))
			Expect(second).To(Equal(body))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeZero())
		})

		It("takes the route's per_request_buffer_limit_bytes when it is lower than the listener's", func() {
			limit := uint32(1 << 10)
			route := prefixRoute("/", "backend", retries(1, "5xx"))
			route.PerRequestBufferLimit = &limit
			srv, url := start(setup{routes: []config.Route{route}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			body := bytes.Repeat([]byte("y"), 4<<10)
			Expect(post(url, body, false)).To(Equal(http.StatusServiceUnavailable))
			var got []byte
			Expect(seen).To(Receive(&got))
			Expect(got).To(Equal(body))
			Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeEquivalentTo(1))
			Expect(u.requests.Load()).To(BeEquivalentTo(1))
		})

		It("answers 408 when the request_timeout ends a body as it streams, and the upstream never sees it complete", func() {
			var got atomic.Int64
			cut := make(chan error, 1)
			slow := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				n, err := io.Copy(io.Discard, r.Body)
				got.Store(n)
				cut <- err
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx", "reset"))},
				clusters: []config.Cluster{cluster("backend", slow.addr())}, bufferLimit: 1 << 10, requestTimeout: 300 * time.Millisecond})
			// 4 KiB of a declared 8 KiB, then nothing: past the 1 KiB limit, so streaming when the timeout hits.
			req := "POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: 8192\r\n\r\n" + strings.Repeat("b", 4<<10)
			reply := rawExchange(url, req, false)
			Expect(reply).To(HavePrefix("HTTP/1.1 408 Request Timeout\r\n"))
			Expect(reply).To(ContainSubstring("\r\nConnection: close\r\n"))
			var err error
			Eventually(cut).Should(Receive(&err))
			Expect(err).To(HaveOccurred(), "the upstream request was cut short, never completed")
			Expect(got.Load()).To(BeEquivalentTo(4 << 10))
			Expect(stat(srv, "http.ingress.downstream_rq_timeout")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
			Expect(slow.requests.Load()).To(BeEquivalentTo(1), "no retry of a reset the client caused")
		})

		It("keeps memory bounded under many concurrent slow uploads declaring 16 MiB", func() {
			const (
				uploads  = 32
				declared = 16 << 20
				sent     = 2 << 20 // past the 1 MiB default limit: held, then streaming, then stalled
			)
			var received atomic.Int64
			slow := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body) // ends when the proxy gives up the upstream request
				received.Add(n)
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))},
				clusters: []config.Cluster{cluster("backend", slow.addr())}})
			var before runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&before)

			chunk := bytes.Repeat([]byte("z"), sent)
			head := fmt.Sprintf("POST /upload HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n", declared)
			conns := make([]net.Conn, uploads)
			for i := range conns {
				c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(func() { _ = c.Close() })
				conns[i] = c
				_, err = io.WriteString(c, head)
				Expect(err).NotTo(HaveOccurred())
				go func() { _, _ = c.Write(chunk) }()
			}
			// Every byte sent went through: the proxy holds at most the limit of each, not 16 MiB.
			Eventually(func() int64 {
				return int64(stat(srv, "http.ingress.downstream_rq_active"))
			}).WithTimeout(20 * time.Second).Should(BeEquivalentTo(uploads))
			Eventually(func() int64 {
				return int64(stat(srv, "cluster.backend.upstream_rq_active"))
			}).WithTimeout(20 * time.Second).Should(BeEquivalentTo(uploads))
			var after runtime.MemStats
			runtime.GC()
			runtime.ReadMemStats(&after)
			growth := int64(after.HeapAlloc) - int64(before.HeapAlloc)
			AddReportEntry("heap growth with 32 slow uploads", fmt.Sprintf("%.1f MiB", float64(growth)/(1<<20)))
			Expect(growth).To(BeNumerically("<", 96<<20), "32 uploads × the 1 MiB limit, with room; up front it was 32 × 16 MiB")
			Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeEquivalentTo(uploads))

			for _, c := range conns {
				c.Close()
			}
			Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_rq_active") }).WithTimeout(10 * time.Second).Should(BeZero())
			Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeEquivalentTo(uploads))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
		})
	})

	Describe("max_requests_per_connection (HCM common_http_protocol_options)", func() {
		It("closes a connection after its Nth response, which says Connection: close, and counts it", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}, maxRequests: 3})
			req := "GET /a HTTP/1.1\r\nHost: x\r\n\r\n"
			got := rawExchange(url, strings.Repeat(req, 4), false) // a 4th, pipelined: never served
			Expect(strings.Count(got, "HTTP/1.1 200 OK\r\n")).To(Equal(3))
			Expect(strings.Count(got, "\r\nConnection: close\r\n")).To(Equal(1))
			last := got[strings.LastIndex(got, "HTTP/1.1 "):]
			Expect(last).To(ContainSubstring("\r\nConnection: close\r\n"), "the third response closes")
			Expect(u.requests.Load()).To(BeEquivalentTo(3))
			Expect(stat(srv, "http.ingress.downstream_cx_max_requests_reached")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_total")).To(BeEquivalentTo(3))
		})

		It("limits nothing by default", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			got := rawExchange(url, strings.Repeat("GET /a HTTP/1.1\r\nHost: x\r\n\r\n", 20)+"GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false)
			Expect(strings.Count(got, "HTTP/1.1 200 OK\r\n")).To(Equal(21))
			Expect(stat(srv, "http.ingress.downstream_cx_max_requests_reached")).To(BeZero())
		})
	})

	Describe("the listener's connection limit (envoy.filters.network.connection_limit)", func() {
		It("closes connections over max_connections at once, counts them, and takes new ones once some close", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters:  []config.Cluster{cluster("backend", u.addr())},
				connLimit: &config.ConnectionLimit{StatPrefix: "edge", MaxConnections: 2}})
			addr := strings.TrimPrefix(url, "http://")
			dial := func() net.Conn {
				GinkgoHelper()
				c, err := net.Dial("tcp", addr)
				Expect(err).NotTo(HaveOccurred())
				DeferCleanup(func() { _ = c.Close() })
				Expect(c.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
				return c
			}
			// exchange sends one keep-alive request and reads what comes back (up to a response's head).
			exchange := func(c net.Conn) string {
				GinkgoHelper()
				_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				buf := make([]byte, 4096)
				n, _ := c.Read(buf)
				return string(buf[:n])
			}
			held := []net.Conn{dial(), dial()}
			for _, c := range held {
				Expect(exchange(c)).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			}
			Expect(stat(srv, "connection_limit.edge.active_connections")).To(BeEquivalentTo(2))

			for range 5 {
				over := dial()
				Expect(exchange(over)).To(BeEmpty(), "closed before any answer")
			}
			Expect(stat(srv, "connection_limit.edge.limited_connections")).To(BeEquivalentTo(5))
			Expect(u.requests.Load()).To(BeEquivalentTo(2), "nothing of theirs went upstream")

			Expect(held[0].Close()).To(Succeed())
			Eventually(func() uint64 { return stat(srv, "connection_limit.edge.active_connections") }).Should(BeEquivalentTo(1))
			Expect(exchange(dial())).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			Expect(exchange(held[1])).To(HavePrefix("HTTP/1.1 200 OK\r\n"), "the held connection still works")
			Expect(stat(srv, "connection_limit.edge.limited_connections")).To(BeEquivalentTo(5))
		})
	})

	// Raw bytes over TCP to a real proxy, each answered as Envoy's HTTP/1 codec and connection manager
	// answer it, with what the upstream received. The h1 server's own specs
	// (internal/h1/server_test.go, "malformed requests") cover each head error's status; these check the
	// proxy end to end: the answer, the connection's end, and that nothing else reaches the upstream.
	Describe("adversarial requests", func() {
		var (
			srv      *proxy.Server
			url      string
			mu       sync.Mutex
			received []string // "METHOD target host" of each request the upstream read
		)
		BeforeEach(func() {
			received = nil
			u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				received = append(received, r.Method+" "+r.RequestURI+" "+r.Host)
				mu.Unlock()
				if r.URL.Path == "/hang" {
					<-r.Context().Done()
					return
				}
				io.WriteString(w, "ok")
			})
			srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		})
		upstreamGot := func() []string {
			mu.Lock()
			defer mu.Unlock()
			return slices.Clone(received)
		}

		// send writes request (then half-closes if asked) and reads until the proxy closes the
		// connection; a reset after the answer (the proxy closing with the client's bytes unread) is a
		// close too.
		send := func(request string, halfClose bool) string {
			GinkgoHelper()
			c, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(func() { _ = c.Close() })
			Expect(c.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
			go func() {
				_, _ = io.WriteString(c, request)
				if halfClose {
					_ = c.(*net.TCPConn).CloseWrite()
				}
			}()
			var got bytes.Buffer
			_, err = io.Copy(&got, c)
			if err != nil {
				Expect(errors.Is(err, syscall.ECONNRESET)).To(BeTrue(), "the proxy must close the connection; got %q, %v", got.String(), err)
			}
			return got.String()
		}

		many := func(n int) string {
			var b strings.Builder
			for i := range n {
				fmt.Fprintf(&b, "X-H%d: v\r\n", i)
			}
			return b.String()
		}

		DescribeTable("a request the codec rejects: its status, Connection: close, nothing upstream",
			func(request string, status string) {
				got := send(request, false)
				Expect(got).To(HavePrefix("HTTP/1.1 " + status + "\r\n"))
				Expect(got).To(ContainSubstring("\r\nConnection: close\r\n"))
				Expect(upstreamGot()).To(BeEmpty())
				Expect(stat(srv, "http.ingress.downstream_cx_protocol_error")).To(BeEquivalentTo(1))
				Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
			},
			// Envoy rejects both framings at once (RFC 9112 §6.1 lets a server; a proxy that forwarded
			// either would let the upstream frame the body the other way: request smuggling).
			Entry("Content-Length and Transfer-Encoding: chunked together",
				"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "400 Bad Request"),
			Entry("two Content-Lengths with different values",
				"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!", "400 Bad Request"),
			Entry("an obs-fold header line",
				"GET /a HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded\r\n\r\n", "400 Bad Request"),
			Entry("an invalid method token",
				"G(T /a HTTP/1.1\r\nHost: x\r\n\r\n", "400 Bad Request"),
			// max_request_headers_kb (60 KiB by default): 431.
			Entry("a 100 KB header", "GET /a HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("a", 100<<10)+"\r\n\r\n",
				"431 Request Header Fields Too Large"),
			Entry("10,000 headers", "GET /a HTTP/1.1\r\nHost: x\r\n"+many(10000)+"\r\n", "431 Request Header Fields Too Large"),
			// Envoy's codec answers HTTP/1.0 426 unless http_protocol_options.accept_http_10.
			Entry("HTTP/1.0 without Host", "GET /a HTTP/1.0\r\n\r\n", "426 Upgrade Required"),
			Entry("HTTP/1.0 with Host", "GET /a HTTP/1.0\r\nHost: x\r\n\r\n", "426 Upgrade Required"),
		)

		It("forwards an absolute-form request in origin form, its authority as Host", func() {
			got := send("GET http://other.example/p?q=1 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n", false)
			Expect(got).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			Expect(got).To(HaveSuffix("\r\n\r\nok"))
			Expect(upstreamGot()).To(HaveExactElements("GET /p?q=1 other.example"))
		})

		It("answers the pipelined requests before a bad one, then 400 and closes: nothing after it goes upstream", func() {
			got := send("GET /1 HTTP/1.1\r\nHost: x\r\n\r\n"+
				"GET /2 HTTP/1.1\r\nHost: x\r\nContent-Length: zz\r\n\r\n"+
				"GET /3 HTTP/1.1\r\nHost: x\r\n\r\n", false)
			Expect(got).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			Expect(strings.Count(got, "HTTP/1.1 ")).To(Equal(2))
			Expect(got[strings.LastIndex(got, "HTTP/1.1 "):]).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
			Expect(upstreamGot()).To(HaveExactElements("GET /1 x"))
			Expect(stat(srv, "http.ingress.downstream_rq_total")).To(BeEquivalentTo(2))
		})

		It("takes a half-close with a request in flight for the client gone, as Envoy's HCM does (no half-close)", func() {
			got := send("GET /hang HTTP/1.1\r\nHost: x\r\n\r\n", true)
			Expect(got).To(BeEmpty(), "nothing is answered")
			Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq") }).Should(BeEquivalentTo(1))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_active") }).Should(BeZero(), "the upstream request is reset")
			Expect(stat(srv, "http.ingress.downstream_rq_5xx")).To(BeZero())
		})
	})
})
