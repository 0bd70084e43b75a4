package live_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/scenarios"
)

// grpcRetries: gRPC unary calls through the edge to three echo instances, two of which answer every
// call UNAVAILABLE (a trailers-only grpc-status 14). The route retries unavailable once, after a back-off
// of at most 2 ms, and the calls are 50 ms apart, so they do not overlap: round robin sends a call and its
// retry to consecutive instances. A call that starts on the first bad instance is retried on the second
// and ends UNAVAILABLE, leaving round robin on the healthy one, where the next call ends OK at once:
// after at most the first call (round robin's first pick is the proxy's), the calls alternate
// UNAVAILABLE (2 attempts) and OK (1 attempt).
const grpcRetries = `name: grpc-retries
seed: 5
services:
  echo: {instances: 3}
proxies:
  edge:
    routes_to: echo
    route: {retry_policy: {retry_on: unavailable, num_retries: 1, retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}}}
    cluster: {lb_policy: ROUND_ROBIN}
load:
  target: edge
  rate: 20/s
  duration: 1s
  protocol: grpc
  grpc: {method: unary, deadline: 2s}
faults:
  - {service: echo, instances: [0, 1], abort: {grpc_status: 14}}
checks:
  - grpc_status(UNAVAILABLE) >= 1
  - grpc_status(OK) >= 1
  - retries > 0
`

// h2cLoad: plain HTTP requests over h2c (HTTP/2 with prior knowledge) through the edge.
const h2cLoad = `name: h2c
seed: 6
services:
  backend: {instances: 2}
proxies:
  edge: {routes_to: backend}
load: {target: edge, rate: 20/s, duration: 1s, protocol: h2c}
`

var _ = Describe("A gRPC load (issue #16)", func() {
	It("records the calls' gRPC statuses, judges grpc_status checks, and counts the edge's retries", func(ctx SpecContext) {
		sc := parse(grpcRetries)
		rec, err := live.Run(ctx, sc, nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		n := len(rec.Samples)
		Expect(n).To(Equal(20))

		// The run record: each sample is a gRPC call with its final status; 2 attempts for every call that
		// met a bad instance first.
		var unavailable, ok, retried int
		for _, s := range rec.Samples {
			Expect(s.GRPC).To(BeTrue())
			Expect(s.Error).To(BeEmpty(), "a call ends with its gRPC status, not a transport error")
			Expect(s.GRPCStatus).To(Or(BeEquivalentTo(0), BeEquivalentTo(14)))
			Expect(s.Attempts).To(BeElementOf(1, 2))
			if s.GRPCStatus == 14 {
				unavailable++
				Expect(s.Attempts).To(Equal(2), "an UNAVAILABLE call was retried once, on the other bad instance")
			} else {
				ok++
			}
			retried += s.Attempts - 1
		}
		// ±2: a late send (a busy machine) can overlap two calls and shift the alternation.
		Expect(unavailable).To(BeNumerically("~", n/2, 2), "every other call starts on the first bad instance")

		// The status breakdown, as report.json's grpc_statuses has it.
		sum := reports.Summarize(rec)
		Expect(sum.GRPCStatuses).To(Equal(map[int]uint64{0: uint64(ok), 14: uint64(unavailable)}))

		// Retries per hop: the edge is the only hop; its cluster's upstream_rq_retry counts the second
		// attempts the clients saw, and the instances received every attempt.
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.echo.upstream_rq_retry", uint64(retried)))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.echo.upstream_rq_retry_limit_exceeded", uint64(unavailable)))
		Expect(sum.Retries).To(BeEquivalentTo(retried))
		var received uint64
		for _, u := range rec.Upstreams {
			received += u.Requests
		}
		Expect(received).To(BeEquivalentTo(n + retried))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.echo.upstream_cx_http2_total", BeNumerically(">", 0)))

		// The scenario's checks, judged from the record as `meshproof run` judges them.
		list := make([]checks.Check, len(sc.Checks))
		for i, c := range sc.Checks {
			list[i] = c.Check
		}
		verdicts := reports.EvaluateRun(list, rec)
		Expect(verdicts).To(HaveLen(3))
		Expect(verdicts[0].Check).To(Equal("grpc_status(UNAVAILABLE) >= 1"))
		Expect(verdicts[0].Measured).To(BeTrue())
		Expect(verdicts[0].Value).To(BeEquivalentTo(unavailable))
		Expect(verdicts[0].Observed).To(ContainSubstring("grpc_status(UNAVAILABLE) = %d", unavailable))
		for _, v := range verdicts {
			Expect(v.Passed).To(BeTrue(), "%s: %s", v.Check, v.Observed)
		}
	}, SpecTimeout(30*time.Second))
})

var _ = Describe("An h2c load (issue #16)", func() {
	It("goes through the proxy over HTTP/2 on both sides", func(ctx SpecContext) {
		sc := parse(h2cLoad)
		Expect(sc.Load.Protocol).To(Equal(scenarios.ProtocolH2C))
		rec, err := live.Run(ctx, sc, nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(rec.Samples).To(HaveLen(20))
		for _, s := range rec.Samples {
			Expect(s.Status).To(Equal(200), "error %q", s.Error)
			Expect(s.GRPC).To(BeFalse())
		}
		// Downstream: the load's connection is an HTTP/2 one; upstream: the cluster's connections too.
		Expect(rec.ProxyStats).To(HaveKeyWithValue("http.edge.downstream_cx_http2_total", BeNumerically(">", 0)))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("http.edge.downstream_cx_http1_total", BeZero()))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.backend.upstream_cx_http2_total", BeNumerically(">", 0)))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.backend.upstream_cx_http1_total", BeZero()))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("http.edge.downstream_rq_2xx", uint64(20)))
	}, SpecTimeout(30*time.Second))
})
