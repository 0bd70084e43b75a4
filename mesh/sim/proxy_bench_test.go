package sim_test

import (
	"fmt"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/proxy/config"
)

// instant is an instance that answers every request after a fixed delay, allocating nothing per
// request once warm (its pending answers are reused).
type instant struct {
	en     *sim.Engine
	name   string
	delay  time.Duration
	status int
	free   []*instantCall
}

type instantCall struct {
	u    *instant
	done func(sim.Result)
	fn   func()
	t    sim.Timer
}

func (c *instantCall) fire() {
	done := c.done
	c.done = nil
	c.u.free = append(c.u.free, c)
	done(sim.Result{Status: c.u.status})
}

func (c *instantCall) cancel() {
	if c.u.en.Stop(c.t) {
		c.done = nil
		c.u.free = append(c.u.free, c)
	}
}

func (u *instant) Name() string   { return u.name }
func (u *instant) Addr() string   { return u.name }
func (u *instant) Refusing() bool { return false }
func (u *instant) Serve(_ *sim.Request, done func(sim.Result)) func() {
	var c *instantCall
	if n := len(u.free); n > 0 {
		c, u.free = u.free[n-1], u.free[:n-1]
	} else {
		c = &instantCall{u: u}
		c.fn = c.fire
	}
	c.done = done
	c.t = u.en.After(u.delay, c.fn)
	return c.cancel
}

// BenchmarkProxyAttempts runs sidecars of three instances each (round robin, a retry policy, outlier
// detection) under an open-loop load, 1 % of attempts answered 503 and retried; it reports simulated
// upstream attempts per wall second.
func BenchmarkProxyAttempts(b *testing.B) {
	for _, sidecars := range []int{100, 10000} {
		b.Run(fmt.Sprintf("sidecars=%d", sidecars), func(b *testing.B) { benchAttempts(b, sidecars) })
	}
}

func benchAttempts(b *testing.B, sidecars int) {
	en := &sim.Engine{}
	proxies := make([]*sim.Proxy, sidecars)
	var ups []*instant
	cfg := benchBootstrap(b) // one configuration: each sidecar resolves its endpoints to its own instances
	for i := range sidecars {
		byAddr := map[string]sim.Upstream{}
		for j, ep := range cfg.Clusters[0].Endpoints {
			u := &instant{en: en, name: strconv.Itoa(i) + "/" + ep.Address, delay: time.Duration(1+j) * time.Millisecond, status: 200}
			ups = append(ups, u)
			byAddr[ep.Address] = u
		}
		p, err := sim.NewProxy(en, sim.ProxyConfig{Name: "svc/" + strconv.Itoa(i), Config: cfg, Seed: 1, Hop: 100 * time.Microsecond,
			Resolve: func(a string) (sim.Upstream, bool) { u, ok := byAddr[a]; return u, ok }})
		if err != nil {
			b.Fatal(err)
		}
		p.Start()
		proxies[i] = p
	}
	ups[0].status = 503 // one instance in 3·sidecars fails
	ids := make([]string, 4096)
	for i := range ids {
		ids[i] = "mp-" + strconv.Itoa(i)
	}
	req := make([]sim.Request, len(ids))
	for i := range req {
		req[i] = sim.Request{ID: ids[i], Method: "GET", Path: "/", Authority: "svc", Header: map[string]string{"x-request-id": ids[i]}}
	}
	answered := 0
	done := func(sim.Result) { answered++ }
	// Requests arrive every 10 µs round the sidecars.
	k := 0
	var next func()
	next = func() {
		if k >= b.N {
			return
		}
		proxies[k%sidecars].Handle(&req[k%len(req)], done)
		k++
		en.After(10*time.Microsecond, next)
	}
	runtime.GC() // the set-up's garbage is not the run's
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	en.At(en.Now(), next)
	en.Run(en.Now() + time.Duration(b.N)*10*time.Microsecond + 2*time.Second) // the sweeps recur: a bound
	wall := time.Since(start)
	b.StopTimer()
	attempts := uint64(0)
	for _, p := range proxies {
		st := p.Stats()
		attempts += st["cluster.backend.upstream_rq_total"]
	}
	if answered != b.N {
		b.Fatalf("answered %d of %d", answered, b.N)
	}
	b.ReportMetric(float64(attempts)/wall.Seconds(), "attempts/s")
	for _, p := range proxies {
		p.Stop()
	}
}

// benchBootstrap is the sidecars' configuration: three endpoints, a retry policy, outlier detection that
// records every attempt without ejecting.
func benchBootstrap(b *testing.B) *config.Bootstrap {
	y := bootstrapYAML(3,
		[]string{"timeout: 1s", "retry_policy: {retry_on: 5xx, num_retries: 2, per_try_timeout: 0.5s}"},
		[]string{"outlier_detection: {consecutive_5xx: 1000000, interval: 10s}"})
	cfg, _, err := config.ParseBootstrap([]byte(y), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	return cfg
}
