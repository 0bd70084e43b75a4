package reports

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// The "outcomes" object of report.json (README.md). Values a run could not measure are null.
type (
	jsonOutcomes struct {
		EndMs            float64        `json:"end_ms"`
		Windows          []jsonWindow   `json:"windows"`
		Fault            *jsonWindow    `json:"fault"`
		Phases           []jsonPhase    `json:"phases"`
		Attempts         jsonAttempts   `json:"attempts"`
		Overflows        uint64         `json:"overflows"`
		PendingOverflows uint64         `json:"pending_overflows"`
		RetryOverflows   uint64         `json:"retry_overflows"`
		Hosts            []jsonTimeline `json:"hosts"`
		// Version 3: the call graph's outcomes, for a record beyond one hop (absent otherwise).
		Edges    []jsonEdge    `json:"edges,omitempty"`
		Services []jsonService `json:"services,omitempty"`
		// Version 3 (issue #17): the scenario's configuration changes (absent when it made none).
		Changes []jsonChange `json:"changes,omitempty"`
		// Issue #16: the mesh's mutual TLS (absent when the mesh is plain).
		MTLS *jsonMTLS `json:"mtls,omitempty"`
	}
	// jsonMTLS is an MTLSOutcome: the proxies' handshakes to the instances (their ssl.* stats), the
	// instances' as servers, and the certificates.
	jsonMTLS struct {
		Handshakes              uint64 `json:"handshakes"`
		HandshakeErrors         uint64 `json:"handshake_errors"`
		InstanceHandshakes      uint64 `json:"instance_handshakes"`
		InstanceHandshakeErrors uint64 `json:"instance_handshake_errors"`
		Certificates            int    `json:"certificates"`
		Rotations               int    `json:"rotations"`
		ClientCertificates      int    `json:"client_certificates"`
	}
	// jsonChange is a ChangeOutcome: when the change was pushed (start_ms), its window's end clipped to
	// the run (end_ms; open_ended: it ran to the run end), and how the proxy answered.
	jsonChange struct {
		Name       string  `json:"name"`
		Proxy      string  `json:"proxy"`
		What       string  `json:"what"`
		StartMs    float64 `json:"start_ms"`
		EndMs      float64 `json:"end_ms"`
		OpenEnded  bool    `json:"open_ended"`
		Outcome    string  `json:"outcome"`  // applied, rejected or unacknowledged
		Expected   string  `json:"expected"` // what the scenario expected
		Unexpected bool    `json:"unexpected"`
		// null when unacknowledged
		AnsweredMs  *float64 `json:"answered_ms"`
		ApplyTimeMs *float64 `json:"apply_time_ms"`
		Detail      string   `json:"detail"` // the NACK's error_detail, whole
	}
	jsonEdge struct {
		Caller      string            `json:"caller"`
		Callee      string            `json:"callee"`
		Calls       uint64            `json:"calls"`
		Successes   uint64            `json:"successes"`
		Errors      uint64            `json:"errors"`
		SuccessRate float64           `json:"success_rate"`
		StatusCodes map[int]uint64    `json:"status_codes"`
		ErrorKinds  map[string]uint64 `json:"error_kinds"`
		LatencyMs   jsonPercentiles   `json:"latency_ms"`
		// null when not recorded (attempts_from null)
		AttemptsFrom       *string  `json:"attempts_from"`
		AttemptsOver       *uint64  `json:"attempts_over"`
		UpstreamAttempts   *uint64  `json:"upstream_attempts"`
		Retries            *uint64  `json:"retries"`
		RetryAmplification *float64 `json:"retry_amplification"`
		ActualSuccesses    *uint64  `json:"actual_successes"`
		ActualSuccessRate  *float64 `json:"actual_success_rate"` // null also without any attempt
		Overflows          *uint64  `json:"overflows"`
		Ejections          *uint64  `json:"ejections"`
	}
	jsonService struct {
		Name           string        `json:"name"`
		Instances      int           `json:"instances"`
		Entry          bool          `json:"entry"`
		Requests       *uint64       `json:"requests"` // null when not recorded, as the three below
		Successes      *uint64       `json:"successes"`
		Errors         *uint64       `json:"errors"`
		SuccessRate    *float64      `json:"success_rate"`
		ClientRequests uint64        `json:"client_requests"`
		Amplification  *float64      `json:"amplification"` // null also without client requests
		Capacity       *jsonCapacity `json:"capacity"`
	}
	jsonCapacity struct {
		Instances       int     `json:"instances"`
		Workers         int     `json:"workers"`
		Queue           int     `json:"queue"`
		BusyMs          float64 `json:"busy_ms"`
		RunLengthMs     float64 `json:"run_length_ms"`
		Utilisation     float64 `json:"utilisation"`
		Queued          uint64  `json:"queued"`
		QueueTimeMeanMs float64 `json:"queue_time_mean_ms"`
		QueueTimeMaxMs  float64 `json:"queue_time_max_ms"`
		Rejected        uint64  `json:"rejected"`
		TimedOut        uint64  `json:"timed_out"`
	}
	jsonWindow struct {
		Name                  string          `json:"name"`
		Service               string          `json:"service"`
		Instances             []int           `json:"instances"`
		Kind                  string          `json:"kind"`
		StartMs               float64         `json:"start_ms"`
		EndMs                 float64         `json:"end_ms"`
		OpenEnded             bool            `json:"open_ended"`
		TimeToFirstEjectionMs *float64        `json:"time_to_first_ejection_ms"`
		FirstEjection         *jsonProxyEvent `json:"first_ejection"`
		Recovery              jsonRecovery    `json:"recovery"`
		Down                  []jsonDown      `json:"down"`
	}
	jsonDown struct {
		StartMs               float64         `json:"start_ms"`
		EndMs                 float64         `json:"end_ms"`
		TimeToFirstEjectionMs *float64        `json:"time_to_first_ejection_ms"`
		FirstEjection         *jsonProxyEvent `json:"first_ejection"`
		Recovery              jsonRecovery    `json:"recovery"`
		EjectedAtStart        []string        `json:"ejected_at_start"`
	}
	jsonProxyEvent struct {
		Window  string  `json:"window"` // the window it is credited to
		AtMs    float64 `json:"at_ms"`
		Kind    string  `json:"kind"`
		Cluster string  `json:"cluster"`
		Host    string  `json:"host"`
		Reason  string  `json:"reason"`
	}
	jsonRecovery struct {
		Measured         bool     `json:"measured"`
		Recovered        bool     `json:"recovered"`
		TimeMs           *float64 `json:"time_ms"`
		Why              string   `json:"why"`
		Threshold        float64  `json:"threshold"`
		Baseline         float64  `json:"baseline"`
		BaselineRequests uint64   `json:"baseline_requests"`
	}
	jsonPhase struct {
		Scope              string            `json:"scope"`
		Spans              []jsonSpan        `json:"spans"`
		Requests           uint64            `json:"requests"`
		Successes          uint64            `json:"successes"`
		Errors             uint64            `json:"errors"`
		SuccessRate        float64           `json:"success_rate"`
		ErrorRate          float64           `json:"error_rate"`
		AchievedRate       float64           `json:"achieved_rate"`
		StatusCodes        map[int]uint64    `json:"status_codes"`
		ErrorKinds         map[string]uint64 `json:"error_kinds"`
		LatencyMs          jsonPercentiles   `json:"latency_ms"`
		UncorrectedMs      jsonPercentiles   `json:"uncorrected_latency_ms"`
		Retries            *uint64           `json:"retries"`
		UpstreamAttempts   *uint64           `json:"upstream_attempts"`
		AttemptsOver       *uint64           `json:"attempts_over"`
		AttemptsFrom       *string           `json:"attempts_from"`
		RetryAmplification *float64          `json:"retry_amplification"`
		UpstreamRequestsV1 *uint64           `json:"upstream_requests,omitempty"` // version 1: the attempts
		Ejections          *uint64           `json:"ejections"`
		Attempts           jsonAttempts      `json:"attempts"`
	}
	jsonSpan struct {
		StartMs float64 `json:"start_ms"`
		EndMs   float64 `json:"end_ms"`
	}
	jsonAttempts struct {
		Requests      uint64            `json:"requests"`
		Known         uint64            `json:"known"`
		Total         uint64            `json:"total"`
		Max           int               `json:"max"`
		Amplification float64           `json:"amplification"`
		Distribution  map[string]uint64 `json:"distribution"`
	}
	jsonTimeline struct {
		Proxy     string         `json:"proxy,omitempty"` // version 3: the deciding sidecar ("" the ingress proxy)
		Cluster   string         `json:"cluster"`
		Host      string         `json:"host"`
		Ejections []jsonEjection `json:"ejections"`
	}
	jsonEjection struct {
		StartMs float64 `json:"start_ms"`
		EndMs   float64 `json:"end_ms"`
		Open    bool    `json:"open"`
		Reason  string  `json:"reason"`
	}
)

