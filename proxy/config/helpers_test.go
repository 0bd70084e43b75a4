package config_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
)

// file is the name the inline documents are parsed under.
const file = "bootstrap.yaml"

// minimal is the smallest valid bootstrap; the error specs edit one line of it (never adding lines),
// so that the line numbers in their expectations are those shown here.
const minimal = `static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - name: backend
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route: {cluster: backend}
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}
`

// edit returns minimal with the one occurrence of old replaced by new. It runs while the spec tree is
// built, where assertions are not allowed, so a bad edit panics.
func edit(old, new string) string {
	if n := strings.Count(minimal, old); n != 1 {
		panic(fmt.Sprintf("edit(%q): found %d occurrences in minimal, want exactly one", old, n))
	}
	return strings.Replace(minimal, old, new, 1)
}

// at matches a *config.Error in the inline document at line:col with that path and a message
// containing msg.
func at(line, col int, path, msg string) types.GomegaMatcher {
	return errorAt(file, line, col, path, msg)
}

// errorAt matches a *config.Error at file:line:col with that path and a message containing msg.
func errorAt(file string, line, col int, path, msg string) types.GomegaMatcher {
	return SatisfyAll(
		HaveField("File", file),
		HaveField("Line", line),
		HaveField("Column", col),
		HaveField("Path", path),
		HaveField("Msg", ContainSubstring(msg)),
	)
}

// atPath matches an *config.Error without a position (FromProto on a proto built in code).
func atPath(path, msg string) types.GomegaMatcher {
	return SatisfyAll(
		HaveField("File", ""),
		HaveField("Line", 0),
		HaveField("Path", path),
		HaveField("Msg", ContainSubstring(msg)),
	)
}

// minimalWant is the internal form of minimal, Envoy's defaults applied.
func minimalWant() *config.Bootstrap {
	return &config.Bootstrap{
		Listeners: []config.Listener{{
			Name:        "ingress",
			Address:     "127.0.0.1:0",
			StatPrefix:  "ingress_http",
			IdleTimeout: time.Hour,
			// Envoy's default stream_idle_timeout (StreamIdleTimeoutMs).
			StreamIdleTimeout: 5 * time.Minute,
			BufferLimit:       1 << 20,
			Routes: config.RouteConfig{VirtualHosts: []config.VirtualHost{{
				Name:    "backend",
				Domains: []string{"*"},
				Routes: []config.Route{{
					Match:  config.RouteMatch{Prefix: "/"},
					Action: config.RouteAction{Cluster: "backend", Timeout: 15 * time.Second},
				}},
			}}},
		}},
		Clusters: []config.Cluster{withClusterDefaults(config.Cluster{
			Name:           "backend",
			ConnectTimeout: 5 * time.Second,
			LbPolicy:       "ROUND_ROBIN",
			Endpoints:      []config.Endpoint{{Address: "127.0.0.1:8080", Weight: 1}},
		})},
	}
}

// withClusterDefaults fills in the resilience defaults every converted cluster carries.
func withClusterDefaults(c config.Cluster) config.Cluster {
	d := config.NewCluster(c.Name, c.Endpoints...)
	d.ConnectTimeout, d.LbPolicy = c.ConnectTimeout, c.LbPolicy
	return d
}

const hcmPath = "static_resources.listeners[0].filter_chains[0].filters[0].typed_config"

const routePath = hcmPath + ".route_config.virtual_hosts[0].routes[0].route"

const clusterPath = "static_resources.clusters[0]"
