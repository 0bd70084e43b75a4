// An example of how a team proves its resilience policies from its own Go test suite, with meshproof's
// public API only: the topology is built in code, run once, and judged with the matchers.
package gotest_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh"
	. "github.com/meshproof/meshproof/mesh/meshtest"
)

// checkout is our topology: four checkout instances behind the edge proxy, with the retry policy and
// outlier detection we want to ship. Instance 3 fails half its requests for two seconds.
func checkout() mesh.Spec {
	return mesh.Spec{
		Name: "checkout-retries",
		Seed: 11,
		Services: map[string]mesh.Service{
			"checkout": {Instances: 4, Response: mesh.Response{Latency: "2ms", Size: 512}},
		},
		Proxies: map[string]mesh.Proxy{"edge": {
			RoutesTo: "checkout",
			Route: mesh.Fields{
				"timeout": "1s",
				"retry_policy": mesh.Fields{
					"retry_on":       "5xx,reset,connect-failure",
					"num_retries":    3,
					"retry_back_off": mesh.Fields{"base_interval": "0.01s", "max_interval": "0.1s"},
				},
			},
			Cluster: mesh.Fields{
				"outlier_detection": mesh.Fields{
					"consecutive_5xx": 3, "interval": "0.2s", "base_ejection_time": "5s", "max_ejection_percent": 50,
				},
			},
		}},
		Load:   mesh.Load{Target: "edge", Rate: "100/s", Duration: "4s"},
		Faults: []mesh.FaultRule{{Service: "checkout", Instances: []int{3}, At: "1s", For: "2s", Abort: mesh.Fields{"status": 503, "percent": 50}}},
	}
}

var _ = Describe("the checkout retry policy", Ordered, func() {
	var run *mesh.Result

	BeforeAll(func(ctx SpecContext) {
		sc, err := checkout().Build()
		Expect(err).NotTo(HaveOccurred())
		run = Run(ctx, sc, mesh.Options{})
	})

	It("hides the failing instance from the clients", func() {
		Expect(run).To(HaveSuccessRate(BeNumerically(">=", 99.5)))
		Expect(run.During(mesh.Fault(0))).To(HaveStatus("5xx", BeNumerically("<=", 1)))
	})

	It("pays for it with a bounded number of retries", func() {
		Expect(run).To(HaveRetries(BeNumerically(">", 0)))
		Expect(run).To(HaveRetryAmplification(BeNumerically("<=", 1.3)))
	})

	It("ejects the failing instance soon after it starts failing", func() {
		Expect(run).To(HaveEjected("checkout/3", Within(time.Second)))
		Expect(run).NotTo(HaveEjected("checkout/0"))
	})

	It("keeps the latency of the other requests low", func() {
		Expect(run.Before(mesh.Fault(0))).To(HaveP99(BeNumerically("<", 100*time.Millisecond)))
	})
})
