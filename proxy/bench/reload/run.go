package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// bench is the running setup: the upstreams, the proxy and its bootstrap file.
type bench struct {
	o       options
	p       ports
	work    string
	path    string // the bootstrap file the proxy reads
	ps      procs
	proxy   *exec.Cmd
	ups     [2]*exec.Cmd
	admin   string
	url     string
	current int // the configuration running: 0 (A) or 1 (B)
	probe   *http.Client
	stderr  io.Writer
}

// The three runs of a round.
const (
	kindBaseline = "no reload"
	kindReloads  = "reloads"
	kindInvalid  = "reloads, 1 in N invalid"
)

var kinds = []string{kindBaseline, kindReloads, kindInvalid}

func run(ctx context.Context, o options) (bool, error) {
	for _, bin := range []string{o.meshproof, o.proxy} {
		if _, err := os.Stat(bin); err != nil {
			return false, fmt.Errorf("%s: %w (make build build-proxy)", bin, err)
		}
	}
	for _, tool := range []string{"taskset", "wrk"} {
		if _, err := exec.LookPath(tool); err != nil {
			return false, fmt.Errorf("%s is not installed (apt-get install util-linux wrk)", tool)
		}
	}
	work, err := os.MkdirTemp("", "meshproof-bench-reload.")
	if err != nil {
		return false, err
	}
	defer os.RemoveAll(work)
	b := &bench{o: o, work: work, path: filepath.Join(work, "bootstrap.yaml"), stderr: os.Stderr,
		probe: &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}}
	bp := o.basePort
	b.p = ports{upstreams: [2]int{bp, bp + 2}, controls: [2]int{bp + 1, bp + 3}, listener: bp + 4, admin: bp + 5}
	b.admin, b.url = fmt.Sprintf("127.0.0.1:%d", b.p.admin), fmt.Sprintf("http://127.0.0.1:%d/", b.p.listener)
	defer b.ps.stopAll()
	if err := b.startAll(ctx); err != nil {
		return false, err
	}

	rate := o.rate
	var caps, capCPU []float64
	if rate == 0 {
		b.logf("== capacity: wrk -t1 -c%d -d%s against the proxy, 3 runs (proxy on CPU %s, wrk and upstreams on CPU %s)",
			o.connections, o.capacityDuration, o.proxyCPU, o.loadCPU)
		for i := range 3 {
			rps, util, bad, err := b.capacity(ctx)
			if err != nil {
				return false, err
			}
			caps, capCPU = append(caps, rps), append(capCPU, util)
			b.logf("  run %d  %.0f req/s  proxy CPU %.0f%%%s", i+1, rps, 100*util, bad)
		}
		rate = int(o.share * median(caps))
		b.logf("   capacity %s req/s → open loop at %.0f%%: %d req/s", spread(caps, "%.0f"), 100*o.share, rate)
	}

	lead, tail := time.Second, time.Second
	dur := lead + time.Duration(o.reloads)*o.interval + tail
	b.logf("== %d rounds of: no reload | %d reloads, one every %s (SIGHUP) | the same with every %dth reload invalid; "+
		"each run meshproof load --rate %d --duration %s --connections %d",
		o.rounds, o.reloads, o.interval, o.invalidEvery, rate, dur, o.connections)
	results := map[string][]runResult{}
	for r := 1; r <= o.rounds; r++ {
		for _, k := range kinds {
			if err := ctx.Err(); err != nil {
				return false, err
			}
			res, err := b.loadRun(ctx, k, rate, dur, lead)
			if err != nil {
				return false, err
			}
			results[k] = append(results[k], res)
			b.logf("  round %d  %-24s %s  (load average %s)", r, k, res.line(), loadAverage())
		}
	}
	return report(os.Stdout, o, rate, caps, capCPU, results), nil
}

func (b *bench) logf(format string, args ...any) { fmt.Fprintf(b.stderr, format+"\n", args...) }

