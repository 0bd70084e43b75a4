package reports

import (
	"cmp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// Span is a half-open stretch of a run, [Start, End), as offsets from the run start.
type Span struct{ Start, End time.Duration }

// Len is the span's length (0 when empty).
func (s Span) Len() time.Duration { return max(s.End-s.Start, 0) }

func (s Span) contains(t time.Duration) bool { return t >= s.Start && t < s.End }

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
		spans = append(spans, ws...)
	}
	return mergeSpans(spans)
}

// changeSpan is a configuration change's window, [Start, End) with End 0 meaning the run end, clipped to
// the run.
func changeSpan(c record.Change, end time.Duration) Span {
	return windowSpan(record.FaultWindow{Start: c.Start, End: c.End}, end)
}

// changeSpans returns the windows of the configuration changes a scope names (-1: all), merged and
// sorted.
func changeSpans(rec *record.Record, change int, end time.Duration) []Span {
	var spans []Span
	for i, c := range rec.Changes {
		if change < 0 || change == i {
			spans = append(spans, changeSpan(c, end))
		}
	}
	return mergeSpans(spans)
}

// mergeSpans sorts spans and merges those that overlap or touch, leaving out the empty ones.
func mergeSpans(spans []Span) []Span {
	spans = slices.DeleteFunc(slices.Clone(spans), func(s Span) bool { return s.Len() <= 0 })
	slices.SortFunc(spans, func(a, b Span) int { return cmp.Compare(a.Start, b.Start) })
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
// scope (an unknown fault or change index, or phase). "before" a fault runs from the run start to the
// (first) window's start; "after" from the (last) window's end to the run end, and is empty for an
// open-ended window. A configuration change's scope is the same with the change's window, [Start, End)
// (End 0: until the run end), clipped to the run.
func ScopeSpans(rec *record.Record, sc checks.Scope) ([]Span, error) {
	end := RunEnd(rec)
	names := make([]string, len(rec.Phases))
	for i, p := range rec.Phases {
		names[i] = p.Name
	}
	if err := sc.Exists(checks.ScopeContext{Faults: len(rec.Windows), Changes: len(rec.Changes), Phases: names}); err != nil {
		return nil, err
	}
	if sc.Phase != "" {
		p := rec.Phases[slices.Index(names, sc.Phase)]
		return []Span{{Start: min(max(p.Start, 0), end), End: min(max(p.End, p.Start), end)}}, nil
	}
	var during []Span
	var one *Span // the one window the scope names, if it names one
	switch {
	case sc.Changes:
		during = changeSpans(rec, sc.Change, end)
		if sc.Change >= 0 {
			one = ptr(changeSpan(rec.Changes[sc.Change], end))
		}
	default:
		during = faultSpans(rec, sc.Fault, sc.Down, end)
		if sc.Fault >= 0 {
			one = ptr(windowSpan(rec.Windows[sc.Fault], end))
		}
	}
	first, last := Span{}, Span{Start: end, End: end}
	if len(during) > 0 {
		first, last = during[0], during[len(during)-1]
	} else if one != nil { // a window that lies wholly after the run's end, or is empty
		first, last = *one, *one
	}
	switch sc.Relation {
	case checks.Before:
		return []Span{{0, first.Start}}, nil
	case checks.After:
		return []Span{{last.End, end}}, nil
	}
	return during, nil
}

func windowNames(ws []record.FaultWindow) string { return checks.WindowNames(len(ws)) }

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
