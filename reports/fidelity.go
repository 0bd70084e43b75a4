package reports

import (
	"bytes"
	"fmt"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Fidelity compares two runs of one plan with one seed: the embedded runner's (real sockets, real time)
// and the simulator's (virtual time). Every metric is the reports' own (Summarize, ComputeOutcomes); a
// few are judged against a bound, the others are shown for context.
//
// The bounds: the success rates within FidelitySuccessRatePP percentage points, the retry
// amplifications within FidelityAmplificationRel of the embedded run's (relative), the same set of
// ejected hosts, and the p99 latencies within FidelityP99Rel of the embedded run's (relative) or within
// FidelityP99Floor of it (absolute), whichever is wider.
const (
	FidelitySuccessRatePP    = 1.0
	FidelityAmplificationRel = 0.05
	FidelityP99Rel           = 0.25
	// FidelityP99Floor is the p99 difference that is within the bound whatever the ratio. The simulator
	// does not model the host: scheduling delays, GC pauses and the loopback stack's variance add a few
	// milliseconds at the tail of a real run on a shared 2-core machine, where a millisecond-scale p99 is
	// mostly that (healthy-baseline: 3.9 ms embedded, 1.2 ms simulated), and two embedded runs of one
	// example differed by 4–34 ms at p99. Below the floor the relative bound would judge the host, not
	// the model.
	FidelityP99Floor = 5 * time.Millisecond
)

// FidelityTable is the comparison of an embedded run and a simulated run of the same scenario.
type FidelityTable struct {
	Scenario, File string
	Seed           uint64
	// Refused, when set, is why the simulator refused the plan (its Supports error): nothing was
	// compared and Rows is empty.
	Refused string
	Rows    []FidelityRow
}

// FidelityRow is one metric of both runs.
type FidelityRow struct {
	Name          string // e.g. "success rate", "p99", "ejections checkout/2"
	Embedded, Sim string // the values as the report writers show them
	// Diff is sim − embedded ("-0.9 pp", "+5.833%", "+2ms (+10%)", the hosts only one run ejected); ""
	// when the two cannot be compared.
	Diff string
	// Bound is what the row must stay within ("≤ 1 pp", "≤ 5%", "same set", "≤ 25% or 5ms"); "" for a row shown
	// for context only, which is always OK.
	Bound string
	OK    bool
}

// Judged reports whether the row has a bound.
func (r FidelityRow) Judged() bool { return r.Bound != "" }

// OK reports whether the simulator ran the plan and every judged row is within its bound.
func (t FidelityTable) OK() bool { return t.Refused == "" && len(t.OutOfBounds()) == 0 }

// OutOfBounds names the judged rows outside their bounds, in table order.
func (t FidelityTable) OutOfBounds() []string {
	var out []string
	for _, r := range t.Rows {
		if r.Judged() && !r.OK {
			out = append(out, r.Name)
		}
	}
	return out
}

// Fidelity compares the embedded runner's record of a run with the simulator's record of the same plan.
func Fidelity(embedded, sim *record.Record) FidelityTable {
	t := FidelityTable{Scenario: embedded.Scenario, File: embedded.File, Seed: embedded.Seed}
	es, ss := Summarize(embedded), Summarize(sim)
	eo, so := ComputeOutcomes(embedded), ComputeOutcomes(sim)
	add := func(r FidelityRow) {
		if !r.Judged() {
			r.OK = true
		}
		t.Rows = append(t.Rows, r)
	}
	count := func(name string, x, y uint64) {
		add(FidelityRow{Name: name, Embedded: strconv.FormatUint(x, 10), Sim: strconv.FormatUint(y, 10),
			Diff: countDelta(float64(x), float64(y))})
	}

	count("requests", es.Requests, ss.Requests)
	add(FidelityRow{Name: "success rate", Embedded: formatPercent(es.SuccessRate) + "%", Sim: formatPercent(ss.SuccessRate) + "%",
		Diff:  signed(ss.SuccessRate-es.SuccessRate) + " pp",
		Bound: "≤ " + formatSig(FidelitySuccessRatePP) + " pp",
		OK:    compare(math.Abs(ss.SuccessRate-es.SuccessRate), "<=", FidelitySuccessRatePP)})

	amp := FidelityRow{Name: "retry amplification", Embedded: "not recorded", Sim: "not recorded",
		Bound: "≤ " + formatSig(100*FidelityAmplificationRel) + "%"}
	if missingAttempts(es) == "" {
		amp.Embedded = formatRatio(es.RetryAmplification)
	}
	if missingAttempts(ss) == "" {
		amp.Sim = formatRatio(ss.RetryAmplification)
	}
	if missingAttempts(es) == "" && missingAttempts(ss) == "" {
		x, y := es.RetryAmplification, ss.RetryAmplification
		amp.Diff, amp.OK = relDelta(x, y, signed(y-x)), relativeWithin(x, y, FidelityAmplificationRel)
	}
	add(amp)

	count("retries", es.Retries, ss.Retries)
	count("retry overflows", eo.RetryOverflows, so.RetryOverflows)
	count("pending overflows", eo.PendingOverflows, so.PendingOverflows)
	count("connection overflows", sumClusterStat(embedded.ProxyStats, "upstream_cx_overflow"), sumClusterStat(sim.ProxyStats, "upstream_cx_overflow"))

	eh, sh := ejectedHosts(eo.Hosts), ejectedHosts(so.Hosts)
	only := func(a, b map[string]int) []string {
		var out []string
		for h := range a {
			if _, ok := b[h]; !ok {
				out = append(out, h)
			}
		}
		slices.Sort(out)
		return out
	}
	onlyE, onlyS := only(eh, sh), only(sh, eh)
	var diff []string
	if len(onlyE) > 0 {
		diff = append(diff, "only embedded: "+strings.Join(onlyE, ", "))
	}
	if len(onlyS) > 0 {
		diff = append(diff, "only sim: "+strings.Join(onlyS, ", "))
	}
	if len(diff) == 0 {
		diff = []string{"same"}
	}
	add(FidelityRow{Name: "ejected hosts", Embedded: hostSet(eh), Sim: hostSet(sh), Diff: strings.Join(diff, "; "),
		Bound: "same set", OK: len(onlyE) == 0 && len(onlyS) == 0})
	union := map[string]int{}
	for h := range eh {
		union[h]++
	}
	for h := range sh {
		union[h]++
	}
	for _, h := range slices.Sorted(maps.Keys(union)) {
		count("ejections "+h, uint64(eh[h]), uint64(sh[h]))
	}

	add(FidelityRow{Name: "p50", Embedded: formatDelay(es.Latency.P50), Sim: formatDelay(ss.Latency.P50), Diff: durDelta(es.Latency.P50, ss.Latency.P50)})
	p99 := FidelityRow{Name: "p99", Embedded: formatDelay(es.Latency.P99), Sim: formatDelay(ss.Latency.P99),
		Bound: "≤ " + formatSig(100*FidelityP99Rel) + "% or " + formatDelay(FidelityP99Floor)}
	p99.Diff = durDelta(es.Latency.P99, ss.Latency.P99)
	p99.OK = relativeWithin(float64(es.Latency.P99), float64(ss.Latency.P99), FidelityP99Rel) ||
		(es.Latency.P99-ss.Latency.P99).Abs() <= FidelityP99Floor
	add(p99)

	if len(eo.Windows) > 0 || len(so.Windows) > 0 {
		ew, sw := eo.Fault, so.Fault
		add(FidelityRow{Name: "time to first ejection", Embedded: ttfe(eo), Sim: ttfe(so),
			Diff: optDelta(ew.Ejected && sw.Ejected, ew.TimeToFirstEjection, sw.TimeToFirstEjection)})
		add(FidelityRow{Name: "recovery time", Embedded: recov(eo), Sim: recov(so),
			Diff: optDelta(ew.Recovery.Recovered && sw.Recovery.Recovered, ew.Recovery.Time, sw.Recovery.Time)})
	}
	return t
}

// relativeWithin reports whether y differs from x by at most bound (a fraction) of x. Both zero is no
// difference; x zero and y not is out of any bound.
func relativeWithin(x, y, bound float64) bool {
	if x == 0 {
		return y == 0
	}
	return compare(math.Abs((y-x)/x), "<=", bound)
}

// ejectedHosts counts the ejections of each host of the ejection timelines: "checkout/2" for the
// ingress proxy's, "cart/0 → payments/1" for a sidecar's.
func ejectedHosts(hosts []HostTimeline) map[string]int {
	out := map[string]int{}
	for _, h := range hosts {
		if len(h.Ejections) == 0 {
			continue
		}
		name := h.Host
		if h.Proxy != "" {
			name = h.Proxy + " → " + h.Host
		}
		out[name] += len(h.Ejections)
	}
	return out
}

// hostSet shows the hosts with their ejection counts: "checkout/2 ×1, checkout/3 ×2", or "none".
func hostSet(hosts map[string]int) string {
	if len(hosts) == 0 {
		return "none"
	}
	parts := make([]string, 0, len(hosts))
	for _, h := range slices.Sorted(maps.Keys(hosts)) {
		parts = append(parts, fmt.Sprintf("%s ×%d", h, hosts[h]))
	}
	return strings.Join(parts, ", ")
}

// fidelityVerdict is the table's last line: "within every bound", "OUT OF BOUNDS: p99", or the
// refusal.
func fidelityVerdict(t FidelityTable) string {
	switch out := t.OutOfBounds(); {
	case t.Refused != "":
		return "refused: " + t.Refused
	case len(out) > 0:
		return "OUT OF BOUNDS: " + strings.Join(out, ", ")
	}
	return "within every bound"
}

func fidelityTitle(t FidelityTable) string {
	s := t.Scenario
	if t.File != "" {
		s += " (" + t.File + ")"
	}
	return fmt.Sprintf("%s, seed %d", s, t.Seed)
}

// WriteFidelityText writes the table for a terminal: one line per metric, embedded, sim, the difference,
// the bound and "ok" or "OUT" for the judged rows, then the verdict.
func WriteFidelityText(w io.Writer, t FidelityTable) error {
	var b bytes.Buffer
	fmt.Fprintf(&b, "fidelity: %s — embedded vs sim\n", fidelityTitle(t))
	if t.Refused == "" {
		tw := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
		fmt.Fprintf(tw, "\tembedded\tsim\tdiff\tbound\t\n")
		for _, r := range t.Rows {
			verdict := ""
			if r.Judged() {
				verdict = map[bool]string{true: "ok", false: "OUT"}[r.OK]
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Embedded, r.Sim, r.Diff, r.Bound, verdict)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	fmt.Fprintf(&b, "verdict: %s\n", fidelityVerdict(t))
	// The rows without a bound end in the padding of their empty cells.
	lines := strings.Split(b.String(), "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	_, err := io.WriteString(w, strings.Join(lines, "\n"))
	return err
}

// WriteFidelityMarkdown writes the table as a GitHub-flavoured Markdown section (a level-3 heading with
// the verdict, then the table), fit to be concatenated with other scenarios' into one document.
func WriteFidelityMarkdown(w io.Writer, t FidelityTable) error {
	var b bytes.Buffer
	mark := "✅"
	if !t.OK() {
		mark = "❌"
	}
	if t.Refused != "" {
		mark = "⏭️"
	}
	fmt.Fprintf(&b, "### %s — %s %s\n\n", mdCell(t.Scenario), mark, mdCell(fidelityVerdict(t)))
	facts := fmt.Sprintf("seed %d", t.Seed)
	if t.File != "" {
		facts = "`" + mdCode(t.File) + "`, " + facts
	}
	fmt.Fprintf(&b, "%s\n\n", facts)
	if t.Refused == "" {
		b.WriteString("| metric | embedded | sim | diff (sim − embedded) | bound | |\n|---|---|---|---|---|---|\n")
		for _, r := range t.Rows {
			verdict := ""
			if r.Judged() {
				verdict = map[bool]string{true: "✅", false: "❌"}[r.OK]
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s |\n", mdCell(r.Name), mdCell(r.Embedded), mdCell(r.Sim), mdCell(r.Diff), mdCell(r.Bound), verdict)
		}
		b.WriteString("\n")
	}
	_, err := w.Write(b.Bytes())
	return err
}
