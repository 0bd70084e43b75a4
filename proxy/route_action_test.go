package proxy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
)

// sendGET runs a GET of url (with headers, name/value pairs) in the background and steps clk by d until
// it is answered; it returns the status and the body.
func sendGET(clk *clock.Fake, d time.Duration, url string, headers ...string) (int, string) {
	GinkgoHelper()
	code, _, body := sendGETHeader(clk, d, url, headers...)
	return code, body
}

// sendGETHeader is sendGET with the response's headers.
func sendGETHeader(clk *clock.Fake, d time.Duration, url string, headers ...string) (int, http.Header, string) {
	GinkgoHelper()
	type answer struct {
		code int
		hdr  http.Header
		body string
	}
	answers := make(chan answer, 1)
	go func() {
		defer GinkgoRecover()
		req, err := http.NewRequest("GET", url, nil)
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Set(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		answers <- answer{resp.StatusCode, resp.Header, string(b)}
	}()
	var a answer
	until(clk, d, received(answers, &a))
	return a.code, a.hdr, a.body
}

var _ = Describe("retry_policy.per_try_idle_timeout", func() {
	// Envoy arms an attempt's idle timer when it is sent and re-arms it on its response headers and on
	// every piece of its body (UpstreamRequest::setupPerTryTimeout, resetPerTryIdleTimer,
	// decodeHeaders, decodeData, source/common/router/upstream_request.cc). When it fires the router
	// handles the attempt as a per-try timeout, counted in upstream_rq_per_try_idle_timeout
	// (Filter::onPerTryIdleTimeout → onPerTryTimeoutCommon, router.cc).
	idlePolicy := func(idle time.Duration, on ...string) *config.RetryPolicy {
		rp := retries(1, on...)
		rp.PerTryIdleTimeout = idle
		return rp
	}

	It("resets an attempt whose upstream sends nothing and retries it under 5xx", func() {
		u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				hang(n, w, r)
				return
			}
			ok(n, w, r)
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", idlePolicy(time.Second, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("hello"))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("cluster.backend.upstream_rq_per_try_idle_timeout", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_per_try_timeout", BeEquivalentTo(0)),
			HaveKeyWithValue("cluster.backend.upstream_rq_retry", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_tx_reset", BeEquivalentTo(1)),
		))
	})

	It("answers 504 upstream request timeout when the idle attempt is not retried (connect-failure only)", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", idlePolicy(time.Second, "connect-failure"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("upstream request timeout"))
		Expect(clk.Since(began)).To(BeNumerically(">=", time.Second))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_per_try_idle_timeout")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeZero())
	})

	It("lets a slow response through as long as bytes keep coming", func() {
		// Real time: each piece comes 20ms after the last, well within the 1s idle timeout, while the
		// whole body takes longer than it (the route timeout is what bounds a whole response).
		u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
			for range 60 {
				io.WriteString(w, "x")
				w.(http.Flusher).Flush()
				time.Sleep(20 * time.Millisecond)
			}
		})
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", idlePolicy(time.Second, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, body := get(url + "/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal(strings.Repeat("x", 60)))
		Expect(stat(srv, "cluster.backend.upstream_rq_per_try_idle_timeout")).To(BeZero())
	})

	It("resets the downstream when the upstream stalls mid-body: the response has started, nothing is retried", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", idlePolicy(time.Second, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		// The proxy may hold the response's head until more of it comes: the client sees either the
		// head then a body cut short, or the connection closed before anything.
		readErr := readWhole(clk, 100*time.Millisecond, url+"/")
		Expect(readErr).To(HaveOccurred(), "the response ends short of its 10 bytes")
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_per_try_idle_timeout")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
	})
})

