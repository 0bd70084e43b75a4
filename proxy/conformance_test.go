package proxy_test

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// The ten resilience behaviours of Envoy most worth a conformance test (as its architecture overview
// documents them: docs/root/intro/arch_overview/http/http_routing.rst (retries, timeouts),
// upstream/circuit_breaking.rst, upstream/outlier.rst, upstream/load_balancing/panic_threshold.rst,
// upstream/health_checking.rst), each driving the real proxy
// over loopback against misbehaving upstreams and checking responses, headers and stats.
var _ = Describe("Envoy conformance", Label("conformance"), func() {
	outlier := func(mutate func(*policy.OutlierConfig)) *policy.OutlierConfig {
		o := policy.DefaultOutlierConfig()
		o.Interval, o.BaseEjectionTime, o.MaxEjectionTime = time.Hour, time.Hour, 0
		mutate(&o)
		return &o
	}
	with := func(c config.Cluster, mutate func(*config.Cluster)) config.Cluster {
		mutate(&c)
		return c
	}
	concurrently := func(n int, url string) []int {
		codes := make([]int, n)
		var wg sync.WaitGroup
		for i := range n {
			wg.Add(1)
			go func() {
				defer GinkgoRecover()
				defer wg.Done()
				codes[i], _, _ = get(url + "/")
			}()
		}
		wg.Wait()
		return codes
	}
	// gated holds every request until open is closed, then answers code.
	gated := func(open chan struct{}, code int) func(int64, http.ResponseWriter, *http.Request) {
		return func(_ int64, w http.ResponseWriter, r *http.Request) {
			select {
			case <-open:
			case <-r.Context().Done():
			}
			w.WriteHeader(code)
		}
	}
	Describe("1. the retry matrix", func() {
		overloadedUpstream := func(_ int64, w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("x-envoy-overloaded", "true")
			w.WriteHeader(503)
		}
		DescribeTable("attempts = 1 + num_retries when retriable, else 1",
			func(retryOn string, behaviour func(int64, http.ResponseWriter, *http.Request), retried bool) {
				u := newUpstream(behaviour)
				srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(2, strings.Split(retryOn, ",")...))},
					clusters: []config.Cluster{cluster("backend", u.addr())}})
				get(url + "/")
				want := int64(1)
				if retried {
					want = 3
				}
				Expect(u.requests.Load()).To(Equal(want))
				Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(want - 1))
				if retried {
					Expect(stat(srv, "cluster.backend.upstream_rq_retry_limit_exceeded")).To(BeEquivalentTo(1))
				}
			},
			Entry("5xx × 500", "5xx", status(500), true),
			Entry("5xx × 503", "5xx", status(503), true),
			Entry("5xx × 409", "5xx", status(409), false),
			Entry("5xx × reset", "5xx", resetConn, true),
			Entry("5xx × upstream x-envoy-overloaded (retried since 2020)", "5xx", overloadedUpstream, true),
			Entry("gateway-error × 502", "gateway-error", status(502), true),
			Entry("gateway-error × 504", "gateway-error", status(504), true),
			Entry("gateway-error × 500", "gateway-error", status(500), false),
			Entry("gateway-error × reset", "gateway-error", resetConn, true),
			Entry("reset × reset", "reset", resetConn, true),
			Entry("reset × 503", "reset", status(503), false),
			Entry("connect-failure × 503", "connect-failure", status(503), false),
			Entry("connect-failure × reset", "connect-failure", resetConn, false),
			Entry("retriable-4xx × 409", "retriable-4xx", status(409), true),
			Entry("retriable-4xx × 404", "retriable-4xx", status(404), false),
		)

		It("retries only the configured retriable_status_codes under retriable-status-codes", func() {
			u := newUpstream(status(418))
			rp := retries(2, "retriable-status-codes")
			rp.RetriableStatusCodes = []int{418}
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(418))
			Expect(u.requests.Load()).To(BeEquivalentTo(3))
		})

		It("retries responses matching retriable_headers under retriable-headers, and x-envoy-retriable-header-names", func() {
			u := newUpstream(func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("x-try-again", "yes")
				}
			})
			rp := retries(2, "retriable-headers")
			on := "yes"
			rp.RetriableHeaders = []config.HeaderMatcher{{Name: "x-try-again", Exact: &on}}
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, hdr, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Expect(hdr.Get("x-try-again")).To(BeEmpty(), "the client gets the retried answer")
			Expect(u.requests.Load()).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
		})

		It("waits as the reset header says with rate_limited_retry_back_off", func() {
			u := newUpstream(func(n int64, w http.ResponseWriter, _ *http.Request) {
				if n == 1 {
					w.Header().Set("Retry-After", "1")
					w.WriteHeader(503)
				}
			})
			rp := retries(1, "5xx")
			rp.RateLimited = &config.RateLimitedBackOff{ResetHeaders: []policy.ResetHeader{{Name: "Retry-After"}}, MaxInterval: time.Minute}
			clk := fakeClock()
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())},
				opts: proxy.Options{Clock: clk}})
			began := clk.Now()
			codes := make(chan int, 1)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); codes <- code }()
			var code int
			until(clk, 100*time.Millisecond, received(codes, &code))
			Expect(code).To(Equal(200))
			Expect(clk.Since(began)).To(BeNumerically(">=", time.Second), "at least the interval the header gave")
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_backoff_ratelimited")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_backoff_exponential")).To(BeZero())
		})

		It("retries connect failures under connect-failure and 5xx", func() {
			for _, on := range []string{"connect-failure", "5xx"} {
				srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(2, on))}, clusters: []config.Cluster{cluster("backend", closedAddr())}})
				code, _, _ := get(url + "/")
				Expect(code).To(Equal(503))
				Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(BeEquivalentTo(3), on)
			}
		})

		It("never retries a local overflow", func() {
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) { c.Breakers.Default.MaxRequests = 1 })
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(3, "5xx", "reset"))}, clusters: []config.Cluster{c}})
			first := make(chan int, 1)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); first <- code }()
			Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the one slot")
			code, _, _ := get(url + "/")
			close(open)
			Expect([]int{code, <-first}).To(Equal([]int{503, 200}))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
			Expect(u.requests.Load()).To(BeEquivalentTo(1))
		})
	})

	// The router acts on its request headers only on an internal request: the connection manager removes
	// them from the others (ConnectionManagerUtility::cleanInternalHeaders, conn_manager_utility.cc). The
	// client here is on loopback, internal with use_remote_address and an internal_address_config naming it.
	Describe("the router's request headers", func() {
		trustLoopback := func(l *config.Listener) {
			l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
		}
		send := func(url string, hdr map[string]string) int {
			GinkgoHelper()
			req, _ := http.NewRequest("GET", url+"/", nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return resp.StatusCode
		}

		It("retries on x-envoy-retry-on without a retry policy, as often as x-envoy-max-retries says, and never forwards them", func() {
			var seen atomic.Value
			seen.Store("")
			u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Header.Get("x-envoy-retry-on") + r.Header.Get("x-envoy-max-retries"))
				w.WriteHeader(503)
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
				listener: trustLoopback})
			Expect(send(url, map[string]string{"x-envoy-retry-on": "5xx", "x-envoy-max-retries": "3"})).To(Equal(503))
			Expect(u.requests.Load()).To(BeEquivalentTo(4))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(3))
			Expect(seen.Load()).To(BeEmpty())
		})

		It("lets x-envoy-upstream-rq-timeout-ms and x-envoy-upstream-rq-per-try-timeout-ms replace the route's", func() {
			u := newUpstream(hang)
			r := prefixRoute("/", "backend", nil)
			r.Action.Timeout = 10 * time.Second
			srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())}, listener: trustLoopback})
			began := time.Now()
			Expect(send(url, map[string]string{"x-envoy-upstream-rq-timeout-ms": "100"})).To(Equal(504))
			Expect(time.Since(began)).To(BeNumerically("<", 5*time.Second))
			Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))

			Expect(send(url, map[string]string{"x-envoy-retry-on": "reset", "x-envoy-max-retries": "1",
				"x-envoy-upstream-rq-per-try-timeout-ms": "50"})).To(Equal(504))
			Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(BeEquivalentTo(2))
		})
	})

	Describe("2. the timeout budget", func() {
		It("spans every attempt and back-off with the route timeout: 504, never retried, counters apart", func() {
			u := newUpstream(hang)
			r := prefixRoute("/", "backend", retries(10, "5xx"))
			r.Action.RetryPolicy.PerTryTimeout = 60 * time.Millisecond
			r.Action.Timeout = 250 * time.Millisecond
			srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(504))
			Expect(body).To(Equal("upstream request timeout"))
			Expect(u.requests.Load()).To(BeNumerically("<=", 5), "250ms holds at most five 60ms tries, back-off included")
			Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))
			// Every attempt but possibly the last ended by its per-try timeout; the route timeout ended the rest.
			Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(And(
				BeNumerically(">=", u.requests.Load()-1), BeNumerically("<=", u.requests.Load())))
		})
	})

	Describe("3. back-off", func() {
		It("spaces four retries within the sum of their bounds (25+50+100+200 ms)", func() {
			u := newUpstream(status(503))
			rp := retries(4, "5xx")
			rp.BaseInterval, rp.MaxInterval = 25*time.Millisecond, 250*time.Millisecond
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			began := time.Now()
			get(url + "/")
			Expect(time.Since(began)).To(BeNumerically("<", 375*time.Millisecond+time.Second), "generous slack for a loaded machine")
			Expect(stat(srv, "cluster.backend.upstream_rq_retry_backoff_exponential")).To(BeEquivalentTo(4))
		})
	})

	Describe("4. the retry circuit breaker", func() {
		It("never lets concurrent retries exceed max_retries; overflow returns the original error", func() {
			// The eight first tries are answered 503 together; the one retry that gets the max_retries
			// slot then holds it at a second gate, so the other seven overflow whatever the machine's speed.
			firsts, retried := make(chan struct{}), make(chan struct{})
			u := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
				gate := firsts
				if n > 8 {
					gate = retried
				}
				select {
				case <-gate:
				case <-r.Context().Done():
				}
				w.WriteHeader(503)
			})
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) { c.Breakers.Default.MaxRetries = 1 })
			rp := retries(1, "5xx")
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{c}})
			done := make(chan []int)
			go func() { defer GinkgoRecover(); done <- concurrently(8, url) }()
			Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(8))
			close(firsts)
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_retry_overflow") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(7))
			close(retried)
			Expect(<-done).To(HaveEach(503))
			Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
			Expect(u.requests.Load()).To(BeEquivalentTo(9))
		})

		It("sizes a retry budget as max(budget% × (active + pending), min_retry_concurrency)", func() {
			Expect(policy.RetryBudgetLimit(policy.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}, 40, 10)).To(BeEquivalentTo(10))
			Expect(policy.RetryBudgetLimit(policy.RetryBudget{BudgetPercent: 20, MinRetryConcurrency: 3}, 5, 0)).To(BeEquivalentTo(3))
		})
	})

	Describe("5. request breakers", func() {
		It("answers max_requests overflow with 503, x-envoy-overloaded and upstream_rq_pending_overflow, and no outlier signal", func() {
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxRequests = 1
				c.Outlier = outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.MaxEjectionPercent = 1, 100 })
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			first := make(chan int, 1)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); first <- code }()
			Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the one slot")
			code, hdr, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(hdr.Get("x-envoy-overloaded")).To(Equal("true"))
			Expect(body).To(HaveSuffix("reset reason: overflow"))
			close(open)
			Expect(<-first).To(Equal(200))
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_overflow")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_503")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_total")).To(BeZero())
			Expect(stat(srv, "cluster.backend.circuit_breakers.default.rq_open")).To(BeZero(), "closed again once the request ended")
		})

		It("publishes circuit_breakers.default.*_open while a limit is reached, and remaining_* with track_remaining", func() {
			release := make(chan struct{})
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) { <-release })
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxRequests = 1
				c.Breakers.TrackRemaining = true
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			done := make(chan struct{})
			go func() { defer GinkgoRecover(); get(url + "/"); close(done) }()
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.rq_open") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.circuit_breakers.default.remaining_rq")).To(BeZero())
			close(release)
			Eventually(done).WithTimeout(5 * time.Second).Should(BeClosed())
			Expect(stat(srv, "cluster.backend.circuit_breakers.default.remaining_rq")).To(BeEquivalentTo(1))
		})

		// ConnPoolImplBase::newStreamImpl and attachStreamToClient (conn_pool_base.cc): a request waits
		// for a connection in the pending queue, and takes a max_requests slot only once attached.
		It("lets a request over max_requests wait in the pending queue when connections are at their limit", func() {
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxConnections, c.Breakers.Default.MaxRequests = 1, 1
				c.Breakers.TrackRemaining = true
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			codes := make(chan int, 2)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); codes <- code }()
			Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the connection and the request slot")
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); codes <- code }()
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_pending_active") }).WithTimeout(5*time.Second).
				Should(BeEquivalentTo(1), "the second waits in the pending queue")
			// The gauges follow the queue's counters, not in the same instant: poll them too.
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.remaining_pending") }).WithTimeout(5 * time.Second).
				Should(BeEquivalentTo(1023))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.remaining_rq") }).WithTimeout(5 * time.Second).
				Should(BeZero())
			close(open)
			Expect([]int{<-codes, <-codes}).To(HaveEach(200))
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_overflow")).To(BeZero())
			// Both waited: the first for its new connection to be established, the second at the limit.
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_total")).To(BeEquivalentTo(2))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.remaining_rq") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.remaining_pending") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1024))
		})

		It("queues beyond max_connections, and with max_pending_requests 0 rejects every request that finds no idle connection", func() {
			// Each phase holds its first request at a gate, so that the others meet the limit whatever
			// the machine's speed (a 150 ms upstream made them overlap only on a fast one).
			background := func(url string, codes chan<- int) {
				go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); codes <- code }()
			}
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			queued := with(cluster("backend", u.addr()), func(c *config.Cluster) { c.Breakers.Default.MaxConnections = 1 })
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{queued}})
			codes := make(chan int, 3)
			background(url, codes)
			Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the one connection")
			background(url, codes)
			background(url, codes)
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_pending_active") }).WithTimeout(5*time.Second).
				Should(BeEquivalentTo(2), "the others wait in the pending queue")
			close(open)
			Expect([]int{<-codes, <-codes, <-codes}).To(HaveEach(200))
			// The first waited for its new connection, the others at the limit (conn_pool_base.cc,
			// newStreamImpl: every request without a ready connection is pending).
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_total")).To(BeEquivalentTo(3))
			Expect(stat(srv, "cluster.backend.upstream_cx_overflow")).To(BeEquivalentTo(2))
			Expect(u.conns.Load()).To(BeEquivalentTo(1), "the queued requests were served on the one connection")

			open = make(chan struct{})
			u = newUpstream(gated(open, 200))
			noQueue := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxConnections, c.Breakers.Default.MaxPendingRequests = 1, 0
			})
			srv, url = start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{noQueue}})
			// Envoy's newStreamImpl (conn_pool_base.cc) queues a request that finds no ready connection
			// before it opens one for it: with no room in the queue, even the first request, whose
			// connection would have to be opened, overflows, and no connection is ever opened.
			close(open)
			for range 2 {
				code, hdr, body := get(url + "/")
				Expect(code).To(Equal(503))
				Expect(hdr.Get("x-envoy-overloaded")).To(Equal("true"))
				Expect(body).To(HaveSuffix("reset reason: overflow"))
			}
			Expect(u.requests.Load()).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_overflow")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(BeZero())
		})
	})

	// max_connections counts the cluster's open upstream connections, idle keep-alive ones included, as
	// Envoy's connection pools do (source/common/conn_pool/conn_pool_base.cc: an ActiveClient holds its
	// connections() slot from its dial to its close; tryCreateNewConnection asks for one, counting
	// upstream_cx_overflow when the cluster is at its limit, and opens one anyway for a host that has
	// none; newStreamImpl queues every request that finds no ready connection).
	Describe("5b. connection breakers", func() {
		It("counts a request waiting for its new connection as pending, and none once the connection is idle", func() {
			u := newUpstream(ok)
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
			for range 3 {
				code, _, _ := get(url + "/")
				Expect(code).To(Equal(200))
			}
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_total")).To(BeEquivalentTo(1), "only the first waited for a connection")
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_active")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(3))
		})

		It("holds an idle keep-alive connection's slot: cx_open stays set and remaining_cx 0 with no request in flight", func() {
			u := newUpstream(ok)
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxConnections = 1
				c.Breakers.TrackRemaining = true
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(200))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_active") }).WithTimeout(5 * time.Second).Should(BeZero())
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.cx_open") }).WithTimeout(5*time.Second).
				Should(BeEquivalentTo(1), "the idle connection holds the one slot")
			Expect(stat(srv, "cluster.backend.circuit_breakers.default.remaining_cx")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_cx_active")).To(BeEquivalentTo(1))
			code, _, _ = get(url + "/")
			Expect(code).To(Equal(200), "the next request takes the idle connection")
			Expect(stat(srv, "cluster.backend.upstream_cx_overflow")).To(BeZero())
			Expect(u.conns.Load()).To(BeEquivalentTo(1))
		})

		It("opens a connection to a host that has none even when the other hosts' idle connections fill max_connections", func() {
			a, b := newUpstream(ok), newUpstream(ok)
			c := with(cluster("backend", a.addr(), b.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxConnections = 1
				c.Breakers.TrackRemaining = true
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			for range 4 { // round robin: a, b, a, b
				code, _, _ := get(url + "/")
				Expect(code).To(Equal(200))
			}
			Expect(a.conns.Load()).To(BeEquivalentTo(1))
			Expect(b.conns.Load()).To(BeEquivalentTo(1), "b's request was not left waiting behind a's idle connection")
			Expect(stat(srv, "cluster.backend.upstream_cx_overflow")).To(BeEquivalentTo(1), "counted when b's connection was opened past the limit")
			Expect(stat(srv, "cluster.backend.upstream_cx_active")).To(BeEquivalentTo(2))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.cx_open") }).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.circuit_breakers.default.remaining_cx")).To(BeZero())
		})

		It("serves a request queued behind a busy connection on that connection once it is free, never on a second one", func() {
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) { c.Breakers.Default.MaxConnections = 1 })
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			codes := make(chan int, 2)
			for range 2 {
				go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); codes <- code }()
			}
			Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_cx_overflow") }).WithTimeout(5*time.Second).
				Should(BeEquivalentTo(1), "the second request finds the one connection busy and none may be opened")
			Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_active")).To(BeEquivalentTo(1))
			close(open)
			Expect([]int{<-codes, <-codes}).To(HaveEach(200))
			Expect(u.conns.Load()).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_total")).To(BeEquivalentTo(2))
		})

		// Filter::onResponseTimeout (router.cc) cancels a request still waiting in the pool: it was never
		// attached, so it reaches no host and no outlier detector.
		It("answers the route timeout of a request still waiting for a connection, with no outlier signal", func() {
			open := make(chan struct{})
			u := newUpstream(gated(open, 200))
			c := with(cluster("backend", u.addr()), func(c *config.Cluster) {
				c.Breakers.Default.MaxConnections = 1
				c.Outlier = outlier(func(o *policy.OutlierConfig) { o.ConsecutiveGatewayFailure, o.MaxEjectionPercent = 1, 100 })
			})
			short := prefixRoute("/", "backend", nil)
			short.Action.Timeout = 300 * time.Millisecond
			srv, url := start(setup{routes: []config.Route{prefixRoute("/held", "backend", nil), short}, clusters: []config.Cluster{c}})
			first := make(chan int, 1)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/held"); first <- code }()
			Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			code, _, body := get(url + "/")
			Expect(code).To(Equal(504))
			Expect(body).To(Equal("upstream request timeout"))
			close(open)
			Expect(<-first).To(Equal(200))
			Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(1), "the waiting request was never sent")
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_total")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_active")).To(BeZero())
		})

		It("fails every request waiting for a host's connection when its dial fails, as a connect failure", func() {
			c := with(cluster("backend", closedAddr()), func(c *config.Cluster) { c.Breakers.Default.MaxConnections = 1 })
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(HaveSuffix("reset reason: remote connection failure, transport failure reason: delayed connect error: Connection refused"))
			Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_pending_total")).To(BeEquivalentTo(1))
			Eventually(func() uint64 { return stat(srv, "cluster.backend.circuit_breakers.default.cx_open") }).WithTimeout(5*time.Second).
				Should(BeZero(), "the failed dial gave its slot back")
			code, _, _ = get(url + "/")
			Expect(code).To(Equal(503))
			Expect(stat(srv, "cluster.backend.upstream_cx_overflow")).To(BeZero())
		})
	})

	Describe("6. consecutive_5xx", func() {
		twoHosts := func(bad func(int64, http.ResponseWriter, *http.Request), o *policy.OutlierConfig) (*proxy.Server, string, *upstream, *upstream) {
			b, g := newUpstream(bad), newUpstream(ok)
			c := with(cluster("backend", b.addr(), g.addr()), func(c *config.Cluster) { c.Outlier = o })
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			return srv, url, b, g
		}

		It("ejects after N consecutive 5xx, inline, and sends the traffic elsewhere", func() {
			srv, url, bad, good := twoHosts(status(503), outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.MaxEjectionPercent = 3, 50 }))
			for range 10 {
				get(url + "/")
			}
			Expect(bad.requests.Load()).To(BeEquivalentTo(3))
			Expect(good.requests.Load()).To(BeEquivalentTo(7))
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(1))
			_, _, body := get("http://" + srv.AdminAddr() + "/clusters")
			Expect(body).To(ContainSubstring(bad.addr() + "::health_flags::/failed_outlier_check"))
		})

		It("counts resets as 5xx in non-split mode, and a success resets the count", func() {
			srv, url, _, _ := twoHosts(func(n int64, w http.ResponseWriter, r *http.Request) {
				if n%3 == 0 {
					return // every third answer succeeds
				}
				resetConn(n, w, r)
			}, outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.MaxEjectionPercent = 3, 50 }))
			for range 30 {
				get(url + "/")
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_total")).To(BeZero())
		})

		It("detects but does not enforce consecutive gateway failures by default", func() {
			srv, url, bad, _ := twoHosts(status(502), outlier(func(o *policy.OutlierConfig) {
				o.Consecutive5xx, o.ConsecutiveGatewayFailure, o.MaxEjectionPercent = 100, 3, 50
			}))
			for range 8 {
				get(url + "/")
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_detected_consecutive_gateway_failure")).To(BeNumerically(">=", 1))
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_consecutive_gateway_failure")).To(BeZero())
			Expect(bad.requests.Load()).To(BeEquivalentTo(4), "not ejected: it keeps its round-robin share")
		})
	})

	Describe("7. ejection timing", func() {
		It("un-ejects only at an interval sweep once base_ejection_time has passed", func() {
			var failing atomic.Bool
			failing.Store(true)
			b := newUpstream(func(n int64, w http.ResponseWriter, r *http.Request) {
				if failing.Load() {
					w.WriteHeader(503)
				}
			})
			g := newUpstream(ok)
			c := with(cluster("backend", b.addr(), g.addr()), func(c *config.Cluster) {
				c.Outlier = outlier(func(o *policy.OutlierConfig) {
					o.Consecutive5xx, o.MaxEjectionPercent = 2, 50
					o.Interval, o.BaseEjectionTime = 100*time.Millisecond, 300*time.Millisecond
				})
			})
			var events []proxy.Event
			var mu sync.Mutex
			clk := fakeClock()
			began := clk.Now()
			cfg := &config.Bootstrap{Listeners: []config.Listener{{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress",
				Routes: config.RouteConfig{VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"}, Routes: []config.Route{prefixRoute("/", "backend", nil)}}}}}},
				Clusters: []config.Cluster{c}}
			srv, err := proxy.New(cfg, proxy.Options{Clock: clk, OnEvent: func(e proxy.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
			Expect(err).NotTo(HaveOccurred())
			Expect(srv.Start()).To(Succeed())
			DeferCleanup(srv.Close)
			url := "http://" + srv.ListenerAddr("edge")
			for range 4 {
				get(url + "/")
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(1))
			failing.Store(false)
			// The clock moves a sweep interval at a time until the host is back.
			until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.outlier_detection.ejections_active") == 0 })
			mu.Lock()
			defer mu.Unlock()
			Expect(events).To(HaveLen(2))
			Expect(events[0]).To(And(HaveField("Kind", "ejected"), HaveField("Reason", "consecutive_5xx"), HaveField("Host", b.addr())))
			Expect(events[0].Time).To(Equal(began), "ejected inline, before the clock moved")
			Expect(events[1]).To(And(HaveField("Kind", "unejected"), HaveField("Reason", "ejection_time_elapsed")))
			Expect(events[1].Time.Sub(events[0].Time)).To(BeNumerically(">=", 300*time.Millisecond))
			Expect(events[1].Time.Sub(began)%(100*time.Millisecond)).To(BeZero(), "at a sweep, on the interval's grid")
		})
	})

	Describe("8. max_ejection_percent", func() {
		It("applies the strict (active+1)/total rule and counts ejections_overflow", func() {
			var addrs []string
			for range 4 {
				addrs = append(addrs, newUpstream(status(503)).addr())
			}
			c := with(cluster("backend", addrs...), func(c *config.Cluster) {
				c.Outlier = outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.MaxEjectionPercent = 1, 50 })
				c.HealthyPanicThreshold = 0
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			for range 12 {
				get(url + "/")
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_overflow")).To(BeNumerically(">=", 1))
		})

		It("ejects nothing from a small cluster at the default 10%, unless always_eject_one_host", func() {
			for _, always := range []bool{false, true} {
				c := with(cluster("backend", newUpstream(status(503)).addr(), newUpstream(ok).addr()), func(c *config.Cluster) {
					c.Outlier = outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.AlwaysEjectOneHost = 1, always })
				})
				srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
				for range 6 {
					get(url + "/")
				}
				want := uint64(0)
				if always {
					want = 1
				}
				Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(Equal(want), "always_eject_one_host=%t", always)
			}
		})
	})

	Describe("9. success rate", func() {
		It("ejects the host below mean − 1.9σ at the sweep", func() {
			var addrs []string
			var bad *upstream
			for i := range 5 {
				u := newUpstream(ok)
				if i == 0 {
					u.handle = func(n int64, w http.ResponseWriter, _ *http.Request) {
						if n%2 == 0 {
							w.WriteHeader(503) // half its requests fail: SR 50 against {100 ×4} → threshold 52
						}
					}
					bad = u
				}
				addrs = append(addrs, u.addr())
			}
			c := with(cluster("backend", addrs...), func(c *config.Cluster) {
				c.Outlier = outlier(func(o *policy.OutlierConfig) {
					o.Consecutive5xx, o.Interval, o.MaxEjectionPercent = 1000, 200*time.Millisecond, 50
					o.SuccessRateRequestVolume = 10
				})
			})
			clk := fakeClock()
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
			for range 100 { // 20 a host within the first interval: above success_rate_request_volume
				get(url + "/")
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_success_rate")).To(BeZero(), "decided at the sweep, not inline")
			clk.Step(200 * time.Millisecond)
			Eventually(func() uint64 { return stat(srv, "cluster.backend.outlier_detection.ejections_enforced_success_rate") }).
				WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			_, _, body := get("http://" + srv.AdminAddr() + "/clusters")
			Expect(body).To(ContainSubstring(bad.addr() + "::health_flags::/failed_outlier_check"))
		})
	})

	Describe("10. the panic threshold", func() {
		allEjected := func(panic float64) (*proxy.Server, string) {
			c := with(cluster("backend", newUpstream(status(503)).addr(), newUpstream(status(503)).addr()), func(c *config.Cluster) {
				c.Outlier = outlier(func(o *policy.OutlierConfig) { o.Consecutive5xx, o.MaxEjectionPercent = 1, 100 })
				c.HealthyPanicThreshold = panic
			})
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			get(url + "/")
			get(url + "/")
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(2))
			return srv, url
		}

		It("sends traffic to ejected hosts again below 50% healthy, counting lb_healthy_panic", func() {
			srv, url := allEjected(50)
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(503), "the ejected host answered")
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(3))
			Expect(stat(srv, "cluster.backend.lb_healthy_panic")).To(BeNumerically(">=", 1))
		})

		It("answers 503 'no healthy upstream' when the threshold is 0", func() {
			srv, url := allEjected(0)
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(Equal("no healthy upstream"))
			Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeEquivalentTo(2))
			Expect(stat(srv, "cluster.backend.upstream_cx_none_healthy")).To(BeEquivalentTo(1))
		})
	})

	Describe("active health checking", func() {
		It("takes a host failing its checks out, flags it /failed_active_hc, and brings it back", func() {
			var sick atomic.Bool
			sick.Store(true)
			checked := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/healthz" && sick.Load() {
					w.WriteHeader(503)
				}
			})
			other := newUpstream(ok)
			c := with(cluster("backend", checked.addr(), other.addr()), func(c *config.Cluster) {
				// A timeout far beyond the steps: no check outlives it however slowly the machine answers.
				c.HealthChecks = []policy.HealthCheckConfig{{Timeout: time.Hour, Interval: 50 * time.Millisecond,
					UnhealthyThreshold: 2, HealthyThreshold: 2, Path: "/healthz", NoTrafficInterval: 50 * time.Millisecond}}
			})
			clk := fakeClock()
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
			admin := "http://" + srv.AdminAddr() + "/clusters"
			flags := func() string { _, _, b := get(admin); return b }
			// Hosts start unhealthy until their first check passes: the other one comes up, the sick one stays out.
			until(clk, 10*time.Millisecond, func() bool {
				return stat(srv, "cluster.backend.health_check.healthy") == 1 && stat(srv, "cluster.backend.health_check.failure") >= 2
			})
			Expect(flags()).To(ContainSubstring(checked.addr() + "::health_flags::/failed_active_hc"))
			before := checked.requests.Load()
			for range 6 {
				code, _, _ := get(url + "/")
				Expect(code).To(Equal(200))
			}
			Expect(checked.requests.Load()-before).To(BeNumerically("<=", 2), "only health checks reach the sick host")
			sick.Store(false)
			until(clk, 10*time.Millisecond, func() bool { return strings.Contains(flags(), checked.addr()+"::health_flags::healthy") })
			Expect(stat(srv, "cluster.backend.health_check.failure")).To(BeNumerically(">=", 1))
		})
	})

	Describe("/clusters health_flags", func() {
		It("lists a host's flags in Envoy's flag order: /failed_active_hc before /failed_outlier_check", func() {
			// Regression (#17 review): /failed_outlier_check came first; Envoy's
			// HostUtility::healthFlagsToString (source/common/upstream/host_utility.cc) follows the
			// HealthFlag enum: FAILED_ACTIVE_HC, FAILED_OUTLIER_CHECK, …, PENDING_DYNAMIC_REMOVAL.
			var sick atomic.Bool
			bad := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/healthz" || sick.Load() {
					w.WriteHeader(503)
				}
			})
			good := newUpstream(ok)
			c := with(cluster("backend", bad.addr(), good.addr()), func(c *config.Cluster) {
				c.HealthChecks = []policy.HealthCheckConfig{{Timeout: time.Hour, Interval: 50 * time.Millisecond,
					UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz", NoTrafficInterval: 50 * time.Millisecond}}
				o := policy.DefaultOutlierConfig()
				o.Interval, o.BaseEjectionTime, o.MaxEjectionTime = time.Hour, time.Hour, 0
				o.Consecutive5xx, o.MaxEjectionPercent = 1, 100
				c.Outlier = &o
			})
			clk := fakeClock()
			srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
			until(clk, 10*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.healthy") == 2 })
			for range 4 {
				if stat(srv, "cluster.backend.outlier_detection.ejections_active") == 1 {
					break
				}
				get(url + "/") // round robin: bad answers one of two, 503, and is ejected at once
			}
			Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(1))
			sick.Store(true)
			until(clk, 10*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.healthy") == 1 })
			_, _, body := get("http://" + srv.AdminAddr() + "/clusters")
			Expect(body).To(ContainSubstring(bad.addr() + "::health_flags::/failed_active_hc/failed_outlier_check\n"))
		})
	})

	Describe("load balancing", func() {
		It("honours endpoint weights in round robin", func() {
			a, b := newUpstream(ok), newUpstream(ok)
			c := cluster("backend", a.addr(), b.addr())
			c.Endpoints[0].Weight = 3
			_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}})
			for range 40 {
				get(url + "/")
			}
			Expect(a.requests.Load()).To(BeEquivalentTo(30))
			Expect(b.requests.Load()).To(BeEquivalentTo(10))
		})

		It("sends one key to one host with RING_HASH on a hash_policy header", func() {
			var us []*upstream
			var addrs []string
			for range 3 {
				u := newUpstream(ok)
				us = append(us, u)
				addrs = append(addrs, u.addr())
			}
			c := with(cluster("backend", addrs...), func(c *config.Cluster) { c.LbPolicy = "RING_HASH" })
			r := prefixRoute("/", "backend", nil)
			r.Action.HashHeaders = []string{"x-user"}
			_, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{c}})
			for range 20 {
				req, _ := http.NewRequest("GET", url+"/", nil)
				req.Header.Set("x-user", "alice")
				resp, err := client.Do(req)
				Expect(err).NotTo(HaveOccurred())
				resp.Body.Close()
			}
			var hit int
			for _, u := range us {
				if u.requests.Load() > 0 {
					hit++
					Expect(u.requests.Load()).To(BeEquivalentTo(20))
				}
			}
			Expect(hit).To(Equal(1))
		})
	})

	It("sees an unreachable address as a connect failure, not a reset", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		addr := ln.Addr().String()
		ln.Close()
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", addr)}})
		get(url + "/")
		Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeZero())
	})
})
