package live_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
)

// The soak (issue #18): a run under flapping refusals, resets, hangs and slow bodies, sampling the
// process's goroutines, open file descriptors, RSS and heap at intervals. The proxy, the upstreams and
// the load generator share this process, so the figures bound the proxy's own.
//
// It passes when:
//   - nothing outlives the run: once the topology is closed, goroutines and open fds are back to what
//     they were before it started (within 8), so no request, connection or timer leaked;
//   - memory stays flat during the run: the heap in use within 2× + 32 MiB and RSS within 1.5× + 64 MiB
//     of the mean of the first three samples after a warm-up of a fifth of the run, for the mean of the
//     last three;
//   - every request is accounted for: as many as planned, each a status or a transport error.
//
// Goroutines and fds during the run follow the connections in use, not the requests served: an open-loop
// generator opens a connection whenever every open one is busy and keeps it (as wrk and vegeta do), so a
// CPU stall that piles requests up raises them to the new peak, where they stay. They are reported, not
// bounded; the after-run check is what catches a leak.
//
// `make test` runs it for 20s at 100 requests/s under the race detector (whose shadow memory makes RSS
// follow the run: reported, not bounded, there); `make soak` for 10 minutes at 500 requests/s without it
// (MESHPROOF_SOAK_DURATION, any Go duration; MESHPROOF_SOAK_RATE, requests/s).
const soakScenario = `name: soak
seed: 3
services:
  api:
    instances: 4
    response: {latency: 2ms, size: 1024}
proxies:
  edge:
    routes_to: api
    route:
      timeout: 1s
      retry_policy: {retry_on: "5xx,reset,connect-failure", num_retries: 2, per_try_timeout: 0.2s}
    cluster:
      connect_timeout: 0.25s
      outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 2s, max_ejection_percent: 50}
load: {target: edge, rate: %d/s, duration: %s}
faults:
  - {service: api, instances: [1], flap: {down: 2s, up: 3s}, refuse: {}}
  - {service: api, instances: [2], reset: {percent: 5}}
  - {service: api, instances: [3], hang: {percent: 2}}
  - {service: api, instances: [0], slow_body: {bytes_per_second: 20000, percent: 10}}
`

type soakSample struct {
	at                time.Duration
	goroutines, fds   int
	heapInuse, rssKiB uint64
}

func sampleProcess(at time.Duration) soakSample {
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	s := soakSample{at: at, goroutines: runtime.NumGoroutine(), heapInuse: ms.HeapInuse}
	if fds, err := os.ReadDir("/proc/self/fd"); err == nil {
		s.fds = len(fds)
	}
	if status, err := os.ReadFile("/proc/self/status"); err == nil {
		for _, line := range strings.Split(string(status), "\n") {
			if v, ok := strings.CutPrefix(line, "VmRSS:"); ok {
				s.rssKiB, _ = strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			}
		}
	}
	return s
}

var _ = Describe("soak", Label("soak", "slow"), Serial, func() {
	It("keeps goroutines, fds, heap and RSS flat under flapping faults, and accounts for every request", func() {
		duration := 20 * time.Second
		if v := os.Getenv("MESHPROOF_SOAK_DURATION"); v != "" {
			d, err := time.ParseDuration(v)
			Expect(err).NotTo(HaveOccurred(), "MESHPROOF_SOAK_DURATION")
			duration = d
		}
		rate := 100
		if v := os.Getenv("MESHPROOF_SOAK_RATE"); v != "" {
			n, err := strconv.Atoi(v)
			Expect(err).NotTo(HaveOccurred(), "MESHPROOF_SOAK_RATE")
			rate = n
		}
		sc := parse(fmt.Sprintf(soakScenario, rate, duration))
		interval := max(duration/20, time.Second)

		var (
			mu      sync.Mutex
			samples []soakSample
		)
		before := sampleProcess(0)
		rec, err := live.Run(context.Background(), sc, nil, plan.Options{
			ProgressInterval: interval,
			Progress: func(p plan.Progress) {
				mu.Lock()
				samples = append(samples, sampleProcess(p.Elapsed))
				mu.Unlock()
			},
		})
		Expect(err).NotTo(HaveOccurred())

		// Nothing outlives the run.
		Eventually(func() int { return runtime.NumGoroutine() }).WithTimeout(10*time.Second).
			Should(BeNumerically("<=", before.goroutines+8), "goroutines before the run: %d", before.goroutines)
		Eventually(func() int { return sampleProcess(0).fds }).WithTimeout(10*time.Second).
			Should(BeNumerically("<=", before.fds+8), "open fds before the run: %d", before.fds)

		mu.Lock()
		defer mu.Unlock()
		var warm []soakSample
		for _, s := range samples {
			GinkgoWriter.Printf("soak sample at %s: goroutines %d, fds %d, heap %d MiB, rss %d MiB\n", s.at.Round(time.Second), s.goroutines, s.fds, s.heapInuse>>20, s.rssKiB>>10)
			if s.at >= duration/5 {
				warm = append(warm, s)
			}
		}
		Expect(len(warm)).To(BeNumerically(">=", 6), "samples after the warm-up")
		mean := func(ss []soakSample, f func(soakSample) float64) float64 {
			var t float64
			for _, s := range ss {
				t += f(s)
			}
			return t / float64(len(ss))
		}
		first, last := warm[:3], warm[len(warm)-3:]
		for _, m := range []struct {
			name        string
			f           func(soakSample) float64
			factor, add float64 // bound: first × factor + add; 0: reported only
		}{
			{"goroutines", func(s soakSample) float64 { return float64(s.goroutines) }, 0, 0},
			{"open fds", func(s soakSample) float64 { return float64(s.fds) }, 0, 0},
			{"heap in use (MiB)", func(s soakSample) float64 { return float64(s.heapInuse) / (1 << 20) }, 2, 32},
			{"RSS (MiB)", func(s soakSample) float64 { return float64(s.rssKiB) / 1024 }, map[bool]float64{false: 1.5, true: 0}[raceEnabled], 64},
		} {
			a, b := mean(first, m.f), mean(last, m.f)
			AddReportEntry("soak "+m.name, fmt.Sprintf("%.1f → %.1f", a, b))
			GinkgoWriter.Printf("soak %s: first %.1f, last %.1f\n", m.name, a, b)
			if m.factor > 0 {
				Expect(b).To(BeNumerically("<=", a*m.factor+m.add), "%s grew: %.1f → %.1f", m.name, a, b)
			}
		}

		// Every request is accounted for: sent as planned, and each one a success, a status or a
		// transport error.
		s := reports.Summarize(rec)
		Expect(float64(s.Requests)).To(BeNumerically("~", float64(rate)*duration.Seconds(), 1))
		var byStatus, byError uint64
		for _, n := range s.StatusCodes {
			byStatus += n
		}
		for _, n := range s.ErrorKinds {
			byError += n
		}
		Expect(byStatus+byError).To(Equal(s.Requests), "statuses %v + transport errors %v", s.StatusCodes, s.ErrorKinds)
		Expect(s.Successes).To(BeNumerically("<=", byStatus))
		GinkgoWriter.Printf("soak: %d requests, %.2f%% ok, statuses %v, errors %v, retries %d\n", s.Requests, s.SuccessRate, s.StatusCodes, s.ErrorKinds, s.Retries)
	})
})
