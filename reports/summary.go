package reports

import (
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Summary is what a report shows; Summarize computes it from a record.Record.
type Summary struct {
	// Requests counts the samples; Successes those with a complete 2xx/3xx response; Errors the rest
	// (4xx, 5xx and transport errors, including requests cancelled when the run was stopped).
	Requests, Successes, Errors uint64

	TargetRate float64       // planned requests/s (record.Record.TargetRate)
	Duration   time.Duration // planned load duration (record.Record.Duration)
	// AchievedRate is the rate at which requests were actually sent, in requests/s:
	// Requests / max(Duration, last actual send offset + 1/TargetRate). A generator that keeps up sends
	// its last request at Duration − 1/TargetRate, so it achieves exactly TargetRate; one that falls
	// behind stretches the send window and achieves less.
	AchievedRate float64
	// RateHeld is false when the generator fell behind: AchievedRate < record.HeldRateFraction × TargetRate or
	// MaxSendLag > record.MaxHeldSendLag. Always true without a TargetRate.
	RateHeld   bool
	MaxSendLag time.Duration // worst lateness of an actual send against its intended time

	SuccessRate float64 // 100 × Successes / Requests, in percent; 0 without requests
	ErrorRate   float64 // 100 × Errors / Requests, in percent; 0 without requests
	StatusCodes map[int]uint64
	ErrorKinds  map[string]uint64
	// GRPCStatuses counts the gRPC calls by the status they ended with (record.Sample.GRPCStatus);
	// empty when no request was a gRPC call.
	GRPCStatuses map[int]uint64

	// Latency is measured from the intended send time (coordinated-omission corrected), Uncorrected from
	// the actual send time. Both leave out requests cancelled because the run was stopped.
	Latency, Uncorrected record.Percentiles

	// Retries sums cluster.<c>.upstream_rq_retry and Ejections cluster.<c>.outlier_detection.ejections_enforced_total
	// over the proxy's clusters (over a phase, see PhaseOf).
	Retries, Ejections uint64

	// UpstreamAttempts is the upstream attempts the proxy made for the requests (a retry is one more
	// attempt; an attempt counts whether or not it reached an instance: a refused or timed-out connect
	// counts, a request turned away by a circuit breaker before any host was picked does not).
	// AttemptsOver is the number of requests they were made for, and RetryAmplification
	// UpstreamAttempts / AttemptsOver: 1 means no retries, 1.5 half a retry per request on average.
	// AttemptsFrom says where they come from: AttemptsFromSamples or AttemptsFromProxy; "" when not
	// recorded (the three are then zero).
	UpstreamAttempts, AttemptsOver uint64
	AttemptsFrom                   string
	RetryAmplification             float64

	// UpstreamReceived is every request the upstream instances received (the sum of
	// record.UpstreamRecord.Requests, resets included): the attempts that were delivered to an instance.
	// Beyond one hop, the entry services' instances only (record.Service.Entry): the others receive
	// calls, not the clients' requests (see ServiceOutcome).
	// DeliveredAmplification is UpstreamReceived / Requests. Both are known over the whole run only, and
	// only with upstream records (ReceivedKnown).
	UpstreamReceived       uint64
	ReceivedKnown          bool
	DeliveredAmplification float64
}

// Where Summary.UpstreamAttempts come from.
const (
	// AttemptsFromSamples: the sum of record.Sample.Attempts over the requests that carry an attempt count
	// (AttemptsOver of them). Used whenever at least one request carries one.
	AttemptsFromSamples = "samples"
	// AttemptsFromProxy: the proxy's sum of cluster.<c>.upstream_rq_total, over all requests. The whole
	// run's fallback when no request carries an attempt count (a proxy that only counts); a phase has no
	// such fallback.
	AttemptsFromProxy = "upstream_rq_total"
)

// Summarize computes the summary of a run. record.Percentiles are exact, from the samples: the nearest rank
// (record.ExactPercentile).
func Summarize(rec *record.Record) Summary {
	s := Summary{
		TargetRate:   rec.TargetRate,
		Duration:     rec.Duration,
		Requests:     uint64(len(rec.Samples)),
		StatusCodes:  map[int]uint64{},
		ErrorKinds:   map[string]uint64{},
		GRPCStatuses: map[int]uint64{},
	}
	corrected := make([]time.Duration, 0, len(rec.Samples))
	uncorrected := make([]time.Duration, 0, len(rec.Samples))
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
		if x.GRPC {
			s.GRPCStatuses[int(x.GRPCStatus)]++
		}
		s.MaxSendLag = max(s.MaxSendLag, x.Sent-x.Intended)
		lastSent = max(lastSent, x.Sent)
		if x.Error != record.ErrCanceled {
			corrected = append(corrected, max(x.Latency, 0))
			uncorrected = append(uncorrected, max(x.Uncorrected(), 0))
		}
	}
	s.Errors = s.Requests - s.Successes
	slices.Sort(corrected)
	slices.Sort(uncorrected)
	s.Latency, s.Uncorrected = record.SortedPercentiles(corrected), record.SortedPercentiles(uncorrected)

	window := lastSent
	if rec.TargetRate > 0 {
		window += time.Duration(float64(time.Second) / rec.TargetRate)
	}
	if window = max(window, rec.Duration); window > 0 && s.Requests > 0 {
		s.AchievedRate = float64(s.Requests) / window.Seconds()
	}
	s.RateHeld = rec.TargetRate <= 0 || s.AchievedRate >= record.HeldRateFraction*rec.TargetRate && s.MaxSendLag <= record.MaxHeldSendLag
	if s.Requests > 0 {
		s.SuccessRate = 100 * float64(s.Successes) / float64(s.Requests)
		s.ErrorRate = 100 * float64(s.Errors) / float64(s.Requests)
	}

	s.Retries = sumClusterStat(rec.ProxyStats, "upstream_rq_retry")
	s.Ejections = sumClusterStat(rec.ProxyStats, "outlier_detection.ejections_enforced_total")
	a := attemptStats(rec.Samples)
	switch {
	case a.Known > 0:
		s.AttemptsFrom, s.UpstreamAttempts, s.AttemptsOver = AttemptsFromSamples, a.Total, a.Known
	case s.Requests > 0 && hasClusterStat(rec.ProxyStats, "upstream_rq_total"):
		s.AttemptsFrom, s.UpstreamAttempts, s.AttemptsOver = AttemptsFromProxy, sumClusterStat(rec.ProxyStats, "upstream_rq_total"), s.Requests
	}
	if s.AttemptsOver > 0 {
		s.RetryAmplification = float64(s.UpstreamAttempts) / float64(s.AttemptsOver)
	}
	if len(rec.Upstreams) > 0 {
		s.ReceivedKnown = true
		entry := entryServices(rec)
		for _, u := range rec.Upstreams {
			if entry == nil || entry[u.Service] {
				s.UpstreamReceived += u.Requests
			}
		}
		if s.Requests > 0 {
			s.DeliveredAmplification = float64(s.UpstreamReceived) / float64(s.Requests)
		}
	}
	return s
}

