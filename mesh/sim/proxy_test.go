package sim_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// The proxy model on virtual time, against scripted instances, with outcomes computed by hand from the
// configuration: Hop is 1 ms, so a new connection costs 2 ms (SYN there, answer back), a request
// reaches its instance 1 ms after it is sent and its answer comes back 1 ms after the instance ends.
var _ = Describe("Proxy", func() {
	Context("a request to a healthy instance", func() {
		It("opens a connection, then reuses it, and answers at the exact instants", func() {
			rg := newRig(bootstrap(1, []string{"timeout: 1s"}, nil), 1, ms, always(10*ms, 200))
			rg.send(0, "a")
			rg.send(20*ms, "b")
			rg.en.Run(-1)

			// a: dial 0→2 ms, at the instance at 3 ms, done at 13 ms, back at 14 ms.
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 14 * ms, r: sim.Result{Status: 200, Attempts: 1}}))
			// b: the idle connection: at the instance at 21 ms, back at 32 ms.
			Expect(rg.answerOf("b").at).To(Equal(32 * ms))
			reqs := rg.ups[0].requests()
			Expect(reqs).To(HaveLen(2))
			Expect(reqs[0].at).To(Equal(3 * ms))
			// The route timeout, whole, as the first attempt's expected timeout; then what is left.
			Expect(reqs[0].req.Header).To(HaveKeyWithValue("x-envoy-expected-rq-timeout-ms", "1000"))
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_total", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_total", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_200", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_2xx", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_pending_total", uint64(1)))
			Expect(st).To(HaveKeyWithValue("http.ingress.downstream_rq_total", uint64(2)))
			Expect(st).To(HaveKeyWithValue("http.ingress.downstream_rq_2xx", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_active", uint64(0)))
		})
	})

	Context("retries of a 503", func() {
		It("backs off within Envoy's jittered bounds and answers URX once the retries are spent", func() {
			rg := newRig(bootstrap(1, []string{
				"timeout: 1s",
				"retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.01s, max_interval: 0.1s}}",
			}, nil), 7, ms, always(0, 503))
			rg.send(0, "a")
			rg.en.Run(-1)

			reqs := rg.ups[0].requests()
			Expect(reqs).To(HaveLen(3))
			Expect(reqs[0].at).To(Equal(3 * ms)) // after the dial
			// Each retry leaves when its attempt's answer is back (1 ms after the instance), after a
			// back-off uniform in [0, 10 ms), then [0, 20 ms), whole milliseconds; it reuses the
			// connection, so it reaches the instance 1 ms after it leaves.
			d1 := reqs[1].at - reqs[0].at - 2*ms
			d2 := reqs[2].at - reqs[1].at - 2*ms
			Expect(d1).To(BeNumerically(">=", 0))
			Expect(d1).To(BeNumerically("<", 10*ms))
			Expect(d2).To(BeNumerically(">=", 0))
			Expect(d2).To(BeNumerically("<", 20*ms))
			Expect(d1 % ms).To(BeZero())
			Expect(d2 % ms).To(BeZero())
			// The expected timeout shrinks by the whole milliseconds elapsed.
			Expect(reqs[1].req.Header).To(HaveKeyWithValue("x-envoy-expected-rq-timeout-ms", msString(1000-(reqs[1].at-ms)/ms)))

			a := rg.answerOf("a")
			Expect(a.at).To(Equal(reqs[2].at + ms))
			Expect(a.r).To(Equal(sim.Result{Status: 503, Attempts: 3, Flags: "URX"}))
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.retry.upstream_rq_503", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_503", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry_limit_exceeded", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry_backoff_exponential", uint64(2)))
			Expect(rg.eventsOf("retry")).To(HaveLen(2))
			Expect(rg.eventsOf("retry")[0]).To(Equal(sim.ProxyEvent{At: 4 * ms, Kind: "retry", Cluster: "backend", Host: "backend/0", Reason: "503"}))
		})

		It("counts the retry that succeeded", func() {
			rg := newRig(bootstrap(1, []string{"retry_policy: {retry_on: 5xx, num_retries: 2}"}, nil), 7, ms,
				func(n int, _ *sim.Request) (time.Duration, sim.Result) {
					if n == 1 {
						return 0, sim.Result{Status: 503}
					}
					return 0, sim.Result{Status: 200}
				})
			rg.send(0, "a")
			rg.en.Run(-1)
			Expect(rg.answerOf("a").r).To(Equal(sim.Result{Status: 200, Attempts: 2}))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry_success", uint64(1)))
		})

		It("numbers the attempts in x-envoy-attempt-count when the virtual host asks", func() {
			b := bootstrap(1, []string{"retry_policy: {retry_on: 5xx, num_retries: 1}"}, nil)
			b.Listeners[0].Routes.VirtualHosts[0].IncludeRequestAttemptCount = true
			b.Listeners[0].Routes.VirtualHosts[0].IncludeAttemptCountInResponse = true
			rg := newRig(b, 1, ms, always(0, 503))
			rg.send(0, "a")
			rg.en.Run(-1)
			reqs := rg.ups[0].requests()
			Expect(reqs).To(HaveLen(2))
			Expect(reqs[0].req.Header).To(HaveKeyWithValue("x-envoy-attempt-count", "1"))
			Expect(reqs[1].req.Header).To(HaveKeyWithValue("x-envoy-attempt-count", "2"))
			Expect(rg.answerOf("a").r.Header).To(Equal(map[string]string{"x-envoy-attempt-count": "2"}))
		})

		It("answers the 503 with UO when max_retries is full", func() {
			rg := newRig(bootstrap(1, []string{
				"retry_policy: {retry_on: 5xx, num_retries: 1, retry_back_off: {base_interval: 0.001s, max_interval: 0.001s}}",
			}, []string{"circuit_breakers: {thresholds: [{max_retries: 1}]}"}), 1, ms, always(0, 503))
			rg.send(0, "a")
			rg.send(0, "b")
			rg.en.Run(-1)
			// Both dial (2 ms), both 503s are back at 4 ms: a takes the one retry slot, b overflows.
			Expect(rg.answerOf("b")).To(Equal(proxyAnswer{id: "b", at: 4 * ms, r: sim.Result{Status: 503, Attempts: 1, Flags: "UO"}}))
			// a's retry leaves at once (a 1 ms base and max: a delay in [0, 1 ms)), on an idle connection.
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 6 * ms, r: sim.Result{Status: 503, Attempts: 2, Flags: "URX"}}))
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry_overflow", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_retry", uint64(1)))
		})
	})

	Context("per-try timeouts", func() {
		It("resets each attempt at its timeout and answers 504 after the last, at exact instants", func() {
			rg := newRig(bootstrap(1, []string{
				"timeout: 1s",
				"retry_policy: {retry_on: 5xx, num_retries: 2, per_try_timeout: 0.05s, retry_back_off: {base_interval: 0.001s, max_interval: 0.001s}}",
			}, nil), 1, ms, always(time.Hour, 200))
			rg.send(0, "a")
			rg.en.Run(-1)

			// Attempts at 0, 50 and 100 ms (no back-off), each on a new connection (a reset closes it).
			reqs := rg.ups[0].requests()
			Expect(reqs).To(HaveLen(3))
			Expect([]time.Duration{reqs[0].at, reqs[1].at, reqs[2].at}).To(Equal([]time.Duration{3 * ms, 53 * ms, 103 * ms}))
			for _, r := range reqs {
				Expect(r.req.Header).To(HaveKeyWithValue("x-envoy-expected-rq-timeout-ms", "50"))
			}
			Expect(rg.ups[0].cancelled).To(Equal([]time.Duration{50 * ms, 100 * ms, 150 * ms}))
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 150 * ms, r: sim.Result{Status: 504, Attempts: 3, Flags: "URX,UT"}}))
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_per_try_timeout", uint64(3)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_tx_reset", uint64(3)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_total", uint64(3)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_504", uint64(1)))
			Expect(st).To(HaveKeyWithValue("http.ingress.downstream_rq_5xx", uint64(1)))
		})
	})

	Context("an instance that answers within Serve", func() {
		It("is not cancelled when a timeout ends the attempt while its answer is on the way back", func() {
			rg := newRig(bootstrap(1, []string{"retry_policy: {retry_on: connect-failure, per_try_timeout: 0.0035s}"}, nil), 1, ms,
				always(0, 503))
			rg.ups[0].sync = true
			rg.send(0, "a")
			rg.en.Run(-1)
			// Dial 0→2 ms, at the instance at 3 ms (answered at once), the per-try timeout at 3.5 ms
			// before the answer is back at 4 ms.
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 3500 * time.Microsecond, r: sim.Result{Status: 504, Attempts: 1, Flags: "UT"}}))
			Expect(rg.ups[0].cancelled).To(BeEmpty())
		})
	})

	Context("the route timeout", func() {
		It("answers 504 upstream request timeout at the deadline and resets the attempt", func() {
			rg := newRig(bootstrap(1, []string{"timeout: 0.1s"}, nil), 1, ms, always(time.Second, 200))
			rg.send(0, "a")
			rg.en.Run(-1)
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 100 * ms, r: sim.Result{Status: 504, Attempts: 1, Flags: "UT"}}))
			Expect(rg.ups[0].cancelled).To(Equal([]time.Duration{100 * ms}))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_rq_timeout", uint64(1)))
		})

		It("cuts a back-off short", func() {
			rg := newRig(bootstrap(1, []string{
				"timeout: 0.02s",
				"retry_policy: {retry_on: 5xx, num_retries: 5, retry_back_off: {base_interval: 1s, max_interval: 1s}}",
			}, nil), 3, ms, always(0, 503))
			rg.send(0, "a")
			rg.en.Run(-1)
			// The 503 is back at 4 ms; the back-off, up to 1 s, outlives the 20 ms route timeout unless
			// it drew under 16 ms.
			a := rg.answerOf("a")
			Expect(a.at).To(Equal(20 * ms))
			Expect(a.r.Status).To(Equal(504))
			Expect(a.r.Flags).To(Equal("UT"))
		})
	})

	Context("outlier detection", func() {
		It("ejects at the consecutive_5xx-th 5xx and un-ejects at the first sweep after base_ejection_time", func() {
			rg := newRig(bootstrap(2, nil, []string{
				"outlier_detection: {consecutive_5xx: 3, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100}",
			}), 1, ms, always(0, 503), always(0, 200))
			for i := range 20 {
				rg.send(time.Duration(i)*10*ms, "r"+msString(time.Duration(i)))
			}
			rg.en.Run(45 * time.Second)

			bad := rg.ups[0].requests()
			Expect(bad).To(HaveLen(3)) // round robin until the third 503, then only backend/1
			ejected := rg.eventsOf("ejected")
			Expect(ejected).To(HaveLen(1))
			Expect(ejected[0]).To(Equal(sim.ProxyEvent{At: bad[2].at + ms, Kind: "ejected", Cluster: "backend", Host: "backend/0", Reason: "consecutive_5xx"}))
			// Sweeps every 10 s from the start: the first at least 30 s after the ejection is at 40 s.
			Expect(rg.eventsOf("unejected")).To(Equal([]sim.ProxyEvent{{At: 40 * time.Second, Kind: "unejected", Cluster: "backend", Host: "backend/0", Reason: "ejection_time_elapsed"}}))
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.outlier_detection.ejections_enforced_total", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.outlier_detection.ejections_active", uint64(0)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_503", uint64(3)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_200", uint64(17)))
		})
	})

	Context("circuit breakers", func() {
		It("queues for a connection within max_pending_requests and overflows beyond it", func() {
			rg := newRig(bootstrap(1, nil, []string{
				"circuit_breakers: {thresholds: [{max_connections: 1, max_pending_requests: 2}]}",
			}), 1, ms, always(100*ms, 200))
			rg.send(0, "a")
			rg.send(0, "b")
			rg.send(0, "c")
			rg.en.Run(-1)
			// a waits in the pending queue for the connection it dials; b waits too (no second connection:
			// max_connections); the queue holds 2, a and b: c overflows at once.
			Expect(rg.answerOf("c")).To(Equal(proxyAnswer{id: "c", at: 0, r: sim.Result{Status: 503, ZeroAttempts: true, Flags: "UO",
				Header: map[string]string{"x-envoy-overloaded": "true"}}}))
			Expect(rg.answerOf("a").at).To(Equal(104 * ms)) // dial 2, there 3, done 103, back 104
			Expect(rg.answerOf("b").at).To(Equal(206 * ms)) // a's connection at 104: there 105, done 205, back 206
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_pending_overflow", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_overflow", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_total", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_pending_total", uint64(2)))
		})
	})

	Context("an instance that refuses connections", func() {
		It("answers 503 UF, retried under connect-failure", func() {
			rg := newRig(bootstrap(1, []string{
				"retry_policy: {retry_on: connect-failure, num_retries: 1, retry_back_off: {base_interval: 0.001s, max_interval: 0.001s}}",
			}, nil), 1, ms)
			rg.ups[0].refusing = func() bool { return true }
			rg.send(0, "a")
			rg.en.Run(-1)
			Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 4 * ms, r: sim.Result{Status: 503, Attempts: 2, Flags: "URX,UF"}}))
			Expect(rg.ups[0].served).To(BeEmpty())
			st := rg.p.Stats()
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_connect_fail", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_cx_total", uint64(2)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_503", uint64(1)))
			Expect(st).To(HaveKeyWithValue("cluster.backend.upstream_rq_total", uint64(0)))
		})
	})

	Context("an instance that starts refusing", func() {
		It("fails the next attempt to connect (UF) instead of reusing the closed idle connection", func() {
			refusing := false
			rg := newRig(bootstrap(1, nil, nil), 1, ms, always(0, 200))
			rg.ups[0].refusing = func() bool { return refusing }
			rg.send(0, "a")
			rg.en.At(10*ms, func() { refusing = true })
			rg.send(20*ms, "b")
			rg.en.Run(-1)
			Expect(rg.answerOf("a").r.Status).To(Equal(200))
			Expect(rg.answerOf("b")).To(Equal(proxyAnswer{id: "b", at: 22 * ms, r: sim.Result{Status: 503, Attempts: 1, Flags: "UF"}}))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_cx_connect_fail", uint64(1)))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_cx_active", uint64(0)))
		})
	})

	Context("active health checks", func() {
		It("makes the host healthy on its first check and unhealthy after unhealthy_threshold failures", func() {
			rg := newRig(bootstrap(1, nil, []string{
				"common_lb_config: {healthy_panic_threshold: {value: 0}}",
				"health_checks: [{timeout: 1s, interval: 5s, no_traffic_interval: 5s, unhealthy_threshold: 2, healthy_threshold: 1, http_health_check: {path: /healthz}}]",
			}), 1, ms, func(int, *sim.Request) (time.Duration, sim.Result) { return 0, sim.Result{Status: 200} })
			rg.ups[0].answer = func(_ int, req *sim.Request) (time.Duration, sim.Result) {
				if req.HealthCheck && rg.en.Now() > 12*time.Second {
					return 2 * time.Second, sim.Result{Status: 200} // beyond the check's timeout
				}
				return 0, sim.Result{Status: 200}
			}
			rg.send(0, "before")           // no host is healthy before its first check
			rg.send(time.Second, "during") // healthy
			rg.send(22500*ms, "after")
			rg.en.Run(23 * time.Second)

			// Checks fire at 0 (connect: there at 3 ms, back at 4 ms), then 5 s after each result on the
			// open connection (there 1 ms later, back 2 ms later): results at 4 ms, 5.006 s, 10.008 s;
			// the check fired at 15.008 s times out at 16.008 s (one failure, its connection closed), the
			// next fires at 21.008 s and times out at 22.008 s: the second failure, unhealthy.
			Expect(rg.events).To(Equal([]sim.ProxyEvent{
				{At: 4 * ms, Kind: "healthy", Cluster: "backend", Host: "backend/0", Reason: "first_check"},
				{At: 22*time.Second + 8*ms, Kind: "unhealthy", Cluster: "backend", Host: "backend/0", Reason: "unhealthy_threshold"},
			}))
			Expect(rg.ups[0].served[4].at).To(Equal(15*time.Second + 9*ms))
			Expect(rg.ups[0].served[5].at).To(Equal(21*time.Second + 11*ms)) // a new connection first
			hc := rg.ups[0].served[0]
			Expect(hc.req.HealthCheck).To(BeTrue())
			Expect(hc.req.Path).To(Equal("/healthz"))
			Expect(hc.req.Authority).To(Equal("backend"))
			Expect(rg.answerOf("before").r).To(Equal(sim.Result{Status: 503, ZeroAttempts: true, Flags: "UH"}))
			Expect(rg.answerOf("during").r.Status).To(Equal(200))
			Expect(rg.answerOf("after").r).To(Equal(sim.Result{Status: 503, ZeroAttempts: true, Flags: "UH"}))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("cluster.backend.upstream_cx_none_healthy", uint64(2)))
		})
	})

	Context("determinism", func() {
		run := func(seed uint64) ([]proxyAnswer, [][]served) {
			rg := newRig(bootstrap(3, []string{
				"retry_policy: {retry_on: 5xx, num_retries: 3, retry_back_off: {base_interval: 0.01s, max_interval: 0.2s}}",
			}, []string{"lb_policy: RANDOM"}), seed, ms, always(0, 503), always(2*ms, 200), always(ms, 503))
			for i := range 50 {
				rg.send(time.Duration(i)*3*ms, "r"+msString(time.Duration(i)))
			}
			rg.en.Run(-1)
			var all [][]served
			for _, u := range rg.ups {
				all = append(all, u.served)
			}
			return rg.got, all
		}
		It("gives the same answers, instants and attempts for the same seed, other ones for another", func() {
			a1, s1 := run(42)
			a2, s2 := run(42)
			Expect(a1).To(HaveLen(50))
			Expect(a2).To(Equal(a1))
			Expect(s2).To(Equal(s1))
			a3, _ := run(43)
			Expect(a3).NotTo(Equal(a1))
		})
	})

	Context("routing", func() {
		It("matches routes with the live matchers: the path without its query, then 404 NR", func() {
			b := bootstrap(1, nil, nil)
			b.Listeners[0].Routes.VirtualHosts[0].Routes[0].Match.Prefix = "/api"
			rg := newRig(b, 1, ms)
			for _, path := range []string{"/api/orders?id=1", "/", "/other?x=/api"} {
				rg.en.At(0, func() {
					rg.p.Handle(&sim.Request{ID: path, Method: "GET", Path: path, Authority: "svc"}, func(r sim.Result) {
						rg.got = append(rg.got, proxyAnswer{id: path, at: rg.en.Now(), r: r})
					})
				})
			}
			rg.en.Run(-1)
			Expect(rg.answerOf("/api/orders?id=1").r.Status).To(Equal(200))
			Expect(rg.answerOf("/")).To(Equal(proxyAnswer{id: "/", at: 0, r: sim.Result{Status: 404, Flags: "NR"}}))
			Expect(rg.answerOf("/other?x=/api").r).To(Equal(sim.Result{Status: 404, Flags: "NR"}))
			Expect(rg.ups[0].requests()[0].req.Path).To(Equal("/api/orders?id=1"))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("http.ingress.no_route", uint64(2)))
			Expect(rg.p.Stats()).To(HaveKeyWithValue("http.ingress.downstream_rq_4xx", uint64(2)))
		})
	})
})

