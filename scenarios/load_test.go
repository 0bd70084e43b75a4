package scenarios_test

import (
	"errors"
	"path/filepath"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

const valid = `name: demo
seed: 7
services:
  backend:
    instances: 3
    response: {latency: 2ms, size: 64}
proxies:
  edge:
    routes_to: backend
    route:
      timeout: 1s
      retry_policy: {retry_on: "5xx,reset", num_retries: 2, per_try_timeout: 0.2s}
    cluster: {connect_timeout: 0.25s, lb_policy: ROUND_ROBIN}
load:
  target: edge
  rate: 100/s
  duration: 2s
faults:
  - {service: backend, instances: [2], at: 1s, for: 500ms, abort: {status: 503, percent: 50}}
  - {service: backend, reset: {}}
checks:
  - success_rate >= 99%
  - p99 < 50ms
`

// replace swaps one line of the valid scenario for another (or several).
func replace(old, new string) string {
	GinkgoHelper()
	Expect(valid).To(ContainSubstring(old))
	return strings.Replace(valid, old, new, 1)
}

// errorsOf lists the scenario errors inside err.
func errorsOf(err error) []*scenarios.Error {
	var out []*scenarios.Error
	var joined interface{ Unwrap() []error }
	if errors.As(err, &joined) {
		for _, e := range joined.Unwrap() {
			out = append(out, errorsOf(e)...)
		}
		return out
	}
	var se *scenarios.Error
	if errors.As(err, &se) {
		return append(out, se)
	}
	return out
}

var _ = Describe("Parse", func() {
	It("decodes a valid scenario with its defaults and Envoy fields", func() {
		sc, err := scenarios.Parse([]byte(valid), "demo.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Name).To(Equal("demo"))
		Expect(sc.Seed).To(BeEquivalentTo(7))
		Expect(sc.Services["backend"].Instances).To(Equal(3))
		Expect(sc.Services["backend"].Response.Status).To(Equal(200), "default status")
		Expect(sc.Services["backend"].Response.Latency.Duration).To(Equal(2 * time.Millisecond))
		Expect(sc.Load.Rate.PerSecond).To(BeNumerically("==", 100))
		Expect(sc.Load.Path).To(Equal("/"))
		Expect(sc.Load.Method).To(Equal("GET"))
		Expect(sc.Load.Timeout.Duration).To(Equal(30 * time.Second))
		Expect(sc.Faults[0].Start).To(Equal(time.Second))
		Expect(sc.Faults[0].Abort.Percent).To(BeNumerically("==", 50))
		Expect(sc.Faults[1].Reset.Percent).To(BeNumerically("==", 100), "percent defaults to 100")
		Expect(sc.Proxies["edge"].RouteAction.GetRetryPolicy().GetNumRetries().GetValue()).To(BeEquivalentTo(2))
		Expect(sc.Proxies["edge"].ClusterSpec.GetConnectTimeout().AsDuration()).To(Equal(250 * time.Millisecond))
		Expect(sc.Checks).To(HaveLen(2))
		Expect(sc.Checks[1].Line).To(Equal(23))
	})

	It("builds a bootstrap the proxy accepts, with the topology's endpoints", func() {
		sc, err := scenarios.Parse([]byte(valid), "demo.yaml")
		Expect(err).NotTo(HaveOccurred())
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0",
			Endpoints: map[string][]string{"backend": {"127.0.0.1:7001", "127.0.0.1:7002", "127.0.0.1:7003"}}})
		Expect(err).NotTo(HaveOccurred())
		cfg, err := config.FromProto(b)
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Clusters).To(HaveLen(1))
		Expect(cfg.Clusters[0].Name).To(Equal("backend"))
		Expect(cfg.Clusters[0].Endpoints).To(HaveLen(3))
		Expect(cfg.Clusters[0].Endpoints[2].Address).To(Equal("127.0.0.1:7003"))
		route := cfg.Listeners[0].Routes.VirtualHosts[0].Routes[0]
		Expect(route.Action.Cluster).To(Equal("backend"))
		Expect(route.Action.Timeout).To(Equal(time.Second))
		Expect(route.Action.RetryPolicy.PerTryTimeout).To(Equal(200 * time.Millisecond))
	})

	DescribeTable("rejects bad input with file, line, field and what is accepted",
		func(doc string, line int, field string, msg string) {
			_, err := scenarios.Parse([]byte(doc), "bad.yaml")
			Expect(err).To(HaveOccurred())
			errs := errorsOf(err)
			Expect(errs).NotTo(BeEmpty(), "every error is a *scenarios.Error: %v", err)
			Expect(errs[0].File).To(Equal("bad.yaml"))
			Expect(errs[0].Line).To(Equal(line), err.Error())
			Expect(errs[0].Path).To(Equal(field), err.Error())
			Expect(errs[0].Msg).To(ContainSubstring(msg))
			Expect(err.Error()).To(HavePrefix("bad.yaml:%d:", line))
		},
		Entry("an unknown top-level field", replace("seed: 7", "seed: 7\nsed: 8"), 3, "sed", `unknown field "sed"`),
		Entry("an unknown nested field lists the accepted ones", replace("response: {latency: 2ms, size: 64}", "respnse: {latency: 2ms}"), 6, "services.backend.respnse", "accepted here: instances, response"),
		Entry("a malformed file", replace("  backend:", "  backend: [unclosed"), 6, "", "must be specified"),
		Entry("a bad duration", replace("duration: 2s", "duration: soon"), 17, "load.duration", `"soon" is not a duration such as "250ms"`),
		Entry("a bad rate", replace("rate: 100/s", "rate: fast"), 16, "load.rate", `a rate such as "200/s"`),
		Entry("a percentage above 100", replace("percent: 50", "percent: 150"), 19, "faults[0].abort.percent", "150 is out of range, want 0..100"),
		Entry("a service that does not exist", replace("routes_to: backend", "routes_to: frontend"), 9, "proxies.edge.routes_to", `"frontend" is not a service of this scenario (services: backend)`),
		Entry("an instance that does not exist", replace("instances: [2]", "instances: [3]"), 19, "faults[0].instances[0]", "instance 3 does not exist: backend has instances 0 to 2"),
		Entry("a fault without a kind", replace("  - {service: backend, reset: {}}", "  - {service: backend}"), 20, "faults[1]", "{latency,abort,reset,hang,slow_body,close_after,size,h2,refuse}: none set, want at least one"),
		Entry("an abort status out of range", replace("status: 503", "status: 700"), 19, "faults[0].abort.status", "700 is out of range, want 200..599"),
		Entry("a load target that is not a proxy", replace("target: edge", "target: nowhere"), 15, "load.target", `"nowhere" is not a proxy`),
		Entry("a bad check", replace("p99 < 50ms", "p99 < fast"), 23, "checks[1]", ""),
		Entry("a check scoped to a fault rule that does not exist", replace("p99 < 50ms", "during faults[7]: p99 < 50ms"), 23, "checks[1]", "faults[7]"),
		Entry("an unknown Envoy field, by its path", replace("num_retries: 2,", "num_retriez: 2,"), 12, "proxies.edge.route.retry_policy.num_retriez", ""),
		Entry("an Envoy field meshproof does not support", replace("lb_policy: ROUND_ROBIN}", "lb_policy: ROUND_ROBIN, dns_lookup_family: V4_ONLY}"), 13, "proxies.edge.cluster.dns_lookup_family", "not supported"),
		Entry("an Envoy value the proxy rejects, at its line", replace(`retry_on: "5xx,reset"`, `retry_on: "5xx,sometimes"`), 12, "proxies.edge.route.retry_policy.retry_on", `unknown retry condition "sometimes"`),
		Entry("several Envoy fields are all reported, first one first", replace("timeout: 1s\n", "timeout: fast\n"), 11, "proxies.edge.route.timeout", `want a duration such as "0.25s"`),
		Entry("an Envoy field the topology generates", replace("timeout: 1s\n", "timeout: 1s\n      cluster: other\n"), 12, "proxies.edge.route.cluster", "generated from the topology"),
	)

	It("reports every semantic error at once", func() {
		doc := replace("routes_to: backend", "routes_to: frontend")
		doc = strings.Replace(doc, "target: edge", "target: nowhere", 1)
		_, err := scenarios.Parse([]byte(doc), "bad.yaml")
		Expect(errorsOf(err)).To(HaveLen(2))
	})

	It("rejects an empty file and a file of several documents", func() {
		_, err := scenarios.Parse([]byte(""), "empty.yaml")
		Expect(err).To(MatchError(ContainSubstring("empty.yaml:1:1: expected exactly one YAML document")))
		_, err = scenarios.Parse([]byte(valid+"---\n"+valid), "two.yaml")
		Expect(err).To(MatchError(ContainSubstring("found 2")))
	})

	It("loads every example scenario", func() {
		files, err := filepath.Glob("examples/*.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(len(files)).To(BeNumerically(">=", 3))
		for _, f := range files {
			_, err := scenarios.LoadFile(f)
			Expect(err).NotTo(HaveOccurred(), f)
		}
	})
})

