package scenarios

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/goccy/go-yaml/ast"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/record"
)

// Change is a configuration change the scenario's control plane pushes to one of its proxies over xDS
// at a time of the run: a canary's weight shift (routes), a new retry policy (route), cluster settings
// (cluster), or endpoint churn (endpoints: the instances each cluster holds, as a rollout moves them).
//
// Its Envoy fields are the proxy's own (routes, route, cluster, virtual_host, written as under
// proxies.NAME) and replace the proxy's: a change carries the whole of each field it sets, as a control
// plane pushes whole resources. Changes accumulate: each starts from the configuration the previous
// accepted change left. A change that says expect: rejected is one the proxy must refuse (NACK): it is
// pushed, and the next change starts from the configuration before it.
type Change struct {
	// At is when the control plane pushes the change, from the load's start. A change at 0s is part of
	// the configuration the proxy starts with.
	At Duration `yaml:"at"`
	// For bounds the change's window, which checks scoped "during changes[N]" judge; absent: until the
	// next change to the same proxy, or the run's end. It reverts nothing: the change stays in force.
	For Duration `yaml:"for"`
	// Proxy is the proxy it is pushed to (one of proxies); may be left out when there is one proxy.
	Proxy       string   `yaml:"proxy"`
	Routes      ast.Node `yaml:"routes"`
	Route       ast.Node `yaml:"route"`
	Cluster     ast.Node `yaml:"cluster"`
	VirtualHost ast.Node `yaml:"virtual_host"`
	// Endpoints sets, for services the proxy routes to, which of their instances the service's cluster
	// holds (by index); a service it leaves out keeps what it had (at first: every instance).
	Endpoints map[string][]int `yaml:"endpoints"`
	// Expect is "applied" (the default) or "rejected": the proxy must refuse the change.
	Expect string `yaml:"expect"`

	// State is the proxy's configuration this change pushes (set by Load).
	State *ProxyState `yaml:"-"`
	// Rejection is, for a change expected to be rejected, why the proxy refuses it (set by Load).
	Rejection string `yaml:"-"`
}

// Expected outcomes of a change (Change.Expect).
const (
	ExpectApplied  = record.ChangeApplied
	ExpectRejected = record.ChangeRejected
)

// Expected is the change's expected outcome: ExpectApplied unless it says expect: rejected.
func (c *Change) Expected() string {
	if c.Expect == "" {
		return ExpectApplied
	}
	return c.Expect
}

// ProxyState is a proxy's configuration at a point of the run: its Envoy fields, and which instances
// each of its services' clusters holds.
type ProxyState struct {
	Proxy *Proxy
	// Endpoints are the instances of a service in its cluster, by service; a service absent here has
	// every instance.
	Endpoints map[string][]int
}

// Instances lists the instances of service (which has n) in the state's cluster for it.
func (st *ProxyState) Instances(service string, n int) []int {
	if in, ok := st.Endpoints[service]; ok {
		return in
	}
	all := make([]int, n)
	for i := range all {
		all[i] = i
	}
	return all
}

// Bootstrap is the Envoy v3 bootstrap of the proxy called name in this state (as BuildBootstrap);
// addrs.Endpoints holds the addresses of the instances its clusters hold, in Instances order.
func (st *ProxyState) Bootstrap(name string, addrs Addresses) (*bootstrapv3.Bootstrap, error) {
	return proxyBootstrap(st.Proxy, name, addrs)
}

// What says in a few words what the change sets: "routes", "cluster", "endpoints payments: 0,1,3".
func (c *Change) What() string {
	var parts []string
	for _, f := range []struct {
		name string
		n    ast.Node
	}{{"routes", c.Routes}, {"route", c.Route}, {"cluster", c.Cluster}, {"virtual_host", c.VirtualHost}} {
		if f.n != nil {
			parts = append(parts, f.name)
		}
	}
	for _, svc := range slices.Sorted(maps.Keys(c.Endpoints)) {
		idx := make([]string, len(c.Endpoints[svc]))
		for i, n := range c.Endpoints[svc] {
			idx[i] = strconv.Itoa(n)
		}
		list := strings.Join(idx, ",")
		if list == "" {
			list = "none"
		}
		parts = append(parts, fmt.Sprintf("endpoints %s: %s", svc, list))
	}
	return strings.Join(parts, " + ")
}

