package policy

import "sync"

// RoundRobin picks hosts in weighted round-robin order (smooth weighted round robin: a host of weight w
// gets w picks out of every sum-of-weights, spread evenly). Safe for concurrent use.
type RoundRobin struct {
	mu      sync.Mutex
	weights []int64
	current []int64
	total   int64
}

// NewRoundRobin returns a picker over hosts with the given weights (a zero weight counts as 1).
func NewRoundRobin(weights []uint32) *RoundRobin {
	rr := &RoundRobin{weights: make([]int64, len(weights)), current: make([]int64, len(weights))}
	for i, w := range weights {
		rr.weights[i] = int64(max(w, 1))
		rr.total += rr.weights[i]
	}
	return rr
}

// Pick returns the index of the next host, or -1 when there are none. exclude, when not nil, skips the
// hosts it reports true for, unless every host is excluded.
func (rr *RoundRobin) Pick(exclude func(int) bool) int {
	rr.mu.Lock()
	defer rr.mu.Unlock()
	if i := rr.pick(exclude); i >= 0 || exclude == nil {
		return i
	}
	return rr.pick(nil)
}

func (rr *RoundRobin) pick(exclude func(int) bool) int {
	best := -1
	var total int64
	for i, w := range rr.weights {
		if exclude != nil && exclude(i) {
			continue
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
