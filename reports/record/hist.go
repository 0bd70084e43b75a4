package record

import (
	"fmt"
	"math"
	"time"

	"github.com/HdrHistogram/hdrhistogram-go"
)

// Latency histograms: HdrHistograms in nanoseconds, 1ns..1h, 3 significant digits. Values up to 2048ns
// are exact; above, a bucket spans at most 1/1024 of its value, so every quantile is reported within
// 0.1% above the exact one (never above the exact maximum). Values above an hour count as an hour.
const (
	hdrLowest  = 1
	hdrHighest = int64(time.Hour)
	hdrDigits  = 3
)

// Quantiles reported by LatencyHist.Spectrum, in percent; 100 is the maximum.
var SpectrumPercents = []float64{50, 75, 90, 95, 99, 99.9, 99.99, 99.999, 100}

// LatencyHist is a mergeable latency distribution: an HdrHistogram (see hdrLowest…) plus the exact minimum
// and maximum. The zero value is not usable: call NewLatencyHist. It is not safe for concurrent use.
type LatencyHist struct {
	h        *hdrhistogram.Histogram
	min, max time.Duration
}

// NewLatencyHist returns an empty distribution.
func NewLatencyHist() *LatencyHist {
	return &LatencyHist{h: hdrhistogram.New(hdrLowest, hdrHighest, hdrDigits)}
}

// Record adds one latency; negative values count as 0.
func (l *LatencyHist) Record(d time.Duration) {
	d = max(d, 0)
	if l.h.TotalCount() == 0 || d < l.min {
		l.min = d
	}
	l.max = max(l.max, d)
	_ = l.h.RecordValue(min(int64(d), hdrHighest)) // cannot fail: within [0, hdrHighest]
}

// Merge adds every value of o.
func (l *LatencyHist) Merge(o *LatencyHist) {
	if o == nil || o.h.TotalCount() == 0 {
		return
	}
	if l.h.TotalCount() == 0 || o.min < l.min {
		l.min = o.min
	}
	l.max = max(l.max, o.max)
	l.h.Merge(o.h)
}

// Count is the number of values recorded.
func (l *LatencyHist) Count() uint64 { return uint64(l.h.TotalCount()) }

// Min and Max are the exact extremes (0 when empty).
func (l *LatencyHist) Min() time.Duration { return l.min }
func (l *LatencyHist) Max() time.Duration { return l.max }

// Mean is the mean of the recorded values, from the histogram's buckets.
func (l *LatencyHist) Mean() time.Duration { return time.Duration(math.Round(l.h.Mean())) }

// Quantile returns the nearest-rank q-quantile (0 ≤ q ≤ 1), the definition of ExactPercentile (nearestRank):
// the histogram's bucket holding the value of rank ⌈q·n⌉, reported as the bucket's highest equivalent value
// (so never below the exact value, and within 0.1% above it) but never above the exact maximum nor below
// the exact minimum. It returns 0 when empty.
func (l *LatencyHist) Quantile(q float64) time.Duration { return l.quantiles([]float64{q})[0] }

// quantiles answers several quantiles (ascending or not) in one pass over the histogram.
func (l *LatencyHist) quantiles(qs []float64) []time.Duration {
	out := make([]time.Duration, len(qs))
	n := l.h.TotalCount()
	if n == 0 {
		return out
	}
	ranks := make([]int64, len(qs))
	for i, q := range qs {
		ranks[i] = nearestRank(q, n)
	}
	var cum int64
	for _, bar := range l.h.Distribution() {
		if bar.Count == 0 {
			continue
		}
		prev := cum
		cum += bar.Count
		for i, r := range ranks {
			if r > prev && r <= cum {
				out[i] = min(max(time.Duration(bar.To), l.min), l.max)
			}
		}
	}
	return out
}

// Percentiles returns p50, p90, p99, p99.9 and the exact max.
func (l *LatencyHist) Percentiles() Percentiles {
	v := l.quantiles([]float64{0.5, 0.9, 0.99, 0.999})
	return Percentiles{P50: v[0], P90: v[1], P99: v[2], P999: v[3], Max: l.max}
}

// QuantileValue is one point of a latency spectrum.
type QuantileValue struct {
	Percent float64 // e.g. 99.9
	Value   time.Duration
}

// Spectrum returns the values at SpectrumPercents (p50 … p99.999 and the max).
func (l *LatencyHist) Spectrum() []QuantileValue {
	qs := make([]float64, len(SpectrumPercents))
	for i, p := range SpectrumPercents {
		qs[i] = p / 100
	}
	v := l.quantiles(qs)
	out := make([]QuantileValue, len(qs))
	for i, p := range SpectrumPercents {
		out[i] = QuantileValue{p, v[i]}
	}
	out[len(out)-1].Value = l.max
	return out
}

