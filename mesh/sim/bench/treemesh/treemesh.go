// Package treemesh writes the scenario of `make bench-sim`: a mesh of services in tiers, each service of
// a tier calling fan-out services of the next tier in parallel through its instances' sidecars, an
// ingress proxy spreading the client requests over the first tier, service times drawn from a
// lognormal per service, a few faulty instances, and retries and outlier detection on every sidecar.
// The output is an ordinary scenario file: `meshproof validate` and every runner read it.
package treemesh

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"
	"time"
)

// Params shape the mesh and its load.
type Params struct {
	Services  int // services in all, split over Depth tiers as evenly as possible
	Instances int // instances per service (1..256)
	Fanout    int // services of the next tier each non-leaf service calls, in one parallel step
	Depth     int // tiers
	// Rate is the client requests per second; Duration how long the load runs. When Requests > 0 the
	// duration is instead Requests/Rate, so that the load sends exactly Requests client requests.
	Rate     float64
	Duration time.Duration
	Requests int
	// UpstreamRequests > 0 sets Requests to the fewest client requests whose planned upstream attempts
	// (ClientRequests × AttemptsPerRequest) reach it.
	UpstreamRequests int
	Seed             uint64
	// Faults adds the faulty instances (see Faults in the README); false: a healthy mesh, whose upstream
	// attempts are exactly ClientRequests × AttemptsPerRequest.
	Faults bool
	// Lognormal draws each service's time from a lognormal fault rule (one rule per service); false:
	// each service answers after its median, fixed (response.latency), and no fault event is recorded
	// for the service times.
	Lognormal bool
}

// Defaults are the bench's mesh: 1,000 services × 10 instances, fan-out 3, depth 5, 100 client
// requests per second for 10 minutes.
func Defaults() Params {
	return Params{Services: 1000, Instances: 10, Fanout: 3, Depth: 5, Rate: 100, Duration: 10 * time.Minute,
		Seed: 1, Faults: true, Lognormal: true}
}

// The mesh's policies: every sidecar (and the ingress) retries 5xx, resets and refused connections
// with Envoy's default back-off (base 25 ms, max 10×base: source/common/router/retry_state_impl.cc,
// RetryStateImpl's constructor), and every sidecar ejects a host after 5 consecutive 5xx
// (source/common/upstream/outlier_detection_impl.cc, DetectorImpl::onConsecutive5xx).
const (
	SidecarTimeout   = 2 * time.Second
	SidecarRetries   = 2
	SidecarPerTry    = 250 * time.Millisecond
	IngressTimeout   = 5 * time.Second
	IngressRetries   = 1
	BackoffBase      = 25 * time.Millisecond
	BackoffMax       = 250 * time.Millisecond
	Consecutive5xx   = 5
	EjectionInterval = 5 * time.Second
	BaseEjectionTime = 30 * time.Second
	ClientTimeout    = 10 * time.Second
	ResponseSize     = 512
	Sigma            = 0.5 // of every service's lognormal
)

// MaxEjectionPercent is the sidecars' max_ejection_percent: Envoy's default 10, raised so that one host
// of a service with fewer than 10 instances may be ejected (Envoy ejects while
// 100·(ejected+1) ≤ max_ejection_percent·hosts: DetectorImpl::ejectHost in
// source/common/upstream/outlier_detection_impl.cc).
func (p Params) MaxEjectionPercent() int {
	return max(10, (100+p.Instances-1)/p.Instances)
}

