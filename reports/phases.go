package reports

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// Span is a half-open stretch of a run, [Start, End), as offsets from the run start.
type Span struct{ Start, End time.Duration }

// Len is the span's length (0 when empty).
func (s Span) Len() time.Duration { return max(s.End-s.Start, 0) }

func (s Span) contains(t time.Duration) bool { return t >= s.Start && t < s.End }

// Scope relations: where a scoped check looks relative to a fault window or load phase.
const (
	Before = "before"
	During = "during"
	After  = "after"
)

// Scope is a parsed check scope: "before fault", "during faults[1]", "after fault", "during phase steady".
type Scope struct {
	Relation string // Before, During or After
	// Fault is the fault window's index for "faults[N]", or -1 for "fault": the union of all windows
	// (before: until the first starts; after: from the last end).
	Fault int
	Phase string // a load phase's name ("during phase NAME"); Fault is then unused
	// Down narrows "during" a fault to the down periods of flapping rules ("during faults[2] down"): the
	// stretches in which the rule was active (record.FaultWindow.Down); a rule that does not flap is down
	// its whole window.
	Down bool
}

// String is the canonical text of the scope, as Check.Scope holds it.
func (s Scope) String() string {
	switch {
	case s.Phase != "":
		return During + " phase " + s.Phase
	case s.Fault < 0 && s.Down:
		return s.Relation + " fault down"
	case s.Fault < 0:
		return s.Relation + " fault"
	case s.Down:
		return fmt.Sprintf("%s faults[%d] down", s.Relation, s.Fault)
	}
	return fmt.Sprintf("%s faults[%d]", s.Relation, s.Fault)
}

const acceptedScopes = `"before fault", "during fault", "after fault" (all fault windows together), ` +
	`"before faults[N]", "during faults[N]", "after faults[N]" (one window), ` +
	`"during fault down", "during faults[N] down" (the down periods of flapping rules), "during phase NAME"`

// ParseScope parses the scope part of a check (what comes before ":"). Keywords are case-insensitive,
// a phase name is kept as written.
func ParseScope(text string) (Scope, error) {
	words := strings.Fields(text)
	bad := func(why string) (Scope, error) {
		return Scope{}, fmt.Errorf("scope %q: %s; accepted: %s", strings.Join(words, " "), why, acceptedScopes)
	}
	if len(words) == 0 {
		return bad("empty scope before \":\"")
	}
	rel := strings.ToLower(words[0])
	if rel == "phase" { // "phase steady" is short for "during phase steady"
		words = append([]string{During}, words...)
		rel = During
	}
	if !slices.Contains([]string{Before, During, After}, rel) {
		return bad(fmt.Sprintf("it must start with before, during or after, not %q", words[0]))
	}
	if len(words) == 1 {
		return bad(fmt.Sprintf("%q of what", rel))
	}
	if strings.ToLower(words[1]) == "phase" {
		switch {
		case rel != During:
			return bad(fmt.Sprintf("load phases take %q only, not %q", During, rel))
		case len(words) != 3:
			return bad("want one phase name after \"phase\"")
		}
		return Scope{Relation: During, Phase: words[2]}, nil
	}
	down := len(words) > 2 && strings.EqualFold(words[len(words)-1], "down")
	if down {
		if rel != During {
			return bad(fmt.Sprintf("down periods take %q only, not %q", During, rel))
		}
		words = words[:len(words)-1]
	}
	what := strings.ToLower(strings.Join(words[1:], ""))
	if what == "fault" || what == "faults" {
		return Scope{Relation: rel, Fault: -1, Down: down}, nil
	}
	if idx, ok := strings.CutPrefix(what, "faults["); ok {
		if idx, ok = strings.CutSuffix(idx, "]"); ok {
			if n, err := strconv.Atoi(idx); err == nil && n >= 0 && strconv.Itoa(n) == idx {
				return Scope{Relation: rel, Fault: n, Down: down}, nil
			}
		}
		return bad(fmt.Sprintf("bad fault index in %q: want faults[N] with N = 0, 1, …, the fault's place in the scenario", strings.Join(words[1:], " ")))
	}
	return bad(fmt.Sprintf("unknown target %q", strings.Join(words[1:], " ")))
}

// RunEnd is the end of the run as offset from its start: the planned load duration, or just after the
// last intended send when that is later.
func RunEnd(rec *record.Record) time.Duration {
	end := rec.Duration
	for _, s := range rec.Samples {
		end = max(end, s.Intended+1)
	}
	return end
}

// windowSpan is when a fault window was active, open-ended windows running to the run end, clipped to
// the run.
func windowSpan(w record.FaultWindow, end time.Duration) Span {
	s := Span{Start: min(max(w.Start, 0), end), End: end}
	if w.End > 0 {
		s.End = min(max(w.End, s.Start), end)
	}
	return s
}

