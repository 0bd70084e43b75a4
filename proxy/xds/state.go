package xds

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
)

// The resource types, by their type URLs.
const (
	TypeListener = "type.googleapis.com/envoy.config.listener.v3.Listener"
	TypeRoute    = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
	TypeCluster  = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	TypeEndpoint = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
)

// typeOrder is the order requests are sent in on a new stream: clusters and their endpoints first,
// then listeners and their routes, as Envoy initialises CDS before LDS.
var typeOrder = []string{TypeCluster, TypeEndpoint, TypeListener, TypeRoute}

// entry is one accepted resource, converted.
type entry struct {
	version string
	// gen changes with the resource's content (not with a version that brings the same content): what
	// decides whether a configuration must be applied again.
	gen     uint64
	raw     proto.Message
	updated time.Time

	cluster   config.Cluster
	listener  config.Listener
	routes    config.RouteConfig
	endpoints []config.Endpoint
}

// typeState is what the client holds for one resource type.
type typeState struct {
	url     string
	entries map[string]*entry // accepted resources by name
	// version is the last accepted version_info (state of the world) or system_version_info (delta).
	version string
	// received is set by the first response of a wildcard type (CDS, LDS).
	received bool
	// timers are the running initial fetch timeouts, by resource name ("" for a wildcard type);
	// timedOut the names whose timeout passed before they arrived.
	timers   map[string]clock.Timer
	timedOut map[string]bool
}

// state holds the resources received, the warming of clusters and listeners and what was applied.
// Guarded by Client.mu.
type state struct {
	c     *Client
	types map[string]*typeState

	gen         uint64 // the last entry.gen given
	initialized bool   // the first configuration was applied
	lastApplied string
	// active are the clusters and listeners in the last configuration: a resource that is warming
	// (waiting for its endpoints or routes) keeps its previous version active meanwhile.
	activeClusters  map[string]activeCluster
	activeListeners map[string]activeListener
	stopped         bool
}

type activeCluster struct {
	token string
	cfg   config.Cluster
}

type activeListener struct {
	token string
	cfg   config.Listener
}

func newState(c *Client) *state {
	s := &state{c: c, types: map[string]*typeState{},
		activeClusters: map[string]activeCluster{}, activeListeners: map[string]activeListener{}}
	for _, url := range typeOrder {
		s.types[url] = &typeState{url: url, entries: map[string]*entry{}, timers: map[string]clock.Timer{}, timedOut: map[string]bool{}}
	}
	return s
}

func (s *state) dynamic() *config.DynamicResources { return s.c.opts.Config.Dynamic }

// start arms the initial fetch timeouts of CDS and LDS, and of the routes and endpoints of the static
// listeners and clusters.
func (s *state) start() {
	s.stopped = false
	if src := s.dynamic().CDS; src != nil && !s.types[TypeCluster].received {
		s.arm(TypeCluster, "", src.InitialFetchTimeout)
	}
	if src := s.dynamic().LDS; src != nil && !s.types[TypeListener].received {
		s.arm(TypeListener, "", src.InitialFetchTimeout)
	}
	s.rearm()
	// With nothing to wait for (an ads_config with no CDS, LDS, RDS or EDS), the static configuration
	// is the first.
	if err := s.reconcile(); err != nil {
		s.c.event(Event{Kind: EventApplyFailed, Detail: err.Error()})
	}
}

func (s *state) stopTimers() {
	s.stopped = true
	for _, ts := range s.types {
		for name, t := range ts.timers {
			t.Stop()
			delete(ts.timers, name)
		}
	}
}

// arm starts the initial fetch timeout of a resource (name "" for a wildcard type); d 0 waits for ever.
func (s *state) arm(url, name string, d time.Duration) {
	ts := s.types[url]
	if d <= 0 || ts.timers[name] != nil || ts.timedOut[name] || s.stopped {
		return
	}
	var t clock.Timer
	t = s.c.clk.AfterFunc(d, func() {
		s.c.mu.Lock()
		defer s.c.mu.Unlock()
		if ts.timers[name] != t {
			return // disarmed meanwhile
		}
		delete(ts.timers, name)
		ts.timedOut[name] = true
		s.c.event(Event{Kind: EventFetchTimeout, TypeURL: url, Detail: name})
		s.count(url, name, "init_fetch_timeout")
		if err := s.reconcile(); err != nil {
			s.c.event(Event{Kind: EventApplyFailed, Detail: err.Error()})
		}
	})
	ts.timers[name] = t
}

func (s *state) disarm(url, name string) {
	ts := s.types[url]
	if t := ts.timers[name]; t != nil {
		t.Stop()
		delete(ts.timers, name)
	}
}

