// Package sweep runs a policy sweep: one scenario at every point of a grid of --set overrides (the
// cartesian product of each field path's values), on a plan.Runner, with the checks' verdicts and the
// key outcomes of every point (reports.Sweep); with a rate search, the highest load rate at which every
// check still holds, at each point (rate.go).
package sweep

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

// Config is a sweep to run.
type Config struct {
	// Data is the scenario file's content, File its name (for messages and the report).
	Data []byte
	File string
	// Grid is the --set flags in order; none: the scenario alone, one point.
	Grid []reports.SweepDimension
	// Seed overrides the scenario's seed; every point runs with the same seed.
	Seed *uint64
	// Runner makes the runner of one run (a run at a time on each: runs in parallel get one each).
	Runner func() plan.Runner
	// Options are given to every run.
	Options plan.Options
	// Jobs is how many points run at once; 0: GOMAXPROCS.
	Jobs int
	// MaxRate, when set, searches each point's highest passing load rate in this bracket (rate.go).
	MaxRate *reports.RateSearch
	// OnProbe is called after each probe of a rate search, OnPoint after each point, in the order they
	// end (one call at a time); either may be nil.
	OnProbe func(point int, setting string, p reports.RateProbe)
	OnPoint func(point int, setting string, p reports.SweepPoint)
}

// Sweep is a sweep whose every point's scenario loaded and is supported by the runner: ready to run.
type Sweep struct {
	cfg    Config
	base   *scenarios.Scenario
	points [][]scenarios.Setting
	runner string
	mu     sync.Mutex // serializes OnProbe and OnPoint
}

// ErrInvalid is wrapped by Prepare's errors: the scenario, a --set or the rate bracket is invalid, or the
// runner refuses the scenario (the runner's own plan.Unsupported error, by name).
var ErrInvalid = errors.New("invalid sweep")

// Points lists the grid's points in grid order: the first dimension's values outermost.
func Points(grid []reports.SweepDimension) [][]scenarios.Setting {
	out := [][]scenarios.Setting{{}}
	for _, d := range grid {
		var next [][]scenarios.Setting
		for _, pt := range out {
			for _, v := range d.Values {
				next = append(next, append(slices.Clone(pt), scenarios.Setting{Path: d.Path, Value: v}))
			}
		}
		out = next
	}
	return out
}

// Prepare loads the scenario, then the scenario of every point, and asks the runner whether it supports
// each; it returns every distinct error (joined, each wrapping ErrInvalid) before anything runs.
func Prepare(cfg Config) (*Sweep, error) {
	base, err := scenarios.Parse(cfg.Data, cfg.File)
	if err != nil {
		return nil, invalid(err)
	}
	seen := map[string]bool{}
	for _, d := range cfg.Grid {
		if seen[d.Path] {
			return nil, invalid(fmt.Errorf("--set %s is given twice: give each path once, with all its values", d.Path))
		}
		seen[d.Path] = true
		if len(d.Values) == 0 {
			return nil, invalid(fmt.Errorf("--set %s has no values", d.Path))
		}
	}
	for _, d := range cfg.Grid {
		// A path leads to the same place whatever the value: said once, naming the flag as given.
		if err := scenarios.CheckPath(cfg.Data, cfg.File, d.Path); err != nil {
			return nil, invalid(fmt.Errorf("--set %s=%s: %w", d.Path, strings.Join(d.Values, ","), err))
		}
	}
	s := &Sweep{cfg: cfg, base: base, points: Points(cfg.Grid)}
	if s.cfg.Jobs <= 0 {
		s.cfg.Jobs = runtime.GOMAXPROCS(0)
	}
	r := cfg.Runner()
	s.runner = r.Name()
	var errs []error
	said := map[string]bool{}
	add := func(err error) {
		if !said[err.Error()] {
			said[err.Error()] = true
			errs = append(errs, err)
		}
	}
	for _, pt := range s.points {
		sc, err := scenarios.ParseWith(cfg.Data, cfg.File, pt)
		if err != nil {
			var joined interface{ Unwrap() []error }
			if errors.As(err, &joined) {
				for _, e := range joined.Unwrap() {
					add(e)
				}
			} else {
				add(err)
			}
			continue
		}
		if cfg.MaxRate != nil {
			if err := checkBracket(sc, *cfg.MaxRate); err != nil {
				add(fmt.Errorf("%s: %w", settingText(pt, "the scenario"), err))
				continue
			}
		}
		if err := r.Supports(plan.New(sc, cfg.Seed), cfg.Options); err != nil {
			add(fmt.Errorf("%s: %w", settingText(pt, "the scenario"), err))
		}
	}
	if len(errs) > 0 {
		return nil, invalid(errors.Join(errs...))
	}
	return s, nil
}

