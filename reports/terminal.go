package reports

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// WriteTerminal writes a compact summary for people: the load and whether its rate held (a loud warning
// when not), outcomes, latency percentiles corrected and uncorrected, what the proxy did, what each
// upstream instance received, the phases, fault windows and configuration changes when the run has some,
// the edge and service tables when the run has a call graph, each check with its verdict, and a final
// PASS or FAIL line. Verdicts are coloured when w is a terminal (and NO_COLOR is unset); otherwise the
// text is plain.
func WriteTerminal(w io.Writer, r Report) error {
	var b bytes.Buffer
	paint := painter(IsTerminal(w))
	s := r.Summary
	fmt.Fprintf(&b, "meshproof report: %s", r.Scenario)
	if r.File != "" {
		fmt.Fprintf(&b, " (%s)", r.File)
	}
	fmt.Fprintf(&b, ", seed %d, started %s\n", r.Seed, r.Started.Format(time.RFC3339))
	if r.Partial != "" {
		fmt.Fprintf(&b, "%s\n", paint(red, "PARTIAL RUN: "+r.Partial+" — what was recorded until then"))
	}

	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	fmt.Fprintf(t, "load\t%d requests in %s: achieved %s of target %s, max send lag %s\n",
		s.Requests, s.Duration, rate(s.AchievedRate), rate(s.TargetRate), formatDuration(s.MaxSendLag))
	fmt.Fprintf(t, "success\t%s%% (%d ok, %d failed)\n", formatPercent(s.SuccessRate), s.Successes, s.Errors)
	fmt.Fprintf(t, "statuses\t%s\n", counts(s.StatusCodes))
	fmt.Fprintf(t, "transport errors\t%s\n", counts(s.ErrorKinds))
	if len(s.GRPCStatuses) > 0 {
		fmt.Fprintf(t, "grpc statuses\t%s\n", grpcCounts(s.GRPCStatuses))
	}
	fmt.Fprintf(t, "latency\t%s\t(corrected: from intended send)\n", percentiles(s.Latency))
	fmt.Fprintf(t, "uncorrected\t%s\t(from actual send)\n", percentiles(s.Uncorrected))
	fmt.Fprintf(t, "proxy\tretries %d, ejections %d\n", s.Retries, s.Ejections)
	fmt.Fprintf(t, "upstream\tretry amplification %s\n", retryAmplificationText(s))
	fmt.Fprintf(t, "\tdelivered amplification %s\n", deliveredAmplificationText(s))
	t.Flush()
	if !s.RateHeld {
		pct := 0.0
		if s.TargetRate > 0 {
			pct = 100 * s.AchievedRate / s.TargetRate
		}
		b.WriteString(paint(yellow, fmt.Sprintf("!!! RATE NOT HELD: achieved %s of target %s (%s%%), max send lag %s.\n"+
			"!!! The load generator fell behind: the system saw less load than planned. Corrected latencies include the lag.",
			rate(s.AchievedRate), rate(s.TargetRate), formatPercent(pct), formatDuration(s.MaxSendLag))) + "\n")
	}
	writeTerminalOutcomes(&b, t, r.Outcomes)
	writeTerminalGraph(&b, r.Outcomes)

	if len(r.Upstreams) > 0 {
		b.WriteString("upstreams\n")
		for _, u := range r.Upstreams {
			fmt.Fprintf(t, "  %s/%d\t%s\trequests %d\tstatuses %s\tresets %d\tfaults %s%s\n",
				u.Service, u.Instance, u.Address, u.Requests, counts(u.Statuses), u.Resets, counts(u.Applied), otherEnds(u))
		}
		t.Flush()
	}
	if len(r.Checks) > 0 {
		b.WriteString("checks\n")
		for _, v := range r.Checks {
			// Both colours add the same number of bytes, so the columns stay aligned.
			fmt.Fprintf(t, "  %s\t%s\t%s, required %s\n", paint(verdictColor(v.Passed), passFail(v.Passed)), v.Check, v.Observed, v.Required)
		}
		t.Flush()
	}
	switch failed := r.failed(); {
	case r.Partial != "":
		fmt.Fprintf(&b, "%s: %s; %d of %d checks failed on what was recorded\n", paint(red, "INCOMPLETE"), r.Partial, failed, len(r.Checks))
	case len(r.Checks) == 0:
		b.WriteString("PASS: no checks\n")
	case failed == 0:
		fmt.Fprintf(&b, "%s: all %d checks held\n", paint(green, "PASS"), len(r.Checks))
	default:
		fmt.Fprintf(&b, "%s: %d of %d checks failed\n", paint(red, "FAIL"), failed, len(r.Checks))
	}
	_, err := w.Write(b.Bytes())
	return err
}

// ANSI colours for a terminal.
const (
	red    = "\x1b[31m"
	green  = "\x1b[32m"
	yellow = "\x1b[33m"
	reset  = "\x1b[0m"
)

// IsTerminal reports whether w is a character device (a terminal) and NO_COLOR is unset or empty.
func IsTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	if !ok || os.Getenv("NO_COLOR") != "" {
		return false
	}
	fi, err := f.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}

// painter returns a function colouring text when on, and leaving it plain otherwise.
func painter(on bool) func(color, text string) string {
	return func(color, text string) string {
		if !on {
			return text
		}
		return color + text + reset
	}
}

func verdictColor(ok bool) string {
	if ok {
		return green
	}
	return red
}