// startAll starts the two upstream instances and the proxy on config A, and waits until they answer.
func (b *bench) startAll(ctx context.Context) error {
	for i := range 2 {
		addr := fmt.Sprintf("127.0.0.1:%d", b.p.upstreams[i])
		if c, err := http.Get("http://" + addr + "/"); err == nil {
			c.Body.Close()
			return fmt.Errorf("something answers on %s already: is another bench running?", addr)
		}
	}
	scenario := filepath.Join(b.work, "upstreams.yaml")
	// The upstreams: healthy, a 1 KiB answer at once (the backend of `make bench-proxy` answers the same size).
	sc := "name: bench-reload\nseed: 1\nservices:\n  backend:\n    instances: 2\n    response: {status: 200, size: 1024}\n" +
		"proxies:\n  edge:\n    routes_to: backend\nload:\n  target: edge\n  phases:\n    - {name: steady, duration: 1s, rate: 1/s}\n"
	if err := os.WriteFile(scenario, []byte(sc), 0o644); err != nil {
		return err
	}
	for i := range 2 {
		var err error
		b.ups[i], err = b.ps.start(b.o.loadCPU, []string{"GOMAXPROCS=1"}, filepath.Join(b.work, fmt.Sprintf("upstream%d.log", i)), b.o.meshproof,
			"upstream", "--scenario", scenario, "--service", "backend", "--instance", strconv.Itoa(i),
			"--listen", fmt.Sprintf("127.0.0.1:%d", b.p.upstreams[i]), "--control", fmt.Sprintf("127.0.0.1:%d", b.p.controls[i]))
		if err != nil {
			return err
		}
		if err := waitOK(ctx, fmt.Sprintf("http://127.0.0.1:%d/ready", b.p.controls[i])); err != nil {
			return b.withLog(err, fmt.Sprintf("upstream%d.log", i))
		}
	}
	if err := b.writeConfig(bootstrap(b.p, 0)); err != nil {
		return err
	}
	var err error
	b.proxy, err = b.ps.start(b.o.proxyCPU, []string{"GOMAXPROCS=1"}, filepath.Join(b.work, "proxy.log"), b.o.proxy, "-c", b.path,
		"--drain-time", "0s") // SIGTERM at the end: no drain wanted
	if err != nil {
		return err
	}
	if err := waitOK(ctx, "http://"+b.admin+"/ready"); err != nil {
		return b.withLog(err, "proxy.log")
	}
	if got, err := b.probeConfig(); err != nil || got != "a" {
		return b.withLog(fmt.Errorf("first request: config %q, %v; want config a", got, err), "proxy.log")
	}
	return nil
}

// withLog adds the end of a process's log to err.
func (b *bench) withLog(err error, name string) error {
	log, _ := os.ReadFile(filepath.Join(b.work, name))
	if len(log) > 2000 {
		log = log[len(log)-2000:]
	}
	return fmt.Errorf("%w\n%s:\n%s", err, name, log)
}

// writeConfig replaces the bootstrap file whole (a temporary file renamed over it), so that the
// proxy's own poll of the file never reads half of it.
func (b *bench) writeConfig(data string) error {
	tmp := b.path + ".tmp"
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, b.path)
}

// probeConfig sends one request on a new connection and returns the configuration that answered it.
func (b *bench) probeConfig() (string, error) {
	resp, err := b.probe.Get(b.url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("status %d", resp.StatusCode)
	}
	return resp.Header.Get("x-meshproof-config"), nil
}

// failureStat are the proxy's stats that say why requests failed.
var failureStat = regexp.MustCompile(`(fail|timeout|overflow|reset|none_healthy|5xx|503|retry|cancel|destroy|no_route|no_cluster|pending|drain)`)

var wrkRPS = regexp.MustCompile(`Requests/sec:\s+([0-9.]+)`)

