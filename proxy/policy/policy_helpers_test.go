package policy_test

import (
	"time"

	"github.com/meshproof/meshproof/proxy/policy"
)

// seqRand returns its values in order, cycling: tests choose the draws.
type seqRand struct {
	vals []uint64
	i    int
}

func (r *seqRand) Uint64() uint64 {
	v := r.vals[r.i%len(r.vals)]
	r.i++
	return v
}

var epoch = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// at is epoch + d: specs drive time by hand.
func at(d time.Duration) time.Time { return epoch.Add(d) }

// kindReasons renders events as "kind/reason" for compact assertions.
func kindReasons(evs []policy.Event) []string {
	out := make([]string, 0, len(evs))
	for _, e := range evs {
		out = append(out, e.Kind+"/"+e.Reason)
	}
	return out
}