func msString(d time.Duration) string { return strconv.FormatInt(int64(d), 10) }

var _ = Describe("Unsupported", func() {
	It("lists nothing for a configuration the model runs", func() {
		Expect(sim.Unsupported(bootstrap(2, []string{
			"timeout: 1s",
			"retry_policy: {retry_on: \"5xx,reset,connect-failure\", num_retries: 2, per_try_timeout: 0.1s}",
		}, []string{
			"lb_policy: LEAST_REQUEST",
			"outlier_detection: {consecutive_5xx: 3}",
			"circuit_breakers: {thresholds: [{max_connections: 10, max_pending_requests: 5}]}",
		}))).To(BeEmpty())
	})

	It("names by field path each configured feature the model would ignore", func() {
		b := bootstrap(1, []string{
			"retry_policy: {retry_on: \"5xx,unavailable\", per_try_idle_timeout: 1s, rate_limited_retry_back_off: {reset_headers: [{name: retry-after}]}}",
			"request_mirror_policies: [{cluster: backend}]",
			"hedge_policy: {hedge_on_per_try_timeout: true}",
		}, nil)
		b.Clusters[0].TLS = &config.TLS{}
		b.Clusters[0].HTTP.IdleTimeout = 30 * time.Second
		b.Clusters[0].HealthCheckHTTP2 = true
		route := "static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[0].routes[0].route"
		Expect(sim.Unsupported(b)).To(ConsistOf(
			route+".hedge_policy: hedging is not simulated",
			route+".request_mirror_policies: mirrors are not simulated",
			route+".retry_policy.rate_limited_retry_back_off: not simulated",
			route+".retry_policy.per_try_idle_timeout: not simulated",
			route+".retry_policy.retry_on: unavailable: gRPC statuses are not simulated",
			"static_resources.clusters[0].transport_socket: TLS is not simulated",
			"static_resources.clusters[0].typed_extension_protocol_options.common_http_protocol_options.idle_timeout: connection idle timeouts are not simulated",
			"static_resources.clusters[0].health_checks.http_health_check.codec_client_type: HTTP/2 health checks are not simulated",
		))
	})
})