// capacity runs wrk against the proxy: requests per second, the share of a CPU the proxy used, and
// wrk's non-2xx or socket-error lines if any.
func (b *bench) capacity(ctx context.Context) (float64, float64, string, error) {
	c0, err := cpuNanos(b.proxy.Process.Pid)
	if err != nil {
		return 0, 0, "", err
	}
	t0 := time.Now()
	out, err := exec.CommandContext(ctx, "taskset", "-c", b.o.loadCPU, "wrk", "-t1", fmt.Sprintf("-c%d", b.o.connections),
		fmt.Sprintf("-d%ds", int(b.o.capacityDuration.Seconds())), b.url).CombinedOutput()
	if err != nil {
		return 0, 0, "", fmt.Errorf("wrk: %w\n%s", err, out)
	}
	wall := time.Since(t0)
	c1, _ := cpuNanos(b.proxy.Process.Pid)
	m := wrkRPS.FindSubmatch(out)
	if m == nil {
		return 0, 0, "", fmt.Errorf("wrk printed no Requests/sec:\n%s", out)
	}
	rps, _ := strconv.ParseFloat(string(m[1]), 64)
	var bad []string
	for _, line := range strings.Split(string(out), "\n") {
		if strings.Contains(line, "Non-2xx") || strings.Contains(line, "Socket errors") {
			bad = append(bad, strings.TrimSpace(line))
		}
	}
	note := ""
	if len(bad) > 0 {
		note = "  (" + strings.Join(bad, "; ") + ")"
	}
	return rps, float64(c1-c0) / float64(wall.Nanoseconds()), note, nil
}

