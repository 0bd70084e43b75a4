package reports

import (
	"fmt"
	"image/color"
	"math"
	"slices"
	"strconv"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"

	"github.com/meshproof/meshproof/reports/record"
)

// wordNoEjection is the one wording every writer uses when no host was ejected (or none was credited to a
// fault window).
const wordNoEjection = "no ejection"

// phaseLines marks the load phases' boundaries on a time chart with a dashed line and the phase's name.
type phaseLines struct {
	phases []record.LoadPhase
	label  draw.TextStyle
}

func (l phaseLines) Plot(c draw.Canvas, p *plot.Plot) {
	trX, _ := p.Transforms(&c)
	style := draw.LineStyle{Color: colGrey, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
	for _, ph := range l.phases {
		x := trX(ph.Start.Seconds())
		if x < c.Min.X || x > c.Max.X {
			continue
		}
		c.StrokeLine2(style, x, c.Min.Y, x, c.Max.Y)
		c.FillText(l.label, vg.Point{X: x + 3, Y: c.Min.Y + 3}, ph.Name)
	}
}

func (l phaseLines) Thumbnail(c *draw.Canvas) {
	style := draw.LineStyle{Color: colGrey, Width: vg.Points(1), Dashes: []vg.Length{vg.Points(4), vg.Points(3)}}
	y := (c.Min.Y + c.Max.Y) / 2
	c.StrokeLine2(style, c.Min.X, y, c.Max.X, y)
}

// swatch is a legend entry of one filled colour.
type swatch struct{ c color.Color }

func (s swatch) Thumbnail(c *draw.Canvas) {
	c.FillPolygon(s.c, []vg.Point{{X: c.Min.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Min.Y}, {X: c.Max.X, Y: c.Max.Y}, {X: c.Min.X, Y: c.Max.Y}})
}

// rateChart draws the intended and the actual send rate per bucket, with the target rate and the load
// phases' boundaries: where the generator fell behind its plan.
func rateChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	if len(rec.Samples) == 0 {
		return nil, "No requests were recorded."
	}
	series := TimeSeries(rec, o.End, o.Hosts)
	w := series.Bucket
	p := newPlot("time since the load started (s)", "requests/s")
	addFaults(p, o)
	var intended, sent plotter.XYs
	for _, pt := range series.Points {
		x := (pt.Start + w/2).Seconds()
		intended = append(intended, plotter.XY{X: x, Y: float64(pt.Intended) / w.Seconds()})
		sent = append(sent, plotter.XY{X: x, Y: float64(pt.Sent) / w.Seconds()})
	}
	addLine(p, "intended", intended, colBlue)
	addLine(p, "sent", sent, colOrange)
	if len(rec.Phases) > 0 {
		l := phaseLines{phases: rec.Phases, label: p.X.Tick.Label}
		l.label.XAlign, l.label.YAlign = draw.XLeft, draw.YBottom
		l.label.Color = colGrey
		p.Add(l)
		p.Legend.Add("load phase start", l)
	}
	headroom(p)
	timeAxis(p, o.End)
	p.Title.Text = fmt.Sprintf("Requests intended and sent per second (%s buckets), target %s", formatDuration(w), rate(rec.TargetRate))
	return p, ""
}

