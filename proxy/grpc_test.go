package proxy_test

import (
	"bytes"
	"io"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// grpcFrame is an empty gRPC message: the 5-byte length-prefixed frame.
var grpcFrame = []byte{0, 0, 0, 0, 0}

// sendGrpc POSTs a gRPC call (content-type ct, "" for none) with hdr, and returns the status, headers,
// trailers and body of its response.
func sendGrpc(method, url, ct string, hdr map[string]string) (int, http.Header, http.Header, string) {
	GinkgoHelper()
	var body io.Reader
	if method == http.MethodPost {
		body = bytes.NewReader(grpcFrame)
	}
	req, err := http.NewRequest(method, url+"/pkg.Greeter/Hello", body)
	Expect(err).NotTo(HaveOccurred())
	if ct != "" {
		req.Header.Set("content-type", ct)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, resp.Header, resp.Trailer, string(b)
}

// trailersOnly answers the nth request as a trailers-only gRPC response with the nth status of
// statuses, and OK once they run out: HTTP 200, content-type application/grpc, grpc-status in the
// headers, no body (what faults/ answers for abort: {grpc_status: N}).
func trailersOnly(statuses ...int) func(int64, http.ResponseWriter, *http.Request) {
	return func(n int64, w http.ResponseWriter, _ *http.Request) {
		s := 0
		if int(n) <= len(statuses) {
			s = statuses[n-1]
		}
		w.Header().Set("content-type", "application/grpc")
		w.Header().Set("grpc-status", strconv.Itoa(s))
		w.Header().Set("content-length", "0")
		w.WriteHeader(http.StatusOK)
	}
}

// gRPC semantics of the router: the gRPC retry conditions (RetryStateImpl,
// source/common/router/retry_state_impl.cc) on a trailers-only response's grpc-status.
var _ = Describe("gRPC retries", func() {
	trustLoopback := func(l *config.Listener) {
		l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
	}
	run := func(u *upstream, rp *config.RetryPolicy, opts proxy.Options) (*proxy.Server, string) {
		return start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: trustLoopback, opts: opts})
	}

	DescribeTable("retries a trailers-only response on its gRPC condition, from the route's retry_on",
		func(cond string, status int) {
			u := newUpstream(trailersOnly(status))
			var mu sync.Mutex
			var reasons []string
			srv, url := run(u, retries(2, cond), proxy.Options{OnEvent: func(e proxy.Event) {
				mu.Lock()
				defer mu.Unlock()
				reasons = append(reasons, e.Kind+": "+e.Reason)
			}})
			code, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			Expect(code).To(Equal(200))
			Expect(hdr.Get("grpc-status")).To(Equal("0"), "the retry's answer")
			Expect(u.requests.Load()).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_success")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.retry.upstream_rq_200")).To(BeEquivalentTo(1), "the retried response is charged as retried")
			mu.Lock()
			defer mu.Unlock()
			Expect(reasons).To(ContainElement("retry: 200 grpc-status " + strconv.Itoa(status)))
		},
		Entry("cancelled: 1", "cancelled", 1),
		Entry("deadline-exceeded: 4", "deadline-exceeded", 4),
		Entry("resource-exhausted: 8", "resource-exhausted", 8),
		Entry("internal: 13", "internal", 13),
		Entry("unavailable: 14", "unavailable", 14),
	)

	DescribeTable("retries on x-envoy-retry-grpc-on without a retry policy, and never forwards it",
		func(cond string, status int) {
			var seen sync.Map
			u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
				seen.Store(n, r.Header.Get("x-envoy-retry-grpc-on"))
				trailersOnly(status)(n, w, r)
			})
			srv, url := run(u, nil, proxy.Options{})
			code, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", map[string]string{"x-envoy-retry-grpc-on": "5xx, " + cond})
			Expect(code).To(Equal(200))
			Expect(hdr.Get("grpc-status")).To(Equal("0"))
			Expect(u.requests.Load()).To(BeEquivalentTo(2), "x-envoy-retry-grpc-on's default of one retry")
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
			seen.Range(func(_, v any) bool { Expect(v).To(BeEmpty()); return true })
		},
		Entry("cancelled", "cancelled", 1),
		Entry("deadline-exceeded", "deadline-exceeded", 4),
		Entry("resource-exhausted", "resource-exhausted", 8),
		Entry("internal", "internal", 13),
		Entry("unavailable", "unavailable", 14),
	)

	It("does not retry a grpc-status its conditions do not list, nor OK", func() {
		u := newUpstream(trailersOnly(13))
		srv, url := run(u, retries(2, "unavailable", "cancelled"), proxy.Options{})
		code, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("13"))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
		Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(1))
	})

	It("retries up to num_retries, then relays the last answer with upstream_rq_retry_limit_exceeded", func() {
		u := newUpstream(trailersOnly(14, 14, 14, 14))
		srv, url := run(u, retries(2, "unavailable"), proxy.Options{})
		code, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", map[string]string{})
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(u.requests.Load()).To(BeEquivalentTo(3))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry_limit_exceeded")).To(BeEquivalentTo(1))
	})

	// Envoy's retry state reads the response headers only: a grpc-status that comes in the trailers
	// (after a response that started) is never retried.
	It("does not retry a grpc-status sent in trailers", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("content-type", "application/grpc")
			w.Header().Set("trailer", "grpc-status")
			w.WriteHeader(http.StatusOK)
			_, _ = w.Write(grpcFrame)
			w.Header().Set("grpc-status", "14")
		})
		srv, url := run(u, retries(2, "unavailable"), proxy.Options{})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		Expect(code).To(Equal(200))
		Expect(hdr.Values("grpc-status")).To(BeEmpty())
		Expect(body).To(Equal(string(grpcFrame)))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
	})

	It("takes gRPC conditions from x-envoy-retry-grpc-on only, and HTTP ones from x-envoy-retry-on only", func() {
		u := newUpstream(trailersOnly(14, 14, 14, 14, 14, 14))
		srv, url := run(u, nil, proxy.Options{})
		_, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", map[string]string{"x-envoy-retry-on": "unavailable"})
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		_, hdr, _, _ = sendGrpc(http.MethodPost, url, "application/grpc", map[string]string{"x-envoy-retry-grpc-on": "5xx,gateway-error"})
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
	})

	It("lets x-envoy-max-retries set the retries of an x-envoy-retry-grpc-on condition", func() {
		u := newUpstream(trailersOnly(14, 14, 14, 14, 14))
		srv, url := run(u, nil, proxy.Options{})
		_, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc",
			map[string]string{"x-envoy-retry-grpc-on": "unavailable", "x-envoy-max-retries": "3"})
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(u.requests.Load()).To(BeEquivalentTo(4))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(3))
	})

	It("honours x-envoy-retry-grpc-on on a request that is not gRPC, as Envoy does", func() {
		u := newUpstream(trailersOnly(14))
		_, url := run(u, nil, proxy.Options{})
		_, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/json", map[string]string{"x-envoy-retry-grpc-on": "unavailable"})
		Expect(hdr.Get("grpc-status")).To(Equal("0"))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
	})

	It("ignores x-envoy-retry-grpc-on from an external client, and does not forward it", func() {
		var seen sync.Map
		u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
			seen.Store(n, r.Header.Get("x-envoy-retry-grpc-on"))
			trailersOnly(14)(n, w, r)
		})
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		_, hdr, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", map[string]string{"x-envoy-retry-grpc-on": "unavailable"})
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
		v, _ := seen.Load(int64(1))
		Expect(v).To(BeEmpty())
	})
})

