package reports

import (
	"bytes"
	"cmp"
	"fmt"
	"html/template"
	"image/color"
	"io"
	"maps"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgsvg"
)

// WriteHTML writes report.html: one self-contained page (inline CSS, inline SVG charts, no script, no
// external URL) with the verdict, the checks, the key numbers, the fault windows, configuration changes
// and phases, and charts made from the record (see README.md; fault windows shaded, changes' pushes
// marked): the load intended vs sent, latency percentiles over time, the
// latency histogram by outcome, the per-host ejection timeline, retries and the failures they masked
// over time, and status codes over time. A chart whose data the run did not record is replaced by a
// note saying so. A run with a call graph adds the service map per phase (servicemap.go) and the edge
// and service tables.
func WriteHTML(w io.Writer, r Report, rec *record.Record) error {
	var md bytes.Buffer
	if err := WriteMarkdown(&md, r); err != nil {
		return err
	}
	page := htmlPage{R: r, Failed: r.failed(), Classes: latencyByClass(rec), Maps: serviceMaps(rec, r.Outcomes),
		EdgeHeaders: edgeHeaders, ServiceHeaders: serviceHeaders}
	for _, c := range []struct {
		id, title string
		make      func(*record.Record, Outcomes) (*plot.Plot, string)
	}{
		{"rate", "Load: requests intended vs sent, with the load phases", rateChart},
		{"latency", "Latency over time (corrected, from the intended send time)", latencyChart},
		{"histogram", "Latency distribution by outcome (corrected)", histogramChart},
		{"ejections", "Ejections per host", ejectionChart},
		{"retries", "Retries over time", retryChart},
		{"masked", "Failures the retries masked: the instances vs the clients", maskedChart},
		{"statuses", "Responses over time", statusChart},
	} {
		ch := htmlChart{ID: c.id, Title: c.title}
		p, note := c.make(rec, r.Outcomes)
		if p != nil {
			h := 3.4 * vg.Inch
			if c.id == "ejections" { // a row per host, and a band above them for the legend
				h = max(1.8*vg.Inch, vg.Inch+0.45*vg.Inch*(vg.Length(len(r.Outcomes.Hosts))+ejectionLegendRows))
			}
			svg, err := renderSVG(p, 10*vg.Inch, h)
			if err != nil {
				return fmt.Errorf("chart %s: %w", c.id, err)
			}
			ch.SVG = template.HTML(svg) // generated here: gonum's SVG writer escapes every text it draws
		}
		ch.Note = note
		page.Charts = append(page.Charts, ch)
	}
	return htmlTemplate.Execute(w, page)
}

type htmlPage struct {
	R       Report
	Failed  int
	Charts  []htmlChart
	Classes []ClassLatency // latency by outcome class
	// Maps draws the call graph per phase; EdgeHeaders and ServiceHeaders head its tables.
	Maps                        []serviceMap
	EdgeHeaders, ServiceHeaders []string
}

type htmlChart struct {
	ID, Title, Note string
	SVG             template.HTML
}

// renderSVG draws the plot to an SVG document, without the XML prolog so that it can be inlined.
func renderSVG(p *plot.Plot, w, h vg.Length) (string, error) {
	c := vgsvg.New(w, h)
	p.Draw(draw.New(c))
	var b bytes.Buffer
	if _, err := c.WriteTo(&b); err != nil {
		return "", err
	}
	svg := b.String()
	if i := strings.Index(svg, "<svg"); i >= 0 {
		svg = svg[i:]
	}
	return svg, nil
}

// Chart colours (colour-blind safe, Okabe–Ito).
var (
	colBlue   = color.RGBA{0, 114, 178, 255}
	colOrange = color.RGBA{230, 159, 0, 255}
	colRed    = color.RGBA{213, 94, 0, 255}
	colGreen  = color.RGBA{0, 158, 115, 255}
	colPurple = color.RGBA{204, 121, 167, 255}
	colSky    = color.RGBA{86, 180, 233, 255}
	colYellow = color.RGBA{240, 228, 66, 255}
	colGrey   = color.RGBA{120, 120, 120, 255}
	colFault  = color.NRGBA{213, 94, 0, 40}
)

