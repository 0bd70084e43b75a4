package proxy_test

import (
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// The HCM's limits on request heads, enforced as Envoy's HTTP/1 codec does (ServerConnectionImpl,
// source/common/http/http1/codec_impl.cc).
var _ = Describe("request head options of the connection manager", func() {
	var (
		u    *upstream
		seen chan http.Header
	)
	BeforeEach(func() {
		seen = make(chan http.Header, 4)
		u = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) { seen <- r.Header.Clone() })
	})
	run := func(tune func(*config.Listener)) (*proxy.Server, string) {
		return start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: tune})
	}

	Describe("headers_with_underscores_action (checkHeaderNameForUnderscores)", func() {
		It("forwards headers with underscores by default (ALLOW)", func() {
			_, url := run(nil)
			got := rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\nx_tenant: a\r\nConnection: close\r\n\r\n", false)
			Expect(got).To(HavePrefix("HTTP/1.1 200 "))
			Expect((<-seen).Get("x_tenant")).To(Equal("a"))
		})

		It("answers REJECT_REQUEST 400 and closes the connection, counting the rejection and a protocol error", func() {
			srv, url := run(func(l *config.Listener) { l.UnderscoresAction = config.UnderscoresRejectRequest })
			got := rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\nx_tenant: a\r\n\r\n", false)
			Expect(got).To(HavePrefix("HTTP/1.1 400 Bad Request\r\n"))
			Expect(strings.ToLower(got)).To(ContainSubstring("connection: close"))
			Expect(u.requests.Load()).To(BeZero())
			Expect(stat(srv, "http1.requests_rejected_with_underscores_in_headers")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_cx_protocol_error")).To(BeEquivalentTo(1))
			Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))
		})

		It("drops each such header under DROP_HEADER, before any filter, and forwards the rest", func() {
			srv, url := run(func(l *config.Listener) { l.UnderscoresAction = config.UnderscoresDropHeader })
			got := rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\nx_tenant: a\r\nx_zone: b\r\nx-kept: c\r\nConnection: close\r\n\r\n", false)
			Expect(got).To(HavePrefix("HTTP/1.1 200 "))
			h := <-seen
			Expect(h.Get("x_tenant") + h.Get("x_zone")).To(BeEmpty())
			Expect(h.Get("x-kept")).To(Equal("c"))
			Expect(stat(srv, "http1.dropped_headers_with_underscores")).To(BeEquivalentTo(2))
		})
	})

	// ActiveStream::onRequestHeaderTimeout (conn_manager_impl.cc): the head must be whole within
	// request_headers_timeout of its first byte, else 408 "request header timeout". (Real time: the
	// server's head timeout is a socket deadline.)
	It("answers 408 request header timeout to a head not whole within request_headers_timeout", func() {
		srv, url := run(func(l *config.Listener) { l.RequestHeadersTimeout = 200 * time.Millisecond })
		began := time.Now()
		got := rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\n", false)
		Expect(time.Since(began)).To(BeNumerically(">=", 200*time.Millisecond))
		Expect(got).To(HavePrefix("HTTP/1.1 408 Request Timeout\r\n"))
		Expect(got).To(HaveSuffix("\r\n\r\nrequest header timeout"))
		Expect(stat(srv, "http.ingress.downstream_rq_header_timeout")).To(BeEquivalentTo(1))
		Expect(u.requests.Load()).To(BeZero())
	})

	// max_request_headers_kb: a head over it gets the codec's 431.
	It("answers 431 to a request head over max_request_headers_kb", func() {
		_, url := run(func(l *config.Listener) { l.MaxRequestHeadersBytes = 1 << 10 })
		got := rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\nx-big: "+strings.Repeat("a", 1100)+"\r\n\r\n", false)
		Expect(got).To(HavePrefix("HTTP/1.1 431 Request Header Fields Too Large"))
		got = rawExchange(url, "GET / HTTP/1.1\r\nHost: x\r\nx-small: "+strings.Repeat("a", 800)+"\r\nConnection: close\r\n\r\n", false)
		Expect(got).To(HavePrefix("HTTP/1.1 200 "))
	})
})
