package live_test

import (
	"context"
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// threeTier: the load → edge → frontend → (its sidecar) → cart → (its sidecar) → payments. The bottom
// tier fails every request; each of the three tiers retries 5xx twice, so every client request reaches
// payments (1+2)³ = 27 times and cart (1+2)² = 9 times.
const threeTier = `name: three-tier
seed: 3
services:
  frontend: {instances: 2, calls: [cart]}
  cart: {instances: 2, calls: [{service: payments, path: /pay, method: POST}]}
  payments: {instances: 2}
proxies:
  edge:
    routes_to: frontend
    route: {timeout: 10s, retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}}}
    cluster: {circuit_breakers: {thresholds: [{max_retries: 1000}]}}
sidecars:
  route: {timeout: 10s, retry_policy: {retry_on: 5xx, num_retries: 2, retry_back_off: {base_interval: 0.001s, max_interval: 0.002s}}}
  cluster: {circuit_breakers: {thresholds: [{max_retries: 1000}]}}
load: {target: edge, rate: 20/s, duration: 1s}
faults:
  - {service: payments, abort: {status: 503}}
`

var _ = Describe("Run a call graph (issue #14)", func() {
	It("sends each tier's calls through its instance's sidecar, retried by each tier: 27 attempts at the bottom per client request", func() {
		rec, err := live.Run(context.Background(), parse(threeTier), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		n := len(rec.Samples)
		Expect(n).To(Equal(20))
		received := map[string]uint64{}
		for _, u := range rec.Upstreams {
			received[u.Service] += u.Requests
		}
		Expect(received).To(Equal(map[string]uint64{"frontend": uint64(3 * n), "cart": uint64(9 * n), "payments": uint64(27 * n)}))
		for _, s := range rec.Samples {
			Expect(s.Status).To(Equal(503))
			Expect(s.Attempts).To(Equal(3))
		}

		Expect(rec.Services).To(Equal([]record.Service{{Name: "cart", Instances: 2}, {Name: "frontend", Instances: 2, Entry: true}, {Name: "payments", Instances: 2}}))
		Expect(rec.Edges).To(HaveLen(2))
		Expect(rec.Edges[0].Caller + "->" + rec.Edges[0].Callee).To(Equal("cart->payments"))
		Expect(rec.Edges[0].SidecarStats).To(HaveKeyWithValue("upstream_rq_retry", uint64(2*9*n)))
		Expect(rec.Edges[1].SidecarStats).To(HaveKeyWithValue("upstream_rq_retry", uint64(2*3*n)))

		calls := map[string]int{}
		for _, c := range rec.Calls {
			calls[c.Caller+"->"+c.Callee]++
			Expect(c.Status).To(Equal(503))
			Expect(c.Attempts).To(Equal(3), "every call carries its sidecar's attempt count")
			Expect(c.At).To(BeNumerically(">=", 0))
		}
		Expect(calls).To(Equal(map[string]int{"frontend->cart": 3 * n, "cart->payments": 9 * n}))
	})

	It("traces one request across every hop, each span with its component's service.name", func() {
		var spans []sdktrace.ReadOnlySpan
		sc := parse(strings.Replace(threeTier, "rate: 20/s", "rate: 5/s", 1))
		_, err := live.Run(context.Background(), sc, nil, plan.Options{Tracing: &plan.Tracing{Spans: func(s []sdktrace.ReadOnlySpan) { spans = s }}})
		Expect(err).NotTo(HaveOccurred())
		services := map[trace.TraceID]map[string]bool{}
		instances := map[string]bool{}
		for _, s := range spans {
			id := s.SpanContext().TraceID()
			if services[id] == nil {
				services[id] = map[string]bool{}
			}
			for _, kv := range s.Resource().Attributes() {
				switch kv.Key {
				case "service.name":
					services[id][kv.Value.AsString()] = true
				case "service.instance.id":
					instances[kv.Value.AsString()] = true
				}
			}
		}
		Expect(services).To(HaveLen(5), "one trace per client request")
		for _, names := range services {
			Expect(names).To(Equal(map[string]bool{"meshproof-load": true, "edge": true, "frontend": true, "cart": true, "payments": true}))
		}
		Expect(instances).To(HaveKey("payments/1"))
		Expect(instances).To(HaveKey("cart/0"))
	})

	It("records a sidecar's ejections as that caller instance's, with the callee as the cluster", func() {
		sc := parse(strings.NewReplacer(
			"  cluster: {circuit_breakers: {thresholds: [{max_retries: 1000}]}}\nload",
			"  cluster: {outlier_detection: {consecutive_5xx: 2, interval: 0.05s, max_ejection_percent: 100}}\nload",
			"- {service: payments, abort: {status: 503}}", "- {service: payments, instances: [1], abort: {status: 503}}",
		).Replace(threeTier))
		rec, err := live.Run(context.Background(), sc, nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		var ejectors []string
		for _, e := range rec.ProxyEvents {
			if e.Kind == record.ProxyEjected {
				Expect(e.Sidecar()).To(BeTrue())
				Expect(e.Cluster).To(Equal("payments"))
				Expect(e.Host).To(Equal("payments/1"))
				ejectors = append(ejectors, e.Proxy)
			}
		}
		Expect(ejectors).To(ContainElement(HavePrefix("cart/")), "each cart instance's sidecar ejects on its own")
	})
})

var _ = Describe("Deadline propagation (issue #14)", func() {
	example := func() string {
		GinkgoHelper()
		data, err := os.ReadFile("../../scenarios/examples/mesh-deadline-propagation.yaml")
		Expect(err).NotTo(HaveOccurred())
		// Only the client view matters here; the example's own checks are run by cmd/meshproof's suite.
		doc, _, _ := strings.Cut(string(data), "checks:")
		return strings.Replace(doc, "duration: 4s", "duration: 2s", 1)
	}
	ordersDuringFault := func(rec *record.Record) (received uint32) {
		for _, u := range rec.Upstreams {
			if u.Service == "orders" {
				for i := 11; i < len(u.Received) && i < 20; i++ { // 1.1s–2s: the window, less its first 100 ms
					received += u.Received[i]
				}
			}
		}
		return received
	}

	It("stops the work downstream once the client has given up", func() {
		rec, err := live.Run(context.Background(), parse(example()), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		Expect(ordersDuringFault(rec)).To(BeZero())
		var deadline int
		for _, c := range rec.Calls {
			if c.Callee == "auth" && c.At > 1100*time.Millisecond {
				Expect(c.Latency).To(BeNumerically("<", 380*time.Millisecond), "cut at the client's budget (200 ms), before auth's 405 ms answer and the sidecar's 1s")
				// The sidecar's 504 or the caller's own bound on the call, whichever came first.
				Expect(c.Status == 504 || c.Error == record.ErrTimeout).To(BeTrue(), "%+v", c)
				deadline++
			}
		}
		Expect(deadline).To(BeNumerically(">", 30))
	})

	It("without propagation, does the work for clients who left: orders receives a request per client request", func() {
		rec, err := live.Run(context.Background(), parse(strings.Replace(example(), "propagate_deadline: true", "propagate_deadline: false", 1)), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		// 50/s over the 0.9 s counted, less the requests still waiting on auth when the load stops.
		Expect(ordersDuringFault(rec)).To(BeNumerically(">=", 25))
		for _, s := range rec.Samples {
			if s.Intended > 1100*time.Millisecond {
				Expect(s.Status).To(Equal(504), "the client still gave up at 200 ms")
			}
		}
	})
})
