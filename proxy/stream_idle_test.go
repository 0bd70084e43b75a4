package proxy_test

import (
	"bufio"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("HttpConnectionManager stream_idle_timeout and RouteAction.idle_timeout", func() {
	// Envoy's connection manager arms a stream's idle timer at its start and re-arms it at each activity
	// in either direction: request body data, response headers, response body data
	// (ActiveStream::resetIdleTimer, source/common/http/conn_manager_impl.cc). When it fires
	// (onIdleTimeout) it counts downstream_rq_idle_timeout and answers "stream timeout": 504 once the
	// whole request was received, 408 before (Utility::maybeRequestTimeoutCode); a response already
	// started is reset. A route's idle_timeout replaces the HCM's, 0 disabling it (refreshIdleTimeout).
	streamIdle := func(d time.Duration) func(*config.Listener) {
		return func(l *config.Listener) { l.StreamIdleTimeout = d }
	}
	noTimeout := func(idle *time.Duration) config.Route {
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout, r.Action.IdleTimeout = 0, idle
		return r
	}

	It("answers 504 stream timeout when the upstream has sent nothing for the HCM's stream_idle_timeout", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(5 * time.Minute), opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 10*time.Second, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("stream timeout"))
		Expect(clk.Since(began)).To(BeNumerically(">=", 5*time.Minute))
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("http.ingress.downstream_rq_idle_timeout", BeEquivalentTo(1)),
			HaveKeyWithValue("http.ingress.downstream_rq_5xx", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_timeout", BeEquivalentTo(0)),
			HaveKeyWithValue("cluster.backend.upstream_rq_tx_reset", BeEquivalentTo(1)),
		))
	})

	It("arms no timer for a request without a body whose route timeout ends it first, and one for a request with a body", func() {
		// The upstream answers nothing until the spec ends. (With `hang`, the POST's upstream exchange,
		// ended by the route timeout on the fake clock, is never seen to end by the upstream: a
		// follow-up, the real clock's socket deadline does end it.)
		release := make(chan struct{})
		u := newUpstream(func(_ int64, _ http.ResponseWriter, r *http.Request) {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		})
		DeferCleanup(func() { close(release) })
		clk := fakeClock()
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout = 2 * time.Second
		_, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(5 * time.Minute), opts: proxy.Options{Clock: clk}})
		base := clk.Waiters()
		// The upstream hangs: each request waits on its route timeout's timer (the fake clock's), the
		// POST also on its stream idle timer; the GET's cannot fire before its route timeout.
		send := func(method string, body io.Reader, codes chan<- int) {
			defer GinkgoRecover()
			req, err := http.NewRequest(method, url+"/", body)
			Expect(err).NotTo(HaveOccurred())
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			codes <- resp.StatusCode
		}
		get := make(chan int, 1)
		go send("GET", nil, get)
		Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
		Eventually(clk.Waiters).WithTimeout(5 * time.Second).Should(Equal(base + 1))
		Consistently(clk.Waiters).WithTimeout(100 * time.Millisecond).Should(Equal(base + 1))
		post := make(chan int, 1)
		go send("POST", strings.NewReader("x"), post)
		Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(2))
		Eventually(clk.Waiters).WithTimeout(5 * time.Second).Should(Equal(base + 3))
		clk.Step(2 * time.Second)
		Eventually(get).WithTimeout(5 * time.Second).Should(Receive(Equal(504)))
		Eventually(post).WithTimeout(5 * time.Second).Should(Receive(Equal(504)))
	})

	It("lets a route's idle_timeout replace the HCM's", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		_, url := start(setup{routes: []config.Route{noTimeout(dur(2 * time.Second))}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(time.Hour), opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("stream timeout"))
		Expect(clk.Since(began)).To(And(BeNumerically(">=", 2*time.Second), BeNumerically("<", time.Hour)))
	})

	It("is disabled by a route's idle_timeout of 0s", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(dur(0))}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: func(l *config.Listener) {
				l.StreamIdleTimeout = time.Second
				// An internal client, whose x-envoy-upstream-rq-timeout-ms the router reads.
				l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/", "x-envoy-upstream-rq-timeout-ms", "5000")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("upstream request timeout"))
		Expect(clk.Since(began)).To(BeNumerically(">=", 5*time.Second))
		Expect(stat(srv, "http.ingress.downstream_rq_idle_timeout")).To(BeZero())
	})

	It("is re-armed by each piece of the response body, and resets a started response that then stalls", func() {
		clk := fakeClock()
		began := clk.Now()
		var written atomic.Int32
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "20")
			// Four pieces 500ms apart on the proxy's clock: 1.5s in all, never a second without one.
			for i := range 4 {
				for clk.Since(began) < time.Duration(i)*500*time.Millisecond {
					select {
					case <-r.Context().Done():
						return
					case <-time.After(time.Millisecond):
					}
				}
				io.WriteString(w, "abcd")
				w.(http.Flusher).Flush()
				written.Add(1)
			}
			<-r.Context().Done() // then nothing: the last 4 bytes never come
		})
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(time.Second), opts: proxy.Options{Clock: clk}})
		readErr := readWhole(clk, 10*time.Millisecond, url+"/")
		Expect(readErr).To(HaveOccurred(), "the response is reset short of its 20 bytes")
		Expect(written.Load()).To(BeEquivalentTo(4), "the proxy relayed the pieces past the first second")
		Expect(clk.Since(began)).To(BeNumerically(">=", 2500*time.Millisecond), "a second after the last piece")
		Expect(stat(srv, "http.ingress.downstream_rq_idle_timeout")).To(BeEquivalentTo(1))
	})

	It("is re-armed by each piece of the request body", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			w.Write(b)
		})
		clk := fakeClock()
		began := clk.Now()
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(time.Second), opts: proxy.Options{Clock: clk}})
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		replies := make(chan *http.Response, 1)
		go func() {
			defer GinkgoRecover()
			// Four pieces 500ms apart on the proxy's clock: 1.5s in all, never a second without one.
			_, err := io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 16\r\n\r\nabcd")
			Expect(err).NotTo(HaveOccurred())
			for i := 1; i < 4; i++ {
				for clk.Since(began) < time.Duration(i)*500*time.Millisecond {
					time.Sleep(time.Millisecond)
				}
				_, err = io.WriteString(conn, "abcd")
				Expect(err).NotTo(HaveOccurred())
			}
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			Expect(err).NotTo(HaveOccurred())
			replies <- resp
		}()
		var resp *http.Response
		until(clk, 10*time.Millisecond, received(replies, &resp))
		b, _ := io.ReadAll(resp.Body)
		Expect(resp.StatusCode).To(Equal(200))
		Expect(string(b)).To(Equal(strings.Repeat("abcd", 4)))
		Expect(clk.Since(began)).To(BeNumerically(">=", 1500*time.Millisecond))
		Expect(stat(srv, "http.ingress.downstream_rq_idle_timeout")).To(BeZero())
	})

	It("answers 408 stream timeout when the request body stalls", func() {
		u := newUpstream(ok)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: streamIdle(time.Second), opts: proxy.Options{Clock: clk}})
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhal")
		Expect(err).NotTo(HaveOccurred())
		replies := make(chan *http.Response, 1)
		go func() {
			defer GinkgoRecover()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			Expect(err).NotTo(HaveOccurred())
			replies <- resp
		}()
		var resp *http.Response
		until(clk, 100*time.Millisecond, received(replies, &resp))
		b, _ := io.ReadAll(resp.Body)
		Expect(resp.StatusCode).To(Equal(408))
		Expect(string(b)).To(Equal("stream timeout"))
		Expect(stat(srv, "http.ingress.downstream_rq_idle_timeout")).To(BeEquivalentTo(1))
		Expect(u.requests.Load()).To(BeZero())
	})
	It("answers 408 stream timeout when a body streamed beyond the buffer limit stalls", func() {
		u := newUpstream(func(_ int64, _ http.ResponseWriter, r *http.Request) { _, _ = io.Copy(io.Discard, r.Body) })
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			bufferLimit: 16, listener: streamIdle(time.Second), opts: proxy.Options{Clock: clk}})
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n"+strings.Repeat("x", 40))
		Expect(err).NotTo(HaveOccurred())
		replies := make(chan *http.Response, 1)
		go func() {
			defer GinkgoRecover()
			resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
			Expect(err).NotTo(HaveOccurred())
			replies <- resp
		}()
		var resp *http.Response
		until(clk, 100*time.Millisecond, received(replies, &resp))
		b, _ := io.ReadAll(resp.Body)
		Expect(resp.StatusCode).To(Equal(408))
		Expect(string(b)).To(Equal("stream timeout"))
		Expect(stat(srv, "http.ingress.downstream_rq_idle_timeout")).To(BeEquivalentTo(1))
		Expect(stat(srv, "http.ingress.downstream_rq_timeout")).To(BeZero())
	})
})
