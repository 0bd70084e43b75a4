package scenarios_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/scenarios"
)

// Issue #13, defect 4: gaps in validation. Each case's file is the spec file's valid scenario with one
// change (backend has instances 0..2; the load lasts 2s).
var _ = Describe("validation gaps", func() {
	parseErrs := func(data string) []*scenarios.Error {
		GinkgoHelper()
		_, err := scenarios.Parse([]byte(data), "gaps.yaml")
		Expect(err).To(HaveOccurred())
		return errorsOf(err)
	}

	It("refuses ejected() of an instance the service does not have", func() {
		es := parseErrs(replace("  - p99 < 50ms", "  - during fault: ejected(backend/7) within 2s"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("checks[1]"))
		Expect(es[0].Line).To(Equal(23))
		Expect(es[0].Msg).To(Equal("ejected(backend/7): instance 7 does not exist: backend has instances 0 to 2"))
	})

	It("refuses ejected() of an unknown service, and a host that is not SERVICE/INSTANCE", func() {
		es := parseErrs(replace("  - p99 < 50ms", "  - ejected(checkout/0)\n  - ejected(10.0.0.1:80)"))
		Expect(es).To(HaveLen(2))
		Expect(es[0].Msg).To(ContainSubstring(`"checkout" is not a service of this scenario (services: backend)`))
		Expect(es[1].Msg).To(Equal("ejected(10.0.0.1:80): want SERVICE/INSTANCE, e.g. ejected(backend/0)"))
	})

	It("refuses a fault window that starts when the load has ended", func() {
		es := parseErrs(replace("at: 1s, for: 500ms", "at: 2s, for: 500ms"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("faults[0].at"))
		Expect(es[0].Msg).To(Equal("starts at 2s, when the load (2s) has ended: no request would meet it"))
	})

	It("reports a check's syntax error together with every other error, in one pass", func() {
		data := replace("  - p99 < 50ms", "  - p99 <<< 50ms")
		data = replaceIn(data, "instances: 3", "instances: 0.5x")
		data = replaceIn(data, "target: edge", "target: nowhere")
		es := parseErrs(data)
		// The type error stops decoding (nothing after it can be trusted); the check error and the
		// semantic error come together once the file decodes.
		Expect(es).To(HaveLen(1))
		es = parseErrs(replaceIn(data, "instances: 0.5x", "instances: 3"))
		Expect(es).To(ConsistOf(
			And(HaveField("Path", "checks[1]"), HaveField("Msg", ContainSubstring(`unknown operator "<<<"`))),
			HaveField("Path", "load.target"),
		))
	})

	Context("legal settings with a surprising consequence are accepted, with a warning", func() {
		It("warns that a per_try_timeout longer than the route timeout never fires", func() {
			sc, err := scenarios.Parse([]byte(replace("per_try_timeout: 0.2s", "per_try_timeout: 2s")), "gaps.yaml")
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Warnings).To(HaveLen(1))
			Expect(sc.Warnings[0].Path).To(Equal("proxies.edge.route.retry_policy.per_try_timeout"))
			Expect(sc.Warnings[0].Line).To(Equal(12))
			Expect(sc.Warnings[0].Msg).To(HavePrefix("warning: per_try_timeout 2s is longer than the route timeout 1s"))
		})

		It("warns that max_ejection_percent can never let one of the cluster's hosts be ejected", func() {
			// Envoy ejects while 100·(ejected+1) <= max%·hosts: with 3 hosts and the default 10%,
			// 100 > 30, so the first ejection is never allowed; 34% is the least that allows it.
			sc, err := scenarios.Parse([]byte(replace("lb_policy: ROUND_ROBIN}", "lb_policy: ROUND_ROBIN, outlier_detection: {consecutive_5xx: 3}}")), "gaps.yaml")
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Warnings).To(HaveLen(1))
			Expect(sc.Warnings[0].Msg).To(Equal("warning: max_ejection_percent 10 with 3 hosts never allows an ejection (one host is 33.33% of the cluster): outlier detection will detect but never eject; raise it to at least 34 or set always_eject_one_host"))

			for _, ok := range []string{"max_ejection_percent: 34", "always_eject_one_host: true"} {
				sc, err = scenarios.Parse([]byte(replace("lb_policy: ROUND_ROBIN}", "lb_policy: ROUND_ROBIN, outlier_detection: {consecutive_5xx: 3, "+ok+"}}")), "gaps.yaml")
				Expect(err).NotTo(HaveOccurred())
				Expect(sc.Warnings).To(BeEmpty(), ok)
			}
		})

		It("has no warning for the valid scenario", func() {
			sc, err := scenarios.Parse([]byte(valid), "gaps.yaml")
			Expect(err).NotTo(HaveOccurred())
			Expect(sc.Warnings).To(BeEmpty())
		})
	})
})

// replaceIn swaps one occurrence of old in s for new, failing the spec when old is absent.
func replaceIn(s, old, new string) string {
	GinkgoHelper()
	Expect(s).To(ContainSubstring(old))
	return strings.Replace(s, old, new, 1)
}

// Issue #18 (FuzzParse finding): a fault on an instance of a service written empty panicked.
var _ = Describe("a fault on a service written empty", func() {
	It("is refused with the service's own error, without a crash", func() {
		_, err := scenarios.Parse([]byte("name: x\nservices:\n  backend:\nproxies: {edge: {routes_to: backend}}\nload: {target: edge, rate: 1/s, duration: 1s}\nfaults:\n- {service: backend, instances: [0], abort: {status: 503}}\n"), "empty.yaml")
		es := errorsOf(err)
		Expect(es).NotTo(BeEmpty())
		Expect(es[0].Path).To(Equal("services.backend"))
		Expect(es[0].Line).To(Equal(3))
	})
})
