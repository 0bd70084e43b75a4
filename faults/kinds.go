package faults

import (
	"errors"
	"slices"

	"github.com/meshproof/meshproof/faults/field"
)

// DefaultPercent is the YAML default of every kind's percent (the scenario loader supplies it: in
// the Go types a percent of 0 never fires).
const DefaultPercent = 100

// Kind describes one fault kind of a rule: its YAML key and how a rule holds, checks, defaults and
// copies it. Kinds lists them; everything that needs "each kind" (Fault.Validate, the upstream's copy
// of its rules, the scenario's kind list, defaults and messages) iterates that list. Adding a kind
// is an entry in kinds, its field in Fault, its effect in DecideRequest, and the READMEs.
type Kind struct {
	Name     string // the rule's YAML key, e.g. "slow_body"
	Requests bool   // acts on requests; false for refuse, which acts on the instance's listener

	in       func(*Fault) bool
	percent  func(*Fault) *float64 // nil result: the rule does not set the kind, or the kind has no percent
	validate func(*Fault) error    // the kind's own fields, paths relative to the kind
	clone    func(*Fault)          // replaces the kind's value in the rule by a deep copy
}

// In reports whether the rule sets the kind.
func (k Kind) In(f *Fault) bool { return k.in(f) }

// Percent returns the rule's percent for the kind, to read or default; nil when the rule does not
// set the kind or the kind has no percent (refuse).
func (k Kind) Percent(f *Fault) *float64 { return k.percent(f) }

// kinds is every fault kind, in the order of Fault's fields: the order of the validation errors, of
// the scenario's kind lists and of the "want at least one" message.
var kinds = []Kind{
	kindOf("latency", true, func(f *Fault) **Latency { return &f.Latency },
		func(l *Latency) *float64 { return &l.Percent }, func(l *Latency) error { return l.Validate() }, (*Latency).deepCopy),
	kindOf("abort", true, func(f *Fault) **Abort { return &f.Abort },
		func(a *Abort) *float64 { return &a.Percent }, (*Abort).validate, nil),
	kindOf("reset", true, func(f *Fault) **Reset { return &f.Reset },
		func(r *Reset) *float64 { return &r.Percent }, (*Reset).validate, (*Reset).deepCopy),
	kindOf("hang", true, func(f *Fault) **Hang { return &f.Hang },
		func(h *Hang) *float64 { return &h.Percent }, (*Hang).validate, nil),
	kindOf("slow_body", true, func(f *Fault) **SlowBody { return &f.SlowBody },
		func(s *SlowBody) *float64 { return &s.Percent }, (*SlowBody).validate, nil),
	kindOf("close_after", true, func(f *Fault) **CloseAfter { return &f.CloseAfter },
		func(c *CloseAfter) *float64 { return &c.Percent }, (*CloseAfter).validate, nil),
	kindOf("size", true, func(f *Fault) **Size { return &f.Size },
		func(s *Size) *float64 { return &s.Percent }, (*Size).validate, nil),
	kindOf("h2", true, func(f *Fault) **H2 { return &f.H2 },
		func(h *H2) *float64 { return &h.Percent }, (*H2).validate, nil),
	kindOf("refuse", false, func(f *Fault) **Refuse { return &f.Refuse }, nil, nil, nil),
}

// Kinds returns every fault kind a rule may set, in a fixed order.
func Kinds() []Kind { return slices.Clone(kinds) }

// KindNames returns the YAML keys of Kinds, in order.
func KindNames() []string {
	names := make([]string, len(kinds))
	for i, k := range kinds {
		names[i] = k.Name
	}
	return names
}

// kindOf builds the descriptor of a kind held in the rule's pointer field: percent (nil: none),
// validate (nil: nothing to check) and deep (nil: a flat value, copied whole) act on the kind's value.
func kindOf[T any](name string, requests bool, ptr func(*Fault) **T, percent func(*T) *float64, validate func(*T) error, deep func(*T)) Kind {
	return Kind{
		Name:     name,
		Requests: requests,
		in:       func(f *Fault) bool { return *ptr(f) != nil },
		percent: func(f *Fault) *float64 {
			if v := *ptr(f); v != nil && percent != nil {
				return percent(v)
			}
			return nil
		},
		validate: func(f *Fault) error {
			if v := *ptr(f); v != nil && validate != nil {
				return validate(v)
			}
			return nil
		},
		clone: func(f *Fault) {
			if v := *ptr(f); v != nil {
				c := *v
				if deep != nil {
					deep(&c)
				}
				*ptr(f) = &c
			}
		},
	}
}

func (a *Abort) validate() error {
	var errs []error
	if a.GRPCStatus != 0 {
		if a.GRPCStatus < 1 || a.GRPCStatus > 16 {
			errs = append(errs, field.Errorf("grpc_status", "%d is out of range, want 1..16", a.GRPCStatus))
		}
		if a.Status != 0 {
			errs = append(errs, field.Errorf("", "status %d and grpc_status %d both set, want one", a.Status, a.GRPCStatus))
		}
	} else {
		errs = append(errs, checkStatus("status", a.Status))
	}
	return errors.Join(append(errs, checkPercent("percent", a.Percent))...)
}

func (r *Reset) validate() error {
	errs := []error{checkPercent("percent", r.Percent)}
	if r.AfterBytes != nil {
		errs = append(errs, checkBytes("after_bytes", *r.AfterBytes))
	}
	return errors.Join(errs...)
}

func (r *Reset) deepCopy() { r.AfterBytes = clonePtr(r.AfterBytes) }

func (h *Hang) validate() error { return checkPercent("percent", h.Percent) }

func (s *SlowBody) validate() error {
	var errs []error
	if s.BytesPerSecond <= 0 {
		errs = append(errs, field.Errorf("bytes_per_second", "%d is not positive, want > 0", s.BytesPerSecond))
	}
	return errors.Join(append(errs, checkPercent("percent", s.Percent))...)
}

func (c *CloseAfter) validate() error {
	return errors.Join(checkBytes("bytes", c.Bytes), checkPercent("percent", c.Percent))
}

func (s *Size) validate() error {
	return errors.Join(checkBytes("bytes", s.Bytes), checkPercent("percent", s.Percent))
}

func (h *H2) validate() error {
	errs := []error{checkPercent("percent", h.Percent)}
	switch {
	case (h.RSTStream == "") == (h.GoAway == ""):
		errs = append(errs, field.Errorf("", "want exactly one of rst_stream and goaway"))
	case h.RSTStream != "":
		errs = append(errs, checkH2Code("rst_stream", h.RSTStream))
	default:
		errs = append(errs, checkH2Code("goaway", h.GoAway))
	}
	return errors.Join(errs...)
}

func clonePtr[T any](p *T) *T {
	if p == nil {
		return nil
	}
	v := *p
	return &v
}