func ptr[T any](v T) *T { return &v }

func outcomesJSON(o Outcomes) jsonOutcomes {
	out := jsonOutcomes{
		EndMs: ms(o.End), Windows: []jsonWindow{}, Phases: []jsonPhase{}, Hosts: []jsonTimeline{},
		Attempts: attemptsJSON(o.Attempts), Overflows: o.Overflows(),
		PendingOverflows: o.PendingOverflows, RetryOverflows: o.RetryOverflows,
	}
	if m := o.MTLS; m != nil {
		out.MTLS = &jsonMTLS{Handshakes: m.Handshakes, HandshakeErrors: m.HandshakeErrors, InstanceHandshakes: m.InstanceHandshakes,
			InstanceHandshakeErrors: m.InstanceHandshakeErrors, Certificates: m.Workloads, Rotations: m.Rotations,
			ClientCertificates: m.ClientCertificates}
	}
	for _, w := range o.Windows {
		out.Windows = append(out.Windows, windowJSON(w))
	}
	if len(o.Windows) > 0 {
		out.Fault = ptr(windowJSON(o.Fault))
	}
	for _, c := range o.Changes {
		out.Changes = append(out.Changes, changeJSON(c))
	}
	for _, p := range o.Phases {
		s := p.Summary
		jp := jsonPhase{
			Scope: p.Scope, Spans: []jsonSpan{},
			Requests: s.Requests, Successes: s.Successes, Errors: s.Errors, SuccessRate: s.SuccessRate, ErrorRate: s.ErrorRate,
			AchievedRate: s.AchievedRate, StatusCodes: orEmpty(s.StatusCodes), ErrorKinds: orEmpty(s.ErrorKinds),
			LatencyMs: jsonPercentilesOf(s.Latency), UncorrectedMs: jsonPercentilesOf(s.Uncorrected),
			Attempts: attemptsJSON(p.Attempts),
		}
		for _, sp := range p.Spans {
			jp.Spans = append(jp.Spans, jsonSpan{ms(sp.Start), ms(sp.End)})
		}
		if p.Attempts.Known > 0 {
			jp.Retries = ptr(s.Retries)
		}
		jp.UpstreamAttempts, jp.AttemptsOver, jp.AttemptsFrom, jp.RetryAmplification = attemptsJSONOf(s)
		if p.EjectionsKnown {
			jp.Ejections = ptr(s.Ejections)
		}
		out.Phases = append(out.Phases, jp)
	}
	for _, h := range o.Hosts {
		jt := jsonTimeline{Proxy: h.Proxy, Cluster: h.Cluster, Host: h.Host, Ejections: []jsonEjection{}}
		for _, e := range h.Ejections {
			jt.Ejections = append(jt.Ejections, jsonEjection{ms(e.Start), ms(e.End), e.Open, e.Reason})
		}
		out.Hosts = append(out.Hosts, jt)
	}
	for _, e := range o.Edges {
		out.Edges = append(out.Edges, edgeJSON(e))
	}
	for _, sv := range o.Services {
		out.Services = append(out.Services, serviceJSON(sv))
	}
	return out
}

