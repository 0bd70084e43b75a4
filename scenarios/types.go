// Package scenarios is the scenario format: the Go types of a scenario file, loading from YAML with
// file:line errors, defaults and validation. A scenario names services and instances, never ports; the
// proxies' route and cluster settings are Envoy v3 fields, decoded with the proxy's own config decoder.
package scenarios

import (
	"github.com/goccy/go-yaml/ast"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshproof/meshproof/reports"
)

// Scenario is one scenario file.
type Scenario struct {
	Name        string              `yaml:"name"`
	Description string              `yaml:"description"`
	Seed        uint64              `yaml:"seed"`
	Services    map[string]*Service `yaml:"services"`
	Proxies     map[string]*Proxy   `yaml:"proxies"`
	Load        *Load               `yaml:"load"`
	Faults      []*Fault            `yaml:"faults"`
	Checks      []Check             `yaml:"checks"`

	// File is where the scenario was read from (for messages and the report).
	File string `yaml:"-"`
}

// Service is a set of identical upstream instances.
type Service struct {
	Instances int      `yaml:"instances"` // default 1
	Response  Response `yaml:"response"`
}

// Response is how a healthy instance answers.
type Response struct {
	Status  int      `yaml:"status"` // default 200
	Size    int      `yaml:"size"`   // body bytes, default 0
	Latency Duration `yaml:"latency"`
}

// Proxy is one proxy in front of a service. Route and Cluster are Envoy v3 RouteAction and Cluster fields
// exactly as in production configuration; the listener, the route's cluster and the cluster's endpoints
// are generated from the topology.
type Proxy struct {
	RoutesTo    string   `yaml:"routes_to"`
	Route       ast.Node `yaml:"route"`
	Cluster     ast.Node `yaml:"cluster"`
	VirtualHost ast.Node `yaml:"virtual_host"`

	// Decoded forms of the Envoy fields above (set by Load; empty messages when absent).
	RouteAction *routev3.RouteAction `yaml:"-"`
	ClusterSpec *clusterv3.Cluster   `yaml:"-"`
	VHostSpec   *routev3.VirtualHost `yaml:"-"`
}

// Load is the open-loop load the scenario drives through a proxy.
type Load struct {
	Target   string            `yaml:"target"` // a proxy name
	Rate     Rate              `yaml:"rate"`
	Duration Duration          `yaml:"duration"`
	Path     string            `yaml:"path"`   // default "/"
	Method   string            `yaml:"method"` // default GET
	Headers  map[string]string `yaml:"headers"`
	Body     string            `yaml:"body"`
	Timeout  Duration          `yaml:"timeout"` // per request, default 30s
}

// Fault is a fault rule on some or all instances of a service, active from At for For (0: to the end).
type Fault struct {
	Service   string        `yaml:"service"`
	Instances []int         `yaml:"instances"` // default: all
	At        Duration      `yaml:"at"`
	For       Duration      `yaml:"for"`
	Latency   *LatencyFault `yaml:"latency"`
	Abort     *AbortFault   `yaml:"abort"`
	Reset     *ResetFault   `yaml:"reset"`
}

// LatencyFault adds a fixed delay to a share of requests.
type LatencyFault struct {
	Fixed   Duration `yaml:"fixed"`
	Percent Percent  `yaml:"percent"` // default 100
}

// AbortFault answers a share of requests with a status code.
type AbortFault struct {
	Status  int     `yaml:"status"`
	Percent Percent `yaml:"percent"` // default 100
}

// ResetFault resets the connection (TCP RST) of a share of requests before any response byte.
type ResetFault struct {
	Percent Percent `yaml:"percent"` // default 100
}

// Check is one parsed check with where it was written.
type Check struct {
	reports.Check
	Line, Column int
}
