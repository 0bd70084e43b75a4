package proxy_test

import (
	"context"
	"net/http"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

var _ = Describe("The proxy's randomness (Options.Rand)", func() {
	// backoffs runs the requests, in this order, through a proxy whose one host always answers 503 and
	// whose route retries twice, and returns each request's back-off delays (ms) from its retry events.
	backoffs := func(src func() proxy.Options, ids []string) map[string][]float64 {
		GinkgoHelper()
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		DeferCleanup(func() { _ = tp.Shutdown(context.Background()) })
		opts := src()
		opts.TracerProvider = tp
		rp := retries(2, "5xx")
		rp.BaseInterval, rp.MaxInterval = 10*time.Millisecond, 100*time.Millisecond // draws in [0, 10) and [0, 20) ms
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)},
			clusters: []config.Cluster{cluster("backend", newUpstream(status(503)).addr())}, opts: opts})
		for _, id := range ids {
			req, _ := http.NewRequest("GET", url+"/", nil)
			req.Header.Set("x-request-id", id)
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(503))
		}
		got := map[string][]float64{}
		for _, sp := range exp.GetSpans() {
			var id string
			for _, a := range sp.Attributes {
				if a.Key == proxy.AttrRequestID {
					id = a.Value.AsString()
				}
			}
			for _, e := range sp.Events {
				if e.Name != proxy.EventRetry {
					continue
				}
				for _, a := range e.Attributes {
					if a.Key == proxy.AttrDelay {
						got[id] = append(got[id], a.Value.AsFloat64())
					}
				}
			}
		}
		Expect(got).To(HaveLen(len(ids)))
		return got
	}
	ids := []string{"mp-1", "mp-2", "mp-3", "mp-4", "mp-5", "mp-6"}
	reversed := []string{"mp-6", "mp-5", "mp-4", "mp-3", "mp-2", "mp-1"}
	seeded := func(seed uint64) func() proxy.Options {
		return func() proxy.Options { return proxy.Options{Rand: proxy.SeededRand(seed, "edge")} }
	}

	It("draws the same back-offs for a request id from the same seed, whatever order the requests come in", func() {
		first := backoffs(seeded(7), ids)
		Expect(backoffs(seeded(7), reversed)).To(Equal(first))
		Expect(backoffs(seeded(8), ids)).NotTo(Equal(first), "another seed, other draws")
	})

	It("draws at random without a source", func() {
		unseeded := func() proxy.Options { return proxy.Options{} }
		Expect(backoffs(unseeded, ids)).NotTo(Equal(backoffs(unseeded, ids)))
	})
})

var _ = Describe("The proxy's clock (Options.Clock)", func() {
	// send runs a GET in the background and steps clk by d until it is answered.
	send := func(clk *clock.Fake, d time.Duration, url string, hdr map[string]string) int {
		GinkgoHelper()
		codes := make(chan int, 1)
		go func() {
			defer GinkgoRecover()
			req, _ := http.NewRequest("GET", url+"/", nil)
			for k, v := range hdr {
				req.Header.Set(k, v)
			}
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			codes <- resp.StatusCode
		}()
		var code int
		until(clk, d, received(codes, &code))
		return code
	}

	It("ends a request at the route timeout on its clock: 504, counted, never retried", func() {
		u := newUpstream(hang)
		r := prefixRoute("/", "backend", retries(3, "5xx"))
		r.Action.Timeout = 2 * time.Second
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{r}, clusters: []config.Cluster{cluster("backend", u.addr())}, opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		Expect(send(clk, 100*time.Millisecond, url, nil)).To(Equal(504))
		Expect(clk.Since(began)).To(BeNumerically(">=", 2*time.Second))
		Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeEquivalentTo(1))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
	})

	It("retries a per-try timeout on its clock, within the route timeout", func() {
		u := newUpstream(hang)
		rp := retries(2, "5xx")
		rp.PerTryTimeout = time.Second
		clk := fakeClock()
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		Expect(send(clk, 100*time.Millisecond, url, nil)).To(Equal(504))
		Expect(clk.Since(began)).To(BeNumerically(">=", 3*time.Second), "three tries of a second each")
		Expect(stat(srv, "cluster.backend.upstream_rq_per_try_timeout")).To(BeEquivalentTo(3))
		Expect(stat(srv, "cluster.backend.upstream_rq_timeout")).To(BeZero())
	})

	It("times a health check out on its clock, and keeps one connection to the host from check to check", func() {
		var slow atomic.Bool
		release := make(chan struct{})
		DeferCleanup(func() { close(release) })
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			if slow.Load() {
				select {
				case <-release:
				case <-r.Context().Done():
				}
			}
		})
		c := cluster("backend", u.addr())
		c.HealthChecks = []policy.HealthCheckConfig{{Timeout: 5 * time.Second, Interval: time.Second, NoTrafficInterval: time.Second,
			UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
		clk := fakeClock()
		srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
		until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.success") >= 3 })
		Expect(u.conns.Load()).To(BeEquivalentTo(1), "Envoy's reuse_connection (default true)")
		slow.Store(true) // the host stops answering: only the check's timeout, on the clock, can end a check
		slowSince := clk.Now()
		until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.healthy") == 0 })
		Expect(clk.Since(slowSince)).To(BeNumerically(">=", 5*time.Second), "the check's timeout")
		Expect(stat(srv, "cluster.backend.health_check.network_failure")).To(BeEquivalentTo(1), "Envoy counts a timeout as a network failure")
	})

	// Regression: health checks went through net/http's client, which follows redirects; Envoy's checker
	// sends one request and judges its status (a 301 is outside the default expected_statuses, 200).
	It("does not follow a redirect from a health check: a 301 fails the host", func() {
		u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" {
				http.Redirect(w, r, "/ok", http.StatusMovedPermanently)
			}
		})
		c := cluster("backend", u.addr())
		c.HealthChecks = []policy.HealthCheckConfig{{Timeout: time.Hour, Interval: time.Second, NoTrafficInterval: time.Second,
			UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
		clk := fakeClock()
		srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c}, opts: proxy.Options{Clock: clk}})
		until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.failure") >= 2 })
		Expect(stat(srv, "cluster.backend.health_check.success")).To(BeZero())
		Expect(stat(srv, "cluster.backend.health_check.healthy")).To(BeZero())
		Expect(u.requests.Load()).To(Equal(int64(stat(srv, "cluster.backend.health_check.attempt"))), "one request per check, never /ok")
	})
})
