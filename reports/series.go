package reports

import (
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Where a time series' retries come from (Series.RetriesFrom).
const (
	RetriesFromEvents  = "events"  // the proxy's retry events, by when the retry was scheduled
	RetriesFromSamples = "samples" // Σ max(Attempts − 1, 0) of the requests intended in the bucket
)

// Series is the run over time, in buckets of Bucket from the run start: the data behind report.html's
// charts, kept in report.json for re-analysis. Bucket is bucketWidth(run end): 100 ms under 10 s, else
// 1 s, doubled until there are at most 600 buckets.
type Series struct {
	Bucket time.Duration
	// RetriesFrom is RetriesFromEvents or RetriesFromSamples, "" when the run recorded neither (every
	// bucket's Retries is then 0 and means "not recorded").
	RetriesFrom string
	Points      []SeriesPoint
}

// SeriesPoint is one bucket [Start, Start+Series.Bucket).
type SeriesPoint struct {
	Start time.Duration
	// Intended: requests intended in the bucket; Sent: requests actually sent in it; Completed: requests
	// whose response (or transport error) ended in it, the ones cancelled because the run was stopped left
	// out.
	Intended, Sent, Completed uint64
	// Classes counts the requests intended in the bucket by outcome: "2xx" … "5xx" by status class,
	// "error" for transport errors (no complete response).
	Classes map[string]uint64
	// Retries scheduled in the bucket (see Series.RetriesFrom).
	Retries uint64
	// EjectionsActive is how many hosts were ejected at some moment of the bucket.
	EjectionsActive int
	// Upstream5xx counts the 5xx statuses the instances' abort faults sent in the bucket, and
	// UpstreamFailures the other failures they injected (reset, hang, close_after, HTTP/2 RST_STREAM and
	// GOAWAY), by when the instance applied them (record.FaultEvent.At): set against the clients' 5xx and
	// transport errors, what the proxy's retries masked.
	Upstream5xx, UpstreamFailures uint64
	// Latency holds the corrected latency percentiles (p50, p99, max) of the requests intended in the
	// bucket, the cancelled ones left out; Latencies is how many there were (0: no percentiles).
	Latency   record.Percentiles
	Latencies uint64
}

// TimeSeries computes the run's time series from its record; end is the run's end (RunEnd) and hosts
// the outcomes' ejection timelines.
func TimeSeries(rec *record.Record, end time.Duration, hosts []HostTimeline) Series {
	w := bucketWidth(end)
	n := bucketCount(end, w)
	s := Series{Bucket: w, Points: make([]SeriesPoint, n)}
	at := func(t time.Duration) int { return min(max(int(t/w), 0), n-1) }
	lat := make([][]time.Duration, n)
	for i := range s.Points {
		s.Points[i] = SeriesPoint{Start: time.Duration(i) * w, Classes: map[string]uint64{}}
	}
	for _, smp := range rec.Samples {
		p := &s.Points[at(smp.Intended)]
		p.Intended++
		s.Points[at(smp.Sent)].Sent++
		p.Classes[classOf(smp)]++
		if smp.Error != record.ErrCanceled {
			s.Points[at(smp.Intended+smp.Latency)].Completed++
			lat[at(smp.Intended)] = append(lat[at(smp.Intended)], smp.Latency)
		}
	}
	for i, l := range lat {
		if len(l) > 0 {
			s.Points[i].Latencies = uint64(len(l))
			s.Points[i].Latency = record.Percentiles{P50: record.ExactPercentile(l, 0.5), P99: record.ExactPercentile(l, 0.99),
				Max: record.ExactPercentile(l, 1)}
		}
	}
	for _, e := range rec.ProxyEvents {
		if e.Kind == record.ProxyRetry {
			s.Points[at(e.At)].Retries++
			s.RetriesFrom = RetriesFromEvents
		}
	}
	if s.RetriesFrom == "" && attemptStats(rec.Samples).Known > 0 {
		s.RetriesFrom = RetriesFromSamples
		for _, smp := range rec.Samples {
			s.Points[at(smp.Intended)].Retries += uint64(max(smp.Attempts-1, 0))
		}
	}
	for _, e := range rec.Events {
		switch {
		case e.Kind == "abort" && strings.HasPrefix(e.Detail, "5"):
			s.Points[at(e.At)].Upstream5xx++
		case slices.Contains(upstreamFailureKinds, e.Kind):
			s.Points[at(e.At)].UpstreamFailures++
		}
	}
	// A host several sidecars ejected (one timeline each) counts once.
	type key struct{ cluster, host string }
	byHost := map[key][]Ejection{}
	var order []key
	for _, h := range hosts {
		k := key{h.Cluster, h.Host}
		if _, ok := byHost[k]; !ok {
			order = append(order, k)
		}
		byHost[k] = append(byHost[k], h.Ejections...)
	}
	for _, k := range order {
		for i := range s.Points {
			b := Span{Start: s.Points[i].Start, End: s.Points[i].Start + w}
			for _, e := range byHost[k] {
				if e.Start < b.End && (e.End > b.Start || e.End == e.Start && e.Start >= b.Start) {
					s.Points[i].EjectionsActive++
					break
				}
			}
		}
	}
	return s
}

// upstreamFailureKinds are the fault kinds (faults.Kind*) that fail a request at the instance without a
// status: a reset, a hang, a body cut short, an HTTP/2 stream reset or GOAWAY.
var upstreamFailureKinds = []string{"reset", "hang", "close_after", "rst_stream", "goaway"}

// classOf is a request's outcome class: "2xx" … "5xx", or "error" without a complete response.
func classOf(s record.Sample) string {
	if s.Error != "" || s.Status < 100 || s.Status > 599 {
		return "error"
	}
	return string(rune('0'+s.Status/100)) + "xx"
}