var _ = Describe("retry_policy.retriable_request_headers", func() {
	// RetryStateImpl (source/common/router/retry_state_impl.cc): when the policy lists
	// retriable_request_headers and none matches the request, its retry_on is cleared — the request is
	// not retried, whatever retry_on or x-envoy-retry-on say.
	var (
		u   *upstream
		url string
		srv *proxy.Server
	)
	BeforeEach(func() {
		u = newUpstream(func(n int64, w http.ResponseWriter, _ *http.Request) {
			if n%2 == 1 { // every first attempt fails
				w.WriteHeader(503)
				return
			}
			io.WriteString(w, "hello")
		})
		get, idempotent := "GET", "true"
		rp := retries(1, "5xx")
		rp.RetriableRequestHeaders = []config.HeaderMatcher{
			{Name: ":method", Exact: &get},
			{Name: "x-idempotent", Exact: &idempotent},
		}
		srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
	})

	do := func(method string, hdr ...string) int {
		GinkgoHelper()
		req, err := http.NewRequest(method, url+"/", strings.NewReader("body"))
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i+1 < len(hdr); i += 2 {
			req.Header.Set(hdr[i], hdr[i+1])
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}

	It("retries a request that one of them matches (:method GET)", func() {
		Expect(do("GET")).To(Equal(200))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
	})

	It("retries a request that one of them matches (x-idempotent: true)", func() {
		Expect(do("POST", "x-idempotent", "true")).To(Equal(200))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
	})

	It("does not retry a request that none matches, even when it asks with x-envoy-retry-on", func() {
		Expect(do("POST", "x-envoy-retry-on", "5xx")).To(Equal(503))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
	})
})

var _ = Describe("request_mirror_policies", func() {
	// Envoy's router draws the mirror policies that apply when it routes the request
	// (FilterUtility::shouldShadow) and, once the request is complete, hands each copy to its shadow
	// writer (Filter::maybeDoShadowing, router.cc; ShadowWriterImpl::shadow, shadow_writer_impl.cc):
	// fire and forget, the Host suffixed "-shadow", the response dropped.
	type seen struct {
		host, path, body, requestID string
	}
	var (
		main, shadow *upstream
		mirrored     chan seen
	)
	mirrorRoute := func(fraction config.Fraction) config.Route {
		r := prefixRoute("/", "backend", nil)
		r.Action.MirrorPolicies = []config.MirrorPolicy{{Cluster: "shadow", Fraction: fraction, TraceSampled: true}}
		return r
	}
	all := config.Fraction{Numerator: 100, Denominator: 100}
	BeforeEach(func() {
		main = newUpstream(ok)
		mirrored = make(chan seen, 100)
		shadow = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mirrored <- seen{r.Host, r.URL.RequestURI(), string(b), r.Header.Get("x-request-id")}
			w.WriteHeader(503) // ignored: the client gets the main cluster's answer
		})
	})

	It("sends a copy of the request, body included, to the mirror cluster with the Host suffixed -shadow", func() {
		srv, url := start(setup{routes: []config.Route{mirrorRoute(all)},
			clusters: []config.Cluster{cluster("backend", main.addr()), cluster("shadow", shadow.addr())}})
		req, err := http.NewRequest("POST", url+"/orders?id=7", strings.NewReader("an order"))
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("x-request-id", "mirror-1")
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		Expect(string(b)).To(Equal("hello"))

		host := strings.TrimPrefix(url, "http://")
		name, port, _ := strings.Cut(host, ":")
		var got seen
		Eventually(mirrored).WithTimeout(5 * time.Second).Should(Receive(&got))
		Expect(got).To(Equal(seen{host: name + "-shadow:" + port, path: "/orders?id=7", body: "an order", requestID: "mirror-1"}))
		Eventually(func() uint64 { return stat(srv, "cluster.shadow.upstream_rq_503") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.shadow.upstream_rq_total")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(1))
	})

	It("never delays nor fails the request: a mirror that hangs or cannot connect is not waited for", func() {
		hanging := newUpstream(hang)
		r := mirrorRoute(all)
		r.Action.MirrorPolicies = append(r.Action.MirrorPolicies, config.MirrorPolicy{Cluster: "down", Fraction: all})
		r.Action.MirrorPolicies[0].Cluster = "hanging"
		r.Action.Timeout = 2 * time.Second // the mirror's bound too (Envoy: the async request's timeout)
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", main.addr()),
			cluster("hanging", hanging.addr()), cluster("down", closedAddr())}})
		began := time.Now()
		code, _, body := get(url + "/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("hello"))
		Expect(time.Since(began)).To(BeNumerically("<", 2*time.Second), "the mirror hangs until the route timeout")
		Eventually(func() uint64 { return stat(srv, "cluster.down.upstream_cx_connect_fail") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
		Eventually(func() uint64 { return stat(srv, "cluster.hanging.upstream_rq_timeout") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
		Expect(hanging.requests.Load()).To(BeEquivalentTo(1))
	})

	It("mirrors the share of requests runtime_fraction's default_value draws", func() {
		srv, url := start(setup{routes: []config.Route{
			mirrorRoute(config.Fraction{Numerator: 50, Denominator: 100})},
			clusters: []config.Cluster{cluster("backend", main.addr()), cluster("shadow", shadow.addr())}})
		for range 40 {
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
		}
		Eventually(func() int64 { return shadow.requests.Load() }).WithTimeout(5*time.Second).Should(
			And(BeNumerically(">", 0), BeNumerically("<", 40)), "about half of 40 (all or none: odds 2^-39)")
		Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(40))
	})

	It("mirrors nothing at 0%", func() {
		_, url := start(setup{routes: []config.Route{mirrorRoute(config.Fraction{Numerator: 0, Denominator: 100})},
			clusters: []config.Cluster{cluster("backend", main.addr()), cluster("shadow", shadow.addr())}})
		for range 10 {
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
		}
		Consistently(shadow.requests.Load).WithTimeout(200 * time.Millisecond).Should(BeZero())
	})

	It("gives the mirror up when the body streams beyond the buffer limit: retry_or_shadow_abandoned", func() {
		srv, url := start(setup{routes: []config.Route{mirrorRoute(all)}, bufferLimit: 16,
			clusters: []config.Cluster{cluster("backend", main.addr()), cluster("shadow", shadow.addr())}})
		resp, err := client.Post(url+"/", "text/plain", strings.NewReader(strings.Repeat("x", 100)))
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeEquivalentTo(1))
		Consistently(shadow.requests.Load).WithTimeout(200 * time.Millisecond).Should(BeZero())
	})
})

var _ = Describe("hedge_policy.hedge_on_per_try_timeout", func() {
	// With hedging, Envoy's per-try timeout does not reset its attempt (onPerTryTimeoutCommon →
	// onSoftPerTryTimeout, router.cc): a retry is scheduled alongside it (shouldHedgeRetryPerTryTimeout,
	// retry_state_impl.cc; upstream_rq_retry, no upstream_rq_per_try_timeout) and the first response
	// that is not to be retried wins, the other attempts reset (onUpstreamHeaders → resetOtherUpstreams).
	hedging := func(rp *config.RetryPolicy) config.Route {
		rp.PerTryTimeout = time.Second
		r := prefixRoute("/", "backend", rp)
		r.Action.HedgePolicy = &config.HedgePolicy{OnPerTryTimeout: true}
		return r
	}

	It("starts a second attempt at the per-try timeout, keeps the first, and the first response wins", func() {
		firstGone := make(chan struct{})
		u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				<-r.Context().Done() // reset by the router once the second attempt has won
				close(firstGone)
				return
			}
			io.WriteString(w, "second")
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{hedging(retries(1, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("second"))
		Eventually(firstGone).WithTimeout(5 * time.Second).Should(BeClosed())
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("cluster.backend.upstream_rq_total", BeEquivalentTo(2)),
			HaveKeyWithValue("cluster.backend.upstream_rq_retry", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_per_try_timeout", BeEquivalentTo(0)),
			HaveKeyWithValue("cluster.backend.upstream_rq_200", BeEquivalentTo(1)),
		))
	})

	It("hedges a request from an internal client that asks with x-envoy-hedge-on-per-try-timeout: true", func() {
		u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				<-r.Context().Done()
				return
			}
			io.WriteString(w, r.Header.Get("x-envoy-hedge-on-per-try-timeout")) // consumed: empty
		})
		rp := retries(1, "5xx")
		rp.PerTryTimeout = time.Second
		clk := fakeClock()
		// Internal: the loopback client is named by internal_address_config (with use_remote_address);
		// from any other client the connection manager removes the header (cleanInternalHeaders).
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk},
			listener: func(l *config.Listener) {
				l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/", "x-envoy-hedge-on-per-try-timeout", "true")
		Expect(code).To(Equal(200))
		Expect(body).To(BeEmpty())
		Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(BeZero(), "soft: the first attempt was not reset by it")
	})

	It("lets the first attempt win when it answers before the hedged one", func() {
		secondArrived, secondGone := make(chan struct{}), make(chan struct{})
		u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
			if n == 1 {
				<-secondArrived
				io.WriteString(w, "first")
				return
			}
			close(secondArrived)
			<-r.Context().Done()
			close(secondGone)
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{hedging(retries(1, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("first"))
		Eventually(secondGone).WithTimeout(5*time.Second).Should(BeClosed(), "the hedged attempt is reset")
		// Each attempt held its own pool attachment: both counted, both given back.
		Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(2))
		Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_active") }).WithTimeout(5*time.Second).
			Should(BeZero(), "each attachment released, its max_requests slot with it")
	})

	It("drops a retriable response of a hedged attempt while another may still answer", func() {
		secondArrived, firstAnswered := make(chan struct{}), make(chan struct{})
		u := newUpstream(func(n int64, w http.ResponseWriter, _ *http.Request) {
			if n == 1 {
				<-secondArrived
				w.WriteHeader(503)
				close(firstAnswered)
				return
			}
			close(secondArrived)
			<-firstAnswered
			io.WriteString(w, "second")
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{hedging(retries(1, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("second"))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_503")).To(BeZero(), "the dropped response is not the one answered")
	})

	It("answers 504 at the route timeout when no attempt answers, counting each attempt in flight", func() {
		u := newUpstream(hang)
		r := hedging(retries(1, "5xx"))
		r.Action.Timeout = 3 * time.Second
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())},
			opts: proxy.Options{Clock: clk}})
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("upstream request timeout"))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry_limit_exceeded")).To(BeEquivalentTo(1), "the second attempt's per-try timeout finds no retry left")
	})
})

