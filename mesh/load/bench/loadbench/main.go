// Command loadbench compares meshproof's load generator with its peers on one machine, side by side in
// one run (mesh/load/bench/run.sh sets up nginx and the tools, then runs it):
//
//	(a) the highest sustained open-loop rate, ours vs vegeta and vs fortio;
//	(b) the closed-loop rate, ours vs wrk;
//	(c) coordinated omission: open loop at 1000/s against a target stalling 1s every 10s.
//
// Every generator is pinned to the same core (--gen-cpu) and the target to another, so each gets the
// same CPU budget. Traffic goes to 127.0.0.1 only.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"net"
	"net/url"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"time"
)

type options struct {
	meshproof, vegeta, fortio, wrk, stall string
	target                                string
	genCPU, targetCPU                     string
	trial                                 time.Duration
	startRate                             float64
	maxP99                                time.Duration
	conns                                 int
	closedFor                             time.Duration
	coFor                                 time.Duration
	coAddr                                string
	coConns                               int
}

func main() {
	var o options
	flag.StringVar(&o.meshproof, "meshproof", "meshproof", "meshproof binary")
	flag.StringVar(&o.vegeta, "vegeta", "", "vegeta binary (empty: unavailable)")
	flag.StringVar(&o.fortio, "fortio", "", "fortio binary (empty: unavailable)")
	flag.StringVar(&o.wrk, "wrk", "", "wrk binary (empty: unavailable)")
	flag.StringVar(&o.stall, "stallserver", "", "stallserver binary (mesh/load/bench/stallserver)")
	flag.StringVar(&o.target, "target", "http://127.0.0.1:18080/", "the nginx target (loopback)")
	flag.StringVar(&o.genCPU, "gen-cpu", "0", "CPU list for every load generator (taskset -c); empty: no pinning")
	flag.StringVar(&o.targetCPU, "target-cpu", "1", "CPU list for the stalling target")
	flag.DurationVar(&o.trial, "trial", 3*time.Second, "length of one open-loop trial of the rate search")
	flag.Float64Var(&o.startRate, "start-rate", 4000, "first rate of the search")
	flag.DurationVar(&o.maxP99, "max-p99", 25*time.Millisecond, "a trial fails when its p99 is above this (the p99 'explodes')")
	flag.IntVar(&o.conns, "connections", 64, "connections of fortio and of the closed-loop runs (ours and wrk)")
	flag.DurationVar(&o.closedFor, "closed-for", 5*time.Second, "length of each closed-loop run")
	flag.DurationVar(&o.coFor, "co-for", 30*time.Second, "length of each coordinated-omission run")
	flag.StringVar(&o.coAddr, "co-addr", "127.0.0.1:18090", "stalling target address")
	flag.IntVar(&o.coConns, "co-connections", 10, "connections of ours and wrk in the coordinated-omission test")
	flag.Parse()
	if u, err := url.Parse(o.target); err != nil || u.Hostname() != "127.0.0.1" {
		fatalf("--target %q: traffic goes to 127.0.0.1 only", o.target)
	}
	ctx := context.Background()
	started := time.Now()

	fmt.Printf("== (a) highest sustained open-loop rate (trials of %s; a trial passes when achieved ≥ 95%% of target, errors ≤ 1%%, p99 ≤ %s; a rate fails after 2 failed trials in a row; generators on CPU %q)\n",
		o.trial, o.maxP99, o.genCPU)
	ours := search(ctx, o, "meshproof", func(r float64) (trial, error) { return o.oursOpen(ctx, r) })
	var vegeta, fortio float64
	if o.vegeta != "" {
		vegeta = search(ctx, o, "vegeta", func(r float64) (trial, error) { return o.vegetaOpen(ctx, r) })
	} else {
		fmt.Println("vegeta: unavailable, skipped")
	}
	if o.fortio != "" {
		fortio = search(ctx, o, "fortio", func(r float64) (trial, error) { return o.fortioOpen(ctx, r) })
	} else {
		fmt.Println("fortio: unavailable (not installed; `go install fortio.org/fortio@v1.63.3` failed), ratio skipped")
	}

	fmt.Printf("\n== (b) closed loop, %d connections, %s per run, best of 2 (generators on CPU %q)\n", o.conns, o.closedFor, o.genCPU)
	var oursClosed, wrkClosed float64
	for range 2 {
		if r, err := o.oursClosed(ctx); err == nil {
			oursClosed = max(oursClosed, r)
			fmt.Printf("  meshproof --concurrency %d: %.0f req/s\n", o.conns, r)
		} else {
			fmt.Println("  meshproof:", err)
		}
		if o.wrk == "" {
			break
		}
		if r, _, _, err := o.wrkRun(ctx, o.target, o.conns, o.closedFor); err == nil {
			wrkClosed = max(wrkClosed, r)
			fmt.Printf("  wrk -c%d: %.0f req/s\n", o.conns, r)
		} else {
			fmt.Println("  wrk:", err)
		}
	}

	fmt.Printf("\n== (c) coordinated omission: 1000 req/s for %s, target stalls 1s every 10s, %d connections\n", o.coFor, o.coConns)
	co, coErr := o.coOurs(ctx)
	var wrkCO wrkResult
	var wrkCOErr error
	if o.wrk != "" {
		wrkCO.rate, wrkCO.p99, wrkCO.avg, wrkCOErr = o.coWrk(ctx)
	}

	fmt.Printf("\n== results (%s in all)\n", time.Since(started).Round(time.Second))
	ratio := func(name string, a, b, want float64, skip string) {
		switch {
		case skip != "":
			fmt.Printf("%-44s skipped: %s\n", name, skip)
		case b <= 0:
			fmt.Printf("%-44s n/a (peer result missing)\n", name)
		default:
			verdict := "MET"
			if a/b < want {
				verdict = "NOT MET"
			}
			fmt.Printf("%-44s %.2f  (%.0f vs %.0f req/s; target ≥ %.1f: %s)\n", name, a/b, a, b, want, verdict)
		}
	}
	ratio("open-loop sustained rate, ours/vegeta", ours, vegeta, 1.5, map[bool]string{true: "vegeta unavailable"}[o.vegeta == ""])
	ratio("open-loop sustained rate, ours/fortio", ours, fortio, 1.0, map[bool]string{true: "fortio unavailable (go install fortio.org/fortio@v1.63.3 failed)"}[o.fortio == ""])
	ratio("closed-loop rate, ours/wrk", oursClosed, wrkClosed, 0.5, map[bool]string{true: "wrk unavailable"}[o.wrk == ""])
	if coErr != nil {
		fmt.Println("coordinated omission: ours failed:", coErr)
	} else {
		// Analytic: at a constant 1000/s, 10% of requests are intended during a stall (1s of every 10s),
		// and one intended s into a stall ends when it does, after 1−s: their latency is uniform on
		// (0, 1s], the other 90% are ~0. So P(latency > x) = 0.1·(1 − x/1s) for 0 < x ≤ 1s, and
		// p99: 0.1·(1 − x) = 0.01 ⇒ x = 0.90s; p99.9: 0.1·(1 − x) = 0.001 ⇒ x = 0.99s.
		dev := func(got, want float64) string { return fmt.Sprintf("%+.1f%%", 100*(got-want)/want) }
		within := func(got, want float64) string {
			if math.Abs(got-want) <= 0.1*want {
				return "within ±10%: MET"
			}
			return "outside ±10%: NOT MET"
		}
		fmt.Printf("%-44s p99 %.3fs (analytic 0.900s, %s, %s), p99.9 %.3fs (analytic 0.990s, %s, %s)\n",
			"CO: ours corrected", co.p99, dev(co.p99, 0.9), within(co.p99, 0.9), co.p999, dev(co.p999, 0.99), within(co.p999, 0.99))
		fmt.Printf("%-44s p99 %.3fs, p99.9 %.3fs (what a coordinated generator would report)\n", "CO: ours uncorrected (from actual send)", co.up99, co.up999)
		fmt.Printf("%-44s %d requests, achieved %.1f/s, max send lag %.3fs\n", "CO: ours load", co.requests, co.achieved, co.maxLag)
	}
	switch {
	case o.wrk == "":
		fmt.Println("CO: wrk unavailable")
	case wrkCOErr != nil:
		fmt.Println("CO: wrk failed:", wrkCOErr)
	default:
		fmt.Printf("%-44s p99 %.4fs, mean %.4fs at %.0f req/s (closed loop, not corrected)\n", "CO: wrk (closed loop)", wrkCO.p99, wrkCO.avg, wrkCO.rate)
		// Little's law: a closed loop of c connections has mean latency × rate ≤ c. When wrk's figures
		// break that bound, its latency statistics are not a per-request distribution.
		if l := wrkCO.avg * wrkCO.rate; l > 2*float64(o.coConns) { // 2×: wrk rounds its printed mean
			fmt.Printf("%-44s wrk's mean latency × rate = %.0f requests in flight > %d connections (Little's law): its latency figures are not a per-request distribution; do not read its p99 as a corrected one\n", "", l, o.coConns)
		}
	}
}

