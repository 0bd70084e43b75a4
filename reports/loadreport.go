package reports

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// LoadReport is the outcome of a standalone load run (meshproof load): what was asked and the
// histogram set.
type LoadReport struct {
	URL         string
	Closed      bool   // closed loop
	Arrivals    string // "uniform" or "poisson" (open loop)
	Protocol    string // "http/1.1" or "h2c"
	Concurrency int    // closed loop: workers; open loop: in-flight cap (0: default)
	Connections int    // asked for; 0: as needed
	Opened      int64  // connections actually opened
	Started     time.Time
	RawFile     string // the raw per-request log, if written
	Hist        *record.HistSet
}

type (
	jsonLoad struct {
		URL           string               `json:"url"`
		Mode          string               `json:"mode"`
		Arrivals      string               `json:"arrivals,omitempty"`
		Protocol      string               `json:"protocol"`
		Concurrency   int                  `json:"concurrency"`
		Connections   int                  `json:"connections"`
		Opened        int64                `json:"connections_opened"`
		Started       time.Time            `json:"started"`
		Requests      uint64               `json:"requests"`
		Successes     uint64               `json:"successes"`
		Errors        uint64               `json:"errors"`
		Canceled      uint64               `json:"canceled"`
		DurationMs    float64              `json:"duration_ms"`
		TargetRate    float64              `json:"target_rate"`
		AchievedRate  float64              `json:"achieved_rate"`
		RateHeld      bool                 `json:"rate_held"`
		MaxSendLagMs  float64              `json:"max_send_lag_ms"`
		LatencyMs     jsonSpectrum         `json:"latency_ms"`
		UncorrectedMs jsonSpectrum         `json:"uncorrected_latency_ms"`
		StatusCodes   map[int]uint64       `json:"status_codes"`
		ErrorKinds    map[string]uint64    `json:"error_kinds"`
		GRPCStatuses  map[string]uint64    `json:"grpc_statuses,omitempty"` // gRPC calls by status name; left out for HTTP
		Classes       map[string]jsonClass `json:"status_classes"`
		Phases        []jsonLoadPhase      `json:"phases"`
		Seconds       []jsonSecond         `json:"seconds"`
		Raw           string               `json:"raw,omitempty"`
	}
	jsonSpectrum struct {
		P50    float64 `json:"p50"`
		P75    float64 `json:"p75"`
		P90    float64 `json:"p90"`
		P95    float64 `json:"p95"`
		P99    float64 `json:"p99"`
		P999   float64 `json:"p999"`
		P9999  float64 `json:"p9999"`
		P99999 float64 `json:"p99999"`
		Max    float64 `json:"max"`
		Min    float64 `json:"min"`
		Mean   float64 `json:"mean"`
		Count  uint64  `json:"count"`
	}
	jsonClass struct {
		Requests      uint64       `json:"requests"`
		LatencyMs     jsonSpectrum `json:"latency_ms"`
		UncorrectedMs jsonSpectrum `json:"uncorrected_latency_ms"`
	}
	jsonLoadPhase struct {
		Name          string       `json:"name"`
		StartMs       float64      `json:"start_ms"`
		DurationMs    float64      `json:"duration_ms"`
		Planned       float64      `json:"planned"`
		Requests      uint64       `json:"requests"`
		Successes     uint64       `json:"successes"`
		TargetRate    float64      `json:"target_rate"`
		AchievedRate  float64      `json:"achieved_rate"`
		RateHeld      bool         `json:"rate_held"`
		MaxSendLagMs  float64      `json:"max_send_lag_ms"`
		LatencyMs     jsonSpectrum `json:"latency_ms"`
		UncorrectedMs jsonSpectrum `json:"uncorrected_latency_ms"`
	}
	jsonSecond struct {
		Second      int               `json:"second"`
		Intended    uint64            `json:"intended"`
		Sent        uint64            `json:"sent"`
		Completed   uint64            `json:"completed"`
		Classes     map[string]uint64 `json:"status_classes"`
		P50Ms       float64           `json:"p50_ms"`
		P99Ms       float64           `json:"p99_ms"`
		MaxMs       float64           `json:"max_ms"`
		Uncorrected float64           `json:"uncorrected_p99_ms"`
	}
)