var _ = Describe("load phases", func() {
	const phased = `name: phased
services: {api: {instances: 1}}
proxies: {edge: {routes_to: api}}
load:
  target: edge
  phases:
    - {name: warmup, duration: 2s, rate: 50/s}
    - {name: ramp, duration: 4s, ramp: {from: 50/s, to: 150/s}}
    - {name: spike, duration: 3s, burst: {requests: 20, every: 1s}}
checks:
  - during phase ramp: p99 < 100ms
`
	It("records the phases' spans and the planned mean rate", func() {
		sc, err := scenarios.Parse([]byte(phased), "p.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.Load.Total()).To(Equal(9 * time.Second))
		rec := sc.NewRecord(0, time.Time{}, nil)
		Expect(rec.Phases).To(Equal([]record.LoadPhase{
			{Name: "warmup", Start: 0, End: 2 * time.Second},
			{Name: "ramp", Start: 2 * time.Second, End: 6 * time.Second},
			{Name: "spike", Start: 6 * time.Second, End: 9 * time.Second},
		}))
		Expect(rec.Duration).To(Equal(9 * time.Second))
		Expect(rec.TargetRate).To(BeNumerically("~", (100.0+400+60)/9, 1e-9)) // 2·50 + 4·100 + 3·20
	})

	DescribeTable("rejects",
		func(old, new, msg string) {
			_, err := scenarios.Parse([]byte(strings.Replace(phased, old, new, 1)), "p.yaml")
			Expect(err).To(MatchError(ContainSubstring(msg)))
		},
		Entry("a phase with two kinds", "rate: 50/s}", "rate: 50/s, burst: {requests: 1, every: 1s}}", "load.phases[0]: want exactly one of rate, ramp"),
		Entry("a duplicate name", "name: ramp", "name: warmup", `load.phases[1].name: "warmup" is already the name of another phase`),
		Entry("phases and a rate", "  target: edge\n", "  target: edge\n  rate: 10/s\n", "give phases, or rate and duration, not both"),
		Entry("a check scoped to a phase that does not exist", "during phase ramp:", "during phase rampe:", "rampe"),
	)
})
