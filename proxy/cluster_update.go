package proxy

import (
	"fmt"
	"reflect"

	"github.com/meshproof/meshproof/proxy/config"
)

// endpointsOnly says whether b differs from a by its endpoints alone, for a cluster of type EDS: an
// EDS update, which Envoy applies to the running cluster (ClusterImplBase's priority set update)
// rather than replacing it.
func endpointsOnly(a, b config.Cluster) bool {
	if a.EDS == nil || b.EDS == nil {
		return false
	}
	a.Endpoints, b.Endpoints = nil, nil
	return reflect.DeepEqual(a, b)
}

// carry makes the cluster of cfg from c, whose configuration differs by its endpoints alone, as
// Envoy's EDS cluster updates its hosts (EdsClusterImpl::onConfigUpdate → updateDynamicHostList,
// source/common/upstream/upstream_impl.cc): a host whose address stays is the same host, with its
// stats, its connection pools (c hands them over), its outlier detection and health-check state and
// its slow start, its weight updated in place if the update changed it (Envoy makes a new host only when
// its health-check address or locality changed, neither of which we support); a removed host's pools close with c (unless it stays pending removal: see
// below); a new host starts fresh. The breakers are shared. c keeps serving the requests that hold it
// until its generations let go of it.
func (c *cluster) carry(cfg config.Cluster) (*cluster, error) {
	n := &cluster{name: cfg.Name, cfg: cfg, st: newClusterStats(c.st.store, cfg.Name), events: c.events, clk: c.clk,
		seeds: c.seeds, rm: c.rm, stop: make(chan struct{})}
	n.initFns()
	n.latestSlowStart.Store(c.latestSlowStart.Load())
	byAddr := make(map[string]int, len(c.hosts))
	for i, h := range c.hosts {
		if !h.removed.Load() { // a host pending removal that failed its checks is gone
			byAddr[h.addr] = i
		}
	}
	from := make([]int, len(cfg.Endpoints))
	weights := make([]uint32, len(cfg.Endpoints))
	keys := make([]string, len(cfg.Endpoints))
	n.reweigh = map[*host]uint32{}
	for i, ep := range cfg.Endpoints {
		from[i] = -1
		if j, ok := byAddr[ep.Address]; ok {
			from[i] = j
			delete(byAddr, ep.Address) // an address listed twice: the second is a new host
			h := c.hosts[j]
			n.hosts = append(n.hosts, h)
			if w := max(ep.Weight, 1); h.weight.Load() != w {
				n.reweigh[h] = w // set by commit: the host still serves c until then
			}
		} else {
			n.hosts = append(n.hosts, newHost(ep))
		}
		weights[i], keys[i] = ep.Weight, ep.Address
	}
	// A host the update removed stays, pending removal, while active health checks find it healthy,
	// unless ignore_health_on_host_removal (BaseDynamicClusterImpl::updateDynamicHostList,
	// source/common/upstream/upstream_impl.cc: without health checks, or with that option, it leaves).
	n.pending = map[*host]bool{}
	if c.hc != nil && !cfg.IgnoreHealthOnHostRemoval {
		listed := make(map[string]bool, len(cfg.Endpoints))
		for _, ep := range cfg.Endpoints {
			listed[ep.Address] = true
		}
		for j, h := range c.hosts {
			if k, ok := byAddr[h.addr]; !ok || k != j || listed[h.addr] || !c.hc.Healthy(j) {
				continue
			}
			from = append(from, j)
			n.hosts = append(n.hosts, h)
			weights, keys = append(weights, h.weight.Load()), append(keys, h.addr)
			n.pending[h] = true
		}
	}
	var err error
	if n.picker, err = newPicker(cfg, weights, keys); err != nil {
		return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
	}
	if c.outlier != nil {
		if n.outlier, err = c.outlier.Carry(from, c.seeds.stream(cfg.Name, saltOutlier)); err != nil {
			return nil, fmt.Errorf("cluster %s: %w", cfg.Name, err)
		}
	}
	if c.hc != nil {
		n.hc = c.hc.Carry(from)
	}
	if ss := cfg.SlowStart; ss != nil && ss.Enabled() {
		for i, j := range from {
			if j < 0 && n.healthy(i) {
				n.enterSlowStart(i, c.clk.Now()) // a new host joins: its slow start begins
			}
		}
	}
	n.tls = c.tls // the same transport socket: only the endpoints differ
	dial := n.dialer()
	hcDial := healthCheckDialer(cfg.ConnectTimeout, n.tls)
	n.carriedFrom, n.borrowed = c, map[upstream]bool{}
	for i, j := range from {
		if j >= 0 {
			n.upstreams = append(n.upstreams, c.upstreams[j])
			n.borrowed[c.upstreams[j]] = true
			if n.hc != nil {
				n.hcUpstreams = append(n.hcUpstreams, c.hcUpstreams[j])
				n.borrowed[c.hcUpstreams[j]] = true
			}
			continue
		}
		n.upstreams = append(n.upstreams, n.newUpstream(n.hosts[i].addr, dial))
		if n.hc != nil {
			n.hcUpstreams = append(n.hcUpstreams, n.newHealthCheckUpstream(n.hosts[i].addr, hcDial))
		}
	}
	n.st.membershipTotal.Set(int64(len(n.hosts)))
	n.publishHealth()
	n.unpublish = c.st.store.OnSnapshot(n.publishBreakers)
	return n, nil
}

