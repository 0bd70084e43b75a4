package reports

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"time"
)

// WriteMarkdown writes summary.md: a GitHub-flavoured Markdown summary fit for a CI job summary
// ($GITHUB_STEP_SUMMARY): the verdict, a table of the checks (observed vs required), the key numbers, the
// fault windows, the configuration changes, a table per phase, and the edge and service tables when the
// run has a call graph.
func WriteMarkdown(w io.Writer, r Report) error {
	var b bytes.Buffer
	s, o := r.Summary, r.Outcomes
	failed := r.failed()
	verdict := "✅ PASS"
	switch {
	case failed > 0:
		verdict = fmt.Sprintf("❌ FAIL: %d of %d checks failed", failed, len(r.Checks))
	case len(r.Checks) == 0:
		verdict += ": no checks"
	default:
		verdict += fmt.Sprintf(": all %d checks held", len(r.Checks))
	}
	if r.Partial != "" {
		verdict = "⚠️ PARTIAL RUN: " + r.Partial
	}
	fmt.Fprintf(&b, "## meshproof: %s — %s\n\n", mdCell(r.Scenario), verdict)
	var facts []string
	if r.File != "" {
		facts = append(facts, "`"+mdCode(r.File)+"`")
	}
	facts = append(facts, fmt.Sprintf("seed %d", r.Seed))
	if !r.Started.IsZero() {
		facts = append(facts, "started "+r.Started.UTC().Format(time.RFC3339))
	}
	facts = append(facts, fmt.Sprintf("%d requests in %s at %s (target %s, max send lag %s)", s.Requests, s.Duration,
		rate(s.AchievedRate), rate(s.TargetRate), formatDuration(s.MaxSendLag)))
	b.WriteString(strings.Join(facts, " · ") + "\n\n")
	if !s.RateHeld {
		fmt.Fprintf(&b, "> [!WARNING]\n> **Rate not held**: achieved %s of target %s, max send lag %s. The system saw less load than planned.\n\n",
			rate(s.AchievedRate), rate(s.TargetRate), formatDuration(s.MaxSendLag))
	}

	if len(r.Checks) > 0 {
		b.WriteString("### Checks\n\n| | check | observed | required |\n|---|---|---|---|\n")
		for _, v := range r.Checks {
			mark := "✅"
			if !v.Passed {
				mark = "❌"
			}
			fmt.Fprintf(&b, "| %s | `%s` | %s | %s |\n", mark, mdCode(v.Check), mdCell(v.Observed), mdCell(v.Required))
		}
		b.WriteString("\n")
	}

	b.WriteString("### Key numbers\n\n| | |\n|---|---|\n")
	row := func(k, v string) { fmt.Fprintf(&b, "| %s | %s |\n", k, mdCell(v)) }
	row("requests", fmt.Sprintf("%d (%d ok, %d failed)", s.Requests, s.Successes, s.Errors))
	row("success rate", formatPercent(s.SuccessRate)+"%")
	row("latency (corrected)", percentiles(s.Latency))
	row("latency (uncorrected)", percentiles(s.Uncorrected))
	row("status codes", counts(s.StatusCodes))
	row("transport errors", counts(s.ErrorKinds))
	if len(s.GRPCStatuses) > 0 {
		row("gRPC statuses", grpcCounts(s.GRPCStatuses))
	}
	row("retries", fmt.Sprintf("%d", s.Retries))
	row("retry amplification", retryAmplificationText(s))
	row("delivered amplification", deliveredAmplificationText(s))
	if o.Attempts.Known > 0 {
		row("attempts per request", fmt.Sprintf("%s (max %d)%s", distribution(o.Attempts.Distribution), o.Attempts.Max, attemptsCoverage(o.Attempts)))
	} else {
		row("attempts per request", "not recorded")
	}
	row("ejections", fmt.Sprintf("%d", s.Ejections))
	row("breaker overflows", fmt.Sprintf("%d (pending %d, retry %d)", o.Overflows(), o.PendingOverflows, o.RetryOverflows))
	if o.MTLS != nil {
		row("mutual TLS", mtlsText(o.MTLS))
	}
	if len(o.Windows) > 0 {
		row("time to first ejection", firstEjection(o.Fault))
		row("recovery time", recovery(o.Fault.Recovery))
	}
	b.WriteString("\n")

	if len(o.Windows) > 0 {
		b.WriteString("### Fault windows\n\n| fault | target | kind | active | first ejection | recovery |\n|---|---|---|---|---|---|\n")
		for _, w := range o.Windows {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", w.Name, mdCell(windowTarget(w.Window)), mdCell(w.Window.Kind),
				mdCell(windowWhen(w)), mdCell(firstEjection(w)), mdCell(recoveryDetail(w.Recovery)))
		}
		b.WriteString("\n")
	}
	if len(o.Changes) > 0 {
		b.WriteString("### Configuration changes\n\n| change | proxy | what | at | outcome | answered after | NACK detail |\n|---|---|---|---|---|---:|---|\n")
		for _, c := range o.Changes {
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s |\n", mdCell(c.Change.Name), mdCell(c.Change.Proxy), mdCell(c.Change.What),
				formatOffset(c.Change.Start), mdCell(changeOutcomeText(c)), changeAnsweredAfter(c), mdCell(shortDetail(c.Change.Detail)))
		}
		b.WriteString("\n")
	}
	if slices.ContainsFunc(o.Phases, PhaseOutcome.Shown) {
		b.WriteString("### Phases\n\n| phase | span | requests | success | p50 | p90 | p99 | max | retry amplification | ejections |\n" +
			"|---|---|---:|---:|---:|---:|---:|---:|---:|---:|\n")
		for _, p := range o.Phases {
			ps := p.Summary
			switch {
			case !p.Shown():
				continue
			case ps.Requests == 0:
				fmt.Fprintf(&b, "| %s | %s | no requests | | | | | | | |\n", mdCell(p.Scope), formatSpans(p.Spans))
				continue
			}
			amp, ej := "not recorded", "not recorded"
			if missingAttempts(ps) == "" {
				amp = formatRatio(ps.RetryAmplification)
			}
			if p.EjectionsKnown {
				ej = fmt.Sprintf("%d", ps.Ejections)
			}
			fmt.Fprintf(&b, "| %s | %s | %d | %s%% | %s | %s | %s | %s | %s | %s |\n", mdCell(p.Scope), formatSpans(p.Spans), ps.Requests,
				formatPercent(ps.SuccessRate), formatDuration(ps.Latency.P50), formatDuration(ps.Latency.P90),
				formatDuration(ps.Latency.P99), formatDuration(ps.Latency.Max), amp, ej)
		}
		b.WriteString("\n")
	}
	writeMarkdownGraph(&b, o)
	if len(o.Hosts) > 0 {
		b.WriteString("### Ejections\n\n| cluster | host | ejected |\n|---|---|---|\n")
		for _, h := range o.Hosts {
			fmt.Fprintf(&b, "| %s | %s | %s |\n", mdCell(h.Where()), mdCell(h.Host), mdCell(ejectionList(h)))
		}
		b.WriteString("\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}

func recoveryDetail(r Recovery) string {
	switch {
	case !r.Measured:
		return "not measured: " + r.Why
	case !r.Recovered:
		return "not recovered: " + r.Why
	}
	return fmt.Sprintf("%s (to ≥ %s%% success)", formatDelay(r.Time), formatPercent(r.Threshold))
}

func ejectionList(h HostTimeline) string {
	parts := make([]string, len(h.Ejections))
	for i, e := range h.Ejections {
		parts[i] = formatOffset(e.Start) + "–"
		if e.Open {
			parts[i] += "end"
		} else {
			parts[i] += formatOffset(e.End)
		}
		if e.Reason != "" {
			parts[i] += " (" + e.Reason + ")"
		}
	}
	return strings.Join(parts, ", ")
}

// mdCell makes text safe inside a Markdown table cell: pipes escaped, line breaks as spaces, HTML
// brackets as entities.
func mdCell(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "\r", "", "<", "&lt;", ">", "&gt;").Replace(s)
}

// mdCode makes text safe inside inline code in a table cell.
func mdCode(s string) string {
	return strings.NewReplacer("|", `\|`, "\n", " ", "`", "'").Replace(s)
}
