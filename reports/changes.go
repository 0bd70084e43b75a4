package reports

import (
	"fmt"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// ChangeOutcome is one of the scenario's configuration changes (record.Change) as the report shows it.
type ChangeOutcome struct {
	Change record.Change // as recorded
	Span   Span          // its window, [Start, End) (End 0: to the run end), clipped to the run
}

// Answered reports whether the proxy answered the change, with an ACK (applied) or a NACK (rejected). As
// in Envoy's xDS protocol, the proxy ACKs a response by sending a DiscoveryRequest whose version_info is
// the response's version, and NACKs it by sending the previous version with error_detail set, keeping
// its last good configuration (Envoy docs: api-docs/xds_protocol, "ACK and NACK semantics";
// api/envoy/service/discovery/v3/discovery.proto, DiscoveryRequest.version_info and .error_detail).
func (c ChangeOutcome) Answered() bool {
	return c.Change.Outcome == record.ChangeApplied || c.Change.Outcome == record.ChangeRejected
}

// ApplyTime is how long the proxy took to answer the change (Answered − Start); 0 when it did not.
func (c ChangeOutcome) ApplyTime() time.Duration {
	if !c.Answered() {
		return 0
	}
	return c.Change.Answered - c.Change.Start
}

// Expected is what the scenario expected of the change: record.Change.Expected, or ChangeApplied when
// the record leaves it empty (a scenario expects a change to apply unless it says expect: rejected).
func (c ChangeOutcome) Expected() string {
	if c.Change.Expected == "" {
		return record.ChangeApplied
	}
	return c.Change.Expected
}

// Unexpected reports whether the change's outcome differs from what the scenario expected of it; an
// unacknowledged change is always unexpected.
func (c ChangeOutcome) Unexpected() bool { return c.Change.Outcome != c.Expected() }

// changeOutcomes lists the record's configuration changes with their windows, in scenario order.
func changeOutcomes(rec *record.Record, end time.Duration) []ChangeOutcome {
	var out []ChangeOutcome
	for _, c := range rec.Changes {
		out = append(out, ChangeOutcome{Change: c, Span: changeSpan(c, end)})
	}
	return out
}

// changeScopes are the phases the outcomes list for the configuration changes: "during change" (all
// windows together), and "during changes[N]" for each when there are several.
func changeScopes(n int) []checks.Scope {
	if n == 0 {
		return nil
	}
	scopes := []checks.Scope{{Relation: checks.During, Changes: true, Change: -1}}
	for i := range n {
		if n > 1 {
			scopes = append(scopes, checks.Scope{Relation: checks.During, Changes: true, Change: i})
		}
	}
	return scopes
}

// changesInScope returns the indexes of the configuration changes a check scoped sc judges (nil sc: the
// whole run): "during changes[N]" that change, "during change" every change, any other scope the
// changes pushed (Start) within its spans; and where, the scope and its spans for a verdict ("" for the
// whole run).
func changesInScope(rec *record.Record, sc *checks.Scope) (idx []int, where string, err error) {
	if sc == nil {
		for i := range rec.Changes {
			idx = append(idx, i)
		}
		return idx, "", nil
	}
	spans, err := ScopeSpans(rec, *sc)
	if err != nil {
		return nil, "", err
	}
	where = fmt.Sprintf(" %s (%s)", sc.String(), formatSpans(spans))
	for i, c := range rec.Changes {
		switch {
		case sc.Changes && sc.Relation == checks.During && (sc.Change < 0 || sc.Change == i):
			idx = append(idx, i)
		case sc.Changes && sc.Relation == checks.During:
		case inSpans(spans, c.Start):
			idx = append(idx, i)
		}
	}
	return idx, where, nil
}

// changeList shows changes by name and outcome, the first five: "changes[0] applied, changes[1]
// rejected (expected applied), …".
func changeList(rec *record.Record, idx []int) string {
	parts := make([]string, 0, min(len(idx), 5))
	for _, i := range idx[:min(len(idx), 5)] {
		c := ChangeOutcome{Change: rec.Changes[i]}
		s := c.Change.Name + " " + orUnknown(c.Change.Outcome)
		if c.Unexpected() {
			s += " (expected " + c.Expected() + ")"
		}
		parts = append(parts, s)
	}
	if len(idx) > 5 {
		parts = append(parts, fmt.Sprintf("and %d more", len(idx)-5))
	}
	return strings.Join(parts, ", ")
}

func orUnknown(outcome string) string {
	if outcome == "" {
		return "(no outcome recorded)"
	}
	return outcome
}

// changeOutcomeText shows a change's outcome with what the scenario expected when it differs:
// "rejected", "unacknowledged (expected applied)".
func changeOutcomeText(c ChangeOutcome) string {
	s := orUnknown(c.Change.Outcome)
	if c.Unexpected() {
		s += " (expected " + c.Expected() + ")"
	}
	return s
}

// changeAnsweredAfter shows how long the proxy took to answer a change, "—" when it did not.
func changeAnsweredAfter(c ChangeOutcome) string {
	if !c.Answered() {
		return "—"
	}
	return formatDelay(c.ApplyTime())
}

// maxDetail is how much of a NACK's error_detail the people's writers show (report.json keeps it whole).
const maxDetail = 80

// shortDetail shortens a NACK's error_detail to one line of at most maxDetail characters.
func shortDetail(d string) string {
	d = strings.Join(strings.Fields(d), " ")
	if r := []rune(d); len(r) > maxDetail {
		return string(r[:maxDetail-1]) + "…"
	}
	return d
}