// downSpans is when a fault window's rule was active: its down periods (record.FaultWindow.Down) clipped
// to its span, or its whole span when it does not flap. Empty periods are left out.
func downSpans(w record.FaultWindow, end time.Duration) []Span {
	span := windowSpan(w, end)
	if len(w.Down) == 0 {
		return []Span{span}
	}
	var out []Span
	for _, p := range w.Down {
		s := Span{Start: min(max(p.Start, span.Start), span.End), End: min(max(p.End, span.Start), span.End)}
		if s.Len() > 0 {
			out = append(out, s)
		}
	}
	return out
}

// faultSpans returns the spans of the fault windows a scope names (-1: all), merged and sorted; with
// down, their down periods (downSpans).
func faultSpans(rec *record.Record, fault int, down bool, end time.Duration) []Span {
	var spans []Span
	for i, w := range rec.Windows {
		if fault >= 0 && fault != i {
			continue
		}
		ws := []Span{windowSpan(w, end)}
		if down {
			ws = downSpans(w, end)
		}
		for _, s := range ws {
			if s.Len() > 0 {
				spans = append(spans, s)
			}
		}
	}
	slices.SortFunc(spans, func(a, b Span) int { return int(a.Start - b.Start) })
	var merged []Span
	for _, s := range spans {
		if n := len(merged); n > 0 && s.Start <= merged[n-1].End {
			merged[n-1].End = max(merged[n-1].End, s.End)
			continue
		}
		merged = append(merged, s)
	}
	return merged
}

// ScopeSpans returns the stretches of the run a scope covers, or an error saying why the run has no such
// scope (an unknown fault index or phase). "before" a fault runs from the run start to the (first)
// window's start; "after" from the (last) window's end to the run end, and is empty for an open-ended
// window.
func ScopeSpans(rec *record.Record, sc Scope) ([]Span, error) {
	end := RunEnd(rec)
	if sc.Phase != "" {
		for _, p := range rec.Phases {
			if p.Name == sc.Phase {
				return []Span{{Start: min(max(p.Start, 0), end), End: min(max(p.End, p.Start), end)}}, nil
			}
		}
		names := make([]string, len(rec.Phases))
		for i, p := range rec.Phases {
			names[i] = p.Name
		}
		if len(names) == 0 {
			return nil, fmt.Errorf("the run has no named load phases")
		}
		return nil, fmt.Errorf("the run has no load phase %q; its phases: %s", sc.Phase, strings.Join(names, ", "))
	}
	switch {
	case len(rec.Windows) == 0:
		return nil, fmt.Errorf("the run has no fault windows")
	case sc.Fault >= len(rec.Windows):
		return nil, fmt.Errorf("the run has no faults[%d]; its fault windows: %s", sc.Fault, windowNames(rec.Windows))
	}
	during := faultSpans(rec, sc.Fault, sc.Down, end)
	first, last := Span{}, Span{Start: end, End: end}
	if len(during) > 0 {
		first, last = during[0], during[len(during)-1]
	} else if sc.Fault >= 0 { // a window that lies wholly after the run's end
		w := windowSpan(rec.Windows[sc.Fault], end)
		first, last = w, w
	}
	switch sc.Relation {
	case Before:
		return []Span{{0, first.Start}}, nil
	case After:
		return []Span{{last.End, end}}, nil
	}
	return during, nil
}

func windowNames(ws []record.FaultWindow) string {
	names := make([]string, len(ws))
	for i := range ws {
		names[i] = fmt.Sprintf("faults[%d]", i)
	}
	return strings.Join(names, ", ")
}

// ValidateScope tells whether a check's scope exists in a run with these fault windows (how many) and
// load phase names, for validating a scenario before running it. A check without a scope is valid.
func ValidateScope(c Check, windows int, phases []string) error {
	if c.Scope == "" {
		return nil
	}
	sc, err := ParseScope(c.Scope)
	if err != nil {
		return err
	}
	rec := &record.Record{Windows: make([]record.FaultWindow, windows)}
	for _, p := range phases {
		rec.Phases = append(rec.Phases, record.LoadPhase{Name: p})
	}
	if _, err := ScopeSpans(rec, sc); err != nil {
		return fmt.Errorf("check %q: scope %q: %w", c.String(), c.Scope, err)
	}
	return nil
}

// formatSpans shows spans as "10s–20s, 25s–30s".
func formatSpans(spans []Span) string {
	if len(spans) == 0 {
		return "empty"
	}
	parts := make([]string, len(spans))
	for i, s := range spans {
		parts[i] = formatOffset(s.Start) + "–" + formatOffset(s.End)
	}
	return strings.Join(parts, ", ")
}

// formatOffset shows an offset from the run start: "0s", "10s", "12.5s", "850ms".
func formatOffset(d time.Duration) string {
	if d == 0 {
		return "0s"
	}
	if d%time.Millisecond == 0 && d >= time.Second {
		return strconv.FormatFloat(d.Seconds(), 'f', -1, 64) + "s"
	}
	return formatDuration(d)
}
