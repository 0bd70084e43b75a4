package sim_test

import (
	"context"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/reports/record"
)

// Regressions found comparing the simulator with the embedded runner on the same scenarios.
var _ = Describe("the simulator against the live proxy's semantics", func() {
	run := func(yaml string) *record.Record {
		GinkgoHelper()
		rec, err := plan.Run(context.Background(), sim.Runner{}, plan.New(parse(yaml), nil), plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		return rec
	}
	ok := func(rec *record.Record) int {
		n := 0
		for _, s := range rec.Samples {
			if s.OK() {
				n++
			}
		}
		return n
	}

	// The live per-try timeout ends when the response headers come (proxy/upstream_request.go): a body
	// slower than per_try_timeout is relayed, not timed out and retried. The embedded runner: 10/10
	// ok, 0 retries; the model timed out every attempt (it decided at the body's end).
	It("ends the per-try timeout at the response headers, not at the end of a slow body", func() {
		rec := run(`
name: slow-body-per-try
seed: 5
services:
  a: {instances: 2, response: {latency: 1ms, size: 4000}}
proxies:
  edge:
    routes:
      - match: {prefix: /}
        route: {cluster: a, timeout: 3s, retry_policy: {retry_on: "5xx,reset", num_retries: 2, per_try_timeout: 0.2s}}
    cluster: {connect_timeout: 0.25s}
load: {target: edge, rate: 10/s, duration: 1s}
faults:
  - {service: a, slow_body: {bytes_per_second: 8000}}
`)
		Expect(rec.Samples).To(HaveLen(10))
		Expect(ok(rec)).To(Equal(10))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.a.upstream_rq_retry", BeZero()))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.a.upstream_rq_per_try_timeout", BeZero()))
		for _, s := range rec.Samples {
			// 4000 bytes at 8000 B/s: 10 chunks of 400 bytes, 50 ms each, after the headers — longer
			// than the 200 ms per-try timeout.
			Expect(s.Latency).To(BeNumerically(">=", 500*time.Millisecond))
		}
	})

	// A request body beyond the buffer limit cannot be retried (the live forward.run; Envoy's
	// Filter::decodeData): the embedded runner answers about half 503 with 0 retries; the model retried.
	It("does not retry a request whose body is beyond the buffer limit, counting retry_or_shadow_abandoned", func() {
		rec := run(`
name: buffer-limit-retries
seed: 5
services:
  a: {instances: 2, response: {latency: 1ms, size: 16}}
proxies:
  edge:
    routes:
      - match: {prefix: /}
        route: {cluster: a, timeout: 1s, retry_policy: {retry_on: 5xx, num_retries: 2}}
    virtual_host: {per_request_buffer_limit_bytes: 4}
    cluster: {connect_timeout: 0.25s}
load:
  target: edge
  rate: 40/s
  duration: 1s
  mix:
    - {weight: 1, method: post, body: "hello world, a body longer than the limit"}
faults:
  - {service: a, abort: {status: 503, percent: 50}}
`)
		Expect(rec.Samples).To(HaveLen(40))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.a.upstream_rq_retry", BeZero()))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.a.retry_or_shadow_abandoned", BeEquivalentTo(40)))
		Expect(ok(rec)).To(BeNumerically("<", 40))
		for _, s := range rec.Samples {
			Expect(s.Attempts).To(Equal(1))
		}
	})

	// The live pool's liveness probe finds an idle connection closed by a refuse window that has ended
	// since (h1.Pool.get) and dials anew; the model reused it as if it were alive.
	It("dials anew after a refuse window closed the idle connections, even once it has ended", func() {
		rec := run(`
name: reopen
seed: 5
services:
  a: {instances: 1, response: {latency: 1ms}}
proxies:
  edge: {routes_to: a, route: {timeout: 1s}}
load: {target: edge, rate: 1/s, duration: 3s}
faults:
  - {service: a, at: 1200ms, for: 500ms, refuse: {}}
`)
		Expect(rec.Samples).To(HaveLen(3))
		for _, s := range rec.Samples {
			Expect(s.OK()).To(BeTrue())
		}
		// requests at 0 s and 1 s on the first connection; the one at 2 s on a new one
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.a.upstream_cx_total", BeEquivalentTo(2)))
	})
})
