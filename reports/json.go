package reports

import (
	"encoding/json"
	"fmt"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// report.json, as documented in README.md: snake_case keys, durations in float milliseconds.
type (
	jsonReport struct {
		Version    int               `json:"version"`
		Scenario   string            `json:"scenario"`
		File       string            `json:"file"`
		Seed       uint64            `json:"seed"`
		Started    time.Time         `json:"started"`
		Passed     bool              `json:"passed"`
		Summary    jsonSummary       `json:"summary"`
		Checks     []jsonVerdict     `json:"checks"`
		Upstreams  []jsonUpstream    `json:"upstreams"`
		ProxyStats map[string]uint64 `json:"proxy_stats"`
		Outcomes   jsonOutcomes      `json:"outcomes"`
		Series     jsonSeries        `json:"series"`
		Partial    string            `json:"partial,omitempty"` // why the run is incomplete
	}
	jsonSummary struct {
		Requests     uint64            `json:"requests"`
		Successes    uint64            `json:"successes"`
		Errors       uint64            `json:"errors"`
		SuccessRate  float64           `json:"success_rate"`
		ErrorRate    float64           `json:"error_rate"`
		TargetRate   float64           `json:"target_rate"`
		AchievedRate float64           `json:"achieved_rate"`
		RateHeld     bool              `json:"rate_held"`
		DurationMs   float64           `json:"duration_ms"`
		MaxSendLagMs float64           `json:"max_send_lag_ms"`
		StatusCodes  map[int]uint64    `json:"status_codes"`
		ErrorKinds   map[string]uint64 `json:"error_kinds"`
		// GRPCStatuses counts the gRPC calls by the status name they ended with ("OK", "UNAVAILABLE");
		// left out when no request was a gRPC call (added in version 2 without a version bump: older
		// readers ignore it).
		GRPCStatuses  map[string]uint64 `json:"grpc_statuses,omitempty"`
		LatencyMs     jsonPercentiles   `json:"latency_ms"`
		UncorrectedMs jsonPercentiles   `json:"uncorrected_latency_ms"`
		Retries       uint64            `json:"retries"`
		Ejections     uint64            `json:"ejections"`
		// Version 2: the attempts the proxy made and the requests the instances received, null when not
		// recorded.
		UpstreamAttempts       *uint64  `json:"upstream_attempts"`
		AttemptsOver           *uint64  `json:"attempts_over"`
		AttemptsFrom           *string  `json:"attempts_from"`
		RetryAmplification     *float64 `json:"retry_amplification"`
		UpstreamReceived       *uint64  `json:"upstream_received"`
		DeliveredAmplification *float64 `json:"delivered_amplification"`
		// Version 1 only (read, never written): the instances' request count over the whole run.
		UpstreamRequestsV1 *uint64 `json:"upstream_requests,omitempty"`
	}
	jsonPercentiles struct {
		P50  float64 `json:"p50"`
		P90  float64 `json:"p90"`
		P99  float64 `json:"p99"`
		P999 float64 `json:"p999"`
		Max  float64 `json:"max"`
	}
	jsonSeries struct {
		BucketMs    float64           `json:"bucket_ms"`
		RetriesFrom *string           `json:"retries_from"`
		Points      []jsonSeriesPoint `json:"points"`
	}
	jsonSeriesPoint struct {
		StartMs         float64           `json:"start_ms"`
		Intended        uint64            `json:"intended"`
		Sent            uint64            `json:"sent"`
		Completed       uint64            `json:"completed"`
		StatusClasses   map[string]uint64 `json:"status_classes"`
		Retries         *uint64           `json:"retries"`
		EjectionsActive int               `json:"ejections_active"`
		Upstream5xx     uint64            `json:"upstream_5xx"`
		UpstreamFailed  uint64            `json:"upstream_failures"`
		Latencies       uint64            `json:"latencies"`
		LatencyMs       *jsonSeriesLat    `json:"latency_ms"`
	}
	jsonSeriesLat struct {
		P50 float64 `json:"p50"`
		P99 float64 `json:"p99"`
		Max float64 `json:"max"`
	}
	jsonVerdict struct {
		Check    string `json:"check"`
		Passed   bool   `json:"passed"`
		Observed string `json:"observed"`
		Required string `json:"required"`
	}
	jsonUpstream struct {
		Service  string            `json:"service"`
		Instance int               `json:"instance"`
		Address  string            `json:"address"`
		Requests uint64            `json:"requests"`
		Statuses map[int]uint64    `json:"statuses"`
		Resets   uint64            `json:"resets"`
		Applied  map[string]uint64 `json:"applied_faults"`
		// The other ends of a received request (a version 2 addition: 0 when read from an older file).
		Canceled     uint64 `json:"canceled"`
		Hangs        uint64 `json:"hangs"`
		Truncated    uint64 `json:"truncated"`
		StreamResets uint64 `json:"stream_resets"`
		GoAways      uint64 `json:"goaways"`
		// A version 3 addition (topologies): arrivals per record.BucketWidth and the capacity's outcome.
		Received []uint32              `json:"received_per_100ms,omitempty"`
		OK       []uint32              `json:"ok_per_100ms,omitempty"`
		Capacity *jsonInstanceCapacity `json:"capacity,omitempty"`
		// Issue #16 (mesh.mtls): the instance's TLS handshakes as a server, completed and failed.
		TLSHandshakes      uint64 `json:"tls_handshakes,omitempty"`
		TLSHandshakeErrors uint64 `json:"tls_handshake_errors,omitempty"`
	}
	// jsonInstanceCapacity is a record.CapacityRecord, durations in milliseconds.
	jsonInstanceCapacity struct {
		Workers        int     `json:"workers"`
		Queue          int     `json:"queue"`
		BusyMs         float64 `json:"busy_ms"`
		Queued         uint64  `json:"queued"`
		QueueWaitMs    float64 `json:"queue_wait_ms"`
		MaxQueueWaitMs float64 `json:"max_queue_wait_ms"`
		Rejected       uint64  `json:"rejected"`
		TimedOut       uint64  `json:"timed_out"`
	}
)

// WriteJSON writes the report as JSON to path atomically: to a temporary file in the same directory,
// synced, then renamed over path, so that readers see the old file or the whole new one, never a part.
func WriteJSON(path string, r Report) error {
	data, err := json.MarshalIndent(toJSON(r), "", "  ")
	if err != nil {
		return fmt.Errorf("report %s: %w", path, err)
	}
	return writeFileAtomic(path, append(data, '\n'))
}

func toJSON(r Report) jsonReport {
	s := r.Summary
	out := jsonReport{
		Version: r.Version, Scenario: r.Scenario, File: r.File, Seed: r.Seed, Started: r.Started, Passed: r.Passed, Partial: r.Partial,
		Summary: jsonSummary{
			Requests: s.Requests, Successes: s.Successes, Errors: s.Errors,
			SuccessRate: s.SuccessRate, ErrorRate: s.ErrorRate,
			TargetRate: s.TargetRate, AchievedRate: s.AchievedRate, RateHeld: s.RateHeld,
			DurationMs: ms(s.Duration), MaxSendLagMs: ms(s.MaxSendLag),
			StatusCodes: orEmpty(s.StatusCodes), ErrorKinds: orEmpty(s.ErrorKinds), GRPCStatuses: grpcStatusNames(s.GRPCStatuses),
			LatencyMs: jsonPercentilesOf(s.Latency), UncorrectedMs: jsonPercentilesOf(s.Uncorrected),
			Retries: s.Retries, Ejections: s.Ejections,
		},
		Checks:     make([]jsonVerdict, len(r.Checks)),
		Upstreams:  make([]jsonUpstream, len(r.Upstreams)),
		ProxyStats: orEmpty(r.ProxyStats),
		Outcomes:   outcomesJSON(r.Outcomes),
		Series:     seriesJSON(r.Series),
	}
	out.Summary.UpstreamAttempts, out.Summary.AttemptsOver, out.Summary.AttemptsFrom, out.Summary.RetryAmplification = attemptsJSONOf(s)
	if missingReceived(s) == "" {
		out.Summary.UpstreamReceived, out.Summary.DeliveredAmplification = ptr(s.UpstreamReceived), ptr(s.DeliveredAmplification)
	} else if s.ReceivedKnown {
		out.Summary.UpstreamReceived = ptr(s.UpstreamReceived)
	}
	for i, v := range r.Checks {
		out.Checks[i] = jsonVerdict{Check: v.Check, Passed: v.Passed, Observed: v.Observed, Required: v.Required}
	}
	for i, u := range r.Upstreams {
		out.Upstreams[i] = jsonUpstream{TLSHandshakes: u.TLSHandshakes, TLSHandshakeErrors: u.TLSHandshakeErrors,
			Service: u.Service, Instance: u.Instance, Address: u.Address, Requests: u.Requests,
			Statuses: orEmpty(u.Statuses), Resets: u.Resets, Applied: orEmpty(u.Applied),
			Canceled: u.Canceled, Hangs: u.Hangs, Truncated: u.Truncated, StreamResets: u.StreamResets, GoAways: u.GoAways,
			Received: u.Received, OK: u.OK}
		if c := u.Capacity; c != nil {
			out.Upstreams[i].Capacity = &jsonInstanceCapacity{Workers: c.Workers, Queue: c.Queue, BusyMs: ms(c.Busy), Queued: c.Queued,
				QueueWaitMs: ms(c.QueueWait), MaxQueueWaitMs: ms(c.MaxQueueWait), Rejected: c.Rejected, TimedOut: c.TimedOut}
		}
	}
	return out
}

func seriesJSON(s Series) jsonSeries {
	out := jsonSeries{BucketMs: ms(s.Bucket), Points: []jsonSeriesPoint{}}
	if s.RetriesFrom != "" {
		out.RetriesFrom = ptr(s.RetriesFrom)
	}
	for _, p := range s.Points {
		jp := jsonSeriesPoint{StartMs: ms(p.Start), Intended: p.Intended, Sent: p.Sent, Completed: p.Completed,
			StatusClasses: orEmpty(p.Classes), EjectionsActive: p.EjectionsActive, Latencies: p.Latencies,
			Upstream5xx: p.Upstream5xx, UpstreamFailed: p.UpstreamFailures}
		if s.RetriesFrom != "" {
			jp.Retries = ptr(p.Retries)
		}
		if p.Latencies > 0 {
			jp.LatencyMs = &jsonSeriesLat{P50: ms(p.Latency.P50), P99: ms(p.Latency.P99), Max: ms(p.Latency.Max)}
		}
		out.Points = append(out.Points, jp)
	}
	return out
}

func seriesOf(j jsonSeries) Series {
	s := Series{Bucket: dur(j.BucketMs)}
	if j.RetriesFrom != nil {
		s.RetriesFrom = *j.RetriesFrom
	}
	for _, jp := range j.Points {
		p := SeriesPoint{Start: dur(jp.StartMs), Intended: jp.Intended, Sent: jp.Sent, Completed: jp.Completed,
			Classes: jp.StatusClasses, EjectionsActive: jp.EjectionsActive, Latencies: jp.Latencies,
			Upstream5xx: jp.Upstream5xx, UpstreamFailures: jp.UpstreamFailed}
		if jp.Retries != nil {
			p.Retries = *jp.Retries
		}
		if l := jp.LatencyMs; l != nil {
			p.Latency = record.Percentiles{P50: dur(l.P50), P99: dur(l.P99), Max: dur(l.Max)}
		}
		s.Points = append(s.Points, p)
	}
	return s
}

// attemptsJSONOf returns a summary's upstream_attempts, attempts_over, attempts_from and
// retry_amplification, all null when not recorded.
func attemptsJSONOf(s Summary) (*uint64, *uint64, *string, *float64) {
	if missingAttempts(s) != "" {
		return nil, nil, nil, nil
	}
	return ptr(s.UpstreamAttempts), ptr(s.AttemptsOver), ptr(s.AttemptsFrom), ptr(s.RetryAmplification)
}

func jsonPercentilesOf(p record.Percentiles) jsonPercentiles {
	return jsonPercentiles{P50: ms(p.P50), P90: ms(p.P90), P99: ms(p.P99), P999: ms(p.P999), Max: ms(p.Max)}
}

// orEmpty makes a nil map an empty one, so that JSON shows {} rather than null.
func orEmpty[K comparable](m map[K]uint64) map[K]uint64 {
	if m == nil {
		return map[K]uint64{}
	}
	return m
}
