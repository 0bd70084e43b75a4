package policy

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strconv"
	"sync"
)

// PickContext is what a Picker may use for one pick.
type PickContext struct {
	// Eligible reports whether a host may be picked: not ejected and not failing active health checks,
	// or every host in panic mode (see PanicFilter). nil means every host.
	Eligible func(host int) bool
	// Active returns a host's active requests, for least request. nil means none.
	Active func(host int) int64
	// Hash is the request's hash for ring hash and Maglev (HashKey gives Envoy's xxHash64).
	Hash uint64
	// Attempt is the host-selection attempt, 0 for the first; PickWithRetryPredicate sets it. Hash
	// pickers use it to move off a host the retry predicate rejected, as Envoy's do.
	Attempt int
	// Rand is this pick's randomness, for random and least request. It is used only during the call,
	// so a per-goroutine source is enough.
	Rand Rand
	// SlowStart, when set, is the share of its weight each host gets while hosts are in slow start
	// (SlowStartConfig.Factor; 1 for a host out of it), for round robin and least request; nil when no
	// host is in slow start.
	SlowStart func(host int) float64
}

func (c *PickContext) eligible(h int) bool { return c.Eligible == nil || c.Eligible(h) }

func (c *PickContext) active(h int) int64 {
	if c.Active == nil {
		return 0
	}
	return c.Active(h)
}

// Picker chooses a host index for a request, or -1 when no host is eligible. Implementations are safe
// for concurrent use.
type Picker interface {
	Pick(ctx PickContext) int
}

// Interface guards.
var (
	_ Picker = (*RoundRobinPicker)(nil)
	_ Picker = (*LeastRequest)(nil)
	_ Picker = RandomPicker{}
	_ Picker = (*RingHash)(nil)
	_ Picker = (*Maglev)(nil)
)

// DefaultHealthyPanicThreshold is Envoy's default healthy_panic_threshold, in percent.
const DefaultHealthyPanicThreshold = 50.0

// PanicMode reports whether a priority level is in panic: its healthy hosts are fewer than
// thresholdPercent of its hosts (Envoy's isHostSetInPanic). In panic the load balancer ignores health
// and uses every host (lb_healthy_panic). A threshold of 0 disables panic: with no healthy host the
// request fails with 503 "no healthy upstream" (UH).
func PanicMode(healthy, total int, thresholdPercent float64) bool {
	if thresholdPercent <= 0 {
		return false
	}
	if total <= 0 {
		return true
	}
	return 100*float64(healthy)/float64(total) < min(thresholdPercent, 100)
}

// PanicFilter counts the hosts healthy reports true for among total and returns the Eligible predicate
// for the pick: healthy itself, or nil (every host) with panic true when PanicMode says so. It does not
// allocate.
func PanicFilter(total int, healthy func(host int) bool, thresholdPercent float64) (eligible func(host int) bool, panic bool) {
	n := 0
	for h := range total {
		if healthy(h) {
			n++
		}
	}
	if PanicMode(n, total, thresholdPercent) {
		return nil, true
	}
	return healthy, false
}

// eligibleHosts appends the eligible host indices below n to buf.
func eligibleHosts(ctx *PickContext, n int, buf []int) []int {
	for h := range n {
		if ctx.eligible(h) {
			buf = append(buf, h)
		}
	}
	return buf
}

// RoundRobinPicker adapts RoundRobin to Picker. Unlike RoundRobin.Pick it returns -1, not an excluded
// host, when no host is eligible.
type RoundRobinPicker struct{ rr *RoundRobin }

// NewRoundRobinPicker wraps rr.
func NewRoundRobinPicker(rr *RoundRobin) *RoundRobinPicker { return &RoundRobinPicker{rr: rr} }

// Pick returns the next eligible host in weighted round-robin order.
func (p *RoundRobinPicker) Pick(ctx PickContext) int {
	if ctx.Eligible == nil {
		return p.rr.PickScaled(nil, ctx.SlowStart)
	}
	exclude := func(h int) bool { return !ctx.Eligible(h) }
	if h := p.rr.PickScaled(exclude, ctx.SlowStart); h >= 0 && ctx.Eligible(h) {
		return h
	}
	return -1
}

// RandomPicker picks a uniformly random eligible host (Envoy's RANDOM; weights are ignored).
type RandomPicker struct{ Hosts int }

