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

// PromName converts an Envoy stat name to its Prometheus metric name and labels, as Envoy's
// /stats/prometheus does (PrometheusStatsFormatter, source/server/admin/prometheus_stats.cc): "envoy_"
// and the tag-extracted name with every character outside [a-zA-Z0-9_] as "_", and each tag of the
// default extractors (see ExtractTags) as a label: "cluster.backend.upstream_rq_5xx" →
// envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="backend"}.
func PromName(name string) (metric string, labels string) {
	base, tags := ExtractTags(name)
	var b strings.Builder
	for i, t := range tags {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(sanitize(t.Name))
		b.WriteString(`="`)
		b.WriteString(labelEscaper.Replace(t.Value))
		b.WriteByte('"')
	}
	return sanitize("envoy_" + base), b.String()
}

// labelEscaper escapes a label value as the Prometheus text format requires.
var labelEscaper = strings.NewReplacer(`\`, `\\`, `"`, `\"`, "\n", `\n`)

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
	// One family's samples must be contiguous: group the histograms by metric, in first-seen order.
	type labeled struct {
		labels string
		h      *HistogramSnapshot
	}
	families := map[string][]labeled{}
	var order []string
	for i := range hists {
		metric, labels := PromName(hists[i].Name)
		if _, ok := families[metric]; !ok {
			order = append(order, metric)
		}
		families[metric] = append(families[metric], labeled{labels, &hists[i]})
	}
	for _, metric := range order {
		if _, err := fmt.Fprintf(w, "# TYPE %s histogram\n", metric); err != nil {
			return err
		}
		for _, l := range families[metric] {
			h, labels := l.h, l.labels
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
	}
	return nil
}
