// Package stats is the proxy's stats store: Envoy-named counters and gauges, created on first use, read
// as a sorted snapshot by the admin endpoints and by the run recorder. A Store is passed to whoever
// counts; there are no package-level metrics.
package stats

import (
	"slices"
	"sort"
	"sync"
	"sync/atomic"
)

// Counter only goes up (until the admin resets counters).
type Counter struct{ v atomic.Uint64 }

// Inc adds one.
func (c *Counter) Inc() { c.v.Add(1) }

// Add adds n.
func (c *Counter) Add(n uint64) { c.v.Add(n) }

// Value reads the counter.
func (c *Counter) Value() uint64 { return c.v.Load() }

// Set mirrors a counter that a policy state machine keeps itself (e.g. outlier detection's).
func (c *Counter) Set(n uint64) { c.v.Store(n) }

// Gauge goes up and down.
type Gauge struct{ v atomic.Int64 }

// Inc adds one.
func (g *Gauge) Inc() { g.v.Add(1) }

// Dec subtracts one.
func (g *Gauge) Dec() { g.v.Add(-1) }

// Set sets the value.
func (g *Gauge) Set(n int64) { g.v.Store(n) }

// Add adds n (negative: subtracts).
func (g *Gauge) Add(n int64) { g.v.Add(n) }

// Value reads the gauge.
func (g *Gauge) Value() int64 { return g.v.Load() }

// Kind tells a counter from a gauge in a snapshot.
type Kind int

// The kinds of stat.
const (
	KindCounter Kind = iota
	KindGauge
)

// Stat is one entry of a snapshot.
type Stat struct {
	Name  string
	Kind  Kind
	Value int64
}

// Store holds every stat of one proxy, by full Envoy name (e.g. "cluster.backend.upstream_rq_retry").
type Store struct {
	mu         sync.RWMutex
	counters   map[string]*Counter
	gauges     map[string]*Gauge
	histograms map[string]*Histogram

	refreshMu  sync.Mutex
	refreshers []*func() // set gauges that mirror state kept elsewhere, before every snapshot
}

// OnSnapshot registers f to run before every Snapshot, to bring gauges that mirror another component's
// state (e.g. circuit-breaker occupancy) up to date. remove unregisters it (a cluster that a new
// configuration removed or replaced).
func (s *Store) OnSnapshot(f func()) (remove func()) {
	p := &f
	s.refreshMu.Lock()
	s.refreshers = append(s.refreshers, p)
	s.refreshMu.Unlock()
	return func() {
		s.refreshMu.Lock()
		defer s.refreshMu.Unlock()
		s.refreshers = slices.DeleteFunc(slices.Clone(s.refreshers), func(q *func()) bool { return q == p })
	}
}

// NewStore returns an empty store.
func NewStore() *Store {
	return &Store{counters: map[string]*Counter{}, gauges: map[string]*Gauge{}, histograms: map[string]*Histogram{}}
}

// Counter returns the named counter, creating it at zero on first use. Callers on the request path keep
// the pointer rather than looking it up per request.
func (s *Store) Counter(name string) *Counter {
	s.mu.RLock()
	c := s.counters[name]
	s.mu.RUnlock()
	if c != nil {
		return c
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if c = s.counters[name]; c == nil {
		c = &Counter{}
		s.counters[name] = c
	}
	return c
}

// Gauge returns the named gauge, creating it at zero on first use.
func (s *Store) Gauge(name string) *Gauge {
	s.mu.RLock()
	g := s.gauges[name]
	s.mu.RUnlock()
	if g != nil {
		return g
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if g = s.gauges[name]; g == nil {
		g = &Gauge{}
		s.gauges[name] = g
	}
	return g
}

// ResetCounters sets every counter to zero (admin POST /reset_counters); gauges keep their values.
func (s *Store) ResetCounters() {
	s.mu.RLock()
	defer s.mu.RUnlock()
	for _, c := range s.counters {
		c.v.Store(0)
	}
}

// Snapshot returns every stat, sorted by name.
func (s *Store) Snapshot() []Stat {
	s.refreshMu.Lock()
	refreshers := s.refreshers
	s.refreshMu.Unlock()
	for _, f := range refreshers {
		(*f)()
	}
	s.mu.RLock()
	out := make([]Stat, 0, len(s.counters)+len(s.gauges))
	for n, c := range s.counters {
		out = append(out, Stat{Name: n, Kind: KindCounter, Value: int64(c.Value())})
	}
	for n, g := range s.gauges {
		out = append(out, Stat{Name: n, Kind: KindGauge, Value: g.Value()})
	}
	s.mu.RUnlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func sortStrings(s []string) { sort.Strings(s) }

// Values returns the snapshot as a map, for run records. Negative gauges read as zero.
func (s *Store) Values() map[string]uint64 {
	snap := s.Snapshot()
	m := make(map[string]uint64, len(snap))
	for _, st := range snap {
		m[st.Name] = uint64(max(st.Value, 0))
	}
	return m
}