// wanted is the subscription of a type: on says whether to subscribe at all; names is nil for a
// wildcard type (CDS, LDS), else the resources wanted, sorted.
func (s *state) wanted(url string) (names []string, on bool) {
	switch url {
	case TypeCluster:
		return nil, s.dynamic().CDS != nil
	case TypeListener:
		return nil, s.dynamic().LDS != nil
	case TypeRoute:
		set := map[string]bool{}
		for _, l := range s.listeners() {
			if l.RDS != nil {
				set[l.RDS.RouteConfigName] = true
			}
		}
		return slices.Sorted(maps.Keys(set)), len(set) > 0
	case TypeEndpoint:
		set := map[string]bool{}
		for _, cl := range s.clusters() {
			if cl.EDS != nil {
				set[cl.EDS.ServiceName] = true
			}
		}
		return slices.Sorted(maps.Keys(set)), len(set) > 0
	}
	return nil, false
}

// clusters are the static clusters, then the accepted dynamic ones by name.
func (s *state) clusters() []config.Cluster {
	out := slices.Clone(s.c.opts.Config.Clusters)
	ts := s.types[TypeCluster]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		out = append(out, ts.entries[name].cluster)
	}
	return out
}

// listeners are the static listeners, then the accepted dynamic ones by name.
func (s *state) listeners() []config.Listener {
	out := slices.Clone(s.c.opts.Config.Listeners)
	ts := s.types[TypeListener]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		out = append(out, ts.entries[name].listener)
	}
	return out
}

// resource is one resource of a response: its name and version (delta) and its packed value.
type resource struct {
	name, version string
	value         *anypb.Any
}

// update takes one response's resources for url. removed are names to drop; full (a state-of-the-world
// LDS or CDS response) says that resources are all there is, and the others are removed. Valid
// resources are accepted, invalid ones keep their previous version; the returned error lists the
// invalid ones by name and field path (the NACK's error_detail), nil for an ACK. version is the
// response's version, which becomes the type's on an ACK.
//
// As Envoy, a response with a resource that cannot be decoded at all (no value, another type, bytes
// that do not unpack, a name other than the one announced) is rejected whole, nothing of it taken or
// removed (GrpcMuxImpl decodes every resource before handing any over); a duplicate name is rejected and
// the first of that name kept (cds_api_helper.cc: "duplicate cluster … found"); and when the Applier
// refuses the configuration the response's changes are rolled back, so that the next response of any
// type is not refused for this one's sake.
func (s *state) update(url, version string, resources []resource, removed []string, full bool) error {
	ts := s.types[url]
	if ts == nil {
		return fmt.Errorf("unsupported resource type %s", url)
	}
	type decoded struct {
		e    *entry
		name string
		err  error
	}
	ds := make([]decoded, len(resources))
	var malformed []string
	for i, r := range resources {
		e, name, err := s.decode(url, r)
		ds[i] = decoded{e, name, err}
		if errors.Is(err, errMalformed) {
			if name == "" {
				name = fmt.Sprintf("resources[%d]", i)
			}
			malformed = append(malformed, fmt.Sprintf("%s %q: %s", kindOf(url), name, err))
		}
	}
	if len(malformed) > 0 {
		s.countUpdate(url, nil, []string{""})
		return fmt.Errorf("the response is rejected whole: %s", strings.Join(malformed, "\n"))
	}
	before := maps.Clone(ts.entries)
	type versioned struct {
		e       *entry
		version string
	}
	var kept []versioned // entries whose version this response changed in place
	now := s.c.clk.Now()
	var errs, accepted, rejected []string
	seen := map[string]bool{}
	for i, d := range ds {
		e, name, err := d.e, d.name, d.err
		if err == nil && seen[name] {
			err = fmt.Errorf("duplicate %s %s found", kindOf(url), name)
		}
		if name != "" {
			seen[name] = true
		}
		if err != nil {
			rejected = append(rejected, name)
			if name == "" {
				name = fmt.Sprintf("resources[%d]", i)
			}
			errs = append(errs, fmt.Sprintf("%s %q: %s", kindOf(url), name, strings.ReplaceAll(err.Error(), "\n", "; ")))
			continue
		}
		accepted = append(accepted, name)
		if r := resources[i]; r.version != "" {
			e.version = r.version
		} else {
			e.version = version
		}
		e.updated = now
		if prev := ts.entries[name]; prev != nil && proto.Equal(prev.raw, e.raw) {
			kept = append(kept, versioned{prev, prev.version})
			prev.version = e.version
			continue
		}
		s.gen++
		e.gen = s.gen
		ts.entries[name] = e
		s.disarm(url, name)
	}
	if full {
		for name := range ts.entries {
			if !seen[name] {
				delete(ts.entries, name)
			}
		}
	}
	for _, name := range removed {
		delete(ts.entries, name)
	}
	if !ts.received {
		ts.received = true
		s.disarm(url, "")
	}
	var err error
	if len(errs) > 0 {
		err = errors.New(strings.Join(errs, "\n"))
	}
	s.countUpdate(url, accepted, rejected)
	s.rearm()
	if aerr := s.reconcile(); aerr != nil {
		// Back to what was applied: this response's changes go, the NACK says why.
		ts.entries = before
		for _, k := range kept {
			k.e.version = k.version
		}
		s.rearm()
		return errors.Join(err, aerr)
	}
	if err == nil {
		ts.version = version // an ACK: the NACK of a later response repeats this version
	}
	return err
}