// Encode returns the histogram in HdrHistogram's standard V2 compressed form (base64), readable by
// HdrHistogram tools in every language. The exact min and max are not part of it.
func (l *LatencyHist) Encode() ([]byte, error) {
	return l.h.Encode(hdrhistogram.V2CompressedEncodingCookieBase)
}

// HistPair is the two views of the same requests: from the intended send time (Corrected, the
// coordinated-omission correction) and from the actual send time (Uncorrected).
type HistPair struct{ Corrected, Uncorrected *LatencyHist }

// NewHistPair returns two empty distributions.
func NewHistPair() HistPair { return HistPair{NewLatencyHist(), NewLatencyHist()} }

func (p HistPair) record(x Sample) {
	p.Corrected.Record(x.Latency)
	p.Uncorrected.Record(x.Uncorrected())
}

func (p HistPair) merge(o HistPair) {
	p.Corrected.Merge(o.Corrected)
	p.Uncorrected.Merge(o.Uncorrected)
}

// Status classes of HistSet.Classes.
const (
	Class1xx = iota
	Class2xx
	Class3xx
	Class4xx
	Class5xx
	ClassError // no complete HTTP response: a transport error
	NumClasses
)

// ClassNames names the status classes, indexed by Class1xx…ClassError.
var ClassNames = [NumClasses]string{"1xx", "2xx", "3xx", "4xx", "5xx", "error"}

// ClassOf returns the status class of a sample: ClassError for a transport error (even after a status
// line), else the class of its status.
func ClassOf(x Sample) int {
	if x.Error != "" || x.Status < 100 || x.Status > 599 {
		return ClassError
	}
	return x.Status/100 - 1
}

// PhaseHist is what happened to the requests intended during one phase of a run.
type PhaseHist struct {
	Name     string
	Start    time.Duration // offset from run start
	Duration time.Duration
	// Planned is the number of requests the schedule intends in the phase (its rate's integral, or its
	// bursts); 0 in closed loop, where there is no schedule.
	Planned float64
	// Requests counts the samples intended in the phase, Successes the 2xx/3xx ones.
	Requests, Successes uint64
	MaxSendLag          time.Duration // worst lateness of an actual send against its intended time
	LastSent            time.Duration // latest actual send, offset from run start
	Latency             HistPair      // leaves out requests cancelled because the run was stopped
}

// TargetRate is the planned mean rate of the phase, in requests/s (0 in closed loop).
func (p *PhaseHist) TargetRate() float64 {
	if p.Duration <= 0 {
		return 0
	}
	return p.Planned / p.Duration.Seconds()
}

// AchievedRate is the mean rate at which the phase's requests were actually sent, in requests/s:
// Requests / max(Duration, LastSent − Start + Duration/Planned), the definition of Summary.AchievedRate
// applied to the phase. A generator that keeps up achieves exactly the target.
func (p *PhaseHist) AchievedRate() float64 {
	if p.Requests == 0 {
		return 0
	}
	window := p.LastSent - p.Start
	if p.Planned > 0 {
		window += time.Duration(float64(p.Duration) / p.Planned)
	}
	window = max(window, p.Duration)
	if window <= 0 {
		return 0
	}
	return float64(p.Requests) / window.Seconds()
}

// RateHeld reports whether the phase held its rate: AchievedRate ≥ HeldRateFraction × TargetRate and
// MaxSendLag ≤ MaxHeldSendLag. Always true in closed loop.
func (p *PhaseHist) RateHeld() bool {
	return p.Planned == 0 || p.AchievedRate() >= HeldRateFraction*p.TargetRate() && p.MaxSendLag <= MaxHeldSendLag
}

// SecondHist is one second of a run's time series. Latencies count in the second the response ended
// (HdrHistogram interval-log style); Intended and Sent count in the second of the intended and actual
// send time.
type SecondHist struct {
	Intended, Sent, Completed uint64
	Classes                   [NumClasses]uint64 // completed requests by status class
	corrected, uncorrected    *hdrhistogram.PackedHistogram
}

// Latency returns the second's latency distributions (corrected, uncorrected) as new LatencyHist values.
// Their Min and Max are bucket bounds, not exact.
func (s *SecondHist) Latency() HistPair {
	return HistPair{histUnpack(s.corrected), histUnpack(s.uncorrected)}
}

func histUnpack(p *hdrhistogram.PackedHistogram) *LatencyHist {
	l := NewLatencyHist()
	if p == nil || p.TotalCount() == 0 {
		return l
	}
	p.MergeInto(l.h)
	l.min, l.max = time.Duration(p.Min()), time.Duration(p.Max())
	return l
}