type trial struct {
	achieved float64
	target   float64
	errRate  float64
	p99      time.Duration
}

func (t trial) pass(o options) bool {
	return t.achieved >= 0.95*t.target && t.errRate <= 0.01 && t.p99 <= o.maxP99
}

// search finds the highest sustained rate: it raises the rate by 30% while trials pass, then bisects
// twice between the last pass and the first failure; when the first rate fails it halves it until a
// trial passes. A rate fails only when two trials in a row fail (one retry absorbs a hiccup of a shared
// machine); the same rule holds for every generator. It returns the highest passing target rate.
func search(ctx context.Context, o options, name string, run func(float64) (trial, error)) float64 {
	once := func(r float64) bool {
		t, err := run(r)
		time.Sleep(500 * time.Millisecond) // let the target settle
		if err != nil {
			fmt.Printf("  %-9s %7.0f/s: error: %v\n", name, r, err)
			return false
		}
		ok := t.pass(o)
		fmt.Printf("  %-9s %7.0f/s: achieved %8.1f/s, errors %5.2f%%, p99 %-10s %s\n", name, r, t.achieved, 100*t.errRate,
			t.p99.Round(10*time.Microsecond), map[bool]string{true: "pass", false: "FAIL"}[ok])
		return ok
	}
	try := func(r float64) bool {
		if once(r) {
			return true
		}
		return once(r) // the retry
	}
	best, fail := 0.0, 0.0
	for r := o.startRate; ; r = math.Round(r * 1.3) {
		if !try(r) {
			fail = r
			break
		}
		best = r
		if r > 2e6 {
			break
		}
	}
	for r := math.Round(fail / 2); best == 0 && r >= 250; r = math.Round(r / 2) {
		if try(r) {
			best = r
		} else {
			fail = r
		}
	}
	for range 2 {
		if fail == 0 || best == 0 {
			break
		}
		mid := math.Round((best + fail) / 2)
		if try(mid) {
			best = mid
		} else {
			fail = mid
		}
	}
	fmt.Printf("  %s: highest sustained open-loop rate %.0f/s\n", name, best)
	return best
}

