package proxy_test

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// Slow start (Envoy's arch_overview/upstream/load_balancing/slow_start, EdfLoadBalancerBase in
// source/common/upstream/load_balancer_impl.cc): a host that active health checks have just made healthy
// gets max(min_weight_percent, (t / window)^(1/aggression)) of its weight until slow_start_window has
// passed, t counted from the passing check (setLastHcPassTime), on the proxy's clock.
var _ = Describe("slow start", func() {
	// ramp starts a proxy on a fake clock with hosts a and b under lbPolicy and slow start ss, b failing
	// its health checks until a's window is long past; it returns b's share of n picks at a time after
	// b passed its check.
	ramp := func(lbPolicy string, ss policy.SlowStartConfig) func(at time.Duration, n int) float64 {
		a := newUpstream(ok)
		var bUp atomic.Bool
		b := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/healthz" && !bUp.Load() {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		c := cluster("backend", a.addr(), b.addr())
		c.LbPolicy, c.SlowStart = lbPolicy, &ss
		c.HealthChecks = []policy.HealthCheckConfig{{Timeout: 5 * time.Second, Interval: time.Second, NoTrafficInterval: time.Second,
			UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
		clk := fakeClock()
		var mu sync.Mutex
		healthyAt := map[string]time.Time{}
		became := func(addr string) func() bool {
			return func() bool { mu.Lock(); defer mu.Unlock(); _, ok := healthyAt[addr]; return ok }
		}
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{c},
			opts: proxy.Options{Clock: clk, OnEvent: func(e proxy.Event) {
				if e.Kind == policy.EventHealthy {
					mu.Lock()
					healthyAt[e.Host] = e.Time
					mu.Unlock()
				}
			}}})
		until(clk, 100*time.Millisecond, became(a.addr()))
		clk.Step(time.Minute) // a's own slow start is long over
		bUp.Store(true)
		until(clk, 100*time.Millisecond, became(b.addr()))
		mu.Lock()
		passed := healthyAt[b.addr()]
		mu.Unlock()
		return func(at time.Duration, n int) float64 {
			GinkgoHelper()
			Expect(clk.Now()).To(BeTemporally("<=", passed.Add(at)))
			clk.Step(passed.Add(at).Sub(clk.Now()))
			picks := 0
			for range n {
				code, hdr, _ := get(url + "/")
				Expect(code).To(Equal(200))
				if hdr.Get("x-upstream") == b.addr() {
					picks++
				}
			}
			return float64(picks) / float64(n)
		}
	}

	It("ramps a newly healthy host's share of round robin picks over the window, linearly by default", func() {
		share := ramp("ROUND_ROBIN", policy.DefaultSlowStartConfig(10*time.Second))
		// 1 s into a 10 s window: max(10%, 1/10) of its weight, 1 pick in 11.
		Expect(share(time.Second, 110)).To(BeNumerically("~", 1.0/11, 0.03))
		// 5 s: half its weight, 1 pick in 3.
		Expect(share(5*time.Second, 90)).To(BeNumerically("~", 1.0/3, 0.05))
		// The window is over: its whole weight.
		Expect(share(10*time.Second, 40)).To(BeNumerically("~", 0.5, 0.05))
	})

	It("gives at least min_weight_percent, and ramps faster with aggression, under least request", func() {
		ss := policy.SlowStartConfig{Window: 10 * time.Second, Aggression: 2, MinWeightPercent: 30}
		share := ramp("LEAST_REQUEST", ss)
		// 0.5 s: (0.05)^(1/2) ≈ 22% is below the 30% floor: 3 picks in 13.
		Expect(share(500*time.Millisecond, 130)).To(BeNumerically("~", 3.0/13, 0.04))
		// 2.5 s: (0.25)^(1/2) = 50% of its weight, 1 pick in 3 (linear would give 20%).
		Expect(share(2500*time.Millisecond, 90)).To(BeNumerically("~", 1.0/3, 0.05))
	})
})