// commit completes a carry as the configuration holding the cluster is put in use (nothing fails
// after it): the pools it borrowed from the cluster it was made from become its own (that one's close
// leaves them open), and that one's attempts pick from this one from now on (cluster.next, see
// newest). Until then, closing it (a configuration that failed to build) leaves them to their first
// owner. Once the configuration is in use, inUse finishes the update.
func (c *cluster) commit() {
	from := c.carriedFrom
	if from == nil {
		return
	}
	c.prev = from
	from.handMu.Lock()
	if from.handedOver == nil {
		from.handedOver = map[upstream]bool{}
	}
	c.handMu.Lock()
	for u := range c.borrowed {
		from.handedOver[u] = true
	}
	c.borrowed, c.carriedFrom = nil, nil
	c.handMu.Unlock()
	from.handMu.Unlock()
	for h, w := range c.reweigh {
		h.weight.Store(w) // Envoy's updateDynamicHostList: existing_host->weight(host->weight())
	}
	c.reweigh = nil
	from.next.Store(c)
}

// inUse finishes an endpoint update once the configuration holding c is the server's (after
// s.gen.Store: a request that arrived before it still picks from the old host set, none removed): the
// hosts the update removed are marked so (see cluster.eligible), the hosts kept pending removal
// flagged, and a membership change counted (cluster.<name>.membership_change) when a host was added or
// removed: Envoy counts it in the cluster's priority update callback only when hosts_added or
// hosts_removed is not empty (ClusterImplBase's constructor, source/common/upstream/upstream_impl.cc),
// so a host kept pending removal, a reordering or a weight change alone is no change.
func (c *cluster) inUse() {
	from := c.prev
	if from == nil {
		return
	}
	c.prev = nil
	staying := make(map[*host]bool, len(c.hosts))
	for _, h := range c.hosts {
		staying[h] = true
		h.pendingRemoval.Store(c.pending[h])
	}
	changed := false
	was := make(map[*host]bool, len(from.hosts))
	for _, h := range from.hosts {
		was[h] = true
		if !staying[h] && !h.removed.Load() { // one removed already (pending, then failed) was counted then
			h.removed.Store(true)
			changed = true
		}
	}
	for _, h := range c.hosts {
		if !was[h] {
			changed = true // added
		}
	}
	if changed {
		c.st.store.Counter(c.st.prefix + "membership_change").Inc()
	}
}
