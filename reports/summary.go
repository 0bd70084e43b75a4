package reports

import (
	"math"
	"slices"
	"strings"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// The generator held its rate when it achieved at least HeldRateFraction of the target rate and no send
// was later than MaxHeldSendLag.
const (
	HeldRateFraction = 0.95
	MaxHeldSendLag   = time.Second
)

// Summary is what a report shows; Summarize computes it from a Record.
type Summary struct {
	// Requests counts the samples; Successes those with a complete 2xx/3xx response; Errors the rest
	// (4xx, 5xx and transport errors, including requests cancelled when the run was stopped).
	Requests, Successes, Errors uint64

	TargetRate float64       // planned requests/s (Record.TargetRate)
	Duration   time.Duration // planned load duration (Record.Duration)
	// AchievedRate is the rate at which requests were actually sent, in requests/s:
	// Requests / max(Duration, last actual send offset + 1/TargetRate). A generator that keeps up sends
	// its last request at Duration − 1/TargetRate, so it achieves exactly TargetRate; one that falls
	// behind stretches the send window and achieves less.
	AchievedRate float64
	// RateHeld is false when the generator fell behind: AchievedRate < HeldRateFraction × TargetRate or
	// MaxSendLag > MaxHeldSendLag. Always true without a TargetRate.
	RateHeld   bool
	MaxSendLag time.Duration // worst lateness of an actual send against its intended time

	SuccessRate float64 // 100 × Successes / Requests, in percent; 0 without requests
	ErrorRate   float64 // 100 × Errors / Requests, in percent; 0 without requests
	StatusCodes map[int]uint64
	ErrorKinds  map[string]uint64

	// Latency is measured from the intended send time (coordinated-omission corrected), Uncorrected from
	// the actual send time. Both leave out requests cancelled because the run was stopped.
	Latency, Uncorrected Percentiles

	// Retries sums cluster.<c>.upstream_rq_retry and Ejections cluster.<c>.outlier_detection.ejections_enforced_total
	// over the proxy's clusters. UpstreamRequests is every request the upstream instances received (the sum
	// of UpstreamRecord.Requests, which already includes the ones answered with a reset); without upstream
	// records it falls back to the proxy's sum of cluster.<c>.upstream_rq_total.
	Retries, Ejections, UpstreamRequests uint64
	// RetryAmplification is upstream attempts per client request: UpstreamRequests / Requests (0 without
	// requests). 1 means no retries; 1.5 means half a retry per request on average.
	RetryAmplification float64
}

// Percentiles of a latency distribution.
type Percentiles struct{ P50, P90, P99, P999, Max time.Duration }

// Summarize computes the summary of a run. Percentiles come from an HdrHistogram tracking 1µs..1h with 3
// significant digits (values are rounded to the microsecond, those above an hour count as an hour); Max
// is exact.
func Summarize(rec *Record) Summary {
	s := Summary{
		TargetRate:  rec.TargetRate,
		Duration:    rec.Duration,
		Requests:    uint64(len(rec.Samples)),
		StatusCodes: map[int]uint64{},
		ErrorKinds:  map[string]uint64{},
	}
	corrected, uncorrected := newLatencyHist(), newLatencyHist()
	var lastSent time.Duration
	for _, x := range rec.Samples {
		if x.OK() {
			s.Successes++
		}
		if x.Status != 0 {
			s.StatusCodes[x.Status]++
		}
		if x.Error != "" {
			s.ErrorKinds[x.Error]++
		}
		s.MaxSendLag = max(s.MaxSendLag, x.Sent-x.Intended)
		lastSent = max(lastSent, x.Sent)
		if x.Error != ErrCanceled {
			corrected.record(x.Latency)
			uncorrected.record(x.Uncorrected())
		}
	}
	s.Errors = s.Requests - s.Successes
	s.Latency, s.Uncorrected = corrected.percentiles(), uncorrected.percentiles()

	window := lastSent
	if rec.TargetRate > 0 {
		window += time.Duration(float64(time.Second) / rec.TargetRate)
	}
	if window = max(window, rec.Duration); window > 0 && s.Requests > 0 {
		s.AchievedRate = float64(s.Requests) / window.Seconds()
	}
	s.RateHeld = rec.TargetRate <= 0 || s.AchievedRate >= HeldRateFraction*rec.TargetRate && s.MaxSendLag <= MaxHeldSendLag
	if s.Requests > 0 {
		s.SuccessRate = 100 * float64(s.Successes) / float64(s.Requests)
		s.ErrorRate = 100 * float64(s.Errors) / float64(s.Requests)
	}

	s.Retries = sumClusterStat(rec.ProxyStats, "upstream_rq_retry")
	s.Ejections = sumClusterStat(rec.ProxyStats, "outlier_detection.ejections_enforced_total")
	for _, u := range rec.Upstreams {
		s.UpstreamRequests += u.Requests
	}
	if len(rec.Upstreams) == 0 {
		s.UpstreamRequests = sumClusterStat(rec.ProxyStats, "upstream_rq_total")
	}
	if s.Requests > 0 {
		s.RetryAmplification = float64(s.UpstreamRequests) / float64(s.Requests)
	}
	return s
}

// sumClusterStat sums the stat "cluster.<name>.<stat>" over all clusters (cluster names may hold dots).
func sumClusterStat(stats map[string]uint64, stat string) uint64 {
	var n uint64
	for k, v := range stats {
		if strings.HasPrefix(k, "cluster.") && strings.HasSuffix(k, "."+stat) && len(k) > len("cluster.")+len(stat)+1 {
			n += v
		}
	}
	return n
}

// ExactPercentile returns the nearest-rank q-quantile (0 < q ≤ 1, e.g. 0.999 for p99.9) of the values:
// the smallest value such that at least q of all values are ≤ it. It returns 0 for no values and does not
// modify its argument.
func ExactPercentile(values []time.Duration, q float64) time.Duration {
	if len(values) == 0 {
		return 0
	}
	sorted := slices.Clone(values)
	slices.Sort(sorted)
	rank := int(math.Ceil(q*float64(len(sorted)) - 1e-9)) // tolerate 0.999*1000 = 999.0000000000001
	return sorted[min(max(rank, 1), len(sorted))-1]
}

const histHighest = int64(time.Hour / time.Microsecond)

// latencyHist is an HdrHistogram in microseconds (1µs..1h, 3 significant digits) plus the exact maximum.
type latencyHist struct {
	h   *hdrhistogram.Histogram
	max time.Duration
}

func newLatencyHist() *latencyHist { return &latencyHist{h: hdrhistogram.New(1, histHighest, 3)} }

func (l *latencyHist) record(d time.Duration) {
	d = max(d, 0)
	l.max = max(l.max, d)
	us := min(int64((d+time.Microsecond/2)/time.Microsecond), histHighest)
	_ = l.h.RecordValue(us) // cannot fail: us is within [0, histHighest]
}

func (l *latencyHist) percentiles() Percentiles {
	at := func(percent float64) time.Duration {
		// The histogram answers with the highest value of a bucket; never report more than the real max.
		return min(time.Duration(l.h.ValueAtQuantile(percent))*time.Microsecond, l.max)
	}
	return Percentiles{P50: at(50), P90: at(90), P99: at(99), P999: at(99.9), Max: l.max}
}
