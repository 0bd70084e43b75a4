package sim_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// oneInstance is one instance behind an ingress proxy, 2 requests a second for 3 s (one every 500 ms,
// each done long before the next: one keep-alive connection), with TCP toxics on it from 1 s to 2 s.
func oneInstance(timeout string, toxics string) string {
	return fmt.Sprintf(`
name: toxic
seed: 1
services:
  api: {instances: 1, response: {latency: 1ms}}
proxies:
  edge: {routes_to: api, route: {timeout: %s}}
load: {target: edge, rate: 2/s, duration: 3s}
faults:
  - service: api
    at: 1s
    for: 1s
    tcp:
      toxics:
%s
`, timeout, toxics)
}

func exampleScenario(name string) *scenarios.Scenario {
	GinkgoHelper()
	sc, err := scenarios.LoadFile(filepath.Join("..", "..", "scenarios", "examples", name))
	Expect(err).NotTo(HaveOccurred())
	return sc
}

func runSim(sc *scenarios.Scenario) *record.Record {
	GinkgoHelper()
	rec, err := plan.Run(context.Background(), sim.Runner{}, plan.New(sc, nil), plan.Options{})
	Expect(err).NotTo(HaveOccurred())
	return rec
}

// hop is the default one-way hop; a request without toxics takes 4 hops and the service's 1 ms, the
// first one 2 hops more for its connection.
const hop = sim.DefaultHop

var _ = Describe("TCP toxics", func() {
	// latencies are the samples' latencies and statuses.
	latencies := func(rec *record.Record) ([]time.Duration, []int) {
		var ds []time.Duration
		var st []int
		for _, s := range rec.Samples {
			ds, st = append(ds, s.Latency), append(st, s.Status)
		}
		return ds, st
	}
	plain := 4*hop + time.Millisecond

	DescribeTable("latency delays the exchanges in its window by its latency, in either stream",
		func(stream string) {
			rec := runSim(parse(oneInstance("1s", "        - {type: latency, latency: 300ms, stream: "+stream+"}")))
			ds, st := latencies(rec)
			// Sent at 0, 0.5, 1, 1.5, 2, 2.5 s; those at 1 and 1.5 s in the window.
			Expect(ds).To(Equal([]time.Duration{plain + 2*hop, plain, plain + 300*time.Millisecond, plain + 300*time.Millisecond, plain, plain}))
			Expect(st).To(Equal([]int{200, 200, 200, 200, 200, 200}))
			Expect(rec.Upstreams[0].Requests).To(BeEquivalentTo(6))
			// The only connection opened before the window: no "applies" event (see tcpFront).
			Expect(rec.Events).To(BeEmpty())
		},
		Entry("downstream", "downstream"),
		Entry("upstream", "upstream"),
	)

	It("delays a response the proxy gave up on: the instance served it (downstream), or never saw it (upstream)", func() {
		for stream, served := range map[string]uint64{"downstream": 6, "upstream": 4} {
			rec := runSim(parse(oneInstance("0.1s", "        - {type: latency, latency: 300ms, stream: "+stream+"}")))
			ds, st := latencies(rec)
			timedOut := 2*hop + 100*time.Millisecond // the proxy's timeout from its request's arrival
			Expect(st).To(Equal([]int{200, 200, 504, 504, 200, 200}), stream)
			Expect(ds[2]).To(Equal(timedOut), stream)
			// The proxy closed each connection it gave up on: the next request opens another, its connect
			// inside the route timeout, which counts from the request's arrival at the proxy.
			Expect(ds[3]).To(Equal(timedOut), stream)
			Expect(ds[4]).To(Equal(plain+2*hop), stream)
			Expect(rec.Upstreams[0].Requests).To(Equal(served), stream)
			Expect(rec.ProxyStats["cluster.api.upstream_cx_total"]).To(BeEquivalentTo(3), stream)
			// Connection 2 was opened in the window (for the request of 1.5 s), connection 3 after it.
			var seqs []uint64
			for _, e := range rec.Events {
				Expect(e.Kind).To(Equal("tcp_latency"))
				Expect(e.Fault).To(Equal("faults[0]"))
				Expect(e.Detail).To(Equal("applies"))
				Expect(e.At).To(Equal(1500*time.Millisecond + 2*hop)) // its SYN at the front
				seqs = append(seqs, e.Seq)
			}
			Expect(seqs).To(Equal([]uint64{2}), stream)
		}
	})

	It("timeout 0 drops the data: the exchange hangs until the proxy's timeout", func() {
		for stream, served := range map[string]uint64{"downstream": 6, "upstream": 4} {
			rec := runSim(parse(oneInstance("0.2s", "        - {type: timeout, stream: "+stream+"}")))
			ds, st := latencies(rec)
			Expect(st).To(Equal([]int{200, 200, 504, 504, 200, 200}), stream)
			Expect(ds[2]).To(Equal(2*hop+200*time.Millisecond), stream)
			Expect(rec.Upstreams[0].Requests).To(Equal(served), stream)
		}
	})

	It("down closes the listener for its window: connections refused, then reopened, with the live events", func() {
		rec := runSim(parse(oneInstance("1s", "        - {type: down}")))
		_, st := latencies(rec)
		Expect(st).To(Equal([]int{200, 200, 503, 503, 200, 200}))
		Expect(rec.Upstreams[0].Requests).To(BeEquivalentTo(4))
		Expect(rec.Events).To(Equal([]record.FaultEvent{
			{At: time.Second, Service: "api", Fault: "faults[0]", Kind: "tcp_down", Detail: "listener closed"},
			{At: 2 * time.Second, Service: "api", Fault: "", Kind: "tcp_down", Detail: "listener reopened"},
		}))
	})

	It("down closes the connections in flight: the proxy sees them close at the window's start", func() {
		yaml := strings.Replace(oneInstance("2s", "        - {type: down}"), "response: {latency: 1ms}", "response: {latency: 700ms}", 1)
		rec := runSim(parse(yaml))
		// Sent at 0.5 s, at the instance until 1.2 s: closed at 1 s, the close at the proxy one hop later,
		// its 503 at the client one more.
		s := rec.Samples[1]
		Expect(s.Status).To(Equal(503))
		Expect(s.Latency).To(Equal(500*time.Millisecond + 2*hop))
		// Its work at the instance saw its client gone.
		Expect(rec.Upstreams[0].Canceled).To(BeEquivalentTo(1))
	})

	It("runs the tcp-partial-failure example with its checks passing", Label("slow"), func() {
		sc := exampleScenario("tcp-partial-failure.yaml")
		rec := runSim(sc)
		rep := reports.NewReport(rec, sc.CheckList())
		Expect(rep.Passed).To(BeTrue())
	})

	DescribeTable("refuses by name the toxics it cannot model",
		func(toxic, part string) {
			err := sim.Runner{}.Supports(plan.New(parse(oneInstance("1s", "        - "+toxic)), nil), plan.Options{})
			Expect(err).To(MatchError(plan.ErrUnsupported))
			Expect(err).To(MatchError(ContainSubstring("faults[0].tcp.toxics[0]: " + part)))
		},
		Entry("a toxicity between 0 and 100", "{type: latency, latency: 1ms, toxicity: 50}", "toxicity 50"),
		Entry("jitter", "{type: latency, latency: 1ms, jitter: 1ms}", "latency jitter"),
		Entry("bandwidth", "{type: bandwidth, rate: 10}", "toxic bandwidth"),
		Entry("slicer", "{type: slicer, average_size: 10}", "toxic slicer"),
		Entry("limit_data", "{type: limit_data, bytes: 10}", "toxic limit_data"),
		Entry("slow_close", "{type: slow_close, delay: 1s}", "toxic slow_close"),
		Entry("reset_peer", "{type: reset_peer}", "toxic reset_peer"),
		Entry("timeout with a timeout", "{type: timeout, timeout: 1s}", "timeout with a timeout"),
	)

	It("refuses a downstream latency on responses of more than one chunk", func() {
		yaml := oneInstance("1s", "        - {type: latency, latency: 1ms}")
		sc := parse(yaml)
		sc.Services["api"].Response.Size = 64 << 10
		err := sim.Runner{}.Supports(plan.New(sc, nil), plan.Options{})
		Expect(err).To(MatchError(ContainSubstring("latency on the responses of api")))
	})
})

