package policy

import "sync"

// RoundRobin picks hosts in weighted round-robin order (smooth weighted round robin: a host of weight w
// gets w picks out of every sum-of-weights, spread evenly). Safe for concurrent use.
type RoundRobin struct {
	mu      sync.Mutex
	weights []float64
	current []float64
}

// NewRoundRobin returns a picker over hosts with the given weights (a zero weight counts as 1).
func NewRoundRobin(weights []uint32) *RoundRobin {
	rr := &RoundRobin{weights: make([]float64, len(weights)), current: make([]float64, len(weights))}
	for i, w := range weights {
		rr.weights[i] = float64(max(w, 1))
	}
	return rr
}

// Pick returns the index of the next host, or -1 when there are none. exclude, when not nil, skips the
// hosts it reports true for, unless every host is excluded.
func (rr *RoundRobin) Pick(exclude func(int) bool) int { return rr.PickScaled(exclude, nil) }

// PickScaled is Pick with each host's weight multiplied by scale(host) (nil: 1), as slow start scales
// the weights of the hosts in its window (see SlowStartConfig.Factor).
func (rr *RoundRobin) PickScaled(exclude func(int) bool, scale func(int) float64) int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if i := rr.pick(exclude, scale); i >= 0 || exclude == nil {
		return i
	}
	return rr.pick(nil, scale)
}

func (rr *RoundRobin) pick(exclude func(int) bool, scale func(int) float64) int {
	best := -1
	var total float64
	for i, w := range rr.weights {
		if exclude != nil && exclude(i) {
			continue
		}
		if scale != nil {
			w *= scale(i)
		}
		rr.current[i] += w
		total += w
		if best < 0 || rr.current[i] > rr.current[best] {
			best = i
		}
	}
	if best >= 0 {
		rr.current[best] -= total
	}
	return best
}