// errMalformed marks a resource that could not be decoded at all (see update).
var errMalformed = errors.New("malformed resource")

// rearm starts the initial fetch timeouts of the routes and endpoints newly wanted, and stops those of
// the ones no longer wanted.
func (s *state) rearm() {
	want := map[string]map[string]time.Duration{TypeRoute: {}, TypeEndpoint: {}}
	for _, l := range s.listeners() {
		if l.RDS != nil {
			want[TypeRoute][l.RDS.RouteConfigName] = l.RDS.Source.InitialFetchTimeout
		}
	}
	for _, cl := range s.clusters() {
		if cl.EDS != nil {
			want[TypeEndpoint][cl.EDS.ServiceName] = cl.EDS.Source.InitialFetchTimeout
		}
	}
	for url, names := range want {
		ts := s.types[url]
		for name := range ts.timers {
			if _, ok := names[name]; !ok {
				s.disarm(url, name)
			}
		}
		// A name no longer wanted forgets that its fetch timed out: wanted again later, it waits for
		// its own initial_fetch_timeout.
		for name := range ts.timedOut {
			if _, ok := names[name]; !ok {
				delete(ts.timedOut, name)
			}
		}
		for name, d := range names {
			if ts.entries[name] == nil {
				s.arm(url, name, d)
			}
		}
	}
}

func kindOf(url string) string {
	switch url {
	case TypeListener:
		return "listener"
	case TypeRoute:
		return "route configuration"
	case TypeCluster:
		return "cluster"
	default:
		return "cluster load assignment"
	}
}

// decode unpacks and checks one resource; name is known as soon as the resource is unpacked.
func (s *state) decode(url string, r resource) (e *entry, name string, err error) {
	if r.value == nil {
		return nil, r.name, fmt.Errorf("%w: no resource", errMalformed)
	}
	if r.value.GetTypeUrl() != url {
		return nil, r.name, fmt.Errorf("%w: type %s in a response of type %s", errMalformed, r.value.GetTypeUrl(), url)
	}
	msg, err := r.value.UnmarshalNew()
	if err != nil {
		return nil, r.name, fmt.Errorf("%w: cannot unpack: %w", errMalformed, err)
	}
	e = &entry{raw: msg}
	switch m := msg.(type) {
	case *clusterv3.Cluster:
		name = m.GetName()
		if s.isStaticCluster(name) {
			return nil, name, errors.New("name: a static cluster of that name exists (static clusters cannot be updated by CDS)")
		}
		e.cluster, err = config.ClusterFromProto(m)
	case *listenerv3.Listener:
		name = m.GetName()
		if s.isStaticListener(name) {
			return nil, name, errors.New("name: a static listener of that name exists (static listeners cannot be updated by LDS)")
		}
		e.listener, err = config.ListenerFromProto(m)
	case *routev3.RouteConfiguration:
		name = m.GetName()
		e.routes, err = config.RouteConfigFromProto(m)
	case *endpointv3.ClusterLoadAssignment:
		name = m.GetClusterName()
		e.endpoints, err = config.EndpointsFromProto(m)
	}
	if r.name != "" && name != r.name {
		return nil, r.name, fmt.Errorf("%w: the resource is named %q", errMalformed, name)
	}
	if name == "" && err == nil {
		err = errors.New("name: required")
	}
	return e, name, err
}

func (s *state) isStaticCluster(name string) bool {
	return slices.ContainsFunc(s.c.opts.Config.Clusters, func(c config.Cluster) bool { return c.Name == name })
}

func (s *state) isStaticListener(name string) bool {
	return slices.ContainsFunc(s.c.opts.Config.Listeners, func(l config.Listener) bool { return l.Name == name })
}