func spectrumJSON(l *record.LatencyHist) jsonSpectrum {
	v := l.Spectrum()
	return jsonSpectrum{P50: ms(v[0].Value), P75: ms(v[1].Value), P90: ms(v[2].Value), P95: ms(v[3].Value),
		P99: ms(v[4].Value), P999: ms(v[5].Value), P9999: ms(v[6].Value), P99999: ms(v[7].Value),
		Max: ms(l.Max()), Min: ms(l.Min()), Mean: ms(l.Mean()), Count: l.Count()}
}

func (r LoadReport) mode() string {
	if r.Closed {
		return "closed"
	}
	return "open"
}

// WriteLoadJSON writes the report as one JSON object (documented in README.md) and a newline.
func WriteLoadJSON(w io.Writer, r LoadReport) error {
	h := r.Hist
	d, _ := h.Planned()
	out := jsonLoad{
		URL: r.URL, Mode: r.mode(), Protocol: r.Protocol, Concurrency: r.Concurrency, Connections: r.Connections,
		Opened: r.Opened, Started: r.Started, Requests: h.Requests, Successes: h.Successes, Errors: h.Errors(),
		Canceled: h.Canceled, DurationMs: ms(d), TargetRate: h.TargetRate(), AchievedRate: h.AchievedRate(),
		RateHeld: h.RateHeld(), MaxSendLagMs: ms(h.MaxSendLag),
		LatencyMs: spectrumJSON(h.Latency.Corrected), UncorrectedMs: spectrumJSON(h.Latency.Uncorrected),
		StatusCodes: orEmpty(h.StatusCodes), ErrorKinds: orEmpty(h.ErrorKinds), GRPCStatuses: grpcStatusNames(h.GRPCStatuses),
		Classes: map[string]jsonClass{},
		Phases:  []jsonLoadPhase{}, Seconds: []jsonSecond{}, Raw: r.RawFile,
	}
	if !r.Closed {
		out.Arrivals = r.Arrivals
	}
	for c, pair := range h.Classes {
		if pair != nil {
			out.Classes[record.ClassNames[c]] = jsonClass{Requests: pair.Corrected.Count(),
				LatencyMs: spectrumJSON(pair.Corrected), UncorrectedMs: spectrumJSON(pair.Uncorrected)}
		}
	}
	for _, p := range h.Phases {
		out.Phases = append(out.Phases, jsonLoadPhase{Name: p.Name, StartMs: ms(p.Start), DurationMs: ms(p.Duration),
			Planned: p.Planned, Requests: p.Requests, Successes: p.Successes, TargetRate: p.TargetRate(),
			AchievedRate: p.AchievedRate(), RateHeld: p.RateHeld(), MaxSendLagMs: ms(p.MaxSendLag),
			LatencyMs: spectrumJSON(p.Latency.Corrected), UncorrectedMs: spectrumJSON(p.Latency.Uncorrected)})
	}
	for i, s := range h.Seconds {
		lat := s.Latency()
		js := jsonSecond{Second: i, Intended: s.Intended, Sent: s.Sent, Completed: s.Completed, Classes: map[string]uint64{},
			P50Ms: ms(lat.Corrected.Quantile(0.5)), P99Ms: ms(lat.Corrected.Quantile(0.99)), MaxMs: ms(lat.Corrected.Max()),
			Uncorrected: ms(lat.Uncorrected.Quantile(0.99))}
		for c, n := range s.Classes {
			if n > 0 {
				js.Classes[record.ClassNames[c]] = n
			}
		}
		out.Seconds = append(out.Seconds, js)
	}
	data, err := json.Marshal(out)
	if err != nil {
		return err
	}
	_, err = w.Write(append(data, '\n'))
	return err
}

