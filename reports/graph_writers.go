package reports

import (
	"bytes"
	"fmt"
	"strings"
	"text/tabwriter"
)

// The edge and service tables every writer shows for a record beyond one hop, one row per edge and per
// service, the same cells everywhere: "n/a" for what the record does not hold, "-" for what does not
// apply (the capacity of a service without one).

var (
	edgeHeaders = []string{"edge", "calls", "success", "actual success", "retries", "retry amplification",
		"overflows", "ejections", "p50", "p99"}
	serviceHeaders = []string{"service", "instances", "received", "per client request", "success",
		"utilisation", "queue time mean", "queue time max", "rejected", "timed out"}
)

const notRecordedCell = "n/a"

// edgeCells is an edge's row: the edge, then one cell per edgeHeaders.
func edgeCells(e EdgeOutcome) []string {
	na := func(ok bool, s string) string {
		if !ok {
			return notRecordedCell
		}
		return s
	}
	attempts := e.AttemptsFrom != ""
	success := na(e.Calls > 0, formatPercent(e.SuccessRate)+"%")
	return []string{
		edgeLabel(e.Caller, e.Callee),
		fmt.Sprint(e.Calls),
		success,
		na(attempts && e.UpstreamAttempts > 0, formatPercent(e.ActualSuccessRate)+"%"),
		na(attempts, fmt.Sprint(e.Retries)),
		na(attempts && e.AttemptsOver > 0, formatRatio(e.RetryAmplification)),
		na(attempts, fmt.Sprint(e.Overflows)),
		na(e.EjectionsKnown, fmt.Sprint(e.Ejections)),
		na(e.Calls > 0, formatDuration(e.Latency.P50)),
		na(e.Calls > 0, formatDuration(e.Latency.P99)),
	}
}

// serviceCells is a service's row: the service, then one cell per serviceHeaders.
func serviceCells(s ServiceOutcome) []string {
	na := func(ok bool, v string) string {
		if !ok {
			return notRecordedCell
		}
		return v
	}
	name := s.Name
	if s.Entry {
		name += " (entry)"
	}
	cells := []string{
		name,
		fmt.Sprint(s.Instances),
		na(s.Known, fmt.Sprint(s.Requests)),
		na(s.Known && s.ClientRequests > 0, formatRatio(s.Amplification)),
		na(s.Known && s.Requests > 0, formatPercent(s.SuccessRate)+"%"),
	}
	c := s.Capacity
	if c == nil {
		return append(cells, "-", "-", "-", "-", "-")
	}
	return append(cells, formatPercent(c.Utilisation)+"%", formatDelay(c.QueueTimeMean), formatDelay(c.QueueTimeMax),
		fmt.Sprint(c.Rejected), fmt.Sprint(c.TimedOut))
}

// graphShown tells whether the writers show the call graph: a record beyond one hop.
func (o Outcomes) graphShown() bool { return len(o.Edges) > 0 || len(o.Services) > 0 }

// writeTerminalGraph writes the edge and service tables, when the run has a call graph.
func writeTerminalGraph(b *bytes.Buffer, o Outcomes) {
	if !o.graphShown() {
		return
	}
	t := tabwriter.NewWriter(b, 0, 0, 2, ' ', 0)
	row := func(cells []string) { fmt.Fprintf(t, "  %s\n", strings.Join(cells, "\t")) }
	if len(o.Edges) > 0 {
		b.WriteString("edges (calls as the callers saw them, after their sidecars' retries)\n")
		row(edgeHeaders)
		for _, e := range o.Edges {
			row(edgeCells(e))
		}
		t.Flush()
	}
	if len(o.Services) > 0 {
		b.WriteString("services (what their instances received)\n")
		row(serviceHeaders)
		for _, s := range o.Services {
			row(serviceCells(s))
		}
		t.Flush()
	}
}

// writeMarkdownGraph writes the edge and service tables of summary.md, when the run has a call graph.
func writeMarkdownGraph(b *bytes.Buffer, o Outcomes) {
	table := func(title, note string, headers []string, rows [][]string) {
		fmt.Fprintf(b, "### %s\n\n%s\n\n| %s |\n|---|%s\n", title, note, strings.Join(headers, " | "),
			strings.Repeat("---:|", len(headers)-1))
		for _, r := range rows {
			for i := range r {
				r[i] = mdCell(r[i])
			}
			fmt.Fprintf(b, "| %s |\n", strings.Join(r, " | "))
		}
		b.WriteString("\n")
	}
	if len(o.Edges) > 0 {
		rows := make([][]string, len(o.Edges))
		for i, e := range o.Edges {
			rows[i] = edgeCells(e)
		}
		table("Edges", "Calls as the callers saw them, after their sidecars' retries; actual success is per attempt, before the retries.", edgeHeaders, rows)
	}
	if len(o.Services) > 0 {
		rows := make([][]string, len(o.Services))
		for i, s := range o.Services {
			rows[i] = serviceCells(s)
		}
		table("Services", "What their instances received; per client request = received ÷ the clients' requests.", serviceHeaders, rows)
	}
}