// Pick returns a random eligible host.
func (p RandomPicker) Pick(ctx PickContext) int {
	var buf [64]int
	hosts := eligibleHosts(&ctx, p.Hosts, buf[:0])
	if len(hosts) == 0 {
		return -1
	}
	return hosts[ctx.Rand.Uint64()%uint64(len(hosts))]
}

// LeastRequestConfig is envoy.extensions.load_balancing_policies.least_request.v3.LeastRequest.
type LeastRequestConfig struct {
	// ChoiceCount hosts are sampled (with replacement) when weights are equal (default 2, at least 2).
	ChoiceCount uint32
	// ActiveRequestBias: with unequal weights a host's weight is weight / (active+1)^bias (default 1.0;
	// 0 ignores load, like weighted round robin).
	ActiveRequestBias float64
	// FullScan: with equal weights scan every host instead of sampling (selection_method FULL_SCAN);
	// ties are broken at random. Envoy also scans fully when ChoiceCount ≥ the eligible hosts.
	FullScan bool
}

// DefaultLeastRequestConfig returns Envoy's defaults: two choices, bias 1.0.
func DefaultLeastRequestConfig() LeastRequestConfig {
	return LeastRequestConfig{ChoiceCount: 2, ActiveRequestBias: 1}
}

// LeastRequest is Envoy's LEAST_REQUEST. With equal weights it samples ChoiceCount eligible hosts at
// random and takes the one with the fewest active requests (power of two choices). With unequal weights
// each eligible host's weight becomes weight / (active+1)^bias at every pick and hosts are chosen in
// smooth weighted round-robin order over those weights (Envoy uses an EDF schedule; both give each host
// its share of picks in proportion to that weight).
type LeastRequest struct {
	cfg     LeastRequestConfig
	weights []float64
	equal   bool

	mu      sync.Mutex // weighted mode
	current []float64
}

// NewLeastRequest returns a least-request picker over hosts with the given weights (0 counts as 1).
func NewLeastRequest(weights []uint32, cfg LeastRequestConfig) (*LeastRequest, error) {
	if cfg.ChoiceCount < 2 {
		return nil, fmt.Errorf("least_request.choice_count: must be >= 2, got %d", cfg.ChoiceCount)
	}
	if cfg.ActiveRequestBias < 0 || math.IsNaN(cfg.ActiveRequestBias) || math.IsInf(cfg.ActiveRequestBias, 0) {
		return nil, fmt.Errorf("least_request.active_request_bias: must be a finite number >= 0, got %v", cfg.ActiveRequestBias)
	}
	lr := &LeastRequest{cfg: cfg, weights: make([]float64, len(weights)), current: make([]float64, len(weights)), equal: true}
	for i, w := range weights {
		lr.weights[i] = float64(max(w, 1))
		if lr.weights[i] != lr.weights[0] {
			lr.equal = false
		}
	}
	return lr, nil
}

// Pick returns the chosen host, or -1 when none is eligible.
func (lr *LeastRequest) Pick(ctx PickContext) int {
	// With hosts in slow start, weights are in play even when equal: Envoy builds its EDF schedule then
	// (EdfLoadBalancerBase::refresh, load_balancer_impl.cc), the slow start factor applied to each
	// host's weight / (active+1)^bias (LeastRequestLoadBalancer::hostWeight).
	if !lr.equal || ctx.SlowStart != nil {
		return lr.pickWeighted(&ctx)
	}
	var buf [64]int
	hosts := eligibleHosts(&ctx, len(lr.weights), buf[:0])
	switch {
	case len(hosts) == 0:
		return -1
	case lr.cfg.FullScan || len(hosts) <= int(lr.cfg.ChoiceCount):
		best, ties := -1, 0
		for _, h := range hosts {
			switch {
			case best < 0 || ctx.active(h) < ctx.active(best):
				best, ties = h, 1
			case ctx.active(h) == ctx.active(best):
				ties++
				if ctx.Rand.Uint64()%uint64(ties) == 0 { // reservoir sampling: each tie equally likely
					best = h
				}
			}
		}
		return best
	}
	best := -1
	for range lr.cfg.ChoiceCount {
		h := hosts[ctx.Rand.Uint64()%uint64(len(hosts))]
		if best < 0 || ctx.active(h) < ctx.active(best) {
			best = h
		}
	}
	return best
}

// EffectiveWeight is least request's dynamic weight: weight / (active+1)^bias.
func EffectiveWeight(weight float64, active int64, bias float64) float64 {
	switch {
	case bias == 0:
		return weight
	case bias == 1:
		return weight / float64(max(active, 0)+1)
	}
	return weight / math.Pow(float64(max(active, 0)+1), bias)
}