// HistSet holds a run's latency histograms — overall, per phase, per status class and per second —
// and its counters, built one sample at a time, so its size does not grow with the number of requests
// (the per-second series grows with the run's length: a few hundred bytes to a few KB per second).
// Sets of runs with the same phases merge. It is not safe for concurrent use.
type HistSet struct {
	Requests, Successes uint64
	Canceled            uint64 // requests cancelled because the run was stopped: counted, not in latencies
	MaxSendLag          time.Duration
	LastSent            time.Duration
	StatusCodes         map[int]uint64
	ErrorKinds          map[string]uint64
	GRPCStatuses        map[int]uint64 // gRPC calls by Sample.GRPCStatus; empty without gRPC calls

	Latency HistPair              // every request but the cancelled ones
	Classes [NumClasses]*HistPair // by status class; nil until the class is seen
	Phases  []*PhaseHist
	Seconds []*SecondHist

	// active is the dense histogram pair of the second being filled (activeSec), packed into Seconds
	// when a later second starts.
	active    HistPair
	activeSec int
}

// HistPhase names a phase of a HistSet: see PhaseHist.
type HistPhase struct {
	Name            string
	Start, Duration time.Duration
	Planned         float64
}

// NewHistSet returns an empty set for a run with the given phases (at least one).
func NewHistSet(phases []HistPhase) *HistSet {
	s := &HistSet{
		StatusCodes:  map[int]uint64{},
		ErrorKinds:   map[string]uint64{},
		GRPCStatuses: map[int]uint64{},
		Latency:      NewHistPair(),
		active:       NewHistPair(),
		activeSec:    -1,
	}
	for _, p := range phases {
		s.Phases = append(s.Phases, &PhaseHist{Name: p.Name, Start: p.Start, Duration: p.Duration, Planned: p.Planned,
			Latency: NewHistPair()})
	}
	return s
}

// second returns the SecondHist at index i, growing the series.
func (s *HistSet) second(i int) *SecondHist {
	for len(s.Seconds) <= i {
		s.Seconds = append(s.Seconds, &SecondHist{})
	}
	return s.Seconds[i]
}

// Record adds one finished sample intended during phase (an index of Phases).
func (s *HistSet) Record(x Sample, phase int) {
	p := s.Phases[phase]
	s.Requests++
	p.Requests++
	if x.OK() {
		s.Successes++
		p.Successes++
	}
	if x.Status != 0 {
		s.StatusCodes[x.Status]++
	}
	if x.Error != "" {
		s.ErrorKinds[x.Error]++
	}
	if x.GRPC {
		s.GRPCStatuses[int(x.GRPCStatus)]++
	}
	lag := x.Sent - x.Intended
	s.MaxSendLag, p.MaxSendLag = max(s.MaxSendLag, lag), max(p.MaxSendLag, lag)
	s.LastSent, p.LastSent = max(s.LastSent, x.Sent), max(p.LastSent, x.Sent)
	s.second(histSecond(x.Intended)).Intended++
	s.second(histSecond(x.Sent)).Sent++
	if x.Error == ErrCanceled {
		s.Canceled++
		return
	}
	s.Latency.record(x)
	p.Latency.record(x)
	c := ClassOf(x)
	if s.Classes[c] == nil {
		pair := NewHistPair()
		s.Classes[c] = &pair
	}
	s.Classes[c].record(x)

	end := histSecond(x.Intended + x.Latency)
	sec := s.second(end)
	sec.Completed++
	sec.Classes[c]++
	switch {
	case end == s.activeSec:
		s.active.record(x)
	case end > s.activeSec:
		s.seal()
		s.activeSec = end
		s.active.record(x)
	default: // a straggler of an already sealed second
		_ = histPacked(&sec.corrected).RecordValue(min(int64(max(x.Latency, 0)), hdrHighest))
		_ = histPacked(&sec.uncorrected).RecordValue(min(int64(max(x.Uncorrected(), 0)), hdrHighest))
	}
}

// seal packs the active second into the series and empties it.
func (s *HistSet) seal() {
	if s.activeSec < 0 {
		return
	}
	sec := s.second(s.activeSec)
	pack := func(dst **hdrhistogram.PackedHistogram, src *LatencyHist) {
		histPacked(dst).MergeFrom(src.h)
		src.h.Reset()
		src.min, src.max = 0, 0
	}
	pack(&sec.corrected, s.active.Corrected)
	pack(&sec.uncorrected, s.active.Uncorrected)
	s.activeSec = -1
}

// Finish packs the last second; call it once every sample is recorded (Record may still be called
// afterwards, at a small cost).
func (s *HistSet) Finish() { s.seal() }

