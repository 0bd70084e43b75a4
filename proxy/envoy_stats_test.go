package proxy_test

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("the stats of retried attempts", func() {
	// Envoy's Router::Filter::onUpstreamHeaders (source/common/router/router.cc): when the retry state
	// retries a response, the router charges its code through CodeStatsImpl::chargeBasicResponseStat
	// with the "retry" prefix (retry.upstream_rq_completed, retry.upstream_rq_<N>xx,
	// retry.upstream_rq_<code>) and returns before chargeUpstreamCode, which counts only the response
	// that goes downstream. upstream_rq_total counts every attempt (the connection pool's
	// attachStreamToClient, source/common/conn_pool/conn_pool_base.cc).
	It("counts a retried 503 under retry.upstream_rq_503 and only the final response under upstream_rq_<code>", func() {
		u := newUpstream(func(n int64, w http.ResponseWriter, _ *http.Request) {
			if n <= 2 {
				w.WriteHeader(503)
				return
			}
			w.WriteHeader(200)
		})
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(2, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(200))
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("cluster.backend.upstream_rq_total", BeEquivalentTo(3)),
			HaveKeyWithValue("cluster.backend.upstream_rq_completed", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_200", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_2xx", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_5xx", BeEquivalentTo(0)),
			Not(HaveKey("cluster.backend.upstream_rq_503")),
			HaveKeyWithValue("cluster.backend.retry.upstream_rq_503", BeEquivalentTo(2)),
			HaveKeyWithValue("cluster.backend.retry.upstream_rq_5xx", BeEquivalentTo(2)),
			HaveKeyWithValue("cluster.backend.retry.upstream_rq_completed", BeEquivalentTo(2)),
			HaveKeyWithValue("cluster.backend.upstream_rq_retry", BeEquivalentTo(2)),
		))
		// Filter::onUpstreamComplete (router.cc) records upstream_rq_time for the response that
		// completes downstream only: once per request, not per attempt.
		var count int64
		for _, h := range srv.Stats().Histograms() {
			if h.Name == "cluster.backend.upstream_rq_time" {
				count = h.Count
			}
		}
		Expect(count).To(BeEquivalentTo(1))
	})

	It("counts the last 503 of an exhausted retry policy under upstream_rq_503, the earlier ones under retry.", func() {
		u := newUpstream(status(503))
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(503))
		Expect(srv.Stats().Values()).To(SatisfyAll(
			HaveKeyWithValue("cluster.backend.upstream_rq_total", BeEquivalentTo(2)),
			HaveKeyWithValue("cluster.backend.upstream_rq_503", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_5xx", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_completed", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.retry.upstream_rq_503", BeEquivalentTo(1)),
			HaveKeyWithValue("cluster.backend.upstream_rq_retry_limit_exceeded", BeEquivalentTo(1)),
		))
	})
})

var _ = Describe("x-envoy-ratelimited", func() {
	// RetryStateImpl::wouldRetryFromHeaders (source/common/router/retry_state_impl.cc): a response
	// carrying x-envoy-ratelimited comes from an upstream Envoy's rate limiter and is retried only under
	// envoy-ratelimited, never under 5xx or retriable-status-codes.
	limited := func(n int64, w http.ResponseWriter, _ *http.Request) {
		if n == 1 {
			w.Header().Set("x-envoy-ratelimited", "true")
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	}
	DescribeTable("is retried only under envoy-ratelimited",
		func(rp *config.RetryPolicy, wantCode int, wantAttempts int64) {
			u := newUpstream(limited)
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(wantCode))
			Expect(u.requests.Load()).To(Equal(wantAttempts))
		},
		Entry("envoy-ratelimited", retries(1, "envoy-ratelimited"), 200, int64(2)),
		Entry("5xx", retries(1, "5xx"), 503, int64(1)),
		Entry("gateway-error", retries(1, "gateway-error"), 503, int64(1)),
		Entry("retriable-status-codes 503", func() *config.RetryPolicy {
			rp := retries(1, "retriable-status-codes")
			rp.RetriableStatusCodes = []int{503}
			return rp
		}(), 503, int64(1)),
	)
})

var _ = Describe("upstream_rq_tx_reset", func() {
	// The router resets an upstream request it gives up on (Filter::onPerTryTimeout,
	// Filter::onResponseTimeout, Filter::onDestroy → UpstreamRequest::resetStream, router.cc): a local
	// reset, which the connection pool counts as upstream_rq_tx_reset (onStreamReset,
	// source/common/http/conn_pool_base.cc); a reset the upstream sends is upstream_rq_rx_reset.
	It("counts the per-try timeout's reset", func() {
		slow := newUpstream(hang)
		rp := retries(0, "connect-failure")
		rp.PerTryTimeout = 50 * time.Millisecond
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", slow.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(504))
		Expect(stat(srv, "cluster.backend.upstream_rq_tx_reset")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeZero())
	})

	It("counts the route timeout's reset", func() {
		slow := newUpstream(hang)
		r := prefixRoute("/", "backend", nil)
		r.Action.Timeout = 50 * time.Millisecond
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", slow.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(504))
		Expect(stat(srv, "cluster.backend.upstream_rq_tx_reset")).To(BeEquivalentTo(1))
	})

	It("counts the reset of an attempt whose client went away", func() {
		slow := newUpstream(hang)
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", slow.addr())}})
		ctx, cancel := context.WithCancel(context.Background())
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		done := make(chan struct{})
		go func() {
			defer GinkgoRecover()
			defer close(done)
			if resp, err := client.Do(req); err == nil {
				resp.Body.Close()
			}
		}()
		Eventually(slow.requests.Load).Should(BeEquivalentTo(1))
		cancel()
		<-done
		Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_tx_reset") }).Should(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeZero())
	})

	It("is not counted for a reset the upstream sends", func() {
		u := newUpstream(resetConn)
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		code, _, _ := get(url + "/")
		Expect(code).To(Equal(503))
		Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_tx_reset")).To(BeZero())
	})
})
