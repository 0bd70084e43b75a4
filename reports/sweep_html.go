package reports

import (
	"fmt"
	"html/template"
	"io"
	"math"
	"strings"
)

// sweepMetric is one heat map of report.html: a key outcome of each point.
type sweepMetric struct {
	Title string
	value func(SweepPoint) (float64, bool) // false: the point has no value (a run error, not recorded)
	text  func(float64) string
}

var sweepMetrics = []sweepMetric{
	{"success rate", func(p SweepPoint) (float64, bool) { return p.Outcomes.SuccessRate, hasOutcomes(p) },
		func(x float64) string { return formatPercent(x) + "%" }},
	{"retry amplification", func(p SweepPoint) (float64, bool) {
		return p.Outcomes.RetryAmplification, hasOutcomes(p) && p.Outcomes.AmplificationKnown
	}, formatRatio},
	{"retries", func(p SweepPoint) (float64, bool) { return float64(p.Outcomes.Retries), hasOutcomes(p) }, formatSig},
	{"ejections", func(p SweepPoint) (float64, bool) { return float64(p.Outcomes.Ejections), hasOutcomes(p) }, formatSig},
	{"breaker overflows", func(p SweepPoint) (float64, bool) { return float64(p.Outcomes.Overflows), hasOutcomes(p) }, formatSig},
	{"p50 latency", func(p SweepPoint) (float64, bool) { return p.Outcomes.P50.Seconds(), hasOutcomes(p) },
		func(x float64) string { return formatDuration(secondsToDuration(x)) }},
	{"p99 latency", func(p SweepPoint) (float64, bool) { return p.Outcomes.P99.Seconds(), hasOutcomes(p) },
		func(x float64) string { return formatDuration(secondsToDuration(x)) }},
}

// maxRateMetric is the heat map of --find-max-rate's result.
var maxRateMetric = sweepMetric{"highest passing rate", func(p SweepPoint) (float64, bool) {
	if p.MaxRate == nil || p.MaxRate.Result == RateError {
		return 0, false
	}
	return p.MaxRate.Rate, true
}, rate}

func hasOutcomes(p SweepPoint) bool { return p.Status != StatusError || p.Outcomes.Requests > 0 }

type (
	heatMapPage struct {
		S       Sweep
		Verdict string
		Head    []string
		Rows    [][]string
		Status  []string // per row: pass, fail or error
		Safe    []string
		Maps    []heatMapSection
		XPath   string
		YPath   string
	}
	heatMapSection struct {
		Metric string
		Tables []heatMap
	}
	// heatMap is one table: x = the first dimension's values, y = the second's (one row without one).
	heatMap struct {
		Caption string // the further dimensions' values, "" without them
		X, Y    []string
		Cells   [][]heatCell // [y][x]
	}
	heatCell struct {
		Text   string
		Status string
		Style  template.CSS
		Title  string
	}
)

// WriteSweepHTML writes the sweep's report.html: one self-contained page (inline CSS, no script) with
// the table of points, the safe region, and a heat map per key outcome — x the first --set's values,
// y the second's, one heat map per combination of any further ones — whose passing cells are marked.
func WriteSweepHTML(w io.Writer, s Sweep) error {
	page := heatMapPage{S: s, Verdict: "PASS"}
	if len(s.Safe()) == 0 {
		page.Verdict = "FAIL"
	}
	page.Head, page.Rows = sweepRows(s)
	for _, p := range s.Points {
		page.Status = append(page.Status, p.Status)
	}
	for _, p := range s.Safe() {
		page.Safe = append(page.Safe, s.Setting(p))
	}
	if len(s.Dimensions) > 0 {
		page.XPath = s.Dimensions[0].Path
	}
	if len(s.Dimensions) > 1 {
		page.YPath = s.Dimensions[1].Path
	}
	metrics := sweepMetrics
	if s.FindMaxRate != nil {
		metrics = append([]sweepMetric{maxRateMetric}, metrics...)
	}
	for _, m := range metrics {
		page.Maps = append(page.Maps, heatMaps(s, m))
	}
	return sweepTemplate.Execute(w, page)
}

// heatMaps lays the points out for one metric.
func heatMaps(s Sweep, m sweepMetric) heatMapSection {
	sec := heatMapSection{Metric: m.Title}
	byValues := map[string]SweepPoint{}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, p := range s.Points {
		byValues[strings.Join(p.Values, "\x00")] = p
		if x, ok := m.value(p); ok {
			lo, hi = math.Min(lo, x), math.Max(hi, x)
		}
	}
	var xs, ys []string
	var rest []SweepDimension
	switch len(s.Dimensions) {
	case 0:
		xs, ys = []string{""}, []string{""}
	case 1:
		xs, ys = s.Dimensions[0].Values, []string{""}
	default:
		xs, ys, rest = s.Dimensions[0].Values, s.Dimensions[1].Values, s.Dimensions[2:]
	}
	for _, combo := range combinations(rest) {
		hm := heatMap{X: xs, Y: ys}
		var caption []string
		for i, v := range combo {
			caption = append(caption, rest[i].Path+" = "+v)
		}
		hm.Caption = strings.Join(caption, ", ")
		for _, y := range ys {
			row := make([]heatCell, 0, len(xs))
			for _, x := range xs {
				key := []string{}
				switch len(s.Dimensions) {
				case 0:
				case 1:
					key = []string{x}
				default:
					key = append([]string{x, y}, combo...)
				}
				p, ok := byValues[strings.Join(key, "\x00")]
				if !ok {
					row = append(row, heatCell{Text: "-"})
					continue
				}
				row = append(row, heatCellOf(s, p, m, lo, hi))
			}
			hm.Cells = append(hm.Cells, row)
		}
		sec.Tables = append(sec.Tables, hm)
	}
	return sec
}

