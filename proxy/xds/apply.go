package xds

import (
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
)

// reconcile works out the clusters and listeners in use and, when they changed, hands the whole
// configuration to the Applier.
//
// Warming, as Envoy's cluster manager and listener manager do it: a cluster of type EDS is used once
// its ClusterLoadAssignment arrived, a listener with rds once its RouteConfiguration did, or when the
// initial_fetch_timeout of that resource passed (the cluster then has no endpoint, the listener no
// route). Until then the previous version of the cluster or listener, if any, stays in use; a new one
// is not used at all. The first configuration waits for CDS and LDS (or their timeouts) and for every
// cluster and listener they brought to warm, as Envoy's server initialisation does.
func (s *state) reconcile() error {
	if s.stopped {
		return nil
	}
	dyn := s.dynamic()
	if !s.initialized {
		if dyn.CDS != nil && !s.types[TypeCluster].received && !s.types[TypeCluster].timedOut[""] {
			return nil
		}
		if dyn.LDS != nil && !s.types[TypeListener].received && !s.types[TypeListener].timedOut[""] {
			return nil
		}
	}
	warming := false

	clusters := map[string]activeCluster{}
	var clusterOrder []string
	addCluster := func(cl config.Cluster, token string) {
		clusterOrder = append(clusterOrder, cl.Name)
		if cl.EDS != nil {
			eps, epGen, ready := s.endpointsOf(cl.EDS.ServiceName)
			if !ready {
				warming = true
				if prev, ok := s.activeClusters[cl.Name]; ok {
					clusters[cl.Name] = prev
				}
				return
			}
			cl.Endpoints = eps
			token += "/" + epGen
		}
		clusters[cl.Name] = activeCluster{token: token, cfg: cl}
	}
	for _, cl := range s.c.opts.Config.Clusters {
		addCluster(cl, "static")
	}
	cds := s.types[TypeCluster]
	for _, name := range slices.Sorted(maps.Keys(cds.entries)) {
		e := cds.entries[name]
		addCluster(e.cluster, strconv.FormatUint(e.gen, 10))
	}

	listeners := map[string]activeListener{}
	var listenerOrder []string
	addListener := func(l config.Listener, token string) {
		listenerOrder = append(listenerOrder, l.Name)
		if l.RDS != nil {
			routes, rGen, ready := s.routesOf(l.RDS.RouteConfigName)
			if !ready {
				warming = true
				if prev, ok := s.activeListeners[l.Name]; ok {
					listeners[l.Name] = prev
				}
				return
			}
			l.Routes = routes
			token += "/" + rGen
		}
		listeners[l.Name] = activeListener{token: token, cfg: l}
	}
	for _, l := range s.c.opts.Config.Listeners {
		addListener(l, "static")
	}
	lds := s.types[TypeListener]
	for _, name := range slices.Sorted(maps.Keys(lds.entries)) {
		e := lds.entries[name]
		addListener(e.listener, strconv.FormatUint(e.gen, 10))
	}
	if !s.initialized && warming {
		return nil
	}

	var tokens strings.Builder
	cfg := *s.c.opts.Config
	cfg.Clusters, cfg.Listeners = nil, nil
	for _, name := range clusterOrder {
		if a, ok := clusters[name]; ok {
			cfg.Clusters = append(cfg.Clusters, a.cfg)
			fmt.Fprintf(&tokens, "c %q %q\n", name, a.token)
		}
	}
	for _, name := range listenerOrder {
		if a, ok := listeners[name]; ok {
			cfg.Listeners = append(cfg.Listeners, a.cfg)
			fmt.Fprintf(&tokens, "l %q %q\n", name, a.token)
		}
	}
	if s.initialized && tokens.String() == s.lastApplied {
		return nil
	}
	if err := s.c.opts.Applier.Apply(&cfg, s.dump(clusters, listeners)); err != nil {
		s.c.event(Event{Kind: EventApplyFailed, Detail: err.Error()})
		return fmt.Errorf("applying the configuration: %w", err)
	}
	s.initialized = true
	s.lastApplied = tokens.String()
	s.activeClusters, s.activeListeners = clusters, listeners
	s.c.event(Event{Kind: EventApplied, Detail: strings.TrimSpace(tokens.String())})
	return nil
}

// endpointsOf returns the endpoints of an EDS service, their generation, and whether the cluster is
// warm: they arrived, or their initial fetch timed out (no endpoint then).
func (s *state) endpointsOf(service string) (eps []config.Endpoint, gen string, ready bool) {
	eds := s.types[TypeEndpoint]
	if e := eds.entries[service]; e != nil {
		return e.endpoints, strconv.FormatUint(e.gen, 10), true
	}
	if eds.timedOut[service] {
		return nil, "timeout", true
	}
	return nil, "", false
}

// routesOf is endpointsOf for a listener's route configuration.
func (s *state) routesOf(name string) (rc config.RouteConfig, gen string, ready bool) {
	rds := s.types[TypeRoute]
	if e := rds.entries[name]; e != nil {
		return e.routes, strconv.FormatUint(e.gen, 10), true
	}
	if rds.timedOut[name] {
		return config.RouteConfig{Name: name}, "timeout", true
	}
	return config.RouteConfig{}, "", false
}
