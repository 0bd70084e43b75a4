package proxy_test

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
)

// upstream is a loopback backend whose behaviour a spec sets per request.
type upstream struct {
	srv      *httptest.Server
	requests atomic.Int64
	conns    atomic.Int64
	closed   atomic.Int64 // connections closed (or hijacked)
	handle   func(n int64, w http.ResponseWriter, r *http.Request)
}

func newUpstream(handle func(n int64, w http.ResponseWriter, r *http.Request)) *upstream {
	u := &upstream{handle: handle}
	u.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := u.requests.Add(1)
		w.Header().Set("x-upstream", u.srv.Listener.Addr().String())
		u.handle(n, w, r)
	}))
	u.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			u.conns.Add(1)
		case http.StateClosed, http.StateHijacked:
			u.closed.Add(1)
		}
	}
	u.srv.Start()
	DeferCleanup(u.srv.Close)
	return u
}

func (u *upstream) addr() string { return u.srv.Listener.Addr().String() }

func ok(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "hello") }

func status(code int) func(int64, http.ResponseWriter, *http.Request) {
	return func(_ int64, w http.ResponseWriter, _ *http.Request) { w.WriteHeader(code) }
}

// resetConn answers with a TCP RST instead of a response.
func resetConn(_ int64, w http.ResponseWriter, _ *http.Request) {
	conn, _, err := w.(http.Hijacker).Hijack()
	Expect(err).NotTo(HaveOccurred())
	conn.(*net.TCPConn).SetLinger(0)
	conn.Close()
}

// hang never answers until the client goes away.
func hang(_ int64, _ http.ResponseWriter, r *http.Request) { <-r.Context().Done() }

// closedAddr is a loopback address where nothing listens.
func closedAddr() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

type setup struct {
	routes   []config.Route
	vhost    config.VirtualHost
	clusters []config.Cluster
	// requestTimeout is the HCM request_timeout.
	requestTimeout time.Duration
	// idleTimeout is the HCM common_http_protocol_options.idle_timeout (0: none).
	idleTimeout time.Duration
	fault       *config.FaultFilter
	// connLimit is the listener's connection_limit filter (nil: none).
	connLimit *config.ConnectionLimit
	// maxRequests is the HCM common_http_protocol_options.max_requests_per_connection (0: none).
	maxRequests uint32
	// bufferLimit is the listener's per_connection_buffer_limit_bytes (0: the 1 MiB default).
	bufferLimit uint32
	// opts are the proxy's options (a clock, a rand source, an event sink).
	opts proxy.Options
	// vhosts, when set, are the listener's virtual hosts instead of one for "*" with routes and vhost.
	vhosts []config.VirtualHost
	// rcRequestHeaders and rcResponseHeaders are the route configuration's header mutations.
	rcRequestHeaders, rcResponseHeaders config.HeaderMutation
	// ignorePort is the route configuration's ignore_port_in_host_matching; stripPort the HCM's
	// strip_port_mode.
	ignorePort bool
	stripPort  config.StripPort
	// listener, when set, adjusts the listener further (HCM fields without a field of their own here).
	listener func(*config.Listener)
}

func cluster(name string, addrs ...string) config.Cluster {
	c := config.NewCluster(name)
	c.ConnectTimeout = time.Second
	for _, a := range addrs {
		c.Endpoints = append(c.Endpoints, config.Endpoint{Address: a, Weight: 1})
	}
	return c
}

func prefixRoute(prefix, clusterName string, rp *config.RetryPolicy) config.Route {
	return config.Route{Match: config.RouteMatch{Prefix: prefix}, Action: config.RouteAction{Cluster: clusterName, Timeout: 15 * time.Second, RetryPolicy: rp}}
}

func retries(n uint32, on ...string) *config.RetryPolicy {
	return &config.RetryPolicy{RetryOn: on, NumRetries: n, BaseInterval: time.Millisecond, MaxInterval: 10 * time.Millisecond}
}