// InitialState is the configuration the proxy called name starts with: the scenario's, with every
// change to it at 0s applied.
func (sc *Scenario) InitialState(name string) *ProxyState {
	st := &ProxyState{Proxy: sc.Proxies[name]}
	for _, c := range sc.Changes {
		if c != nil && c.At.Duration == 0 && c.proxyName(sc) == name && c.State != nil {
			st = c.State
		}
	}
	return st
}

// ChangedProxies lists, sorted, the proxies some change is pushed to: those the runner configures over
// xDS from the scenario's control plane.
func (sc *Scenario) ChangedProxies() []string {
	seen := map[string]bool{}
	for _, c := range sc.Changes {
		if c != nil {
			seen[c.proxyName(sc)] = true
		}
	}
	return slices.Sorted(maps.Keys(seen))
}

// ChangeProxy is the proxy a change is pushed to.
func (sc *Scenario) ChangeProxy(c *Change) string { return c.proxyName(sc) }

func (c *Change) proxyName(sc *Scenario) string {
	if c.Proxy == "" && len(sc.Proxies) == 1 {
		for name := range sc.Proxies {
			return name
		}
	}
	return c.Proxy
}

// ChangeRecords are the scenario's changes as the record holds them, without what the run observed
// (outcome, answer time): name, proxy, what, window and expected outcome.
func (sc *Scenario) ChangeRecords() []record.Change {
	out := make([]record.Change, 0, len(sc.Changes))
	for i, c := range sc.Changes {
		rc := record.Change{Name: fmt.Sprintf("changes[%d]", i), Proxy: c.proxyName(sc), What: c.What(),
			Start: c.At.Duration, Expected: c.Expected(), Outcome: record.ChangeUnacknowledged}
		rc.End = sc.changeEnd(i)
		out = append(out, rc)
	}
	return out
}

// changeEnd is the end of change i's window: at + for, else the at of the next later change to the
// same proxy, else 0 (the run's end).
func (sc *Scenario) changeEnd(i int) time.Duration {
	c := sc.Changes[i]
	if c.For.Duration > 0 {
		return c.At.Duration + c.For.Duration
	}
	for _, next := range sc.Changes[i+1:] {
		if next != nil && next.At.Duration > c.At.Duration && next.proxyName(sc) == c.proxyName(sc) {
			return next.At.Duration
		}
	}
	return 0
}

// changes checks the scenario's changes and sets each one's State: the proxy's configuration it
// pushes, decoded and checked with the proxy's own decoder as proxies are.
func (v *validator) changes() {
	sc := v.sc
	good := map[string]*ProxyState{} // proxy → the configuration the last accepted change left
	last := map[string]int{}         // proxy → its last change's index
	var prev time.Duration
	for i, c := range sc.Changes {
		field := fmt.Sprintf("changes[%d]", i)
		if c == nil {
			v.at(field, "a change needs at and at least one of routes, route, cluster, virtual_host, endpoints")
			continue
		}
		if c.At.Duration < prev {
			v.at(field+".at", "%s is before the previous change's at (%s): list changes in time order", c.At.Duration, prev)
		}
		prev = max(prev, c.At.Duration)
		if sc.Load != nil && sc.Load.Total() > 0 && c.At.Duration >= sc.Load.Total() {
			v.at(field+".at", "%s is at or after the load's end (%s): the change would meet no request", c.At.Duration, sc.Load.Total())
		}
		name := c.proxyName(sc)
		p, ok := sc.Proxies[name]
		switch {
		case c.Proxy == "" && name == "":
			v.at(field, "required: proxy, the proxy the change is pushed to (proxies: %s)", strings.Join(sortedKeys(sc.Proxies), ", "))
			continue
		case !ok || p == nil:
			v.at(field+".proxy", "%q is not a proxy of this scenario (proxies: %s); changes are pushed to the proxies under proxies, not to sidecars",
				name, strings.Join(sortedKeys(sc.Proxies), ", "))
			continue
		}
		if j, seen := last[name]; seen && sc.Changes[j].At.Duration == c.At.Duration {
			// Two versions pushed back to back: the first may never be sent, its outcome a race.
			v.at(field+".at", "changes[%d] is pushed to %s at the same time (%s): merge the two into one change", j, name, c.At.Duration)
			continue
		}
		last[name] = i
		if c.Routes == nil && c.Route == nil && c.Cluster == nil && c.VirtualHost == nil && c.Endpoints == nil {
			v.at(field, "a change sets at least one of routes, route, cluster, virtual_host (Envoy fields, as under proxies) or endpoints")
			continue
		}
		switch c.Expect {
		case "", ExpectApplied, ExpectRejected:
		default:
			v.at(field+".expect", "%q: accepted: %s (the default), %s", c.Expect, ExpectApplied, ExpectRejected)
			continue
		}
		if c.Expected() == ExpectRejected {
			// xDS answers each resource type on its own: the endpoints or routes pushed with a refused
			// cluster would be ACKed and applied while the change is recorded as rejected.
			routeFields := c.Routes != nil || c.Route != nil || c.VirtualHost != nil
			switch {
			case c.At.Duration == 0:
				v.at(field+".expect", "a change at 0s is part of the configuration the proxy starts with, which cannot be rejected: push it later")
				continue
			case c.Endpoints != nil:
				v.at(field+".endpoints", "a change expected to be rejected cannot set endpoints: the proxy accepts or refuses each resource type "+
					"on its own (EDS apart from CDS and RDS), so they would be applied; push them in a change of their own")
				continue
			case c.Cluster != nil && routeFields:
				v.at(field+".cluster", "a change expected to be rejected sets either cluster (CDS) or routes, route and virtual_host (RDS), "+
					"not both: the proxy accepts or refuses each resource type on its own, so the valid half would be applied")
				continue
			}
		}
		base := good[name]
		if base == nil {
			base = &ProxyState{Proxy: p}
		}
		st := base.with(c)
		if !v.changeEndpoints(field, c, st) {
			continue
		}
		if c.Expected() == ExpectApplied {
			if v.changeConfig(field, name, c, st) {
				good[name], c.State = st, st
			}
			continue
		}
		v.rejectedChange(field, name, c, st)
	}
}