func upstreamOf(u jsonUpstream) record.UpstreamRecord {
	out := record.UpstreamRecord{Service: u.Service, Instance: u.Instance, Address: u.Address, Requests: u.Requests,
		Statuses: u.Statuses, Resets: u.Resets, Applied: u.Applied, Canceled: u.Canceled, Hangs: u.Hangs,
		Truncated: u.Truncated, StreamResets: u.StreamResets, GoAways: u.GoAways, Received: u.Received, OK: u.OK}
	if c := u.Capacity; c != nil {
		out.Capacity = &record.CapacityRecord{Workers: c.Workers, Queue: c.Queue, Busy: dur(c.BusyMs), Queued: c.Queued,
			QueueWait: dur(c.QueueWaitMs), MaxQueueWait: dur(c.MaxQueueWaitMs), Rejected: c.Rejected, TimedOut: c.TimedOut}
	}
	return out
}

func edgeJSON(e EdgeOutcome) jsonEdge {
	j := jsonEdge{Caller: e.Caller, Callee: e.Callee, Calls: e.Calls, Successes: e.Successes, Errors: e.Errors,
		SuccessRate: e.SuccessRate, StatusCodes: orEmpty(e.StatusCodes), ErrorKinds: orEmpty(e.ErrorKinds),
		LatencyMs: jsonPercentilesOf(e.Latency)}
	if e.AttemptsFrom != "" {
		j.AttemptsFrom, j.AttemptsOver, j.UpstreamAttempts = ptr(e.AttemptsFrom), ptr(e.AttemptsOver), ptr(e.UpstreamAttempts)
		j.Retries, j.RetryAmplification, j.Overflows = ptr(e.Retries), ptr(e.RetryAmplification), ptr(e.Overflows)
		j.ActualSuccesses = ptr(e.ActualSuccesses)
		if e.UpstreamAttempts > 0 {
			j.ActualSuccessRate = ptr(e.ActualSuccessRate)
		}
	}
	if e.EjectionsKnown {
		j.Ejections = ptr(e.Ejections)
	}
	return j
}

