package scenarios_test

import (
	"errors"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("--set overrides (ParseWith)", func() {
	const file = `name: set
seed: 3
services:
  checkout:
    instances: 2
    response: {latency: 2ms}
proxies:
  edge:
    routes_to: checkout
    route:
      timeout: 1s
      retry_policy:
        retry_on: 5xx
        num_retries: 1
load: {target: edge, rate: 50/s, duration: 2s}
faults:
  - service: checkout
    instances: [0]
    abort: {status: 503, percent: 100}
checks:
  - success_rate >= 99%
`
	parse := func(settings ...scenarios.Setting) (*scenarios.Scenario, error) {
		return scenarios.ParseWith([]byte(file), "set.yaml", settings)
	}

	Context("a path to a field of the file", func() {
		It("changes an Envoy field of the route, decoded by the proxy's decoder", func() {
			sc, err := parse(scenarios.Setting{Path: "proxies.edge.route.retry_policy.num_retries", Value: "3"})
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Proxies["edge"].RouteAction.GetRetryPolicy().GetNumRetries().GetValue()).To(Equal(uint32(3)))
		})
		It("changes a scenario field, a list item's field and a duration", func() {
			sc, err := parse(
				scenarios.Setting{Path: "services.checkout.instances", Value: "4"},
				scenarios.Setting{Path: "faults[0].abort.percent", Value: "25"},
				scenarios.Setting{Path: "services.checkout.response.latency", Value: "250ms"},
			)
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Services["checkout"].Instances).To(Equal(4))
			Expect(sc.Faults[0].Abort.Percent).To(Equal(25.0))
			Expect(sc.Services["checkout"].Response.Latency.Duration).To(Equal(250 * time.Millisecond))
		})
		It("replaces a list item, and a whole list given as a flow value", func() {
			sc, err := parse(scenarios.Setting{Path: "faults[0].instances[0]", Value: "1"})
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Faults[0].Instances).To(Equal([]int{1}))
			sc, err = parse(scenarios.Setting{Path: "faults[0].instances", Value: "[0, 1]"})
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Faults[0].Instances).To(Equal([]int{0, 1}))
		})
		It("adds a field the file leaves at its default to the mapping that holds it", func() {
			sc, err := parse(scenarios.Setting{Path: "proxies.edge.route.retry_policy.per_try_timeout", Value: "0.2s"})
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Proxies["edge"].RouteAction.GetRetryPolicy().GetPerTryTimeout().AsDuration()).To(Equal(200 * time.Millisecond))
		})
		It("sets an anchored value in place, its aliases with it (a regression: the anchor was dropped)", func() {
			const anchored = `name: set
services:
  a: {instances: &n 2}
  b: {instances: *n}
proxies:
  edge: {routes: [{match: {prefix: /a}, route: {cluster: a}}, {match: {prefix: /}, route: {cluster: b}}]}
load: {target: edge, rate: 10/s, duration: 1s}
`
			sc, err := scenarios.ParseWith([]byte(anchored), "anchored.yaml", []scenarios.Setting{{Path: "services.a.instances", Value: "3"}})
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Services["a"].Instances).To(Equal(3))
			Expect(sc.Services["b"].Instances).To(Equal(3))
		})
		It("leaves the file as it is without settings (Parse's result)", func() {
			sc, err := parse()
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Proxies["edge"].RouteAction.GetRetryPolicy().GetNumRetries().GetValue()).To(Equal(uint32(1)))
		})
	})

	Context("a path that is not in the file", func() {
		DescribeTable("names the path, the first missing segment and the fields there",
			func(path, want string) {
				_, err := parse(scenarios.Setting{Path: path, Value: "1"})
				Expect(err).To(MatchError(want))
			},
			Entry("a misspelt intermediate key", "proxies.edge.route.retry_polcy.num_retries",
				`--set proxies.edge.route.retry_polcy.num_retries=1: set.yaml:10:5: proxies.edge.route: has no field "retry_polcy" (the first segment of the path missing from the file); fields here: timeout, retry_policy`),
			Entry("a service that does not exist", "services.payments.instances",
				`--set services.payments.instances=1: set.yaml:3:1: services: has no field "payments" (the first segment of the path missing from the file); fields here: checkout`),
			Entry("a list index past the end", "faults[2].abort.percent",
				`--set faults[2].abort.percent=1: set.yaml:16:1: faults: has 1 items (indexes 0 to 0): it has no item [2]`),
			Entry("a key under a scalar", "load.rate.per_second",
				`--set load.rate.per_second=1: set.yaml:15:22: load.rate: is the value "50/s", not a mapping: it has no field "per_second"`),
			Entry("an index on a mapping", "services[0].instances",
				`--set services[0].instances=1: set.yaml:3:1: services: is a mapping, not a list: it has no item [0]`),
		)
	})

	Context("a bad value", func() {
		It("is the loader's own error for the field, at its line, prefixed with the setting", func() {
			_, err := parse(scenarios.Setting{Path: "faults[0].abort.percent", Value: "150"})
			Expect(err).To(HaveOccurred())
			Expect(err.Error()).To(HavePrefix("--set faults[0].abort.percent=150: set.yaml:19:"))
			Expect(err.Error()).To(ContainSubstring("faults[0].abort.percent"))
			Expect(err.Error()).To(ContainSubstring("150 is out of range, want 0..100"))
			var se *scenarios.Error
			Expect(errors.As(err, &se)).To(BeTrue())
			Expect(se.Line).To(Equal(19))
		})
		It("names an unknown added field with the fields accepted there", func() {
			_, err := parse(scenarios.Setting{Path: "proxies.edge.route.retry_policy.num_retrys", Value: "2"})
			Expect(err).To(MatchError(And(
				HavePrefix("--set proxies.edge.route.retry_policy.num_retrys=2: "),
				ContainSubstring("num_retrys"),
			)))
		})
		It("is refused when it is not YAML", func() {
			_, err := parse(scenarios.Setting{Path: "services.checkout.instances", Value: "[1"})
			Expect(err).To(MatchError(HavePrefix(`--set services.checkout.instances=[1: the value "[1" is not YAML`)))
		})
	})
})

