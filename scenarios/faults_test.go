package scenarios_test

import (
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
