package stats

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strings"
)

// WriteText writes Envoy's /stats text format: one "name: value" per line, sorted, optionally only the
// stats whose name matches filter.
func WriteText(w io.Writer, snap []Stat, filter *regexp.Regexp) error {
	for _, st := range snap {
		if filter != nil && !filter.MatchString(st.Name) {
			continue
		}
		if _, err := fmt.Fprintf(w, "%s: %d\n", st.Name, st.Value); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes Envoy's /stats?format=json shape: {"stats":[{"name":…,"value":…},…]}.
func WriteJSON(w io.Writer, snap []Stat, filter *regexp.Regexp) error {
	type entry struct {
		Name  string `json:"name"`
		Value int64  `json:"value"`
	}
	out := struct {
		Stats []entry `json:"stats"`
	}{Stats: []entry{}}
	for _, st := range snap {
		if filter == nil || filter.MatchString(st.Name) {
			out.Stats = append(out.Stats, entry{st.Name, st.Value})
		}
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

// tagPrefixes are the stat name prefixes whose second segment Envoy's default tag extractors turn into a
// Prometheus label (cluster names, HTTP connection manager stat prefixes, listener addresses).
var tagPrefixes = []struct{ prefix, label string }{
	{"cluster.", "envoy_cluster_name"},
	{"http.", "envoy_http_conn_manager_prefix"},
	{"listener.", "envoy_listener_address"},
}

// PromName converts an Envoy stat name to its Prometheus metric name and labels, the way Envoy's
// /stats/prometheus does for the tags we emit: "cluster.backend.upstream_rq_retry" →
// envoy_cluster_upstream_rq_retry{envoy_cluster_name="backend"}.
func PromName(name string) (metric string, labels string) {
	for _, tp := range tagPrefixes {
		rest, ok := strings.CutPrefix(name, tp.prefix)
		if !ok {
			continue
		}
		tag, stat, ok := strings.Cut(rest, ".")
		if !ok {
			break
		}
		return sanitize("envoy_" + tp.prefix + stat), fmt.Sprintf("%s=%q", tp.label, tag)
	}
	return sanitize("envoy_" + name), ""
}

func sanitize(s string) string {
	return strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '_' {
			return r
		}
		return '_'
	}, s)
}

// WritePrometheus writes the Prometheus text exposition format, one TYPE line per metric family.
func WritePrometheus(w io.Writer, snap []Stat) error {
	type sample struct {
		labels string
		value  int64
	}
	type family struct {
		kind    Kind
		samples []sample
	}
	families := map[string]*family{}
	var order []string
	for _, st := range snap {
		metric, labels := PromName(st.Name)
		f := families[metric]
		if f == nil {
			f = &family{kind: st.Kind}
			families[metric] = f
			order = append(order, metric)
		}
		f.samples = append(f.samples, sample{labels, st.Value})
	}
	for _, metric := range order {
		f := families[metric]
		typ := "counter"
		if f.kind == KindGauge {
			typ = "gauge"
		}
		if _, err := fmt.Fprintf(w, "# TYPE %s %s\n", metric, typ); err != nil {
			return err
		}
		for _, s := range f.samples {
			var err error
			if s.labels == "" {
				_, err = fmt.Fprintf(w, "%s %d\n", metric, s.value)
			} else {
				_, err = fmt.Fprintf(w, "%s{%s} %d\n", metric, s.labels, s.value)
			}
			if err != nil {
				return err
			}
		}
	}
	return nil
}