// start runs a proxy with one listener and the admin interface, and returns it with its base URL.
func start(s setup) (*proxy.Server, string) {
	vh := s.vhost
	vh.Name, vh.Domains, vh.Routes = "all", []string{"*"}, s.routes
	vhosts := []config.VirtualHost{vh}
	if s.vhosts != nil {
		vhosts = s.vhosts
	}
	cfg := &config.Bootstrap{
		Admin: &config.Admin{Address: "127.0.0.1:0"},
		Listeners: []config.Listener{{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress", RequestTimeout: s.requestTimeout, IdleTimeout: s.idleTimeout, Fault: s.fault,
			BufferLimit: s.bufferLimit, MaxRequestsPerConnection: s.maxRequests, ConnectionLimit: s.connLimit, StripPort: s.stripPort,
			Routes: config.RouteConfig{Name: "r", VirtualHosts: vhosts, IgnorePortInHostMatching: s.ignorePort,
				RequestHeaders: s.rcRequestHeaders, ResponseHeaders: s.rcResponseHeaders}}},
		Clusters: s.clusters,
	}
	if s.listener != nil {
		s.listener(&cfg.Listeners[0])
	}
	srv, err := proxy.New(cfg, s.opts)
	Expect(err).NotTo(HaveOccurred())
	Expect(srv.Start()).To(Succeed())
	DeferCleanup(srv.Close)
	return srv, "http://" + srv.ListenerAddr("edge")
}

// fakeClock is a proxy's clock that moves only when a spec steps it.
func fakeClock() *clock.Fake { return clock.NewFake(time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)) }

// until steps clk by d for as long as cond is false (each poll of Eventually is one step): time passes
// for the proxy only as fast as its goroutines follow.
func until(clk *clock.Fake, d time.Duration, cond func() bool) {
	GinkgoHelper()
	Eventually(func() bool {
		if cond() {
			return true
		}
		clk.Step(d)
		return false
	}).WithTimeout(10 * time.Second).Should(BeTrue())
}

// received reports whether c has a value, keeping it in *v.
func received[T any](c <-chan T, v *T) func() bool {
	return func() bool {
		select {
		case *v = <-c:
			return true
		default:
			return false
		}
	}
}

var client = &http.Client{Timeout: 10 * time.Second}

// dur is a pointer to d, for the optional durations of a route.
func dur(d time.Duration) *time.Duration { return &d }

// readWhole GETs url and reads the whole response while stepping clk by d, and returns what ended the
// read (nil: the whole body came).
func readWhole(clk *clock.Fake, d time.Duration, url string) error {
	GinkgoHelper()
	errs := make(chan error, 1)
	go func() {
		resp, err := client.Get(url)
		if err == nil {
			defer resp.Body.Close()
			_, err = io.ReadAll(resp.Body)
		}
		errs <- err
	}()
	var readErr error
	until(clk, d, received(errs, &readErr))
	return readErr
}

func get(url string) (int, http.Header, string) {
	GinkgoHelper()
	resp, err := client.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, resp.Header, string(b)
}

func stat(srv *proxy.Server, name string) uint64 { return srv.Stats().Values()[name] }

