// Package scenarios is the scenario format: the Go types of a scenario file, loading from YAML with
// file:line errors, defaults and validation. A scenario names services and instances, never ports; the
// proxies' route and cluster settings are Envoy v3 fields, decoded with the proxy's own config decoder.
package scenarios

import (
	"fmt"
	"maps"
	"slices"
	"time"

	"github.com/goccy/go-yaml/ast"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/tcp"
	"github.com/meshproof/meshproof/reports/checks"
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
	// Changes are configuration changes the scenario's control plane pushes to its proxies over xDS
	// at given times (see Change).
	Changes []*Change `yaml:"changes"`
	// Sidecars configures the outbound sidecars of the instances of services that call others
	// (see Sidecars in mesh.go).
	Sidecars *Sidecars `yaml:"sidecars"`
	// Mesh holds mesh-wide settings: mutual TLS between the proxies and the instances (see Mesh in
	// mtls.go).
	Mesh *Mesh `yaml:"mesh"`

	// File is where the scenario was read from (for messages and the report).
	File string `yaml:"-"`
	// Warnings are legal settings with a consequence the author may not expect (Envoy accepts them
	// too), each with its position: say them, do not refuse the file.
	Warnings []*Error `yaml:"-"`
}

// Service is a set of identical instances. A leaf service answers with its Response; a service with
// Calls also calls other services for each request it serves, through each instance's own outbound
// sidecar, before it answers.
type Service struct {
	Instances int      `yaml:"instances"` // default 1
	Response  Response `yaml:"response"`
	// Calls are made in order for each request, after the service time (the response latency); a
	// step may make several calls in parallel.
	Calls []*CallStep `yaml:"calls"`
	// OnFailure is the status answered when a required call failed after the sidecar gave up
	// (default DefaultOnFailure).
	OnFailure int `yaml:"on_failure"`
	// PropagateDeadline forwards the remaining budget of each request (its x-envoy-expected-rq-timeout-ms
	// less the time spent) to its calls as x-envoy-upstream-rq-timeout-ms, and skips a call whose
	// budget is spent.
	PropagateDeadline bool `yaml:"propagate_deadline"`
	// Capacity, when set, bounds each instance's concurrent work: workers and a queue.
	Capacity *Capacity `yaml:"capacity"`
}

// Response is how a healthy instance answers.
type Response struct {
	Status  int      `yaml:"status"` // default 200
	Size    int      `yaml:"size"`   // body bytes, default 0
	Latency Duration `yaml:"latency"`
}

// CheckList is the scenario's checks, parsed, in order.
func (sc *Scenario) CheckList() []checks.Check {
	out := make([]checks.Check, len(sc.Checks))
	for i, c := range sc.Checks {
		out[i] = c.Check
	}
	return out
}

// Proxy is one proxy in front of a service. Route and Cluster are Envoy v3 RouteAction and Cluster fields
// exactly as in production configuration; the listener, the route's cluster and the cluster's endpoints
// are generated from the topology.
//
// A proxy routes either everything to one service (RoutesTo, with Route's RouteAction fields) or by
// Routes: Envoy v3 routes (match, then route, redirect or direct_response) tried in order, whose
// clusters are services of the scenario — a canary split by weighted_clusters, a header-matched
// route. Each service a route names gets a STATIC cluster with the Cluster fields.
type Proxy struct {
	RoutesTo    string   `yaml:"routes_to"`
	Routes      ast.Node `yaml:"routes"`
	Route       ast.Node `yaml:"route"`
	Cluster     ast.Node `yaml:"cluster"`
	VirtualHost ast.Node `yaml:"virtual_host"`

	// Decoded forms of the Envoy fields above (set by Load; empty messages when absent).
	RouteSpecs  []*routev3.Route     `yaml:"-"`
	RouteAction *routev3.RouteAction `yaml:"-"`
	ClusterSpec *clusterv3.Cluster   `yaml:"-"`
	VHostSpec   *routev3.VirtualHost `yaml:"-"`
	// UpstreamHTTP2, set by Load when the load speaks h2c or gRPC, makes the proxy's clusters speak
	// HTTP/2 to the instances (see staticCluster).
	UpstreamHTTP2 bool `yaml:"-"`
}