var _ = Describe("RouteAction.max_stream_duration", func() {
	// The connection manager times a stream from its start by its route's max_stream_duration
	// (ActiveStream::refreshDurationTimeout) and, when it elapses, counts
	// downstream_rq_max_duration_reached and answers "downstream duration timeout": 504 once the whole
	// request was received, 408 before (onStreamMaxDurationReached, Utility::maybeRequestTimeoutCode,
	// source/common/http/conn_manager_impl.cc); a response already started is reset.
	durationRoute := func(d time.Duration) config.Route {
		r := prefixRoute("/", "backend", retries(3, "5xx"))
		r.Action.Timeout = 0 // as the config sets it: a route with max_stream_duration has no route timeout
		r.Action.MaxStreamDuration, r.Action.NewTimeouts = &d, true
		return r
	}

	It("answers 504 downstream duration timeout when the upstream has not answered in time, and never retries", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{durationRoute(2 * time.Second)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("downstream duration timeout"))
		Expect(clk.Since(began)).To(BeNumerically(">=", 2*time.Second))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("http.ingress.downstream_rq_max_duration_reached", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_timeout", BeEquivalentTo(0)),
			HaveKeyWithValue("cluster.backend.upstream_rq_tx_reset", BeEquivalentTo(1)),
			HaveKeyWithValue("http.ingress.downstream_rq_5xx", BeEquivalentTo(1)),
		))
	})

	It("answers 408 when the request itself has not arrived in time", func() {
		// Real time: the request body is read under a socket deadline.
		srv, url := start(setup{routes: []config.Route{durationRoute(300 * time.Millisecond)},
			clusters: []config.Cluster{cluster("backend", newUpstream(ok).addr())}})
		conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		Expect(conn.SetDeadline(time.Now().Add(5 * time.Second))).To(Succeed())
		_, err = io.WriteString(conn, "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nhalf")
		Expect(err).NotTo(HaveOccurred())
		resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		Expect(resp.StatusCode).To(Equal(408))
		Expect(string(b)).To(Equal("downstream duration timeout"))
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
		Expect(stat(srv, "http.ingress.downstream_rq_timeout")).To(BeZero())
	})

	It("resets the downstream when the response has started", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "hello")
			w.(http.Flusher).Flush()
			<-r.Context().Done()
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{durationRoute(time.Second)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			opts: proxy.Options{Clock: clk}})
		readErr := readWhole(clk, 100*time.Millisecond, url+"/")
		Expect(readErr).To(HaveOccurred(), "the response ends short of its 10 bytes")
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
	})

	It("lets a request that ends in time through, announcing no route timeout upstream", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "expected timeout: "+r.Header.Get("x-envoy-expected-rq-timeout-ms"))
		})
		srv, url := start(setup{routes: []config.Route{durationRoute(5 * time.Second)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, body := get(url + "/")
		Expect(code).To(Equal(200))
		Expect(body).To(Equal("expected timeout: "), "finalTimeout sets no global timeout under max_stream_duration")
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeZero())
	})
})

