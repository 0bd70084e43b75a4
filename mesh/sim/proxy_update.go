package sim

import (
	"fmt"
	"reflect"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// Update puts cfg in use at Now, as the live proxy applies a configuration its xDS client hands it
// (proxy.Server's update, proxy/update.go): the first listener's routes are replaced; a cluster whose
// configuration is unchanged is kept as it is; a cluster that differs by its endpoints alone keeps its
// state and updates its host set (cluster.carry, as the live cluster.carry: an EDS update); any other
// cluster is built anew (its counters carry on, as the live stats store keeps them by name); a cluster
// no longer listed stops. The requests in flight keep the route and cluster they were routed to; their
// retries pick from the cluster's current hosts, as the live attempts pick from the newest generation.
//
// cfg is the proxy's from then on (not copied). Nothing changes when Update fails.
func (p *Proxy) Update(cfg *config.Bootstrap) error {
	if cfg == nil || len(cfg.Listeners) == 0 {
		return fmt.Errorf("sim: proxy %s: the configuration has no listener", p.name)
	}
	// Build everything that can fail first.
	steps := make([]clusterStep, len(cfg.Clusters))
	listed := make(map[string]bool, len(cfg.Clusters))
	for i := range cfg.Clusters {
		cc := &cfg.Clusters[i]
		if listed[cc.Name] {
			return fmt.Errorf("sim: proxy %s: cluster %s listed twice", p.name, cc.Name)
		}
		listed[cc.Name] = true
		old := p.clusters[cc.Name]
		s := clusterStep{old: old, cfg: cc}
		var err error
		switch {
		case old != nil && reflect.DeepEqual(*old.cfg, *cc):
		case old != nil && endpointsOnly(old.cfg, cc):
			s.carry, err = old.prepareCarry(cc)
		default:
			s.old = nil
			s.fresh, err = newCluster(p, cc, p.resolve)
			if err == nil && old != nil {
				// The live counters are kept by name in the proxy's stats store; the gauges of the
				// requests still on the old cluster stay with it.
				s.fresh.st = old.st
				s.fresh.st.rqActive, s.fresh.st.rqPendingActive, s.fresh.st.cxActive = 0, 0, 0
			}
		}
		if err != nil {
			return fmt.Errorf("sim: proxy %s: %w", p.name, err)
		}
		steps[i] = s
	}
	// Commit.
	for _, c := range p.ordered {
		if !listed[c.name] || replaced(c, steps) {
			c.stop() // its timers; the requests holding it finish on it
		}
	}
	clusters := make(map[string]*cluster, len(steps))
	ordered := make([]*cluster, 0, len(steps))
	for _, s := range steps {
		c := s.old
		switch {
		case s.carry != nil:
			c.commitCarry(s.carry)
		case s.fresh != nil:
			c = s.fresh
			if p.started {
				c.start()
			}
		}
		clusters[c.name] = c
		ordered = append(ordered, c)
	}
	p.clusters, p.ordered = clusters, ordered
	p.setListener(&cfg.Listeners[0])
	return nil
}

// clusterStep is what Update does with one cluster of the new configuration.
type clusterStep struct {
	old   *cluster      // kept, or carried (carry set)
	carry *clusterCarry // old's new host set
	fresh *cluster      // built anew
	cfg   *config.Cluster
}

// replaced says whether c is replaced by a fresh cluster of the same name in steps.
func replaced(c *cluster, steps []clusterStep) bool {
	for _, s := range steps {
		if s.fresh != nil && s.cfg.Name == c.name {
			return true
		}
	}
	return false
}

// setListener puts l in use: its routes and the connection manager's settings (the counters carry on).
func (p *Proxy) setListener(l *config.Listener) {
	p.listener = l
	p.routes = &l.Routes
	p.internalPeer, p.xffInternal = false, false
	if len(l.InternalAddresses) > 0 && l.XffNumTrustedHops == 0 {
		p.internalPeer = l.UseRemoteAddress && internalAddr(l, loopback)
		p.xffInternal = !l.UseRemoteAddress
	}
	p.st.prefix = "http." + l.StatPrefix + "."
}

// endpointsOnly says whether b differs from a by its endpoints alone: an endpoint update, applied to
// the running cluster (the live proxy's endpointsOnly, proxy/cluster_update.go, for EDS clusters; the
// simulator's changed clusters are the same clusters with their endpoints inline).
func endpointsOnly(a, b *config.Cluster) bool {
	x, y := *a, *b
	x.Endpoints, y.Endpoints = nil, nil
	return reflect.DeepEqual(x, y)
}

// clusterCarry is a cluster's new host set, built before it is put in use.
type clusterCarry struct {
	cfg     *config.Cluster
	hosts   []*host
	from    []int // new host i was old host from[i], or is new (-1)
	picker  policy.Picker
	outlier *policy.OutlierDetector
	hc      *policy.HealthChecker
}

// prepareCarry builds the host set of cfg from c's, as the live cluster.carry (EdsClusterImpl's
// updateDynamicHostList, source/common/upstream/upstream_impl.cc): a host whose address stays is the
// same host (its connections, its outlier detection and health-check state: OutlierDetector.Carry,
// HealthChecker.Carry); an address listed twice is a new host the second time; a new host starts fresh
// (healthy for outlier detection; with health checks, unhealthy until its first check passes, as
// HealthChecker.Carry has it).
func (c *cluster) prepareCarry(cfg *config.Cluster) (*clusterCarry, error) {
	byAddr := make(map[string]int, len(c.hosts))
	for i, h := range c.hosts {
		byAddr[h.addr] = i
	}
	cc := &clusterCarry{cfg: cfg, from: make([]int, len(cfg.Endpoints))}
	for i, ep := range cfg.Endpoints {
		cc.from[i] = -1
		if j, ok := byAddr[ep.Address]; ok {
			cc.from[i] = j
			delete(byAddr, ep.Address)
			cc.hosts = append(cc.hosts, c.hosts[j])
			continue
		}
		cc.hosts = append(cc.hosts, c.newHost(ep.Address))
	}
	var err error
	if cc.picker, err = proxy.NewPicker(*cfg); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if c.outlier != nil {
		if cc.outlier, err = c.outlier.Carry(cc.from, c.p.seeds.Outlier(cfg.Name)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	if c.hc != nil {
		cc.hc = c.hc.Carry(cc.from)
	}
	return cc, nil
}

// newHost is a host of c at addr, resolved to its Upstream.
func (c *cluster) newHost(addr string) *host {
	h := &host{c: c, addr: addr, name: addr}
	if c.p.resolve != nil {
		if up, ok := c.p.resolve(addr); ok && up != nil {
			h.up, h.name = up, up.Name()
		}
	}
	return h
}

// commitCarry puts the host set in use. A removed host's idle connections close; its requests in
// flight finish on it, their outcomes no longer fed to outlier detection (the live detector forgets a
// removed host); its health checks stop.
//
// Approximation: a removed host that active health checks find healthy leaves at once, where Envoy
// keeps it, pending removal, until it fails a check (unless ignore_health_on_host_removal).
func (c *cluster) commitCarry(cc *clusterCarry) {
	kept := make([]bool, len(c.hosts))
	var checks []*hcSession
	for i, j := range cc.from {
		if j >= 0 {
			kept[j] = true
		}
		cc.hosts[i].idx = i
		if cc.hc != nil {
			if j >= 0 && j < len(c.checks) {
				checks = append(checks, c.checks[j])
			} else {
				checks = append(checks, nil) // made below, once the checker is in place
			}
		}
	}
	for j, h := range c.hosts {
		if kept[j] {
			continue
		}
		h.idx = -1
		for ; h.idle > 0; h.idle-- {
			h.open--
			c.st.cxActive--
			c.rm.ReleaseConnection()
		}
		if j < len(c.checks) {
			c.checks[j].stop()
		}
	}
	c.cfg, c.hosts, c.picker, c.outlier, c.hc = cc.cfg, cc.hosts, cc.picker, cc.outlier, cc.hc
	if c.hc != nil && c.checks != nil {
		for i, s := range checks {
			if s == nil {
				checks[i] = newHCSession(c.hosts[i])
				if c.running {
					checks[i].start()
				}
			}
		}
		c.checks = checks
	}
	c.recount()
}
