package main

import (
	"fmt"
	"io"
	"text/tabwriter"
)

// report prints the median [min–max] of the rounds, one column per kind of run, and says whether the
// reload runs held: no failed request, every reload counted and seen in effect, no invalid bootstrap
// applied, the listener's socket kept.
func report(w io.Writer, o options, rate int, caps, capCPU []float64, results map[string][]runResult) bool {
	if len(caps) > 0 {
		fmt.Fprintf(w, "== capacity (wrk -t1 -c%d, closed loop): %s req/s, the proxy using %s of its core; open loop at %.0f%%: %d req/s\n",
			o.connections, spread(caps, "%.0f"), spread(capCPU, "%.2f"), 100*o.share, rate)
		if m := median(capCPU); m < 0.9 {
			fmt.Fprintf(w, "note: at capacity the proxy's core was %.0f%% busy: CPU %s (wrk and the upstreams) was the bottleneck, "+
				"so the rate is %.0f%% of the setup's capacity, not of the proxy's alone\n", 100*m, o.loadCPU, 100*o.share)
		}
	}
	fmt.Fprintf(w, "== results at %d req/s: median [min–max] of %d rounds; latency from the intended send time (coordinated-omission corrected)\n",
		rate, o.rounds)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\t%s\t%s\t%s\n", kindBaseline, kindReloads, fmt.Sprintf("reloads, 1 in %d invalid", o.invalidEvery))
	row := func(name, format string, f func(runResult) float64) {
		fmt.Fprint(tw, name)
		for _, k := range kinds {
			var xs []float64
			for _, r := range results[k] {
				xs = append(xs, f(r))
			}
			fmt.Fprintf(tw, "\t%s", spread(xs, format))
		}
		fmt.Fprintln(tw)
	}
	row("requests sent", "%.0f", func(r runResult) float64 { return float64(r.load.Requests) })
	row("answered 2xx", "%.0f", func(r runResult) float64 { return float64(r.load.answered()) })
	row("failed (non-2xx, transport errors)", "%.0f", func(r runResult) float64 { return float64(r.load.failed()) })
	row("achieved rate, req/s", "%.0f", func(r runResult) float64 { return r.load.AchievedRate })
	row("p50, ms", "%.3f", func(r runResult) float64 { return r.load.Latency.P50 })
	row("p99, ms", "%.2f", func(r runResult) float64 { return r.load.Latency.P99 })
	row("p99.9, ms", "%.2f", func(r runResult) float64 { return r.load.Latency.P999 })
	row("max, ms", "%.1f", func(r runResult) float64 { return r.load.Latency.Max })
	row("reloads sent (SIGHUP)", "%.0f", func(r runResult) float64 { return float64(r.sent) })
	row("  applied (config_reload_success)", "%.0f", func(r runResult) float64 { return float64(r.applied) })
	row("  refused (config_reload_failed)", "%.0f", func(r runResult) float64 { return float64(r.refused) })
	row("  seen in effect by the next request", "%.0f", func(r runResult) float64 { return float64(r.seen) })
	row("  SIGHUP to counted, median ms", "%.1f", func(r runResult) float64 { return median(r.counted) })
	row("requests served on config A", "%.0f", func(r runResult) float64 { return float64(r.onA) })
	row("requests served on config B", "%.0f", func(r runResult) float64 { return float64(r.onB) })
	row("clusters replaced (cluster_modified)", "%.0f", func(r runResult) float64 { return float64(r.modified) })
	row("listeners added (listener_added)", "%.0f", func(r runResult) float64 { return float64(r.listenerAdded) })
	row("proxy CPU, share of its core", "%.2f", func(r runResult) float64 { return r.cpu })
	_ = tw.Flush()

	ok := true
	var failed, unseen, probeFailed, invalidApplied, moved, notHeld int
	for _, k := range kinds {
		for _, r := range results[k] {
			if !r.load.RateHeld {
				notHeld++
			}
			if !r.socketSame || r.listenerAdded != 0 || r.draining != 0 {
				moved++
			}
			if k == kindBaseline {
				continue
			}
			failed += int(r.load.failed())
			unseen += r.unseen
			probeFailed += r.probeFailed
			invalidApplied += r.invalidApplied
			if r.applied+r.refused < r.sent {
				unseen++ // the proxy's own poll of the file may count one more: never fewer
			}
		}
	}
	fmt.Fprintf(w, "listener socket: %s\n", map[bool]string{true: "the same inode before and after every run; no listener added or draining",
		false: fmt.Sprintf("CHANGED in %d runs", moved)}[moved == 0])
	if notHeld > 0 {
		fmt.Fprintf(w, "note: the generator did not hold the rate in %d runs (CPU %s busy?): figures are at a lower rate\n", notHeld, o.loadCPU)
	}
	for _, c := range []struct {
		n    int
		what string
	}{
		{failed, "failed requests during reload runs"},
		{unseen, "reloads not counted, or not seen in effect by the next request"},
		{probeFailed, "probe requests that failed"},
		{invalidApplied, "invalid bootstraps applied"},
		{moved, "runs where the listener's socket changed or a listener was added or drained"},
	} {
		if c.n > 0 {
			ok = false
			fmt.Fprintf(w, "FAIL: %d %s\n", c.n, c.what)
		}
	}
	if ok {
		fmt.Fprintln(w, "PASS: zero failed requests over every reload run; every reload counted and seen in effect; every invalid bootstrap refused")
	}
	return ok
}