// writeTerminalOutcomes writes the phases, fault windows, configuration changes, attempts and overflows,
// when the run has them.
func writeTerminalOutcomes(b *bytes.Buffer, t *tabwriter.Writer, o Outcomes) {
	if o.Attempts.Known > 0 {
		fmt.Fprintf(b, "attempts  per request %s (max %d)%s\n", distribution(o.Attempts.Distribution),
			o.Attempts.Max, attemptsCoverage(o.Attempts))
	}
	if o.Overflows() > 0 {
		fmt.Fprintf(b, "overflows %d (pending %d, retry %d)\n", o.Overflows(), o.PendingOverflows, o.RetryOverflows)
	}
	if slices.ContainsFunc(o.Phases, PhaseOutcome.Shown) {
		b.WriteString("phases\n")
		for _, p := range o.Phases {
			s := p.Summary
			if !p.Shown() {
				continue
			}
			if s.Requests == 0 {
				fmt.Fprintf(t, "  %s\t%s\tno requests\n", p.Scope, formatSpans(p.Spans))
				continue
			}
			fmt.Fprintf(t, "  %s\t%s\trequests %d\tsuccess %s%%\tp50 %s\tp99 %s\tmax %s\n", p.Scope, formatSpans(p.Spans),
				s.Requests, formatPercent(s.SuccessRate), formatDuration(s.Latency.P50), formatDuration(s.Latency.P99),
				formatDuration(s.Latency.Max))
		}
		t.Flush()
	}
	if len(o.Windows) > 0 {
		b.WriteString("faults\n")
		for _, w := range o.Windows {
			ejection := "first ejection " + firstEjection(w)
			if !w.Ejected {
				ejection = wordNoEjection
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\t%s\t%s\trecovery %s\n", w.Name, windowTarget(w.Window), w.Window.Kind,
				windowWhen(w), ejection, recovery(w.Recovery))
		}
		t.Flush()
	}
	if len(o.Changes) > 0 {
		b.WriteString("configuration changes\n")
		for _, c := range o.Changes {
			detail := ""
			if d := shortDetail(c.Change.Detail); d != "" {
				detail = "\t" + d
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\tat %s\t%s\tanswered after %s%s\n", c.Change.Name, c.Change.Proxy, c.Change.What,
				formatOffset(c.Change.Start), changeOutcomeText(c), changeAnsweredAfter(c), detail)
		}
		t.Flush()
	}
	if len(o.Hosts) > 0 {
		b.WriteString("ejections\n")
		for _, h := range o.Hosts {
			parts := make([]string, len(h.Ejections))
			for i, e := range h.Ejections {
				parts[i] = formatOffset(e.Start) + "–"
				if !e.Open {
					parts[i] += formatOffset(e.End)
				}
				if e.Reason != "" {
					parts[i] += " (" + e.Reason + ")"
				}
			}
			fmt.Fprintf(t, "  %s\t%s\t%s\n", h.Where(), h.Host, strings.Join(parts, ", "))
		}
		t.Flush()
	}
}

// otherEnds lists the ways an instance's requests ended besides a status or a reset, when any did:
// "\tcanceled 3, hangs 1" (canceled: the proxy or its client gave up first, e.g. a per-try timeout).
func otherEnds(u record.UpstreamRecord) string {
	var parts []string
	for _, e := range []struct {
		name string
		n    uint64
	}{{"canceled", u.Canceled}, {"hangs", u.Hangs}, {"truncated", u.Truncated}, {"stream resets", u.StreamResets}, {"goaways", u.GoAways}} {
		if e.n > 0 {
			parts = append(parts, fmt.Sprintf("%s %d", e.name, e.n))
		}
	}
	if len(parts) == 0 {
		return ""
	}
	return "\t" + strings.Join(parts, ", ")
}

// windowTarget shows what a fault window applied to: "checkout/[2 3]" or "checkout/*".
func windowTarget(w record.FaultWindow) string {
	if len(w.Instances) == 0 {
		return w.Service + "/*"
	}
	parts := make([]string, len(w.Instances))
	for i, n := range w.Instances {
		parts[i] = strconv.Itoa(n)
	}
	return w.Service + "/" + strings.Join(parts, ",")
}

// windowWhen shows when a fault window was active: "1s–3s", and a flapping rule's down periods,
// "1s–6s, down 5×: 1s–1.4s, 2.2s–2.6s, 3.4s–3.8s, …".
func windowWhen(w WindowOutcome) string {
	s := formatSpans([]Span{w.Span})
	if len(w.Down) == 0 {
		return s
	}
	spans := make([]Span, 0, 3)
	for _, d := range w.Down[:min(len(w.Down), 3)] {
		spans = append(spans, d.Span)
	}
	s += fmt.Sprintf(", down %d×: %s", len(w.Down), formatSpans(spans))
	if len(w.Down) > 3 {
		s += ", …"
	}
	return s
}

// downFirstEjection shows the first ejection credited to a down period: "35.69ms after it started
// (inventory/1)", or "no ejection".
func downFirstEjection(d DownOutcome) string {
	if !d.Ejected && len(d.EjectedAtStart) > 0 {
		return wordNoEjection + ": " + strings.Join(d.EjectedAtStart, ", ") + " already ejected when it started"
	}
	if !d.Ejected {
		return wordNoEjection
	}
	return fmt.Sprintf("%s after it started (%s)", formatDelay(d.TimeToFirstEjection), d.FirstEjection.Host)
}

func firstEjection(w WindowOutcome) string {
	if !w.Ejected {
		return wordNoEjection
	}
	return fmt.Sprintf("%s after %s started (%s)", formatDelay(w.TimeToFirstEjection), w.EjectionWindow, w.FirstEjection.Host)
}

func recovery(r Recovery) string {
	switch {
	case !r.Measured:
		return "not measured"
	case !r.Recovered:
		return "not recovered"
	}
	return formatDelay(r.Time)
}

func passFail(ok bool) string {
	if ok {
		return "PASS"
	}
	return "FAIL"
}

func percentiles(p record.Percentiles) string {
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
