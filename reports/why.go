package reports

import (
	"fmt"
	"strings"

	"github.com/meshproof/meshproof/reports/record"
)

// outlierTypes are the outlier detectors' names as they appear in Envoy's ejections_detected_<type> and
// ejections_enforced_<type> counters.
var outlierTypes = []string{"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure",
	"success_rate", "local_origin_success_rate", "failure_percentage", "local_origin_failure_percentage"}

// whyNoEjection says, from the proxy's own counters for the services' clusters (cluster name = service
// name) and its detected_not_enforced / overflow events for the hosts match accepts, why an expected
// ejection did not happen: "" when the record says nothing about it. A service the ingress proxy does
// not route to but other services call is ejected by their sidecars: their counters and events say.
func whyNoEjection(rec *record.Record, services []string, match func(host string) bool) string {
	var why []string
	seen := map[string]bool{}
	bySidecars := map[string]bool{}
	for _, svc := range services {
		if seen[svc] {
			continue
		}
		seen[svc] = true
		if callers := callersOf(rec, svc); len(callers) > 0 && !hasClusterPrefix(rec.ProxyStats, svc) {
			bySidecars[svc] = true
			for _, e := range callers {
				stats := map[string]uint64{}
				for k, n := range e.SidecarStats {
					stats["cluster."+svc+"."+k] = n
				}
				for _, w := range clusterWhy(stats, svc, len(rec.ProxyEvents) > 0) {
					why = append(why, e.Caller+"'s sidecars: "+w)
				}
			}
			continue
		}
		why = append(why, clusterWhy(rec.ProxyStats, svc, len(rec.ProxyEvents) > 0)...)
	}
	why = append(why, decisionEvents(rec, func(e record.ProxyEvent) bool { return match(e.Host) })...)
	if len(why) == 0 {
		return ""
	}
	return "; why, from the proxy: " + strings.Join(why, "; ")
}

// callersOf returns the record's edges into a service.
func callersOf(rec *record.Record, svc string) []record.Edge {
	var out []record.Edge
	for _, e := range rec.Edges {
		if e.Callee == svc {
			out = append(out, e)
		}
	}
	return out
}

// hasClusterPrefix tells whether the stats hold a counter of the cluster "cluster.<name>.".
func hasClusterPrefix(stats map[string]uint64, cluster string) bool {
	for k := range stats {
		if strings.HasPrefix(k, "cluster."+cluster+".") {
			return true
		}
	}
	return false
}

// decisionEvents lists the outlier detectors' overflow and detected_not_enforced events match accepts,
// grouped by kind, host and reason, with their times (the first three).
func decisionEvents(rec *record.Record, match func(record.ProxyEvent) bool) []string {
	type key struct{ kind, proxy, host, reason string }
	var order []key
	times := map[key][]string{}
	for _, e := range rec.ProxyEvents {
		if (e.Kind != record.ProxyOverflow && e.Kind != record.ProxyDetectedNotEnforced) || !match(e) {
			continue
		}
		proxy := ""
		if e.Sidecar() {
			proxy = e.Proxy
		}
		k := key{e.Kind, proxy, e.Host, e.Reason}
		if times[k] == nil {
			order = append(order, k)
		}
		times[k] = append(times[k], formatOffset(e.At))
	}
	var why []string
	for _, k := range order {
		at := times[k]
		shown := strings.Join(at[:min(len(at), 3)], ", ")
		if len(at) > 3 {
			shown += fmt.Sprintf(" and %d more", len(at)-3)
		}
		by := ""
		if k.proxy != "" {
			by = " by " + k.proxy + "'s sidecar"
		}
		switch k.kind {
		case record.ProxyOverflow:
			why = append(why, fmt.Sprintf("%s detected (%s)%s but refused by max_ejection_percent at %s", k.host, k.reason, by, shown))
		default:
			why = append(why, fmt.Sprintf("%s detected (%s)%s but not enforced (enforcing_%s drew no) at %s", k.host, k.reason, by, k.reason, shown))
		}
	}
	return why
}

// clusterWhy reads one cluster's outlier-detection counters over the run. withEvents: the proxy emitted
// its ejection events, so an ejection it counted that was not this host's in this window was another's.
func clusterWhy(stats map[string]uint64, cluster string, withEvents bool) []string {
	prefix := "cluster." + cluster + ".outlier_detection."
	has := false
	for k := range stats {
		has = has || strings.HasPrefix(k, prefix)
	}
	if !has {
		if len(stats) == 0 {
			return nil // the run recorded no proxy stats at all
		}
		return []string{fmt.Sprintf("cluster %s exports no outlier_detection counters: outlier detection is not configured for it", cluster)}
	}
	var out []string
	var detected, enforced, lost uint64
	counted := false // the proxy exports the per-detector counters (a fixture or another proxy may not)
	for k := range stats {
		counted = counted || strings.HasPrefix(k, prefix+"ejections_detected_")
	}
	for _, t := range outlierTypes {
		d, e := stats[prefix+"ejections_detected_"+t], stats[prefix+"ejections_enforced_"+t]
		detected, enforced = detected+d, enforced+e
		if d > e {
			lost += d - e
			out = append(out, fmt.Sprintf("%sejections_detected_%s = %d > ejections_enforced_%s = %d", prefix, t, d, t, e))
		}
	}
	overflow := stats[prefix+"ejections_overflow"]
	if overflow > 0 {
		out = append(out, fmt.Sprintf("%sejections_overflow = %d: max_ejection_percent capped %d ejection(s)", prefix, overflow, overflow))
	}
	if lost > overflow {
		out = append(out, fmt.Sprintf("%d detection(s) not enforced: an enforcing_* below 100%% drew no", lost-overflow))
	}
	switch {
	case !counted:
		if n := stats[prefix+"ejections_enforced_total"]; n > 0 && withEvents {
			out = append(out, fmt.Sprintf("%sejections_enforced_total = %d: outlier detection did eject, other hosts or outside the window", prefix, n))
		}
	case detected == 0:
		out = append(out, fmt.Sprintf("no detector fired for cluster %s (every %sejections_detected_* is 0): the failures never made "+
			"consecutive_5xx (or consecutive_gateway_failure) in a row, and success_rate / failure_percentage judge only hosts with "+
			"success_rate_request_volume (default 100) / failure_percentage_request_volume (default 50) requests in one interval, "+
			"from at least success_rate_minimum_hosts / failure_percentage_minimum_hosts (default 5) such hosts", cluster, prefix))
	case enforced > 0 && lost == 0 && withEvents:
		out = append(out, fmt.Sprintf("%sejections_enforced_total = %d: outlier detection did eject, other hosts or outside the window", prefix, enforced))
	}
	if p := stats["cluster."+cluster+".lb_healthy_panic"]; p > 0 {
		out = append(out, fmt.Sprintf("cluster.%s.lb_healthy_panic = %d: below healthy_panic_threshold the ejected hosts got traffic again", cluster, p))
	}
	return out
}