// newPlot returns a plot in the report's style: sans-serif text, a grid, the legend on top.
func newPlot(xLabel, yLabel string) *plot.Plot {
	p := plot.New()
	for _, f := range []*font.Font{&p.X.Label.TextStyle.Font, &p.Y.Label.TextStyle.Font, &p.X.Tick.Label.Font,
		&p.Y.Tick.Label.Font, &p.Legend.TextStyle.Font, &p.Title.TextStyle.Font} {
		f.Variant = "Sans"
	}
	p.X.Label.Text, p.Y.Label.Text = xLabel, yLabel
	p.Legend.Top = true
	p.Legend.Left = false
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Y.Tick.Marker = plainTicks{}
	grid := plotter.NewGrid()
	grid.Vertical.Color = color.Gray{Y: 225}
	grid.Horizontal.Color = color.Gray{Y: 225}
	p.Add(grid)
	return p
}

// bucketWidth is the width of the time buckets of the over-time charts: a second, shorter for runs under
// 10 s, longer for runs that would need more than 600 buckets.
func bucketWidth(end time.Duration) time.Duration {
	if end < 10*time.Second {
		return 100 * time.Millisecond
	}
	w := time.Second
	for end/w > 600 {
		w *= 2
	}
	return w
}

// buckets groups the samples by intended send time.
func buckets(rec *record.Record, end time.Duration) ([][]record.Sample, time.Duration) {
	w := bucketWidth(end)
	out := make([][]record.Sample, bucketCount(end, w))
	for _, s := range rec.Samples {
		i := min(max(int(s.Intended/w), 0), len(out)-1)
		out[i] = append(out[i], s)
	}
	return out, w
}

// bucketCount is how many buckets of width w cover [0, end).
func bucketCount(end, w time.Duration) int { return max(int((end+w-1)/w), 1) }

func per(w time.Duration) string {
	if w == time.Second {
		return "per second"
	}
	return "per " + formatDuration(w)
}

// faultBands shades the fault windows over the whole height of a chart and labels them.
type faultBands struct {
	spans []Span
	names []string
	label draw.TextStyle
}

func newFaultBands(o Outcomes, p *plot.Plot) *faultBands {
	b := &faultBands{label: p.X.Tick.Label}
	b.label.XAlign, b.label.YAlign = draw.XLeft, draw.YTop
	b.label.Color = colRed
	for _, w := range o.Windows {
		if len(w.Down) == 0 {
			b.spans, b.names = append(b.spans, w.Span), append(b.names, w.Name)
			continue
		}
		for k, d := range w.Down { // a flapping rule: its down periods, named once
			name := ""
			if k == 0 {
				name = w.Name + " down"
			}
			b.spans, b.names = append(b.spans, d.Span), append(b.names, name)
		}
	}
	return b
}

func (b *faultBands) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for i, s := range b.spans {
		x0, x1 := trX(s.Start.Seconds()), trX(s.End.Seconds())
		x0, x1 = max(x0, c.Min.X), min(x1, c.Max.X)
		if x1 <= x0 {
			continue
		}
		c.FillPolygon(colFault, []vg.Point{{X: x0, Y: c.Min.Y}, {X: x1, Y: c.Min.Y}, {X: x1, Y: c.Max.Y}, {X: x0, Y: c.Max.Y}})
		c.FillText(b.label, vg.Point{X: x0 + 3, Y: c.Max.Y - 3}, b.names[i])
	}
}

func (b *faultBands) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, s := range b.spans {
		xmin, xmax = min(xmin, s.Start.Seconds()), max(xmax, s.End.Seconds())
	}
	return
}

func (b *faultBands) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(colFault, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}

// changeMarks draws a dashed vertical line at each configuration change's push, labelled with its name
// at the foot of the chart.
type changeMarks struct {
	changes []ChangeOutcome
	line    draw.LineStyle
	label   draw.TextStyle
}

func newChangeMarks(o Outcomes, p *plot.Plot) *changeMarks {
	m := &changeMarks{changes: o.Changes, label: p.X.Tick.Label,
		line: draw.LineStyle{Color: colPurple, Width: vg.Points(1.2), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}}
	m.label.XAlign, m.label.YAlign = draw.XLeft, draw.YBottom
	m.label.Color = colPurple
	return m
}