var _ = Describe("request_mirror_policies.trace_sampled", func() {
	// Envoy sends a mirror through its async client with a child span "mirror" of the request's
	// (setChildSpanName), sampled as trace_sampled says (setSampled; Filter::maybeDoShadowing, router.cc).
	mirrorTrace := func(sampled bool) (traceparent string, exp *tracetest.InMemoryExporter) {
		GinkgoHelper()
		exp = tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		DeferCleanup(func() { _ = tp.Shutdown(context.Background()) })
		parents := make(chan string, 1)
		shadow := newUpstream(func(_ int64, _ http.ResponseWriter, r *http.Request) { parents <- r.Header.Get("traceparent") })
		r := prefixRoute("/", "backend", nil)
		r.Action.MirrorPolicies = []config.MirrorPolicy{{Cluster: "shadow", Fraction: config.Fraction{Numerator: 100, Denominator: 100}, TraceSampled: sampled}}
		_, url := start(setup{routes: []config.Route{r}, opts: proxy.Options{TracerProvider: tp},
			clusters: []config.Cluster{cluster("backend", newUpstream(ok).addr()), cluster("shadow", shadow.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(200))
		Eventually(parents).WithTimeout(5 * time.Second).Should(Receive(&traceparent))
		return traceparent, exp
	}
	named := func(exp *tracetest.InMemoryExporter, name string) func() []tracetest.SpanStub {
		return func() []tracetest.SpanStub {
			var out []tracetest.SpanStub
			for _, sp := range exp.GetSpans() {
				if sp.Name == name {
					out = append(out, sp)
				}
			}
			return out
		}
	}

	It("sends the mirror under a sampled CLIENT span \"mirror\", child of the request's", func() {
		parent, exp := mirrorTrace(true)
		Eventually(named(exp, "mirror")).WithTimeout(5*time.Second).Should(HaveLen(1), "ended once its response is read")
		mirror := named(exp, "mirror")()[0]
		Expect(mirror.SpanKind).To(Equal(trace.SpanKindClient))
		Expect(parent).To(Equal(fmt.Sprintf("00-%s-%s-01", mirror.SpanContext.TraceID(), mirror.SpanContext.SpanID())))
		Eventually(named(exp, "proxy GET")).WithTimeout(5 * time.Second).Should(HaveLen(1))
		Expect(mirror.Parent.SpanID()).To(Equal(named(exp, "proxy GET")()[0].SpanContext.SpanID()), "a child of the request's SERVER span")
	})

	It("marks the mirror's trace context not sampled under trace_sampled: false", func() {
		parent, exp := mirrorTrace(false)
		Expect(parent).To(HaveSuffix("-00"))
		Consistently(named(exp, "mirror")).WithTimeout(200 * time.Millisecond).Should(BeEmpty())
	})
})

var _ = Describe("HttpConnectionManager common_http_protocol_options.max_stream_duration", func() {
	// ActiveStream::refreshDurationTimeout (source/common/http/conn_manager_impl.cc): a route without
	// max_stream_duration.max_stream_duration falls back to the HCM's; a route's own replaces it, and a
	// route's 0s disables it.
	hcmDuration := func(d time.Duration) func(*config.Listener) {
		return func(l *config.Listener) { l.MaxStreamDuration = d }
	}
	noTimeout := func(msd *time.Duration) config.Route {
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout = 0
		if msd != nil {
			r.Action.MaxStreamDuration, r.Action.NewTimeouts = msd, true
		}
		return r
	}

	It("ends a request on a route without its own max_stream_duration at the HCM's", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: hcmDuration(3 * time.Second), opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("downstream duration timeout"))
		Expect(clk.Since(began)).To(BeNumerically(">=", 3*time.Second))
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
	})

	It("lets a route's own max_stream_duration replace the HCM's", func() {
		u := newUpstream(hang)
		clk := fakeClock()
		_, url := start(setup{routes: []config.Route{noTimeout(dur(time.Second))}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: hcmDuration(time.Minute), opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, body := sendGET(clk, 100*time.Millisecond, url+"/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("downstream duration timeout"))
		Expect(clk.Since(began)).To(And(BeNumerically(">=", time.Second), BeNumerically("<", time.Minute)))
	})

	It("is disabled by a route's max_stream_duration of 0s, which also drops a gRPC request's grpc-timeout", func() {
		seen := make(chan string, 1)
		u := newUpstream(func(_ int64, _ http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Get("grpc-timeout")
			<-r.Context().Done()
		})
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{noTimeout(dur(0))}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: func(l *config.Listener) {
				hcmDuration(time.Second)(l)
				// An internal client, whose x-envoy-upstream-rq-timeout-ms the router reads.
				l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		// The request's own route timeout bounds it instead, well past the HCM's second.
		code, hdr, body := sendGETHeader(clk, 100*time.Millisecond, url+"/", "x-envoy-upstream-rq-timeout-ms", "5000",
			"content-type", "application/grpc", "grpc-timeout", "30S")
		// The router's 504 to a gRPC request: UNAVAILABLE (httpToGrpcStatus), see grpc_test.go.
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(hdr.Get("grpc-message")).To(Equal("upstream request timeout"))
		Expect(body).To(BeEmpty())
		Expect(clk.Since(began)).To(BeNumerically(">=", 5*time.Second))
		Expect(<-seen).To(BeEmpty(), "removeGrpcTimeout")
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeZero())
	})
})

var _ = Describe("max_stream_duration.grpc_timeout_header_max and grpc_timeout_header_offset", func() {
	// refreshDurationTimeout (conn_manager_impl.cc): with grpc_timeout_header_max set, a request's
	// grpc-timeout is its stream duration, capped by the max (0: no cap) and less the offset; a gRPC
	// request goes upstream with that duration as its grpc-timeout (Grpc::Common::toGrpcTimeout).
	grpcRoute := func(max, offset *time.Duration) config.Route {
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout, r.Action.NewTimeouts = 0, true
		r.Action.GrpcTimeoutHeaderMax, r.Action.GrpcTimeoutHeaderOffset = max, offset
		return r
	}
	var (
		seen chan string
		u    *upstream
	)
	BeforeEach(func() {
		seen = make(chan string, 1)
		u = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Get("grpc-timeout")
			<-r.Context().Done()
		})
	})

	It("ends a gRPC request at its grpc-timeout, capped and less the offset, and tells the upstream", func() {
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{grpcRoute(dur(3*time.Second), dur(time.Second))},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, hdr, body := sendGETHeader(clk, 100*time.Millisecond, url+"/svc.Echo/Say", "content-type", "application/grpc", "grpc-timeout", "10S")
		// A gRPC request's local reply is a trailers-only gRPC response; this one DEADLINE_EXCEEDED
		// (onStreamMaxDurationReached), see grpc_test.go.
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("4"))
		Expect(hdr.Get("grpc-message")).To(Equal("downstream duration timeout"))
		Expect(body).To(BeEmpty())
		Expect(clk.Since(began)).To(And(BeNumerically(">=", 2*time.Second), BeNumerically("<", 4*time.Second)), "min(10s, 3s) - 1s")
		Expect(<-seen).To(Equal("2000m"))
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
	})

	It("leaves the grpc-timeout of a request that is not gRPC as it is, and uses it uncapped under a max of 0", func() {
		clk := fakeClock()
		_, url := start(setup{routes: []config.Route{grpcRoute(dur(0), nil)},
			clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		code, _ := sendGET(clk, 100*time.Millisecond, url+"/", "grpc-timeout", "1500m")
		Expect(code).To(Equal(504))
		Expect(clk.Since(began)).To(BeNumerically(">=", 1500*time.Millisecond))
		Expect(<-seen).To(Equal("1500m"))
	})

	DescribeTable("reads grpc-timeout as Envoy's getGrpcTimeout",
		func(v string, want time.Duration, ok bool) {
			got, gotOK := proxy.ParseGrpcTimeout(v)
			Expect(gotOK).To(Equal(ok))
			Expect(got).To(Equal(want))
		},
		Entry("hours", "2H", 2*time.Hour, true),
		Entry("minutes", "3M", 3*time.Minute, true),
		Entry("seconds", "10S", 10*time.Second, true),
		Entry("milliseconds", "250m", 250*time.Millisecond, true),
		Entry("microseconds, rounded up", "1500u", 2*time.Millisecond, true),
		Entry("nanoseconds, rounded up", "1n", time.Millisecond, true),
		Entry("zero", "0S", time.Duration(0), true),
		Entry("9 digits", "123456789m", time.Duration(0), false),
		Entry("negative", "-1S", time.Duration(0), false),
		Entry("an unknown unit", "5s", time.Duration(0), false),
		Entry("no value", "S", time.Duration(0), false),
		Entry("empty", "", time.Duration(0), false),
	)

	DescribeTable("writes grpc-timeout as Envoy's toGrpcTimeout",
		func(ms int64, want string) { Expect(proxy.FormatGrpcTimeout(ms)).To(Equal(want)) },
		Entry("milliseconds while they fit 8 digits", int64(99999999), "99999999m"),
		Entry("then seconds", int64(100000000), "100000S"),
		Entry("then minutes", int64(99999999*1000+60000), "1666667M"),
		Entry("clipped at 8 digits of hours", int64(1)<<62, "99999999H"),
	)
})