// entryServices returns the services the ingress proxy routes to, for a record beyond one hop whose
// services say so: the clients' requests are delivered to those, the other services' requests come
// from calls. nil: every instance receives the clients' requests.
func entryServices(rec *record.Record) map[string]bool {
	if !meshRecord(rec) {
		return nil
	}
	var entry map[string]bool
	for _, svc := range rec.Services {
		if svc.Entry {
			if entry == nil {
				entry = map[string]bool{}
			}
			entry[svc.Name] = true
		}
	}
	return entry
}

// sumClusterStat sums the stat "cluster.<name>.<stat>" over all clusters (cluster names may hold dots).
func sumClusterStat(stats map[string]uint64, stat string) uint64 {
	var n uint64
	for k, v := range stats {
		if isClusterStat(k, stat) {
			n += v
		}
	}
	return n
}

// hasClusterStat tells whether the proxy reported the stat "cluster.<name>.<stat>" for some cluster.
func hasClusterStat(stats map[string]uint64, stat string) bool {
	for k := range stats {
		if isClusterStat(k, stat) {
			return true
		}
	}
	return false
}

func isClusterStat(key, stat string) bool {
	return strings.HasPrefix(key, "cluster.") && strings.HasSuffix(key, "."+stat) && len(key) > len("cluster.")+len(stat)+1
}