// with is the state after change c: this one with c's fields replacing its own, and c's endpoints.
func (st *ProxyState) with(c *Change) *ProxyState {
	p := *st.Proxy
	if c.Routes != nil {
		p.Routes = c.Routes
	}
	if c.Route != nil {
		p.Route = c.Route
	}
	if c.Cluster != nil {
		p.Cluster = c.Cluster
	}
	if c.VirtualHost != nil {
		p.VirtualHost = c.VirtualHost
	}
	eps := maps.Clone(st.Endpoints)
	if eps == nil {
		eps = map[string][]int{}
	}
	maps.Copy(eps, c.Endpoints)
	return &ProxyState{Proxy: &p, Endpoints: eps}
}

// changeConfig decodes and checks the state a change leads to, reporting errors at the change's
// fields; warnings are kept for the fields the change sets.
func (v *validator) changeConfig(field, name string, c *Change, st *ProxyState) bool {
	errs, warns := len(v.errs), len(v.sc.Warnings)
	v.proxyConfig(field, name, st.Proxy)
	kept := v.sc.Warnings[:warns]
	for _, w := range v.sc.Warnings[warns:] {
		if v.setsField(c, strings.TrimPrefix(w.Path, field+".")) {
			kept = append(kept, w)
		}
	}
	v.sc.Warnings = kept
	if len(v.errs) > errs {
		return false
	}
	services := st.Proxy.Services()
	for _, svc := range slices.Sorted(maps.Keys(c.Endpoints)) {
		if !slices.Contains(services, svc) {
			v.at(field+".endpoints."+svc, "%s does not route to %s in this change's configuration (its services: %s): "+
				"endpoints are set for the services a proxy has a cluster for", name, svc, strings.Join(services, ", "))
		}
	}
	if len(v.errs) > errs {
		return false
	}
	for svc := range st.Endpoints {
		if !slices.Contains(st.Proxy.Services(), svc) {
			delete(st.Endpoints, svc) // no longer routed to: its cluster is gone
		}
	}
	return true
}

// setsField says whether a path below the change (routes[0].route.timeout) is in a field it sets.
func (v *validator) setsField(c *Change, rest string) bool {
	key, _, _ := strings.Cut(rest, ".")
	key, _, _ = strings.Cut(key, "[")
	return map[string]bool{"routes": c.Routes != nil, "route": c.Route != nil, "cluster": c.Cluster != nil,
		"virtual_host": c.VirtualHost != nil}[key]
}

