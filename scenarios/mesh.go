package scenarios

import (
	"cmp"
	"fmt"
	"slices"
	"strings"

	"github.com/goccy/go-yaml"
	"github.com/goccy/go-yaml/ast"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/meshproof/meshproof/proxy/config"
)

// Defaults and bounds of the call graph.
const (
	// DefaultOnFailure is the status a caller answers when a required call failed after its sidecar
	// gave up: 503, the status Envoy itself answers when it has no healthy upstream or its attempts
	// failed, so a failure deep in the graph reads the same to the client whether a sidecar or the
	// service behind it gave it.
	DefaultOnFailure = 503
	// MaxCallsPerRequest bounds the calls one client request causes in the whole graph (before
	// retries): fan-out multiplies along paths, and a graph past this is a typo, not a test.
	MaxCallsPerRequest = 10000
	// MaxWorkers and MaxQueue bound an instance's capacity.
	MaxWorkers = 10000
	MaxQueue   = 1000000
)

// CallStep is one step of a service's calls: one call, or calls made in parallel. Steps run one after
// another.
type CallStep struct {
	Call     *Call   // one call
	Parallel []*Call // or several at once
}

// Call is a call a service makes to another service for each request it serves, through its sidecar.
type Call struct {
	Service  string `yaml:"service"`
	Path     string `yaml:"path"`     // default "/"
	Method   string `yaml:"method"`   // default GET
	Optional bool   `yaml:"optional"` // its failure does not fail the caller

	Line, Column int `yaml:"-"`
}

// UnmarshalYAML implements yaml.NodeUnmarshaler: a step is a service name ("cart"), a call mapping
// ({service: cart, path: /items}) or {parallel: [call, …]}.
func (s *CallStep) UnmarshalYAML(n ast.Node) error {
	if m, ok := n.(*ast.MappingNode); ok {
		if par := mappingValue(m, "parallel"); par != nil {
			if len(m.Values) != 1 {
				return nodeError(n, "a parallel step holds only its list of calls: {parallel: [cart, payments]}")
			}
			seq, ok := par.(*ast.SequenceNode)
			if !ok || len(seq.Values) == 0 {
				return nodeError(par, "expected a list of calls, e.g. parallel: [cart, {service: payments, optional: true}]")
			}
			for _, item := range seq.Values {
				c, err := decodeCall(item)
				if err != nil {
					return err
				}
				s.Parallel = append(s.Parallel, c)
			}
			return nil
		}
	}
	c, err := decodeCall(n)
	if err != nil {
		return err
	}
	s.Call = c
	return nil
}

var callFields = []string{"service", "path", "method", "optional"}

func decodeCall(n ast.Node) (*Call, error) {
	c := &Call{}
	switch v := n.(type) {
	case *ast.StringNode:
		c.Service = v.Value
	case *ast.MappingNode:
		for _, mv := range v.Values {
			if k := mv.Key.GetToken(); k != nil && !slices.Contains(callFields, k.Value) {
				return nil, nodeError(mv.Key, "unknown field %q in a call; accepted: %s", k.Value, strings.Join(callFields, ", "))
			}
		}
		if err := config.NodeToValue(n, c, yaml.Strict()); err != nil {
			return nil, err
		}
	default:
		return nil, nodeError(n, "expected a call: a service name (cart), {service: cart, path: /items, method: GET, optional: false} or {parallel: [...]}")
	}
	if t := n.GetToken(); t != nil && t.Position != nil {
		c.Line, c.Column = t.Position.Line, t.Position.Column
	}
	return c, nil
}

// String writes the step as the scenario would: "cart" or "parallel[cart GET /x optional, …]".
func (s *CallStep) String() string {
	var parts []string
	for _, c := range s.Calls() {
		parts = append(parts, c.String())
	}
	if s.Call != nil {
		return strings.Join(parts, "")
	}
	return "parallel[" + strings.Join(parts, ", ") + "]"
}

