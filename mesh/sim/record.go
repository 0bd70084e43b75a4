package sim

import (
	"maps"
	"time"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// snapshot is the world at the instant the load ended (its last request finished), which is when the
// embedded runner reads its counters: what happens after (timers of the proxies running on) stays out.
type snapshot struct {
	at          time.Duration
	proxyStats  map[string]uint64
	sidecars    map[string]map[string]uint64 // by instance name
	upstreams   []faults.UpstreamStats       // plan order
	events      int
	proxyEvents int
	calls       int
}

func (w *world) snapshot(target *Proxy) *snapshot {
	s := &snapshot{at: w.en.Now(), proxyStats: maps.Clone(target.Stats()), sidecars: map[string]map[string]uint64{},
		events: w.events.len(), proxyEvents: len(w.proxyEvents), calls: w.calls.len()}
	w.mtls.addStats(target, s.proxyStats)
	for _, it := range w.instances {
		s.upstreams = append(s.upstreams, it.snapshot())
		if it.sidecar != nil {
			s.sidecars[it.name] = maps.Clone(it.sidecar.Stats())
			w.mtls.addStats(it.sidecar, s.sidecars[it.name])
		}
	}
	return s
}

// record is the run's record as the embedded runner makes it (mesh/live Run), from the snapshot.
func (w *world) record(started time.Time, samples []record.Sample, end *snapshot) *record.Record {
	p := w.p
	rec := p.NewRecord(started, samples)
	rec.ProxyStats = end.proxyStats
	w.fillChanges(rec, end)
	for i, it := range w.instances {
		rec.Upstreams = append(rec.Upstreams, plan.UpstreamRecord(it.in, it.addr, end.upstreams[i]))
	}
	rec.Events = w.events.prefix(end.events)
	plan.SortFaultEvents(rec.Events)
	plan.ExtendRefuseWindows(rec.Windows, rec.Events)
	rec.ProxyEvents = append([]record.ProxyEvent(nil), w.proxyEvents[:end.proxyEvents]...)
	plan.SortProxyEvents(rec.ProxyEvents)
	rec.Services, rec.Edges = p.Graph()
	rec.MTLS = w.mtls.record(end.at)
	// The calls that had ended by then, as the live instances report a call when it ends.
	rec.Calls = make([]record.Call, 0, end.calls)
	for i := range end.calls {
		if c := w.calls.at(i); c.end >= 0 && c.end <= end.at {
			rec.Calls = append(rec.Calls, c.call)
		}
	}
	plan.SortCalls(rec.Calls)
	// Each calling service's sidecars' stats, in plan order.
	byCaller := map[string][]map[string]uint64{}
	for _, it := range w.instances {
		if it.sidecar != nil {
			byCaller[it.in.Service] = append(byCaller[it.in.Service], end.sidecars[it.name])
		}
	}
	for i, e := range rec.Edges {
		rec.Edges[i].SidecarStats = plan.SidecarStats(e.Callee, byCaller[e.Caller]...)
	}
	return rec
}