// changeEndpoints checks a change's endpoints: services of the scenario, instances that exist, each
// once.
func (v *validator) changeEndpoints(field string, c *Change, st *ProxyState) bool {
	ok := true
	for _, svc := range slices.Sorted(maps.Keys(c.Endpoints)) {
		f := field + ".endpoints." + svc
		s, known := v.sc.Services[svc]
		if !known || s == nil {
			v.at(f, "%q is not a service of this scenario (services: %s)", svc, strings.Join(sortedKeys(v.sc.Services), ", "))
			ok = false
			continue
		}
		seen := map[int]bool{}
		for j, n := range c.Endpoints[svc] {
			switch {
			case n < 0 || n >= s.Instances:
				v.at(fmt.Sprintf("%s[%d]", f, j), "instance %d: %s has instances 0 to %d", n, svc, s.Instances-1)
				ok = false
			case seen[n]:
				v.at(fmt.Sprintf("%s[%d]", f, j), "instance %d is listed twice", n)
				ok = false
			}
			seen[n] = true
		}
	}
	return ok
}

// rejectedChange checks a change expected to be rejected: the proxy's decoder must refuse the state it
// leads to, and its fields must still be Envoy v3 messages a control plane can send. Its State is then
// decoded as protojson would, without the proxy's checks.
func (v *validator) rejectedChange(field, name string, c *Change, st *ProxyState) {
	probe := &validator{sc: &Scenario{Services: v.sc.Services, Proxies: v.sc.Proxies}, file: v.file, root: v.root}
	probe.proxyConfig(field, name, st.Proxy)
	if len(probe.errs) == 0 {
		v.at(field+".expect", "rejected, but the proxy accepts this change: a change it refuses sets a field outside "+
			"the supported subset or a value Envoy rejects (e.g. cluster: {connect_timeout: -1s})")
		return
	}
	c.Rejection = probe.errs[0].Error()
	p := st.Proxy
	p.RouteAction, p.ClusterSpec, p.VHostSpec, p.RouteSpecs = newRouteAction(), newCluster(), newVirtualHost(), nil
	// The merged nodes: the change's own, and those it keeps from the configuration before it.
	ok := v.lenient(p.Route, p.RouteAction, field+".route") && v.lenient(p.Cluster, p.ClusterSpec, field+".cluster") &&
		v.lenient(p.VirtualHost, p.VHostSpec, field+".virtual_host")
	if seq, isSeq := p.Routes.(*ast.SequenceNode); isSeq && ok {
		for j, n := range seq.Values {
			r := &routev3.Route{}
			if !v.lenient(n, r, fmt.Sprintf("%s.routes[%d]", field, j)) {
				return
			}
			p.RouteSpecs = append(p.RouteSpecs, r)
		}
	}
	if ok && v.rejectedStructure(field, c, p) {
		c.State = st
	}
}

// rejectedStructure checks what a rejected change must get right all the same, since the scenario
// builds its resources from it: routes whose clusters are services, no routes on a routes_to proxy, no
// field the topology generates. These are errors of the scenario, not the proxy's refusal.
func (v *validator) rejectedStructure(field string, c *Change, p *Proxy) bool {
	errs := len(v.errs)
	if p.RoutesTo != "" && c.Routes != nil {
		v.at(field+".routes", "the proxy routes everything to %s (routes_to): a change sets its route, not routes", p.RoutesTo)
	}
	for j, r := range p.RouteSpecs {
		for _, rc := range routeClusters(r) {
			if _, known := v.sc.Services[rc.name]; !known {
				v.at(fmt.Sprintf("%s.routes[%d].%s", field, j, rc.field), "%q is not a service of this scenario (services: %s): a route's clusters are the scenario's services",
					rc.name, strings.Join(sortedKeys(v.sc.Services), ", "))
			}
		}
	}
	for _, f := range generatedFields(p) {
		v.at(field+"."+f.field, "%s is generated from the topology and cannot be set here", f.what)
	}
	return len(v.errs) == errs
}

// lenient decodes an Envoy-typed node as protojson does (any field of the message, no semantic
// check): what a control plane could send. An error here means no control plane could send it.
func (v *validator) lenient(n ast.Node, msg proto.Message, field string) bool {
	if n == nil || isNull(n) {
		return true
	}
	var val any
	err := config.NodeToValue(n, &val)
	var data []byte
	if err == nil {
		data, err = json.Marshal(val)
	}
	if err == nil {
		err = protojson.Unmarshal(data, msg)
	}
	if err != nil {
		v.at(field, "expect: rejected, but this is not an Envoy v3 %s a control plane could send: %v", msg.ProtoReflect().Descriptor().FullName(), err)
		return false
	}
	return true
}
