package proxy

import (
	"net/http"

	"github.com/meshproof/meshproof/proxy/config"
)

// mutateHeaders applies the request or response header mutations of a route, its virtual host and
// the route configuration to h, most specific first, as Envoy's RouteEntryImplBase::
// finalizeRequestHeaders and finalizeResponseHeaders do (source/common/router/config_impl.cc, without
// most_specific_header_mutations_wins).
// fc is what the values' substitution commands read.
func mutateHeaders(h http.Header, fc *formatContext, levels ...config.HeaderMutation) {
	for _, m := range levels {
		applyMutation(h, m, fc)
	}
}

// What one header option does, decided before any of its level's additions.
const (
	skipOption byte = iota
	overwriteOption
	appendOption
)

// applyMutation applies one level's mutation as Envoy's HeaderParser::evaluateHeaders
// (source/common/router/header_parser.cc): the removals first; then each option's append_action is
// decided against the headers as they stand, its value formatted against them; then the overwrites
// are applied, then the appends. An empty value (a command with nothing to give included) does
// nothing unless keep_empty_value.
func applyMutation(h http.Header, m config.HeaderMutation, fc *formatContext) {
	if m.Empty() {
		return
	}
	for _, k := range m.Remove {
		delete(h, k)
	}
	var small [8]byte
	do := small[:0]
	var values []string // the formatted values, when the level has substitution commands
	for i, o := range m.Add {
		v := o.Value
		if o.Format != nil {
			if values == nil {
				values = make([]string, len(m.Add))
			}
			v = fc.format(o.Format)
			values[i] = v
		}
		_, present := h[o.Key]
		d := skipOption
		switch {
		case v == "" && !o.KeepEmpty:
		case o.Action == config.AppendIfExistsOrAdd, o.Action == config.AddIfAbsent && !present:
			d = appendOption
		case o.Action == config.OverwriteIfExistsOrAdd, o.Action == config.OverwriteIfExists && present:
			d = overwriteOption
		}
		do = append(do, d)
	}
	value := func(i int) string {
		if m.Add[i].Format != nil {
			return values[i]
		}
		return m.Add[i].Value
	}
	for i, o := range m.Add {
		if do[i] == overwriteOption {
			h[o.Key] = []string{value(i)}
		}
	}
	for i, o := range m.Add {
		if do[i] == appendOption {
			v := h[o.Key]
			h[o.Key] = append(v[:len(v):len(v)], value(i)) // never into a slice shared with another map
		}
	}
}