func edgeOf(j jsonEdge) EdgeOutcome {
	e := EdgeOutcome{Caller: j.Caller, Callee: j.Callee, Calls: j.Calls, Successes: j.Successes, Errors: j.Errors,
		SuccessRate: j.SuccessRate, StatusCodes: j.StatusCodes, ErrorKinds: j.ErrorKinds, Latency: percentilesOf(j.LatencyMs)}
	if j.AttemptsFrom != nil {
		e.AttemptsFrom = *j.AttemptsFrom
		e.AttemptsOver, e.UpstreamAttempts, e.Retries = deref(j.AttemptsOver), deref(j.UpstreamAttempts), deref(j.Retries)
		e.RetryAmplification, e.Overflows, e.ActualSuccesses = deref(j.RetryAmplification), deref(j.Overflows), deref(j.ActualSuccesses)
		e.ActualSuccessRate = deref(j.ActualSuccessRate)
	}
	if j.Ejections != nil {
		e.Ejections, e.EjectionsKnown = *j.Ejections, true
	}
	return e
}

func serviceJSON(s ServiceOutcome) jsonService {
	j := jsonService{Name: s.Name, Instances: s.Instances, Entry: s.Entry, ClientRequests: s.ClientRequests}
	if s.Known {
		j.Requests, j.Successes, j.Errors = ptr(s.Requests), ptr(s.Successes), ptr(s.Errors)
		if s.Requests > 0 {
			j.SuccessRate = ptr(s.SuccessRate)
		}
		if s.ClientRequests > 0 {
			j.Amplification = ptr(s.Amplification)
		}
	}
	if c := s.Capacity; c != nil {
		j.Capacity = &jsonCapacity{Instances: c.Instances, Workers: c.Workers, Queue: c.Queue, BusyMs: ms(c.Busy),
			RunLengthMs: ms(c.RunLength), Utilisation: c.Utilisation, Queued: c.Queued, QueueTimeMeanMs: ms(c.QueueTimeMean),
			QueueTimeMaxMs: ms(c.QueueTimeMax), Rejected: c.Rejected, TimedOut: c.TimedOut}
	}
	return j
}

