package proxy

import "github.com/meshproof/meshproof/proxy/stats"

// classCounters are the <prefix>_2xx … _5xx counters of a response's status class, as Envoy keeps them
// for the connection manager (downstream_rq_<N>xx) and for each cluster (upstream_rq_<N>xx).
type classCounters [4]*stats.Counter

func newClassCounters(c func(string) *stats.Counter, prefix string) classCounters {
	return classCounters{c(prefix + "_2xx"), c(prefix + "_3xx"), c(prefix + "_4xx"), c(prefix + "_5xx")}
}

// inc counts code in its class; a 1xx, or a code outside 100..599, counts in none.
func (cc classCounters) inc(code int) {
	if i := code/100 - 2; i >= 0 && i < len(cc) {
		cc[i].Inc()
	}
}
