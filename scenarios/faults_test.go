package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("InstanceFaults", func() {
	It("gives each instance the rules that target it, named after their place in the file, with defaults", func() {
		sc, err := scenarios.Parse([]byte(valid), "demo.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.InstanceFaults("backend", 2)).To(Equal([]faults.Fault{
			{Name: "faults[0]", Start: time.Second, Duration: 500 * time.Millisecond, Abort: &faults.Abort{Status: 503, Percent: 50}},
			{Name: "faults[1]", Reset: &faults.Reset{Percent: 100}},
		}))
		Expect(sc.InstanceFaults("backend", 0)).To(Equal([]faults.Fault{{Name: "faults[1]", Reset: &faults.Reset{Percent: 100}}}))
		Expect(sc.InstanceFaults("other", 0)).To(BeEmpty())
		Expect(sc.Services["backend"].FaultResponse()).To(Equal(faults.Response{Status: 200, Size: 64, Latency: 2 * time.Millisecond}))
	})
})

const catalogue = `name: catalogue
seed: 9
services:
  api: {instances: 5}
proxies:
  edge: {routes_to: api}
load: {target: edge, rate: 10/s, duration: 4s}
faults:
  - service: api
    instances: [0]
    at: 1s
    for: 2s
    match: {path_prefix: /checkout, method: POST}
    first: 3
    latency: {lognormal: {median: 20ms, p99: 200ms}, jitter: 5ms}
    abort: {grpc_status: 14, percent: 10}
  - service: api
    share: 40%
    flap: {down: 500ms, up: 1s}
    refuse: {}
  - service: api
    instances: [4]
    tcp:
      toxics:
        - {type: latency, latency: 100ms}
        - {type: bandwidth, rate: 10, stream: upstream, toxicity: 25}
`

var _ = Describe("the fault catalogue in a scenario", func() {
	It("decodes every kind with its targeting and schedule, defaulting percent and toxicity to 100", func() {
		sc, err := scenarios.Parse([]byte(catalogue), "catalogue.yaml")
		Expect(err).NotTo(HaveOccurred())
		f := sc.Faults[0]
		Expect(f.Start).To(Equal(time.Second))
		Expect(f.Duration).To(Equal(2 * time.Second))
		Expect(f.Match).To(Equal(&faults.Match{PathPrefix: "/checkout", Method: "POST"}))
		Expect(f.First).To(Equal(3))
		Expect(f.Latency.LogNormal).To(Equal(&faults.LogNormal{Median: 20 * time.Millisecond, P99: 200 * time.Millisecond}))
		Expect(f.Latency.Percent).To(BeNumerically("==", 100))
		Expect(f.Abort).To(Equal(&faults.Abort{GRPCStatus: 14, Percent: 10}))

		Expect(sc.Faults[1].Instances).To(HaveLen(2), "40% of 5 instances")
		again, err := scenarios.Parse([]byte(catalogue), "catalogue.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(again.Faults[1].Instances).To(Equal(sc.Faults[1].Instances), "the same instances for the same seed")

		Expect(sc.InstanceFaults("api", 4)).To(BeEmpty(), "a TCP-only rule is not an HTTP fault")
		windows := sc.InstanceTCPFaults("api", 4)
		Expect(windows).To(HaveLen(1))
		Expect(windows[0].Name).To(Equal("faults[2]"))
		Expect(windows[0].Toxics[0].Toxicity).To(BeNumerically("==", 100))
		Expect(windows[0].Toxics[1].Toxicity).To(BeNumerically("==", 25))
	})

	DescribeTable("rejects bad fault fields at their line",
		func(old, new string, line int, field, msg string) {
			_, err := scenarios.Parse([]byte(strings.Replace(catalogue, old, new, 1)), "catalogue.yaml")
			errs := errorsOf(err)
			Expect(errs).NotTo(BeEmpty(), "%v", err)
			Expect(errs[0].Line).To(Equal(line), err.Error())
			Expect(errs[0].Path).To(Equal(field), err.Error())
			Expect(errs[0].Msg).To(ContainSubstring(msg))
		},
		Entry("a bad duration", "at: 1s", "at: soon", 11, "faults[0].at", `time: invalid duration "soon"; want a duration such as "250ms"`),
		Entry("an unknown toxic type", "{type: bandwidth,", "{type: bandwitdh,", 26, "faults[2].tcp.toxics[1].type", "bandwitdh"),
		Entry("instances and share together", "share: 40%", "share: 40%\n    instances: [1]", 18, "faults[1].share", "not both"),
		Entry("an unknown field in a kind", "latency: {lognormal:", "latency: {lognormall:", 15, "faults[0].latency.lognormall", `unknown field "lognormall"; accepted here: fixed, uniform, normal, lognormal, pareto, jitter, max, percent`),
	)
})

var _ = Describe("container faults", func() {
	doc := func(rule string) string {
		return "name: c\nservices: {api: {instances: 3}}\nproxies: {edge: {routes_to: api}}\nload: {target: edge, rate: 10/s, duration: 5s}\nfaults:\n" + rule
	}

	It("expands a rule to one container fault per targeted instance, named after the rule", func() {
		sc, err := scenarios.Parse([]byte(doc("  - {service: api, instances: [0, 2], at: 1s, for: 2s, container: partition}\n")), "c.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(sc.ContainerFaults()).To(Equal([]scenarios.ContainerRule{
			{Name: "faults[0]", Service: "api", Instance: 0, Start: time.Second, Duration: 2 * time.Second, Kind: "partition"},
			{Name: "faults[0]", Service: "api", Instance: 2, Start: time.Second, Duration: 2 * time.Second, Kind: "partition"},
		}))
		Expect(sc.InstanceFaults("api", 0)).To(BeEmpty(), "not an HTTP fault")
		Expect(sc.Windows()[0].Kind).To(Equal("partition"))
	})

	DescribeTable("rejects",
		func(rule, msg string) {
			_, err := scenarios.Parse([]byte(doc(rule)), "c.yaml")
			Expect(err).To(MatchError(ContainSubstring(msg)))
		},
		Entry("an unknown kind", "  - {service: api, container: explode}\n", `faults[0].container: "explode" is not accepted: one of kill, pause, partition, restart`),
		Entry("a rule mixing kinds", "  - {service: api, container: kill, abort: {status: 503}}\n", "a container fault stands alone in its rule"),
	)
})
