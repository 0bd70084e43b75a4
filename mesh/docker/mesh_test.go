package docker_test

import (
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// threeTier is mesh/live's three-tier call graph (mesh_test.go): the load → edge → frontend → (its
// sidecar) → cart → (its sidecar) → payments. The bottom tier fails every request; each of the three
// tiers retries 5xx twice, so every client request reaches payments (1+2)³ = 27 times and cart
// (1+2)² = 9 times. Here payments also has a finite capacity, large enough to turn nothing away.
const threeTier = `name: three-tier
seed: 3
services:
  frontend: {instances: 2, calls: [cart]}
  cart: {instances: 2, calls: [{service: payments, path: /pay, method: POST}]}
  payments: {instances: 2, capacity: {workers: 8, queue: 1000}}
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

// partitionedTier: cart/0 is cut off the network for 1s of a healthy three-tier run, from 1.2s. Its sidecar
// lives in its container, so the calls it is making then — cart serves each request for 600ms before
// it calls payments — fail (its sidecar gives up after 0.3s, without retrying), while frontend's
// sidecar retries elsewhere what cart/0 does not answer within 1s.
const partitionedTier = `name: three-tier-partition
seed: 3
services:
  frontend: {instances: 1, calls: [cart]}
  cart: {instances: 2, response: {latency: 600ms}, calls: [{service: payments, path: /pay, method: POST}]}
  payments: {instances: 1}
proxies:
  edge:
    routes_to: frontend
    route: {timeout: 4s}
sidecars:
  route: {timeout: 3s, retry_policy: {retry_on: "5xx,reset,connect-failure", num_retries: 3, per_try_timeout: 1s}}
  cluster: {connect_timeout: 0.1s, circuit_breakers: {thresholds: [{max_retries: 1000}]}}
  services:
    cart: {route: {timeout: 0.3s}}
load: {target: edge, rate: 20/s, duration: 3.5s}
faults:
  - {service: cart, instances: [0], at: 1.2s, for: 1s, container: partition}
`

// loadYAML writes doc to a file (the upstream containers read the scenario's file) and loads it.
func loadYAML(doc string) *scenarios.Scenario {
	GinkgoHelper()
	path := filepath.Join(GinkgoT().TempDir(), "scenario.yaml")
	Expect(os.WriteFile(path, []byte(doc), 0o644)).To(Succeed())
	sc, err := scenarios.LoadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return sc
}

// callGraphSpecs are the docker runner's call-graph specs (issue #14), in the docker Describe.
func callGraphSpecs(options func() docker.Options, expectNothingLeft func(context.Context)) {
	Context("with calls between services (issue #14)", func() {
		callGraphRun(options, expectNothingLeft)
		partitionedCaller(options, expectNothingLeft)
	})
}

// callGraphRun runs the three-tier graph once, traced, for the specs that read its record.
func callGraphRun(options func() docker.Options, expectNothingLeft func(context.Context)) {
	Context("three tiers", Ordered, func() {
		var (
			rec      *record.Record
			local    []sdktrace.ReadOnlySpan
			received []*coltracepb.ExportTraceServiceRequest
		)
		BeforeAll(func(ctx SpecContext) {
			start := time.Now()
			var err error
			rec, err = docker.Run(ctx, loadYAML(threeTier), nil, options(), plan.Options{Tracing: &plan.Tracing{
				Spans:    func(s []sdktrace.ReadOnlySpan) { local = s },
				Received: func(r []*coltracepb.ExportTraceServiceRequest) { received = r },
			}})
			Expect(err).NotTo(HaveOccurred())
			GinkgoWriter.Printf("three-tier run in Docker: %s\n", time.Since(start).Round(time.Millisecond))
			expectNothingLeft(ctx)
		}, NodeTimeout(3*time.Minute))

		It("sends each tier's calls through its instance's sidecar, retried by each tier: 27 attempts at the bottom per client request", func() {
			n := len(rec.Samples)
			Expect(n).To(Equal(20))
			received := map[string]uint64{}
			for _, u := range rec.Upstreams {
				received[u.Service] += u.Requests
				var inBuckets uint64
				for _, v := range u.Received {
					inBuckets += uint64(v)
				}
				Expect(inBuckets).To(Equal(u.Requests), "%s/%d: every arrival in a 100ms bucket of the run", u.Service, u.Instance)
				Expect(u.OK).To(HaveLen(len(u.Received)))
			}
			Expect(received).To(Equal(map[string]uint64{"frontend": uint64(3 * n), "cart": uint64(9 * n), "payments": uint64(27 * n)}))
			for _, s := range rec.Samples {
				Expect(s.Status).To(Equal(503))
			}
			for _, u := range rec.Upstreams {
				if u.Service == "payments" {
					Expect(u.Capacity).NotTo(BeNil())
					Expect([]int{u.Capacity.Workers, u.Capacity.Queue}).To(Equal([]int{8, 1000}), "the instance's capacity, from its container")
				} else {
					Expect(u.Capacity).To(BeNil())
				}
			}

			Expect(rec.Services).To(Equal([]record.Service{{Name: "cart", Instances: 2}, {Name: "frontend", Instances: 2, Entry: true}, {Name: "payments", Instances: 2}}))
			Expect(rec.Edges).To(HaveLen(2))
			Expect(rec.Edges[0].Caller + "->" + rec.Edges[0].Callee).To(Equal("cart->payments"))
			Expect(rec.Edges[0].SidecarStats).To(HaveKeyWithValue("upstream_rq_retry", uint64(2*9*n)))
			Expect(rec.Edges[1].Caller + "->" + rec.Edges[1].Callee).To(Equal("frontend->cart"))
			Expect(rec.Edges[1].SidecarStats).To(HaveKeyWithValue("upstream_rq_retry", uint64(2*3*n)))

			calls := map[string]int{}
			for _, c := range rec.Calls {
				calls[c.Caller+"->"+c.Callee]++
				Expect(c.Status).To(Equal(503))
				// The sidecar runs in the caller's process, which joins its attempt count to the call.
				Expect(c.Attempts).To(Equal(3), "every call carries its sidecar's attempt count")
				Expect(c.At).To(BeNumerically(">=", 0))
			}
			Expect(calls).To(Equal(map[string]int{"frontend->cart": 3 * n, "cart->payments": 9 * n}))
		})

		It("traces one request across every container, each span with its component's service.name", func() {
			names := map[string]map[string]bool{} // trace id → service.names in it
			instances := map[string]bool{}
			add := func(trace, service string) {
				if names[trace] == nil {
					names[trace] = map[string]bool{}
				}
				names[trace][service] = true
			}
			for _, s := range local {
				for _, kv := range s.Resource().Attributes() {
					if kv.Key == "service.name" {
						add(s.SpanContext().TraceID().String(), kv.Value.AsString())
					}
				}
			}
			Expect(names).To(HaveLen(20), "one trace per client request")
			for _, req := range received {
				for _, rs := range req.GetResourceSpans() {
					service := ""
					for _, kv := range rs.GetResource().GetAttributes() {
						switch kv.GetKey() {
						case "service.name":
							service = kv.GetValue().GetStringValue()
						case "service.instance.id":
							instances[kv.GetValue().GetStringValue()] = true
						}
					}
					for _, ss := range rs.GetScopeSpans() {
						for _, sp := range ss.GetSpans() {
							if id := hex.EncodeToString(sp.GetTraceId()); names[id] != nil {
								add(id, service)
							}
						}
					}
				}
			}
			for _, services := range names {
				Expect(services).To(Equal(map[string]bool{tracing.LoadServiceName: true, "edge": true, "frontend": true, "cart": true, "payments": true}))
			}
			Expect(instances).To(HaveKey("payments/1"))
			Expect(instances).To(HaveKey("cart/0"))
		})
	})

}

func partitionedCaller(options func() docker.Options, expectNothingLeft func(context.Context)) {
	It("cuts a partitioned instance's sidecar off with it: its calls fail while the partition lasts", func(ctx SpecContext) {
		start := time.Now()
		rec, err := docker.Run(ctx, loadYAML(partitionedTier), nil, options(), plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		GinkgoWriter.Printf("partitioned three-tier run in Docker: %s\n", time.Since(start).Round(time.Millisecond))
		describe(rec)
		expectNothingLeft(ctx)

		var partition, heal time.Duration
		for _, e := range rec.Events {
			if e.Fault == "faults[0]" && e.Kind == docker.FaultPartition {
				partition = e.At
			}
			if e.Fault == "faults[0]" && e.Kind == docker.EventHeal {
				heal = e.At
			}
		}
		Expect(partition).To(BeNumerically(">", 0))
		Expect(heal).To(BeNumerically(">", partition))
		// The partition holds from its event (stamped once Docker has disconnected the container) until
		// the runner starts reconnecting it at its planned end (2.2s; the heal is stamped once Docker
		// has carried it out, which can be a good while later on a loaded machine). A call of cart's
		// ends within 0.3s: those sent until 1.85s ended before the reconnection.
		during := min(heal, 1850*time.Millisecond)
		// What each cart instance's calls to payments became, before, during and after the partition.
		type tally struct{ ok, failed int }
		count := map[string]*tally{}
		for _, c := range rec.Calls {
			if c.Caller != "cart" {
				continue
			}
			if c.CallerInstance == 0 && c.At > partition-200*time.Millisecond && c.At < heal+500*time.Millisecond {
				GinkgoWriter.Printf("cart/0 call at %s: %d %s after %s\n", c.At, c.Status, c.Error, c.Latency)
			}
			phase := "after"
			switch {
			case c.At < partition:
				phase = "before"
			case c.At < during:
				phase = "during"
			case c.At < heal+500*time.Millisecond:
				continue // reconnecting
			}
			key := fmt.Sprintf("%s cart/%d", phase, c.CallerInstance)
			if count[key] == nil {
				count[key] = &tally{}
			}
			if c.OK() {
				count[key].ok++
			} else {
				count[key].failed++
			}
		}
		GinkgoWriter.Printf("partition %s, heal %s\n", partition, heal)
		for k, t := range count {
			GinkgoWriter.Printf("%s: %d ok, %d failed\n", k, t.ok, t.failed)
		}
		Expect(count).To(HaveKey("before cart/0"))
		Expect(count["before cart/0"].ok).To(BeNumerically(">", 0), "cart/0 called payments before the partition")
		// cart/0 receives nothing new while cut off, but finishes what it had begun: those calls fail.
		Expect(count).To(HaveKey("during cart/0"))
		Expect(count["during cart/0"].ok).To(BeZero(), "no call of cart/0 reached payments while it was cut off")
		Expect(count["during cart/0"].failed).To(BeNumerically(">", 0), "its sidecar was cut off with it")
		Expect(count).To(HaveKey("during cart/1"))
		Expect(count["during cart/1"].ok).To(BeNumerically(">", 0), "cart/1 served, and called payments, in its place")
		Expect(count).To(HaveKey("after cart/0"))
		Expect(count["after cart/0"].ok).To(BeNumerically(">", 0), "cart/0 and its sidecar are back after the heal")
		Expect(reports.Summarize(rec).SuccessRate).To(BeNumerically(">=", 90.0), "frontend's sidecar retries on cart/1")
	}, SpecTimeout(3*time.Minute))
}
