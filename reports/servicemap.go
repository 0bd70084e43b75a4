package reports

import (
	"cmp"
	"fmt"
	"html/template"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// The service map of report.html: the call graph drawn as a layered DAG in inline SVG (no script), one
// picture per phase. A service's layer is the longest path to it from an entry service (the clients
// are layer 0, the entry services layer 1); an edge that spans several layers passes through a
// waypoint in each layer between, which keeps a place of its own there, so that it never crosses a box;
// within a layer the services and waypoints are ordered by the barycentre of their callers, then of
// their callees, then of their callers again, to reduce crossings. Boxes are services (name, instances,
// the share of instances no proxy had ejected at the phase's end, the success rate of what they
// received); arrows are edges, labelled with their call rate, effective success rate and p99, and
// coloured by that success rate.

// Health thresholds of the service map, on a success rate in percent: green at HealthGreen or above,
// amber at HealthAmber or above, red below.
const (
	HealthGreen = 99.9
	HealthAmber = 99.0
)

const (
	colourGreen = "#1a7f37"
	colourAmber = "#bf8700"
	colourRed   = "#cf222e"
	colourGrey  = "#8c959f"
)

// healthColour colours a success rate (known: there was something to rate).
func healthColour(rate float64, known bool) string {
	switch {
	case !known:
		return colourGrey
	case compare(rate, ">=", HealthGreen):
		return colourGreen
	case compare(rate, ">=", HealthAmber):
		return colourAmber
	}
	return colourRed
}

// serviceMap is one picture of the call graph, over one phase.
type serviceMap struct {
	Title string
	SVG   template.HTML
}

// mapPhase is a stretch of the run a service map covers.
type mapPhase struct {
	title string
	spans []Span // nil: the whole run
	scope *checks.Scope
}

// serviceMaps draws the call graph once per phase: before, during and after the first fault window, or
// over the whole run without a fault window; nil for a record of one hop.
func serviceMaps(rec *record.Record, o Outcomes) []serviceMap {
	if !meshRecord(rec) {
		return nil
	}
	phases := []mapPhase{{title: "whole run"}}
	if len(rec.Windows) > 0 {
		phases = nil
		for _, rel := range []string{checks.Before, checks.During, checks.After} {
			sc := checks.Scope{Relation: rel, Fault: 0}
			spans, err := ScopeSpans(rec, sc)
			if err != nil || !(PhaseOutcome{Spans: spans}).Shown() {
				continue
			}
			phases = append(phases, mapPhase{title: sc.String() + " (" + formatSpans(spans) + ")", spans: spans, scope: &sc})
		}
	}
	var out []serviceMap
	for i, p := range phases {
		out = append(out, serviceMap{Title: p.title, SVG: drawServiceMap(rec, o, p, fmt.Sprintf("service-map-%d", i))})
	}
	return out
}

// mapNode is a box of the service map, or the waypoint of a long edge.
type mapNode struct {
	dummy  bool   // a waypoint
	name   string // "" for the clients
	layer  int
	y      float64
	svc    ServiceOutcome
	health string // the instances no proxy had ejected at the phase's end: "2/2 not ejected"
}

// mapArrow is an arrow of the service map.
type mapArrow struct {
	from, to int   // node indexes
	via      []int // the waypoints in the layers between from and to
	class    string
	key      string // "cart->payments"
	label    string
	colour   string
}

// Sizes of the service map, in SVG units.
const (
	mapBoxW, mapBoxH = 168.0, 62.0
	mapColW, mapRowH = 300.0, 100.0
	mapMargin        = 24.0
	mapLegendH       = 58.0
)

func drawServiceMap(rec *record.Record, o Outcomes, p mapPhase, id string) template.HTML {
	edges, svcs := graphOutcomes(rec, p.spans)
	end := o.End
	length := end
	if p.spans != nil {
		length = 0
		for _, s := range p.spans {
			length += s.Len()
		}
		end = p.spans[len(p.spans)-1].End
	}
	perSecond := func(n uint64) string {
		if length <= 0 {
			return "n/a"
		}
		return rate(float64(n) / length.Seconds())
	}

	// Nodes: the clients, then the services in name order; layers by longest path from an entry.
	nodes := []mapNode{{layer: 0}}
	index := map[string]int{}
	for _, s := range svcs {
		index[s.Name] = len(nodes)
		nodes = append(nodes, mapNode{name: s.Name, layer: 1, svc: s, health: instancesUp(s, o.Hosts, end)})
	}
	for range svcs { // longest path, capped at the number of services (a cycle stops growing there)
		for _, e := range edges {
			from, to := index[e.Caller], index[e.Callee]
			if from > 0 && to > 0 && nodes[to].layer < nodes[from].layer+1 && nodes[from].layer < len(svcs) {
				nodes[to].layer = nodes[from].layer + 1
			}
		}
	}

	// The clients' requests into each entry service, then the edges.
	var clients Summary
	if p.scope != nil {
		ph, _ := PhaseOf(rec, *p.scope)
		clients = ph.Summary
	} else {
		clients = Summarize(rec)
	}
	var arrows []mapArrow
	for i, n := range nodes {
		if i > 0 && n.svc.Entry {
			arrows = append(arrows, mapArrow{from: 0, to: i, class: "ingress", key: "clients->" + n.name,
				label:  arrowLabel(perSecond(clients.Requests), clients.Requests > 0, clients.SuccessRate, clients.Latency.P99),
				colour: healthColour(clients.SuccessRate, clients.Requests > 0)})
		}
	}
	for _, e := range edges {
		arrows = append(arrows, mapArrow{from: index[e.Caller], to: index[e.Callee], class: "edge", key: e.Caller + "->" + e.Callee,
			label:  arrowLabel(perSecond(e.Calls), e.Calls > 0, e.SuccessRate, e.Latency.P99),
			colour: healthColour(e.SuccessRate, e.Calls > 0)})
	}
	// Each arrow spanning more than one layer gets a waypoint in each layer between; the links join
	// neighbouring layers only.
	var links [][2]int
	for k := range arrows {
		a := &arrows[k]
		prev := a.from
		for l := nodes[a.from].layer + 1; l < nodes[a.to].layer; l++ {
			nodes = append(nodes, mapNode{dummy: true, layer: l})
			a.via = append(a.via, len(nodes)-1)
			links = append(links, [2]int{prev, len(nodes) - 1})
			prev = len(nodes) - 1
		}
		links = append(links, [2]int{prev, a.to})
	}
	layers := orderLayers(nodes, links)

	rows := 1
	for _, l := range layers {
		rows = max(rows, len(l))
	}
	width := 2*mapMargin + float64(len(layers)-1)*mapColW + mapBoxW
	height := 2*mapMargin + float64(rows)*mapRowH + mapLegendH
	x := func(n mapNode) float64 { return mapMargin + float64(n.layer)*mapColW }

	var b strings.Builder
	fmt.Fprintf(&b, `<svg xmlns="http://www.w3.org/2000/svg" class="service-map" id="%s" viewBox="0 0 %.0f %.0f" width="%.0f" height="%.0f" style="width:auto;max-width:100%%;height:auto" font-family="Liberation Sans, Arial, Helvetica, sans-serif" role="img">`+"\n",
		id, width, height, width, height)
	b.WriteString("<defs>")
	for _, c := range []string{colourGreen, colourAmber, colourRed, colourGrey} {
		fmt.Fprintf(&b, `<marker id="%s-arrow-%s" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M0,0 L10,5 L0,10 z" fill="%s"/></marker>`,
			id, c[1:], c)
	}
	b.WriteString("</defs>\n")
	for _, a := range arrows {
		// Through each waypoint straight across its column, between them a curve leaving and entering
		// horizontally; the label above the first stretch (a waypoint's, when there is one: it has the
		// room to itself).
		from, to := nodes[a.from], nodes[a.to]
		type point struct{ x, y float64 }
		pts := []point{{x(from) + mapBoxW, from.y + mapBoxH/2}}
		for _, w := range a.via {
			pts = append(pts, point{x(nodes[w]), nodes[w].y + mapBoxH/2}, point{x(nodes[w]) + mapBoxW, nodes[w].y + mapBoxH/2})
		}
		pts = append(pts, point{x(to), to.y + mapBoxH/2})
		var d strings.Builder
		fmt.Fprintf(&d, "M%.1f,%.1f", pts[0].x, pts[0].y)
		for k := 1; k < len(pts); k++ {
			p0, p1 := pts[k-1], pts[k]
			if k%2 == 0 { // across a waypoint's column
				fmt.Fprintf(&d, " L%.1f,%.1f", p1.x, p1.y)
				continue
			}
			dx := max((p1.x-p0.x)/2, 40)
			fmt.Fprintf(&d, " C%.1f,%.1f %.1f,%.1f %.1f,%.1f", p0.x+dx, p0.y, p1.x-dx, p1.y, p1.x, p1.y)
		}
		lx, ly := (pts[0].x+pts[1].x)/2, (pts[0].y+pts[1].y)/2-19
		if len(a.via) > 0 {
			lx, ly = (pts[1].x+pts[2].x)/2, pts[1].y-19
		}
		fmt.Fprintf(&b, `<path class="%s" data-edge="%s" d="%s" fill="none" stroke="%s" stroke-width="2" marker-end="url(#%s-arrow-%s)"/>`+"\n",
			a.class, esc(a.key), d.String(), a.colour, id, a.colour[1:])
		first, second, _ := strings.Cut(a.label, "\n")
		fmt.Fprintf(&b, `<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11" fill="%s" stroke="#fff" stroke-width="3" paint-order="stroke">%s<tspan x="%.1f" dy="13">%s</tspan></text>`+"\n",
			lx, ly, a.colour, esc(first), lx, esc(second))
	}
	for i, n := range nodes {
		nx := x(n)
		if n.dummy {
			continue
		}
		if i == 0 {
			fmt.Fprintf(&b, `<g class="clients"><rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" rx="8" fill="#f6f8fa" stroke="%s" stroke-width="2"/>`+
				`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13" font-weight="bold">clients</text>`+
				`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%d requests</text></g>`+"\n",
				nx, n.y, mapBoxW, mapBoxH, colourGrey, nx+mapBoxW/2, n.y+24, nx+mapBoxW/2, n.y+44, clients.Requests)
			continue
		}
		s := n.svc
		success := "success n/a"
		if s.Known && s.Requests > 0 {
			success = formatPercent(s.SuccessRate) + "% ok"
		}
		plural := "s"
		if s.Instances == 1 {
			plural = ""
		}
		fmt.Fprintf(&b, `<g class="svc" data-service="%s"><rect x="%.1f" y="%.1f" width="%.0f" height="%.0f" rx="8" fill="#fff" stroke="%s" stroke-width="2.5"/>`+
			`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="13" font-weight="bold">%s</text>`+
			`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%d instance%s · %s</text>`+
			`<text x="%.1f" y="%.1f" text-anchor="middle" font-size="11">%s</text></g>`+"\n",
			esc(n.name), nx, n.y, mapBoxW, mapBoxH, healthColour(s.SuccessRate, s.Known && s.Requests > 0),
			nx+mapBoxW/2, n.y+20, esc(n.name), nx+mapBoxW/2, n.y+37, s.Instances, plural, esc(success), nx+mapBoxW/2, n.y+53, esc(n.health))
	}
	ly := height - mapLegendH + 8
	fmt.Fprintf(&b, `<g class="legend" font-size="11">`)
	for i, l := range []struct{ colour, text string }{
		{colourGreen, fmt.Sprintf("≥ %s%% success", formatPercent(HealthGreen))},
		{colourAmber, fmt.Sprintf("≥ %s%%", formatPercent(HealthAmber))},
		{colourRed, fmt.Sprintf("< %s%%", formatPercent(HealthAmber))},
		{colourGrey, "no traffic"},
	} {
		lx := mapMargin + float64(i)*130
		fmt.Fprintf(&b, `<rect x="%.1f" y="%.1f" width="14" height="10" fill="%s"/><text x="%.1f" y="%.1f">%s</text>`,
			lx, ly, l.colour, lx+18, ly+9, esc(l.text))
	}
	fmt.Fprintf(&b, `<text x="%.1f" y="%.1f">arrows: calls/s · success after the callers' retries · p99; boxes: instances not ejected by any proxy at the phase's end · success of what they received</text>`,
		mapMargin, ly+30)
	b.WriteString("</g>\n</svg>")
	return template.HTML(b.String()) // every text drawn is escaped (esc)
}

func esc(s string) string { return template.HTMLEscapeString(s) }

// arrowLabel is an arrow's text, two lines: "12.5/s · 99.9%", "p99 10ms".
func arrowLabel(perSecond string, any bool, success float64, p99 time.Duration) string {
	if !any {
		return perSecond + "\nno calls"
	}
	return fmt.Sprintf("%s · %s%%\np99 %s", perSecond, formatPercent(success), formatDuration(p99))
}

// instancesUp says how many of a service's instances no proxy had ejected at t: "2/2 not ejected".
func instancesUp(s ServiceOutcome, hosts []HostTimeline, t time.Duration) string {
	up := 0
	for i := range s.Instances {
		host := fmt.Sprintf("%s/%d", s.Name, i)
		ejected := slices.ContainsFunc(hosts, func(h HostTimeline) bool {
			return h.Host == host && slices.ContainsFunc(h.Ejections, func(e Ejection) bool {
				return e.Start <= t && (t < e.End || e.Open)
			})
		})
		if !ejected {
			up++
		}
	}
	return fmt.Sprintf("%d/%d not ejected", up, s.Instances)
}

// orderLayers orders the nodes within each layer by the barycentre of their neighbours (links join
// nodes of neighbouring layers) — callers going down the layers, then callees going up, then callers
// again — and sets each node's y, each layer centred. It returns the node indexes per layer, in order.
func orderLayers(nodes []mapNode, links [][2]int) [][]int {
	depth := 0
	for _, n := range nodes {
		depth = max(depth, n.layer)
	}
	layers := make([][]int, depth+1)
	for i, n := range nodes {
		layers[n.layer] = append(layers[n.layer], i) // the clients first, the services by name, then waypoints
	}
	rows := 1
	for _, l := range layers {
		rows = max(rows, len(l))
	}
	place := func(l []int) {
		top := mapMargin + float64(rows-len(l))*mapRowH/2
		for k, i := range l {
			nodes[i].y = top + float64(k)*mapRowH
		}
	}
	for _, l := range layers {
		place(l)
	}
	sweep := func(layer int, byCallers bool) {
		bary := map[int]float64{}
		for _, i := range layers[layer] {
			var sum float64
			n := 0
			for _, k := range links {
				switch {
				case byCallers && k[1] == i && nodes[k[0]].layer < layer:
					sum, n = sum+nodes[k[0]].y, n+1
				case !byCallers && k[0] == i && nodes[k[1]].layer > layer:
					sum, n = sum+nodes[k[1]].y, n+1
				}
			}
			bary[i] = nodes[i].y
			if n > 0 {
				bary[i] = sum / float64(n)
			}
		}
		slices.SortStableFunc(layers[layer], func(a, b int) int { return cmp.Compare(bary[a], bary[b]) })
		place(layers[layer])
	}
	for l := 1; l <= depth; l++ {
		sweep(l, true)
	}
	for l := depth - 1; l >= 1; l-- {
		sweep(l, false)
	}
	for l := 1; l <= depth; l++ {
		sweep(l, true)
	}
	return layers
}