var _ = Describe("ParseSetFlag", func() {
	DescribeTable("splits PATH=v1,v2 at the commas outside quotes and brackets",
		func(arg, wantPath string, wantValues []string) {
			path, values, err := scenarios.ParseSetFlag(arg)
			Expect(err).NotTo(HaveOccurred())
			Expect(path).To(Equal(wantPath))
			Expect(values).To(Equal(wantValues))
		},
		Entry("numbers", "proxies.edge.route.retry_policy.num_retries=0,1,2", "proxies.edge.route.retry_policy.num_retries", []string{"0", "1", "2"}),
		Entry("durations", "services.a.response.latency=250ms, 1s", "services.a.response.latency", []string{"250ms", "1s"}),
		Entry("a quoted value with a comma", `x.retry_on="5xx,reset",5xx`, "x.retry_on", []string{`"5xx,reset"`, "5xx"}),
		Entry("flow lists", "faults[0].instances=[0,1],[2]", "faults[0].instances", []string{"[0,1]", "[2]"}),
	)
	DescribeTable("refuses a malformed argument",
		func(arg, want string) {
			_, _, err := scenarios.ParseSetFlag(arg)
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("no =", "services.a.instances", "want PATH=v1,v2"),
		Entry("no path", "=1,2", "want PATH=v1,v2"),
		Entry("an empty value", "a.b=1,,2", "an empty value"),
		Entry("an unclosed bracket", "a.b=[1,2", "unclosed"),
		Entry("a bad index", "faults[x].at=1s", `"faults[x]" is not a list index`),
		Entry("an empty segment", "a..b=1", "empty segment"),
	)
})