// loadResult is what `meshproof load --json` prints that the bench uses.
type loadResult struct {
	Requests     int64   `json:"requests"`
	Successes    int64   `json:"successes"`
	Canceled     int64   `json:"canceled"`
	AchievedRate float64 `json:"achieved_rate"`
	RateHeld     bool    `json:"rate_held"`
	MaxSendLagMS float64 `json:"max_send_lag_ms"`
	Latency      struct {
		P50  float64 `json:"p50"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
		Max  float64 `json:"max"`
	} `json:"latency_ms"`
	StatusCodes map[string]int64 `json:"status_codes"`
	ErrorKinds  map[string]int64 `json:"error_kinds"`
}

// answered is the requests answered 2xx; failed, the others (another status, or a transport error),
// the requests the run's end cancelled left out.
func (l loadResult) answered() int64 {
	var n int64
	for code, c := range l.StatusCodes {
		if strings.HasPrefix(code, "2") {
			n += c
		}
	}
	return n
}

func (l loadResult) failed() int64 { return l.Requests - l.Canceled - l.answered() }

// runResult is one open-loop run.
type runResult struct {
	load                    loadResult
	sent, applied, refused  int       // reloads: SIGHUPs sent; counted by the proxy as applied / refused
	seen, unseen            int       // reloads whose probe answered from the configuration expected / did not
	probeFailed             int       // probes that failed
	invalidApplied          int       // invalid bootstraps the proxy counted as applied
	counted                 []float64 // ms from SIGHUP to the proxy's counter moving
	onA, onB                int64     // requests each upstream received (config A's, config B's), probes included
	socketSame              bool
	listenerAdded, modified int64 // listener_manager.listener_added, cluster_manager.cluster_modified deltas
	draining                int64 // listener_manager.total_listeners_draining at the end
	cpu                     float64
	others                  [4]float64 // CPU shares of upstream 0, upstream 1, the bench itself, the generator
}

func (r runResult) line() string {
	l := r.load
	s := fmt.Sprintf("sent %d  2xx %d  failed %d", l.Requests, l.answered(), l.failed())
	if n := l.failed(); n > 0 {
		s += fmt.Sprintf(" %v %v", l.StatusCodes, l.ErrorKinds)
	}
	s += fmt.Sprintf("  p50/p99/p99.9 %.3f/%.2f/%.2f ms  rate held %v", l.Latency.P50, l.Latency.P99, l.Latency.P999, l.RateHeld)
	if r.sent > 0 {
		s += fmt.Sprintf("  reloads %d: applied %d refused %d seen %d/%d", r.sent, r.applied, r.refused, r.seen, r.seen+r.unseen)
	}
	s += fmt.Sprintf("  A/B %d/%d  socket same %v  CPU: proxy %.0f%% upstreams %.0f%%+%.0f%% bench %.0f%% generator %.0f%%", r.onA, r.onB, r.socketSame,
		100*r.cpu, 100*r.others[0], 100*r.others[1], 100*r.others[2], 100*r.others[3])
	return s
}

// loadRun is one open-loop run of kind k at rate for dur; reload runs start reloading lead after the
// load starts.
func (b *bench) loadRun(ctx context.Context, k string, rate int, dur, lead time.Duration) (runResult, error) {
	var res runResult
	pid := b.proxy.Process.Pid
	inode0, err := listenInode(pid, b.p.listener)
	if err != nil {
		return res, err
	}
	st0, err := adminStats(b.admin, "")
	if err != nil {
		return res, err
	}
	up0, err := b.upstreamRequests()
	if err != nil {
		return res, err
	}
	c0, _ := cpuNanos(pid)
	others0 := b.otherCPU()
	t0 := time.Now()

	loadCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	cmd := exec.CommandContext(loadCtx, "taskset", "-c", b.o.loadCPU, b.o.meshproof, "load", b.url,
		"--rate", strconv.Itoa(rate), "--duration", dur.String(), "--connections", strconv.Itoa(b.o.connections), "--json")
	var out, errOut strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errOut
	if err := cmd.Start(); err != nil {
		return res, err
	}
	loaded := make(chan error, 1)
	go func() { loaded <- cmd.Wait() }()
	loadPid := cmd.Process.Pid
	var genCPU atomic.Int64
	go func() { // the generator's CPU, read just before it exits
		for {
			if n, err := cpuNanos(loadPid); err == nil {
				genCPU.Store(n)
			} else {
				return
			}
			time.Sleep(100 * time.Millisecond)
		}
	}()

	if k != kindBaseline {
		invalidEvery := 0
		if k == kindInvalid {
			invalidEvery = b.o.invalidEvery
		}
		if err := b.reloads(ctx, &res, lead, invalidEvery); err != nil {
			cancel()
			<-loaded
			return res, err
		}
	}
	if err := <-loaded; err != nil {
		// Exit 1 is "every request failed" (or interrupted): the JSON still says what happened.
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != 1 || out.Len() == 0 {
			return res, fmt.Errorf("meshproof load: %w\n%s", err, errOut.String())
		}
	}
	wall := time.Since(t0)
	if err := json.Unmarshal([]byte(out.String()), &res.load); err != nil {
		return res, fmt.Errorf("meshproof load --json: %w", err)
	}
	c1, _ := cpuNanos(pid)
	res.cpu = float64(c1-c0) / float64(wall.Nanoseconds())
	others1 := b.otherCPU()
	for i := range others1 {
		res.others[i] = float64(others1[i]-others0[i]) / float64(wall.Nanoseconds())
	}
	res.others[3] = float64(genCPU.Load()) / float64(wall.Nanoseconds())
	if b.ps.exited(b.proxy) {
		return res, b.withLog(errors.New("the proxy exited"), "proxy.log")
	}
	inode1, err := listenInode(pid, b.p.listener)
	if err != nil {
		return res, err
	}
	res.socketSame = inode0 == inode1
	st1, err := adminStats(b.admin, "")
	if err != nil {
		return res, err
	}
	if res.load.failed() > 0 { // what the proxy says about them
		var moved []string
		for name, v := range st1 {
			if d := v - st0[name]; d != 0 && failureStat.MatchString(name) {
				moved = append(moved, fmt.Sprintf("%s +%d", name, d))
			}
		}
		slices.Sort(moved)
		b.logf("    failed requests: %v %v; the proxy's stats that moved: %s; the upstreams' statuses so far: %s",
			res.load.StatusCodes, res.load.ErrorKinds, strings.Join(moved, ", "), b.upstreamStatuses())
	}
	up1, err := b.upstreamRequests()
	if err != nil {
		return res, err
	}
	res.onA, res.onB = up1[0]-up0[0], up1[1]-up0[1]
	res.listenerAdded = st1["listener_manager.listener_added"] - st0["listener_manager.listener_added"]
	res.modified = st1["cluster_manager.cluster_modified"] - st0["cluster_manager.cluster_modified"]
	res.draining = st1["listener_manager.total_listeners_draining"]
	if got := int(st1["server.config_reload_success"] - st0["server.config_reload_success"]); got != res.applied {
		b.logf("    note: server.config_reload_success moved by %d, the bench saw %d applied (the proxy's file poll?)", got, res.applied)
	}
	if got := int(st1["server.config_reload_failed"] - st0["server.config_reload_failed"]); got != res.refused {
		b.logf("    note: server.config_reload_failed moved by %d, the bench saw %d refused", got, res.refused)
	}
	return res, nil
}

// reloads makes b.o.reloads reloads, one every interval from lead on: every invalidEvery-th one (0:
// none) an invalid bootstrap, the others alternating configs A and B.
func (b *bench) reloads(ctx context.Context, res *runResult, lead time.Duration, invalidEvery int) error {
	start := time.Now().Add(lead)
	invalid := 0
	for i := range b.o.reloads {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(time.Until(start.Add(time.Duration(i) * b.o.interval))):
		}
		next, data := 1-b.current, ""
		bad := invalidEvery > 0 && (i+1)%invalidEvery == 0
		if bad {
			data = invalidBootstrap(b.p, invalid)
			invalid++
		} else {
			data = bootstrap(b.p, next)
		}
		before, err := adminStats(b.admin, "^server\\.config_reload_")
		if err != nil {
			return err
		}
		if err := b.writeConfig(data); err != nil {
			return err
		}
		sent := time.Now()
		if err := b.proxy.Process.Signal(syscall.SIGHUP); err != nil {
			return err
		}
		res.sent++
		var ok, failed int64
		for {
			after, err := adminStats(b.admin, "^server\\.config_reload_")
			if err != nil {
				return err
			}
			ok = after["server.config_reload_success"] - before["server.config_reload_success"]
			failed = after["server.config_reload_failed"] - before["server.config_reload_failed"]
			if ok+failed > 0 {
				break
			}
			if time.Since(sent) > 5*time.Second {
				return fmt.Errorf("reload %d: the proxy did not count it within 5 s", i+1)
			}
			time.Sleep(5 * time.Millisecond)
		}
		res.counted = append(res.counted, float64(time.Since(sent).Microseconds())/1000)
		res.applied += int(ok)
		res.refused += int(failed)
		if ok > 0 {
			if bad {
				res.invalidApplied++
			} else {
				b.current = next
			}
		}
		want := configName(b.current)
		switch got, err := b.probeConfig(); {
		case err != nil:
			res.probeFailed++
		case got == want:
			res.seen++
		default:
			res.unseen++
		}
	}
	return nil
}

// loadAverage is the 1-minute load average: how busy the machine was besides the bench.
func loadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	return strings.Fields(string(b))[0]
}

// otherCPU is the CPU time of the upstreams and of the bench itself.
func (b *bench) otherCPU() [3]int64 {
	var n [3]int64
	n[0], _ = cpuNanos(b.ups[0].Process.Pid)
	n[1], _ = cpuNanos(b.ups[1].Process.Pid)
	n[2], _ = cpuNanos(os.Getpid())
	return n
}

// upstreamStatuses is the statuses each upstream instance answered since it started, from /record.
func (b *bench) upstreamStatuses() string {
	var out []string
	for i, port := range b.p.controls {
		var rec struct {
			Stats struct {
				Statuses map[string]int64 `json:"statuses"`
				Resets   int64            `json:"resets"`
			} `json:"stats"`
		}
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/record", port), &rec); err != nil {
			out = append(out, fmt.Sprintf("upstream %d: %v", i, err))
			continue
		}
		out = append(out, fmt.Sprintf("upstream %d: %v resets %d", i, rec.Stats.Statuses, rec.Stats.Resets))
	}
	return strings.Join(out, "; ")
}

// upstreamRequests is the count of requests each upstream instance received, from its control's /record.
func (b *bench) upstreamRequests() ([2]int64, error) {
	var n [2]int64
	for i, port := range b.p.controls {
		var rec struct {
			Stats struct {
				Requests int64 `json:"requests"`
			} `json:"stats"`
		}
		if err := getJSON(fmt.Sprintf("http://127.0.0.1:%d/record", port), &rec); err != nil {
			return n, err
		}
		n[i] = rec.Stats.Requests
	}
	return n, nil
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	if len(s) == 0 {
		return 0
	}
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

// spread is "median [min–max]" of xs, each formatted with format.
func spread(xs []float64, format string) string {
	if len(xs) == 0 {
		return "n/a"
	}
	m := fmt.Sprintf(format, median(xs))
	lo, hi := fmt.Sprintf(format, slices.Min(xs)), fmt.Sprintf(format, slices.Max(xs))
	if lo == hi {
		return m
	}
	return fmt.Sprintf("%s [%s–%s]", m, lo, hi)
}
