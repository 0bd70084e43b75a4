package reports

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// judgeTarget judges a check on an edge or a service of the call graph.
func judgeTarget(v Verdict, c checks.Check, sc *checks.Scope, rec *record.Record) Verdict {
	t := c.Target
	name, m, err := checks.LookupFor(t, c.Metric)
	if err != nil {
		v.Observed = err.Error()
		return v
	}
	if sc != nil {
		if err := checks.Fits(name, m, *sc); err != nil {
			v.Observed = err.Error()
			return v
		}
	}
	var spans []Span // nil: the whole run
	if sc != nil {
		if spans, err = ScopeSpans(rec, *sc); err != nil {
			v.Observed = fmt.Sprintf("scope %q: %v", c.Scope, err)
			return v
		}
		if spans == nil {
			spans = []Span{} // a phase that covers no time is still a phase
		}
	}
	if t.IsEdge() {
		return judgeEdge(v, c, name, m, spans, rec)
	}
	return judgeService(v, c, name, m, spans, rec)
}

// judged fills in a verdict from the value x of the metric: the observed text says what x is
// (shown), and where.
func judged(v Verdict, c checks.Check, name string, x float64, shown, where string) Verdict {
	v.Observed = strings.TrimSpace(c.Target.String() + " " + name + " = " + shown + where)
	v.measured(c, x)
	return v
}

func judgeEdge(v Verdict, c checks.Check, name string, m checks.Metric, spans []Span, rec *record.Record) Verdict {
	t := c.Target
	edges := graphEdges(rec)
	i := slices.IndexFunc(edges, func(e record.Edge) bool { return e.Caller == t.Caller && e.Callee == t.Callee })
	if i < 0 {
		v.Observed = fmt.Sprintf("the run has no edge %s->%s", t.Caller, t.Callee)
		if names := edgeNames(rec); names != "" {
			v.Observed += "; its edges: " + names
		} else {
			v.Observed += ": its record holds no calls between services"
		}
		return v
	}
	e := EdgeOf(rec, edges[i], spans)
	where := ""
	if spans != nil {
		where = fmt.Sprintf(" %s (%s, %d calls)", c.Scope, formatSpans(spans), e.Calls)
	}
	notRecorded := func(why string) Verdict {
		v.Observed = fmt.Sprintf("%s %s not recorded%s: %s", t, name, where, why)
		return v
	}
	if e.Calls == 0 && (m.Kind == checks.Percent || m.Kind == checks.Latency || m.Kind == checks.Ratio) {
		v.Observed = fmt.Sprintf("%s: no calls%s: nothing to judge %s on", t, where, name)
		if spans == nil {
			v.Observed = fmt.Sprintf("%s: no calls in the run: nothing to judge %s on", t, name)
		}
		return v
	}
	attempts := name == "actual_success_rate" || name == "retries" || name == "retry_amplification" || name == "overflows"
	if attempts && e.AttemptsFrom == "" {
		why := "the calls carry no attempt counts"
		if spans == nil {
			why += " and the sidecars exported no upstream_rq_total for the callee's cluster"
		} else {
			why += " (the sidecars' counters cover the whole run only)"
		}
		return notRecorded(why)
	}
	note := edgeAttemptsNote(e)
	switch name {
	case "requests":
		return judged(v, c, name, float64(e.Calls), fmt.Sprint(e.Calls), where)
	case "successes":
		return judged(v, c, name, float64(e.Successes), fmt.Sprint(e.Successes), where)
	case "errors":
		return judged(v, c, name, float64(e.Errors), fmt.Sprint(e.Errors), where)
	case "success_rate":
		return judged(v, c, name, e.SuccessRate, fmt.Sprintf("%s%% (%d/%d calls)", formatPercent(e.SuccessRate), e.Successes, e.Calls), where)
	case "actual_success_rate":
		if e.UpstreamAttempts == 0 {
			return notRecorded(fmt.Sprintf("the sidecars made no attempt for the %d calls (every one turned away)", e.AttemptsOver))
		}
		return judged(v, c, name, e.ActualSuccessRate, fmt.Sprintf("%s%% (%d successful attempts / %d attempts)",
			formatPercent(e.ActualSuccessRate), e.ActualSuccesses, e.UpstreamAttempts)+note, where)
	case "retries":
		return judged(v, c, name, float64(e.Retries), fmt.Sprint(e.Retries)+note, where)
	case "retry_amplification":
		return judged(v, c, name, e.RetryAmplification, fmt.Sprintf("%s (%d attempts / %d calls)",
			formatRatio(e.RetryAmplification), e.UpstreamAttempts, e.AttemptsOver)+note, where)
	case "overflows":
		return judged(v, c, name, float64(e.Overflows), fmt.Sprint(e.Overflows)+note, where)
	case "ejections":
		if !e.EjectionsKnown {
			return notRecorded(fmt.Sprintf("the sidecars emitted no ejection events (they counted %d over the run)",
				edges[i].SidecarStats["outlier_detection.ejections_enforced_total"]))
		}
		v = judged(v, c, name, float64(e.Ejections), fmt.Sprint(e.Ejections), where)
		if !v.Passed {
			v.Observed += edgeEjectionState(rec, edges[i], spans)
		}
		return v
	}
	if lo, hi, ok, _ := checks.Status(name); ok {
		var n uint64
		for code, k := range e.StatusCodes {
			if code >= lo && code < hi {
				n += k
			}
		}
		return judged(v, c, name, float64(n), fmt.Sprint(n), where)
	}
	if d, ok := pickLatency(e.Latency, name); ok {
		return judged(v, c, name, d.Seconds(), formatDuration(d), where)
	}
	v.Observed = fmt.Sprintf("%s %s cannot be judged here", t, name)
	return v
}

