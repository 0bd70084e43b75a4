// Command simbench measures how fast a runner runs a scenario: it loads the scenario, runs it with
// GOMAXPROCS=1 on the runner -runner names (embedded, or sim once registered in runners.go), and prints
// one JSON object: the client requests, the upstream attempts (every request the instances received,
// from the run record), the simulated and the wall-clock time, attempts per wall second, the speed-up
// over real time and the process's peak RSS. It is half of `make bench-sim` (mesh/sim/bench/run.sh);
// nothing in it is a pass/fail test.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"os/signal"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// Exit codes: 0 measured, 1 the run failed, 2 invalid input or a runner that cannot run the scenario.
const (
	exitOK      = 0
	exitFailed  = 1
	exitInvalid = 2
)

// Result is what simbench prints.
type Result struct {
	Runner   string `json:"runner"`
	Scenario string `json:"scenario"`
	File     string `json:"file"`
	Seed     uint64 `json:"seed"`
	// ClientRequests are the load's requests (the record's samples); Successes those answered 2xx/3xx.
	ClientRequests int     `json:"client_requests"`
	Successes      int     `json:"successes"`
	SuccessRate    float64 `json:"success_rate"`
	// UpstreamAttempts are the requests every instance received (the sum of rec.Upstreams[].Requests):
	// the ingress proxy's attempts, the sidecars' attempts and their retries.
	UpstreamAttempts    uint64  `json:"upstream_attempts"`
	AttemptsPerClientRq float64 `json:"attempts_per_client_request"`
	// SimulatedSeconds is the span of the run in its own time: the load's planned duration, or the end
	// of its last response when later.
	SimulatedSeconds float64 `json:"simulated_seconds"`
	// LoadSeconds is the wall time to read the scenario and build the plan; WallSeconds the runner's
	// Run alone; TotalSeconds both.
	LoadSeconds  float64 `json:"load_seconds"`
	WallSeconds  float64 `json:"wall_seconds"`
	TotalSeconds float64 `json:"total_seconds"`
	// AttemptsPerWallSecond is UpstreamAttempts / WallSeconds; Speedup SimulatedSeconds / WallSeconds.
	AttemptsPerWallSecond float64 `json:"attempts_per_wall_second"`
	Speedup               float64 `json:"speedup"`
	// PeakRSSMiB is the process's peak resident set (getrusage ru_maxrss), scenario and plan included.
	PeakRSSMiB float64 `json:"peak_rss_mib"`
	// Events is how many events the runner's engine ran, when the runner says (see eventCounter).
	Events     *uint64 `json:"events,omitempty"`
	GOMAXPROCS int     `json:"gomaxprocs"`
	// GCPercent is the GC target the run had (-gcpercent).
	GCPercent int `json:"gc_percent"`
}

// defaultGCPercent is simbench's GC target: Go's default (100, as GOGC unset). The simulator's live
// heap is small next to what a run allocates; -gcpercent 400 trades memory for fewer collections.
const defaultGCPercent = 100

