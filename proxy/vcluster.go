package proxy

import (
	"net/http"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// vclusterOther is the virtual cluster of a request that matches none of its virtual host's (Envoy's
// VirtualHostImpl::virtual_cluster_catch_all_, source/common/router/config_impl.cc).
const vclusterOther = "other"

// vclusterStats are a virtual cluster's stats, vhost.<virtual host>.vcluster.<virtual cluster>.: the
// counters of Envoy's VirtualClusterStats (config_impl.h, kept by the router and its retry state as the
// cluster's own), and the response code stats and upstream_rq_time that Envoy's CodeStatsImpl
// (source/common/http/codes.cc) charges to the request's virtual cluster: for every response the router
// charges, a retried one included (the cluster's "retry." prefix does not apply to them).
type vclusterStats struct {
	store                                                                              *stats.Store
	prefix                                                                             string
	rqTotal, rqTimeout, rqRetry, rqRetrySuccess, rqRetryLimitExceeded, rqRetryOverflow *stats.Counter
	rqCompleted                                                                        *stats.Counter
	rqClass                                                                            classCounters
	rqTime                                                                             *stats.Histogram
}

func newVclusterStats(store *stats.Store, vhost, name string) *vclusterStats {
	p := "vhost." + vhost + ".vcluster." + name + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	return &vclusterStats{store: store, prefix: p,
		rqTotal: c("upstream_rq_total"), rqTimeout: c("upstream_rq_timeout"), rqRetry: c("upstream_rq_retry"),
		rqRetrySuccess: c("upstream_rq_retry_success"), rqRetryLimitExceeded: c("upstream_rq_retry_limit_exceeded"),
		rqRetryOverflow: c("upstream_rq_retry_overflow"),
		// The code stats are made when first charged in Envoy; here with the rest, reading 0 until then.
		rqCompleted: c("upstream_rq_completed"), rqClass: newClassCounters(c, "upstream_rq"),
		rqTime: store.Histogram(p + "upstream_rq_time"),
	}
}

// response charges one response code: upstream_rq_completed, upstream_rq_<N>xx, upstream_rq_<code>.
func (s *vclusterStats) response(code int) {
	if s == nil {
		return
	}
	s.rqCompleted.Inc()
	s.rqClass.inc(code)
	s.store.Counter(s.prefix + "upstream_rq_" + strconv.Itoa(code)).Inc()
}

func (s *vclusterStats) recordTime(d time.Duration) {
	if s != nil {
		s.rqTime.Record(d)
	}
}

// vhostClusters are a virtual host's virtual clusters and their stats, "other" last.
type vhostClusters struct {
	defs  []config.VirtualCluster
	stats []*vclusterStats // one per def, then other's
}

// newVirtualClusters makes the stats of every virtual host's virtual clusters (a virtual host without
// any has none, not even "other", as in Envoy).
func newVirtualClusters(vhosts []config.VirtualHost, store *stats.Store) map[*config.VirtualHost]*vhostClusters {
	out := map[*config.VirtualHost]*vhostClusters{}
	for i := range vhosts {
		vh := &vhosts[i]
		if len(vh.VirtualClusters) == 0 {
			continue
		}
		vc := &vhostClusters{defs: vh.VirtualClusters}
		for _, d := range vh.VirtualClusters {
			vc.stats = append(vc.stats, newVclusterStats(store, vh.Name, d.Name))
		}
		vc.stats = append(vc.stats, newVclusterStats(store, vh.Name, vclusterOther))
		out[vh] = vc
	}
	return out
}

// match is the request's virtual cluster: the first whose header matchers all match (the
// pseudo-headers :path, :method and :authority read the request's), else "other"
// (VirtualHostImpl::virtualClusterFromEntries).
func (vc *vhostClusters) match(r *http.Request) *vclusterStats {
	for i, d := range vc.defs {
		if requestHeadersMatch(d.Headers, r) {
			return vc.stats[i]
		}
	}
	return vc.stats[len(vc.stats)-1]
}