// The same requests through the live proxy (proxy.New, on loopback) and through the model, from the
// same bootstrap, seed and proxy name: the load balancer's picks, drawn from each request's stream,
// must be the same host for every request id.
var _ = Describe("fidelity to the live proxy", func() {
	It("picks the same host per request id under RANDOM and LEAST_REQUEST", func() {
		for _, lb := range []string{"RANDOM", "LEAST_REQUEST"} {
			names := make([]string, 3)
			addrs := make([]string, 3)
			for i := range names {
				name := "backend/" + strconv.Itoa(i)
				srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("X-Backend", name)
				}))
				DeferCleanup(srv.Close)
				names[i], addrs[i] = name, srv.Listener.Addr().String()
			}
			b := bootstrap(3, nil, []string{"lb_policy: " + lb})
			for i := range b.Clusters[0].Endpoints {
				b.Clusters[0].Endpoints[i].Address = addrs[i]
			}
			b.Listeners[0].Address = "127.0.0.1:0"
			live, err := proxy.New(b, proxy.Options{Rand: proxy.SeededRand(9, "edge")})
			Expect(err).NotTo(HaveOccurred())
			Expect(live.Start()).To(Succeed())
			DeferCleanup(live.Close)

			var livePicks []string
			for i := range 40 {
				req, err := http.NewRequest("GET", "http://"+live.ListenerAddr("ingress")+"/", nil)
				Expect(err).NotTo(HaveOccurred())
				req.Header.Set("X-Request-Id", "r"+strconv.Itoa(i))
				resp, err := http.DefaultClient.Do(req)
				Expect(err).NotTo(HaveOccurred())
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				livePicks = append(livePicks, resp.Header.Get("X-Backend"))
			}

			Expect(livePicks).To(ContainElements(names)) // the picks vary: the comparison is not vacuous
			rg := newRig(b, 9, ms)
			for i, u := range rg.ups {
				u.name = names[i]
			}
			var simPicks []string
			for i := range 40 { // one at a time, as the live requests went
				rg.send(time.Duration(i)*time.Second, "r"+strconv.Itoa(i))
			}
			rg.en.Run(-1)
			for _, u := range rg.ups {
				Expect(u.requests()).NotTo(BeEmpty())
			}
			for i := range 40 {
				for _, u := range rg.ups {
					for _, s := range u.requests() {
						if s.req.ID == "r"+strconv.Itoa(i) {
							simPicks = append(simPicks, u.name)
						}
					}
				}
			}
			Expect(simPicks).To(Equal(livePicks), lb)
		}
	})
})