func serviceOf(j jsonService) ServiceOutcome {
	s := ServiceOutcome{Name: j.Name, Instances: j.Instances, Entry: j.Entry, ClientRequests: j.ClientRequests,
		Known: j.Requests != nil, Requests: deref(j.Requests), Successes: deref(j.Successes), Errors: deref(j.Errors),
		SuccessRate: deref(j.SuccessRate), Amplification: deref(j.Amplification)}
	if c := j.Capacity; c != nil {
		s.Capacity = &CapacityOutcome{Instances: c.Instances, Workers: c.Workers, Queue: c.Queue, Busy: dur(c.BusyMs),
			RunLength: dur(c.RunLengthMs), Utilisation: c.Utilisation, Queued: c.Queued, QueueTimeMean: dur(c.QueueTimeMeanMs),
			QueueTimeMax: dur(c.QueueTimeMaxMs), Rejected: c.Rejected, TimedOut: c.TimedOut}
	}
	return s
}

// deref is *p, or the zero value for nil.
func deref[T any](p *T) T {
	var zero T
	if p == nil {
		return zero
	}
	return *p
}

func recoveryJSON(r Recovery) jsonRecovery {
	out := jsonRecovery{Measured: r.Measured, Recovered: r.Recovered, Why: r.Why, Threshold: r.Threshold,
		Baseline: r.Baseline, BaselineRequests: r.BaselineRequests}
	if r.Recovered {
		out.TimeMs = ptr(ms(r.Time))
	}
	return out
}

func windowJSON(w WindowOutcome) jsonWindow {
	r := w.Recovery
	jw := jsonWindow{
		Name: w.Name, Service: w.Window.Service, Instances: w.Window.Instances, Kind: w.Window.Kind,
		StartMs: ms(w.Span.Start), EndMs: ms(w.Span.End), OpenEnded: w.Name != "fault" && w.Window.End <= 0,
		Recovery: recoveryJSON(r), Down: []jsonDown{},
	}
	for _, d := range w.Down {
		jd := jsonDown{StartMs: ms(d.Span.Start), EndMs: ms(d.Span.End), Recovery: recoveryJSON(d.Recovery),
			EjectedAtStart: append([]string{}, d.EjectedAtStart...)}
		if d.Ejected {
			e := d.FirstEjection
			jd.TimeToFirstEjectionMs = ptr(ms(d.TimeToFirstEjection))
			jd.FirstEjection = &jsonProxyEvent{Window: w.Name, AtMs: ms(e.At), Kind: e.Kind, Cluster: e.Cluster, Host: e.Host, Reason: e.Reason}
		}
		jw.Down = append(jw.Down, jd)
	}
	if jw.Instances == nil {
		jw.Instances = []int{}
	}
	if w.Name == "fault" {
		jw.OpenEnded = !r.Measured && r.Why == whyOpenEnded
	}
	if w.Ejected {
		e := w.FirstEjection
		jw.TimeToFirstEjectionMs = ptr(ms(w.TimeToFirstEjection))
		jw.FirstEjection = &jsonProxyEvent{Window: w.EjectionWindow, AtMs: ms(e.At), Kind: e.Kind, Cluster: e.Cluster, Host: e.Host, Reason: e.Reason}
	}
	return jw
}

