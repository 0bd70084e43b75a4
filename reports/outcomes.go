package reports

import (
	"cmp"
	"fmt"
	"slices"
	"sort"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// RecoveryThreshold caps the success rate a run must get back to after a fault, in percent: the run has
// recovered when a whole second holds min(pre-fault success rate, RecoveryThreshold). RecoveryWindow is
// that second.
const (
	RecoveryThreshold = 99.0
	RecoveryWindow    = time.Second
)

const whyOpenEnded = "the fault is open-ended: it lasted until the run ended"

// Outcomes are the resilience outcomes of a run, computed from its record by ComputeOutcomes: how the
// clients fared in each phase, how many upstream attempts each request took, when hosts were ejected and
// came back, how long the run took to recover after each fault, and the breakers' overflows.
type Outcomes struct {
	End time.Duration // the run's end as offset from its start (RunEnd)

	// Windows has one entry per record.Record.Windows, in order; Fault judges all windows together (Name
	// "fault": from the first start to the last end). Fault is the zero value when there are no windows.
	Windows []WindowOutcome
	Fault   WindowOutcome

	// Changes has one entry per record.Record.Changes, in order: the scenario's configuration changes.
	Changes []ChangeOutcome

	// Phases: "before fault", "during fault", "after fault" when the run has fault windows; the same for
	// each window ("during faults[1]") when it has several; "during change" when the run made
	// configuration changes, and "during changes[N]" for each when it made several; "during phase NAME"
	// for each load phase.
	Phases []PhaseOutcome

	Attempts AttemptStats // over the whole run

	// PendingOverflows and RetryOverflows sum the proxy's cluster.<c>.upstream_rq_pending_overflow and
	// cluster.<c>.upstream_rq_retry_overflow over its clusters: requests the circuit breakers turned away.
	PendingOverflows, RetryOverflows uint64

	// Hosts is the ejection timeline of every host that has an ejection or un-ejection event, sorted by
	// deciding sidecar (the ingress proxy's first), cluster and host.
	Hosts []HostTimeline

	// Edges and Services are the call graph's outcomes over the whole run (see EdgeOutcome and
	// ServiceOutcome), for a record beyond one hop (an edge, or more than one service); nil otherwise.
	Edges    []EdgeOutcome
	Services []ServiceOutcome

	// MTLS is the mesh's mutual TLS; nil when the mesh is plain.
	MTLS *MTLSOutcome `json:",omitempty"`
}

// Overflows is every breaker overflow: PendingOverflows + RetryOverflows.
func (o Outcomes) Overflows() uint64 { return o.PendingOverflows + o.RetryOverflows }

// Phase returns the phase with this scope ("during faults[0]"), if listed in Phases.
func (o Outcomes) Phase(scope string) (PhaseOutcome, bool) {
	for _, p := range o.Phases {
		if p.Scope == scope {
			return p, true
		}
	}
	return PhaseOutcome{}, false
}

// PhaseOutcome is how the clients fared in one phase of the run: the requests whose intended send time
// falls within its spans.
type PhaseOutcome struct {
	Scope string // as in a check: "before fault", "during faults[1]", "during phase steady"
	Spans []Span // several for the union of disjoint fault windows; one empty span for an empty phase

	// Summary summarizes the phase's samples (AchievedRate over the spans' length). Its Retries,
	// UpstreamAttempts and RetryAmplification come from the samples' attempt counts (zero, and
	// AttemptsFrom "", when Attempts.Known is 0); UpstreamReceived is not known per phase; Ejections
	// counts "ejected" proxy events within the spans (valid when EjectionsKnown).
	Summary  Summary
	Attempts AttemptStats
	// EjectionsKnown is true when the proxy emitted ejection events, or counted no ejection at all.
	EjectionsKnown bool
}

// Shown reports whether the people's writers (terminal, summary.md, report.html) list the phase: not
// when its spans cover no time ("before fault" of a fault at 0s). report.json keeps every phase.
func (p PhaseOutcome) Shown() bool {
	for _, s := range p.Spans {
		if s.Len() > 0 {
			return true
		}
	}
	return false
}

// AttemptStats is the distribution of upstream attempts per client request, from record.Sample.Attempts.
type AttemptStats struct {
	Requests      uint64         // requests considered
	Known         uint64         // those with a known attempt count (record.Sample.AttemptsKnown), 0 included
	Total         uint64         // attempts of the known ones
	Retries       uint64         // Σ max(attempts − 1, 0) over the known ones
	Max           int            // the most attempts any request took
	Amplification float64        // Total / Known: upstream attempts per client request (0 when none known)
	Distribution  map[int]uint64 // attempts → requests, over the known ones
}

// EjectionGrace is how long after a fault window's end an ejection of a host it targets still counts as
// the window's: the last failed responses of a window arrive after it (up to the route timeout, 1 s in
// the examples), and a detector sweeping at its outlier_detection interval (0.5 s in the examples) ejects
// at the next sweep. A fixed value: the record does not hold the proxy's timeouts and interval.
const EjectionGrace = time.Second

// WindowOutcome is what followed a fault window's start and end.
type WindowOutcome struct {
	Name   string             // "faults[0]", or "fault" for all windows together
	Window record.FaultWindow // the window as recorded (the zero value for "fault")
	Span   Span               // when it was active (open-ended: to the run end), clipped to the run
	// Ejected is true when the proxy ejected a host the window targets, from the window's start to
	// EjectionGrace after its end (for "fault": any window, with the hosts it targets). FirstEjection is
	// the first such event (Host as "service/instance" when known), EjectionWindow the window it is
	// credited to ("faults[N]"; for "fault", the earliest-starting one it counts for), EjectionStart that
	// window's start and TimeToFirstEjection the delay from it.
	Ejected             bool
	FirstEjection       record.ProxyEvent
	EjectionWindow      string
	EjectionStart       time.Duration
	TimeToFirstEjection time.Duration
	Recovery            Recovery
	// Down has one entry per down period of a flapping rule (record.FaultWindow.Down, clipped to the
	// run), in time order; empty for a rule that does not flap and for "fault".
	Down []DownOutcome
}

// DownOutcome is what followed one down period of a flapping rule. An ejection of a host the rule
// targets is credited to the last down period that started at or before it, when it happened at most
// EjectionGrace after that period's end. Recovery runs from the period's end to the next down period's
// start (the last period's: as for the window, to the next window's start or the run end).
type DownOutcome struct {
	Span                Span
	Ejected             bool
	FirstEjection       record.ProxyEvent // Host as "service/instance" when known
	TimeToFirstEjection time.Duration     // from Span.Start
	Recovery            Recovery
	// EjectedAtStart lists the targeted hosts already ejected when the period started (an ejection
	// of an earlier period still running): a period without an ejection of its own may need none.
	EjectedAtStart []string
}

// Recovery is how long the clients took to get back to health after a fault ended: the time from the
// window's end to the first moment from which a whole RecoveryWindow of requests (by intended send time)
// succeeds at Threshold or better, that second ending before the next fault window starts (or the run
// ends).
type Recovery struct {
	// Measured is false when the window is open-ended, when less than RecoveryWindow is left before the
	// next window starts or the run ends, or when another window is still active at its end; Why says so.
	Measured  bool
	Why       string
	Recovered bool          // false: never back to Threshold before the run ended
	Time      time.Duration // when Recovered
	// Threshold is min(Baseline, RecoveryThreshold), or RecoveryThreshold without requests before the
	// first fault; Baseline is the success rate before the first fault window started, in percent.
	Threshold, Baseline float64
	BaselineRequests    uint64
}

// HostTimeline is when one host was out of the load-balancing set of one proxy.
type HostTimeline struct {
	// Proxy is the instance ("service/instance") whose outbound sidecar decided, "" for the ingress
	// proxy (record.ProxyEvent.Proxy): a sidecar ejects for its own instance only.
	Proxy         string
	Cluster, Host string // Host as "service/instance" when the record's upstreams know its address
	Ejections     []Ejection
}

// Where names the proxy and cluster of a timeline: "checkout", or "cart/0 → payments" for a sidecar's.
func (t HostTimeline) Where() string {
	if t.Proxy == "" {
		return t.Cluster
	}
	return t.Proxy + " → " + t.Cluster
}

// Ejection is one stretch during which a host was ejected. Open: it was never un-ejected before the run
// ended (End is then the run's end).
type Ejection struct {
	Start, End time.Duration
	Open       bool
	Reason     string
}

// ComputeOutcomes computes the resilience outcomes of a run from its record. It is a pure function of
// the record.
func ComputeOutcomes(rec *record.Record) Outcomes {
	o := Outcomes{
		End:              RunEnd(rec),
		Attempts:         attemptStats(rec.Samples),
		PendingOverflows: sumClusterStat(rec.ProxyStats, "upstream_rq_pending_overflow"),
		RetryOverflows:   sumClusterStat(rec.ProxyStats, "upstream_rq_retry_overflow"),
		MTLS:             mtlsOutcome(rec),
	}
	hosts := hostLabels(rec)
	events := sortedEvents(rec.ProxyEvents)
	o.Hosts = timelines(events, hosts, o.End)
	if meshRecord(rec) {
		o.Edges, o.Services = graphOutcomes(rec, nil)
	}

	if len(rec.Windows) > 0 {
		var scopes []checks.Scope
		flaps := slices.ContainsFunc(rec.Windows, func(w record.FaultWindow) bool { return len(w.Down) > 0 })
		for _, rel := range []string{checks.Before, checks.During, checks.After} {
			scopes = append(scopes, checks.Scope{Relation: rel, Fault: -1})
		}
		if flaps {
			scopes = append(scopes, checks.Scope{Relation: checks.During, Fault: -1, Down: true})
		}
		if len(rec.Windows) > 1 {
			for i, w := range rec.Windows {
				for _, rel := range []string{checks.Before, checks.During, checks.After} {
					scopes = append(scopes, checks.Scope{Relation: rel, Fault: i})
				}
				if len(w.Down) > 0 {
					scopes = append(scopes, checks.Scope{Relation: checks.During, Fault: i, Down: true})
				}
			}
		}
		for _, sc := range scopes {
			p, _ := PhaseOf(rec, sc) // the scopes exist
			o.Phases = append(o.Phases, p)
		}
	}
	o.Changes = changeOutcomes(rec, o.End)
	for _, sc := range changeScopes(len(rec.Changes)) {
		p, _ := PhaseOf(rec, sc) // the scopes exist
		o.Phases = append(o.Phases, p)
	}
	for _, lp := range rec.Phases {
		p, _ := PhaseOf(rec, checks.Scope{Relation: checks.During, Phase: lp.Name})
		o.Phases = append(o.Phases, p)
	}

	base := baseline(rec, o.End)
	spans := make([]Span, len(rec.Windows))
	for i, w := range rec.Windows {
		spans[i] = windowSpan(w, o.End)
	}
	for i, w := range rec.Windows {
		name := fmt.Sprintf("faults[%d]", i)
		wo := WindowOutcome{Name: name, Window: w, Span: spans[i]}
		wo.creditEjection(rec.Windows, spans, []int{i}, events, hosts)
		limit, why := recoveryLimit(rec.Windows, spans, i, spans[i].End, o.End)
		wo.Recovery = measureRecovery(spans[i], w.End <= 0, limit, why, base, "fault", "fault")
		if len(w.Down) > 0 {
			wo.Down = downOutcomes(rec.Windows, spans, i, events, hosts, o.Hosts, base, o.End)
		}
		o.Windows = append(o.Windows, wo)
	}
	if len(rec.Windows) > 0 {
		span, open := Span{Start: o.End}, false
		all := make([]int, len(rec.Windows))
		for i, w := range rec.Windows {
			all[i] = i
			span.Start, span.End = min(span.Start, spans[i].Start), max(span.End, spans[i].End)
			open = open || w.End <= 0
		}
		o.Fault = WindowOutcome{Name: "fault", Span: span}
		o.Fault.creditEjection(rec.Windows, spans, all, events, hosts)
		o.Fault.Recovery = measureRecovery(span, open, o.End, "", base, "fault", "fault")
	}
	return o
}

// PhaseOf computes the outcome of one phase of the run, or says why the run has no such phase.
func PhaseOf(rec *record.Record, sc checks.Scope) (PhaseOutcome, error) {
	spans, err := ScopeSpans(rec, sc)
	if err != nil {
		return PhaseOutcome{}, err
	}
	p := PhaseOutcome{Scope: sc.String(), Spans: spans}
	var samples []record.Sample
	var length time.Duration
	for _, sp := range spans {
		length += sp.Len()
	}
	for _, s := range rec.Samples {
		if inSpans(spans, s.Intended) {
			samples = append(samples, s)
		}
	}
	p.Summary = Summarize(&record.Record{Samples: samples, TargetRate: rec.TargetRate})
	p.Summary.Duration = length
	p.Summary.AchievedRate = 0
	if length > 0 {
		p.Summary.AchievedRate = float64(len(samples)) / length.Seconds()
	}
	p.Summary.RateHeld = rec.TargetRate <= 0 ||
		p.Summary.AchievedRate >= record.HeldRateFraction*rec.TargetRate && p.Summary.MaxSendLag <= record.MaxHeldSendLag

	// Summarize took the attempts from the samples (the sub-record has no proxy stats nor upstreams, so
	// no whole-run fallback and no received counts): the same definition as over the whole run.
	p.Attempts = attemptStats(samples)
	p.Summary.Retries = 0
	if p.Attempts.Known > 0 {
		p.Summary.Retries = p.Attempts.Retries
	}
	p.Summary.Ejections = 0
	for _, e := range rec.ProxyEvents {
		// The clients' ejections are the ingress proxy's; a sidecar's are its edge's (EdgeOutcome).
		if e.Kind == record.ProxyEjected && !e.Sidecar() && inSpans(spans, e.At) {
			p.Summary.Ejections++
		}
	}
	p.EjectionsKnown = len(rec.ProxyEvents) > 0 || sumClusterStat(rec.ProxyStats, "outlier_detection.ejections_enforced_total") == 0
	return p, nil
}

func inSpans(spans []Span, t time.Duration) bool {
	for _, s := range spans {
		if s.contains(t) {
			return true
		}
	}
	return false
}

func attemptStats(samples []record.Sample) AttemptStats {
	a := AttemptStats{Requests: uint64(len(samples)), Distribution: map[int]uint64{}}
	for _, s := range samples {
		if !s.AttemptsKnown() {
			continue
		}
		a.Known++
		a.Total += uint64(s.Attempts)
		a.Retries += uint64(max(s.Attempts-1, 0))
		a.Max = max(a.Max, s.Attempts)
		a.Distribution[s.Attempts]++
	}
	if a.Known > 0 {
		a.Amplification = float64(a.Total) / float64(a.Known)
	}
	return a
}

// hostLabels maps upstream addresses to "service/instance".
func hostLabels(rec *record.Record) map[string]string {
	m := map[string]string{}
	for _, u := range rec.Upstreams {
		if u.Address != "" {
			m[u.Address] = fmt.Sprintf("%s/%d", u.Service, u.Instance)
		}
	}
	return m
}

func hostLabel(hosts map[string]string, host string) string {
	if l, ok := hosts[host]; ok {
		return l
	}
	return host
}

func sortedEvents(events []record.ProxyEvent) []record.ProxyEvent {
	out := slices.Clone(events)
	slices.SortStableFunc(out, func(a, b record.ProxyEvent) int { return cmp.Compare(a.At, b.At) })
	return out
}

func timelines(events []record.ProxyEvent, hosts map[string]string, end time.Duration) []HostTimeline {
	type key struct{ proxy, cluster, host string }
	byHost := map[key]*HostTimeline{}
	for _, e := range events {
		if e.Kind != record.ProxyEjected && e.Kind != record.ProxyUnejected {
			continue
		}
		proxy := ""
		if e.Sidecar() {
			proxy = e.Proxy
		}
		k := key{proxy, e.Cluster, hostLabel(hosts, e.Host)}
		t := byHost[k]
		if t == nil {
			t = &HostTimeline{Proxy: proxy, Cluster: k.cluster, Host: k.host}
			byHost[k] = t
		}
		n := len(t.Ejections)
		open := n > 0 && t.Ejections[n-1].Open
		switch {
		case e.Kind == record.ProxyEjected && !open:
			t.Ejections = append(t.Ejections, Ejection{Start: e.At, End: end, Open: true, Reason: e.Reason})
		case e.Kind == record.ProxyUnejected && open:
			t.Ejections[n-1].End, t.Ejections[n-1].Open = e.At, false
		}
	}
	out := make([]HostTimeline, 0, len(byHost))
	for _, t := range byHost {
		out = append(out, *t)
	}
	slices.SortFunc(out, func(a, b HostTimeline) int {
		return cmp.Or(cmp.Compare(a.Proxy, b.Proxy), cmp.Compare(a.Cluster, b.Cluster), cmp.Compare(a.Host, b.Host))
	})
	return out
}

// health is the samples (cancelled ones left out) sorted by intended send time, with prefix counts of
// successes, for success rates over any stretch.
type health struct {
	at []time.Duration
	ok []int // ok[i]: successes among the first i samples
}

type baselineRate struct {
	rate     float64
	requests uint64
	h        health
	end      time.Duration // the run's end
}

func baseline(rec *record.Record, end time.Duration) baselineRate {
	var h health
	samples := make([]record.Sample, 0, len(rec.Samples))
	for _, s := range rec.Samples {
		if s.Error != record.ErrCanceled {
			samples = append(samples, s)
		}
	}
	slices.SortStableFunc(samples, func(a, b record.Sample) int { return cmp.Compare(a.Intended, b.Intended) })
	h.ok = make([]int, len(samples)+1)
	for i, s := range samples {
		h.at = append(h.at, s.Intended)
		h.ok[i+1] = h.ok[i]
		if s.OK() {
			h.ok[i+1]++
		}
	}
	first := end
	for _, w := range rec.Windows {
		first = min(first, windowSpan(w, end).Start)
	}
	b := baselineRate{h: h, end: end}
	n := h.index(first)
	if n > 0 {
		b.requests = uint64(n)
		b.rate = 100 * float64(h.ok[n]) / float64(n)
	}
	return b
}

// index is the number of samples intended before t.
func (h health) index(t time.Duration) int {
	return sort.Search(len(h.at), func(i int) bool { return h.at[i] >= t })
}

// creditEjection finds the first ejection the windows (indexes of ws) are credited with: the earliest
// "ejected" event of a host one of them targets (record.FaultWindow.Instances, or all of its Service's instances)
// at or after that window's start and at most EjectionGrace after its end. The event is credited to the
// earliest-starting such window, and TimeToFirstEjection runs from that window's start. Without such an
// event, Ejected stays false: other hosts' ejections, and ejections before the window or after its grace,
// are not the window's.
func (wo *WindowOutcome) creditEjection(ws []record.FaultWindow, spans []Span, windows []int, events []record.ProxyEvent, hosts map[string]string) {
	for _, e := range events {
		if e.Kind != record.ProxyEjected {
			continue
		}
		credited := -1
		for _, i := range windows {
			if targets(ws[i], e.Host, hosts) && ejectionRange(spans[i]).containsClosed(e.At) &&
				(credited < 0 || spans[i].Start < spans[credited].Start) {
				credited = i
			}
		}
		if credited < 0 {
			continue
		}
		wo.Ejected, wo.FirstEjection = true, e
		wo.FirstEjection.Host = hostLabel(hosts, e.Host)
		wo.EjectionWindow = fmt.Sprintf("faults[%d]", credited)
		wo.EjectionStart = spans[credited].Start
		wo.TimeToFirstEjection = e.At - spans[credited].Start
		return
	}
}

// downOutcomes computes the outcome of each down period of window i (see DownOutcome).
func downOutcomes(ws []record.FaultWindow, spans []Span, i int, events []record.ProxyEvent, hosts map[string]string,
	timelines []HostTimeline, base baselineRate, end time.Duration) []DownOutcome {
	periods := downSpans(ws[i], end)
	out := make([]DownOutcome, len(periods))
	for k, p := range periods {
		d := &out[k]
		d.Span = p
		for _, t := range timelines {
			if targets(ws[i], t.Host, hosts) && slices.ContainsFunc(t.Ejections, func(e Ejection) bool { return e.Start < p.Start && e.End > p.Start }) {
				d.EjectedAtStart = append(d.EjectedAtStart, t.Host)
			}
		}
		credit := ejectionRange(p)
		if k+1 < len(periods) {
			credit.End = min(credit.End, periods[k+1].Start-1) // from the next period on, the next one's
		}
		for _, e := range events {
			if e.Kind == record.ProxyEjected && targets(ws[i], e.Host, hosts) && credit.containsClosed(e.At) {
				d.Ejected, d.FirstEjection, d.TimeToFirstEjection = true, e, e.At-p.Start
				d.FirstEjection.Host = hostLabel(hosts, e.Host)
				break
			}
		}
		limit, why := recoveryLimit(ws, spans, i, p.End, end)
		next := "fault"
		if k+1 < len(periods) && periods[k+1].Start <= limit {
			limit, next = periods[k+1].Start, "down period"
		}
		d.Recovery = measureRecovery(p, false, limit, why, base, "down period", next)
	}
	return out
}

// ejectionRange is when an ejection counts as a window's: from its start to EjectionGrace after its end
// (both included).
func ejectionRange(s Span) Span { return Span{Start: s.Start, End: s.End + EjectionGrace} }

func (s Span) containsClosed(t time.Duration) bool { return t >= s.Start && t <= s.End }

// recoveryLimit is how far the recovery from window i, ended at from (its end, or the end of one of its
// down periods), may be looked for: until the next fault window starts (one starting at or after from),
// or the run's end. why is not empty when the recovery from window i alone cannot be measured: another
// window is still active at from.
func recoveryLimit(ws []record.FaultWindow, spans []Span, i int, from, end time.Duration) (time.Duration, string) {
	limit := end
	for j := range ws {
		if j == i {
			continue
		}
		switch s := spans[j]; {
		case s.Start >= from:
			limit = min(limit, s.Start)
		case s.End > from || ws[j].End <= 0 && s.End >= from:
			return limit, fmt.Sprintf("faults[%d] is still active when this fault ends: the clients' recovery from this fault alone cannot be told apart (see the recovery after all faults together)", j)
		}
	}
	return limit, ""
}

// measureRecovery measures the clients' recovery after a fault active over span: the first moment from the
// span's end from which a whole RecoveryWindow of requests (by intended send time), ending at or before
// limit, succeeds at the threshold. notMeasured, when not empty, says why it cannot be measured.
// what names what ended at span.End ("fault", "down period"), next what starts at limit when it is not
// the run's end.
func measureRecovery(span Span, open bool, limit time.Duration, notMeasured string, base baselineRate, what, next string) Recovery {
	r := Recovery{Threshold: RecoveryThreshold, Baseline: base.rate, BaselineRequests: base.requests}
	if base.requests > 0 {
		r.Threshold = min(base.rate, RecoveryThreshold)
	}
	switch {
	case open:
		r.Why = whyOpenEnded
	case notMeasured != "":
		r.Why = notMeasured
	case span.End+RecoveryWindow > limit && limit < base.end:
		r.Why = fmt.Sprintf("the next %s started %s after this one ended, less than the %s needed to judge recovery",
			next, formatDuration(limit-span.End), formatDuration(RecoveryWindow))
	case span.End+RecoveryWindow > limit:
		r.Why = fmt.Sprintf("the run ended %s after the %s, less than the %s needed to judge recovery",
			formatDuration(limit-span.End), what, formatDuration(RecoveryWindow))
	default:
		r.Measured = true
		h := base.h
		candidates := []time.Duration{span.End}
		for i := h.index(span.End); i < len(h.at) && h.at[i]+RecoveryWindow <= limit; i++ {
			candidates = append(candidates, h.at[i])
		}
		for _, t := range candidates {
			lo, hi := h.index(t), h.index(t+RecoveryWindow)
			if hi == lo {
				continue
			}
			if rate := 100 * float64(h.ok[hi]-h.ok[lo]) / float64(hi-lo); compare(rate, ">=", r.Threshold) {
				r.Recovered, r.Time = true, t-span.End
				break
			}
		}
		if !r.Recovered {
			until := "the run ended"
			if limit < base.end {
				until = "the next " + next + " started"
			}
			r.Why = fmt.Sprintf("no %s after the %s ended held a success rate of %s%% before %s",
				formatDuration(RecoveryWindow), what, formatPercent(r.Threshold), until)
		}
	}
	return r
}
