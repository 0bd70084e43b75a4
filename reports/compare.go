package reports

import (
	"bytes"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"
)

// WriteComparison writes two runs side by side, baseline then candidate, with the candidate's delta:
// requests, success rate, latency percentiles, retries, retry and delivered amplification, ejections,
// overflows, time to first ejection, recovery time, and each check's verdict in both (checks matched by
// their text). baseName and candName say where each run came from (e.g. their directories).
func WriteComparison(w io.Writer, base, cand Report, baseName, candName string) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "baseline:  %s — %s, seed %d, started %s, %s\n", baseName, base.Scenario, base.Seed, base.Started.UTC().Format(time.RFC3339), verdictWord(base))
	fmt.Fprintf(&b, "candidate: %s — %s, seed %d, started %s, %s\n", candName, cand.Scenario, cand.Seed, cand.Started.UTC().Format(time.RFC3339), verdictWord(cand))
	if base.Scenario != cand.Scenario {
		fmt.Fprintf(&b, "note: the runs are of different scenarios (%q vs %q)\n", base.Scenario, cand.Scenario)
	}
	b.WriteString("\n")
	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(t, "\tbaseline\tcandidate\tdelta\t\n")
	bs, cs := base.Summary, cand.Summary
	count := func(name string, x, y uint64) {
		fmt.Fprintf(t, "%s\t%d\t%d\t%s\t\n", name, x, y, countDelta(float64(x), float64(y)))
	}
	count("requests", bs.Requests, cs.Requests)
	count("errors", bs.Errors, cs.Errors)
	fmt.Fprintf(t, "success rate\t%s%%\t%s%%\t%s pp\t\n", formatPercent(bs.SuccessRate), formatPercent(cs.SuccessRate), signed(cs.SuccessRate-bs.SuccessRate))
	fmt.Fprintf(t, "achieved rate\t%s\t%s\t%s\t\n", rate(bs.AchievedRate), rate(cs.AchievedRate), relDelta(bs.AchievedRate, cs.AchievedRate, signed(cs.AchievedRate-bs.AchievedRate)+"/s"))
	for _, p := range []struct {
		name string
		x, y time.Duration
	}{
		{"p50", bs.Latency.P50, cs.Latency.P50}, {"p90", bs.Latency.P90, cs.Latency.P90}, {"p99", bs.Latency.P99, cs.Latency.P99},
		{"p99.9", bs.Latency.P999, cs.Latency.P999}, {"max", bs.Latency.Max, cs.Latency.Max},
	} {
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t\n", p.name, formatDuration(p.x), formatDuration(p.y), durDelta(p.x, p.y))
	}
	count("retries", bs.Retries, cs.Retries)
	ratio := func(name string, missing func(Summary) string, x, y float64) {
		bx, cy, delta := "n/a", "n/a", ""
		if missing(bs) == "" {
			bx = formatRatio(x)
		}
		if missing(cs) == "" {
			cy = formatRatio(y)
		}
		if missing(bs) == "" && missing(cs) == "" {
			delta = signed(y - x)
		}
		fmt.Fprintf(t, "%s\t%s\t%s\t%s\t\n", name, bx, cy, delta)
	}
	ratio("retry amplification", missingAttempts, bs.RetryAmplification, cs.RetryAmplification)
	ratio("delivered amplification", missingReceived, bs.DeliveredAmplification, cs.DeliveredAmplification)
	fmt.Fprintf(t, "attempts max\t%s\t%s\t\t\n", attemptsMax(base.Outcomes), attemptsMax(cand.Outcomes))
	count("ejections", bs.Ejections, cs.Ejections)
	count("overflows", base.Outcomes.Overflows(), cand.Outcomes.Overflows())
	bw, cw := base.Outcomes.Fault, cand.Outcomes.Fault
	if len(base.Outcomes.Windows) > 0 || len(cand.Outcomes.Windows) > 0 {
		fmt.Fprintf(t, "time to first ejection\t%s\t%s\t%s\t\n", ttfe(base.Outcomes), ttfe(cand.Outcomes),
			optDelta(bw.Ejected && cw.Ejected, bw.TimeToFirstEjection, cw.TimeToFirstEjection))
		br, cr := bw.Recovery, cw.Recovery
		fmt.Fprintf(t, "recovery time\t%s\t%s\t%s\t\n", recov(base.Outcomes), recov(cand.Outcomes),
			optDelta(br.Recovered && cr.Recovered, br.Time, cr.Time))
	}
	t.Flush()

	type pair struct{ base, cand *Verdict }
	var order []string
	checks := map[string]*pair{}
	for _, set := range []struct {
		vs   []Verdict
		cand bool
	}{{base.Checks, false}, {cand.Checks, true}} {
		for i := range set.vs {
			v := &set.vs[i]
			p := checks[v.Check]
			if p == nil {
				p = &pair{}
				checks[v.Check] = p
				order = append(order, v.Check)
			}
			if set.cand {
				p.cand = v
			} else {
				p.base = v
			}
		}
	}
	if len(order) > 0 {
		b.WriteString("\nchecks\n")
		t = tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(t, "  check\tbaseline\tcandidate\t\n")
		for _, name := range order {
			p := checks[name]
			change := ""
			switch {
			case p.base == nil || p.cand == nil:
				change = "only in one run"
			case p.base.Passed && !p.cand.Passed:
				change = "regressed: " + p.cand.Observed
			case !p.base.Passed && p.cand.Passed:
				change = "fixed"
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\n", name, verdictOf(p.base), verdictOf(p.cand), change)
		}
		t.Flush()
	}
	fmt.Fprintf(&b, "\nverdict: baseline %s, candidate %s\n", verdictWord(base), verdictWord(cand))
	_, err := w.Write(b.Bytes())
	return err
}

func verdictWord(r Report) string {
	if r.Passed {
		return "PASS"
	}
	return "FAIL"
}

func verdictOf(v *Verdict) string {
	if v == nil {
		return "-"
	}
	return passFail(v.Passed)
}

// signed formats a delta with its sign: "+1.25", "-3", "+0".
func signed(x float64) string {
	s := formatSig(x)
	if x >= 0 || s == "0" {
		return "+" + s
	}
	return s
}

// relDelta appends the relative change to an absolute delta: "+12 (+4.1%)".
func relDelta(x, y float64, abs string) string {
	if x == 0 {
		return abs
	}
	return abs + " (" + signed(100*(y-x)/x) + "%)"
}

func countDelta(x, y float64) string {
	return relDelta(x, y, signed(y-x))
}

func durDelta(x, y time.Duration) string {
	d := y - x
	s := "+" + formatDelay(d)
	if d < 0 {
		s = "-" + formatDelay(-d)
	}
	return relDelta(float64(x), float64(y), s)
}

func optDelta(ok bool, x, y time.Duration) string {
	if !ok {
		return ""
	}
	return durDelta(x, y)
}

func attemptsMax(o Outcomes) string {
	if o.Attempts.Known == 0 {
		return "n/a"
	}
	return strconv.Itoa(o.Attempts.Max)
}

func ttfe(o Outcomes) string {
	switch {
	case len(o.Windows) == 0:
		return "n/a"
	case !o.Fault.Ejected:
		return wordNoEjection
	}
	return formatDelay(o.Fault.TimeToFirstEjection)
}

func recov(o Outcomes) string {
	if len(o.Windows) == 0 {
		return "n/a"
	}
	return recovery(o.Fault.Recovery)
}