func (lr *LeastRequest) pickWeighted(ctx *PickContext) int {
	lr.mu.Lock()
	defer lr.mu.Unlock()
	best := -1
	var total float64
	for h, w := range lr.weights {
		if !ctx.eligible(h) {
			continue
		}
		ew := EffectiveWeight(w, ctx.active(h), lr.cfg.ActiveRequestBias)
		if ctx.SlowStart != nil {
			ew *= ctx.SlowStart(h)
		}
		lr.current[h] += ew
		total += ew
		if best < 0 || lr.current[h] > lr.current[best] {
			best = h
		}
	}
	if best >= 0 {
		lr.current[best] -= total
	}
	return best
}

// hostKeys returns keys, or "host_<i>" for each of n hosts when keys is nil.
func hostKeys(keys []string, n int) ([]string, error) {
	if keys == nil {
		keys = make([]string, n)
		for i := range keys {
			keys[i] = "host_" + strconv.Itoa(i)
		}
		return keys, nil
	}
	if len(keys) != n {
		return nil, fmt.Errorf("%d host keys for %d weights", len(keys), n)
	}
	return keys, nil
}

// normalizedWeights returns each weight over their sum (0 counts as 1), and the smallest and largest.
func normalizedWeights(weights []uint32) (norm []float64, lo, hi float64) {
	var sum float64
	for _, w := range weights {
		sum += float64(max(w, 1))
	}
	norm = make([]float64, len(weights))
	lo, hi = 1, 0
	for i, w := range weights {
		norm[i] = float64(max(w, 1)) / sum
		lo, hi = min(lo, norm[i]), max(hi, norm[i])
	}
	return norm, lo, hi
}

// RingHashConfig is envoy.extensions.load_balancing_policies.ring_hash.v3.RingHash (xxHash only).
// Zero fields take the defaults.
type RingHashConfig struct {
	MinimumRingSize uint64 // default 1024
	MaximumRingSize uint64 // default 8M (8388608), also the upper bound of both
}

// DefaultRingHashConfig returns Envoy's defaults.
func DefaultRingHashConfig() RingHashConfig {
	return RingHashConfig{MinimumRingSize: 1024, MaximumRingSize: 8 << 20}
}

type ringEntry struct {
	hash uint64
	host int
}

// RingHash is Envoy's RING_HASH (ketama): each host gets points xxHash64("<key>_<i>") on a 64-bit ring,
// as many as its share of the ring; a request goes to the first point at or after its hash. With the
// hosts' addresses ("ip:port") as keys the ring is the one Envoy builds. Immutable after construction.
type RingHash struct {
	ring  []ringEntry
	hosts int
}

// NewRingHash builds the ring for hosts with the given keys (nil: "host_<i>") and weights.
func NewRingHash(keys []string, weights []uint32, cfg RingHashConfig) (*RingHash, error) {
	const maxRing = 8 << 20
	if cfg.MinimumRingSize == 0 {
		cfg.MinimumRingSize = 1024
	}
	if cfg.MaximumRingSize == 0 {
		cfg.MaximumRingSize = maxRing
	}
	if cfg.MinimumRingSize > maxRing || cfg.MaximumRingSize > maxRing {
		return nil, fmt.Errorf("ring_hash: minimum_ring_size %d / maximum_ring_size %d must be at most %d",
			cfg.MinimumRingSize, cfg.MaximumRingSize, maxRing)
	}
	if cfg.MinimumRingSize > cfg.MaximumRingSize {
		return nil, fmt.Errorf("ring_hash: minimum_ring_size (%d) > maximum_ring_size (%d)", cfg.MinimumRingSize, cfg.MaximumRingSize)
	}
	keys, err := hostKeys(keys, len(weights))
	if err != nil {
		return nil, fmt.Errorf("ring_hash: %w", err)
	}
	rh := &RingHash{hosts: len(weights)}
	if len(weights) == 0 {
		return rh, nil
	}
	norm, lo, _ := normalizedWeights(weights)
	// Scale so the lightest host gets a whole number of points, capped by the maximum ring size.
	scale := min(math.Ceil(lo*float64(cfg.MinimumRingSize))/lo, float64(cfg.MaximumRingSize))
	rh.ring = make([]ringEntry, 0, int(math.Ceil(scale)))
	var current, target float64
	for h, w := range norm {
		target += scale * w
		for i := 0; current < target; i++ {
			rh.ring = append(rh.ring, ringEntry{hash: HashKey(keys[h] + "_" + strconv.Itoa(i)), host: h})
			current++
		}
	}
	slices.SortStableFunc(rh.ring, func(a, b ringEntry) int {
		switch {
		case a.hash < b.hash:
			return -1
		case a.hash > b.hash:
			return 1
		}
		return 0
	})
	return rh, nil
}

