package stats

import (
	"encoding/json"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
)

// WriteText writes Envoy's /stats text format: one "name: value" per line, sorted, then one line per
// histogram with its quantiles; optionally only the stats whose name matches filter.
func WriteText(w io.Writer, snap []Stat, hists []HistogramSnapshot, filter *regexp.Regexp) error {
	for _, st := range snap {
		if filter != nil && !filter.MatchString(st.Name) {
			continue
		}
		if _, err := fmt.Fprintf(w, "%s: %d\n", st.Name, st.Value); err != nil {
			return err
		}
	}
	for _, h := range hists {
		if filter != nil && !filter.MatchString(h.Name) {
			continue
		}
		if _, err := fmt.Fprintln(w, h.textLine()); err != nil {
			return err
		}
	}
	return nil
}

// WriteJSON writes Envoy's /stats?format=json shape: {"stats":[{"name":…,"value":…},…,{"histograms":
// {"supported_quantiles":[…],"computed_quantiles":[{"name":…,"values":[{"interval":…,"cumulative":…}]}]}}]}.
// Quantile values without data are null.
func WriteJSON(w io.Writer, snap []Stat, hists []HistogramSnapshot, filter *regexp.Regexp) error {
	type quantile struct {
		Interval   *float64 `json:"interval"`
		Cumulative *float64 `json:"cumulative"`
	}
	type computed struct {
		Name   string     `json:"name"`
		Values []quantile `json:"values"`
	}
	type histograms struct {
		Supported []float64  `json:"supported_quantiles"`
		Computed  []computed `json:"computed_quantiles"`
	}
	out := struct {
		Stats []any `json:"stats"`
	}{Stats: []any{}}
	for _, st := range snap {
		if filter == nil || filter.MatchString(st.Name) {
			out.Stats = append(out.Stats, map[string]any{"name": st.Name, "value": st.Value})
		}
	}
	hs := histograms{Supported: Quantiles, Computed: []computed{}}
	for _, h := range hists {
		if filter != nil && !filter.MatchString(h.Name) {
			continue
		}
		c := computed{Name: h.Name}
		for i := range Quantiles {
			c.Values = append(c.Values, quantile{numberOrNull(h.Interval[i]), numberOrNull(h.Cumul[i])})
		}
		hs.Computed = append(hs.Computed, c)
	}
	if len(hs.Computed) > 0 {
		out.Stats = append(out.Stats, map[string]any{"histograms": hs})
	}
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(out)
}

func numberOrNull(v float64) *float64 {
	if v != v {
		return nil
	}
	return &v
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

// WritePrometheus writes the Prometheus text exposition format, one TYPE line per metric family;
// histograms as cumulative buckets (le in ms), _sum and _count.
func WritePrometheus(w io.Writer, snap []Stat, hists []HistogramSnapshot) error {
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
	return writePromHistograms(w, hists)
}

func writePromHistograms(w io.Writer, hists []HistogramSnapshot) error {
	typed := map[string]bool{}
	for _, h := range hists {
		metric, labels := PromName(h.Name)
		if !typed[metric] {
			typed[metric] = true
			if _, err := fmt.Fprintf(w, "# TYPE %s histogram\n", metric); err != nil {
				return err
			}
		}
		sep := ""
		if labels != "" {
			sep = ","
		}
		for _, b := range h.Buckets {
			if _, err := fmt.Fprintf(w, "%s_bucket{%s%sle=\"%s\"} %d\n", metric, labels, sep, strconv.FormatFloat(b.UpperMs, 'f', -1, 64), b.Count); err != nil {
				return err
			}
		}
		braces := ""
		if labels != "" {
			braces = "{" + labels + "}"
		}
		if _, err := fmt.Fprintf(w, "%s_bucket{%s%sle=\"+Inf\"} %d\n%s_sum%s %s\n%s_count%s %d\n", metric, labels, sep, h.Count,
			metric, braces, strconv.FormatFloat(h.SumMs, 'f', -1, 64), metric, braces, h.Count); err != nil {
			return err
		}
	}
	return nil
}