func (m *changeMarks) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	for _, ch := range m.changes {
		x := trX(ch.Span.Start.Seconds())
		if x < c.Min.X || x > c.Max.X {
			continue
		}
		c.StrokeLine2(m.line, x, c.Min.Y, x, c.Max.Y)
		name := ch.Change.Name
		if ch.Change.Outcome != record.ChangeApplied {
			name += " " + orUnknown(ch.Change.Outcome)
		}
		c.FillText(m.label, vg.Point{X: x + 3, Y: c.Min.Y + 3}, name)
	}
}

func (m *changeMarks) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax, ymin, ymax = math.Inf(1), math.Inf(-1), math.Inf(1), math.Inf(-1)
	for _, ch := range m.changes {
		xmin, xmax = min(xmin, ch.Span.Start.Seconds()), max(xmax, ch.Span.Start.Seconds())
	}
	return
}

func (m *changeMarks) Thumbnail(c *draw.Canvas) {
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(m.line, c.Min.X, y, c.Max.X, y)
}

// addFaults shades the fault windows of a time chart, marks the configuration changes' pushes, and adds
// them to its legend.
func addFaults(p *plot.Plot, o Outcomes) {
	if len(o.Changes) > 0 {
		m := newChangeMarks(o, p)
		p.Add(m)
		p.Legend.Add("configuration change pushed", m)
	}
	if len(o.Windows) == 0 {
		return
	}
	b := newFaultBands(o, p)
	p.Add(b)
	name := "fault window"
	if slices.ContainsFunc(o.Windows, func(w WindowOutcome) bool { return len(w.Down) > 0 }) {
		name = "fault active (a flapping rule: its down periods)"
	}
	p.Legend.Add(name, b)
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color) *plotter.Line {
	if len(xys) == 0 {
		return nil
	}
	l, err := plotter.NewLine(xys)
	if err != nil { // only for NaN or infinite values, which the charts never hold
		return nil
	}
	l.Color, l.Width = c, vg.Points(1.5)
	p.Add(l)
	p.Legend.Add(name, l)
	return l
}

func timeAxis(p *plot.Plot, end time.Duration) {
	p.X.Min, p.X.Max = 0, math.Max(end.Seconds(), 0.001)
}

const msPerNs = 1e-6

func latencyChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	if len(rec.Samples) == 0 {
		return nil, "No requests were recorded."
	}
	series := TimeSeries(rec, o.End, o.Hosts) // the same numbers as report.json's series
	w := series.Bucket
	p := newPlot("time since the load started (s)", "latency (ms)")
	addFaults(p, o)
	var p50, p99, pmax plotter.XYs
	for _, pt := range series.Points {
		if pt.Latencies == 0 {
			continue
		}
		x := (pt.Start + w/2).Seconds()
		at := func(d time.Duration) float64 { return math.Max(float64(d)*msPerNs, 0.001) }
		p50 = append(p50, plotter.XY{X: x, Y: at(pt.Latency.P50)})
		p99 = append(p99, plotter.XY{X: x, Y: at(pt.Latency.P99)})
		pmax = append(pmax, plotter.XY{X: x, Y: at(pt.Latency.Max)})
	}
	addLine(p, "max", pmax, colGrey)
	addLine(p, "p99", p99, colOrange)
	addLine(p, "p50", p50, colBlue)
	// A log scale when the latencies span more than a decade and a half, so that p50 stays readable
	// under a spiking max.
	if lo, hi := minY(p50), maxY(pmax); hi/lo > 30 {
		p.Y.Scale, p.Y.Tick.Marker = plot.LogScale{}, logTicks{}
		p.Y.Label.Text = "latency (ms, log scale)"
	} else {
		headroom(p)
	}
	timeAxis(p, o.End)
	p.Title.Text = "p50, p99 and max " + per(w)
	return p, ""
}

func minY(xys plotter.XYs) float64 {
	m := math.Inf(1)
	for _, xy := range xys {
		m = min(m, xy.Y)
	}
	return m
}

func maxY(xys plotter.XYs) float64 {
	m := math.Inf(-1)
	for _, xy := range xys {
		m = max(m, xy.Y)
	}
	return m
}