func changeJSON(c ChangeOutcome) jsonChange {
	ch := c.Change
	j := jsonChange{Name: ch.Name, Proxy: ch.Proxy, What: ch.What, StartMs: ms(ch.Start), EndMs: ms(c.Span.End), OpenEnded: ch.End <= 0,
		Outcome: ch.Outcome, Expected: c.Expected(), Unexpected: c.Unexpected(), Detail: ch.Detail}
	if c.Answered() {
		j.AnsweredMs, j.ApplyTimeMs = ptr(ms(ch.Answered)), ptr(ms(c.ApplyTime()))
	}
	return j
}

// changeOf reads a change back; its window is recomputed from the run's end.
func changeOf(j jsonChange, end time.Duration) ChangeOutcome {
	ch := record.Change{Name: j.Name, Proxy: j.Proxy, What: j.What, Start: dur(j.StartMs), Outcome: j.Outcome, Expected: j.Expected,
		Detail: j.Detail}
	if !j.OpenEnded {
		ch.End = dur(j.EndMs)
	}
	if j.AnsweredMs != nil {
		ch.Answered = dur(*j.AnsweredMs)
	}
	return ChangeOutcome{Change: ch, Span: changeSpan(ch, end)}
}

func attemptsJSON(a AttemptStats) jsonAttempts {
	out := jsonAttempts{Requests: a.Requests, Known: a.Known, Total: a.Total, Max: a.Max, Amplification: a.Amplification,
		Distribution: map[string]uint64{}}
	for k, v := range a.Distribution {
		out.Distribution[strconv.Itoa(k)] = v
	}
	return out
}

// ReadReport reads a report.json written by WriteJSON back into a Report (durations rounded to the
// nanosecond). path may name the file or the run directory holding it.
func ReadReport(path string) (Report, error) {
	if fi, err := os.Stat(path); err == nil && fi.IsDir() {
		path = filepath.Join(path, "report.json")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Report{}, err
	}
	var j jsonReport
	if err := json.Unmarshal(data, &j); err != nil {
		return Report{}, fmt.Errorf("%s: not a meshproof report.json: %w", path, err)
	}
	switch {
	case j.Version == 0:
		return Report{}, fmt.Errorf("%s: not a meshproof report.json: no \"version\"", path)
	case j.Version > ReportVersion:
		return Report{}, fmt.Errorf("%s: report.json version %d is newer than this meshproof reads (%d)", path, j.Version, ReportVersion)
	}
	return fromJSON(j), nil
}

func dur(msf float64) time.Duration { return time.Duration(math.Round(msf * 1e6)) }

