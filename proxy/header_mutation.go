package proxy

import (
	"net/http"

	"github.com/meshproof/meshproof/proxy/config"
)

// mutateHeaders applies the request or response header mutations of a route, its virtual host and
// the route configuration to h, most specific first, as Envoy's RouteEntryImplBase::
// finalizeRequestHeaders and finalizeResponseHeaders do (source/common/router/config_impl.cc, without
// most_specific_header_mutations_wins).
func mutateHeaders(h http.Header, levels ...config.HeaderMutation) {
	for _, m := range levels {
		applyMutation(h, m)
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
// decided against the headers as they stand; then the overwrites are applied, then the appends. An
// empty value does nothing unless keep_empty_value.
func applyMutation(h http.Header, m config.HeaderMutation) {
	if m.Empty() {
		return
	}
	for _, k := range m.Remove {
		delete(h, k)
	}
	var small [8]byte
	do := small[:0]
	for _, o := range m.Add {
		_, present := h[o.Key]
		d := skipOption
		switch {
		case o.Value == "" && !o.KeepEmpty:
		case o.Action == config.AppendIfExistsOrAdd, o.Action == config.AddIfAbsent && !present:
			d = appendOption
		case o.Action == config.OverwriteIfExistsOrAdd, o.Action == config.OverwriteIfExists && present:
			d = overwriteOption
		}
		do = append(do, d)
	}
	for i, o := range m.Add {
		if do[i] == overwriteOption {
			h[o.Key] = []string{o.Value}
		}
	}
	for i, o := range m.Add {
		if do[i] == appendOption {
			v := h[o.Key]
			h[o.Key] = append(v[:len(v):len(v)], o.Value) // never into a slice shared with another map
		}
	}
}