// Summary describes the generated mesh.
type Summary struct {
	Name      string `json:"name"`
	Services  int    `json:"services"`
	Instances int    `json:"instances"`
	// Sidecars is the calling instances: each has one outbound sidecar.
	Sidecars int   `json:"sidecars"`
	Tiers    []int `json:"tiers"` // services per tier
	Edges    int   `json:"edges"` // caller → callee pairs
	Fanout   int   `json:"fanout"`
	Depth    int   `json:"depth"`
	// AttemptsPerRequest is the requests the instances receive per client request when nothing fails
	// or is retried: the ingress's one attempt at the first tier, then each non-leaf service's fan-out
	// calls, 1 + f + f² + … + f^(depth-1).
	AttemptsPerRequest int     `json:"attempts_per_request"`
	ClientRequests     int     `json:"client_requests"` // the load's planned requests
	PlannedAttempts    int     `json:"planned_attempts"`
	Rate               float64 `json:"rate"`
	DurationSeconds    float64 `json:"duration_seconds"`
	FaultRules         int     `json:"fault_rules"`
}

// Tiers returns the services per tier: Services over Depth tiers, the first ones one larger when it
// does not divide.
func (p Params) Tiers() []int {
	out := make([]int, p.Depth)
	for t := range out {
		out[t] = p.Services / p.Depth
		if t < p.Services%p.Depth {
			out[t]++
		}
	}
	return out
}

// AttemptsPerRequest is 1 + f + … + f^(depth-1).
func (p Params) AttemptsPerRequest() int {
	n, level := 0, 1
	for range p.Depth {
		n += level
		level *= p.Fanout
	}
	return n
}

// LoadDuration is how long the load runs: Duration, or with Requests the instant after the last of
// Requests arrivals at k/Rate (an arrival at the duration itself is not sent).
func (p Params) LoadDuration() time.Duration {
	if n := p.requests(); n > 0 {
		return time.Duration(math.Round(float64(n) * float64(time.Second) / p.Rate))
	}
	return p.Duration
}

// ClientRequests is the load's planned requests: arrivals at k/Rate before the duration's end.
func (p Params) ClientRequests() int {
	if n := p.requests(); n > 0 {
		return n
	}
	return int(math.Ceil(p.Rate * p.Duration.Seconds()))
}

// requests is the client requests asked for by Requests or UpstreamRequests, 0 when neither is set.
func (p Params) requests() int {
	if p.UpstreamRequests > 0 {
		a := p.AttemptsPerRequest()
		return (p.UpstreamRequests + a - 1) / a
	}
	return p.Requests
}

// Validate says what is out of range, naming the flag.
func (p Params) Validate() error {
	var errs []error
	check := func(bad bool, format string, args ...any) {
		if bad {
			errs = append(errs, fmt.Errorf(format, args...))
		}
	}
	check(p.Depth < 1, "-depth %d: want at least 1", p.Depth)
	check(p.Fanout < 1, "-fanout %d: want at least 1", p.Fanout)
	check(p.Instances < 1 || p.Instances > 256, "-instances %d: want 1..256 (the scenario format's bound)", p.Instances)
	check(p.Services < p.Depth, "-services %d: want at least one per tier (-depth %d)", p.Services, p.Depth)
	check(p.Rate <= 0 || p.Rate > 200000, "-rate %g: want (0, 200000] requests per second", p.Rate)
	check(p.Requests < 0, "-requests %d: want >= 0", p.Requests)
	check(p.UpstreamRequests < 0, "-upstream-requests %d: want >= 0", p.UpstreamRequests)
	check(p.Requests > 0 && p.UpstreamRequests > 0, "-requests and -upstream-requests: want at most one")
	check(p.Requests == 0 && p.UpstreamRequests == 0 && p.Duration <= 0, "-duration %s: want > 0", p.Duration)
	if len(errs) == 0 {
		for t, n := range p.Tiers()[1:] {
			check(n < p.Fanout, "-fanout %d: tier %d has only %d services (-services %d over -depth %d): want fan-out <= every tier's size",
				p.Fanout, t+2, n, p.Services, p.Depth)
		}
		check(p.AttemptsPerRequest()-1 > 10000, "-fanout %d -depth %d: %d calls per client request, above the scenario format's 10,000",
			p.Fanout, p.Depth, p.AttemptsPerRequest()-1)
		check(p.LoadDuration() < time.Millisecond, "-rate %g: %d client requests would last under 1ms", p.Rate, p.ClientRequests())
	}
	return errors.Join(errs...)
}