// String writes the call: "cart GET /items", with " optional" when it is.
func (c *Call) String() string {
	if c == nil {
		return "<nil>"
	}
	s := fmt.Sprintf("%s %s %s", c.Service, c.Method, c.Path)
	if c.Optional {
		s += " optional"
	}
	return s
}

// Calls lists the step's calls: the one call, or the parallel ones.
func (s *CallStep) Calls() []*Call {
	if s.Call != nil {
		return []*Call{s.Call}
	}
	return s.Parallel
}

// Capacity is an instance's finite capacity: workers and a bounded queue. A request holds a worker
// for its service time plus the time its calls take.
type Capacity struct {
	Workers      int      `yaml:"workers"`
	Queue        int      `yaml:"queue"`
	QueueTimeout Duration `yaml:"queue_timeout"` // 0: wait without bound
	// WhenFull is what a request meets when every worker is busy and the queue is full: "reject"
	// (default, a 503) or "refuse" (the connection is reset, as an overloaded server's backlog would).
	WhenFull string `yaml:"when_full"`
}

// String writes the capacity's fields.
func (c *Capacity) String() string {
	if c == nil {
		return "<nil>"
	}
	return fmt.Sprintf("{Workers:%d Queue:%d QueueTimeout:%s WhenFull:%s}", c.Workers, c.Queue, c.QueueTimeout.Duration, c.WhenFull)
}

// The accepted Capacity.WhenFull values.
var WhenFullKinds = []string{"reject", "refuse"}

// SidecarConfig is Envoy v3 RouteAction and Cluster fields for the sidecars' routes and clusters at one
// level: the whole mesh, a calling service, or one edge.
type SidecarConfig struct {
	Route   ast.Node `yaml:"route"`
	Cluster ast.Node `yaml:"cluster"`

	RouteAction *routev3.RouteAction `yaml:"-"`
	ClusterSpec *clusterv3.Cluster   `yaml:"-"`
}

// Sidecars is the configuration of every instance's outbound sidecar: mesh-wide fields, overridden by
// a calling service's, overridden by an edge's ("caller -> callee"). A field set at a more specific
// level replaces the same top-level field of a less specific one whole (as Envoy's route-level
// retry_policy replaces the virtual host's): an edge's retry_policy is the edge's only, while the
// mesh's timeout still applies to it unless the edge sets its own.
type Sidecars struct {
	SidecarConfig `yaml:",inline"`
	Services      map[string]*SidecarConfig `yaml:"services"`
	Edges         map[string]*SidecarConfig `yaml:"edges"`
}

// Edge is one caller → callee pair of the call graph.
type Edge struct{ Caller, Callee string }

func (e Edge) String() string { return e.Caller + " -> " + e.Callee }

// parseEdge reads "caller -> callee".
func parseEdge(s string) (Edge, bool) {
	a, b, ok := strings.Cut(s, "->")
	a, b = strings.TrimSpace(a), strings.TrimSpace(b)
	if !ok || a == "" || b == "" || strings.Contains(b, "->") {
		return Edge{}, false
	}
	return Edge{a, b}, true
}

// Edges lists the call graph's edges: callers in name order, each caller's callees in call order,
// once each.
func (sc *Scenario) Edges() []Edge {
	var out []Edge
	for _, name := range sortedKeys(sc.Services) {
		out = append(out, sc.Services[name].edges(name)...)
	}
	return out
}

func (s *Service) edges(name string) []Edge {
	if s == nil {
		return nil
	}
	seen := map[string]bool{}
	var out []Edge
	for _, st := range s.Calls {
		if st == nil {
			continue
		}
		for _, c := range st.Calls() {
			if c != nil && !seen[c.Service] {
				seen[c.Service] = true
				out = append(out, Edge{name, c.Service})
			}
		}
	}
	return out
}

// Callees lists the services a service calls, once each, in call order.
func (sc *Scenario) Callees(service string) []string {
	var out []string
	for _, e := range sc.Services[service].edges(service) {
		out = append(out, e.Callee)
	}
	return out
}