// Size returns the number of points on the ring.
func (rh *RingHash) Size() int { return len(rh.ring) }

// Pick returns the host owning the first eligible point at or after ctx.Hash (moved ctx.Attempt points
// on, as Envoy does for a re-pick), or -1.
func (rh *RingHash) Pick(ctx PickContext) int {
	n := len(rh.ring)
	if n == 0 {
		return -1
	}
	i, _ := slices.BinarySearchFunc(rh.ring, ctx.Hash, func(e ringEntry, h uint64) int {
		switch {
		case e.hash < h:
			return -1
		case e.hash > h:
			return 1
		}
		return 0
	})
	i = (i + max(ctx.Attempt, 0)) % n
	for range n {
		if h := rh.ring[i].host; ctx.eligible(h) {
			return h
		}
		i = (i + 1) % n
	}
	return -1
}

// DefaultMaglevTableSize is Envoy's default Maglev table size (a prime).
const DefaultMaglevTableSize = 65537

// Maglev is Envoy's MAGLEV: a lookup table of a prime size filled from each host's permutation
// (offset xxHash64(key) mod size, skip xxHash64(key, seed 1) mod (size−1) + 1), hosts taking turns in
// proportion to their weights. A request goes to table[hash mod size]. Immutable after construction.
type Maglev struct {
	table []int32
}

// NewMaglev builds the table for hosts with the given keys (nil: "host_<i>") and weights. tableSize must
// be prime (0 means 65537).
func NewMaglev(keys []string, weights []uint32, tableSize uint64) (*Maglev, error) {
	if tableSize == 0 {
		tableSize = DefaultMaglevTableSize
	}
	if tableSize < 2 || tableSize > 5000011 || !isPrime(tableSize) {
		return nil, fmt.Errorf("maglev.table_size: %d must be a prime no larger than 5000011", tableSize)
	}
	keys, err := hostKeys(keys, len(weights))
	if err != nil {
		return nil, fmt.Errorf("maglev: %w", err)
	}
	m := &Maglev{}
	if len(weights) == 0 {
		return m, nil
	}
	if len(weights) > math.MaxInt32 {
		return nil, errors.New("maglev: too many hosts")
	}
	norm, _, hi := normalizedWeights(weights)
	type entry struct {
		offset, skip, next uint64
		weight, target     float64
	}
	entries := make([]entry, len(weights))
	for h := range entries {
		entries[h] = entry{
			offset: xxHash64(keys[h], 0) % tableSize,
			skip:   xxHash64(keys[h], 1)%(tableSize-1) + 1,
			weight: norm[h],
		}
	}
	m.table = make([]int32, tableSize)
	for i := range m.table {
		m.table[i] = -1
	}
	filled := uint64(0)
	for iteration := 1.0; filled < tableSize; iteration++ {
		for h := range entries {
			if filled == tableSize {
				break
			}
			e := &entries[h]
			// A host of the largest weight takes a slot every iteration; one of a third of it every third.
			if iteration*e.weight < e.target {
				continue
			}
			e.target += hi
			c := (e.offset + e.skip*e.next) % tableSize
			for m.table[c] >= 0 {
				e.next++
				c = (e.offset + e.skip*e.next) % tableSize
			}
			m.table[c] = int32(h)
			e.next++
			filled++
		}
	}
	return m, nil
}

func isPrime(n uint64) bool {
	if n < 2 {
		return false
	}
	for d := uint64(2); d*d <= n; d++ {
		if n%d == 0 {
			return false
		}
	}
	return true
}

// Pick returns table[hash mod size] (the hash mutated for re-picks, as Envoy does), walking on through
// the table past ineligible hosts; -1 when none is eligible.
func (m *Maglev) Pick(ctx PickContext) int {
	n := uint64(len(m.table))
	if n == 0 {
		return -1
	}
	h := ctx.Hash
	if ctx.Attempt > 0 {
		h ^= ^uint64(0) - uint64(ctx.Attempt) + 1
	}
	i := h % n
	for range n {
		if host := int(m.table[i]); ctx.eligible(host) {
			return host
		}
		i = (i + 1) % n
	}
	return -1
}
