package reports

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"text/tabwriter"
	"time"
)

// WriteTerminal writes a compact summary for people: the load and whether its rate held (a loud warning
// when not), outcomes, latency percentiles corrected and uncorrected, what the proxy did, what each
// upstream instance received, each check with its verdict, and a final PASS or FAIL line.
func WriteTerminal(w io.Writer, r Report) error {
	var b bytes.Buffer
	s := r.Summary
	fmt.Fprintf(&b, "meshproof report: %s", r.Scenario)
	if r.File != "" {
		fmt.Fprintf(&b, " (%s)", r.File)
	}
	fmt.Fprintf(&b, ", seed %d, started %s\n", r.Seed, r.Started.Format(time.RFC3339))

	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(t, "load\t%d requests in %s: achieved %s of target %s, max send lag %s\n",
		s.Requests, s.Duration, rate(s.AchievedRate), rate(s.TargetRate), formatDuration(s.MaxSendLag))
	fmt.Fprintf(t, "success\t%s%% (%d ok, %d failed)\n", formatFloat(s.SuccessRate, 3), s.Successes, s.Errors)
	fmt.Fprintf(t, "statuses\t%s\n", counts(s.StatusCodes))
	fmt.Fprintf(t, "errors\t%s\n", counts(s.ErrorKinds))
	fmt.Fprintf(t, "latency\t%s\t(corrected: from intended send)\n", percentiles(s.Latency))
	fmt.Fprintf(t, "uncorrected\t%s\t(from actual send)\n", percentiles(s.Uncorrected))
	fmt.Fprintf(t, "proxy\tretries %d, ejections %d, upstream requests %d, retry amplification %s\n",
		s.Retries, s.Ejections, s.UpstreamRequests, formatFloat(s.RetryAmplification, 3))
	t.Flush()
	if !s.RateHeld {
		pct := 0.0
		if s.TargetRate > 0 {
			pct = 100 * s.AchievedRate / s.TargetRate
		}
		fmt.Fprintf(&b, "!!! RATE NOT HELD: achieved %s of target %s (%s%%), max send lag %s.\n"+
			"!!! The load generator fell behind: the system saw less load than planned. Corrected latencies include the lag.\n",
			rate(s.AchievedRate), rate(s.TargetRate), formatFloat(pct, 1), formatDuration(s.MaxSendLag))
	}

	if len(r.Upstreams) > 0 {
		b.WriteString("upstreams\n")
		for _, u := range r.Upstreams {
			fmt.Fprintf(t, "  %s/%d\t%s\trequests %d\tstatuses %s\tresets %d\tfaults %s\n",
				u.Service, u.Instance, u.Address, u.Requests, counts(u.Statuses), u.Resets, counts(u.Applied))
		}
		t.Flush()
	}
	if len(r.Checks) > 0 {
		b.WriteString("checks\n")
		for _, v := range r.Checks {
			fmt.Fprintf(t, "  %s\t%s\t%s, required %s\n", passFail(v.Passed), v.Check, v.Observed, v.Required)
		}
		t.Flush()
	}
	switch failed := r.failed(); {
	case len(r.Checks) == 0:
		b.WriteString("PASS: no checks\n")
	case failed == 0:
		fmt.Fprintf(&b, "PASS: all %d checks held\n", len(r.Checks))
	default:
		fmt.Fprintf(&b, "FAIL: %d of %d checks failed\n", failed, len(r.Checks))
	}
	_, err := w.Write(b.Bytes())
	return err
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func rate(x float64) string { return formatFloat(x, 1) + "/s" }

func percentiles(p Percentiles) string {
	return fmt.Sprintf("p50 %s  p90 %s  p99 %s  p99.9 %s  max %s", formatDuration(p.P50), formatDuration(p.P90),
		formatDuration(p.P99), formatDuration(p.P999), formatDuration(p.Max))
}

// counts formats a map of counts in key order, "200: 95, 503: 5", or "none".
func counts[K int | string](m map[K]uint64) string {
	if len(m) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(m))
	for _, k := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, fmt.Sprintf("%v: %d", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