// IsMesh reports whether any service calls another: the scenario is a call graph, not one hop.
func (sc *Scenario) IsMesh() bool { return len(sc.Edges()) > 0 }

// EdgeConfig is the merged sidecar configuration of one edge: the mesh's fields, overridden by the
// caller's, overridden by the edge's (see Sidecars). Both messages are fresh copies.
func (sc *Scenario) EdgeConfig(e Edge) (*routev3.RouteAction, *clusterv3.Cluster) {
	route, cluster := &routev3.RouteAction{}, &clusterv3.Cluster{}
	for _, level := range sc.edgeLevels(e) {
		if level.cfg == nil {
			continue
		}
		overlay(route, level.cfg.RouteAction)
		overlay(cluster, level.cfg.ClusterSpec)
	}
	return route, cluster
}

// edgeLevel is one level of an edge's sidecar configuration, with its field path in the scenario.
type edgeLevel struct {
	cfg   *SidecarConfig
	field string
}

// edgeLevels lists the levels that configure an edge, least specific first.
func (sc *Scenario) edgeLevels(e Edge) []edgeLevel {
	sd := sc.Sidecars
	if sd == nil {
		return nil
	}
	out := []edgeLevel{{&sd.SidecarConfig, "sidecars"}}
	if c := sd.Services[e.Caller]; c != nil {
		out = append(out, edgeLevel{c, "sidecars.services." + e.Caller})
	}
	for key, c := range sd.Edges {
		if pe, ok := parseEdge(key); ok && pe == e && c != nil {
			out = append(out, edgeLevel{c, "sidecars.edges." + key})
		}
	}
	return out
}

// fieldSource is the scenario field path of the level that set an edge's top-level route or cluster
// field (what = "route" or "cluster"), the most specific one; "" when none did.
func (sc *Scenario) fieldSource(e Edge, what, top string) string {
	src := ""
	for _, level := range sc.edgeLevels(e) {
		var m proto.Message
		if what == "route" {
			m = level.cfg.RouteAction
		} else {
			m = level.cfg.ClusterSpec
		}
		if m == nil {
			continue
		}
		r := m.ProtoReflect()
		if fd := r.Descriptor().Fields().ByName(protoreflect.Name(top)); fd != nil && r.Has(fd) {
			src = level.field
		}
	}
	return src
}

// overlay sets on dst every top-level field set in src, replacing dst's whole (src is copied first, so
// dst shares nothing with it).
func overlay(dst, src proto.Message) {
	if src == nil || !src.ProtoReflect().IsValid() {
		return
	}
	d := dst.ProtoReflect()
	proto.Clone(src).ProtoReflect().Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		d.Set(fd, v)
		return true
	})
}

// cycle returns a cycle of the call graph as the services along it, first repeated last
// ([a b a]), or nil when the graph is acyclic.
func (sc *Scenario) cycle() []string {
	const (
		white = iota
		grey
		black
	)
	color := map[string]int{}
	var stack []string
	var found []string
	var visit func(string)
	visit = func(n string) {
		if found != nil {
			return
		}
		color[n] = grey
		stack = append(stack, n)
		for _, c := range sc.Callees(n) {
			if _, known := sc.Services[c]; !known || c == n {
				continue // an unknown callee and a service calling itself have their own errors
			}
			switch color[c] {
			case grey:
				i := len(stack) - 1
				for stack[i] != c {
					i--
				}
				found = append(append([]string{}, stack[i:]...), c)
				return
			case white:
				visit(c)
			}
			if found != nil {
				return
			}
		}
		stack = stack[:len(stack)-1]
		color[n] = black
	}
	for _, name := range sortedKeys(sc.Services) {
		if color[name] == white {
			visit(name)
		}
	}
	return found
}

