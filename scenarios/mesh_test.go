package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gstruct"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// meshFile is a valid three-tier call graph; each spec changes one thing.
const meshFile = `name: mesh
seed: 1
services:
  frontend:
    instances: 2
    calls:
      - cart
      - parallel: [payments, {service: recs, optional: true, path: /r, method: POST}]
    propagate_deadline: true
  cart:
    instances: 2
    calls: [payments]
    capacity: {workers: 4, queue: 8, queue_timeout: 50ms}
  payments:
    instances: 3
  recs: {}
proxies:
  edge:
    routes_to: frontend
sidecars:
  route: {timeout: 1s, retry_policy: {retry_on: 5xx, num_retries: 2}}
  cluster: {connect_timeout: 0.5s}
  services:
    cart: {cluster: {outlier_detection: {consecutive_5xx: 3}}}
  edges:
    frontend -> cart: {route: {retry_policy: {retry_on: reset, num_retries: 1}}}
load: {target: edge, rate: 100/s, duration: 2s}
`

var _ = Describe("call graphs (issue #14)", func() {
	parse := func(data string) *scenarios.Scenario {
		GinkgoHelper()
		sc, err := scenarios.Parse([]byte(data), "mesh.yaml")
		Expect(err).NotTo(HaveOccurred())
		return sc
	}
	parseErrs := func(data string) []*scenarios.Error {
		GinkgoHelper()
		_, err := scenarios.Parse([]byte(data), "mesh.yaml")
		Expect(err).To(HaveOccurred())
		return errorsOf(err)
	}
	edit := func(old, new string) string {
		GinkgoHelper()
		Expect(meshFile).To(ContainSubstring(old))
		return strings.Replace(meshFile, old, new, 1)
	}

	It("reads calls, parallel steps, capacity and deadlines, with defaults", func() {
		sc := parse(meshFile)
		fe := sc.Services["frontend"]
		Expect(fe.Calls).To(HaveLen(2))
		Expect(*fe.Calls[0].Call).To(MatchFields(IgnoreExtras, Fields{"Service": Equal("cart"), "Path": Equal("/"), "Method": Equal("GET")}))
		Expect(fe.Calls[1].Parallel).To(HaveLen(2))
		Expect(*fe.Calls[1].Parallel[1]).To(MatchFields(IgnoreExtras, Fields{"Service": Equal("recs"), "Path": Equal("/r"), "Method": Equal("POST"), "Optional": BeTrue()}))
		Expect(fe.PropagateDeadline).To(BeTrue())
		Expect(*sc.Services["cart"].Capacity).To(Equal(scenarios.Capacity{Workers: 4, Queue: 8, QueueTimeout: scenarios.Duration{Duration: 50 * time.Millisecond}, WhenFull: "reject"}))
		Expect(sc.Edges()).To(Equal([]scenarios.Edge{{Caller: "cart", Callee: "payments"}, {Caller: "frontend", Callee: "cart"},
			{Caller: "frontend", Callee: "payments"}, {Caller: "frontend", Callee: "recs"}}))
		Expect(sc.IsMesh()).To(BeTrue())
		Expect(sc.Depth()).To(Equal(map[string]int{"frontend": 0, "cart": 1, "payments": 2, "recs": 1}))
	})

	It("merges sidecar config mesh < service < edge, a set top-level field replacing the less specific whole", func() {
		sc := parse(meshFile)
		route, cluster := sc.EdgeConfig(scenarios.Edge{Caller: "frontend", Callee: "cart"})
		Expect(route.GetTimeout().AsDuration()).To(Equal(time.Second))                 // the mesh's
		Expect(route.GetRetryPolicy().GetRetryOn()).To(Equal("reset"))                 // the edge's, whole:
		Expect(route.GetRetryPolicy().GetNumRetries().GetValue()).To(Equal(uint32(1))) // nothing of the mesh's retry_policy left
		Expect(cluster.GetOutlierDetection()).To(BeNil())                              // cart's service level is not frontend's
		Expect(cluster.GetConnectTimeout().AsDuration()).To(Equal(500 * time.Millisecond))

		route, cluster = sc.EdgeConfig(scenarios.Edge{Caller: "cart", Callee: "payments"})
		Expect(route.GetRetryPolicy().GetRetryOn()).To(Equal("5xx"))
		Expect(cluster.GetOutlierDetection().GetConsecutive_5Xx().GetValue()).To(Equal(uint32(3)))
		// The scenario's own messages are untouched by merging.
		Expect(sc.Sidecars.RouteAction.GetRetryPolicy().GetRetryOn()).To(Equal("5xx"))
	})

	It("generates one sidecar bootstrap per caller: a virtual host and a cluster per callee", func() {
		sc := parse(meshFile)
		b, err := scenarios.SidecarBootstrap(sc, "frontend", scenarios.SidecarAddresses{Listener: "127.0.0.1:0",
			Endpoints: map[string][]string{"cart": {"127.0.0.1:1", "127.0.0.1:2"}, "payments": {"127.0.0.1:3"}, "recs": {"127.0.0.1:4"}}})
		Expect(err).NotTo(HaveOccurred())
		cfg, err := config.FromProto(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Clusters).To(HaveLen(3))
		vhosts := cfg.Listeners[0].Routes.VirtualHosts
		Expect(vhosts).To(HaveLen(3))
		Expect(vhosts[0].Domains).To(Equal([]string{"cart"}))
		Expect(vhosts[0].Routes[0].Action.Cluster).To(Equal("cart"))
		_, err = scenarios.SidecarBootstrap(sc, "payments", scenarios.SidecarAddresses{Listener: "127.0.0.1:0"})
		Expect(err).To(MatchError(ContainSubstring("calls no other service")))
	})

	It("refuses a cycle, naming it", func() {
		es := parseErrs(edit("  payments:\n    instances: 3", "  payments:\n    instances: 3\n    calls: [frontend]"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Msg).To(ContainSubstring("the call graph has a cycle: cart -> payments -> frontend -> cart"))
		Expect(es[0].Line).To(BeNumerically(">", 0))
	})

	It("refuses a service calling itself, an unknown callee, an unknown call field", func() {
		es := parseErrs(edit("calls: [payments]", "calls: [payments, cart, nowhere]"))
		Expect(es).To(HaveLen(2))
		Expect(es[0].Path).To(Equal("services.cart.calls[1].service"))
		Expect(es[0].Msg).To(ContainSubstring("cart calls itself"))
		Expect(es[1].Path).To(Equal("services.cart.calls[2].service"))
		Expect(es[1].Msg).To(ContainSubstring(`"nowhere" is not a service of this scenario (services: cart, frontend, payments, recs)`))

		es = parseErrs(edit("path: /r,", "pth: /r,"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("services.frontend.calls[1].parallel[1].pth"))
		Expect(es[0].Msg).To(ContainSubstring("accepted: service, path, method, optional"))
		Expect(es[0].Line).To(Equal(8))
	})

	It("refuses an edge override for an edge that does not exist, and a malformed edge", func() {
		es := parseErrs(edit("    frontend -> cart:", "    payments -> cart: {}\n    cart-payments: {}\n    frontend -> cart:"))
		Expect(es).To(HaveLen(2))
		msgs := []string{es[0].Msg, es[1].Msg}
		Expect(msgs).To(ContainElement(ContainSubstring(`"payments -> cart" is not an edge of the call graph (edges: cart -> payments, frontend -> cart, frontend -> payments, frontend -> recs)`)))
		Expect(msgs).To(ContainElement(ContainSubstring(`want an edge written CALLER -> CALLEE`)))
		for _, e := range es {
			Expect(e.Line).To(BeNumerically(">", 0))
		}
	})

	It("places an Envoy error of a merged edge at the level that set the field", func() {
		es := parseErrs(edit("cluster: {outlier_detection: {consecutive_5xx: 3}}", "cluster: {lb_policy: CLUSTER_PROVIDED}"))
		Expect(es).NotTo(BeEmpty())
		Expect(es[0].Path).To(HavePrefix("sidecars.services.cart.cluster.lb_policy"))
		Expect(es[0].Line).To(Equal(24))
		es = parseErrs(edit("route: {retry_policy: {retry_on: reset", "route: {cluster: x, retry_policy: {retry_on: reset"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("sidecars.edges.frontend -> cart.route.cluster"))
		Expect(es[0].Msg).To(ContainSubstring("(it is the callee) is generated from the topology"))
	})

	It("refuses bad capacities, on_failure and deadlines where they mean nothing", func() {
		es := parseErrs(edit("capacity: {workers: 4, queue: 8, queue_timeout: 50ms}", "capacity: {workers: 0, queue: -1, when_full: drop}"))
		Expect(es).To(HaveLen(3))
		Expect([]string{es[0].Path, es[1].Path, es[2].Path}).To(ConsistOf("services.cart.capacity.workers", "services.cart.capacity.queue", "services.cart.capacity.when_full"))
		es = parseErrs(edit("  recs: {}", "  recs: {on_failure: 502, propagate_deadline: true}"))
		Expect(es).To(HaveLen(2))
		Expect(es[0].Msg + es[1].Msg).To(And(ContainSubstring("recs makes no calls"), ContainSubstring("on_failure is the status")))
	})

	It("warns, at the level that set it, when a sidecar's outlier detection can never eject", func() {
		sc := parse(edit("cluster: {outlier_detection: {consecutive_5xx: 3}}", "cluster: {outlier_detection: {consecutive_5xx: 3, max_ejection_percent: 20}}"))
		Expect(sc.Warnings).To(HaveLen(1))
		w := sc.Warnings[0]
		Expect(w.Path).To(Equal("sidecars.services.cart.cluster.outlier_detection.max_ejection_percent"))
		Expect(w.Line).To(Equal(24))
		Expect(w.Msg).To(ContainSubstring("max_ejection_percent 20 with 3 hosts never allows an ejection"))
		Expect(w.Msg).To(ContainSubstring("edge cart -> payments"))
	})

	It("refuses a graph whose fan-out passes the bound of calls per request", func() {
		var b strings.Builder
		b.WriteString("name: fan\nservices:\n")
		for i := range 5 {
			b.WriteString("  s" + string(rune('0'+i)) + ":\n    calls: [" + strings.Repeat("s"+string(rune('1'+i))+", ", 20) + "]\n")
		}
		b.WriteString("  s5: {}\nproxies: {edge: {routes_to: s0}}\nload: {target: edge, rate: 1/s, duration: 1s}\n")
		es := parseErrs(b.String())
		Expect(es).To(HaveLen(1))
		Expect(es[0].Msg).To(ContainSubstring("causes more than 10000 calls"))
	})
})