// heatCellOf colours one point's value on a light-to-dark blue scale between the metric's lowest and
// highest value over the grid.
func heatCellOf(s Sweep, p SweepPoint, m sweepMetric, lo, hi float64) heatCell {
	c := heatCell{Status: p.Status, Title: s.Setting(p)}
	x, ok := m.value(p)
	if !ok {
		c.Text = "not recorded"
		if p.Status == StatusError {
			c.Text, c.Title = "error", c.Title+": "+p.Error
		}
		return c
	}
	c.Text = m.text(x)
	f := 0.5
	if hi > lo {
		f = (x - lo) / (hi - lo)
	}
	// Blues from #eff3ff to #08519c.
	r := 239 + f*(8-239)
	g := 243 + f*(81-243)
	b := 255 + f*(156-255)
	fg := "#222"
	if f > 0.55 {
		fg = "#fff"
	}
	c.Style = template.CSS(fmt.Sprintf("background: rgb(%d, %d, %d); color: %s", int(r), int(g), int(b), fg))
	return c
}

// combinations lists every combination of the dimensions' values, the first dimension outermost; one
// empty combination without dimensions.
func combinations(dims []SweepDimension) [][]string {
	out := [][]string{{}}
	for _, d := range dims {
		var next [][]string
		for _, c := range out {
			for _, v := range d.Values {
				next = append(next, append(append([]string{}, c...), v))
			}
		}
		out = next
	}
	return out
}

var sweepTemplate = template.Must(template.New("sweep").Funcs(template.FuncMap{
	"time": func(s Sweep) string { return s.Started.UTC().Format("2006-01-02T15:04:05Z") },
	"rate": rate,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshproof sweep: {{.S.Scenario}} — {{.Verdict}}</title>
<style>
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; } h3 { font-size: 1em; }
.badge { display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; font-weight: bold; }
.pass { background: #1a7f37; } .fail { background: #cf222e; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; } th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } tr.fail td, tr.error td { background: #ffebe9; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: .2em; }
table.heat td { text-align: center; min-width: 5em; }
table.heat td.cell-pass { outline: 3px solid #1a7f37; outline-offset: -3px; font-weight: bold; }
table.heat td.cell-error { background: #eee; color: #666; font-style: italic; }
.note { color: #666; font-style: italic; }
</style>
</head>
<body>
<h1>meshproof sweep: {{.S.Scenario}} <span class="badge {{if eq .Verdict "PASS"}}pass{{else}}fail{{end}}">{{.Verdict}}</span></h1>
<p>{{if .S.File}}<code>{{.S.File}}</code> · {{end}}seed {{.S.Seed}} · {{.S.Runner}} runner · {{len .S.Points}} points · started {{time .S}}</p>
<h2>Settings</h2>
<ul>{{range .S.Dimensions}}<li><code>{{.Path}}</code>: {{range $i, $v := .Values}}{{if $i}}, {{end}}{{$v}}{{end}}</li>{{end}}</ul>
{{with .S.FindMaxRate}}<p>Each point searches its highest passing load rate by bisection between {{rate .Min}} and {{rate .Max}} (precision {{rate .Precision}}).</p>{{end}}
{{if .S.Checks}}<h2>Checks</h2><ul>{{range .S.Checks}}<li><code>{{.}}</code></li>{{end}}</ul>{{end}}
<h2>Safe region</h2>
{{if .Safe}}<p>{{len .Safe}} of {{len .S.Points}} points pass every check:</p><ul>{{range .Safe}}<li><code>{{.}}</code></li>{{end}}</ul>
{{else}}<p>None of the {{len .S.Points}} points passes every check.</p>{{end}}
<h2>Heat maps</h2>
<p class="note">x: {{if .XPath}}<code>{{.XPath}}</code>{{else}}—{{end}}; y: {{if .YPath}}<code>{{.YPath}}</code>{{else}}—{{end}}. Darker is higher, on each metric's own scale. Outlined cells with ✓ pass every check; ✗ a check failed; grey: the run did not complete.</p>
{{range .Maps}}<h3>{{.Metric}}</h3>
{{range $t := .Tables}}{{if .Caption}}<p><code>{{.Caption}}</code></p>{{end}}<table class="heat">
<tr><th></th>{{range .X}}<th>{{.}}</th>{{end}}</tr>
{{range $i, $row := .Cells}}<tr><th>{{index $t.Y $i}}</th>{{range $row}}<td class="cell-{{.Status}}" style="{{.Style}}" title="{{.Title}}">{{if eq .Status "pass"}}✓ {{else if eq .Status "fail"}}✗ {{end}}{{.Text}}</td>{{end}}</tr>
{{end}}</table>
{{end}}{{end}}
<h2>Points</h2>
<table>
<tr>{{range .Head}}<th>{{.}}</th>{{end}}</tr>
{{range $i, $row := .Rows}}<tr class="{{index $.Status $i}}">{{range $row}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
<p class="note">Generated by meshproof sweep.</p>
</body>
</html>
`))
