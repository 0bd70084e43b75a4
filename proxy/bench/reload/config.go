package main

import (
	"fmt"
	"strings"
)

// The bench's bootstraps: two valid ones that really differ, A and B, and invalid ones the proxy must
// refuse. A reload from A to B (or back) changes
//
//   - the route: its timeout, its retry policy and a response header naming the configuration
//     (x-meshproof-config: a|b), which is how the bench sees each reload take effect;
//   - the cluster: its connect_timeout and its one endpoint (upstream instance 0 for A, 1 for B), so
//     the cluster is replaced on every reload (cluster_manager.cluster_modified) and each upstream
//     instance's request count is the number of requests served on its configuration.
//
// The listener's address, and so its socket, stays the same.

// ports are the loopback ports the bench uses.
type ports struct {
	listener, admin int
	upstreams       [2]int // the data ports of upstream instances 0 (config A) and 1 (config B)
	controls        [2]int // their control ports (/ready, /record)
}

// configName is "a" for config A (i = 0), "b" for config B (i = 1).
func configName(i int) string { return string(rune('a' + i)) }

// bootstrap is valid config A (i = 0) or B (i = 1) on p.
func bootstrap(p ports, i int) string {
	timeouts := [2]string{"5s", "4s"}
	retries := [2]int{2, 1}
	connect := [2]string{"1s", "0.5s"}
	return fmt.Sprintf(`# meshproof reload bench: config %[1]s
admin: {address: {socket_address: {address: 127.0.0.1, port_value: %[2]d}}}
static_resources:
  listeners:
    - name: ingress
      address: {socket_address: {address: 127.0.0.1, port_value: %[3]d}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {prefix: /}
                          route:
                            cluster: backend
                            timeout: %[4]s
                            retry_policy: {retry_on: "5xx,reset,connect-failure", num_retries: %[5]d}
                          response_headers_to_add:
                            - header: {key: x-meshproof-config, value: %[1]s}
                http_filters:
                  - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
    - name: backend
      type: STATIC
      connect_timeout: %[6]s
      circuit_breakers: {thresholds: [{max_connections: 4096, max_pending_requests: 4096, max_requests: 4096, max_retries: 16}]}
      load_assignment:
        cluster_name: backend
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %[7]d}}}}]}]
`, configName(i), p.admin, p.listener, timeouts[i], retries[i], connect[i], p.upstreams[i])
}

// invalidKinds are the ways the bench breaks config A, in turn.
var invalidKinds = []string{"unsupported field", "unknown cluster", "malformed YAML"}

// invalidBootstrap is config A broken in the k-th way of invalidKinds (modulo their number).
func invalidBootstrap(p ports, k int) string {
	a := bootstrap(p, 0)
	switch k % len(invalidKinds) {
	case 0: // a field outside the subset: refused with its field path
		return strings.Replace(a, "      type: STATIC\n", "      type: STATIC\n      dns_lookup_family: V4_ONLY\n", 1)
	case 1: // the route names a cluster that does not exist
		return strings.Replace(a, "cluster: backend\n", "cluster: missing\n", 1)
	default: // a file cut short in the middle of a flow mapping
		return a[:strings.Index(a, "static_resources:")] + "static_resources: {listeners: [\n"
	}
}