// pickLatency picks a percentile by its metric name.
func pickLatency(p record.Percentiles, name string) (time.Duration, bool) {
	switch name {
	case "p50":
		return p.P50, true
	case "p90":
		return p.P90, true
	case "p99":
		return p.P99, true
	case "p999":
		return p.P999, true
	case "max":
		return p.Max, true
	}
	return 0, false
}

// edgeAttemptsNote says where an edge's attempt-based numbers come from when it is not every call's
// own count.
func edgeAttemptsNote(e EdgeOutcome) string {
	switch {
	case e.AttemptsFrom == AttemptsFromSidecars:
		return " (from the sidecars' counters: the calls carry no attempt counts)"
	case e.AttemptsFrom == AttemptsFromCalls && e.AttemptsOver < e.Calls:
		return fmt.Sprintf(" (attempts known for %d of %d calls)", e.AttemptsOver, e.Calls)
	}
	return ""
}

// edgeEjectionState says what the caller's sidecars did about the callee's hosts: each ejection (in the
// scope when there is one), or, without any, why not from their counters and events.
func edgeEjectionState(rec *record.Record, e record.Edge, spans []Span) string {
	hosts := hostLabels(rec)
	var did []string
	for _, ev := range sortedEvents(rec.ProxyEvents) {
		if ev.Kind == record.ProxyEjected && sidecarOf(ev) == e.Caller && ev.Cluster == e.Callee && (spans == nil || inSpans(spans, ev.At)) {
			did = append(did, fmt.Sprintf("%s ejected %s at %s", ev.Proxy, hostLabel(hosts, ev.Host), formatOffset(ev.At)))
		}
	}
	if len(did) > 0 {
		shown := strings.Join(did[:min(len(did), 5)], ", ")
		if len(did) > 5 {
			shown += fmt.Sprintf(" and %d more", len(did)-5)
		}
		return "; the sidecars: " + shown
	}
	why := sidecarWhy(rec, e, func(string) bool { return true })
	if why == "" {
		return "; no sidecar of " + e.Caller + " ejected a " + e.Callee + " host"
	}
	return "; no sidecar of " + e.Caller + " ejected a " + e.Callee + " host" + why
}

