package faults

import (
	"errors"
	"time"

	"github.com/meshproof/meshproof/faults/field"
)

// Flap makes a rule alternate within its window: from Start+Offset it is active (the instance is
// "down") for Down, then inactive ("up") for Up, and so on; before Start+Offset it is inactive.
// For example at: 10s, flap: {down: 1s, up: 2s} is active in [10s,11s), [13s,14s), [16s,17s) …
type Flap struct {
	Up     time.Duration `yaml:"up"`
	Down   time.Duration `yaml:"down"`
	Offset time.Duration `yaml:"offset"`
}

// Active reports whether the rule is active at run time elapsed: inside [Start, Start+Duration)
// (Duration 0 = to the end) and, with Flap, in a down period. It is the time part of Applies.
func (f Fault) Active(elapsed time.Duration) bool {
	if elapsed < f.Start || f.Duration != 0 && elapsed >= f.Start+f.Duration {
		return false
	}
	return f.Flap == nil || f.Flap.down(elapsed-f.Start)
}

// down reports whether since (run time minus the rule's Start) falls in a down period.
func (fl *Flap) down(since time.Duration) bool {
	t := since - fl.Offset
	return t >= 0 && t%(fl.Up+fl.Down) < fl.Down
}

// NextChange returns the earliest run time after elapsed at which Active changes, and false if it
// never does.
func (f Fault) NextChange(elapsed time.Duration) (time.Duration, bool) {
	now := f.Active(elapsed)
	t := elapsed
	// Each boundary is a window edge or a flap edge; at most two in a row keep the state.
	for range 4 {
		next, ok := f.nextBoundary(t)
		if !ok {
			return 0, false
		}
		if f.Active(next) != now {
			return next, true
		}
		t = next
	}
	return 0, false
}

// nextBoundary returns the first window or flap edge strictly after t.
func (f Fault) nextBoundary(t time.Duration) (time.Duration, bool) {
	var best time.Duration
	found := false
	consider := func(b time.Duration) {
		if b > t && (!found || b < best) {
			best, found = b, true
		}
	}
	consider(f.Start)
	if f.Duration != 0 {
		consider(f.Start + f.Duration)
	}
	if fl := f.Flap; fl != nil {
		origin := f.Start + fl.Offset
		if t < origin {
			consider(origin)
		} else {
			period := fl.Up + fl.Down
			phase := (t - origin) % period
			if phase < fl.Down {
				consider(t + fl.Down - phase)
			} else {
				consider(t + period - phase)
			}
		}
	}
	if f.Duration != 0 && found && best > f.Start+f.Duration {
		return 0, false
	}
	return best, found
}

// Refusing returns the name of the first refuse rule active at run time elapsed: while one is,
// the instance refuses connections.
func Refusing(rules []Fault, elapsed time.Duration) (string, bool) {
	for _, f := range rules {
		if f.Refuse != nil && f.Active(elapsed) {
			return f.Name, true
		}
	}
	return "", false
}

// NextRefuseChange returns the earliest run time after elapsed at which a refuse rule changes
// state, and false if none ever does.
func NextRefuseChange(rules []Fault, elapsed time.Duration) (time.Duration, bool) {
	var best time.Duration
	found := false
	for _, f := range rules {
		if f.Refuse == nil {
			continue
		}
		if t, ok := f.NextChange(elapsed); ok && (!found || t < best) {
			best, found = t, true
		}
	}
	return best, found
}

func (fl *Flap) validate() error {
	if fl == nil {
		return nil
	}
	var errs []error
	if fl.Up <= 0 {
		errs = append(errs, field.Errorf("up", "%v is not positive, want > 0", fl.Up))
	}
	if fl.Down <= 0 {
		errs = append(errs, field.Errorf("down", "%v is not positive, want > 0", fl.Down))
	}
	errs = append(errs, checkDuration("offset", fl.Offset))
	return errors.Join(errs...)
}
