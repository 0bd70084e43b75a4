package proxy_test

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("the router's local replies and timeout header", func() {
	// Envoy's Filter::modify_headers_ (source/common/router/router.cc) sets x-envoy-attempt-count on
	// every response of the router, its local replies included (onUpstreamAbort, a route timeout's 504).
	It("puts x-envoy-attempt-count on a route-timeout 504 when the virtual host asks", func() {
		u := newUpstream(hang)
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout = 100 * time.Millisecond
		_, url := start(setup{routes: []config.Route{r}, vhost: config.VirtualHost{IncludeAttemptCountInResponse: true},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, hdr, body := get(url + "/")
		Expect(code).To(Equal(504))
		Expect(body).To(Equal("upstream request timeout"))
		Expect(hdr.Get("x-envoy-attempt-count")).To(Equal("1"))
	})

	// Filter::onUpstreamAbort (router.cc) writes "retried and the latest " before "reset reason: " once
	// the request was retried (is_retry_).
	DescribeTable("the reset body says whether the request was retried",
		func(rp *config.RetryPolicy, want string) {
			u := newUpstream(resetConn)
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, vhost: config.VirtualHost{IncludeAttemptCountInResponse: true},
				clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(Equal(want))
		},
		Entry("no retry", nil, "upstream connect error or disconnect/reset before headers. reset reason: connection termination"),
		Entry("retried once", retries(1, "reset"),
			"upstream connect error or disconnect/reset before headers. retried and the latest reset reason: connection termination"),
	)

	// FilterUtility::setTimeoutHeaders (router.cc) subtracts the whole milliseconds elapsed since the
	// request started: none on the first attempt, so it carries the configured timeout exactly.
	It("sends the route timeout exactly as x-envoy-expected-rq-timeout-ms on the first attempt", func() {
		got := make(chan string, 1)
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			got <- r.Header.Get("x-envoy-expected-rq-timeout-ms")
		})
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(200))
		Expect(<-got).To(Equal("15000"))
	})

	DescribeTable("x-envoy-expected-rq-timeout-ms (FilterUtility::setTimeoutHeaders)",
		func(elapsed, timeout, perTry time.Duration, want int64) {
			Expect(proxy.ExpectedTimeoutMs(elapsed, timeout, perTry)).To(Equal(want))
		},
		Entry("first attempt: the route timeout", 400*time.Microsecond, 15*time.Second, time.Duration(0), int64(15000)),
		Entry("later: what is left, by whole ms elapsed", 1999*time.Microsecond, 15*time.Second, time.Duration(0), int64(14999)),
		Entry("the per-try timeout when shorter", 0*time.Second, 15*time.Second, 2*time.Second, int64(2000)),
		Entry("what is left when shorter than the per-try timeout", 14*time.Second, 15*time.Second, 2*time.Second, int64(1000)),
		Entry("1 once the route timeout is spent", 16*time.Second, 15*time.Second, 2*time.Second, int64(1)),
		Entry("the per-try timeout without a route timeout", 5*time.Second, time.Duration(0), 2*time.Second, int64(2000)),
		Entry("no header without either", time.Second, time.Duration(0), time.Duration(0), int64(0)),
	)
})