// packed returns *p, creating it when nil.
func histPacked(p **hdrhistogram.PackedHistogram) *hdrhistogram.PackedHistogram {
	if *p == nil {
		*p = hdrhistogram.NewPacked(hdrLowest, hdrHighest, hdrDigits)
	}
	return *p
}

func histSecond(d time.Duration) int { return int(max(d, 0) / time.Second) }

// Merge adds o's samples to s: counters add up, histograms merge, phases merge by index and seconds by
// offset. Both must be finished (Finish) and have the same phase names.
func (s *HistSet) Merge(o *HistSet) error {
	if len(s.Phases) != len(o.Phases) {
		return fmt.Errorf("reports: merging histogram sets: %d phases vs %d", len(s.Phases), len(o.Phases))
	}
	for i, p := range s.Phases {
		if p.Name != o.Phases[i].Name {
			return fmt.Errorf("reports: merging histogram sets: phase %d is %q vs %q", i, p.Name, o.Phases[i].Name)
		}
	}
	s.Finish()
	s.Requests += o.Requests
	s.Successes += o.Successes
	s.Canceled += o.Canceled
	s.MaxSendLag, s.LastSent = max(s.MaxSendLag, o.MaxSendLag), max(s.LastSent, o.LastSent)
	for k, v := range o.StatusCodes {
		s.StatusCodes[k] += v
	}
	for k, v := range o.ErrorKinds {
		s.ErrorKinds[k] += v
	}
	for k, v := range o.GRPCStatuses {
		if s.GRPCStatuses == nil {
			s.GRPCStatuses = map[int]uint64{}
		}
		s.GRPCStatuses[k] += v
	}
	s.Latency.merge(o.Latency)
	for c, pair := range o.Classes {
		if pair == nil {
			continue
		}
		if s.Classes[c] == nil {
			np := NewHistPair()
			s.Classes[c] = &np
		}
		s.Classes[c].merge(*pair)
	}
	for i, p := range s.Phases {
		q := o.Phases[i]
		p.Planned += q.Planned
		p.Requests += q.Requests
		p.Successes += q.Successes
		p.MaxSendLag, p.LastSent = max(p.MaxSendLag, q.MaxSendLag), max(p.LastSent, q.LastSent)
		p.Latency.merge(q.Latency)
	}
	for i, q := range o.Seconds {
		sec := s.second(i)
		sec.Intended += q.Intended
		sec.Sent += q.Sent
		sec.Completed += q.Completed
		for c := range sec.Classes {
			sec.Classes[c] += q.Classes[c]
		}
		for _, pair := range [][2]**hdrhistogram.PackedHistogram{{&sec.corrected, &q.corrected}, {&sec.uncorrected, &q.uncorrected}} {
			dst, src := pair[0], *pair[1]
			if src == nil {
				continue
			}
			histPacked(dst).Merge(src)
		}
	}
	return nil
}

// Errors is Requests − Successes.
func (s *HistSet) Errors() uint64 { return s.Requests - s.Successes }

// Window is the span the requests were sent over: max(planned duration, last actual send + the mean
// planned gap), as in Summary.AchievedRate; plannedRate is the run's planned mean rate (0 in closed loop).
func (s *HistSet) window(planned time.Duration, plannedRate float64) time.Duration {
	w := s.LastSent
	if plannedRate > 0 {
		w += time.Duration(float64(time.Second) / plannedRate)
	}
	return max(w, planned)
}

// Planned returns the run's planned duration (the phases' total) and number of requests.
func (s *HistSet) Planned() (time.Duration, float64) {
	var d time.Duration
	var n float64
	for _, p := range s.Phases {
		d = max(d, p.Start+p.Duration)
		n += p.Planned
	}
	return d, n
}

// AchievedRate is Requests / the send window, in requests/s (see Summary.AchievedRate).
func (s *HistSet) AchievedRate() float64 {
	d, n := s.Planned()
	rate := 0.0
	if d > 0 {
		rate = n / d.Seconds()
	}
	w := s.window(d, rate)
	if s.Requests == 0 || w <= 0 {
		return 0
	}
	return float64(s.Requests) / w.Seconds()
}

// TargetRate is the planned mean rate over the whole run, in requests/s (0 in closed loop).
func (s *HistSet) TargetRate() float64 {
	d, n := s.Planned()
	if d <= 0 {
		return 0
	}
	return n / d.Seconds()
}

// RateHeld reports whether every phase held its rate (PhaseHist.RateHeld).
func (s *HistSet) RateHeld() bool {
	for _, p := range s.Phases {
		if !p.RateHeld() {
			return false
		}
	}
	return true
}

// The generator held its rate when it achieved at least HeldRateFraction of the target rate and no send
// was later than MaxHeldSendLag.
const (
	HeldRateFraction = 0.95
	MaxHeldSendLag   = time.Second
)
