package proxy_test

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// h2Upstream is a Go HTTP/2 server on loopback: h2c with prior knowledge, or TLS with ALPN. It counts
// its connections and the protocol of each request.
type h2Backend struct {
	srv    *httptest.Server
	conns  atomic.Int64
	h2, h1 atomic.Int64 // requests by protocol
	handle func(w http.ResponseWriter, r *http.Request)
}

// newH2Backend starts the server: clear text speaks h2c only; TLS offers h2 (and http/1.1 when
// h1Too), or only http/1.1 when h2 is false. maxStreams is its SETTINGS_MAX_CONCURRENT_STREAMS (0: Go's 250).
func newH2Backend(useTLS, h2, h1Too bool, maxStreams uint32, handle func(w http.ResponseWriter, r *http.Request)) *h2Backend {
	b := &h2Backend{handle: handle}
	b.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor == 2 {
			b.h2.Add(1)
		} else {
			b.h1.Add(1)
		}
		b.handle(w, r)
	}))
	b.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			b.conns.Add(1)
		}
	}
	b.srv.Config.HTTP2 = &http.HTTP2Config{MaxConcurrentStreams: int(maxStreams)}
	p := new(http.Protocols)
	switch {
	case !useTLS:
		p.SetUnencryptedHTTP2(true)
	case h2:
		p.SetHTTP2(true)
		p.SetHTTP1(h1Too)
	default:
		p.SetHTTP1(true)
	}
	b.srv.Config.Protocols = p
	if useTLS {
		b.srv.EnableHTTP2 = h2
		b.srv.StartTLS()
	} else {
		b.srv.Start()
	}
	DeferCleanup(b.srv.Close)
	return b
}

func (b *h2Backend) addr() string { return b.srv.Listener.Addr().String() }

// h2Cluster is a cluster of addrs speaking HTTP/2 (explicit_http_config.http2_protocol_options).
func h2Cluster(name string, maxStreams uint32, addrs ...string) config.Cluster {
	c := cluster(name, addrs...)
	c.HTTP = config.UpstreamHTTP{Protocol: config.UpstreamHTTP2, IdleTimeout: time.Hour, HTTP2: config.DefaultUpstreamHTTP2Options()}
	if maxStreams > 0 {
		c.HTTP.HTTP2.MaxConcurrentStreams = maxStreams
	}
	return c
}

// upstreamTLS is a cluster's UpstreamTlsContext without validation (the test server's certificate).
func upstreamTLS() *config.TLS {
	return &config.TLS{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
}

// gate holds requests until released.
type gate struct {
	once sync.Once
	ch   chan struct{}
}

func newGate() *gate {
	g := &gate{ch: make(chan struct{})}
	DeferCleanup(g.open) // never leave a handler waiting
	return g
}
func (g *gate) open() { g.once.Do(func() { close(g.ch) }) }

// getAll sends n GETs at once and returns their statuses once all are answered.
func getAll(url string, n int) []int {
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			defer GinkgoRecover()
			resp, err := client.Get(url)
			Expect(err).NotTo(HaveOccurred())
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			codes[i] = resp.StatusCode
		})
	}
	wg.Wait()
	return codes
}

