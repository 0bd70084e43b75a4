package scenarios_test

import (
	"os"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/scenarios"
)

// Every fault kind the model knows (faults.Kinds) is listed, defaulted, documented and named in
// messages by the scenario without a list of its own (issue #12).
var _ = Describe("every fault kind", func() {
	const allKinds = `name: kinds
services: {api: {instances: 2}}
proxies: {edge: {routes_to: api}}
load: {target: edge, rate: 10/s, duration: 4s}
faults:
  - service: api
    instances: [0]
    latency: {fixed: 1ms}
    abort: {status: 503}
    reset: {after_bytes: 10}
    hang: {}
    slow_body: {bytes_per_second: 100}
    close_after: {bytes: 5}
    size: {bytes: 50}
    h2: {rst_stream: CANCEL}
  - {service: api, instances: [1], refuse: {}, tcp: {toxics: [{type: down}]}}
  - {service: api, container: kill}
`
	var sc *scenarios.Scenario
	BeforeEach(func() {
		var err error
		sc, err = scenarios.Parse([]byte(allKinds), "kinds.yaml")
		Expect(err).NotTo(HaveOccurred())
	})

	It("is listed in the rule's kinds, in the model's order, then tcp and the container kind", func() {
		Expect(sc.Faults[0].Kinds()).To(Equal(faults.KindNames()[:8]))
		Expect(sc.Faults[1].Kinds()).To(Equal([]string{"refuse", "tcp"}))
		Expect(sc.Faults[2].Kinds()).To(Equal([]string{"kill"}))
		Expect(sc.Windows()[1].Kind).To(Equal("refuse+tcp"))
	})

	It("gets percent 100 when written without one", func() {
		f := sc.Faults[0].Fault
		for _, k := range faults.Kinds() {
			if p := k.Percent(&f); p != nil {
				Expect(*p).To(BeEquivalentTo(100), k.Name)
			}
		}
		Expect(sc.InstanceFaults("api", 0)).To(HaveLen(1), "an HTTP rule")
		Expect(sc.InstanceFaults("api", 1)).To(HaveLen(1), "refuse is one of the upstream's kinds")
	})

	It("is named when a rule is empty", func() {
		_, err := scenarios.Parse([]byte("name: e\nservices: {api: {}}\nproxies: {edge: {routes_to: api}}\nload: {target: edge, rate: 1/s, duration: 1s}\nfaults:\n  -\n"), "e.yaml")
		Expect(err).To(MatchError("e.yaml:6:5: faults[0]: a fault needs a service and one of " +
			"latency, abort, reset, hang, slow_body, close_after, size, h2, refuse, tcp, container"))
	})

	It("has a row in README.md's table of faults", func() {
		readme, err := os.ReadFile("README.md")
		Expect(err).NotTo(HaveOccurred())
		for _, name := range faults.KindNames() {
			Expect(string(readme)).To(ContainSubstring("| `"+name+": "), name)
		}
	})
})