// callsPerRequest is how many calls one request to service causes in the whole graph below it (before
// retries), capped just past MaxCallsPerRequest; the graph must be acyclic.
func (sc *Scenario) callsPerRequest(service string, memo map[string]int) int {
	if n, ok := memo[service]; ok {
		return n
	}
	memo[service] = 0 // a cycle (refused on its own) counts nothing rather than recursing forever
	s := sc.Services[service]
	n := 0
	if s != nil {
		for _, st := range s.Calls {
			if st == nil {
				continue
			}
			for _, c := range st.Calls() {
				if c == nil {
					continue
				}
				if _, known := sc.Services[c.Service]; known && c.Service != service {
					n += 1 + sc.callsPerRequest(c.Service, memo)
				}
				n = min(n, MaxCallsPerRequest+1)
			}
		}
	}
	memo[service] = n
	return n
}

// Depth is each service's layer in the call graph: 0 for services nobody calls, else one more than
// its deepest caller (the graph must be acyclic).
func (sc *Scenario) Depth() map[string]int {
	depth := map[string]int{}
	var visit func(string, int)
	visit = func(n string, d int) {
		if cur, ok := depth[n]; ok && cur >= d {
			return
		}
		depth[n] = d
		if d > len(sc.Services) {
			return // a cycle (refused by validation): no layer is deeper than the number of services
		}
		for _, c := range sc.Callees(n) {
			if _, ok := sc.Services[c]; ok {
				visit(c, d+1)
			}
		}
	}
	called := map[string]bool{}
	for _, e := range sc.Edges() {
		called[e.Callee] = true
	}
	for _, n := range sortedKeys(sc.Services) {
		if !called[n] {
			visit(n, 0)
		}
	}
	return depth
}

// meshValidate checks the call graph, capacities and sidecar configuration.
func (v *validator) meshValidate() {
	sc := v.sc
	for _, name := range sortedKeys(sc.Services) {
		s := sc.Services[name]
		if s == nil {
			continue
		}
		field := "services." + name
		for i, st := range s.Calls {
			sf := fmt.Sprintf("%s.calls[%d]", field, i)
			if st == nil {
				v.at(sf, "an empty call: write a service name or {service: NAME}")
				continue
			}
			for j, c := range st.Calls() {
				cf := sf
				if st.Call == nil {
					cf = fmt.Sprintf("%s.parallel[%d]", sf, j)
				}
				v.call(name, cf, c)
			}
		}
		if s.OnFailure != 0 && len(s.Calls) == 0 {
			v.at(field+".on_failure", "on_failure is the status answered when a call fails, and %s makes no calls", name)
		} else if s.OnFailure != 0 && (s.OnFailure < 100 || s.OnFailure > 599) {
			v.at(field+".on_failure", "%d is not an HTTP status (100 to 599)", s.OnFailure)
		}
		if s.PropagateDeadline && len(s.Calls) == 0 {
			v.at(field+".propagate_deadline", "%s makes no calls: there is no deadline to propagate", name)
		}
		if c := s.Capacity; c != nil {
			switch {
			case c.Workers < 1 || c.Workers > MaxWorkers:
				v.at(field+".capacity.workers", "%d is out of range: 1 to %d", c.Workers, MaxWorkers)
			}
			if c.Queue < 0 || c.Queue > MaxQueue {
				v.at(field+".capacity.queue", "%d is out of range: 0 to %d", c.Queue, MaxQueue)
			}
			if c.WhenFull == "" {
				c.WhenFull = "reject"
			} else if !slices.Contains(WhenFullKinds, c.WhenFull) {
				v.at(field+".capacity.when_full", "%q: want one of %s", c.WhenFull, strings.Join(WhenFullKinds, ", "))
			}
		}
	}
	if cyc := sc.cycle(); cyc != nil {
		v.at("services."+cyc[0]+".calls", "the call graph has a cycle: %s (calls must form an acyclic graph)", strings.Join(cyc, " -> "))
	} else {
		memo := map[string]int{}
		for _, name := range sortedKeys(sc.Services) {
			if n := sc.callsPerRequest(name, memo); n > MaxCallsPerRequest {
				v.at("services."+name+".calls", "one request to %s causes more than %d calls in the graph below it (fan-out multiplies along paths)", name, MaxCallsPerRequest)
				break
			}
		}
	}
	v.sidecars()
}