var _ = Describe("internal requests", func() {
	// A sidecar as scenarios generate it (trustLocalApp): use_remote_address and loopback internal.
	sidecar := func() *config.Bootstrap {
		b := bootstrap(1, []string{"timeout: 1s"}, nil)
		b.Listeners[0].UseRemoteAddress = true
		b.Listeners[0].InternalAddresses = []netip.Prefix{netip.MustParsePrefix("127.0.0.0/8")}
		return b
	}

	It("honours the app's x-envoy-upstream-rq-timeout-ms, as the live router (deadline propagation)", func() {
		b := sidecar()
		Expect(sim.Unsupported(b)).To(BeEmpty())
		rg := newRig(b, 1, ms, always(time.Second, 200))
		rg.sendWith(0, "a", map[string]string{"x-envoy-upstream-rq-timeout-ms": "50"})
		// With an x-forwarded-for, the request is not internal: the header is removed, 1 s applies.
		rg.sendWith(0, "b", map[string]string{"x-envoy-upstream-rq-timeout-ms": "50", "x-forwarded-for": "10.1.1.1"})
		rg.en.Run(-1)
		Expect(rg.answerOf("a")).To(Equal(proxyAnswer{id: "a", at: 50 * ms, r: sim.Result{Status: 504, Attempts: 1, Flags: "UT"}}))
		Expect(rg.answerOf("b").at).To(Equal(time.Second))
		reqs := rg.ups[0].requests()
		Expect(reqs[0].req.Header).To(Equal(map[string]string{"x-envoy-expected-rq-timeout-ms": "50"}))
		Expect(reqs[1].req.Header).To(Equal(map[string]string{"x-envoy-expected-rq-timeout-ms": "1000", "x-forwarded-for": "10.1.1.1"}))
	})

	It("ignores the router headers of a listener that holds no request internal", func() {
		rg := newRig(bootstrap(1, []string{"timeout: 0.2s"}, nil), 1, ms, always(time.Second, 200))
		rg.sendWith(0, "a", map[string]string{"x-envoy-upstream-rq-timeout-ms": "50"})
		rg.en.Run(-1)
		Expect(rg.answerOf("a").at).To(Equal(200 * ms))
	})
})