var _ = Describe("upstream HTTP/2", func() {
	Context("h2c (prior knowledge)", func() {
		It("multiplexes concurrent requests on one connection", func() {
			g := newGate()
			var arrived atomic.Int64
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				<-g.ch
				io.WriteString(w, "hi")
			})
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, b.addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			done := make(chan []int, 1)
			go func() { done <- getAll(url+"/", 5) }()
			Eventually(arrived.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(5))
			g.open()
			Eventually(done).WithTimeout(5 * time.Second).Should(Receive(Equal([]int{200, 200, 200, 200, 200})))
			Expect(b.conns.Load()).To(BeEquivalentTo(1))
			Expect(b.h2.Load()).To(BeEquivalentTo(5))
			Expect(stat(srv, "cluster.h2.upstream_cx_http2_total")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.h2.upstream_cx_http1_total")).To(BeZero())
			Expect(stat(srv, "cluster.h2.upstream_rq_total")).To(BeEquivalentTo(5))
		})

		It("counts a stream it resets before the response headers in http2.tx_reset (the client left)", func() {
			g := newGate()
			var arrived, cancelled atomic.Int64
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				select {
				case <-g.ch:
				case <-r.Context().Done(): // the proxy's RST_STREAM
					cancelled.Add(1)
				}
			})
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, b.addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			short := &http.Client{Timeout: 300 * time.Millisecond}
			_, err := short.Get(url + "/")
			Expect(err).To(HaveOccurred(), "the client gives up before any response")
			Eventually(cancelled.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Expect(arrived.Load()).To(BeEquivalentTo(1))
			Eventually(func() uint64 { return stat(srv, "cluster.h2.http2.tx_reset") }).Should(BeEquivalentTo(1))
		})

		It("opens another connection when max_concurrent_streams are open on the first", func() {
			g := newGate()
			var arrived atomic.Int64
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				<-g.ch
			})
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 2, b.addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			done := make(chan []int, 1)
			go func() { done <- getAll(url+"/", 4) }()
			Eventually(arrived.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(4))
			g.open()
			Eventually(done).WithTimeout(5 * time.Second).Should(Receive(HaveEach(200)))
			Expect(b.conns.Load()).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.h2.upstream_cx_http2_total")).To(BeEquivalentTo(2))
		})

		It("keeps to the peer's SETTINGS_MAX_CONCURRENT_STREAMS", func() {
			g := newGate()
			var arrived atomic.Int64
			b := newH2Backend(false, true, false, 1, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				<-g.ch
			})
			_, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, b.addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			// One at a time, each once the previous arrived: a connection's streams beyond the limit it
			// learns from the peer's SETTINGS, given before they came (as Envoy's pool, which counts a
			// connection ready once connected), would wait in the codec instead.
			var answers []chan []int
			for i := range 3 {
				ch := make(chan []int, 1)
				go func() { ch <- getAll(url+"/", 1) }()
				answers = append(answers, ch)
				Eventually(arrived.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(i + 1))
			}
			g.open()
			for _, ch := range answers {
				Eventually(ch).WithTimeout(5 * time.Second).Should(Receive(Equal([]int{200})))
			}
			Expect(b.conns.Load()).To(BeEquivalentTo(3))
		})

		It("counts streams against max_requests: past it, 503 with x-envoy-overloaded (UO)", func() {
			g := newGate()
			var arrived atomic.Int64
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				<-g.ch
			})
			c := h2Cluster("h2", 0, b.addr())
			c.Breakers.Default.MaxRequests = 1
			srv, url := start(setup{clusters: []config.Cluster{c}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			first := make(chan []int, 1)
			go func() { first <- getAll(url+"/", 1) }()
			Eventually(arrived.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			resp, err := client.Get(url + "/")
			Expect(err).NotTo(HaveOccurred())
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
			Expect(resp.Header.Get("x-envoy-overloaded")).To(Equal("true"))
			Expect(string(body)).To(ContainSubstring("overflow"))
			g.open()
			Eventually(first).WithTimeout(5 * time.Second).Should(Receive(Equal([]int{200})))
			Expect(stat(srv, "cluster.h2.upstream_rq_pending_overflow")).To(BeEquivalentTo(1))
			Expect(b.conns.Load()).To(BeEquivalentTo(1))
		})

		It("queues requests past max_connections' last connection until a stream frees", func() {
			g := newGate()
			var arrived atomic.Int64
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				arrived.Add(1)
				<-g.ch
			})
			c := h2Cluster("h2", 1, b.addr())
			c.Breakers.Default.MaxConnections = 1
			srv, url := start(setup{clusters: []config.Cluster{c}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			done := make(chan []int, 1)
			go func() { done <- getAll(url+"/", 2) }()
			Eventually(arrived.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Eventually(func() uint64 { return stat(srv, "cluster.h2.upstream_rq_pending_active") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.h2.upstream_cx_overflow")).To(BeNumerically(">=", 1))
			g.open()
			Eventually(done).WithTimeout(5 * time.Second).Should(Receive(Equal([]int{200, 200})))
			Expect(b.conns.Load()).To(BeEquivalentTo(1))
		})
	})

	Context("resets and GOAWAY from the fault upstream", func() {
		faulty := func(rule faults.Fault) *faults.Upstream {
			GinkgoHelper()
			u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Size: 16}, Faults: []faults.Fault{rule}})
			Expect(err).NotTo(HaveOccurred())
			Expect(u.Start("127.0.0.1:0")).To(Succeed())
			DeferCleanup(u.Close)
			return u
		}
		refused := faults.Fault{First: 1, H2: &faults.H2{RSTStream: "REFUSED_STREAM", Percent: 100}}

		It("retries a REFUSED_STREAM under refused-stream", func() {
			u := faulty(refused)
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, u.Addr())}, routes: []config.Route{prefixRoute("/", "h2", retries(1, "refused-stream"))}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(stat(srv, "cluster.h2.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.h2.upstream_rq_rx_reset")).To(BeZero()) // a refused stream is no remote reset
			Expect(u.Stats().StreamResets).To(BeEquivalentTo(1))
		})

		It("answers a REFUSED_STREAM it may not retry with 503 and the reset reason", func() {
			u := faulty(refused)
			_, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, u.Addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(ContainSubstring("reset reason: remote refused stream reset"))
		})

		It("retries another RST_STREAM under reset, never under refused-stream", func() {
			u := faulty(faults.Fault{First: 2, H2: &faults.H2{RSTStream: "INTERNAL_ERROR", Percent: 100}})
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, u.Addr())},
				routes: []config.Route{prefixRoute("/refused", "h2", retries(1, "refused-stream")), prefixRoute("/", "h2", retries(1, "reset"))}})
			code, _, body := get(url + "/refused")
			Expect(code).To(Equal(503))
			Expect(body).To(ContainSubstring("reset reason: remote reset"))
			code, _, _ = get(url + "/any")
			Expect(code).To(Equal(200)) // reset too, and retried: the third request is answered
			Expect(stat(srv, "cluster.h2.upstream_rq_rx_reset")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.h2.http2.rx_reset")).To(BeEquivalentTo(2))
		})

		It("retries a stream a GOAWAY left unprocessed under refused-stream, on a new connection", func() {
			u := faulty(faults.Fault{First: 1, H2: &faults.H2{GoAway: "NO_ERROR", Percent: 100}})
			srv, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, u.Addr())}, routes: []config.Route{prefixRoute("/", "h2", retries(1, "refused-stream"))}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(stat(srv, "cluster.h2.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.h2.upstream_cx_http2_total")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.h2.upstream_cx_close_notify")).To(BeEquivalentTo(1))
			Expect(u.Stats().GoAways).To(BeEquivalentTo(1))
		})
	})

	Context("over TLS", func() {
		It("speaks h2 by ALPN (offered when alpn_protocols is empty)", func() {
			b := newH2Backend(true, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
				Expect(r.TLS).NotTo(BeNil())
				io.WriteString(w, r.Proto)
			})
			c := h2Cluster("h2", 0, b.addr())
			c.TLS = upstreamTLS()
			_, url := start(setup{clusters: []config.Cluster{c}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(body).To(Equal("HTTP/2.0"))
		})

		DescribeTable("auto_config follows ALPN",
			func(h2 bool, wantProto, wantStat string) {
				b := newH2Backend(true, h2, true, 0, func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, r.Proto) })
				c := cluster("auto", b.addr())
				c.TLS = upstreamTLS()
				c.HTTP = config.UpstreamHTTP{Protocol: config.UpstreamAuto, IdleTimeout: time.Hour, HTTP2: config.DefaultUpstreamHTTP2Options()}
				srv, url := start(setup{clusters: []config.Cluster{c}, routes: []config.Route{prefixRoute("/", "auto", nil)}})
				for range 3 {
					code, _, body := get(url + "/")
					Expect(code).To(Equal(200))
					Expect(body).To(Equal(wantProto))
				}
				Expect(stat(srv, "cluster.auto."+wantStat)).To(BeEquivalentTo(1)) // the first connection is the pool's
				Expect(b.conns.Load()).To(BeEquivalentTo(1))
			},
			Entry("h2 negotiated: HTTP/2", true, "HTTP/2.0", "upstream_cx_http2_total"),
			Entry("http/1.1 negotiated: HTTP/1.1", false, "HTTP/1.1", "upstream_cx_http1_total"),
		)
	})

	DescribeTable("health checks speak HTTP/1.1 unless codec_client_type is HTTP2, as Envoy's",
		func(h2Checks bool, wantHealthy uint64) {
			b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {})
			c := h2Cluster("h2", 0, b.addr())
			c.HealthChecks = []policy.HealthCheckConfig{{Timeout: 5 * time.Second, Interval: time.Second, NoTrafficInterval: time.Second,
				UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
			c.HealthCheckHTTP2 = h2Checks
			clk := fakeClock()
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "h2", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
			until(clk, 100*time.Millisecond, func() bool {
				return stat(srv, "cluster.h2.health_check.success")+stat(srv, "cluster.h2.health_check.failure") >= 2
			})
			Expect(stat(srv, "cluster.h2.health_check.healthy")).To(Equal(wantHealthy))
			if h2Checks {
				Expect(b.h2.Load()).To(BeNumerically(">=", 2))
			}
		},
		Entry("HTTP2 against an h2c-only host: healthy", true, uint64(1)),
		Entry("the default HTTP1 against an h2c-only host: unhealthy", false, uint64(0)),
	)

	It("forwards te: trailers and no hop-by-hop field", func() {
		b := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, strings.Join([]string{r.Header.Get("Te"), r.Header.Get("X-Hop"), r.Header.Get("Keep-Alive"), r.Header.Get("X-End")}, "|"))
		})
		_, url := start(setup{clusters: []config.Cluster{h2Cluster("h2", 0, b.addr())}, routes: []config.Route{prefixRoute("/", "h2", nil)}})
		req, _ := http.NewRequest(http.MethodGet, url+"/", nil)
		req.Header.Set("Te", "trailers")
		req.Header.Set("Connection", "x-hop")
		req.Header.Set("X-Hop", "1")
		req.Header.Set("Keep-Alive", "timeout=5")
		req.Header.Set("X-End", "kept")
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(string(body)).To(Equal("trailers|||kept"))
	})
})
