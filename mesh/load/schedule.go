package load

import (
	"fmt"
	"iter"
	"math"
	"math/rand/v2"
	"time"
)

// Phase is one named stretch of an open-loop schedule. A phase is one of:
//
//   - constant: Rate requests/s for Duration (Rate 0 is a pause);
//   - ramp (Ramp true): the rate moves linearly from Rate to RampTo over Duration, so the phase holds
//     (Rate+RampTo)/2 × Duration requests — the integral of its rate;
//   - bursts (Burst > 0): Burst requests at once at the phase start and every Every after it, while
//     within Duration (Rate, RampTo and Poisson arrivals do not apply).
//
// Steps are consecutive constant phases (see Steps).
type Phase struct {
	Name     string
	Duration time.Duration
	Rate     float64 // requests/s; the start rate of a ramp
	RampTo   float64 // requests/s at the end of a ramp
	Ramp     bool
	Burst    int           // requests per burst
	Every    time.Duration // burst period
}

// Constant is a phase of rate requests/s.
func Constant(name string, d time.Duration, rate float64) Phase {
	return Phase{Name: name, Duration: d, Rate: rate}
}

// Ramp is a phase whose rate moves linearly from from to to requests/s.
func Ramp(name string, d time.Duration, from, to float64) Phase {
	return Phase{Name: name, Duration: d, Rate: from, RampTo: to, Ramp: true}
}

// Bursts is a phase of n requests at once every period.
func Bursts(name string, d time.Duration, n int, every time.Duration) Phase {
	return Phase{Name: name, Duration: d, Burst: n, Every: every}
}

// Steps returns one constant phase of duration d per rate, named "<name>-1", "<name>-2", ….
func Steps(name string, d time.Duration, rates ...float64) []Phase {
	out := make([]Phase, len(rates))
	for i, r := range rates {
		out[i] = Constant(fmt.Sprintf("%s-%d", name, i+1), d, r)
	}
	return out
}

// Planned is the number of requests the phase intends: the integral of its rate, or its bursts.
func (p Phase) Planned() float64 {
	if p.Burst > 0 {
		return float64(p.Burst) * float64(bursts(p.Duration, p.Every))
	}
	return p.mass()
}

// mass is the integral of the phase's rate over its duration: Λ(Duration).
func (p Phase) mass() float64 {
	if p.Burst > 0 {
		return 0
	}
	to := p.Rate
	if p.Ramp {
		to = p.RampTo
	}
	return (p.Rate + to) / 2 * p.Duration.Seconds()
}

// at is the inverse of the phase's cumulative intensity Λ(t) = a·t + k·t²/2 (a the start rate, k the
// slope): the time in seconds by which the phase has accumulated y expected requests. The form
// 2y / (a + √(a² + 2ky)) is exact for constant rates (k = 0, where it is y/a) and stable for ramps up
// and down.
func (p Phase) at(y float64) float64 {
	if y <= 0 {
		return 0
	}
	a := p.Rate
	if !p.Ramp || p.RampTo == p.Rate {
		return y / a
	}
	k := (p.RampTo - p.Rate) / p.Duration.Seconds()
	disc := max(a*a+2*k*y, 0)
	return 2 * y / (a + math.Sqrt(disc))
}

// bursts is the number of burst instants 0, every, 2·every, … before d.
func bursts(d, every time.Duration) int64 {
	if every <= 0 || d <= 0 {
		return 0
	}
	return int64((d-1)/every) + 1
}

// checkPhases validates phases with error messages that name the phase.
func checkPhases(phases []Phase) error {
	if len(phases) == 0 {
		return fmt.Errorf("load: no phases")
	}
	var total float64
	for i, p := range phases {
		name := fmt.Sprintf("phase %d", i+1)
		if p.Name != "" {
			name = fmt.Sprintf("phase %d (%s)", i+1, p.Name)
		}
		bad := func(v float64) bool { return v < 0 || math.IsNaN(v) || math.IsInf(v, 0) }
		switch {
		case p.Duration <= 0:
			return fmt.Errorf("load: %s: duration %s: want > 0", name, p.Duration)
		case p.Burst < 0:
			return fmt.Errorf("load: %s: burst %d: want > 0 requests", name, p.Burst)
		case p.Burst > 0 && p.Every <= 0:
			return fmt.Errorf("load: %s: burst period %s: want > 0", name, p.Every)
		case p.Burst > 0 && (p.Rate != 0 || p.Ramp):
			return fmt.Errorf("load: %s: a burst phase takes no rate", name)
		case bad(p.Rate):
			return fmt.Errorf("load: %s: rate %g: want a finite number of requests/s ≥ 0", name, p.Rate)
		case p.Ramp && bad(p.RampTo):
			return fmt.Errorf("load: %s: ramp to %g: want a finite number of requests/s ≥ 0", name, p.RampTo)
		}
		total += p.Planned()
	}
	switch {
	case total < 1:
		return fmt.Errorf("load: the phases plan no request (%g in total)", total)
	case total > MaxRequests:
		return fmt.Errorf("load: the phases plan %.0f requests, more than %d", total, MaxRequests)
	}
	return nil
}