// Name is the scenario's name.
func (p Params) Name() string {
	return fmt.Sprintf("treemesh-%dx%d-f%d-d%d", p.Services, p.Instances, p.Fanout, p.Depth)
}

// ServiceName is the name of the i-th service of tier t (both from 0).
func (p Params) ServiceName(t, i int) string {
	width := len(fmt.Sprint(p.Tiers()[0] - 1))
	return fmt.Sprintf("t%d-%0*d", t+1, width, i)
}

// Callees lists, for service i of tier t, the indexes of the services of tier t+1 it calls: positions
// f·i+k (mod the next tier's size m) of a permutation of the next tier drawn from the seed: the n
// callers cover f·n ≥ m consecutive positions (tiers shrink by at most one service downwards), so every
// callee has ⌊f·n/m⌋ or ⌈f·n/m⌉ callers, and the edges do not follow the names.
func callees(p Params, perm []int, i int) []int {
	out := make([]int, p.Fanout)
	for k := range out {
		out[k] = perm[(p.Fanout*i+k)%len(perm)]
	}
	return out
}

// Generate writes the scenario and says what it holds.
func Generate(p Params) ([]byte, Summary, error) {
	if err := p.Validate(); err != nil {
		return nil, Summary{}, err
	}
	rng := rand.New(rand.NewPCG(p.Seed, 0x7e5a1b0c))
	tiers := p.Tiers()
	perms := make([][]int, len(tiers))
	for t := 1; t < len(tiers); t++ {
		perms[t] = rng.Perm(tiers[t])
	}
	medians := make([][]time.Duration, len(tiers))
	for t, n := range tiers {
		medians[t] = make([]time.Duration, n)
		for i := range medians[t] {
			// service times 1 ms to 8 ms at the median, in 100 µs steps
			medians[t][i] = time.Duration(10+rng.IntN(71)) * 100 * time.Microsecond
		}
	}

	sum := Summary{Name: p.Name(), Services: p.Services, Instances: p.Services * p.Instances, Tiers: tiers,
		Fanout: p.Fanout, Depth: p.Depth, AttemptsPerRequest: p.AttemptsPerRequest(), ClientRequests: p.ClientRequests(),
		Rate: p.Rate, DurationSeconds: p.LoadDuration().Seconds()}
	sum.PlannedAttempts = sum.ClientRequests * sum.AttemptsPerRequest

	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("name: %s\n", p.Name())
	w("description: >\n")
	w("  Generated by mesh/sim/bench/meshgen (seed %d): %d services in %d tiers %v, %d instances each,\n", p.Seed, p.Services, p.Depth, tiers, p.Instances)
	w("  each non-leaf service calling %d services of the next tier in parallel through its instances' sidecars;\n", p.Fanout)
	w("  %d requests reach the instances per client request when nothing fails or is retried.\n", sum.AttemptsPerRequest)
	w("seed: %d\n", p.Seed)
	w("services:\n")
	for t, n := range tiers {
		for i := range n {
			w("  %s:\n    instances: %d\n", p.ServiceName(t, i), p.Instances)
			if p.Lognormal {
				w("    response: {size: %d}\n", ResponseSize)
			} else {
				w("    response: {size: %d, latency: %s}\n", ResponseSize, medians[t][i])
			}
			if t+1 < len(tiers) {
				var names []string
				for _, c := range callees(p, perms[t+1], i) {
					names = append(names, p.ServiceName(t+1, c))
				}
				w("    calls:\n      - parallel: [%s]\n", strings.Join(names, ", "))
				sum.Edges += len(names)
				sum.Sidecars += p.Instances
			}
		}
	}
	retry := func(n int, perTry time.Duration) string {
		s := fmt.Sprintf("{retry_on: \"5xx,reset,connect-failure\", num_retries: %d", n)
		if perTry > 0 {
			s += ", per_try_timeout: " + envoyDuration(perTry)
		}
		return s + fmt.Sprintf(", retry_back_off: {base_interval: %s, max_interval: %s}}", envoyDuration(BackoffBase), envoyDuration(BackoffMax))
	}
	w("proxies:\n  ingress:\n    routes:\n      - match: {prefix: /}\n        route:\n")
	w("          timeout: %s\n          retry_policy: %s\n", envoyDuration(IngressTimeout), retry(IngressRetries, 0))
	w("          weighted_clusters:\n            clusters:\n")
	for i := range tiers[0] {
		w("              - {name: %s, weight: 1}\n", p.ServiceName(0, i))
	}
	w("    cluster: {connect_timeout: 0.25s}\n")
	if p.Depth > 1 {
		w("sidecars:\n")
		w("  route: {timeout: %s, retry_policy: %s}\n", envoyDuration(SidecarTimeout), retry(SidecarRetries, SidecarPerTry))
		w("  cluster:\n    connect_timeout: 0.25s\n")
		w("    outlier_detection: {consecutive_5xx: %d, interval: %s, base_ejection_time: %s, max_ejection_percent: %d}\n",
			Consecutive5xx, envoyDuration(EjectionInterval), envoyDuration(BaseEjectionTime), p.MaxEjectionPercent())
	}
	w("load: {target: ingress, rate: %g/s, duration: %s, timeout: %s}\n", p.Rate, p.LoadDuration(), ClientTimeout)

	var rules []string
	if p.Lognormal {
		for t, n := range tiers {
			for i := range n {
				rules = append(rules, fmt.Sprintf("{service: %s, latency: {lognormal: {median: %s, sigma: %g}}}", p.ServiceName(t, i), medians[t][i], Sigma))
			}
		}
	}
	if p.Faults {
		rules = append(rules, faultRules(p, rng)...)
	}
	sum.FaultRules = len(rules)
	if len(rules) > 0 {
		w("faults:\n")
		for _, r := range rules {
			w("  - %s\n", r)
		}
	}
	return []byte(b.String()), sum, nil
}