func fromJSON(j jsonReport) Report {
	s := j.Summary
	r := Report{
		Version: j.Version, Scenario: j.Scenario, File: j.File, Seed: j.Seed, Started: j.Started, Passed: j.Passed, Partial: j.Partial,
		ProxyStats: j.ProxyStats,
		Summary: Summary{
			Requests: s.Requests, Successes: s.Successes, Errors: s.Errors, SuccessRate: s.SuccessRate, ErrorRate: s.ErrorRate,
			TargetRate: s.TargetRate, AchievedRate: s.AchievedRate, RateHeld: s.RateHeld,
			Duration: dur(s.DurationMs), MaxSendLag: dur(s.MaxSendLagMs), StatusCodes: s.StatusCodes, ErrorKinds: s.ErrorKinds,
			GRPCStatuses: grpcStatusCodes(s.GRPCStatuses),
			Latency:      percentilesOf(s.LatencyMs), Uncorrected: percentilesOf(s.UncorrectedMs),
			Retries: s.Retries, Ejections: s.Ejections,
		},
	}
	sum := &r.Summary
	setAttempts(sum, s.UpstreamAttempts, s.AttemptsOver, s.AttemptsFrom, s.RetryAmplification)
	if s.UpstreamReceived != nil {
		sum.ReceivedKnown, sum.UpstreamReceived = true, *s.UpstreamReceived
	}
	if s.DeliveredAmplification != nil {
		sum.DeliveredAmplification = *s.DeliveredAmplification
	}
	for _, v := range j.Checks {
		r.Checks = append(r.Checks, Verdict{Check: v.Check, Passed: v.Passed, Observed: v.Observed, Required: v.Required})
	}
	for _, u := range j.Upstreams {
		r.Upstreams = append(r.Upstreams, upstreamOf(u))
	}
	r.Series = seriesOf(j.Series)
	o := j.Outcomes
	r.Outcomes = Outcomes{End: dur(o.EndMs), Attempts: attemptsOf(o.Attempts), PendingOverflows: o.PendingOverflows,
		RetryOverflows: o.RetryOverflows}
	for _, w := range o.Windows {
		r.Outcomes.Windows = append(r.Outcomes.Windows, windowOf(w))
	}
	if o.Fault != nil {
		r.Outcomes.Fault = windowOf(*o.Fault)
	}
	for _, c := range o.Changes {
		r.Outcomes.Changes = append(r.Outcomes.Changes, changeOf(c, r.Outcomes.End))
	}
	for _, p := range o.Phases {
		po := PhaseOutcome{Scope: p.Scope, Attempts: attemptsOf(p.Attempts), EjectionsKnown: p.Ejections != nil,
			Summary: Summary{Requests: p.Requests, Successes: p.Successes, Errors: p.Errors, SuccessRate: p.SuccessRate,
				ErrorRate: p.ErrorRate, AchievedRate: p.AchievedRate, StatusCodes: p.StatusCodes, ErrorKinds: p.ErrorKinds,
				Latency: percentilesOf(p.LatencyMs), Uncorrected: percentilesOf(p.UncorrectedMs)}}
		for _, sp := range p.Spans {
			po.Spans = append(po.Spans, Span{dur(sp.StartMs), dur(sp.EndMs)})
			po.Summary.Duration += dur(sp.EndMs) - dur(sp.StartMs)
		}
		if p.Retries != nil {
			po.Summary.Retries = *p.Retries
		}
		if j.Version == 1 && p.UpstreamRequestsV1 != nil && p.RetryAmplification != nil { // the phase's attempts
			p.UpstreamAttempts, p.AttemptsOver, p.AttemptsFrom = p.UpstreamRequestsV1, ptr(p.Attempts.Known), ptr(AttemptsFromSamples)
		}
		setAttempts(&po.Summary, p.UpstreamAttempts, p.AttemptsOver, p.AttemptsFrom, p.RetryAmplification)
		if p.Ejections != nil {
			po.Summary.Ejections = *p.Ejections
		}
		r.Outcomes.Phases = append(r.Outcomes.Phases, po)
	}
	if j.Version == 1 {
		fromV1Summary(&r, s)
	}
	for _, h := range o.Hosts {
		t := HostTimeline{Proxy: h.Proxy, Cluster: h.Cluster, Host: h.Host}
		for _, e := range h.Ejections {
			t.Ejections = append(t.Ejections, Ejection{Start: dur(e.StartMs), End: dur(e.EndMs), Open: e.Open, Reason: e.Reason})
		}
		r.Outcomes.Hosts = append(r.Outcomes.Hosts, t)
	}
	for _, e := range o.Edges {
		r.Outcomes.Edges = append(r.Outcomes.Edges, edgeOf(e))
	}
	for _, sv := range o.Services {
		r.Outcomes.Services = append(r.Outcomes.Services, serviceOf(sv))
	}
	return r
}

// setAttempts sets a summary's upstream attempts from report.json (all null: not recorded).
func setAttempts(s *Summary, attempts, over *uint64, from *string, amplification *float64) {
	if attempts == nil || over == nil || from == nil || amplification == nil {
		return
	}
	s.UpstreamAttempts, s.AttemptsOver, s.AttemptsFrom, s.RetryAmplification = *attempts, *over, *from, *amplification
}