const mtlsMesh = `
name: mtls
seed: 1
mesh: {mtls: true, rotate_every: 2s}
services:
  api: {instances: 2, response: {latency: 1ms}}
proxies:
  edge: {routes_to: api, route: {timeout: 1s}, cluster: {lb_policy: ROUND_ROBIN}}
load: {target: edge, rate: 1/s, duration: 5s}
`

var _ = Describe("mesh.mtls", func() {
	It("makes a handshake on each new connection, counts it under the live names, rotates on virtual time", func() {
		rec := runSim(parse(mtlsMesh))
		// Round robin: one connection to each instance, each with its handshake (2 hops more).
		Expect(rec.Samples[0].Latency).To(Equal(8*hop + time.Millisecond))
		Expect(rec.Samples[1].Latency).To(Equal(8*hop + time.Millisecond))
		Expect(rec.Samples[2].Latency).To(Equal(4*hop + time.Millisecond))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.api.ssl.handshake", uint64(2)))
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.api.ssl.connection_error", uint64(0)))
		Expect(rec.Upstreams[0].TLSHandshakes).To(BeEquivalentTo(1))
		Expect(rec.Upstreams[1].TLSHandshakes).To(BeEquivalentTo(1))
		// The load ends at 4 s and a bit: rounds re-issued at 2 s and 4 s. Both handshakes (at 0 and 1 s)
		// with the ingress proxy's first certificate.
		Expect(rec.MTLS).To(Equal(&record.MTLS{Workloads: 2, Rotations: 2, ClientCertificates: 1}))
		outcome := reports.NewReport(rec, parse(mtlsMesh+"checks: [ssl_handshakes == 2, ssl_handshake_errors == 0, cert_rotations == 2]\n").CheckList())
		Expect(outcome.Passed).To(BeTrue())
	})

	It("leaves a plain mesh without TLS", func() {
		rec := runSim(parse(abortOneOfThree))
		Expect(rec.MTLS).To(BeNil())
		Expect(rec.ProxyStats).NotTo(HaveKey("cluster.api.ssl.handshake"))
		// 6 hops (a connect), the service's 1 ms and the 100-byte body at 1 GiB/s: no handshake.
		Expect(rec.Samples[0].Latency).To(BeNumerically("~", 6*hop+time.Millisecond, time.Microsecond))
	})

	It("runs the mesh-mtls example with its checks passing", Label("slow"), func() {
		sc := exampleScenario("mesh-mtls.yaml")
		rec := runSim(sc)
		Expect(reports.NewReport(rec, sc.CheckList()).Passed).To(BeTrue())
	})
})