// rawExchange sends request as raw bytes on a new connection to the proxy at url, ends the stream if
// asked (a half-close: a reply could still be read) and returns all the proxy sent until it closed.
func rawExchange(url, request string, end bool) string {
	GinkgoHelper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	Expect(conn.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
	_, err = io.WriteString(conn, request)
	Expect(err).NotTo(HaveOccurred())
	if end {
		Expect(conn.(*net.TCPConn).CloseWrite()).To(Succeed())
	}
	got, err := io.ReadAll(conn)
	Expect(err).NotTo(HaveOccurred(), "the proxy must close the connection; got %q", got)
	return string(got)
}

var _ = Describe("Proxy", func() {
	Describe("routing", func() {
		It("matches exact paths before later prefixes, and answers 404 with no_route when nothing matches", func() {
			a, b := newUpstream(ok), newUpstream(ok)
			srv, url := start(setup{
				routes: []config.Route{
					{Match: config.RouteMatch{IsPath: true, Path: "/exact"}, Action: config.RouteAction{Cluster: "a", Timeout: time.Second}},
					prefixRoute("/api/", "b", nil),
				},
				clusters: []config.Cluster{cluster("a", a.addr()), cluster("b", b.addr())},
			})
			code, _, _ := get(url + "/exact")
			Expect(code).To(Equal(200))
			code, _, _ = get(url + "/api/x")
			Expect(code).To(Equal(200))
			code, _, _ = get(url + "/exact/more")
			Expect(code).To(Equal(404))
			Expect(a.requests.Load()).To(BeEquivalentTo(1))
			Expect(b.requests.Load()).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.no_route")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
		})

		It("balances round robin across the endpoints and reuses upstream connections", func() {
			us := []*upstream{newUpstream(ok), newUpstream(ok), newUpstream(ok)}
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", us[0].addr(), us[1].addr(), us[2].addr())}})
			for range 30 {
				code, _, body := get(url + "/")
				Expect(code).To(Equal(200))
				Expect(body).To(Equal("hello"))
			}
			for _, u := range us {
				Expect(u.requests.Load()).To(BeEquivalentTo(10))
				Expect(u.conns.Load()).To(BeEquivalentTo(1), "sequential requests reuse one keep-alive connection")
			}
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(30))
			Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(30))
			Expect(stat(srv, "cluster.backend.upstream_rq_2xx")).To(BeEquivalentTo(30))
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(BeEquivalentTo(3))
		})

		It("forwards the request body, method and headers, and generates x-request-id when absent", func() {
			var got atomic.Value
			u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				got.Store(fmt.Sprintf("%s %s %s id=%t", r.Method, b, r.Header.Get("x-custom"), r.Header.Get("x-request-id") != ""))
			})
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			req, _ := http.NewRequest("POST", url+"/p", strings.NewReader("payload"))
			req.Header.Set("x-custom", "yes")
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(got.Load()).To(Equal("POST payload yes id=true"))
		})
	})

	Describe("retries", func() {
		It("retries a 503 on the next host and counts the retry and its success", func() {
			bad, good := newUpstream(status(503)), newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(2, "5xx"))},
				clusters: []config.Cluster{cluster("backend", bad.addr(), good.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(body).To(Equal("hello"))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_success")).To(BeEquivalentTo(1))
			// The retried 503 counts under retry. (Envoy's router.cc onUpstreamHeaders), the 200 sent
			// downstream under upstream_rq_200.
			Expect(stat(srv, "cluster.backend.retry.upstream_rq_503")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_503")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(2))
		})

		It("makes 1 + num_retries attempts, then returns the last response and counts limit_exceeded", func() {
			bad := newUpstream(status(503))
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "5xx"))},
				clusters: []config.Cluster{cluster("backend", bad.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(bad.requests.Load()).To(BeEquivalentTo(4))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(3))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_limit_exceeded")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_success")).To(BeEquivalentTo(0))
		})

		It("does not retry without a retry policy", func() {
			bad := newUpstream(status(503))
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", bad.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(bad.requests.Load()).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(0))
		})

		It("uses the virtual host's retry policy for routes without one", func() {
			bad := newUpstream(status(502))
			_, url := start(setup{vhost: config.VirtualHost{RetryPolicy: retries(1, "gateway-error")},
				routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", bad.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(502))
			Expect(bad.requests.Load()).To(BeEquivalentTo(2))
		})

		It("does not retry a 500 under gateway-error", func() {
			bad := newUpstream(status(500))
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(2, "gateway-error"))}, clusters: []config.Cluster{cluster("backend", bad.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(500))
			Expect(bad.requests.Load()).To(BeEquivalentTo(1))
		})

		It("sees a TCP reset as a reset: 503 'connection termination' without retries, retried under reset", func() {
			rst, good := newUpstream(resetConn), newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", rst.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(ContainSubstring("reset reason: connection termination"))
			Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeEquivalentTo(1))
			Expect(rst.requests.Load()).To(BeEquivalentTo(1), "the transport must not retry behind the router's back")

			srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "reset"))}, clusters: []config.Cluster{cluster("backend", rst.addr(), good.addr())}})
			code, _, _ = get(url + "/")
			Expect(code).To(Equal(200))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
		})

		It("reports a reset on a reused keep-alive connection instead of letting net/http replay the request", func() {
			u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
				if n == 2 {
					resetConn(n, w, r)
				}
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			code, _, _ = get(url + "/")
			Expect(code).To(Equal(503))
			Expect(u.requests.Load()).To(BeEquivalentTo(2), "one upstream request per client request")
			Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeEquivalentTo(1))
		})

		It("retries a refused connection under connect-failure and counts upstream_cx_connect_fail", func() {
			good := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "connect-failure"))}, clusters: []config.Cluster{cluster("backend", closedAddr(), good.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
		})

		// Envoy's body names the reset reason and the socket's transport failure reason
		// (Filter::onPoolFailure and onUpstreamAbort, router.cc; Http::Utility::resetReasonToString).
		It("answers 503 'remote connection failure' with the transport failure reason when no connection can be made", func() {
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "connect-failure"))}, clusters: []config.Cluster{cluster("backend", closedAddr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(Equal("upstream connect error or disconnect/reset before headers. retried and the latest reset reason: " +
				"remote connection failure, transport failure reason: delayed connect error: Connection refused"))
		})

		It("names a connect timeout 'connection timeout', other socket errors by their strerror words", func() {
			timeout := &net.OpError{Op: "dial", Net: "tcp", Err: os.ErrDeadlineExceeded}
			Expect(proxy.ConnectFailureReason(timeout)).To(Equal("connection timeout"))
			unreachable := &net.OpError{Op: "dial", Net: "tcp", Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}
			Expect(proxy.ConnectFailureReason(unreachable)).To(Equal("remote connection failure, transport failure reason: delayed connect error: No route to host"))
			Expect(proxy.ConnectFailureReason(errors.New("no such host"))).To(Equal("remote connection failure"))
		})

		It("sends and returns x-envoy-attempt-count when the virtual host asks for it", func() {
			var seen []string
			u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
				seen = append(seen, r.Header.Get("x-envoy-attempt-count"))
				if n == 1 {
					w.WriteHeader(503)
				}
			})
			_, url := start(setup{vhost: config.VirtualHost{IncludeRequestAttemptCount: true, IncludeAttemptCountInResponse: true},
				routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, hdr, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(seen).To(Equal([]string{"1", "2"}))
			Expect(hdr.Get("x-envoy-attempt-count")).To(Equal("2"))
		})
	})

	Describe("timeouts", func() {
		It("retries a per-try timeout under 5xx and counts upstream_rq_per_try_timeout", func() {
			slow, good := newUpstream(hang), newUpstream(ok)
			rp := retries(1, "5xx")
			rp.PerTryTimeout = 50 * time.Millisecond
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", slow.addr(), good.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(0))
		})

		It("does not retry a per-try timeout under connect-failure: 504", func() {
			slow, good := newUpstream(hang), newUpstream(ok)
			rp := retries(1, "connect-failure")
			rp.PerTryTimeout = 50 * time.Millisecond
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", slow.addr(), good.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(504))
			Expect(body).To(Equal("upstream request timeout"))
			Expect(good.requests.Load()).To(BeEquivalentTo(0))
			Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(BeEquivalentTo(1))
		})

		It("ends the request with 504 when the route timeout fires, across attempts, without retrying", func() {
			slow := newUpstream(hang)
			r := prefixRoute("/", "backend", retries(5, "5xx", "reset"))
			r.Action.Timeout = 100 * time.Millisecond
			srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", slow.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(504))
			Expect(body).To(Equal("upstream request timeout"))
			Expect(slow.requests.Load()).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(0))
			Expect(stat(srv, "cluster.backend.upstream_rq_504")).To(BeEquivalentTo(1))
		})
	})

	It("answers 408 when the request body does not arrive within the HCM request_timeout", func() {
		u := newUpstream(ok)
		srv, url := start(setup{requestTimeout: 100 * time.Millisecond, routes: []config.Route{prefixRoute("/", "backend", nil)},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		Expect(err).NotTo(HaveOccurred())
		defer conn.Close()
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nab")
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.SetReadDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		buf := make([]byte, 64)
		n, _ := conn.Read(buf)
		Expect(string(buf[:n])).To(HavePrefix("HTTP/1.1 408"))
		Expect(u.requests.Load()).To(BeEquivalentTo(0))
		Expect(stat(srv, "http.ingress.downstream_rq_timeout")).To(BeEquivalentTo(1))
	})

	Describe("admin", func() {
		var srv *proxy.Server
		var admin string
		BeforeEach(func() {
			u := newUpstream(status(503))
			var url string
			srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			get(url + "/")
			admin = "http://" + srv.AdminAddr()
		})

		It("answers /ready with LIVE", func() {
			code, _, body := get(admin + "/ready")
			Expect(code).To(Equal(200))
			Expect(body).To(Equal("LIVE\n"))
		})

		It("prints /stats one 'name: value' per line, with Envoy's names", func() {
			_, _, body := get(admin + "/stats")
			Expect(strings.Split(body, "\n")).To(ContainElements(
				"cluster.backend.upstream_rq_retry: 1",
				"cluster.backend.upstream_rq_retry_limit_exceeded: 1",
				"cluster.backend.upstream_rq_503: 1", // the final attempt's; the retried one counts under retry.
				"cluster.backend.retry.upstream_rq_503: 1",
				"http.ingress.downstream_rq_5xx: 1",
			))
			Expect(body).To(MatchRegexp(`(?m)^cluster\.backend\.upstream_rq_time: P0\(nan,[0-9.]+\) P25\(nan,[0-9.]+\) .* P100\(nan,[0-9.]+\)$`))
			Expect(body).To(MatchRegexp(`(?m)^cluster\.backend\.upstream_cx_connect_ms: P0\(`))
			Expect(body).To(MatchRegexp(`(?m)^http\.ingress\.downstream_rq_time: P0\(`))
			_, _, body = get(admin + "/stats?filter=retry_limit")
			Expect(body).To(Equal("cluster.backend.upstream_rq_retry_limit_exceeded: 1\n"))
		})

		It("serves /stats?format=json and /stats/prometheus", func() {
			_, _, body := get(admin + "/stats?format=json")
			Expect(body).To(ContainSubstring(`"name": "cluster.backend.upstream_rq_retry"`))
			_, _, body = get(admin + "/stats/prometheus")
			Expect(body).To(ContainSubstring("# TYPE envoy_cluster_upstream_rq_retry counter\n"))
			Expect(body).To(ContainSubstring(`envoy_cluster_upstream_rq_retry{envoy_cluster_name="backend"} 1`))
		})

		It("lists hosts with counters and health flags on /clusters", func() {
			_, _, body := get(admin + "/clusters")
			Expect(body).To(MatchRegexp(`(?m)^backend::127\.0\.0\.1:\d+::rq_total::2$`))
			Expect(body).To(MatchRegexp(`(?m)^backend::127\.0\.0\.1:\d+::health_flags::healthy$`))
		})

		It("answers 405 to GET on POST-only endpoints", func() {
			code, _, body := get(admin + "/quitquitquit")
			Expect(code).To(Equal(405))
			Expect(body).To(Equal("Method GET not allowed, POST required.\n"))
		})

		It("does not serve /debug/pprof/ unless enabled", func() {
			code, _, _ := get(admin + "/debug/pprof/")
			Expect(code).To(Equal(http.StatusNotFound))
			code, _, _ = get(admin + "/debug/pprof/goroutine?debug=1")
			Expect(code).To(Equal(http.StatusNotFound))
		})

		It("serves /debug/pprof/ with Options.EnablePprof", func() {
			u := newUpstream(ok)
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
				opts: proxy.Options{EnablePprof: true}})
			code, _, body := get("http://" + srv.AdminAddr() + "/debug/pprof/goroutine?debug=1")
			Expect(code).To(Equal(http.StatusOK))
			Expect(body).To(HavePrefix("goroutine profile:"))
		})

		It("warns when the admin listens beyond loopback, and only then", func() {
			var warnings []string
			warn := func(m string) { warnings = append(warnings, m) }
			start(setup{clusters: []config.Cluster{cluster("backend", closedAddr())}, opts: proxy.Options{Warn: warn}})
			Expect(warnings).To(BeEmpty(), "127.0.0.1")

			cfg := &config.Bootstrap{Admin: &config.Admin{Address: "0.0.0.0:0"}}
			exposed, err := proxy.New(cfg, proxy.Options{Warn: warn})
			Expect(err).NotTo(HaveOccurred())
			Expect(exposed.Start()).To(Succeed())
			DeferCleanup(exposed.Close)
			Expect(warnings).To(HaveExactElements(And(
				HavePrefix("warning: the admin interface listens on 0.0.0.0:"),
				ContainSubstring("(every interface)"),
				ContainSubstring("bind admin.address to 127.0.0.1"))))
		})

		It("closes Quit on POST /quitquitquit", func() {
			resp, err := client.Post(admin+"/quitquitquit", "", nil)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Eventually(srv.Quit()).WithTimeout(5 * time.Second).Should(BeClosed())
		})
	})

	Describe("connections (the proxy's own HTTP/1.1)", func() {
		It("interrupts the upstream attempt when the client goes away: no retry, nothing left active", func() {
			gone := make(chan struct{}, 1)
			u := newUpstream(func(_ int64, _ http.ResponseWriter, r *http.Request) {
				<-r.Context().Done() // the proxy closed the upstream connection
				gone <- struct{}{}
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "reset", "5xx"))},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			_, err = conn.Write([]byte("GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"))
			Expect(err).NotTo(HaveOccurred())
			Eventually(u.requests.Load).Should(BeEquivalentTo(1))
			Expect(conn.Close()).To(Succeed())
			Eventually(gone).Should(Receive(), "the upstream request ends when the client goes away, not at the 15 s route timeout")
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_active") }).Should(BeZero())
			Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_rq_active") }).Should(BeZero())
			Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_rx_reset")).To(BeEquivalentTo(1), "its stream reset with the connection")
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
			Expect(u.requests.Load()).To(BeEquivalentTo(1))
		})

		// Regression (issue #18): the body's error was taken for a client gone away; nothing was written
		// and the server's default 200 went out, counted in no status class.
		Context("when a request body breaks its chunked framing", func() {
			var (
				u    *upstream
				srv  *proxy.Server
				url  string
				seen chan string // what the upstream received: Content-Length and body
			)
			BeforeEach(func() {
				seen = make(chan string, 1)
				u = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
					b, _ := io.ReadAll(r.Body)
					seen <- fmt.Sprintf("%d %q", r.ContentLength, b)
					io.WriteString(w, "ok")
				})
				srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "reset", "5xx"))},
					clusters: []config.Cluster{cluster("backend", u.addr())}})
			})

			DescribeTable("answers 400 Bad Request and closes, as Envoy's codec does: nothing upstream, 4xx counted",
				func(body string) {
					got := rawExchange(url, "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"+body, false)
					Expect(got).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
					Expect(got).To(ContainSubstring("\r\nConnection: close\r\n"))
					Expect(got).To(HaveSuffix("\r\n\r\nBad Request"), "the body, then the connection's end")
					Expect(u.requests.Load()).To(BeZero(), "no upstream attempt, let alone a retry")
					Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeZero())
					Expect(stat(srv, "http.ingress.downstream_rq_total")).To(BeEquivalentTo(1))
					Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
					Expect(stat(srv, "http.ingress.downstream_rq_2xx")).To(BeZero())
					Expect(stat(srv, "http.ingress.downstream_cx_protocol_error")).To(BeEquivalentTo(1))
					Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeZero())
					Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_cx_active") }).Should(BeZero())
				},
				Entry("a size that is not hexadecimal (zz)", "zz\r\nhello\r\n0\r\n\r\n"),
				Entry("a size that overflows 64 bits (2^72)", "1000000000000000000\r\nhello\r\n0\r\n\r\n"),
				Entry("a negative size (-5)", "-5\r\nhello\r\n0\r\n\r\n"),
				Entry("a chunk line ending with a bare LF", "5\nhello\r\n0\r\n\r\n"),
				Entry("a last-chunk line ending with a bare LF", "5\r\nhello\r\n0\n\r\n"),
				Entry("data longer than its size", "3\r\nhello\r\n0\r\n\r\n"),
				Entry("data followed by a bare LF", "5\r\nhello\n0\r\n\r\n"),
			)

			It("forwards a valid chunked body as a Content-Length body", func() {
				got := rawExchange(url, "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"+
					"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-T: 1\r\n\r\n", false)
				Expect(got).To(HavePrefix("HTTP/1.1 200 OK\r\n"), got)
				Expect(seen).To(Receive(Equal(`11 "hello world"`)))
			})
		})

		// Envoy: the remote closed with a request in progress (downstream_cx_destroy_remote_active_rq),
		// no response, no status class.
		DescribeTable("sends nothing to a client that ends its stream mid-body, and forwards nothing",
			func(request string) {
				u := newUpstream(ok)
				srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "reset", "5xx"))},
					clusters: []config.Cluster{cluster("backend", u.addr())}})
				Expect(rawExchange(url, request, true)).To(BeEmpty())
				Expect(u.requests.Load()).To(BeZero())
				Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeEquivalentTo(1))
				Expect(stat(srv, "http.ingress.downstream_cx_protocol_error")).To(BeZero())
				for _, class := range []string{"2xx", "3xx", "4xx", "5xx"} {
					Expect(stat(srv, "http.ingress.downstream_rq_"+class)).To(BeZero(), class)
				}
			},
			Entry("fewer bytes than its Content-Length", "POST /p HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhello"),
			Entry("in a chunk's data", "POST /p HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel"),
		)

		// Regression: the router returned without answering a client gone away, and the server's
		// default 200 went out to a client that had only half-closed.
		It("sends nothing to a client that ends its stream after its request, before the response", func() {
			u := newUpstream(hang)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "reset", "5xx"))},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			Expect(rawExchange(url, "GET /p HTTP/1.1\r\nHost: x\r\n\r\n", true)).To(BeEmpty())
			Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_2xx")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
		})

		// Regression (issue #18, defect 10): the listener's server had no idle timeout, and a head without
		// an LF was held for the one-minute head timeout, then answered 408.
		It("answers a head with a bare CR 400 at once, counted as Envoy counts a codec error", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			got := rawExchange(url, "GET / HTTP/1.1\rHost: x\r\r", false) // no LF: only a prompt 400 ends this in time
			Expect(got).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
			Expect(got).To(ContainSubstring("\r\nConnection: close\r\n"))
			Expect(u.requests.Load()).To(BeZero())
			Expect(stat(srv, "http.ingress.downstream_rq_total")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_cx_protocol_error")).To(BeEquivalentTo(1))
		})

		It("closes a downstream connection idle for the HCM idle_timeout, counting downstream_cx_idle_timeout", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}, idleTimeout: 250 * time.Millisecond})
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(conn.Close)
			Expect(conn.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
			br := bufio.NewReader(conn)
			for range 2 { // keep-alive: the idle timer restarts after each response
				_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
				Expect(err).NotTo(HaveOccurred())
				resp, err := http.ReadResponse(br, nil)
				Expect(err).NotTo(HaveOccurred())
				b, err := io.ReadAll(resp.Body)
				Expect(err).NotTo(HaveOccurred())
				Expect(string(b)).To(Equal("hello"))
			}
			rest, err := io.ReadAll(br) // the proxy closes the idle connection
			Expect(err).NotTo(HaveOccurred())
			Expect(rest).To(BeEmpty())
			Expect(stat(srv, "http.ingress.downstream_cx_idle_timeout")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_2xx")).To(BeEquivalentTo(2))
		})

		It("replaces an idle upstream connection the upstream closed instead of failing a request on it", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			u.srv.CloseClientConnections() // the upstream drops its idle keep-alive connection
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_cx_active") }).Should(BeEquivalentTo(1))
			code, _, body := get(url + "/")
			Expect(code).To(Equal(200), "without a retry policy, a request sent on the dead connection would fail")
			Expect(body).To(Equal("hello"))
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeZero())
		})

		It("drops the response's hop-by-hop headers and those its Connection header names", func() {
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Connection", "keep-alive, X-Hop")
				w.Header().Set("X-Hop", "1")
				w.Header().Set("Keep-Alive", "timeout=5")
				w.Header().Set("X-End", "2")
				io.WriteString(w, "ok")
			})
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, hdr, body := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(body).To(Equal("ok"))
			Expect(hdr.Get("X-End")).To(Equal("2"))
			Expect(hdr.Values("X-Hop")).To(BeEmpty())
			Expect(hdr.Values("Keep-Alive")).To(BeEmpty())
		})

		It("reads a Connection header's names without allocating (every upstream response has one)", func() {
			found, vals := true, []string{"keep-alive", "Upgrade, x-hop "}
			allocs := testing.AllocsPerRun(100, func() { found = proxy.ListsToken(vals, "X-Hop") })
			Expect(found).To(BeTrue())
			Expect(allocs).To(BeZero())
			Expect(proxy.ListsToken([]string{"keep-alive"}, "X-Hop")).To(BeFalse())
		})

		It("relays a chunked upstream response and a HEAD response's Content-Length", func() {
			u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				if r.Method == http.MethodHead {
					w.Header().Set("Content-Length", "42")
					return
				}
				io.WriteString(w, "part one, ")
				w.(http.Flusher).Flush() // no Content-Length: chunked
				io.WriteString(w, "part two")
			})
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(body).To(Equal("part one, part two"))
			resp, err := client.Head(url + "/")
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.ContentLength).To(BeEquivalentTo(42))
		})
	})

	It("shuts down gracefully", func() {
		u := newUpstream(ok)
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		get(url + "/")
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		Expect(srv.Shutdown(ctx)).To(Succeed())
		_, err := client.Get(url + "/")
		Expect(err).To(HaveOccurred())
	})
})