// pinned returns the command pinned to cpus with taskset.
func pinned(ctx context.Context, cpus string, name string, args ...string) *exec.Cmd {
	if cpus == "" {
		return exec.CommandContext(ctx, name, args...)
	}
	return exec.CommandContext(ctx, "taskset", append([]string{"-c", cpus, name}, args...)...)
}

func output(cmd *exec.Cmd) ([]byte, error) {
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return out, fmt.Errorf("%s: %w: %s", cmd.Args, err, strings.TrimSpace(stderr.String()))
	}
	return out, nil
}

type oursJSON struct {
	Requests     float64 `json:"requests"`
	Errors       float64 `json:"errors"`
	AchievedRate float64 `json:"achieved_rate"`
	MaxSendLagMs float64 `json:"max_send_lag_ms"`
	Latency      struct {
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
	} `json:"latency_ms"`
	Uncorrected struct {
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
	} `json:"uncorrected_latency_ms"`
}

func (o options) ours(ctx context.Context, target string, args ...string) (oursJSON, error) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	out, err := output(pinned(ctx, o.genCPU, o.meshproof, append([]string{"load", target, "--json"}, args...)...))
	var j oursJSON
	if err == nil {
		err = json.Unmarshal(out, &j)
	}
	return j, err
}

func (o options) oursOpen(ctx context.Context, rate float64) (trial, error) {
	// The same connection budget as fortio's -c: queueing for a connection shows in our corrected latency.
	j, err := o.ours(ctx, o.target, "--rate", fmt.Sprint(rate), "--duration", o.trial.String(), "--timeout", "5s",
		"--connections", fmt.Sprint(o.conns))
	if err != nil {
		return trial{}, err
	}
	return trial{achieved: j.AchievedRate, target: rate, errRate: j.Errors / max(j.Requests, 1), p99: msDur(j.Latency.P99)}, nil
}

