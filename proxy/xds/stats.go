package xds

// Envoy's xDS stats (docs: "xDS subscription statistics", "Management Server"), counted into
// Options.Stats:
//
//	control_plane.connected_state       gauge: 1 while an ADS stream is open
//	<prefix>.update_attempt             responses for the subscription (and stream failures)
//	<prefix>.update_success             accepted
//	<prefix>.update_rejected            rejected (NACKed)
//	<prefix>.update_failure             the stream failed
//	<prefix>.init_fetch_timeout         the initial fetch timed out
//
// with prefix cluster_manager.cds (CDS), listener_manager.lds (LDS), http.<stat_prefix>.rds.<name>
// (RDS, for each listener naming that route configuration) and cluster.<name> (EDS, for each cluster
// whose service it is).

// statPrefixes are the prefixes of the subscription stats of resource name of type url (name unused
// for CDS and LDS, whose subscription is the whole type).
func (s *state) statPrefixes(url, name string) []string {
	switch url {
	case TypeCluster:
		return []string{"cluster_manager.cds"}
	case TypeListener:
		return []string{"listener_manager.lds"}
	case TypeRoute:
		var out []string
		for _, l := range s.listeners() {
			if l.RDS != nil && l.RDS.RouteConfigName == name {
				out = append(out, "http."+l.StatPrefix+".rds."+name)
			}
		}
		return out
	default:
		var out []string
		for _, c := range s.clusters() {
			if c.EDS != nil && c.EDS.ServiceName == name {
				out = append(out, "cluster."+c.Name)
			}
		}
		return out
	}
}

// count adds one to stat of each subscription prefix of a resource.
func (s *state) count(url, name, stat string) {
	store := s.c.opts.Stats
	if store == nil {
		return
	}
	for _, p := range s.statPrefixes(url, name) {
		store.Counter(p + "." + stat).Inc()
	}
}

// countUpdate counts a response of url: per type for CDS and LDS, per resource for RDS and EDS
// (accepted: the names taken, rejected: the names refused).
func (s *state) countUpdate(url string, accepted, rejected []string) {
	if url == TypeCluster || url == TypeListener {
		s.count(url, "", "update_attempt")
		if len(rejected) > 0 {
			s.count(url, "", "update_rejected")
		} else {
			s.count(url, "", "update_success")
		}
		return
	}
	for _, n := range accepted {
		s.count(url, n, "update_attempt")
		s.count(url, n, "update_success")
	}
	for _, n := range rejected {
		s.count(url, n, "update_attempt")
		s.count(url, n, "update_rejected")
	}
}

// countFailure counts a stream failure on every subscription.
func (s *state) countFailure() {
	for _, url := range typeOrder {
		names, on := s.wanted(url)
		if !on {
			continue
		}
		if names == nil {
			s.count(url, "", "update_attempt")
			s.count(url, "", "update_failure")
			continue
		}
		for _, n := range names {
			s.count(url, n, "update_attempt")
			s.count(url, n, "update_failure")
		}
	}
}