// faultRules are the faulty instances: one service in a hundred (at least one) has one instance
// answering 3% of its requests with 503, for the whole run; one leaf instance is 150 ms slower, for
// the whole run (below the sidecars' per-try timeout: slow, not failing); and one leaf instance answers
// every request with 503 from 20% to 30% of the load, long enough for its callers' sidecars to eject
// it.
func faultRules(p Params, rng *rand.Rand) []string {
	tiers := p.Tiers()
	leaf := len(tiers) - 1
	var out []string
	n := max(1, p.Services/100)
	for k := range n {
		t := k % len(tiers)
		out = append(out, fmt.Sprintf("{service: %s, instances: [%d], abort: {status: 503, percent: 3}}",
			p.ServiceName(t, rng.IntN(tiers[t])), rng.IntN(p.Instances)))
	}
	out = append(out, fmt.Sprintf("{service: %s, instances: [%d], latency: {fixed: 150ms}}",
		p.ServiceName(leaf, rng.IntN(tiers[leaf])), rng.IntN(p.Instances)))
	d := p.LoadDuration()
	at, span := (d / 5).Round(time.Millisecond), (d / 10).Round(time.Millisecond)
	if at > 0 && span > 0 {
		out = append(out, fmt.Sprintf("{service: %s, instances: [%d], at: %s, for: %s, abort: {status: 503}}",
			p.ServiceName(leaf, rng.IntN(tiers[leaf])), rng.IntN(p.Instances), at, span))
	}
	return out
}

// envoyDuration writes d in Envoy's form, seconds with a fraction: "0.025s".
func envoyDuration(d time.Duration) string {
	return fmt.Sprintf("%gs", d.Seconds())
}
