package live

import (
	"sync"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Progress is a run's state while its load runs, for a live status line.
type Progress struct {
	Elapsed   time.Duration
	Planned   time.Duration
	Completed uint64  // requests finished
	Errors    uint64  // requests that failed (transport error, 4xx or 5xx)
	Rate      float64 // completed requests per second so far
	P99       time.Duration
	Retries   uint64 // the target proxy's upstream_rq_retry so far
	Ejections uint64 // hosts ejected right now (outlier_detection.ejections_active)
}

// progress accumulates samples as they finish and reports on a ticker.
type progress struct {
	mu        sync.Mutex
	hist      *record.LatencyHist
	completed uint64
	errors    uint64
}

func newProgress() *progress { return &progress{hist: record.NewLatencyHist()} }

func (p *progress) sample(s record.Sample) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.completed++
	if !s.OK() {
		p.errors++
	}
	if s.Error != record.ErrCanceled {
		p.hist.Record(s.Latency)
	}
}

func (p *progress) snapshot(elapsed, planned time.Duration, stats map[string]uint64) Progress {
	p.mu.Lock()
	defer p.mu.Unlock()
	out := Progress{Elapsed: elapsed, Planned: planned, Completed: p.completed, Errors: p.errors}
	if elapsed > 0 {
		out.Rate = float64(p.completed) / elapsed.Seconds()
	}
	if p.hist.Count() > 0 {
		out.P99 = p.hist.Quantile(0.99)
	}
	for name, v := range stats {
		switch {
		case hasSuffix(name, ".upstream_rq_retry"):
			out.Retries += v
		case hasSuffix(name, ".outlier_detection.ejections_active"):
			out.Ejections += v
		}
	}
	return out
}

func hasSuffix(s, suffix string) bool {
	return len(s) >= len(suffix) && s[len(s)-len(suffix):] == suffix
}
