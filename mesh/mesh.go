// Package mesh is meshproof's Go API: load a scenario from a file or build one in code, run it on the
// embedded or the docker runner, and read the result — the run's record, its outcomes, and each
// check's verdict — or judge more checks against it. Package mesh/meshtest adds Gomega matchers and
// helpers for Ginkgo and `testing` on top of it.
//
// A scenario built in code goes through the same loader as a YAML file, so it gets the same defaults,
// validation and field-path errors:
//
//	sc, err := mesh.Spec{
//		Name:     "retries",
//		Services: map[string]mesh.Service{"checkout": {Instances: 4}},
//		Proxies:  map[string]mesh.Proxy{"edge": {RoutesTo: "checkout", Route: mesh.Fields{"retry_policy": mesh.Fields{"retry_on": "5xx", "num_retries": 3}}}},
//		Load:     mesh.Load{Target: "edge", Rate: "200/s", Duration: "5s"},
//		Faults:   []mesh.FaultRule{{Service: "checkout", Instances: []int{3}, Abort: mesh.Fields{"status": 503, "percent": 50}}},
//		Checks:   []string{"success_rate >= 99.5%"},
//	}.Build()
//	res, err := mesh.Run(ctx, sc, mesh.Options{})
//	fmt.Println(res.Passed(), res.Summary().Latency.P99)
package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// Scenario is a loaded, validated scenario (see scenarios/README.md for the format).
type Scenario = scenarios.Scenario

// LoadFile reads and validates a scenario file. Its error lists every problem with file:line and field.
func LoadFile(path string) (*Scenario, error) { return scenarios.LoadFile(path) }

// Parse validates a scenario held in memory; name is the file name errors carry.
func Parse(data []byte, name string) (*Scenario, error) { return scenarios.Parse(data, name) }

// Error is one problem of a scenario: file, line, column, field path and what is accepted.
type Error = scenarios.Error

// Errors lists the problems an error of LoadFile, Parse or Spec.Build holds, in file order.
func Errors(err error) []*Error { return config.Errors(err) }

// Runner is where a scenario runs.
type Runner string

// The runners.
const (
	// Embedded runs every instance and proxy in this process, on loopback ports.
	Embedded Runner = "embedded"
	// Docker runs each instance and proxy in its own container on a network of the run's own, built
	// FROM scratch around a static meshproof binary (Docker must be reachable).
	Docker Runner = "docker"
	// Sim runs the scenario in virtual time (mesh/sim): the same plan, policy objects and fault models,
	// no socket, deterministic for the seed; what it does not model is refused (ErrUnsupported).
	Sim Runner = "sim"
)

// Options change a run without changing its scenario.
type Options struct {
	// Seed replaces the scenario's seed (nil: the scenario's).
	Seed *uint64
	// Runner is where the run happens; "" is Embedded.
	Runner Runner
	// Dir, when set, receives the run's report files: report.json, summary.md, junit.xml, report.html
	// and, with tracing, traces.otlp.json. It is created if needed. "": no files.
	Dir string
	// Progress, when set, receives a progress line about every ProgressInterval while the load runs.
	Progress         io.Writer
	ProgressInterval time.Duration // default 1s
	// TraceRatio is the share of requests traced (0: no tracing, 1: all of them); the spans go to
	// Dir's traces.otlp.json and, when OTLPEndpoint is set, over OTLP/HTTP there.
	TraceRatio   float64
	OTLPEndpoint string
	// DockerImage runs the docker runner on this meshproof image (e.g. `make image`'s) instead of one
	// built for the run; DockerBinary builds the run's image around this static binary. DockerLog
	// receives the docker runner's progress lines.
	DockerImage, DockerBinary string
	DockerLog                 io.Writer
}

// ErrUnsupported is wrapped by the error of Run when the runner cannot do part of the scenario (e.g.
// a container fault on the embedded runner): a runner never silently leaves part of a scenario out.
var ErrUnsupported = plan.ErrUnsupported

// Result is a finished run: its record, its report (summary, outcomes and the scenario's checks'
// verdicts), and where its files went.
type Result struct {
	Scenario *Scenario
	Seed     uint64
	Record   *record.Record
	Report   reports.Report
	// Dir holds the run's files (Options.Dir); "" when none were written.
	Dir string
}

