package checks

import (
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Scope relations: where a scoped check looks relative to a fault window, a configuration change's window
// or a load phase.
const (
	Before = "before"
	During = "during"
	After  = "after"
)

// Scope is a parsed check scope: "before fault", "during faults[1]", "after fault", "during phase steady",
// "during changes[0]", "after change".
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
	// Changes makes the scope about the scenario's configuration changes (record.Change windows) rather
	// than its fault windows: Change is then the change's index for "changes[N]", or -1 for "change",
	// the union of all change windows (before: until the first starts; after: from the last end). Fault
	// and Down are then unused.
	Changes bool
	Change  int
}

// String is the canonical text of the scope, as Check.Scope holds it.
func (s Scope) String() string {
	switch {
	case s.Phase != "":
		return During + " phase " + s.Phase
	case s.Changes && s.Change < 0:
		return s.Relation + " change"
	case s.Changes:
		return fmt.Sprintf("%s changes[%d]", s.Relation, s.Change)
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
	`"during fault down", "during faults[N] down" (the down periods of flapping rules), ` +
	`"before change", "during change", "after change" (all configuration changes' windows together), ` +
	`"before changes[N]", "during changes[N]", "after changes[N]" (one change's window), "during phase NAME"`

// ParseScope parses the scope part of a check (what comes before ":"). Keywords are case-insensitive,
// a phase name is kept as written. "change[N]" is read as "changes[N]", "changes" as "change" (and
// "faults" as "fault"); the canonical text (Scope.String) is "changes[N]" and "change".
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
	if sc, ok, err := parseChange(what); ok || err != "" {
		switch {
		case err != "":
			return bad(err)
		case down:
			words = append(words, "down") // name the scope as written
			return bad("down periods belong to flapping fault rules, and a configuration change has none: write it without \"down\"")
		}
		sc.Relation = rel
		return sc, nil
	}
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

// parseChange parses the target of a change scope, "change", "changes", "change[N]" or "changes[N]"
// (lower-cased, without spaces): ok when it is one, why when it is a malformed one.
func parseChange(what string) (sc Scope, ok bool, why string) {
	if what == "change" || what == "changes" {
		return Scope{Changes: true, Change: -1}, true, ""
	}
	idx, found := strings.CutPrefix(what, "changes[")
	if !found {
		idx, found = strings.CutPrefix(what, "change[")
	}
	if !found {
		return Scope{}, false, ""
	}
	if idx, found = strings.CutSuffix(idx, "]"); found {
		if n, err := strconv.Atoi(idx); err == nil && n >= 0 && strconv.Itoa(n) == idx {
			return Scope{Changes: true, Change: n}, true, ""
		}
	}
	return Scope{}, false, fmt.Sprintf("bad change index in %q: want changes[N] with N = 0, 1, …, the change's place in the scenario's changes", what)
}

// Exists tells whether a run (or scenario) with ctx's fault windows (faults[0] … faults[Faults−1]),
// configuration changes (changes[0] … changes[Changes−1]) and load phase names has the scope; the error
// says why not, naming the ones it has. Services and Edges are not looked at.
func (s Scope) Exists(ctx ScopeContext) error {
	switch {
	case s.Phase != "":
		switch {
		case slices.Contains(ctx.Phases, s.Phase):
			return nil
		case len(ctx.Phases) == 0:
			return fmt.Errorf("the run has no named load phases")
		}
		return fmt.Errorf("the run has no load phase %q; its phases: %s", s.Phase, strings.Join(ctx.Phases, ", "))
	case s.Changes && ctx.Changes == 0:
		return fmt.Errorf("the run has no configuration changes")
	case s.Changes && s.Change >= ctx.Changes:
		return fmt.Errorf("the run has no changes[%d]; its changes: %s", s.Change, ChangeNames(ctx.Changes))
	case s.Changes:
		return nil
	case ctx.Faults == 0:
		return fmt.Errorf("the run has no fault windows")
	case s.Fault >= ctx.Faults:
		return fmt.Errorf("the run has no faults[%d]; its fault windows: %s", s.Fault, WindowNames(ctx.Faults))
	}
	return nil
}

// ChangeNames names n configuration changes: "changes[0], changes[1]".
func ChangeNames(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("changes[%d]", i)
	}
	return strings.Join(names, ", ")
}

// WindowNames names n fault windows: "faults[0], faults[1]".
func WindowNames(n int) string {
	names := make([]string, n)
	for i := range names {
		names[i] = fmt.Sprintf("faults[%d]", i)
	}
	return strings.Join(names, ", ")
}

// ScopeContext is what a scenario offers a check's scope, for validating the check before a run.
type ScopeContext struct {
	Faults int // how many fault rules the scenario has (faults[0] … faults[Faults−1])
	// Changes is how many configuration changes the scenario has (changes[0] … changes[Changes−1]).
	Changes int
	Phases  []string // the load phases' names
	// Services are the scenario's service names; Edges its call graph, caller → callee.
	Services []string
	Edges    [][2]string
}

// ValidateScope tells whether a check's scope and target exist in a scenario, for validating it before
// running it: the phase scope's fault window, configuration change or load phase, the target's service or
// edge. A check without either is valid.
func ValidateScope(c Check, ctx ScopeContext) error {
	if c.Scope != "" {
		sc, err := ParseScope(c.Scope)
		if err != nil {
			return err
		}
		if err := sc.Exists(ctx); err != nil {
			return fmt.Errorf("check %q: scope %q: %w", c.String(), c.Scope, err)
		}
	}
	if err := c.Target.Exists(ctx.Services, ctx.Edges); err != nil {
		return fmt.Errorf("check %q: %w", c.String(), err)
	}
	return nil
}

// Exists tells whether a scenario with these services and call-graph edges has the target; the error
// says why not, naming the ones it has. The zero Target (the clients) always exists.
func (t Target) Exists(services []string, edges [][2]string) error {
	switch {
	case t.IsService() && !slices.Contains(services, t.Service):
		if len(services) == 0 {
			return fmt.Errorf("unknown service %q: the scenario names no services", t.Service)
		}
		return fmt.Errorf("unknown service %q; the scenario's services: %s", t.Service, strings.Join(services, ", "))
	case t.IsEdge() && !slices.Contains(edges, [2]string{t.Caller, t.Callee}):
		if len(edges) == 0 {
			return fmt.Errorf("unknown edge %s->%s: the scenario's services call no other service, so it has no edges", t.Caller, t.Callee)
		}
		names := make([]string, len(edges))
		for i, e := range edges {
			names[i] = e[0] + "->" + e[1]
		}
		return fmt.Errorf("unknown edge %s->%s; the scenario's edges: %s", t.Caller, t.Callee, strings.Join(names, ", "))
	}
	return nil
}