func (o options) oursClosed(ctx context.Context) (float64, error) {
	j, err := o.ours(ctx, o.target, "--concurrency", fmt.Sprint(o.conns), "--duration", o.closedFor.String())
	return j.AchievedRate, err
}

func (o options) vegetaOpen(ctx context.Context, rate float64) (trial, error) {
	ctx, cancel := context.WithTimeout(ctx, o.trial+time.Minute)
	defer cancel()
	results, err := os.CreateTemp("", "vegeta-*.bin")
	if err != nil {
		return trial{}, err
	}
	defer os.Remove(results.Name())
	attack := pinned(ctx, o.genCPU, o.vegeta, "attack", "-rate", fmt.Sprint(rate), "-duration", o.trial.String(), "-timeout", "5s")
	attack.Stdin = strings.NewReader("GET " + o.target + "\n")
	attack.Stdout = results
	var stderr bytes.Buffer
	attack.Stderr = &stderr
	if err := attack.Run(); err != nil {
		return trial{}, fmt.Errorf("vegeta attack: %w: %s", err, stderr.String())
	}
	_ = results.Close()
	out, err := output(exec.CommandContext(ctx, o.vegeta, "report", "-type", "json", results.Name()))
	if err != nil {
		return trial{}, err
	}
	var j struct {
		Requests  float64 `json:"requests"`
		Rate      float64 `json:"rate"`
		Success   float64 `json:"success"`
		Latencies struct {
			P99 int64 `json:"99th"`
		} `json:"latencies"`
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return trial{}, err
	}
	return trial{achieved: j.Rate, target: rate, errRate: 1 - j.Success, p99: time.Duration(j.Latencies.P99)}, nil
}

func (o options) fortioOpen(ctx context.Context, rate float64) (trial, error) {
	ctx, cancel := context.WithTimeout(ctx, o.trial+time.Minute)
	defer cancel()
	out, err := output(pinned(ctx, o.genCPU, o.fortio, "load", "-quiet", "-json", "-", "-qps", fmt.Sprint(rate), "-t", o.trial.String(),
		"-c", fmt.Sprint(o.conns), "-timeout", "5s", o.target))
	if err != nil {
		return trial{}, err
	}
	var j struct {
		ActualQPS         float64
		DurationHistogram struct {
			Count       float64
			Percentiles []struct{ Percentile, Value float64 }
		}
		RetCodes map[string]float64
	}
	if err := json.Unmarshal(out, &j); err != nil {
		return trial{}, err
	}
	t := trial{achieved: j.ActualQPS, target: rate}
	for _, p := range j.DurationHistogram.Percentiles {
		if p.Percentile == 99 {
			t.p99 = time.Duration(p.Value * float64(time.Second))
		}
	}
	if n := j.DurationHistogram.Count; n > 0 {
		t.errRate = 1 - j.RetCodes["200"]/n
	}
	return t, nil
}