func (v *validator) call(caller, field string, c *Call) {
	if c == nil {
		v.at(field, "an empty call: write a service name or {service: NAME}")
		return
	}
	switch _, known := v.sc.Services[c.Service]; {
	case c.Service == "":
		v.at(field+".service", "required: the service called, e.g. {service: %s}", firstKey(v.sc.Services))
	case !known:
		v.at(field+".service", "%q is not a service of this scenario (services: %s)", c.Service, strings.Join(sortedKeys(v.sc.Services), ", "))
	case c.Service == caller:
		v.at(field+".service", "%s calls itself: the call graph has a cycle: %s -> %s", caller, caller, caller)
	}
	if c.Path == "" {
		c.Path = "/"
	} else if !strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \t\r\n") {
		v.at(field+".path", "%q: want an absolute path without spaces, e.g. /items", c.Path)
	}
	if c.Method == "" {
		c.Method = "GET"
	} else if !slices.Contains(methods, c.Method) {
		v.at(field+".method", "%q: want one of %s", c.Method, strings.Join(methods, ", "))
	}
}

// sidecars decodes and checks the sidecar configuration: its Envoy fields with the proxy's decoder, its
// services and edges against the call graph, and each edge's merged configuration as a bootstrap.
func (v *validator) sidecars() {
	sd := v.sc.Sidecars
	if sd == nil {
		return
	}
	edges := v.sc.Edges()
	if len(edges) == 0 {
		v.at("sidecars", "no service calls another: sidecars configure the calls between services (add calls: to a service)")
		return
	}
	ok := v.sidecarConfig(&sd.SidecarConfig, "sidecars")
	callers := map[string]bool{}
	var edgeNames []string
	for _, e := range edges {
		callers[e.Caller] = true
		edgeNames = append(edgeNames, e.String())
	}
	for _, name := range sortedKeys(sd.Services) {
		field := "sidecars.services." + name
		if !callers[name] {
			v.at(field, "%q is not a calling service of this scenario (services that call others: %s)", name, strings.Join(sortedKeys(callers), ", "))
			continue
		}
		ok = v.sidecarConfig(sd.Services[name], field) && ok
	}
	for _, key := range sortedKeys(sd.Edges) {
		field := "sidecars.edges." + key
		e, parsed := parseEdge(key)
		switch {
		case !parsed:
			v.at(field, "%q: want an edge written CALLER -> CALLEE, e.g. %q", key, edgeNames[0])
			continue
		case !slices.Contains(edgeNames, e.String()):
			v.at(field, "%q is not an edge of the call graph (edges: %s)", key, strings.Join(edgeNames, ", "))
			continue
		}
		ok = v.sidecarConfig(sd.Edges[key], field) && ok
	}
	if !ok || len(v.errs) > 0 {
		return
	}
	for _, caller := range sortedKeys(callers) {
		b, err := SidecarBootstrap(v.sc, caller, SidecarAddresses{Listener: "127.0.0.1:0", Endpoints: v.placeholderCallees(caller)})
		var cfg *config.Bootstrap
		if err == nil {
			cfg, err = config.FromProto(b)
		}
		if err != nil {
			v.sidecarErrors(err, caller)
			continue
		}
		v.sidecarWarnings(caller, cfg)
	}
}

