package sweep

import (
	"context"
	"fmt"
	"math"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

// PeakRate is the load's highest rate in requests/s: its rate, or over its phases the highest of a
// phase's rate, a ramp's ends and a burst's requests per interval.
func PeakRate(l *scenarios.Load) float64 {
	if len(l.Phases) == 0 {
		return l.Rate.PerSecond
	}
	peak := 0.0
	for _, p := range l.Phases {
		switch {
		case p.Ramp != nil:
			peak = max(peak, p.Ramp.From.PerSecond, p.Ramp.To.PerSecond)
		case p.Burst != nil && p.Burst.Every.Duration > 0:
			peak = max(peak, float64(p.Burst.Requests)/p.Burst.Every.Seconds())
		default:
			peak = max(peak, p.Rate.PerSecond)
		}
	}
	return peak
}

// ScaleLoad multiplies every rate of the load by f: its rate, each phase's rate and ramp ends, and each
// burst's requests (rounded, at least one). Durations are kept: the run takes as long, with f times the
// requests.
func ScaleLoad(l *scenarios.Load, f float64) {
	l.Rate.PerSecond *= f
	for _, p := range l.Phases {
		p.Rate.PerSecond *= f
		if p.Ramp != nil {
			p.Ramp.From.PerSecond *= f
			p.Ramp.To.PerSecond *= f
		}
		if p.Burst != nil {
			p.Burst.Requests = max(1, int(math.Round(float64(p.Burst.Requests)*f)))
		}
	}
}

// DefaultBracket is the bracket --find-max-rate searches when not given: from a tenth of the scenario's
// peak rate to ten times it (within scenarios.MaxRate), to a precision of 1% of the top.
func DefaultBracket(sc *scenarios.Scenario, min, max, precision float64) reports.RateSearch {
	peak := PeakRate(sc.Load)
	b := reports.RateSearch{Min: min, Max: max, Precision: precision}
	if b.Max == 0 {
		b.Max = math.Min(10*peak, scenarios.MaxRate)
	}
	if b.Min == 0 {
		b.Min = math.Min(peak/10, b.Max/10)
	}
	if b.Precision == 0 {
		b.Precision = b.Max / 100
	}
	return b
}

// checkBracket refuses a bracket the scenario cannot be run at: an empty one, or a top whose load
// exceeds the scenario's limits.
func checkBracket(sc *scenarios.Scenario, b reports.RateSearch) error {
	switch {
	case b.Min <= 0 || b.Max <= b.Min:
		return fmt.Errorf("--rate-min %g and --rate-max %g: want 0 < rate-min < rate-max", b.Min, b.Max)
	case b.Precision <= 0:
		return fmt.Errorf("--precision %g: want a rate greater than 0", b.Precision)
	case b.Max > scenarios.MaxRate:
		return fmt.Errorf("--rate-max %g: at most %d requests/s (the scenario's limit)", b.Max, scenarios.MaxRate)
	}
	f := b.Max / PeakRate(sc.Load)
	if planned := sc.Load.Planned() * f; planned > scenarios.MaxPlannedRequests {
		return fmt.Errorf("--rate-max %g plans %.0f requests over the load's %s: at most %d (lower --rate-max or shorten the load)",
			b.Max, planned, sc.Load.Total(), scenarios.MaxPlannedRequests)
	}
	return nil
}

// search bisects point i's load rate for the highest at which every check holds: the bracket's top
// first (holds: done), then its bottom (fails: done), then the middle of the bracket that passes at
// its bottom and fails at its top, until it is narrower than the precision. Like any bisection it
// assumes the checks fail above a rate once they fail at it.
func (s *Sweep) search(ctx context.Context, i int) reports.SweepPoint {
	pt := s.points[i]
	b := *s.cfg.MaxRate
	p := reports.SweepPoint{Values: values(pt), MaxRate: &reports.MaxRate{}}
	probe := func(rate float64) (bool, bool) { // passed, completed
		rep, err := s.runOnce(ctx, pt, rate)
		pr := reports.RateProbe{Rate: rate}
		var q reports.SweepPoint
		s.judge(&q, rep, err)
		pr.Status, pr.Error, pr.Failed = q.Status, q.Error, reports.FailedChecks(q.Verdicts)
		p.MaxRate.Probes = append(p.MaxRate.Probes, pr)
		s.report(func() {
			if s.cfg.OnProbe != nil {
				s.cfg.OnProbe(i, settingText(pt, "the scenario"), pr)
			}
		})
		if q.Status == reports.StatusError || q.Passed() {
			// The point reports the highest passing run, or the error that stopped the search.
			p.Verdicts, p.Outcomes, p.Error, p.Seed = q.Verdicts, q.Outcomes, q.Error, q.Seed
		} else if len(p.MaxRate.Probes) == 2 { // failed at the bottom: report that run
			p.Verdicts, p.Outcomes, p.Seed = q.Verdicts, q.Outcomes, q.Seed
		}
		return q.Passed(), q.Status != reports.StatusError
	}
	end := func(result string, rate float64) reports.SweepPoint {
		p.MaxRate.Result, p.MaxRate.Rate = result, rate
		switch result {
		case reports.RateFound, reports.RateAtMax:
			p.Status = reports.StatusPass
		case reports.RateBelowMin:
			p.Status = reports.StatusFail
		default:
			p.Status = reports.StatusError
		}
		return p
	}
	ok, done := probe(b.Max)
	switch {
	case !done:
		return end(reports.RateError, 0)
	case ok:
		return end(reports.RateAtMax, b.Max)
	}
	ok, done = probe(b.Min)
	switch {
	case !done:
		return end(reports.RateError, 0)
	case !ok:
		return end(reports.RateBelowMin, 0)
	}
	lo, hi := b.Min, b.Max
	for hi-lo > b.Precision {
		mid := math.Round((lo+hi)/2*100) / 100
		if mid <= lo || mid >= hi {
			break
		}
		ok, done := probe(mid)
		if !done {
			return end(reports.RateError, lo)
		}
		if ok {
			lo = mid
		} else {
			hi = mid
		}
	}
	return end(reports.RateFound, lo)
}
