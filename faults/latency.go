package faults

import (
	"errors"
	"math"
	"math/rand/v2"
	"time"

	"github.com/meshproof/meshproof/faults/field"
)

// Latency adds a delay before the headers of Percent% of requests. The delay is Fixed, or drawn
// from one distribution (Uniform, Normal, LogNormal, Pareto), then moved by a uniform jitter in
// [-Jitter, +Jitter], then clamped to [0, Max] (Max 0 = no upper bound). Set at most one of Fixed
// and the distributions; with none, the delay is the jitter alone.
type Latency struct {
	Fixed     time.Duration `yaml:"fixed"`
	Uniform   *Uniform      `yaml:"uniform"`
	Normal    *Normal       `yaml:"normal"`
	LogNormal *LogNormal    `yaml:"lognormal"`
	Pareto    *Pareto       `yaml:"pareto"`
	Jitter    time.Duration `yaml:"jitter"`
	Max       time.Duration `yaml:"max"`
	Percent   float64       `yaml:"percent"` // in [0,100]
}

// Uniform draws uniformly in [Min, Max).
type Uniform struct {
	Min time.Duration `yaml:"min"`
	Max time.Duration `yaml:"max"`
}

// Normal draws from a normal distribution (negative draws become 0).
type Normal struct {
	Mean   time.Duration `yaml:"mean"`
	StdDev time.Duration `yaml:"stddev"`
}

// LogNormal draws from a log-normal distribution with the given Median and either Sigma (the
// standard deviation of the log) or P99 (the 99th percentile, from which sigma is derived).
type LogNormal struct {
	Median time.Duration `yaml:"median"`
	Sigma  float64       `yaml:"sigma"`
	P99    time.Duration `yaml:"p99"`
}

// Pareto draws from a Pareto (type I) distribution: never below Scale, with a tail that is the
// heavier the smaller Shape is (Shape <= 1 has no finite mean: set Latency.Max).
type Pareto struct {
	Scale time.Duration `yaml:"scale"`
	Shape float64       `yaml:"shape"`
}

// z99 is the 99th percentile of the standard normal distribution.
const z99 = 2.3263478740408408

// Sample draws one delay from rng: the jitter first (one draw, when Jitter > 0), then the
// distribution.
func (l Latency) Sample(rng *rand.Rand) time.Duration {
	var jitter float64
	if l.Jitter > 0 {
		jitter = (2*rng.Float64() - 1) * float64(l.Jitter)
	}
	var ns float64
	switch {
	case l.Uniform != nil:
		ns = float64(l.Uniform.Min) + rng.Float64()*float64(l.Uniform.Max-l.Uniform.Min)
	case l.Normal != nil:
		ns = float64(l.Normal.Mean) + rng.NormFloat64()*float64(l.Normal.StdDev)
	case l.LogNormal != nil:
		ns = float64(l.LogNormal.Median) * math.Exp(rng.NormFloat64()*l.LogNormal.sigma())
	case l.Pareto != nil:
		ns = float64(l.Pareto.Scale) / math.Pow(1-rng.Float64(), 1/l.Pareto.Shape)
	default:
		ns = float64(l.Fixed)
	}
	ns += jitter
	limit := float64(math.MaxInt64)
	if l.Max > 0 {
		limit = float64(l.Max)
	}
	switch {
	case ns <= 0 || math.IsNaN(ns):
		return 0
	case ns >= limit:
		if l.Max > 0 {
			return l.Max
		}
		return time.Duration(math.MaxInt64)
	}
	return time.Duration(ns)
}

func (l LogNormal) sigma() float64 {
	if l.P99 > 0 {
		return math.Log(float64(l.P99)/float64(l.Median)) / z99
	}
	return l.Sigma
}

// deepCopy replaces the distributions l points to by copies.
func (l *Latency) deepCopy() {
	l.Uniform = clonePtr(l.Uniform)
	l.Normal = clonePtr(l.Normal)
	l.LogNormal = clonePtr(l.LogNormal)
	l.Pareto = clonePtr(l.Pareto)
}

// Validate checks a latency: at most one of fixed and the distributions, each with sound
// parameters; non-negative jitter and max; percent in [0,100].
func (l Latency) Validate() error {
	errs := []error{checkDuration("fixed", l.Fixed), checkDuration("jitter", l.Jitter), checkDuration("max", l.Max)}
	set := 0
	for _, on := range []bool{l.Fixed != 0, l.Uniform != nil, l.Normal != nil, l.LogNormal != nil, l.Pareto != nil} {
		if on {
			set++
		}
	}
	if set > 1 {
		errs = append(errs, field.Among("", []string{"fixed", "uniform", "normal", "lognormal", "pareto"}, "several set, want at most one"))
	}
	if u := l.Uniform; u != nil {
		errs = append(errs, checkDuration("uniform.min", u.Min))
		if u.Max < u.Min {
			errs = append(errs, field.Errorf("uniform.max", "%v is below min %v, want >= min", u.Max, u.Min))
		}
	}
	if n := l.Normal; n != nil {
		errs = append(errs, checkDuration("normal.mean", n.Mean), checkDuration("normal.stddev", n.StdDev))
	}
	if ln := l.LogNormal; ln != nil {
		if ln.Median <= 0 {
			errs = append(errs, field.Errorf("lognormal.median", "%v is not positive, want > 0", ln.Median))
		}
		switch {
		case (ln.Sigma != 0) == (ln.P99 != 0):
			errs = append(errs, field.Errorf("lognormal", "want exactly one of sigma and p99"))
		case ln.P99 != 0 && ln.P99 <= ln.Median:
			errs = append(errs, field.Errorf("lognormal.p99", "%v is not above the median %v, want > median", ln.P99, ln.Median))
		case ln.Sigma < 0 || math.IsNaN(ln.Sigma) || math.IsInf(ln.Sigma, 0):
			errs = append(errs, field.Errorf("lognormal.sigma", "%v is not a positive number, want > 0", ln.Sigma))
		}
	}
	if p := l.Pareto; p != nil {
		if p.Scale <= 0 {
			errs = append(errs, field.Errorf("pareto.scale", "%v is not positive, want > 0", p.Scale))
		}
		if !(p.Shape > 0) || math.IsInf(p.Shape, 0) {
			errs = append(errs, field.Errorf("pareto.shape", "%v is not a positive number, want > 0", p.Shape))
		}
	}
	errs = append(errs, checkPercent("percent", l.Percent))
	return errors.Join(errs...)
}
