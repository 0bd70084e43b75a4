package scenarios

import (
	"fmt"
	"slices"

	"github.com/meshproof/meshproof/faults"
)

// FaultResponse is the service's normal behaviour as the fault upstream takes it.
func (s *Service) FaultResponse() faults.Response {
	return faults.Response{Status: s.Response.Status, Size: s.Response.Size, Latency: s.Response.Latency.Duration}
}

// InstanceFaults lists the scenario's fault rules that apply to one instance of a service, named after
// their place in the file ("faults[2]") so that events point back to it.
func (sc *Scenario) InstanceFaults(service string, index int) []faults.Fault {
	var out []faults.Fault
	for i, f := range sc.Faults {
		if f.Service != service || len(f.Instances) > 0 && !slices.Contains(f.Instances, index) {
			continue
		}
		rule := faults.Fault{Name: fmt.Sprintf("faults[%d]", i), Start: f.At.Duration, Duration: f.For.Duration}
		if f.Latency != nil {
			rule.Latency = &faults.Latency{Fixed: f.Latency.Fixed.Duration, Percent: f.Latency.Percent.Or(100)}
		}
		if f.Abort != nil {
			rule.Abort = &faults.Abort{Status: f.Abort.Status, Percent: f.Abort.Percent.Or(100)}
		}
		if f.Reset != nil {
			rule.Reset = &faults.Reset{Percent: f.Reset.Percent.Or(100)}
		}
		out = append(out, rule)
	}
	return out
}