// sidecarWarnings says, as proxyWarnings does for a proxy, which legal settings of a caller's sidecar
// cannot do what they seem to, at the level that set them. Virtual host and cluster i are the i-th
// callee's (SidecarBootstrap).
func (v *validator) sidecarWarnings(caller string, cfg *config.Bootstrap) {
	callees := v.sc.Callees(caller)
	bootstrapWarnings(cfg, func(w bootstrapWarning) {
		field, i, msg := w.field, w.index, w.msg
		if i >= len(callees) {
			return
		}
		e := Edge{caller, callees[i]}
		what, rest, _ := strings.Cut(field, ".")
		top, _, _ := strings.Cut(rest, ".")
		note := fmt.Sprintf("edge %s", e)
		if what == "cluster" {
			note += ": each caller instance's sidecar decides alone"
		}
		v.warn(cmp.Or(v.sc.fieldSource(e, what, top), "sidecars")+"."+field, "%s (%s)", msg, note)
	})
}

func (v *validator) placeholderCallees(caller string) map[string][]string {
	out := map[string][]string{}
	for _, c := range v.sc.Callees(caller) {
		out[c] = placeholderEndpoints(v.sc.Services[c])
	}
	return out
}

// sidecarConfig decodes one level's Envoy fields and refuses those the topology generates.
func (v *validator) sidecarConfig(c *SidecarConfig, field string) bool {
	if c == nil {
		return true
	}
	c.RouteAction, c.ClusterSpec = newRouteAction(), newCluster()
	if !v.envoy(c.Route, c.RouteAction, field+".route") || !v.envoy(c.Cluster, c.ClusterSpec, field+".cluster") {
		return false
	}
	p := &Proxy{RouteAction: c.RouteAction, ClusterSpec: c.ClusterSpec, VHostSpec: newVirtualHost()}
	n := len(v.errs)
	for _, f := range generatedFields(p) {
		v.at(field+"."+f.field, "%s is generated from the topology and cannot be set here", sidecarWords.Replace(f.what))
	}
	return len(v.errs) == n
}

// sidecarWords rewords a proxy's generated-field messages for a sidecar, whose cluster is the callee's.
var sidecarWords = strings.NewReplacer("it is routes_to", "it is the callee", "the routes_to service", "the callee", "the service's instances", "the callee's instances")

// sidecarErrors places the errors of a caller's generated sidecar bootstrap at the scenario level that
// set the offending field of the edge they belong to.
func (v *validator) sidecarErrors(err error, caller string) {
	errs := config.Errors(err)
	if len(errs) == 0 {
		v.at("sidecars", "the sidecars of %s: %v", caller, err)
		return
	}
	for _, ce := range errs {
		if ce.Line != 0 {
			v.errs = append(v.errs, ce)
			continue
		}
		e, what, rest, ok := sidecarField(ce.Path, v.sc, caller)
		if !ok {
			v.at("sidecars", "the sidecars of %s: %s: %s", caller, ce.Path, ce.Msg)
			continue
		}
		top, _, _ := strings.Cut(strings.TrimPrefix(rest, "."), ".")
		top, _, _ = strings.Cut(top, "[")
		src := v.sc.fieldSource(e, what, top)
		if src == "" {
			v.at("sidecars", "edge %s: %s%s: %s", e, what, rest, ce.Msg)
			continue
		}
		v.at(src+"."+what+rest, "%s (edge %s)", ce.Msg, e)
	}
}

// sidecarField maps a path in a caller's sidecar bootstrap (SidecarBootstrap: virtual host and cluster
// i are the caller's i-th callee) to its edge, "route" or "cluster", and the rest of the path.
func sidecarField(path string, sc *Scenario, caller string) (Edge, string, string, bool) {
	for i, callee := range sc.Callees(caller) {
		route := fmt.Sprintf("static_resources.listeners[0].filter_chains[0].filters[0].typed_config.route_config.virtual_hosts[%d].routes[0].route", i)
		cluster := fmt.Sprintf("static_resources.clusters[%d]", i)
		if rest, ok := strings.CutPrefix(path, route); ok && (rest == "" || rest[0] == '.') {
			return Edge{caller, callee}, "route", rest, true
		}
		if rest, ok := strings.CutPrefix(path, cluster); ok && (rest == "" || rest[0] == '.') {
			return Edge{caller, callee}, "cluster", rest, true
		}
	}
	return Edge{}, "", "", false
}