func histogramChart(rec *record.Record, _ Outcomes) (*plot.Plot, string) {
	var lat []float64
	for _, s := range rec.Samples {
		if s.Error != record.ErrCanceled {
			lat = append(lat, math.Max(float64(s.Latency)*msPerNs, 0.001))
		}
	}
	if len(lat) == 0 {
		return nil, "No latencies were recorded."
	}
	lo, hi := slices.Min(lat), slices.Max(lat)
	if hi <= lo*1.01 {
		lo, hi = lo/1.1, hi*1.1
	}
	const n = 60
	step := math.Log(hi/lo) / n
	binOf := func(x float64) int { return max(min(int(math.Log(x/lo)/step), n-1), 0) }
	edge := func(i int) float64 { return lo * math.Exp(step*float64(i)) }
	p := newPlot("latency (ms, log scale)", "requests")
	// One outline per outcome class over the same bins, the successes filled: fast 503 overflows and
	// slow timeouts stand apart from the successes.
	for _, c := range outcomeClasses {
		weights := make([]float64, n)
		count := 0
		for _, s := range rec.Samples {
			if s.Error != record.ErrCanceled && c.of(s) {
				weights[binOf(math.Max(float64(s.Latency)*msPerNs, 0.001))]++
				count++
			}
		}
		if count == 0 {
			continue
		}
		name := fmt.Sprintf("%s: %d", c.name, count)
		if c.name == outcomeClasses[0].name {
			bins := make([]plotter.HistogramBin, n)
			for i := range bins {
				bins[i] = plotter.HistogramBin{Min: edge(i), Max: edge(i + 1), Weight: weights[i]}
			}
			h := &plotter.Histogram{Bins: bins, FillColor: colSky, LineStyle: draw.LineStyle{Color: colBlue, Width: vg.Points(0.5)}}
			p.Add(h)
			p.Legend.Add(name, h)
			continue
		}
		xys := make(plotter.XYs, 0, n+1)
		for i, wt := range weights {
			xys = append(xys, plotter.XY{X: edge(i), Y: wt})
		}
		xys = append(xys, plotter.XY{X: hi, Y: weights[n-1]})
		l, err := plotter.NewLine(xys)
		if err != nil {
			continue
		}
		l.StepStyle, l.Color, l.Width = plotter.PostStep, c.col, vg.Points(1.5)
		p.Add(l)
		p.Legend.Add(name, l)
	}
	p.X.Scale, p.X.Tick.Marker = plot.LogScale{}, logTicks{}
	p.X.Min, p.X.Max = lo, hi
	headroom(p)
	p.Title.Text = fmt.Sprintf("%d requests by outcome, %d log-spaced bins", len(lat), n)
	return p, ""
}

// hostRows draws each host's ejections as bars on its own row.
type hostRows struct{ hosts []HostTimeline }

func (h hostRows) Plot(c draw.Canvas, p *plot.Plot) {
	trX, trY := p.Transforms(&c)
	for i, t := range h.hosts {
		for _, e := range t.Ejections {
			x0, x1 := trX(e.Start.Seconds()), trX(e.End.Seconds())
			x1 = max(x1, x0+1) // an instant ejection still shows
			y0, y1 := trY(float64(i)-0.3), trY(float64(i)+0.3)
			col := color.Color(colRed)
			if e.Open {
				col = colPurple
			}
			c.FillPolygon(col, []vg.Point{{X: x0, Y: y0}, {X: x1, Y: y0}, {X: x1, Y: y1}, {X: x0, Y: y1}})
		}
	}
}

func (h hostRows) DataRange() (xmin, xmax, ymin, ymax float64) {
	xmin, xmax = math.Inf(1), math.Inf(-1)
	for _, t := range h.hosts {
		for _, e := range t.Ejections {
			xmin, xmax = min(xmin, e.Start.Seconds()), max(xmax, e.End.Seconds())
		}
	}
	return xmin, xmax, -0.5, float64(len(h.hosts)) - 0.5
}

func (h hostRows) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(colRed, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}

// ejectionLegendRows is the room, in host rows, the ejection chart keeps above the hosts for its legend.
const ejectionLegendRows = 1.5

func ejectionChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	if len(o.Hosts) == 0 {
		if len(rec.ProxyEvents) == 0 {
			return nil, "Not recorded: the proxy emitted no ejection events."
		}
		return nil, wordNoEjection + ": the proxy ejected no host."
	}
	p := newPlot("time since the load started (s)", "")
	addFaults(p, o)
	rows := hostRows{o.Hosts}
	p.Add(rows)
	p.Legend.Add("ejected", rows)
	for _, h := range o.Hosts {
		if slices.ContainsFunc(h.Ejections, func(e Ejection) bool { return e.Open }) {
			p.Legend.Add("ejected until the run ended (never un-ejected)", swatch{colPurple})
			break
		}
	}
	var ticks plot.ConstantTicks
	for i, h := range o.Hosts {
		label := h.Host
		if h.Cluster != "" && !strings.HasPrefix(h.Host, h.Cluster+"/") {
			label = h.Cluster + " " + h.Host
		}
		if h.Proxy != "" { // a sidecar's decision: which caller instance ejected the host
			label = h.Proxy + ": " + label
		}
		ticks = append(ticks, plot.Tick{Value: float64(i), Label: label})
	}
	p.Y.Tick.Marker = ticks
	// The legend (up to three entries) gets rows of its own above the hosts, so it never hides a bar.
	p.Y.Min, p.Y.Max = -0.5, float64(len(o.Hosts))-0.5+ejectionLegendRows
	timeAxis(p, o.End)
	return p, ""
}

func retryChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	series := TimeSeries(rec, o.End, o.Hosts) // the same numbers as report.json's series
	w, n := series.Bucket, len(series.Points)
	counts := make([]float64, n)
	for i, pt := range series.Points {
		counts[i] = float64(pt.Retries)
	}
	source := map[string]string{RetriesFromEvents: "from the proxy's retry events",
		RetriesFromSamples: "from the requests' attempt counts, by intended send time"}[series.RetriesFrom]
	if source == "" {
		return nil, fmt.Sprintf("Not recorded: the run has neither retry events nor per-request attempt counts (the proxy counted %d retries over the run).", sumClusterStat(rec.ProxyStats, "upstream_rq_retry"))
	}
	p := newPlot("time since the load started (s)", "retries/s")
	addFaults(p, o)
	bins := make([]plotter.HistogramBin, n)
	for i := range bins {
		bins[i] = plotter.HistogramBin{Min: (time.Duration(i) * w).Seconds(), Max: (time.Duration(i+1) * w).Seconds(), Weight: counts[i] / w.Seconds()}
	}
	h := &plotter.Histogram{Bins: bins, FillColor: colOrange, LineStyle: draw.LineStyle{Color: colOrange, Width: vg.Points(0.3)}}
	p.Add(h)
	p.Legend.Add("retries/s", h)
	headroom(p)
	timeAxis(p, o.End)
	p.Title.Text = fmt.Sprintf("Retries per second (%s buckets), %s", formatDuration(w), source)
	return p, ""
}

func statusChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	if len(rec.Samples) == 0 {
		return nil, "No requests were recorded."
	}
	bs, w := buckets(rec, o.End)
	series := map[string][]float64{}
	for i, b := range bs {
		for _, s := range b {
			key := fmt.Sprint(s.Status)
			if s.Error != "" {
				key = "error: " + s.Error
			}
			if series[key] == nil {
				series[key] = make([]float64, len(bs))
			}
			series[key][i] += 1 / w.Seconds()
		}
	}
	p := newPlot("time since the load started (s)", "responses/s")
	addFaults(p, o)
	isErr := func(k string) int {
		if strings.HasPrefix(k, "error") {
			return 1
		}
		return 0
	}
	keys := slices.SortedFunc(maps.Keys(series), func(a, b string) int {
		return cmp.Or(cmp.Compare(isErr(a), isErr(b)), cmp.Compare(a, b))
	})
	// Successes in cool colours, 5xx and transport errors in warm ones.
	good, bad := []color.Color{colBlue, colGreen, colSky, colGrey}, []color.Color{colRed, colOrange, colPurple, colYellow}
	for _, k := range keys {
		var xys plotter.XYs
		for j, v := range series[k] {
			xys = append(xys, plotter.XY{X: (time.Duration(j)*w + w/2).Seconds(), Y: v})
		}
		var c color.Color
		if strings.HasPrefix(k, "2") || strings.HasPrefix(k, "3") {
			c, good = good[0], append(good[1:], good[0])
		} else {
			c, bad = bad[0], append(bad[1:], bad[0])
		}
		addLine(p, k, xys, c)
	}
	headroom(p)
	timeAxis(p, o.End)
	p.Title.Text = "Status codes and transport errors " + per(w)
	return p, ""
}