// Run runs the scenario and judges its checks. The error is about the run itself (the runner cannot do
// the scenario, Docker is unreachable, an instance failed to start, files could not be written): a
// check that fails is a Result with Passed false, not an error. Cancelling ctx stops the run and
// everything it started; a run cancelled during its load returns the partial result (Report.Partial
// says so, and it does not pass) with ctx's error.
func Run(ctx context.Context, sc *Scenario, opts Options) (*Result, error) {
	if sc == nil {
		return nil, errors.New("mesh: Run: no scenario")
	}
	var r plan.Runner
	switch opts.Runner {
	case "", Embedded:
		r = live.Runner{}
	case Docker:
		r = docker.Runner{Options: docker.Options{Image: opts.DockerImage, Binary: opts.DockerBinary, Log: opts.DockerLog}}
	case Sim:
		r = sim.Runner{}
	default:
		return nil, fmt.Errorf("mesh: Run: runner %q: want %q, %q or %q", opts.Runner, Embedded, Docker, Sim)
	}
	if opts.TraceRatio < 0 || opts.TraceRatio > 1 {
		return nil, fmt.Errorf("mesh: Run: TraceRatio %g: want 0 to 1", opts.TraceRatio)
	}
	p := plan.New(sc, opts.Seed)
	var popts plan.Options
	var spans []sdktrace.ReadOnlySpan
	var received []*coltracepb.ExportTraceServiceRequest
	if opts.TraceRatio > 0 {
		popts.Tracing = &plan.Tracing{SampleRatio: opts.TraceRatio, OTLPEndpoint: opts.OTLPEndpoint,
			Spans:    func(s []sdktrace.ReadOnlySpan) { spans = s },
			Received: func(r []*coltracepb.ExportTraceServiceRequest) { received = r }}
	}
	if opts.Progress != nil {
		w := opts.Progress
		popts.Progress = func(pr plan.Progress) { fmt.Fprintf(w, "progress: %s\n", ProgressLine(pr)) }
		popts.ProgressInterval = opts.ProgressInterval
	}
	if opts.Dir != "" {
		popts.AccessLogDir = filepath.Join(opts.Dir, "access") // each proxy's access log (embedded runner)
	}
	if err := r.Supports(p, popts); err != nil {
		return nil, err
	}
	if opts.Runner == Docker {
		if err := docker.Available(ctx); err != nil {
			return nil, fmt.Errorf("mesh: the docker runner needs Docker: %w", err)
		}
	}
	rec, runErr := r.Run(ctx, p, popts)
	if rec == nil {
		return nil, runErr
	}
	res := &Result{Scenario: sc, Seed: p.Seed, Record: rec, Report: reports.NewReport(rec, sc.CheckList())}
	if runErr != nil {
		res.Report.Partial = fmt.Sprintf("interrupted (%v)", runErr)
		res.Report.Passed = false
	}
	if opts.Dir != "" {
		if err := res.write(opts.Dir, spans, received); err != nil {
			return res, errors.Join(runErr, err)
		}
	}
	return res, runErr
}

// write writes the run's report files into dir.
func (r *Result) write(dir string, spans []sdktrace.ReadOnlySpan, received []*coltracepb.ExportTraceServiceRequest) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("mesh: run directory: %w", err)
	}
	if err := reports.WriteAll(dir, r.Report, r.Record); err != nil {
		return fmt.Errorf("mesh: run directory: %w", err)
	}
	if spans != nil {
		if err := tracing.WriteFile(filepath.Join(dir, tracing.FileOTLP), spans, received...); err != nil {
			return fmt.Errorf("mesh: run directory: %w", err)
		}
	}
	r.Dir = dir
	return nil
}

// ProgressLine is one progress report in words, as `meshproof run` prints it.
func ProgressLine(p plan.Progress) string {
	return fmt.Sprintf("%s/%s  %.0f req/s  p99 %s  errors %d  retries %d  ejected %d",
		p.Elapsed.Round(100*time.Millisecond), p.Planned, p.Rate, p.P99.Round(10*time.Microsecond), p.Errors, p.Retries, p.Ejections)
}

// Passed tells whether every check of the scenario held (and the run completed).
func (r *Result) Passed() bool { return r.Report.Passed }

// Checks are the verdicts of the scenario's checks, in order.
func (r *Result) Checks() []reports.Verdict { return r.Report.Checks }

// Failed are the verdicts of the checks that did not hold.
func (r *Result) Failed() []reports.Verdict {
	var out []reports.Verdict
	for _, v := range r.Report.Checks {
		if !v.Passed {
			out = append(out, v)
		}
	}
	return out
}

// Summary is the run's summary over its whole length: requests, success rate, latency percentiles,
// retries, amplification.
func (r *Result) Summary() reports.Summary { return r.Report.Summary }

// Judge judges more checks against the run, written as in a scenario ("p99 < 50ms",
// "during faults[0]: success_rate >= 99%", "edge(cart->payments): retries <= 10"), with the same
// evaluator as the scenario's own checks. A check that does not parse is an error; one the run cannot
// judge is a failed verdict saying why.
func (r *Result) Judge(exprs ...string) ([]reports.Verdict, error) {
	list := make([]checks.Check, len(exprs))
	for i, e := range exprs {
		c, err := checks.Parse(e)
		if err != nil {
			return nil, fmt.Errorf("mesh: check %q: %w", e, err)
		}
		list[i] = c
	}
	return reports.EvaluateRun(list, r.Record), nil
}