// writeHeapProfile writes the allocation profile (every allocation since the start, sampled) to file.
func writeHeapProfile(file string) error {
	f, err := os.Create(file)
	if err != nil {
		return err
	}
	runtime.GC()
	if err := pprof.Lookup("allocs").WriteTo(f, 0); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// eventCounter is what a runner may implement to report the events its last Run ran.
type eventCounter interface{ Events() uint64 }

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("simbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	runnerName := fs.String("runner", "sim", "the runner: "+strings.Join(slices.Sorted(maps.Keys(runners)), ", "))
	timeout := fs.Duration("timeout", 0, "give up after this long (wall clock), exit 1; 0: no bound")
	procs := fs.Int("procs", 1, "GOMAXPROCS during the run")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the runner's Run to this file (go tool pprof)")
	memProfile := fs.String("memprofile", "", "write an allocation profile (alloc_space, since the start) to this file after the run")
	gcPercent := fs.Int("gcpercent", defaultGCPercent, "the GC's target (debug.SetGCPercent, as GOGC); -1 turns the GC off")
	if err := fs.Parse(args); err != nil {
		return exitInvalid
	}
	if fs.NArg() != 1 {
		fmt.Fprintln(stderr, "usage: simbench [-runner NAME] [-timeout D] [-procs N] [-gcpercent N] [-cpuprofile FILE] [-memprofile FILE] SCENARIO.yaml")
		return exitInvalid
	}
	file := fs.Arg(0)
	newRunner, ok := runners[*runnerName]
	if !ok {
		fmt.Fprintf(stderr, "simbench: -runner %q is not registered; registered: %s", *runnerName, strings.Join(slices.Sorted(maps.Keys(runners)), ", "))
		fmt.Fprintln(stderr)
		return exitInvalid
	}
	if *procs < 1 {
		fmt.Fprintf(stderr, "simbench: -procs %d: want at least 1\n", *procs)
		return exitInvalid
	}
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(*procs))
	defer debug.SetGCPercent(debug.SetGCPercent(*gcPercent))
	if *timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, *timeout)
		defer cancel()
	}

	start := time.Now()
	sc, err := scenarios.LoadFile(file)
	if err != nil {
		fmt.Fprintf(stderr, "simbench: %v\n", err)
		return exitInvalid
	}
	p := plan.New(sc, nil)
	r := newRunner()
	var opts plan.Options // no tracing, no progress, no access logs: the run alone is measured
	if err := r.Supports(p, opts); err != nil {
		fmt.Fprintf(stderr, "simbench: %v\n", err)
		return exitInvalid
	}
	var prof *os.File
	if *cpuProfile != "" {
		if prof, err = os.Create(*cpuProfile); err == nil {
			err = pprof.StartCPUProfile(prof)
		}
		if err != nil {
			fmt.Fprintf(stderr, "simbench: -cpuprofile: %v\n", err)
			return exitInvalid
		}
	}
	loaded := time.Now()
	rec, err := r.Run(ctx, p, opts)
	wall := time.Since(loaded)
	if prof != nil {
		pprof.StopCPUProfile()
		if cerr := prof.Close(); cerr != nil {
			fmt.Fprintf(stderr, "simbench: -cpuprofile: %v\n", cerr)
			return exitFailed
		}
	}
	if *memProfile != "" {
		if werr := writeHeapProfile(*memProfile); werr != nil {
			fmt.Fprintf(stderr, "simbench: -memprofile: %v\n", werr)
			return exitFailed
		}
	}
	if err != nil {
		if errors.Is(ctx.Err(), context.DeadlineExceeded) {
			fmt.Fprintf(stderr, "simbench: the %s runner did not finish within -timeout %s\n", r.Name(), *timeout)
		} else {
			fmt.Fprintf(stderr, "simbench: the %s runner: %v\n", r.Name(), err)
		}
		return exitFailed
	}
	res := measure(rec, wall)
	res.Runner, res.File, res.Seed = r.Name(), file, p.Seed
	res.LoadSeconds = loaded.Sub(start).Seconds()
	res.TotalSeconds = res.LoadSeconds + res.WallSeconds
	res.PeakRSSMiB = peakRSSMiB()
	res.GOMAXPROCS = runtime.GOMAXPROCS(0)
	res.GCPercent = *gcPercent
	if ec, ok := r.(eventCounter); ok {
		n := ec.Events()
		res.Events = &n
	}
	enc := json.NewEncoder(stdout)
	enc.SetIndent("", "  ")
	if err := enc.Encode(res); err != nil {
		fmt.Fprintf(stderr, "simbench: %v\n", err)
		return exitFailed
	}
	return exitOK
}

// measure reads the counts and times of a run from its record.
func measure(rec *record.Record, wall time.Duration) Result {
	res := Result{Scenario: rec.Scenario, ClientRequests: len(rec.Samples), WallSeconds: wall.Seconds()}
	end := rec.Duration
	for _, s := range rec.Samples {
		if s.OK() {
			res.Successes++
		}
		end = max(end, s.Intended+s.Latency)
	}
	for _, u := range rec.Upstreams {
		res.UpstreamAttempts += u.Requests
	}
	res.SimulatedSeconds = end.Seconds()
	if res.ClientRequests > 0 {
		res.SuccessRate = float64(res.Successes) / float64(res.ClientRequests)
		res.AttemptsPerClientRq = float64(res.UpstreamAttempts) / float64(res.ClientRequests)
	}
	if res.WallSeconds > 0 {
		res.AttemptsPerWallSecond = float64(res.UpstreamAttempts) / res.WallSeconds
		res.Speedup = res.SimulatedSeconds / res.WallSeconds
	}
	return res
}

// peakRSSMiB is the process's peak resident set size (Linux reports ru_maxrss in KiB).
func peakRSSMiB() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return float64(ru.Maxrss) / 1024
}