var (
	wrkRate = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)
	wrkP99  = regexp.MustCompile(`(?m)^\s+99%\s+([0-9.]+)(us|ms|s|m)\s*$`)
	wrkAvg  = regexp.MustCompile(`(?m)^\s+Latency\s+([0-9.]+)(us|ms|s|m)\s`)
	units   = map[string]float64{"us": 1e-6, "ms": 1e-3, "s": 1, "m": 60}
)

type wrkResult struct{ rate, p99, avg float64 }

// wrkRun runs wrk closed loop with c connections and returns its request rate, p99 and mean latency
// in seconds.
func (o options) wrkRun(ctx context.Context, target string, c int, d time.Duration) (float64, float64, float64, error) {
	ctx, cancel := context.WithTimeout(ctx, d+time.Minute)
	defer cancel()
	out, err := output(pinned(ctx, o.genCPU, o.wrk, "-t1", fmt.Sprintf("-c%d", c), "-d"+fmt.Sprint(int(d.Seconds()))+"s", "--latency", "--timeout", "10s", target))
	if err != nil {
		return 0, 0, 0, err
	}
	m := wrkRate.FindSubmatch(out)
	if m == nil {
		return 0, 0, 0, fmt.Errorf("wrk: no Requests/sec in %q", out)
	}
	rate, _ := strconv.ParseFloat(string(m[1]), 64)
	p99, avg := 0.0, 0.0
	if m := wrkP99.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		p99 = v * units[string(m[2])]
	}
	if m := wrkAvg.FindSubmatch(out); m != nil {
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		avg = v * units[string(m[2])]
	}
	return rate, p99, avg, nil
}

type coResult struct {
	requests               int
	achieved, maxLag       float64
	p99, p999, up99, up999 float64
}

// startStall starts a fresh stalling target (its stalls count from its first request).
func (o options) startStall(ctx context.Context) (func(), error) {
	if o.stall == "" {
		return nil, errors.New("no --stallserver")
	}
	cmd := pinned(ctx, o.targetCPU, o.stall, "-addr", o.coAddr)
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	stop := func() { _ = cmd.Process.Signal(os.Interrupt); _ = cmd.Wait() }
	for range 100 { // wait until it listens
		if c, err := net.DialTimeout("tcp", o.coAddr, time.Second); err == nil {
			_ = c.Close()
			return stop, nil
		}
		time.Sleep(50 * time.Millisecond)
	}
	stop()
	return nil, errors.New("stallserver did not start")
}

func (o options) coOurs(ctx context.Context) (coResult, error) {
	stop, err := o.startStall(ctx)
	if err != nil {
		return coResult{}, err
	}
	defer stop()
	j, err := o.ours(ctx, "http://"+o.coAddr+"/", "--rate", "1000", "--duration", o.coFor.String(), "--connections", fmt.Sprint(o.coConns))
	if err != nil {
		return coResult{}, err
	}
	return coResult{requests: int(j.Requests), achieved: j.AchievedRate, maxLag: j.MaxSendLagMs / 1e3,
		p99: j.Latency.P99 / 1e3, p999: j.Latency.P999 / 1e3, up99: j.Uncorrected.P99 / 1e3, up999: j.Uncorrected.P999 / 1e3}, nil
}

func (o options) coWrk(ctx context.Context) (float64, float64, float64, error) {
	stop, err := o.startStall(ctx)
	if err != nil {
		return 0, 0, 0, err
	}
	defer stop()
	return o.wrkRun(ctx, "http://"+o.coAddr+"/", o.coConns, o.coFor)
}

func msDur(ms float64) time.Duration { return time.Duration(ms * float64(time.Millisecond)) }

func fatalf(format string, a ...any) {
	w := bufio.NewWriter(os.Stderr)
	fmt.Fprintf(w, "loadbench: "+format+"\n", a...)
	_ = w.Flush()
	os.Exit(2)
}
