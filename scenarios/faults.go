package scenarios

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/tcp"
)

// FaultApp is the service's calls as the fault upstream takes them (nil for a leaf service); the
// runner fills in the sidecar's address and the call sink.
func (s *Service) FaultApp() *faults.App {
	if len(s.Calls) == 0 {
		return nil
	}
	app := &faults.App{OnFailure: s.OnFailure, PropagateDeadline: s.PropagateDeadline}
	if app.OnFailure == 0 {
		app.OnFailure = DefaultOnFailure
	}
	for _, st := range s.Calls {
		var step faults.Step
		for _, c := range st.Calls() {
			step.Calls = append(step.Calls, faults.Call{Service: c.Service, Path: c.Path, Method: c.Method, Optional: c.Optional})
		}
		app.Steps = append(app.Steps, step)
	}
	return app
}

// FaultCapacity is the service's capacity as the fault upstream takes it (nil: unbounded).
func (s *Service) FaultCapacity() *faults.Capacity {
	if s.Capacity == nil {
		return nil
	}
	c := s.Capacity
	return &faults.Capacity{Workers: c.Workers, Queue: c.Queue, QueueTimeout: c.QueueTimeout.Duration, WhenFull: c.WhenFull}
}

// FaultResponse is the service's normal behaviour as the fault upstream takes it.
func (s *Service) FaultResponse() faults.Response {
	return faults.Response{Status: s.Response.Status, Size: s.Response.Size, Latency: s.Response.Latency.Duration}
}

// InstanceFaults lists the scenario's HTTP fault rules that apply to one instance of a service, named
// after their place in the file ("faults[2]") so that events point back to it.
func (sc *Scenario) InstanceFaults(service string, index int) []faults.Fault {
	var out []faults.Fault
	for i, f := range sc.Faults {
		if !f.targets(service, index) || !f.hasHTTPKind() {
			continue // a TCP or container rule
		}
		rule := f.Fault
		rule.Name = fmt.Sprintf("faults[%d]", i)
		out = append(out, rule)
	}
	return out
}

// TCPWindow is a TCP fault rule's toxics and when they apply, from the load's start.
type TCPWindow struct {
	Name            string // "faults[3]"
	Start, Duration time.Duration
	Toxics          []tcp.Toxic
}

// InstanceTCPFaults lists the TCP fault rules on one instance: the runner puts a TCP fault proxy in
// front of it and switches the toxics on for each window.
func (sc *Scenario) InstanceTCPFaults(service string, index int) []TCPWindow {
	var out []TCPWindow
	for i, f := range sc.Faults {
		if f.TCP != nil && f.targets(service, index) {
			out = append(out, TCPWindow{Name: fmt.Sprintf("faults[%d]", i), Start: f.Start, Duration: f.Duration, Toxics: f.TCP.Toxics})
		}
	}
	return out
}

// ContainerFaults lists the container-level fault rules, one per targeted instance.
func (sc *Scenario) ContainerFaults() []ContainerRule {
	var out []ContainerRule
	for i, f := range sc.Faults {
		if f.Container == "" {
			continue
		}
		for inst := range sc.Services[f.Service].Instances {
			if f.targets(f.Service, inst) {
				out = append(out, ContainerRule{Name: fmt.Sprintf("faults[%d]", i), Service: f.Service, Instance: inst,
					Start: f.Start, Duration: f.Duration, Kind: f.Container})
			}
		}
	}
	return out
}

func (f *Fault) targets(service string, index int) bool {
	return f.Service == service && (len(f.Instances) == 0 || slices.Contains(f.Instances, index))
}

// Kinds names the fault kinds the rule injects, in a fixed order: the fault model's kinds (in
// faults.Kinds order), then tcp, then the container kind.
func (f *Fault) Kinds() []string {
	var out []string
	for _, k := range faults.Kinds() {
		if k.In(&f.Fault) {
			out = append(out, k.Name)
		}
	}
	if f.TCP != nil {
		out = append(out, "tcp")
	}
	if f.Container != "" {
		out = append(out, f.Container)
	}
	return out
}

// hasHTTPKind reports whether the rule sets one of the fault model's kinds (those the HTTP upstream
// applies).
func (f *Fault) hasHTTPKind() bool {
	return slices.ContainsFunc(faults.Kinds(), func(k faults.Kind) bool { return k.In(&f.Fault) })
}

// Windows lists the scenario's fault rules as the report's fault windows, in scenario order.
func (sc *Scenario) Windows() []record.FaultWindow {
	out := make([]record.FaultWindow, 0, len(sc.Faults))
	for i, f := range sc.Faults {
		w := record.FaultWindow{Name: fmt.Sprintf("faults[%d]", i), Service: f.Service, Instances: f.Instances,
			Start: f.Start, Kind: strings.Join(f.Kinds(), "+")}
		if f.Duration > 0 {
			w.End = f.Start + f.Duration
		}
		if f.Flap != nil && f.hasHTTPKind() { // TCP toxics and container faults hold their whole window
			w.Down = downPeriods(f.Fault, sc.Load.Total())
		}
		out = append(out, w)
	}
	return out
}

// downPeriods lists when a flapping rule is active, within its window (open-ended: until the planned
// load end), by the instances' own schedule (faults.Fault.Active and NextChange), so the record's periods
// are exactly when the instances apply the rule.
func downPeriods(f faults.Fault, loadEnd time.Duration) []record.Period {
	end := loadEnd
	if f.Duration > 0 {
		end = f.Start + f.Duration
	}
	var out []record.Period
	for t, active := f.Start, f.Active(f.Start); t < end; active = !active {
		next, ok := f.NextChange(t)
		if !ok || next > end {
			next = end
		}
		if active {
			out = append(out, record.Period{Start: t, End: next})
		}
		t = next
	}
	return out
}

// NewRecord starts the record of a run of the scenario whose load started at started: what every
// runner records the same way (identity, planned load, samples, fault windows, configuration changes).
func (sc *Scenario) NewRecord(seed uint64, started time.Time, samples []record.Sample) *record.Record {
	rec := &record.Record{
		Scenario:   sc.Name,
		File:       sc.File,
		Seed:       seed,
		Started:    started,
		TargetRate: sc.Load.Rate.PerSecond,
		Duration:   sc.Load.Duration.Duration,
		Samples:    samples,
		Windows:    sc.Windows(),
	}
	if len(sc.Changes) > 0 {
		rec.Changes = sc.ChangeRecords() // the runner fills in how each proxy answered
	}
	if len(sc.Load.Phases) > 0 {
		var planned float64
		rec.Duration = 0
		for _, p := range sc.Load.Phases {
			rec.Phases = append(rec.Phases, record.LoadPhase{Name: p.Name, Start: rec.Duration, End: rec.Duration + p.Duration.Duration})
			rec.Duration += p.Duration.Duration
			planned += p.Planned()
		}
		rec.TargetRate = planned / rec.Duration.Seconds()
	}
	return rec
}