// Envoy's local replies to a gRPC request (Utility::prepareLocalReply, source/common/http/utility.cc):
// a trailers-only gRPC response, HTTP 200, content-type application/grpc, grpc-status from
// Grpc::Utility::httpToGrpcStatus unless the caller gives one, the body as grpc-message, no body.
var _ = Describe("gRPC local replies", func() {
	// expectTrailersOnly checks the parts every gRPC local reply has, then its grpc-status and message.
	expectTrailersOnly := func(code int, hdr http.Header, body, status, message string) {
		GinkgoHelper()
		Expect(code).To(Equal(200))
		Expect(hdr.Get("content-type")).To(Equal("application/grpc"))
		Expect(hdr.Get("grpc-status")).To(Equal(status))
		if message == "" {
			Expect(hdr.Values("grpc-message")).To(BeEmpty())
		} else {
			Expect(hdr.Get("grpc-message")).To(Equal(message))
		}
		Expect(hdr.Get("content-length")).To(Equal("0"))
		Expect(body).To(BeEmpty())
	}
	grpcRoute := func(clusterName string) config.Route { return prefixRoute("/", clusterName, nil) }

	It("maps no route (404) to UNIMPLEMENTED, counted as the 200 it sends", func() {
		srv, url := start(setup{})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "12", "")
		Expect(stat(srv, "http.ingress.downstream_rq_2xx")).To(BeEquivalentTo(1))
		Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeZero())
		Expect(stat(srv, "http.ingress.no_route")).To(BeEquivalentTo(1))
	})

	It("sends an HTTP/2 client the trailers-only reply without content-length, as Envoy's sendLocalReply", func() {
		_, url := start(setup{})
		req, _ := http.NewRequest(http.MethodPost, url+"/pkg.Svc/Call", strings.NewReader(""))
		req.Header.Set("content-type", "application/grpc")
		resp, err := h2cClient().Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		Expect(resp.ProtoMajor).To(Equal(2))
		Expect([]string{resp.Header.Get("grpc-status"), resp.Header.Get("content-type")}).To(Equal([]string{"12", "application/grpc"}))
		Expect(resp.Header).NotTo(HaveKey("Content-Length"))
	})

	It("maps a missing cluster (503) to UNAVAILABLE", func() {
		_, url := start(setup{routes: []config.Route{grpcRoute("nowhere")}})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "")
	})

	It("maps no healthy upstream (503) to UNAVAILABLE, with its body as grpc-message", func() {
		srv, url := start(setup{routes: []config.Route{grpcRoute("backend")}, clusters: []config.Cluster{cluster("backend")}})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "no healthy upstream")
		Expect(stat(srv, "cluster.backend.upstream_cx_none_healthy")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_503")).To(BeEquivalentTo(1), "the cluster is charged the 503")
	})

	It("maps a connection failure (503) to UNAVAILABLE, with the reset reason as grpc-message", func() {
		_, url := start(setup{routes: []config.Route{grpcRoute("backend")}, clusters: []config.Cluster{cluster("backend", closedAddr())}})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "upstream connect error or disconnect/reset before headers. reset reason: "+
			"remote connection failure, transport failure reason: delayed connect error: Connection refused")
	})

	It("maps an upstream reset (503) to UNAVAILABLE", func() {
		u := newUpstream(resetConn)
		_, url := start(setup{routes: []config.Route{grpcRoute("backend")}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "upstream connect error or disconnect/reset before headers. reset reason: connection termination")
	})

	// Envoy's router answers its own timeout with 504 and no gRPC status of its own
	// (Filter::onUpstreamAbort passes none): UNAVAILABLE, not DEADLINE_EXCEEDED.
	It("maps the route timeout (504) to UNAVAILABLE", func() {
		clk := fakeClock()
		u := newUpstream(hang)
		r := grpcRoute("backend")
		r.Action.Timeout = time.Second
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, hdr, body := sendGETHeader(clk, 100*time.Millisecond, url+"/pkg.Greeter/Hello", "content-type", "application/grpc")
		expectTrailersOnly(code, hdr, body, "14", "upstream request timeout")
		Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))
	})

	// The connection manager's max stream duration, which a grpc-timeout sets with
	// grpc_timeout_header_max: ActiveStream::onStreamMaxDurationReached passes DEADLINE_EXCEEDED.
	// (GET: a POST with a body ended by the max stream duration on the real clock leaves its upstream
	// connection open past the proxy's Close — a known issue outside the gRPC code, see the report.)
	It("answers the grpc-timeout's max stream duration with DEADLINE_EXCEEDED", func() {
		clk := fakeClock()
		u := newUpstream(hang)
		r := grpcRoute("backend")
		r.Action.GrpcTimeoutHeaderMax = dur(0)
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		code, hdr, body := sendGETHeader(clk, 100*time.Millisecond, url+"/pkg.Greeter/Hello", "content-type", "application/grpc", "grpc-timeout", "1S")
		expectTrailersOnly(code, hdr, body, "4", "downstream duration timeout")
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
	})

	It("maps a max_requests overflow (503) to UNAVAILABLE, keeping x-envoy-overloaded", func() {
		open := make(chan struct{})
		u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) { <-open })
		c := cluster("backend", u.addr())
		c.Breakers.Default.MaxRequests = 1
		_, url := start(setup{routes: []config.Route{grpcRoute("backend")}, clusters: []config.Cluster{c}})
		first := make(chan int, 1)
		go func() {
			defer GinkgoRecover()
			code, _, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			first <- code
		}()
		Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the one slot")
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		close(open)
		expectTrailersOnly(code, hdr, body, "14", "upstream connect error or disconnect/reset before headers. reset reason: overflow")
		Expect(hdr.Get("x-envoy-overloaded")).To(Equal("true"))
		Expect(<-first).To(Equal(200))
	})

	It("maps a local rate limit (429) to UNAVAILABLE", func() {
		u := newUpstream(ok)
		all := config.Fraction{Numerator: 100, Denominator: 100}
		lr := &config.LocalRateLimit{StatPrefix: "rl", Status: 429, MaxTokens: 1, TokensPerFill: 1, FillInterval: time.Hour, Enabled: all, Enforced: all}
		_, url := start(setup{routes: []config.Route{grpcRoute("backend")}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: func(l *config.Listener) { l.HTTPFilters = []config.HTTPFilter{{LocalRateLimit: lr}} }})
		code, _, _, _ := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		Expect(code).To(Equal(200))
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "local_rate_limited")
		Expect(hdr.Get("x-envoy-ratelimited")).To(Equal("true"))
	})

	DescribeTable("maps a direct_response's status as Grpc::Utility::httpToGrpcStatus",
		func(status int, want string) {
			r := config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: status, Body: "said so"}}
			_, url := start(setup{routes: []config.Route{r}})
			code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			expectTrailersOnly(code, hdr, body, want, "said so")
		},
		Entry("400: INTERNAL", 400, "13"),
		Entry("401: UNAUTHENTICATED", 401, "16"),
		Entry("403: PERMISSION_DENIED", 403, "7"),
		Entry("404: UNIMPLEMENTED", 404, "12"),
		Entry("429: UNAVAILABLE", 429, "14"),
		Entry("500: UNKNOWN", 500, "2"),
		Entry("502: UNAVAILABLE", 502, "14"),
		Entry("503: UNAVAILABLE", 503, "14"),
		Entry("504: UNAVAILABLE", 504, "14"),
		Entry("418: UNKNOWN", 418, "2"),
		Entry("200: UNKNOWN", 200, "2"),
	)

	// Http::Utility::PercentEncoding::encode: bytes below ' ', from '~' up, and '%' become %XX.
	It("percent-encodes grpc-message as Envoy does", func() {
		r := config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 503, Body: "50% off ~ é\tok\n"}}
		_, url := start(setup{routes: []config.Route{r}})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "50%25 off %7E %C3%A9%09ok%0A")
	})

	It("sends no grpc-message to a HEAD request", func() {
		r := config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 503, Body: "said so"}}
		_, url := start(setup{routes: []config.Route{r}})
		code, hdr, _, body := sendGrpc(http.MethodHead, url, "application/grpc", nil)
		expectTrailersOnly(code, hdr, body, "14", "")
	})

	// Regression: application/grpc;… counted as gRPC; Envoy's hasGrpcContentType takes application/grpc
	// alone or followed by "+" only.
	DescribeTable("answers other content types with the plain local reply",
		func(ct string) {
			r := config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 503, Body: "said so"}}
			_, url := start(setup{routes: []config.Route{r}})
			code, hdr, _, body := sendGrpc(http.MethodPost, url, ct, nil)
			Expect(code).To(Equal(503))
			Expect(hdr.Values("grpc-status")).To(BeEmpty())
			Expect(body).To(Equal("said so"))
		},
		Entry("none", ""),
		Entry("application/grpc-web", "application/grpc-web"),
		Entry("application/grpc;charset=utf-8", "application/grpc;charset=utf-8"),
		Entry("application/json", "application/json"),
	)

	It("takes application/grpc+proto as gRPC", func() {
		_, url := start(setup{})
		code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc+proto", nil)
		expectTrailersOnly(code, hdr, body, "12", "")
	})

	// prepareLocalReply rewrites first (LocalReply::rewrite), then makes the gRPC reply of the result:
	// the mapper's status is mapped, its body (formatted) is the message, a grpc-status it adds stays.
	Describe("with local_reply_config", func() {
		str := func(s string) *string { return &s }
		run := func(lr *config.LocalReplyConfig) string {
			_, url := start(setup{listener: func(l *config.Listener) { l.LocalReply = lr }}) // no route: 404
			return url
		}

		It("maps the rewritten status and sends the formatted body as grpc-message", func() {
			url := run(&config.LocalReplyConfig{
				Mappers:    []config.ResponseMapper{{StatusCode: &config.StatusCodeFilter{Op: "EQ", Value: 404}, Status: 401, Body: str("who are you")}},
				BodyFormat: &config.BodyFormat{Text: mustFormat("%LOCAL_REPLY_BODY% (%RESPONSE_CODE%)")},
			})
			code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			expectTrailersOnly(code, hdr, body, "16", "who are you (401)")
		})

		It("drops the final newline of a json_format body", func() {
			url := run(&config.LocalReplyConfig{BodyFormat: &config.BodyFormat{JSON: &config.JSONTemplate{
				Keys: []string{"code"}, Values: map[string]config.JSONValue{"code": {Format: mustFormat("%RESPONSE_CODE%")}}}}})
			code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			expectTrailersOnly(code, hdr, body, "12", `{"code":404}`)
		})

		It("keeps a grpc-status a mapper adds", func() {
			url := run(&config.LocalReplyConfig{Mappers: []config.ResponseMapper{{
				StatusCode: &config.StatusCodeFilter{Op: "EQ", Value: 404},
				Headers:    config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "Grpc-Status", Value: "5", Action: config.OverwriteIfExistsOrAdd}}},
			}}})
			code, hdr, _, body := sendGrpc(http.MethodPost, url, "application/grpc", nil)
			expectTrailersOnly(code, hdr, body, "5", "")
		})
	})
})