// plainTicks are gonum's default ticks labelled without trailing zeros ("250", not "250.00").
type plainTicks struct{}

func (plainTicks) Ticks(lo, hi float64) []plot.Tick {
	ticks := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ticks {
		if ticks[i].Label != "" {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'g', 6, 64)
		}
	}
	return ticks
}

// headroom leaves space above the data for the legend.
func headroom(p *plot.Plot) {
	p.Y.Min = 0
	p.Y.Max = math.Max(p.Y.Max*1.25, 1)
}

var htmlTemplate = template.Must(template.New("report").Funcs(template.FuncMap{
	"pct": func(x float64) string { return formatPercent(x) + "%" },
	"shownPhases": func(ps []PhaseOutcome) []PhaseOutcome {
		var out []PhaseOutcome
		for _, p := range ps {
			if p.Shown() {
				out = append(out, p)
			}
		}
		return out
	},
	"dur":        formatDuration,
	"pcts":       percentiles,
	"counts":     counts[int],
	"grpccounts": grpcCounts,
	"kinds":      counts[string],
	"ratio":      formatRatio,
	"retryamp":   retryAmplificationText,
	"delivered":  deliveredAmplificationText,
	"spans":      formatSpans,
	"target":     windowTarget,
	"when":       windowWhen,
	"list":       func(s Span) []Span { return []Span{s} },
	"downfirst":  downFirstEjection,
	"first":      firstEjection,
	"recov":      recoveryDetail,
	"dist":       distribution,
	"ejlist":     ejectionList,
	"rate":       rate,
	"time":       func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"overall":    func(o Outcomes) uint64 { return o.Overflows() },
	"edgecells":  edgeCells,
	"svccells":   serviceCells,
	// Configuration changes.
	"offset":        formatOffset,
	"changeoutcome": changeOutcomeText,
	"answeredafter": changeAnsweredAfter,
	"shortdetail":   shortDetail,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>meshproof: {{.R.Scenario}} — {{if .Failed}}FAIL{{else}}PASS{{end}}</title>
<style>
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1100px; padding: 0 1em; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ddd; }
.badge { display: inline-block; padding: .15em .6em; border-radius: .3em; color: #fff; font-weight: bold; }
.pass { background: #1a7f37; } .fail { background: #cf222e; } .warn { background: #fff3cd; border: 1px solid #e0b000; padding: .5em 1em; }
table { border-collapse: collapse; margin: .5em 0; font-size: .92em; } th, td { border: 1px solid #ddd; padding: .3em .6em; text-align: left; vertical-align: top; }
th { background: #f6f8fa; } td.num { text-align: right; } tr.failed td { background: #ffebe9; }
code { background: #f6f8fa; padding: .1em .3em; border-radius: .2em; }
figure { margin: 1.5em 0; } figcaption { font-weight: bold; margin-bottom: .3em; }
figure svg { width: 100%; height: auto; }
svg text { font-family: "Liberation Sans", Arial, Helvetica, sans-serif !important; }
.note { color: #666; font-style: italic; }
.ok { color: #1a7f37; font-weight: bold; } .bad { color: #cf222e; font-weight: bold; }
</style>
</head>
<body>
<h1>meshproof: {{.R.Scenario}} <span class="badge {{if .Failed}}fail">FAIL{{else}}pass">PASS{{end}}</span></h1>
<p>{{if .R.File}}<code>{{.R.File}}</code> · {{end}}seed {{.R.Seed}} · started {{time .R.Started}} ·
{{.R.Summary.Requests}} requests in {{.R.Summary.Duration}} at {{rate .R.Summary.AchievedRate}} (target {{rate .R.Summary.TargetRate}}, max send lag {{dur .R.Summary.MaxSendLag}})</p>
{{if not .R.Summary.RateHeld}}<p class="warn"><b>Rate not held</b>: achieved {{rate .R.Summary.AchievedRate}} of target {{rate .R.Summary.TargetRate}}, max send lag {{dur .R.Summary.MaxSendLag}}. The system saw less load than planned.</p>{{end}}

<h2>Checks</h2>
{{if .R.Checks}}<table>
<tr><th></th><th>check</th><th>observed</th><th>required</th></tr>
{{range .R.Checks}}<tr{{if not .Passed}} class="failed"{{end}}><td>{{if .Passed}}<span class="ok">PASS</span>{{else}}<span class="bad">FAIL</span>{{end}}</td><td><code>{{.Check}}</code></td><td>{{.Observed}}</td><td>{{.Required}}</td></tr>
{{end}}</table>
<p>{{if .Failed}}{{.Failed}} of {{len .R.Checks}} checks failed.{{else}}All {{len .R.Checks}} checks held.{{end}}</p>
{{else}}<p class="note">No checks.</p>{{end}}

<h2>Key numbers</h2>
{{with .R.Summary}}<table>
<tr><th>requests</th><td>{{.Requests}} ({{.Successes}} ok, {{.Errors}} failed)</td></tr>
<tr><th>success rate</th><td>{{pct .SuccessRate}}</td></tr>
<tr><th>latency (corrected)</th><td>{{pcts .Latency}}</td></tr>
<tr><th>latency (uncorrected)</th><td>{{pcts .Uncorrected}}</td></tr>
<tr><th>status codes</th><td>{{counts .StatusCodes}}</td></tr>
<tr><th>transport errors</th><td>{{kinds .ErrorKinds}}</td></tr>
{{if .GRPCStatuses}}<tr><th>gRPC statuses</th><td>{{grpccounts .GRPCStatuses}}</td></tr>
{{end}}<tr><th>retries</th><td>{{.Retries}}</td></tr>
<tr><th>retry amplification</th><td>{{retryamp .}}</td></tr>
<tr><th>delivered amplification</th><td>{{delivered .}}</td></tr>
<tr><th>ejections</th><td>{{.Ejections}}</td></tr>
{{end}}{{with .R.Outcomes}}<tr><th>attempts per request</th><td>{{if .Attempts.Known}}{{dist .Attempts.Distribution}} (max {{.Attempts.Max}}){{else}}not recorded{{end}}</td></tr>
<tr><th>breaker overflows</th><td>{{overall .}} (pending {{.PendingOverflows}}, retry {{.RetryOverflows}})</td></tr>
{{if .Windows}}<tr><th>time to first ejection</th><td>{{first .Fault}}</td></tr>
<tr><th>recovery time</th><td>{{recov .Fault.Recovery}}</td></tr>{{end}}
</table>
{{if .Windows}}<h2>Fault windows</h2>
<table><tr><th>fault</th><th>target</th><th>kind</th><th>active</th><th>first ejection</th><th>recovery</th></tr>
{{range .Windows}}<tr><td>{{.Name}}</td><td>{{target .Window}}</td><td>{{.Window.Kind}}</td><td>{{when .}}</td><td>{{first .}}</td><td>{{recov .Recovery}}</td></tr>
{{end}}</table>
{{range .Windows}}{{if .Down}}<h3>{{.Name}}: each down period</h3>
<table><tr><th>down</th><th>first ejection</th><th>recovery after it</th></tr>
{{range .Down}}<tr><td>{{spans (list .Span)}}</td><td>{{downfirst .}}</td><td>{{recov .Recovery}}</td></tr>
{{end}}</table>{{end}}{{end}}{{end}}
{{if .Changes}}<h2>Configuration changes</h2>
<table><tr><th>change</th><th>proxy</th><th>what</th><th>at</th><th>outcome</th><th>answered after</th><th>NACK detail</th></tr>
{{range .Changes}}<tr{{if .Unexpected}} class="failed"{{end}}><td>{{.Change.Name}}</td><td>{{.Change.Proxy}}</td><td>{{.Change.What}}</td><td>{{offset .Change.Start}}</td><td>{{changeoutcome .}}</td><td class="num">{{answeredafter .}}</td><td{{if .Change.Detail}} title="{{.Change.Detail}}"{{end}}>{{shortdetail .Change.Detail}}</td></tr>
{{end}}</table>
{{end}}{{if shownPhases .Phases}}<h2>Phases</h2>
<table><tr><th>phase</th><th>span</th><th>requests</th><th>success</th><th>p50</th><th>p90</th><th>p99</th><th>max</th><th>retry amplification</th><th>ejections</th></tr>
{{range shownPhases .Phases}}<tr><td>{{.Scope}}</td><td>{{spans .Spans}}</td>{{if not .Summary.Requests}}<td colspan="8" class="note">no requests</td></tr>
{{else}}<td class="num">{{.Summary.Requests}}</td><td class="num">{{pct .Summary.SuccessRate}}</td>
<td class="num">{{dur .Summary.Latency.P50}}</td><td class="num">{{dur .Summary.Latency.P90}}</td><td class="num">{{dur .Summary.Latency.P99}}</td><td class="num">{{dur .Summary.Latency.Max}}</td>
<td class="num">{{if .Summary.AttemptsFrom}}{{ratio .Summary.RetryAmplification}}{{else}}not recorded{{end}}</td><td class="num">{{if .EjectionsKnown}}{{.Summary.Ejections}}{{else}}not recorded{{end}}</td></tr>
{{end}}{{end}}</table>{{end}}
{{if $.Classes}}<h2>Latency by outcome</h2>
<table><tr><th>outcome</th><th>requests</th><th>p50</th><th>p90</th><th>p99</th><th>max</th></tr>
{{range $.Classes}}<tr><td>{{.Class}}</td><td class="num">{{.Requests}}</td><td class="num">{{dur .Latency.P50}}</td><td class="num">{{dur .Latency.P90}}</td><td class="num">{{dur .Latency.P99}}</td><td class="num">{{dur .Latency.Max}}</td></tr>
{{end}}</table>{{end}}
{{if .Hosts}}<h2>Ejections</h2>
<table><tr><th>cluster</th><th>host</th><th>ejected</th></tr>
{{range .Hosts}}<tr><td>{{.Where}}</td><td>{{.Host}}</td><td>{{ejlist .}}</td></tr>
{{end}}</table>{{end}}{{end}}{{if .Maps}}
<h2>Service map</h2>
<p class="note">The call graph, laid out by longest path from the entry services. Arrows: calls per second, success after the callers' sidecars' retries, p99; green at ≥ 99.9% success, amber at ≥ 99%, red below, grey without calls. Boxes: the instances no proxy had ejected at the phase's end, and the success rate of what the service received.</p>
{{range .Maps}}<figure class="service-map"><figcaption>{{.Title}}</figcaption>
{{.SVG}}
</figure>
{{end}}{{end}}{{with .R.Outcomes}}{{if .Edges}}
<h2>Edges</h2>
<p class="note">Calls as the callers saw them, after their sidecars' retries; actual success is per attempt, before the retries.</p>
<table><tr>{{range $.EdgeHeaders}}<th>{{.}}</th>{{end}}</tr>
{{range .Edges}}<tr>{{range $i, $c := edgecells .}}{{if $i}}<td class="num">{{else}}<td>{{end}}{{$c}}</td>{{end}}</tr>
{{end}}</table>{{end}}{{if .Services}}
<h2>Services</h2>
<p class="note">What their instances received; per client request = received ÷ the clients' requests.</p>
<table><tr>{{range $.ServiceHeaders}}<th>{{.}}</th>{{end}}</tr>
{{range .Services}}<tr>{{range $i, $c := svccells .}}{{if $i}}<td class="num">{{else}}<td>{{end}}{{$c}}</td>{{end}}</tr>
{{end}}</table>{{end}}{{end}}

<h2>Charts</h2>
{{range .Charts}}<figure id="chart-{{.ID}}"><figcaption>{{.Title}}</figcaption>
{{if .SVG}}{{.SVG}}{{else}}<p class="note">{{.Note}}</p>{{end}}
</figure>
{{end}}
<p class="note">Generated by meshproof. Requests are placed in time by their intended send time.</p>
</body>
</html>
`))
