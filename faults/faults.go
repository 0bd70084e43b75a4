// Package faults holds the fault models of meshproof and the HTTP upstream that applies them.
//
// The models (Decide, RequestRand, Validate) are pure functions of their arguments: time and
// randomness are passed in, so the live upstream and a virtual-time simulator reach the same
// decision for the same seed. The package imports nothing else of meshproof.
package faults

import (
	"encoding/binary"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"strconv"
	"time"
)

// Kinds of fault, as reported in Applied.Kind and Event.Kind.
const (
	KindLatency = "latency"
	KindAbort   = "abort"
	KindReset   = "reset"
)

// DefaultStatus is the status of a Response whose Status is zero.
const DefaultStatus = 200

// Response is an instance's normal behaviour.
type Response struct {
	Status  int           // default 200
	Size    int           // body bytes (filled with a repeating pattern), default 0
	Latency time.Duration // fixed service time before headers
}

// Latency adds Fixed to the service time of Percent% of requests.
type Latency struct {
	Fixed   time.Duration
	Percent float64 // in [0,100]
}

// Abort answers Percent% of requests with Status instead of the normal status.
type Abort struct {
	Status  int // any status 200..599
	Percent float64
}

// Reset answers Percent% of requests with a TCP RST before any response byte.
type Reset struct {
	Percent float64
}

// Fault is one fault rule on an instance, active in [Start, Start+Duration) of run time
// (Duration 0 = to the end).
type Fault struct {
	Name     string // stable identity for events, e.g. "faults[1]"
	Start    time.Duration
	Duration time.Duration
	Latency  *Latency
	Abort    *Abort
	Reset    *Reset
}

// Active reports whether the rule applies to a request arriving at run time elapsed.
func (f Fault) Active(elapsed time.Duration) bool {
	return elapsed >= f.Start && (f.Duration == 0 || elapsed < f.Start+f.Duration)
}

// Decision is what to do with one request. Applied lists the names+kinds of the faults that fired.
type Decision struct {
	Delay   time.Duration // added before responding (base latency + injected)
	Status  int           // status to answer with (Response.Status unless aborted)
	Reset   bool          // reset the connection instead of answering (takes precedence over status)
	Applied []Applied
}

// Applied is one fault that fired for a request.
type Applied struct {
	Fault  string
	Kind   string // "latency" | "abort" | "reset"
	Detail string // e.g. "503", "50ms"
}

// Decide is pure: the decision for one request arriving at run time elapsed, using rng for every
// random draw.
//
// Every rule draws exactly three numbers (latency, reset, abort), in rule order, whether or not
// it is active, has that kind, or fires: a rule's outcome for the n-th request never depends on
// the other rules or on the time window.
//
// Each active latency that fires adds to the delay. The first reset that fires resets the
// connection; otherwise the first abort that fires sets the status. Applied lists the latencies
// in rule order, then the one reset or abort that took effect, if any.
func Decide(resp Response, rules []Fault, elapsed time.Duration, rng *rand.Rand) Decision {
	d := Decision{Delay: resp.Latency, Status: resp.Status}
	if d.Status == 0 {
		d.Status = DefaultStatus
	}
	var reset, abort *Applied
	for _, f := range rules {
		latencyDraw, resetDraw, abortDraw := rng.Float64(), rng.Float64(), rng.Float64()
		if !f.Active(elapsed) {
			continue
		}
		if f.Latency != nil && fires(f.Latency.Percent, latencyDraw) {
			d.Delay += f.Latency.Fixed
			d.Applied = append(d.Applied, Applied{Fault: f.Name, Kind: KindLatency, Detail: f.Latency.Fixed.String()})
		}
		if f.Reset != nil && reset == nil && fires(f.Reset.Percent, resetDraw) {
			reset = &Applied{Fault: f.Name, Kind: KindReset, Detail: "rst"}
		}
		if f.Abort != nil && abort == nil && fires(f.Abort.Percent, abortDraw) {
			abort = &Applied{Fault: f.Name, Kind: KindAbort, Detail: strconv.Itoa(f.Abort.Status)}
			d.Status = f.Abort.Status
		}
	}
	switch {
	case reset != nil:
		d.Reset = true
		d.Applied = append(d.Applied, *reset)
	case abort != nil:
		d.Applied = append(d.Applied, *abort)
	}
	return d
}

// fires reports whether a draw in [0,1) falls within percent: 0 never fires, 100 always does.
func fires(percent, draw float64) bool { return draw*100 < percent }

// RequestRand returns the random source for the n-th request (n from 1) at an instance. It is a
// pure function of (seed, service, instance, n), so the n-th request at an instance gets the same
// decision for the same seed whatever the arrival interleaving.
func RequestRand(seed uint64, service string, instance int, n uint64) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(service))
	h.Write([]byte{0}) // separates "a"+12 from "a1"+2
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(instance)))
	return rand.New(rand.NewPCG(seed^h.Sum64(), n))
}

// Validate checks a response: status 0 (default 200) or 200..599, non-negative size and latency.
func (r Response) Validate() error {
	var errs []error
	if r.Status != 0 {
		errs = append(errs, checkStatus("status", r.Status))
	}
	if r.Size < 0 {
		errs = append(errs, fmt.Errorf("size: %d is negative, want >= 0 bytes", r.Size))
	}
	errs = append(errs, checkDuration("latency", r.Latency))
	return errors.Join(errs...)
}

// Validate checks one fault rule: at least one of latency, abort or reset; percents in [0,100];
// abort status in 200..599; non-negative durations.
func (f Fault) Validate() error {
	errs := []error{checkDuration("start", f.Start), checkDuration("duration", f.Duration)}
	if f.Latency == nil && f.Abort == nil && f.Reset == nil {
		errs = append(errs, errors.New("{latency,abort,reset}: none set, want at least one"))
	}
	if l := f.Latency; l != nil {
		errs = append(errs, checkDuration("latency.fixed", l.Fixed), checkPercent("latency.percent", l.Percent))
	}
	if a := f.Abort; a != nil {
		errs = append(errs, checkStatus("abort.status", a.Status), checkPercent("abort.percent", a.Percent))
	}
	if r := f.Reset; r != nil {
		errs = append(errs, checkPercent("reset.percent", r.Percent))
	}
	return errors.Join(errs...)
}

func checkStatus(field string, status int) error {
	if status < 200 || status > 599 {
		return fmt.Errorf("%s: %d is out of range, want 200..599", field, status)
	}
	return nil
}

func checkPercent(field string, p float64) error {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return fmt.Errorf("%s: %v is out of range, want 0..100", field, p)
	}
	return nil
}

func checkDuration(field string, d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("%s: %v is negative, want >= 0", field, d)
	}
	return nil
}