// fromV1Summary reads version 1's whole-run upstream_requests and retry_amplification: the instances'
// request count and received / requests (with upstream records), else the proxy's upstream_rq_total and
// its ratio. The attempts the proxy made come from the attempts distribution when it is known.
func fromV1Summary(r *Report, s jsonSummary) {
	sum := &r.Summary
	if s.UpstreamRequestsV1 != nil {
		switch {
		case len(r.Upstreams) > 0:
			sum.ReceivedKnown, sum.UpstreamReceived = true, *s.UpstreamRequestsV1
			if s.RetryAmplification != nil {
				sum.DeliveredAmplification = *s.RetryAmplification
			}
		case sum.Requests > 0:
			sum.UpstreamAttempts, sum.AttemptsOver, sum.AttemptsFrom = *s.UpstreamRequestsV1, sum.Requests, AttemptsFromProxy
			sum.RetryAmplification = float64(sum.UpstreamAttempts) / float64(sum.AttemptsOver)
		}
	}
	if a := r.Outcomes.Attempts; a.Known > 0 {
		sum.UpstreamAttempts, sum.AttemptsOver, sum.AttemptsFrom, sum.RetryAmplification = a.Total, a.Known, AttemptsFromSamples, a.Amplification
	}
}

func percentilesOf(p jsonPercentiles) record.Percentiles {
	return record.Percentiles{P50: dur(p.P50), P90: dur(p.P90), P99: dur(p.P99), P999: dur(p.P999), Max: dur(p.Max)}
}

func attemptsOf(a jsonAttempts) AttemptStats {
	out := AttemptStats{Requests: a.Requests, Known: a.Known, Total: a.Total, Max: a.Max, Amplification: a.Amplification,
		Distribution: map[int]uint64{}}
	for k, v := range a.Distribution {
		if n, err := strconv.Atoi(k); err == nil {
			out.Distribution[n] = v
			out.Retries += uint64(max(n-1, 0)) * v
		}
	}
	return out
}

func recoveryOf(r jsonRecovery) Recovery {
	out := Recovery{Measured: r.Measured, Recovered: r.Recovered, Why: r.Why,
		Threshold: r.Threshold, Baseline: r.Baseline, BaselineRequests: r.BaselineRequests}
	if r.TimeMs != nil {
		out.Time = dur(*r.TimeMs)
	}
	return out
}

func windowOf(w jsonWindow) WindowOutcome {
	out := WindowOutcome{Name: w.Name, Span: Span{dur(w.StartMs), dur(w.EndMs)},
		Window:   record.FaultWindow{Name: w.Name, Service: w.Service, Instances: w.Instances, Kind: w.Kind, Start: dur(w.StartMs)},
		Recovery: recoveryOf(w.Recovery)}
	for _, jd := range w.Down {
		d := DownOutcome{Span: Span{dur(jd.StartMs), dur(jd.EndMs)}, Recovery: recoveryOf(jd.Recovery), EjectedAtStart: jd.EjectedAtStart}
		if jd.FirstEjection != nil && jd.TimeToFirstEjectionMs != nil {
			e := jd.FirstEjection
			d.Ejected, d.TimeToFirstEjection = true, dur(*jd.TimeToFirstEjectionMs)
			d.FirstEjection = record.ProxyEvent{At: dur(e.AtMs), Kind: e.Kind, Cluster: e.Cluster, Host: e.Host, Reason: e.Reason}
		}
		out.Down = append(out.Down, d)
		out.Window.Down = append(out.Window.Down, record.Period(d.Span))
	}
	if w.Name == "fault" {
		out.Window = record.FaultWindow{}
	} else if !w.OpenEnded {
		out.Window.End = dur(w.EndMs)
	}
	if w.FirstEjection != nil && w.TimeToFirstEjectionMs != nil {
		e := w.FirstEjection
		out.Ejected, out.TimeToFirstEjection = true, dur(*w.TimeToFirstEjectionMs)
		out.FirstEjection = record.ProxyEvent{At: dur(e.AtMs), Kind: e.Kind, Cluster: e.Cluster, Host: e.Host, Reason: e.Reason}
		out.EjectionWindow, out.EjectionStart = e.Window, out.FirstEjection.At-out.TimeToFirstEjection
		if out.EjectionWindow == "" { // version 1: measured from this window's start
			out.EjectionWindow = w.Name
		}
	}
	return out
}