// Arrival is one request of a schedule: its intended send time (offset from the run start) and the
// index of its phase.
type Arrival struct {
	At    time.Duration
	Phase int
}

// Schedule generates the intended send times of an open-loop run, in order. It is a pure function of
// its phases, arrival process and seed: no clock, no network.
//
// Rate phases place requests on the run's cumulative intensity Λ(t) (the integral of the rate): with
// uniform arrivals request k (from 0) is intended when Λ reaches k — for a constant rate r that is
// exactly k/r, as wrk2 and vegeta do — and with Poisson arrivals when Λ reaches the sum of k+1
// independent exponential(1) draws, which by time rescaling is a (non-homogeneous) Poisson process of
// the phase's rate. Either way the number of requests in a phase is its rate's integral (± 1 for
// uniform, in expectation for Poisson). Λ runs on across phases, so a phase boundary neither loses nor
// adds a request. Burst phases add their bursts at their own instants and leave Λ alone.
type Schedule struct {
	phases []Phase
	rng    *rand.Rand // nil for uniform arrivals

	i         int           // current phase
	start     time.Duration // its start offset
	base      float64       // Λ at its start (rate phases only)
	x         float64       // Λ of the next rate-phase arrival
	burstLeft int           // requests left in the current burst
	burstJ    int64         // index of the current burst instant
}

// NewSchedule returns the schedule of phases (validated by the caller) with uniform arrivals, or with
// Poisson arrivals drawn from a PCG generator seeded with seed.
func NewSchedule(phases []Phase, poisson bool, seed uint64) *Schedule {
	s := &Schedule{phases: phases}
	if poisson {
		s.rng = rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
		s.x = s.rng.ExpFloat64()
	}
	return s
}

// Next returns the next arrival, or false when the schedule is over.
func (s *Schedule) Next() (Arrival, bool) {
	for s.i < len(s.phases) {
		p := s.phases[s.i]
		end := s.start + p.Duration
		if p.Burst > 0 {
			if s.burstLeft == 0 {
				if s.burstJ >= bursts(p.Duration, p.Every) {
					s.advance()
					continue
				}
				s.burstLeft = p.Burst
				s.burstJ++
			}
			s.burstLeft--
			return Arrival{At: s.start + time.Duration(s.burstJ-1)*p.Every, Phase: s.i}, true
		}
		mass := p.mass()
		y := s.x - s.base
		if mass > 0 && y < mass {
			var at time.Duration
			if !p.Ramp || p.RampTo == p.Rate {
				at = s.start + time.Duration(math.Round(max(y, 0)*float64(time.Second)/p.Rate)) // exact k/r for k·1e9/r
			} else {
				at = s.start + time.Duration(math.Round(p.at(y)*float64(time.Second)))
			}
			if at < end {
				s.step()
				return Arrival{At: at, Phase: s.i}, true
			}
		}
		s.base += mass
		s.advance()
	}
	return Arrival{}, false
}

// step moves x to the next arrival on Λ.
func (s *Schedule) step() {
	if s.rng != nil {
		s.x += s.rng.ExpFloat64()
	} else {
		s.x++
	}
}

// advance moves to the next phase.
func (s *Schedule) advance() {
	s.start += s.phases[s.i].Duration
	s.i++
	s.burstLeft, s.burstJ = 0, 0
}

// All returns the remaining arrivals.
func (s *Schedule) All() iter.Seq[Arrival] {
	return func(yield func(Arrival) bool) {
		for {
			a, ok := s.Next()
			if !ok || !yield(a) {
				return
			}
		}
	}
}