// invalidError marks an error as invalid input, keeping its parts for printing one a line.
type invalidError struct{ err error }

func (e invalidError) Error() string        { return e.err.Error() }
func (e invalidError) Unwrap() error        { return e.err }
func (e invalidError) Is(target error) bool { return target == ErrInvalid }

func invalid(err error) error { return invalidError{err} }

// settingText is a point's settings as --set flags; none when the grid is empty.
func settingText(pt []scenarios.Setting, none string) string {
	if len(pt) == 0 {
		return none
	}
	s := ""
	for i, st := range pt {
		if i > 0 {
			s += " "
		}
		s += "--set " + st.String()
	}
	return s
}

// Scenario is the scenario as written, without settings.
func (s *Sweep) Scenario() *scenarios.Scenario { return s.base }

// Len is the number of points.
func (s *Sweep) Len() int { return len(s.points) }

// Run runs every point, Jobs at a time, and returns the sweep's report with the points in grid order.
// A point whose run fails is StatusError and the others go on; when ctx ends, the points not yet run
// are StatusError "not run".
func (s *Sweep) Run(ctx context.Context) reports.Sweep {
	out := reports.Sweep{
		Version: reports.SweepVersion, Scenario: s.base.Name, File: s.cfg.File, Seed: s.base.Seed, Runner: s.runner,
		Started: time.Now(), Dimensions: s.cfg.Grid, Checks: checkTexts(s.base), Points: make([]reports.SweepPoint, len(s.points)),
		FindMaxRate: s.cfg.MaxRate,
	}
	if s.cfg.Seed != nil {
		out.Seed = *s.cfg.Seed
	}
	next := make(chan int)
	var wg sync.WaitGroup
	for range min(s.cfg.Jobs, len(s.points)) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				out.Points[i] = s.point(ctx, i)
				s.report(func() {
					if s.cfg.OnPoint != nil {
						s.cfg.OnPoint(i, settingText(s.points[i], "the scenario"), out.Points[i])
					}
				})
			}
		}()
	}
	for i := range s.points {
		if ctx.Err() == nil {
			select {
			case next <- i:
				continue
			case <-ctx.Done():
			}
		}
		for j := i; j < len(s.points); j++ {
			out.Points[j] = reports.SweepPoint{Values: values(s.points[j]), Status: reports.StatusError,
				Error: fmt.Sprintf("not run: %v", context.Cause(ctx))}
		}
		break
	}
	close(next)
	wg.Wait()
	return out
}

func (s *Sweep) report(f func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f()
}

func checkTexts(sc *scenarios.Scenario) []string {
	out := make([]string, len(sc.Checks))
	for i, c := range sc.Checks {
		out[i] = c.String()
	}
	return out
}

func values(pt []scenarios.Setting) []string {
	out := make([]string, len(pt))
	for i, st := range pt {
		out[i] = st.Value
	}
	return out
}

// point runs point i: once, or as a rate search.
func (s *Sweep) point(ctx context.Context, i int) reports.SweepPoint {
	pt := s.points[i]
	if s.cfg.MaxRate != nil {
		return s.search(ctx, i)
	}
	p := reports.SweepPoint{Values: values(pt)}
	rep, err := s.runOnce(ctx, pt, 0)
	s.judge(&p, rep, err)
	return p
}

// judge sets the point's status, verdicts and outcomes from a run's report (or its error).
func (s *Sweep) judge(p *reports.SweepPoint, rep *reports.Report, err error) {
	switch {
	case err != nil:
		p.Status, p.Error = reports.StatusError, err.Error()
	case rep.Passed:
		p.Status = reports.StatusPass
	default:
		p.Status = reports.StatusFail
	}
	if rep != nil {
		p.Verdicts, p.Outcomes, p.Seed = rep.Checks, reports.SweepOutcomesOf(*rep), rep.Seed
	}
}

// runOnce runs one point's scenario, its load's peak rate set to rate (0: as written), and judges the
// checks as `meshproof run` does (reports.NewReport). A run that fails returns its error, with the
// record's report when it has one.
func (s *Sweep) runOnce(ctx context.Context, pt []scenarios.Setting, rate float64) (*reports.Report, error) {
	sc, err := scenarios.ParseWith(s.cfg.Data, s.cfg.File, pt)
	if err != nil {
		return nil, err // loaded in Prepare: not expected
	}
	if rate > 0 {
		ScaleLoad(sc.Load, rate/PeakRate(sc.Load))
	}
	r := s.cfg.Runner()
	rec, err := plan.Run(ctx, r, plan.New(sc, s.cfg.Seed), s.cfg.Options)
	if rec == nil {
		if err == nil {
			err = errors.New("the runner returned no record")
		}
		return nil, err
	}
	rep := reports.NewReport(rec, sc.CheckList())
	return &rep, err
}
