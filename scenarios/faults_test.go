package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/reports/record"
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

var _ = Describe("Windows of a flapping rule", func() {
	doc := func(rule string) string {
		return "name: f\nservices: {api: {instances: 3}}\nproxies: {edge: {routes_to: api}}\nload: {target: edge, rate: 10/s, duration: 20s}\nfaults:\n" + rule
	}
	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }

	It("records each down period within the window, by the instances' own schedule (faults.Fault.Active)", func() {
		sc, err := scenarios.Parse([]byte(doc(
			"  - {service: api, instances: [1], at: 10s, for: 6s, flap: {down: 1s, up: 2s, offset: 500ms}, abort: {status: 503}}\n"+
				"  - {service: api, at: 1s, for: 2200ms, flap: {down: 1s, up: 1s}, refuse: {}}\n"+
				"  - {service: api, at: 17s, flap: {down: 1s, up: 500ms}, reset: {}}\n"+
				"  - {service: api, at: 2s, for: 1s, abort: {status: 500}}\n")), "f.yaml")
		Expect(err).NotTo(HaveOccurred())
		ws := sc.Windows()
		// faults[0]: down from at + offset = 10.5s for 1s, then up 2s: [10.5s, 11.5s), [13.5s, 14.5s);
		// the next would start at 16.5s, after the window's end at 10s + 6s = 16s.
		Expect(ws[0].Down).To(Equal([]record.Period{{Start: ms(10500), End: ms(11500)}, {Start: ms(13500), End: ms(14500)}}))
		// faults[1]: [1s, 2s), then [3s, 4s) clipped to the window's end at 1s + 2.2s = 3.2s.
		Expect(ws[1].Down).To(Equal([]record.Period{{Start: ms(1000), End: ms(2000)}, {Start: ms(3000), End: ms(3200)}}))
		// faults[2], open-ended: period 1.5s from 17s, until the planned load end at 20s:
		// [17s, 18s), [18.5s, 19.5s); the next would start at 20s.
		Expect(ws[2].Down).To(Equal([]record.Period{{Start: ms(17000), End: ms(18000)}, {Start: ms(18500), End: ms(19500)}}))
		Expect(ws[3].Down).To(BeEmpty(), "a rule that does not flap is active its whole window")

		// Every instant of each down period is active by faults' own schedule, and none between, until
		// the planned load end (20s).
		for i, w := range ws[:3] {
			rule := sc.InstanceFaults("api", 1)[i]
			for t := w.Start; t < min(w.Start+6*time.Second, 20*time.Second); t += 50 * time.Millisecond {
				in := false
				for _, p := range w.Down {
					in = in || t >= p.Start && t < p.End
				}
				Expect(rule.Active(t)).To(Equal(in), "%s at %v", w.Name, t)
			}
		}
	})
})
