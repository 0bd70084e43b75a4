package plan

import (
	"cmp"
	"context"
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

// Tracker accumulates a run's samples as they finish, for its progress reports.
type Tracker struct {
	mu        sync.Mutex
	hist      *record.LatencyHist
	completed uint64
	errors    uint64
}

// NewTracker returns a tracker with no samples.
func NewTracker() *Tracker { return &Tracker{hist: record.NewLatencyHist()} }

// Sample takes one finished sample (load.Config.OnSample).
func (p *Tracker) Sample(s record.Sample) {
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

// Snapshot is the progress at elapsed of planned, with the target proxy's stats.
func (p *Tracker) Snapshot(elapsed, planned time.Duration, stats map[string]uint64) Progress {
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

// Report calls opts.Progress every opts.ProgressInterval (default 1s) from started, with the proxy
// stats that stats returns, skipping ticks at or past the planned end (the final report says that one: a
// tick there printed the last line twice). The returned finish, called once the load has run, stops the
// ticks, waits until the last is out, and makes the final report. Without opts.Progress it does nothing.
func (p *Tracker) Report(ctx context.Context, opts Options, started time.Time, planned time.Duration, stats func() map[string]uint64) (finish func()) {
	if opts.Progress == nil {
		return func() {}
	}
	ctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	interval := cmp.Or(opts.ProgressInterval, time.Second)
	go func() {
		defer close(done)
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-t.C:
				if elapsed := time.Since(started); elapsed < planned {
					opts.Progress(p.Snapshot(elapsed, planned, stats()))
				}
			case <-ctx.Done():
				return
			}
		}
	}()
	return func() {
		stop()
		<-done // the ticker's last report is out before the final one
		opts.Progress(p.Snapshot(time.Since(started), planned, stats()))
	}
}