// maskedChart sets what the instances failed (the 5xx their abort faults sent, the resets and other
// failures they injected) and the retries the proxy made against the 5xx and transport errors the clients
// saw: the gap is what the retries masked.
func maskedChart(rec *record.Record, o Outcomes) (*plot.Plot, string) {
	if len(rec.Samples) == 0 {
		return nil, "No requests were recorded."
	}
	series := TimeSeries(rec, o.End, o.Hosts)
	w := series.Bucket
	p := newPlot("time since the load started (s)", "per second")
	addFaults(p, o)
	var up5xx, upFailed, retries, clients plotter.XYs
	var any5xx, anyFailed bool
	for _, pt := range series.Points {
		x := (pt.Start + w/2).Seconds()
		perSec := func(n uint64) plotter.XY { return plotter.XY{X: x, Y: float64(n) / w.Seconds()} }
		up5xx, upFailed = append(up5xx, perSec(pt.Upstream5xx)), append(upFailed, perSec(pt.UpstreamFailures))
		retries = append(retries, perSec(pt.Retries))
		clients = append(clients, perSec(pt.Classes["5xx"]+pt.Classes["error"]))
		any5xx, anyFailed = any5xx || pt.Upstream5xx > 0, anyFailed || pt.UpstreamFailures > 0
	}
	// The instances' lines wide and under, the retries dashed over them: when every failure was retried
	// the lines coincide, and both still show.
	if any5xx || !anyFailed {
		if l := addLine(p, "instances: 5xx sent", up5xx, colRed); l != nil {
			l.Width = vg.Points(4)
		}
	}
	if anyFailed {
		if l := addLine(p, "instances: resets, hangs, cut bodies", upFailed, colPurple); l != nil {
			l.Width = vg.Points(4)
		}
	}
	if series.RetriesFrom != "" {
		if l := addLine(p, "proxy: retries", retries, colOrange); l != nil {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
	}
	addLine(p, "clients: 5xx and transport errors", clients, colBlue)
	headroom(p)
	timeAxis(p, o.End)
	p.Title.Text = fmt.Sprintf("Upstream failures vs what the clients saw, per second (%s buckets)", formatDuration(w))
	return p, ""
}

// outcomeClasses are the outcome classes the latency charts and table split the requests into.
var outcomeClasses = []struct {
	name string
	of   func(record.Sample) bool
	col  color.Color
}{
	{"success (2xx, 3xx)", record.Sample.OK, colBlue},
	{"4xx", func(s record.Sample) bool { return s.Error == "" && s.Status >= 400 && s.Status < 500 }, colOrange},
	{"5xx", func(s record.Sample) bool { return s.Error == "" && s.Status >= 500 }, colRed},
	{"transport error", func(s record.Sample) bool { return s.Error != "" || s.Status < 200 }, colPurple},
}

// ClassLatency is the corrected latency of the requests of one outcome class (cancelled ones left out).
type ClassLatency struct {
	Class    string
	Requests int
	Latency  record.Percentiles
}

// latencyByClass splits the requests' corrected latencies by outcome class; classes without requests are
// left out.
func latencyByClass(rec *record.Record) []ClassLatency {
	var out []ClassLatency
	for _, c := range outcomeClasses {
		var lat []time.Duration
		for _, s := range rec.Samples {
			if s.Error != record.ErrCanceled && c.of(s) {
				lat = append(lat, s.Latency)
			}
		}
		if len(lat) == 0 {
			continue
		}
		out = append(out, ClassLatency{Class: c.name, Requests: len(lat), Latency: record.Percentiles{
			P50: record.ExactPercentile(lat, 0.5), P90: record.ExactPercentile(lat, 0.9), P99: record.ExactPercentile(lat, 0.99),
			P999: record.ExactPercentile(lat, 0.999), Max: record.ExactPercentile(lat, 1)}})
	}
	return out
}

// logTicks marks a log axis at every multiple 1…9 of each power of ten, labelling 1, 2 and 5 (1 and 3
// over more than 3 decades, 1 over more than 6; every multiple within less than a decade), so that
// every decade and the values between them read; at least two ticks are labelled.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	if lo <= 0 || hi <= lo {
		return nil
	}
	labelled := []int{1, 2, 5}
	switch decades := math.Log10(hi / lo); {
	case decades > 6:
		labelled = []int{1}
	case decades > 3:
		labelled = []int{1, 3}
	case decades < 1:
		labelled = []int{1, 2, 3, 4, 5, 6, 7, 8, 9}
	}
	var ticks []plot.Tick
	shown := 0
	for e := int(math.Floor(math.Log10(lo))); e <= int(math.Ceil(math.Log10(hi))); e++ {
		for m := 1; m <= 9; m++ {
			v, _ := strconv.ParseFloat(fmt.Sprintf("%de%d", m, e), 64) // exact decimal: 0.3, not 0.30000000000000004
			if v < lo || v > hi {
				continue
			}
			t := plot.Tick{Value: v}
			if slices.Contains(labelled, m) {
				t.Label, shown = strconv.FormatFloat(v, 'f', -1, 64), shown+1
			}
			ticks = append(ticks, t)
		}
	}
	if shown < 2 {
		for i := range ticks {
			ticks[i].Label = strconv.FormatFloat(ticks[i].Value, 'f', -1, 64)
		}
	}
	if len(ticks) < 2 { // a range between two multiples (3.2…3.9): its ends
		ticks = []plot.Tick{{Value: lo, Label: strconv.FormatFloat(lo, 'g', 3, 64)}, {Value: hi, Label: strconv.FormatFloat(hi, 'g', 3, 64)}}
	}
	return ticks
}