// Services lists the services the proxy has a cluster for, sorted: its routes_to service, or every
// service its routes name (as a route's cluster, a weighted cluster or a mirror's cluster). Set by
// Load; names that are not services are errors there.
func (p *Proxy) Services() []string {
	if p.RoutesTo != "" || len(p.RouteSpecs) == 0 {
		if p.RoutesTo == "" {
			return nil
		}
		return []string{p.RoutesTo}
	}
	seen := map[string]bool{}
	for _, r := range p.RouteSpecs {
		for _, c := range routeClusters(r) {
			seen[c.name] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// Load is the open-loop load the scenario drives through a proxy: a constant rate for a duration, or
// named phases.
type Load struct {
	Target   string            `yaml:"target"` // a proxy name
	Rate     Rate              `yaml:"rate"`
	Duration Duration          `yaml:"duration"`
	Phases   []*LoadPhase      `yaml:"phases"`
	Path     string            `yaml:"path"`   // default "/"
	Method   string            `yaml:"method"` // default GET
	Headers  map[string]string `yaml:"headers"`
	Body     string            `yaml:"body"`
	Timeout  Duration          `yaml:"timeout"` // per request, default 30s
	// Mix replaces the single request (path, method, headers, body) with a weighted mix: each request
	// is one of the entries, drawn from the scenario's seed and the request's sequence number.
	Mix []*LoadRequest `yaml:"mix"`
	// Protocol is what the load speaks to its target: ProtocolHTTP1 (default), ProtocolH2C (HTTP/2 with
	// prior knowledge) or ProtocolGRPC (gRPC calls of meshproof.test.v1.Echo over h2c). With h2c or
	// gRPC the proxies speak HTTP/2 to the instances too (Proxy.UpstreamHTTP2).
	Protocol string `yaml:"protocol"`
	// GRPC shapes the calls of a gRPC load; only with protocol: grpc.
	GRPC *LoadGRPC `yaml:"grpc"`
}

// Load protocols.
const (
	ProtocolHTTP1 = "http1"
	ProtocolH2C   = "h2c"
	ProtocolGRPC  = "grpc"
)

// LoadGRPC shapes the calls of a gRPC load.
type LoadGRPC struct {
	Method   string   `yaml:"method"`   // unary (default) or server_stream
	Deadline Duration `yaml:"deadline"` // each call's deadline, sent as grpc-timeout; 0 = none (timeout still bounds it)
	// Payload is the bytes each Request carries; ReplySize the bytes of each Reply (0: the service's
	// response.size); Replies how many Replies a server_stream call asks for (0: 1).
	Payload   int    `yaml:"payload"`
	ReplySize uint32 `yaml:"reply_size"`
	Replies   uint32 `yaml:"replies"`
}

// LoadRequest is one entry of the load's weighted mix. Path, method and body default to the load's;
// headers are added to the load's (an entry here replaces the same name there).
type LoadRequest struct {
	Weight  int               `yaml:"weight"` // relative weight, default 1
	Path    string            `yaml:"path"`
	Method  string            `yaml:"method"`
	Headers map[string]string `yaml:"headers"`
	Body    *string           `yaml:"body"`
}

// Planned is the number of requests the load intends to send (its phases' sum).
func (l *Load) Planned() float64 {
	if len(l.Phases) == 0 {
		return l.Rate.PerSecond * l.Duration.Seconds()
	}
	var n float64
	for _, p := range l.Phases {
		if p != nil { // a phase written empty ("- ") is an error of its own; it plans nothing
			n += p.Planned()
		}
	}
	return n
}

// Total is how long the load runs: its duration, or the sum of its phases'.
func (l *Load) Total() time.Duration {
	if len(l.Phases) == 0 {
		return l.Duration.Duration
	}
	var d time.Duration
	for _, p := range l.Phases {
		if p != nil {
			d += p.Duration.Duration
		}
	}
	return d
}

// Describe says in a few words what load the scenario drives, for logs.
func (l *Load) Describe() string {
	if len(l.Phases) == 0 {
		return fmt.Sprintf("%g/s for %s", l.Rate.PerSecond, l.Duration.Duration)
	}
	return fmt.Sprintf("%d phases over %s", len(l.Phases), l.Total())
}

// LoadPhase is one named phase of the load: a constant rate, a ramp, or bursts.
type LoadPhase struct {
	Name     string     `yaml:"name"`
	Duration Duration   `yaml:"duration"`
	Rate     Rate       `yaml:"rate"`
	Ramp     *RampSpec  `yaml:"ramp"`
	Burst    *BurstSpec `yaml:"burst"`
}

// RampSpec moves the rate linearly from From to To over the phase.
type RampSpec struct {
	From Rate `yaml:"from"`
	To   Rate `yaml:"to"`
}

// BurstSpec sends Requests at once every Every.
type BurstSpec struct {
	Requests int      `yaml:"requests"`
	Every    Duration `yaml:"every"`
}

// Planned is the phase's number of requests.
func (p *LoadPhase) Planned() float64 {
	secs := p.Duration.Seconds()
	switch {
	case p.Ramp != nil:
		return (p.Ramp.From.PerSecond + p.Ramp.To.PerSecond) / 2 * secs
	case p.Burst != nil && p.Burst.Every.Duration > 0 && p.Duration.Duration > 0:
		// One burst at each instant 0, every, 2·every, … before the phase's end, as the generator
		// sends them (mesh/load's bursts): 10s every 3s is 4 bursts (0, 3, 6, 9 s), not ⌊10/3⌋ = 3.
		return float64(p.Burst.Requests) * float64((p.Duration.Duration-1)/p.Burst.Every.Duration+1)
	}
	return p.Rate.PerSecond * secs
}

// Fault is a fault rule on some or all instances of a service. Its timing (at, for, flap), targeting
// (match), sequences (first, every) and kinds (faults.Kinds: latency, abort, …) are the fault model's
// own fields (see faults/README.md); tcp places a TCP fault proxy in front of the chosen instances for
// the rule's window.
type Fault struct {
	Service string `yaml:"service"`
	// Instances lists the targeted instances; absent: every instance, or a share of them.
	Instances []int `yaml:"instances"`
	// Share picks that percentage of the service's instances (at least one), chosen from the seed.
	Share        Percent `yaml:"share"`
	faults.Fault `yaml:",inline"`
	TCP          *TCPFault `yaml:"tcp"`
	// Container is a container-level fault, for the docker runner only: kill, pause, partition or
	// restart the chosen instances' containers at `at`, lifted after `for`.
	Container string `yaml:"container"`
}

// The container-level fault kinds (docker runner).
var ContainerKinds = []string{"kill", "pause", "partition", "restart"}

// ContainerRule is one container fault on one instance.
type ContainerRule struct {
	Name            string // "faults[3]"
	Service         string
	Instance        int
	Start, Duration time.Duration
	Kind            string // one of ContainerKinds
}

// TCPFault is a set of Toxiproxy-style toxics applied between the proxy and the instances.
type TCPFault struct {
	Toxics []tcp.Toxic `yaml:"toxics"`
}

// Check is one parsed check with where it was written.
type Check struct {
	checks.Check
	Line, Column int
	// parseErr is the check's syntax error, kept so that it is reported with every other error of the
	// file rather than alone and first (decoding does not stop at it).
	parseErr *Error
}
