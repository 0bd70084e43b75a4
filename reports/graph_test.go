package reports_test

import (
	"bytes"
	"encoding/json"
	"encoding/xml"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// The call graph's checks and outcomes, on meshRun (graph_fixture_test.go: the numbers below are worked
// out from its description).
var _ = Describe("checks on an edge or a service", func() {
	var rec *record.Record

	BeforeEach(func() { rec = meshRun() })

	DescribeTable("judges every edge metric and says how it was counted",
		func(expr string, passed bool, observed string) {
			v := judgeOne(expr, rec)
			Expect(v.Observed).To(Equal(observed))
			Expect(v.Passed).To(Equal(passed), v.Observed)
		},
		// frontend → cart, whole run: 200 calls, 198 OK (i = 100, 101 failed): 99%.
		Entry(nil, "edge(frontend->cart): requests == 200", true, "edge(frontend->cart) requests = 200"),
		Entry(nil, "edge(frontend->cart): successes == 198", true, "edge(frontend->cart) successes = 198"),
		Entry(nil, "edge(frontend->cart): errors == 2", true, "edge(frontend->cart) errors = 2"),
		Entry(nil, "edge(frontend->cart): success_rate >= 99%", true, "edge(frontend->cart) success_rate = 99% (198/200 calls)"),
		// Attempts: 195 calls × 1 + 5 calls (i = 80…84) × 2 = 205; retries 205 − 200 = 5; amplification
		// 205 / 200 = 1.025; before the retries 198 successful attempts of 205 = 96.585…%.
		Entry(nil, "edge(frontend->cart): actual_success_rate >= 99%", false,
			"edge(frontend->cart) actual_success_rate = 96.59% (198 successful attempts / 205 attempts)"),
		Entry(nil, "edge(frontend->cart): retries == 5", true, "edge(frontend->cart) retries = 5"),
		Entry(nil, "edge(frontend->cart): retry_amplification <= 1.025", true, "edge(frontend->cart) retry_amplification = 1.025 (205 attempts / 200 calls)"),
		Entry(nil, "edge(frontend->cart): overflows == 0", true, "edge(frontend->cart) overflows = 0"),
		// Latencies (i mod 10 + 1) ms: 20 calls each of 1…10 ms. Nearest rank: p50 = rank 100 = 5 ms,
		// p90 = rank 180 = 9 ms, p99 = rank 198 = 10 ms.
		Entry(nil, "edge(frontend->cart): p50 == 5ms", true, "edge(frontend->cart) p50 = 5ms"),
		Entry(nil, "edge(frontend->cart): p90 == 9ms", true, "edge(frontend->cart) p90 = 9ms"),
		Entry(nil, "edge(frontend->cart): p99 == 10ms", true, "edge(frontend->cart) p99 = 10ms"),
		Entry(nil, "edge(frontend->cart): max == 10ms", true, "edge(frontend->cart) max = 10ms"),
		// No sidecar of frontend ejected: the failing check says why, from their counters.
		Entry(nil, "edge(frontend->cart): ejections >= 1", false, "edge(frontend->cart) ejections = 0; no sidecar of frontend ejected a cart host; "+
			"why, from the sidecars: frontend's sidecars: no detector fired for cluster cart (every cluster.cart.outlier_detection.ejections_detected_* is 0): "+
			"the failures never made consecutive_5xx (or consecutive_gateway_failure) in a row, and success_rate / failure_percentage judge only hosts with "+
			"success_rate_request_volume (default 100) / failure_percentage_request_volume (default 50) requests in one interval, from at least "+
			"success_rate_minimum_hosts / failure_percentage_minimum_hosts (default 5) such hosts"),

		// cart → payments, whole run: 200 calls, 5 failed (i = 100, 101 after three attempts; i = 150…152
		// turned away): 195 OK = 97.5%. Attempts: 80 before + during (20 even: 19 × 1 + 3; 20 odd: 19 × 2 +
		// 3) = 63 + after 77 × 1 + 3 × 0 = 220; amplification 220 / 200 = 1.1; retries 2 + 21 = 23; before
		// the retries 195 / 220 = 88.636…%; overflows: the 3 calls with no attempt.
		Entry(nil, "edge(cart -> payments): success_rate == 97.5%", true, "edge(cart->payments) success_rate = 97.5% (195/200 calls)"),
		Entry(nil, "edge(cart->payments): status(503) == 5", true, "edge(cart->payments) status(503) = 5"),
		Entry(nil, "edge(cart->payments): status(2xx) == 195", true, "edge(cart->payments) status(2xx) = 195"),
		Entry(nil, "edge(cart->payments): actual_success_rate < 90%", true, "edge(cart->payments) actual_success_rate = 88.64% (195 successful attempts / 220 attempts)"),
		Entry(nil, "edge(cart->payments): retry_amplification <= 1.1", true, "edge(cart->payments) retry_amplification = 1.1 (220 attempts / 200 calls)"),
		Entry(nil, "edge(cart->payments): retries == 23", true, "edge(cart->payments) retries = 23"),
		Entry(nil, "edge(cart->payments): overflows == 3", true, "edge(cart->payments) overflows = 3"),
		// Latencies: 3 × 100 µs, 176 × 2 ms, 19 × 5 ms, 2 × 9 ms: p50 = rank 100 = 2 ms, p90 = rank 180 = 5 ms,
		// p99 = rank 198 = 5 ms, max 9 ms.
		Entry(nil, "edge(cart->payments): p50 == 2ms", true, "edge(cart->payments) p50 = 2ms"),
		Entry(nil, "edge(cart->payments): p90 == 5ms", true, "edge(cart->payments) p90 = 5ms"),
		Entry(nil, "edge(cart->payments): p99 == 5ms", true, "edge(cart->payments) p99 = 5ms"),
		Entry(nil, "edge(cart->payments): max == 9ms", true, "edge(cart->payments) max = 9ms"),
		// Two sidecars ejected payments/1: the failing check lists them.
		Entry(nil, "edge(cart->payments): ejections == 0", false,
			"edge(cart->payments) ejections = 2; the sidecars: cart/0 ejected payments/1 at 4.5s, cart/1 ejected payments/1 at 4.6s"),
	)

	DescribeTable("judges an edge within a phase, the calls by their send time",
		func(expr string, passed bool, observed string) {
			v := judgeOne(expr, rec)
			Expect(v.Observed).To(Equal(observed))
			Expect(v.Passed).To(Equal(passed), v.Observed)
		},
		// During the fault (4–6 s): i = 80…119, 40 calls, 38 OK = 95%; 63 attempts: 63 / 40 = 1.575, 23
		// retries, 38 / 63 = 60.317…% before them; latencies 19 × 2 ms, 19 × 5 ms, 2 × 9 ms: p50 = rank 20 =
		// 5 ms, p99 = rank 40 = 9 ms. Both ejections (4.5 s, 4.6 s) fall in it.
		Entry(nil, "during fault: edge(cart->payments): requests == 40", true, "edge(cart->payments) requests = 40 during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): success_rate == 95%", true,
			"edge(cart->payments) success_rate = 95% (38/40 calls) during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): retry_amplification <= 1.5", false,
			"edge(cart->payments) retry_amplification = 1.575 (63 attempts / 40 calls) during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): retries == 23", true, "edge(cart->payments) retries = 23 during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): actual_success_rate >= 60%", true,
			"edge(cart->payments) actual_success_rate = 60.32% (38 successful attempts / 63 attempts) during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): p50 == 5ms", true, "edge(cart->payments) p50 = 5ms during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): p99 == 9ms", true, "edge(cart->payments) p99 = 9ms during fault (4s–6s, 40 calls)"),
		Entry(nil, "during fault: edge(cart->payments): ejections == 2", true, "edge(cart->payments) ejections = 2 during fault (4s–6s, 40 calls)"),
		// After the fault (6–10 s): no ejection, the 3 overflows (i = 150…152).
		Entry(nil, "after fault: edge(cart->payments): ejections == 0", true, "edge(cart->payments) ejections = 0 after fault (6s–10s, 80 calls)"),
		Entry(nil, "after fault: edge(cart->payments): overflows == 3", true, "edge(cart->payments) overflows = 3 after fault (6s–10s, 80 calls)"),
		// After faults[0], frontend's latencies are (i mod 10 + 1) ms for i = 120…199: p99 = 10 ms.
		Entry(nil, "after faults[0]: edge(frontend->cart): p99 < 100ms", true, "edge(frontend->cart) p99 = 10ms after faults[0] (6s–10s, 80 calls)"),
		// Warmup (0–2 s): sent at i × 50 ms + 2 ms for i = 0…39.
		Entry(nil, "during phase warmup: edge(cart->payments): requests == 40", true,
			"edge(cart->payments) requests = 40 during phase warmup (0s–2s, 40 calls)"),
	)

	DescribeTable("judges every service metric",
		func(expr string, passed bool, observed string) {
			v := judgeOne(expr, rec)
			Expect(v.Observed).To(Equal(observed))
			Expect(v.Passed).To(Equal(passed), v.Observed)
		},
		// Whole run, from the instances' counts: frontend 100 + 100 = 200 of 200 client requests (1);
		// cart 103 + 102 = 205 (1.025); payments 120 + 100 = 220 (1.1), OK 120 + 80 = 200 (90.909…%).
		Entry(nil, "service(frontend): requests == 200", true, "service(frontend) requests = 200"),
		Entry(nil, "service(frontend): amplification == 1", true, "service(frontend) amplification = 1 (200 received / 200 client requests)"),
		Entry(nil, "service(cart): amplification <= 1", false, "service(cart) amplification = 1.025 (205 received / 200 client requests)"),
		Entry(nil, "service(payments): amplification <= 3", true, "service(payments) amplification = 1.1 (220 received / 200 client requests)"),
		Entry(nil, "service(payments): success_rate >= 90%", true, "service(payments) success_rate = 90.91% (200/220 received)"),
		Entry(nil, "service(payments): successes == 200", true, "service(payments) successes = 200"),
		Entry(nil, "service(payments): errors == 20", true, "service(payments) errors = 20"),
		// Capacity: busy 4 s + 2 s of 4 workers × 10 s = 15%; queue waits 50 + 25 ms over 10 + 5 queued =
		// 5 ms, the longest 20 ms; 3 + 0 rejected, 1 + 1 timed out.
		Entry(nil, "service(payments): utilisation <= 15%", true, "service(payments) utilisation = 15% (busy 6s of 4 workers × 10s)"),
		Entry(nil, "service(payments): queue_time_mean == 5ms", true, "service(payments) queue_time_mean = 5ms (the mean wait of 15 queued requests)"),
		Entry(nil, "service(payments): queue_time_max < 20ms", false, "service(payments) queue_time_max = 20ms"),
		Entry(nil, "service(payments): rejected == 3", true, "service(payments) rejected = 3"),
		Entry(nil, "service(payments): queue_timeouts == 2", true, "service(payments) queue_timeouts = 2"),
		Entry(nil, "service(cart): utilisation < 50%", false,
			"service cart has no capacity: utilisation not recorded (its instances have no workers and queue, or the runner did not record them)"),

		// During the fault, from the buckets 40…59 (4.0 s … 5.9 s), against the 40 client requests: frontend
		// 20 + 20 received, 38 OK (bucket 50 failed) = 95%; cart (19 + 4) + (19 + 3) = 45, 19 + 19 OK:
		// 45 / 40 = 1.125, 38 / 45 = 84.444…%; payments 20 × 2 + 20 × 1 = 60, 40 OK: 1.5, 66.666…%.
		Entry(nil, "during fault: service(frontend): success_rate >= 99%", false,
			"service(frontend) success_rate = 95% (38/40 received) during fault (4s–6s, 40 received)"),
		Entry(nil, "during fault: service(cart): amplification == 1.125", true,
			"service(cart) amplification = 1.125 (45 received / 40 client requests) during fault (4s–6s, 45 received)"),
		Entry(nil, "during fault: service(cart): success_rate < 85%", true,
			"service(cart) success_rate = 84.44% (38/45 received) during fault (4s–6s, 45 received)"),
		Entry(nil, "during fault: service(payments): requests == 60", true, "service(payments) requests = 60 during fault (4s–6s, 60 received)"),
		Entry(nil, "during fault: service(payments): amplification == 1.5", true,
			"service(payments) amplification = 1.5 (60 received / 40 client requests) during fault (4s–6s, 60 received)"),
		Entry(nil, "during fault: service(payments): success_rate < 67%", true,
			"service(payments) success_rate = 66.67% (40/60 received) during fault (4s–6s, 60 received)"),
		// Before the fault: buckets 0…39, one request each per instance.
		Entry(nil, "before fault: service(frontend): requests == 80", true, "service(frontend) requests = 80 before fault (0s–4s, 80 received)"),
		Entry(nil, "before fault: service(payments): success_rate == 100%", true,
			"service(payments) success_rate = 100% (80/80 received) before fault (0s–4s, 80 received)"),
	)

	DescribeTable("fails, saying why, what the run does not hold",
		func(expr, observed string) {
			v := judgeOne(expr, rec)
			Expect(v.Passed).To(BeFalse())
			Expect(v.Observed).To(Equal(observed))
		},
		Entry(nil, "edge(web->cart): requests == 1", "the run has no edge web->cart; its edges: frontend->cart, cart->payments"),
		Entry(nil, "service(checkout): requests == 1", `the run has no service "checkout"; its services: cart, frontend, payments`),
		Entry(nil, "during faults[3]: edge(cart->payments): requests == 1", `scope "during faults[3]": the run has no faults[3]; its fault windows: faults[0]`),
	)

	It("says what is not recorded when the calls carry no attempt counts", func() {
		for i := range rec.Calls {
			rec.Calls[i].Attempts, rec.Calls[i].ZeroAttempts = 0, false
		}
		// The whole run falls back to the sidecars' counters: upstream_rq_total 220 over the 200 calls,
		// upstream_rq_retry 23, pending overflows 3, and 220 − 25 (2 upstream_rq_5xx, and the 23 retried 5xx of
		// retry.upstream_rq_5xx, as Envoy's router.cc onUpstreamHeaders counts them) = 195 successful attempts.
		Expect(judgeOne("edge(cart->payments): retry_amplification <= 1.1", rec).Observed).To(Equal(
			"edge(cart->payments) retry_amplification = 1.1 (220 attempts / 200 calls) (from the sidecars' counters: the calls carry no attempt counts)"))
		Expect(judgeOne("edge(cart->payments): actual_success_rate < 90%", rec).Observed).To(Equal(
			"edge(cart->payments) actual_success_rate = 88.64% (195 successful attempts / 220 attempts) (from the sidecars' counters: the calls carry no attempt counts)"))
		Expect(judgeOne("edge(cart->payments): overflows == 3", rec).Passed).To(BeTrue())
		// A phase has no such fallback.
		Expect(judgeOne("during fault: edge(cart->payments): retries == 0", rec).Observed).To(Equal(
			"edge(cart->payments) retries not recorded during fault (4s–6s, 40 calls): the calls carry no attempt counts (the sidecars' counters cover the whole run only)"))
	})

	It("says what is not recorded when the instances' arrivals are not", func() {
		for i := range rec.Upstreams {
			rec.Upstreams[i].Received, rec.Upstreams[i].OK = nil, nil
		}
		Expect(judgeOne("service(payments): requests == 220", rec).Passed).To(BeTrue())
		Expect(judgeOne("during fault: service(payments): requests == 60", rec).Observed).To(Equal(
			"service(payments) requests not recorded during fault (4s–6s, 0 received): the instances' arrivals per 100ms (UpstreamRecord.Received) are not recorded"))
	})

	It("credits a sidecar's ejection to the fault window, and keeps the clients' ejections the ingress proxy's", func() {
		Expect(judgeOne("time_to_first_ejection < 1s", rec).Observed).To(Equal("time_to_first_ejection = 500ms (payments/1 ejected at 4.5s, faults[0] started at 4s)"))
		Expect(judgeOne("during fault: ejections == 0", rec).Passed).To(BeTrue(), "the sidecars' ejections are their edge's")
		// The clients' requests are delivered to frontend only: 200 of its instances' 200, not all 625.
		Expect(judgeOne("delivered_amplification == 1", rec).Observed).To(Equal("delivered_amplification = 1 (200 received / 200 requests)"))
	})

	It("explains a missed ejection of a service only sidecars call from their counters", func() {
		rec.ProxyEvents = rec.ProxyEvents[:0:0]
		rec.ProxyEvents = append(rec.ProxyEvents, record.ProxyEvent{At: time.Second, Kind: record.ProxyRetry, Proxy: "cart/0", Cluster: "payments"})
		rec.Edges[1].SidecarStats["outlier_detection.ejections_detected_consecutive_5xx"] = 0
		rec.Edges[1].SidecarStats["outlier_detection.ejections_enforced_consecutive_5xx"] = 0
		rec.Edges[1].SidecarStats["outlier_detection.ejections_enforced_total"] = 0
		Expect(judgeOne("during fault: ejected(payments/1) within 2s", rec).Observed).To(ContainSubstring(
			"why, from the proxy: cart's sidecars: no detector fired for cluster payments"))
	})
})

var _ = Describe("parsing an edge or a service", func() {
	DescribeTable("valid",
		func(expr string, want checks.Check) {
			want.Expr = expr
			Expect(checks.Parse(expr)).To(Equal(want))
		},
		Entry(nil, "edge(cart->payments): retry_amplification <= 1.5",
			checks.Check{Target: checks.Target{Caller: "cart", Callee: "payments"}, Metric: "retry_amplification", Op: "<=", Value: 1.5}),
		Entry(nil, "service(payments): amplification <= 3",
			checks.Check{Target: checks.Target{Service: "payments"}, Metric: "amplification", Op: "<=", Value: 3}),
		Entry(nil, "during fault: service(frontend): success_rate >= 99%",
			checks.Check{Scope: "during fault", Target: checks.Target{Service: "frontend"}, Metric: "success_rate", Op: ">=", Value: 99, Unit: "%"}),
		Entry(nil, "after faults[0]: edge(frontend->cart): p99 < 100ms",
			checks.Check{Scope: "after faults[0]", Target: checks.Target{Caller: "frontend", Callee: "cart"}, Metric: "p99", Op: "<", Value: 0.1, Unit: "ms"}),
		Entry(nil, "EDGE( a -> b ) : STATUS(5xx) == 0",
			checks.Check{Target: checks.Target{Caller: "a", Callee: "b"}, Metric: "status(5xx)", Op: "==", Value: 0}),
		Entry(nil, "phase steady: service(p): errors == 0",
			checks.Check{Scope: "during phase steady", Target: checks.Target{Service: "p"}, Metric: "errors", Op: "==", Value: 0}),
	)

	It("prints a check rebuilt from its parts with its target", func() {
		c := checks.Check{Scope: "during fault", Target: checks.Target{Caller: "a", Callee: "b"}, Metric: "p99", Op: "<", Value: 0.1, Unit: "ms"}
		Expect(c.String()).To(Equal("during fault: edge(a->b): p99 < 100ms"))
	})

	DescribeTable("invalid, saying what is accepted",
		func(expr, want string) {
			_, err := checks.Parse(expr)
			Expect(err).To(MatchError(want))
		},
		Entry("malformed edge", "edge(a-b): p99 < 1s",
			`check "edge(a-b): p99 < 1s": target "edge(a-b)": no "->" between the caller and the callee; want edge(CALLER->CALLEE), e.g. "edge(cart->payments)"`),
		Entry("edge without a callee", "edge(a->): p99 < 1s",
			`check "edge(a->): p99 < 1s": target "edge(a->)": empty service name; want edge(CALLER->CALLEE), e.g. "edge(cart->payments)"`),
		Entry("unclosed edge", "edge(a->b p99 < 1s",
			`check "edge(a->b p99 < 1s": no ":" after the edge or service, or no ")" closing it; want "edge(CALLER->CALLEE): <metric> <operator> <value>" or "service(NAME): <metric> <operator> <value>"`),
		Entry("service without a name", "service(): requests > 0",
			`check "service(): requests > 0": target "service()": empty service name; want service(NAME), e.g. "service(payments)"`),
		Entry("metric not of a service", "service(payments): p99 < 1s",
			`check "service(payments): p99 < 1s": p99 is not a metric of a service; service(payments) takes: requests, successes, errors, success_rate, `+
				`amplification, utilisation, queue_time_mean, queue_time_max, rejected, queue_timeouts`),
		Entry("metric not of an edge", "edge(a->b): amplification <= 2",
			`check "edge(a->b): amplification <= 2": amplification is not a metric of an edge; edge(a->b) takes: requests, successes, errors, success_rate, `+
				`actual_success_rate, retries, retry_amplification, overflows, ejections, p50, p90, p99, p999, max, status(N), status(Nxx)`),
		Entry("capacity in a phase", "during fault: service(p): utilisation < 50%",
			`check "during fault: service(p): utilisation < 50%": utilisation is counted over the whole run only (from the instances' capacity records); write the check without "during fault:"`),
		Entry("scope after the target", "edge(a->b): during fault: p99 < 1s",
			`check "edge(a->b): during fault: p99 < 1s": the phase scope goes before edge(a->b): write "during fault: edge(a->b): p99 < 1s"`),
		Entry("ejected() on a service", "service(p): ejected(p/1)",
			`check "service(p): ejected(p/1)": ejected(HOST) takes no edge or service: write it without "service(p):" (the ejections of service(p): "service(p): ejections >= 1")`),
	)

	It("validates the target against the scenario's services and edges", func() {
		ctx := checks.ScopeContext{Faults: 1, Services: []string{"cart", "frontend", "payments"},
			Edges: [][2]string{{"frontend", "cart"}, {"cart", "payments"}}}
		Expect(checks.ValidateScope(mustCheck("during fault: edge(cart->payments): p99 < 1s"), ctx)).To(Succeed())
		Expect(checks.ValidateScope(mustCheck("service(payments): utilisation < 80%"), ctx)).To(Succeed())
		Expect(checks.ValidateScope(mustCheck("edge(cart->frontend): p99 < 1s"), ctx)).To(MatchError(
			`check "edge(cart->frontend): p99 < 1s": unknown edge cart->frontend; the scenario's edges: frontend->cart, cart->payments`))
		Expect(checks.ValidateScope(mustCheck("service(checkout): requests > 0"), ctx)).To(MatchError(
			`check "service(checkout): requests > 0": unknown service "checkout"; the scenario's services: cart, frontend, payments`))
		Expect(checks.ValidateScope(mustCheck("edge(a->b): p99 < 1s"), checks.ScopeContext{Services: []string{"a", "b"}})).To(MatchError(
			`check "edge(a->b): p99 < 1s": unknown edge a->b: the scenario's services call no other service, so it has no edges`))
		Expect(checks.ValidateScope(mustCheck("during faults[1]: service(cart): requests > 0"), ctx)).To(MatchError(
			`check "during faults[1]: service(cart): requests > 0": scope "during faults[1]": the run has no faults[1]; its fault windows: faults[0]`))
	})
})

var _ = Describe("the call graph's outcomes", func() {
	var (
		rec *record.Record
		r   reports.Report
	)

	BeforeEach(func() {
		rec = meshRun()
		r = reports.NewReport(rec, []checks.Check{mustCheck("edge(cart->payments): retry_amplification <= 1.5")})
	})

	It("holds each edge and service over the whole run", func() {
		o := r.Outcomes
		Expect(o.Edges).To(HaveLen(2))
		Expect(o.Edges[1]).To(And(
			HaveField("Caller", "cart"), HaveField("Callee", "payments"), HaveField("Calls", uint64(200)), HaveField("Successes", uint64(195)),
			HaveField("AttemptsFrom", reports.AttemptsFromCalls), HaveField("UpstreamAttempts", uint64(220)), HaveField("Retries", uint64(23)),
			HaveField("Overflows", uint64(3)), HaveField("Ejections", uint64(2)), HaveField("EjectionsKnown", true),
			HaveField("Latency.P99", 5*time.Millisecond)))
		Expect(o.Services).To(HaveLen(3))
		Expect(o.Services[2]).To(And(HaveField("Name", "payments"), HaveField("Requests", uint64(220)), HaveField("Amplification", 1.1),
			HaveField("Capacity.Utilisation", BeNumerically("~", 15, 1e-9)), HaveField("Capacity.QueueTimeMean", 5*time.Millisecond)))
		// The sidecars' ejections, each in its own timeline.
		Expect(o.Hosts).To(HaveExactElements(
			And(HaveField("Proxy", "cart/0"), HaveField("Cluster", "payments"), HaveField("Host", "payments/1")),
			And(HaveField("Proxy", "cart/1"), HaveField("Cluster", "payments"), HaveField("Host", "payments/1"))))
		// Over time, one host is ejected (twice) from 4.5 s: the 1 s bucket 4–5 s counts it once.
		Expect(r.Series.Points[4]).To(And(HaveField("Start", 4*time.Second), HaveField("EjectionsActive", 1)))
	})

	It("round-trips through report.json, and reads the files of earlier versions", func() {
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, r)).To(Succeed())
		back, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Version).To(Equal(3))
		Expect(back.Outcomes.Edges).To(Equal(r.Outcomes.Edges))
		Expect(back.Outcomes.Services).To(Equal(r.Outcomes.Services))
		Expect(back.Outcomes.Hosts).To(Equal(r.Outcomes.Hosts))
		Expect(back.Upstreams).To(Equal(r.Upstreams), "with their arrivals and capacity")
		var cmp bytes.Buffer
		Expect(reports.WriteComparison(&cmp, back, r, "a", "b")).To(Succeed())

		// A version 2 file has no call graph: it reads without one.
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		var doc map[string]any
		Expect(json.Unmarshal(data, &doc)).To(Succeed())
		doc["version"] = 2
		out := doc["outcomes"].(map[string]any)
		delete(out, "edges")
		delete(out, "services")
		data, err = json.Marshal(doc)
		Expect(err).NotTo(HaveOccurred())
		Expect(os.WriteFile(path, data, 0o644)).To(Succeed())
		old, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(old.Outcomes.Edges).To(BeNil())
		Expect(old.Summary.Requests).To(Equal(uint64(200)))
	})

	It("shows the same edge and service rows in every writer", func() {
		dir := GinkgoT().TempDir()
		Expect(reports.WriteAll(dir, r, rec)).To(Succeed())
		read := func(name string) string {
			data, err := os.ReadFile(filepath.Join(dir, name))
			Expect(err).NotTo(HaveOccurred())
			return string(data)
		}
		var term bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		var junit junitDoc
		Expect(xml.Unmarshal([]byte(read("junit.xml")), &junit)).To(Succeed())
		rows := [][]string{
			{"frontend → cart", "200", "99%", "96.59%", "5", "1.025", "0", "0", "5ms", "10ms"},
			{"cart → payments", "200", "97.5%", "88.64%", "23", "1.1", "3", "2", "2ms", "5ms"},
			{"cart", "2", "205", "1.025", "96.59%", "-", "-", "-", "-", "-"},
			{"frontend (entry)", "2", "200", "1", "99%", "-", "-", "-", "-", "-"},
			{"payments", "2", "220", "1.1", "90.91%", "15%", "5ms", "20ms", "3", "2"},
		}
		for _, row := range rows {
			Expect(term.String()).To(MatchRegexp(`(?m)^  ` + strings.Join(quoteAll(row), `\s+`) + `\s*$`))
			Expect(junit.Suites[0].SystemOut).To(MatchRegexp(`(?m)^  ` + strings.Join(quoteAll(row), `\s+`) + `\s*$`))
			Expect(read("summary.md")).To(ContainSubstring("| " + strings.Join(row, " | ") + " |"))
			Expect(read("report.html")).To(ContainSubstring("<td>" + row[0] + `</td><td class="num">` + strings.Join(row[1:], `</td><td class="num">`) + "</td>"))
		}
		var doc map[string]any
		Expect(json.Unmarshal([]byte(read("report.json")), &doc)).To(Succeed())
		Expect(jsonAt(doc, "outcomes.edges")).To(HaveLen(2))
		Expect(jsonAt(doc, "outcomes.services")).To(HaveLen(3))
		edge := jsonAt(doc, "outcomes.edges").([]any)[1].(map[string]any)
		Expect(edge).To(And(HaveKeyWithValue("caller", "cart"), HaveKeyWithValue("retry_amplification", 1.1),
			HaveKeyWithValue("actual_success_rate", BeNumerically("~", 100*195.0/220, 1e-9)), HaveKeyWithValue("overflows", 3.0)))
	})

	It("draws a service map per phase in report.html: one box per service, one arrow per edge", func() {
		var b bytes.Buffer
		Expect(reports.WriteHTML(&b, r, rec)).To(Succeed())
		html := b.String()
		maps := regexp.MustCompile(`(?s)<svg [^>]*class="service-map".*?</svg>`).FindAllString(html, -1)
		Expect(maps).To(HaveLen(3), "before, during and after faults[0]")
		for _, title := range []string{"before faults[0] (0s–4s)", "during faults[0] (4s–6s)", "after faults[0] (6s–10s)"} {
			Expect(html).To(ContainSubstring("<figcaption>" + title + "</figcaption>"))
		}
		for _, m := range maps {
			Expect(regexp.MustCompile(`class="svc" data-service="[^"]+"`).FindAllString(m, -1)).To(ConsistOf(
				`class="svc" data-service="cart"`, `class="svc" data-service="frontend"`, `class="svc" data-service="payments"`))
			Expect(regexp.MustCompile(`class="edge" data-edge="[^"]+"`).FindAllString(m, -1)).To(ConsistOf(
				`class="edge" data-edge="frontend-&gt;cart"`, `class="edge" data-edge="cart-&gt;payments"`))
			Expect(strings.Count(m, `class="ingress"`)).To(Equal(1), "clients → frontend")
		}
		// During the fault: cart → payments at 40 calls / 2 s = 20/s, 95%, p99 9 ms, red; payments/1 ejected
		// by both sidecars at 6 s, so one of two instances not ejected.
		during := maps[1]
		Expect(during).To(ContainSubstring(`stroke="#cf222e"`))
		Expect(during).To(MatchRegexp(`20/s · 95%<tspan [^>]*>p99 9ms</tspan>`))
		Expect(during).To(ContainSubstring("1/2 not ejected"))
		// Before it everything succeeded: green.
		Expect(maps[0]).To(MatchRegexp(`class="edge" data-edge="cart-&gt;payments" d="[^"]*" fill="none" stroke="#1a7f37"`))
		Expect(html).To(ContainSubstring("≥ 99.9% success"))
	})

	It("writes a one-hop run byte for byte as before the call graph", func() {
		// testdata/onehop holds runReport's files as written before edges and services existed, the
		// report.html's gonum charts left out; report.json's schema version went from 2 to 3 since.
		r, rec := runReport()
		dir := GinkgoT().TempDir()
		Expect(reports.WriteAll(dir, r, rec)).To(Succeed())
		var term bytes.Buffer
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(os.WriteFile(filepath.Join(dir, "terminal.txt"), term.Bytes(), 0o644)).To(Succeed())
		charts := regexp.MustCompile(`(?s)<svg.*?</svg>`)
		for _, name := range []string{"terminal.txt", "summary.md", "junit.xml", "report.json", "report.html"} {
			got, err := os.ReadFile(filepath.Join(dir, name))
			Expect(err).NotTo(HaveOccurred())
			want, err := os.ReadFile(filepath.Join("testdata", "onehop", name))
			Expect(err).NotTo(HaveOccurred())
			text := strings.Replace(string(got), `"version": 3,`, `"version": 2,`, 1)
			if name == "report.html" {
				text = charts.ReplaceAllString(text, "<svg><!-- chart --></svg>")
			}
			Expect(text).To(Equal(string(want)), name)
		}
	})

	It("leaves a one-hop report as it was: no edge or service table, no service map", func() {
		one := faultRun()
		one.Services = []record.Service{{Name: "checkout", Instances: 4, Entry: true}}
		withServices := reports.NewReport(one, nil)
		without := reports.NewReport(faultRun(), nil)
		Expect(withServices.Outcomes.Edges).To(BeNil())
		Expect(withServices.Outcomes.Services).To(BeNil())
		for _, write := range []func(*bytes.Buffer, reports.Report, *record.Record) error{
			func(b *bytes.Buffer, r reports.Report, _ *record.Record) error { return reports.WriteTerminal(b, r) },
			func(b *bytes.Buffer, r reports.Report, _ *record.Record) error { return reports.WriteMarkdown(b, r) },
			func(b *bytes.Buffer, r reports.Report, _ *record.Record) error { return reports.WriteJUnit(b, r) },
			func(b *bytes.Buffer, r reports.Report, rec *record.Record) error { return reports.WriteHTML(b, r, rec) },
		} {
			var a, b bytes.Buffer
			Expect(write(&a, withServices, one)).To(Succeed())
			Expect(write(&b, without, faultRun())).To(Succeed())
			Expect(a.String()).To(Equal(b.String()))
			Expect(a.String()).NotTo(Or(ContainSubstring("service-map"), ContainSubstring("per client request")))
		}
	})
})

func quoteAll(cells []string) []string {
	out := make([]string, len(cells))
	for i, c := range cells {
		out[i] = regexp.QuoteMeta(c)
	}
	return out
}
