package reports_test

// Issue #13, "What a reader needs": report.json's time series. Expected values worked out by hand.

import (
	"encoding/json"
	"os"
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("the time series in report.json (#13)", func() {
	// A 400ms run: buckets of 100ms (runs under 10s), [0,100) [100,200) [200,300) [300,400).
	//   s1 intended 0,     sent 0,     10ms,  200,   1 attempt  → completes at 10ms  (bucket 0)
	//   s2 intended 50ms,  sent 120ms, 150ms, 503,   3 attempts → completes at 200ms (bucket 2), sent in bucket 1
	//   s3 intended 150ms, sent 150ms, 30ms,  reset, 2 attempts → completes at 180ms (bucket 1)
	//   s4 intended 250ms, sent 250ms, 5ms,   200,   1 attempt  → completes at 255ms (bucket 2)
	//   s5 intended 350ms, sent 350ms, cancelled when the run stopped, attempts unknown: not completed, no latency
	// Ejections: inv/0 [120ms, 180ms) (bucket 1 only), inv/1 from 310ms, never un-ejected (bucket 3).
	// The instances' faults: a 503 abort at 60ms (bucket 0: upstream_5xx 1), a reset at 160ms (bucket 1:
	// upstream_failures 1), a latency at 170ms and a 429 abort at 260ms (neither a 5xx nor a failure).
	rec := func() *record.Record {
		r := &record.Record{TargetRate: 12.5, Duration: 400 * ms}
		r.Samples = []record.Sample{
			{Seq: 1, Intended: 0, Sent: 0, Latency: 10 * ms, Status: 200, Attempts: 1},
			{Seq: 2, Intended: 50 * ms, Sent: 120 * ms, Latency: 150 * ms, Status: 503, Attempts: 3},
			{Seq: 3, Intended: 150 * ms, Sent: 150 * ms, Latency: 30 * ms, Error: record.ErrReset, Attempts: 2},
			{Seq: 4, Intended: 250 * ms, Sent: 250 * ms, Latency: 5 * ms, Status: 200, Attempts: 1},
			{Seq: 5, Intended: 350 * ms, Sent: 350 * ms, Latency: 20 * ms, Error: record.ErrCanceled},
		}
		r.Events = []record.FaultEvent{{At: 60 * ms, Kind: "abort", Detail: "503"}, {At: 160 * ms, Kind: "reset", Detail: "rst"},
			{At: 170 * ms, Kind: "latency", Detail: "50ms"}, {At: 260 * ms, Kind: "abort", Detail: "429"}}
		r.ProxyEvents = []record.ProxyEvent{
			{At: 120 * ms, Kind: record.ProxyEjected, Host: "inv/0"}, {At: 180 * ms, Kind: record.ProxyUnejected, Host: "inv/0"},
			{At: 310 * ms, Kind: record.ProxyEjected, Host: "inv/1"},
		}
		return r
	}

	It("counts per bucket what was intended, sent, completed, answered, retried and ejected", func() {
		r := reports.NewReport(rec(), nil)
		s := r.Series
		Expect(s.Bucket).To(Equal(100 * ms))
		Expect(s.RetriesFrom).To(Equal(reports.RetriesFromSamples), "no retry events: from the attempt counts")
		Expect(s.Points).To(HaveLen(4))
		type row struct {
			intended, sent, completed uint64
			classes                   map[string]uint64
			retries                   uint64
			ejected                   int
			latencies                 uint64
			lat                       record.Percentiles
			up5xx, upFailed           uint64
		}
		got := make([]row, len(s.Points))
		for i, p := range s.Points {
			got[i] = row{p.Intended, p.Sent, p.Completed, p.Classes, p.Retries, p.EjectionsActive, p.Latencies, p.Latency, p.Upstream5xx, p.UpstreamFailures}
		}
		Expect(got).To(Equal([]row{
			// bucket 0: s1, s2 intended; s1 sent and completed; retries (1−1)+(3−1) = 2; latencies {10, 150}:
			// p50 rank ⌈0.5·2⌉ = 1 → 10ms, p99 rank ⌈0.99·2⌉ = 2 → 150ms.
			{2, 1, 1, map[string]uint64{"2xx": 1, "5xx": 1}, 2, 0, 2, record.Percentiles{P50: 10 * ms, P99: 150 * ms, Max: 150 * ms}, 1, 0},
			// bucket 1: s3 intended; s2, s3 sent; s3 completed (180ms); 1 retry; inv/0 ejected.
			{1, 2, 1, map[string]uint64{"error": 1}, 1, 1, 1, record.Percentiles{P50: 30 * ms, P99: 30 * ms, Max: 30 * ms}, 0, 1},
			// bucket 2: s4; s2 (200ms) and s4 (255ms) completed; inv/0 came back at 180ms.
			{1, 1, 2, map[string]uint64{"2xx": 1}, 0, 0, 1, record.Percentiles{P50: 5 * ms, P99: 5 * ms, Max: 5 * ms}, 0, 0},
			// bucket 3: s5, cancelled: intended and sent, never completed, no latency; inv/1 ejected.
			{1, 1, 0, map[string]uint64{"error": 1}, 0, 1, 0, record.Percentiles{}, 0, 0},
		}))
	})

	It("takes retries from the proxy's retry events when it emitted them", func() {
		r := rec()
		r.ProxyEvents = append(r.ProxyEvents, record.ProxyEvent{At: 60 * ms, Kind: record.ProxyRetry}, record.ProxyEvent{At: 260 * ms, Kind: record.ProxyRetry})
		s := reports.NewReport(r, nil).Series
		Expect(s.RetriesFrom).To(Equal(reports.RetriesFromEvents))
		retries := make([]uint64, len(s.Points))
		for i, p := range s.Points {
			retries[i] = p.Retries
		}
		Expect(retries).To(Equal([]uint64{1, 0, 1, 0}), "one event at 60ms, one at 260ms")
	})

	It("writes the series to report.json and reads it back", func() {
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, reports.NewReport(rec(), nil))).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		var m map[string]any
		Expect(json.Unmarshal(data, &m)).To(Succeed())
		series := m["series"].(map[string]any)
		Expect(series).To(HaveKeyWithValue("bucket_ms", 100.0))
		Expect(series).To(HaveKeyWithValue("retries_from", "samples"))
		points := series["points"].([]any)
		Expect(points).To(HaveLen(4))
		Expect(points[0]).To(Equal(map[string]any{"start_ms": 0.0, "intended": 2.0, "sent": 1.0, "completed": 1.0,
			"status_classes": map[string]any{"2xx": 1.0, "5xx": 1.0}, "retries": 2.0, "ejections_active": 0.0, "latencies": 2.0, "upstream_5xx": 1.0, "upstream_failures": 0.0,
			"latency_ms": map[string]any{"p50": 10.0, "p99": 150.0, "max": 150.0}}))
		Expect(points[3]).To(HaveKeyWithValue("latency_ms", BeNil()))

		back, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Series.Points[1].Sent).To(BeEquivalentTo(2))
		Expect(back.Series.Points[0].Latency.P99).To(Equal(150 * ms))
	})
})