// sidecarWhy says, from the caller's sidecars' counters for the callee's cluster and their
// detected_not_enforced / overflow events for the hosts match accepts, why they ejected none.
func sidecarWhy(rec *record.Record, e record.Edge, match func(host string) bool) string {
	stats := map[string]uint64{}
	for k, n := range e.SidecarStats {
		stats["cluster."+e.Callee+"."+k] = n
	}
	why := clusterWhy(stats, e.Callee, len(rec.ProxyEvents) > 0)
	for i := range why {
		why[i] = e.Caller + "'s sidecars: " + why[i]
	}
	why = append(why, decisionEvents(rec, func(ev record.ProxyEvent) bool {
		return sidecarOf(ev) == e.Caller && ev.Cluster == e.Callee && match(ev.Host)
	})...)
	if len(why) == 0 {
		return ""
	}
	return "; why, from the sidecars: " + strings.Join(why, "; ")
}

func judgeService(v Verdict, c checks.Check, name string, m checks.Metric, spans []Span, rec *record.Record) Verdict {
	t := c.Target
	svcs := graphServices(rec)
	i := slices.IndexFunc(svcs, func(s record.Service) bool { return s.Name == t.Service })
	if i < 0 {
		v.Observed = fmt.Sprintf("the run has no service %q", t.Service)
		if names := serviceNames(rec); names != "" {
			v.Observed += "; its services: " + names
		}
		return v
	}
	s := ServiceOf(rec, svcs[i], spans)
	where := ""
	if spans != nil {
		where = fmt.Sprintf(" %s (%s, %d received)", c.Scope, formatSpans(spans), s.Requests)
	}
	if m.Scopes == checks.WholeRun { // the capacity's metrics
		capa := s.Capacity
		if capa == nil {
			v.Observed = fmt.Sprintf("service %s has no capacity: %s not recorded (its instances have no workers and queue, or the runner did not record them)", t.Service, name)
			return v
		}
		note := s.capacityNote()
		switch name {
		case "utilisation":
			return judged(v, c, name, capa.Utilisation, fmt.Sprintf("%s%% (busy %s of %d workers × %s)",
				formatPercent(capa.Utilisation), formatDelay(capa.Busy), capa.Workers, formatDelay(capa.RunLength))+note, "")
		case "queue_time_mean":
			return judged(v, c, name, capa.QueueTimeMean.Seconds(), fmt.Sprintf("%s (the mean wait of %d queued requests)",
				formatDelay(capa.QueueTimeMean), capa.Queued)+note, "")
		case "queue_time_max":
			return judged(v, c, name, capa.QueueTimeMax.Seconds(), formatDelay(capa.QueueTimeMax)+note, "")
		case "rejected":
			return judged(v, c, name, float64(capa.Rejected), fmt.Sprint(capa.Rejected)+note, "")
		case "queue_timeouts":
			return judged(v, c, name, float64(capa.TimedOut), fmt.Sprint(capa.TimedOut)+note, "")
		}
	}
	if !s.Known {
		why := "the run has no upstream records (the instances' request counts)"
		if spans != nil {
			why = "the instances' arrivals per " + formatDuration(record.BucketWidth) + " (UpstreamRecord.Received) are not recorded"
		}
		v.Observed = fmt.Sprintf("%s %s not recorded%s: %s", t, name, where, why)
		return v
	}
	switch name {
	case "requests":
		return judged(v, c, name, float64(s.Requests), fmt.Sprint(s.Requests), where)
	case "successes":
		return judged(v, c, name, float64(s.Successes), fmt.Sprint(s.Successes), where)
	case "errors":
		return judged(v, c, name, float64(s.Errors), fmt.Sprint(s.Errors), where)
	case "success_rate":
		if s.Requests == 0 {
			v.Observed = fmt.Sprintf("%s received no requests%s: nothing to judge %s on", t, where, name)
			return v
		}
		return judged(v, c, name, s.SuccessRate, fmt.Sprintf("%s%% (%d/%d received)", formatPercent(s.SuccessRate), s.Successes, s.Requests), where)
	case "amplification":
		if s.ClientRequests == 0 {
			v.Observed = fmt.Sprintf("%s: no client requests%s: nothing to judge %s on", t, where, name)
			return v
		}
		return judged(v, c, name, s.Amplification, fmt.Sprintf("%s (%d received / %d client requests)",
			formatRatio(s.Amplification), s.Requests, s.ClientRequests), where)
	}
	v.Observed = fmt.Sprintf("%s %s cannot be judged here", t, name)
	return v
}
