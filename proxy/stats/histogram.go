package stats

import (
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Quantiles are the percentiles Envoy's admin prints for every histogram.
var Quantiles = []float64{0, 25, 50, 75, 90, 95, 99, 99.5, 99.9, 100}

// Histogram records durations, reported in milliseconds like Envoy's *_ms and *_time histograms. It keeps
// the cumulative distribution and the one of the current flush interval (Envoy's "interval" values).
// Safe for concurrent use.
type Histogram struct {
	mu         sync.Mutex
	cumulative *hdrhistogram.Histogram
	interval   *hdrhistogram.Histogram // values since the last Flush
	previous   *hdrhistogram.Histogram // the last complete interval, what the admin shows
	// copied, when set, is called by a snapshot once it has copied the histogram and let go of its
	// lock, before it computes anything (for specs).
	copied func()
}

// Microseconds up to one hour, three significant digits.
func newHDR() *hdrhistogram.Histogram {
	return hdrhistogram.New(1, int64(time.Hour/time.Microsecond), 3)
}

func newHistogram() *Histogram {
	return &Histogram{cumulative: newHDR(), interval: newHDR(), previous: newHDR()}
}

// Record adds one duration.
func (h *Histogram) Record(d time.Duration) {
	us := max(d.Microseconds(), 1)
	h.mu.Lock()
	_ = h.cumulative.RecordValue(us) // values above an hour saturate at the top bucket
	_ = h.interval.RecordValue(us)
	h.mu.Unlock()
}

// Flush closes the current interval.
func (h *Histogram) Flush() {
	h.mu.Lock()
	h.previous, h.interval = h.interval, h.previous
	h.interval.Reset()
	h.mu.Unlock()
}

// HistogramSnapshot holds a histogram's quantiles in milliseconds. Interval values are NaN when the last
// interval recorded nothing.
type HistogramSnapshot struct {
	Name            string
	Count           int64   // cumulative number of values
	SumMs           float64 // cumulative sum, approximated from the buckets
	Interval, Cumul []float64
	Buckets         []Bucket // cumulative counts at Envoy's default bucket bounds, for Prometheus
}

// Bucket is a cumulative Prometheus bucket: Count values at or below UpperMs.
type Bucket struct {
	UpperMs float64
	Count   int64
}

// bucketBounds are Envoy's default histogram bucket bounds (ms).
var bucketBounds = []float64{0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000, 300000, 600000, 1800000, 3600000}

// snapshot copies the histogram under its lock and computes the quantiles, sum and buckets from the
// copy, outside it: Record, on the request path, takes the same lock, and the computation walks every
// bucket, for milliseconds per histogram. Computed under the lock, every /stats call and Prometheus
// scrape stalled each request that recorded into the histogram meanwhile (with GOMAXPROCS=1, the whole
// proxy: found by `make bench-reload`, which polls /stats during its reloads). Envoy's workers record
// without a lock into thread-local histograms, each holding a second one that the main thread swaps in
// and merges, so its admin never blocks them (source/common/stats/thread_local_store.h,
// ThreadLocalHistogramImpl; thread_local_store.cc, ParentHistogramImpl::merge).
func (h *Histogram) snapshot(name string) HistogramSnapshot {
	h.mu.Lock()
	cumulative, previous := h.cumulative.Clone(), h.previous.Clone()
	h.mu.Unlock()
	if h.copied != nil {
		h.copied()
	}
	s := HistogramSnapshot{Name: name, Count: cumulative.TotalCount()}
	for _, q := range Quantiles {
		s.Cumul = append(s.Cumul, quantileMs(cumulative, q))
		s.Interval = append(s.Interval, quantileMs(previous, q))
	}
	s.Buckets = make([]Bucket, len(bucketBounds))
	for i, ub := range bucketBounds {
		s.Buckets[i].UpperMs = ub
	}
	for _, bar := range cumulative.Distribution() { // one walk for the sum and every bucket
		if bar.Count == 0 {
			continue
		}
		s.SumMs += float64(bar.Count) * float64(bar.From+bar.To) / 2 / 1000
		for i, ub := range bucketBounds {
			if bar.To <= int64(ub*1000) {
				s.Buckets[i].Count += bar.Count
			}
		}
	}
	return s
}

func quantileMs(h *hdrhistogram.Histogram, q float64) float64 {
	if h.TotalCount() == 0 {
		return nan
	}
	v := h.Min()
	if q > 0 {
		v = min(h.ValueAtQuantile(q), h.Max()) // HDR reports a bucket's top: never above the true max
	}
	return sig3(float64(v) / 1000)
}

// sig3 rounds to the three significant digits the histogram keeps.
func sig3(x float64) float64 {
	if x == 0 {
		return 0
	}
	scale := math.Pow(10, 2-math.Floor(math.Log10(math.Abs(x))))
	return math.Round(x*scale) / scale
}

var nan = math.NaN()

// Histogram returns the named histogram, creating it on first use.
func (s *Store) Histogram(name string) *Histogram {
	s.mu.RLock()
	h := s.histograms[name]
	s.mu.RUnlock()
	if h != nil {
		return h
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if h = s.histograms[name]; h == nil {
		h = newHistogram()
		s.histograms[name] = h
	}
	return h
}

// FlushHistograms closes the current interval of every histogram (Envoy's stats flush).
func (s *Store) FlushHistograms() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, h := range s.histograms {
		h.Flush()
	}
}

// Histograms returns a snapshot of every histogram, sorted by name.
func (s *Store) Histograms() []HistogramSnapshot { return s.HistogramsMatching(nil) }

// HistogramsMatching returns a snapshot of each histogram whose name keep accepts (nil: all), sorted
// by name. The others are not computed: a filtered /stats call pays for the histograms it shows.
func (s *Store) HistogramsMatching(keep func(name string) bool) []HistogramSnapshot {
	s.mu.RLock()
	names := make([]string, 0, len(s.histograms))
	hs := make(map[string]*Histogram, len(s.histograms))
	for n, h := range s.histograms {
		if keep != nil && !keep(n) {
			continue
		}
		names = append(names, n)
		hs[n] = h
	}
	s.mu.RUnlock()
	sortStrings(names)
	out := make([]HistogramSnapshot, 0, len(names))
	for _, n := range names {
		out = append(out, hs[n].snapshot(n))
	}
	return out
}

// textLine formats a histogram the way Envoy's /stats does:
// "name: P0(interval,cumulative) P25(…) … P100(…)", or "name: No recorded values".
func (h HistogramSnapshot) textLine() string {
	if h.Count == 0 {
		return h.Name + ": No recorded values"
	}
	var b strings.Builder
	b.WriteString(h.Name)
	b.WriteString(":")
	for i, q := range Quantiles {
		fmt.Fprintf(&b, " P%s(%s,%s)", strconv.FormatFloat(q, 'f', -1, 64), fmtMs(h.Interval[i]), fmtMs(h.Cumul[i]))
	}
	return b.String()
}

func fmtMs(v float64) string {
	if v != v {
		return "nan"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}