// WriteLoadTerminal writes a summary for people: the run, outcomes, the latency spectrum corrected and
// uncorrected side by side, each phase with its target and achieved rate, and a loud warning for every
// phase that did not hold its rate.
func WriteLoadTerminal(w io.Writer, r LoadReport) error {
	var b bytes.Buffer
	h := r.Hist
	d, _ := h.Planned()
	conns := "as needed"
	if r.Connections > 0 {
		conns = strconv.Itoa(r.Connections)
	}
	if r.Closed {
		fmt.Fprintf(&b, "meshproof load: %s, closed loop, %d workers for %s, %s, connections %s (opened %d)\n",
			r.URL, r.Concurrency, d, r.Protocol, conns, r.Opened)
	} else {
		fmt.Fprintf(&b, "meshproof load: %s, open loop (%s arrivals) for %s, %s, connections %s (opened %d)\n",
			r.URL, r.Arrivals, d, r.Protocol, conns, r.Opened)
	}
	t := tabwriter.NewWriter(&b, 0, 0, 2, ' ', 0)
	if r.Closed {
		fmt.Fprintf(t, "requests\t%d, achieved %s\n", h.Requests, rate(h.AchievedRate()))
	} else {
		fmt.Fprintf(t, "requests\t%d, achieved %s of target %s, max send lag %s\n",
			h.Requests, rate(h.AchievedRate()), rate(h.TargetRate()), formatDuration(h.MaxSendLag))
	}
	fmt.Fprintf(t, "outcomes\t%d ok, %d failed, %d canceled\n", h.Successes, h.Errors(), h.Canceled)
	fmt.Fprintf(t, "statuses\t%s\n", counts(h.StatusCodes))
	fmt.Fprintf(t, "transport errors\t%s\n", counts(h.ErrorKinds))
	if len(h.GRPCStatuses) > 0 {
		fmt.Fprintf(t, "grpc statuses\t%s\n", grpcCounts(h.GRPCStatuses))
	}
	t.Flush()

	if r.Closed {
		b.WriteString("latency (closed loop: corrected = uncorrected)\n")
	} else {
		b.WriteString("latency   corrected (from intended send)   uncorrected (from actual send)\n")
	}
	cs, us := h.Latency.Corrected.Spectrum(), h.Latency.Uncorrected.Spectrum()
	for i, q := range cs {
		name := "p" + strconv.FormatFloat(q.Percent, 'f', -1, 64)
		if q.Percent == 100 {
			name = "max"
		}
		if r.Closed {
			fmt.Fprintf(t, "  %s\t%s\n", name, formatDuration(q.Value))
		} else {
			fmt.Fprintf(t, "  %s\t%s\t%s\n", name, formatDuration(q.Value), formatDuration(us[i].Value))
		}
	}
	t.Flush()

	if len(h.Phases) > 1 || !r.Closed {
		b.WriteString("phases\n")
		for _, p := range h.Phases {
			held := "held"
			if !p.RateHeld() {
				held = "NOT HELD"
			}
			pc := p.Latency.Corrected.Percentiles()
			fmt.Fprintf(t, "  %s\t%s+%s\t%d requests\ttarget %s\tachieved %s\t%s\tp50 %s\tp99 %s\tmax %s\n",
				p.Name, formatDuration(p.Start), formatDuration(p.Duration), p.Requests, rate(p.TargetRate()),
				rate(p.AchievedRate()), held, formatDuration(pc.P50), formatDuration(pc.P99), formatDuration(pc.Max))
		}
		t.Flush()
	}
	for _, p := range h.Phases {
		if !p.RateHeld() {
			pct := 0.0
			if tr := p.TargetRate(); tr > 0 {
				pct = 100 * p.AchievedRate() / tr
			}
			fmt.Fprintf(&b, "!!! RATE NOT HELD in phase %s: achieved %s of target %s (%s%%), max send lag %s.\n"+
				"!!! The load generator fell behind: the system saw less load than planned. Corrected latencies include the lag.\n",
				p.Name, rate(p.AchievedRate()), rate(p.TargetRate()), formatPercent(pct), formatDuration(p.MaxSendLag))
		}
	}
	if r.RawFile != "" {
		fmt.Fprintf(&b, "raw log: %s\n", r.RawFile)
	}
	_, err := io.Copy(w, strings.NewReader(b.String()))
	return err
}
