package record

import (
	"math"
	"slices"
	"time"
)

// Every percentile the reports show — Summary.Latency (terminal, report.json, summary.md, report.html,
// the p50…p999 checks), the HTML charts' per-bucket p50/p99, LatencyHist (meshproof load --json, the live
// progress line) — is the nearest-rank percentile: the value of rank ⌈q·n⌉ (1-based) among the n values
// sorted in ascending order, so that at least a share q of the values are ≤ it. nearestRank is that rank,
// and the only place it is computed.

// nearestRank returns the 1-based rank ⌈q·n⌉ of the q-quantile (0 ≤ q ≤ 1) among n ≥ 1 values, clamped to
// 1..n (q = 0 is the minimum, q = 1 the maximum). q·n within a relative 1e-12 of an integer counts as that
// integer: 0.999 × 1000 is 999.0000000000001 in floating point, and its rank is 999, not 1000.
func nearestRank(q float64, n int64) int64 {
	x := q * float64(n)
	r := math.Ceil(x)
	if near := math.Round(x); math.Abs(x-near) <= 1e-12*math.Max(1, math.Abs(x)) {
		r = near
	}
	if !(r >= 1) { // also NaN
		return 1
	}
	if r >= float64(n) {
		return n
	}
	return int64(r)
}

// ExactPercentile returns the nearest-rank q-quantile (0 ≤ q ≤ 1, e.g. 0.999 for p99.9) of the values: the
// value of rank ⌈q·n⌉ in ascending order, the smallest value such that at least q of all values are ≤ it.
// It returns 0 for no values and does not modify its argument.
func ExactPercentile(values []time.Duration, q float64) time.Duration {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	return sorted[nearestRank(q, int64(len(sorted)))-1]
}

// SortedPercentiles returns p50, p90, p99, p99.9 and the max of values sorted in ascending order, exact
// (nearest rank); the zero Percentiles for no values.
func SortedPercentiles(sorted []time.Duration) Percentiles {
	n := int64(len(sorted))
	if n == 0 {
		return Percentiles{}
	}
	at := func(q float64) time.Duration { return sorted[nearestRank(q, n)-1] }
	return Percentiles{P50: at(0.5), P90: at(0.9), P99: at(0.99), P999: at(0.999), Max: sorted[n-1]}
}

// Percentiles of a latency distribution.
type Percentiles struct{ P50, P90, P99, P999, Max time.Duration }
