package xds_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/xds"
)

// controlPlane is go-control-plane's own xDS server and snapshot cache (ADS mode) on loopback,
// recording every request it receives.
type controlPlane struct {
	cache cachev3.SnapshotCache
	addr  string

	mu    sync.Mutex
	sotw  []*discoveryv3.DiscoveryRequest
	delta []*discoveryv3.DeltaDiscoveryRequest
	stop  func()
}

func newControlPlane() *controlPlane {
	cp := &controlPlane{cache: cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)}
	cp.start("127.0.0.1:0")
	return cp
}

// start serves on addr (a fixed address: the restart of a control plane).
func (cp *controlPlane) start(addr string) {
	ln, err := net.Listen("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(context.Background())
	srv := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(srv, serverv3.NewServer(ctx, cp.cache, serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.sotw = append(cp.sotw, proto.Clone(r).(*discoveryv3.DiscoveryRequest))
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			cp.mu.Lock()
			defer cp.mu.Unlock()
			cp.delta = append(cp.delta, proto.Clone(r).(*discoveryv3.DeltaDiscoveryRequest))
			return nil
		},
	}))
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = srv.Serve(ln)
	}()
	cp.mu.Lock()
	defer cp.mu.Unlock()
	cp.addr = ln.Addr().String()
	cp.stop = func() {
		srv.Stop()
		cancel()
		<-done
	}
}

// shutdown stops the server that runs now.
func (cp *controlPlane) shutdown() {
	cp.mu.Lock()
	stop := cp.stop
	cp.stop = func() {}
	cp.mu.Unlock()
	stop()
}

func (cp *controlPlane) port() int {
	_, p, err := net.SplitHostPort(cp.addr)
	Expect(err).NotTo(HaveOccurred())
	n, err := strconv.Atoi(p)
	Expect(err).NotTo(HaveOccurred())
	return n
}

// set publishes a snapshot of version for the node edge-0.
func (cp *controlPlane) set(version string, rs ...types.Resource) {
	// Every type, even without resources, so that an empty one has the version too (an empty list).
	byType := map[resource.Type][]types.Resource{resource.ClusterType: {}, resource.EndpointType: {},
		resource.ListenerType: {}, resource.RouteType: {}}
	for _, r := range rs {
		var t resource.Type
		switch r.(type) {
		case *clusterv3.Cluster:
			t = resource.ClusterType
		case *endpointv3.ClusterLoadAssignment:
			t = resource.EndpointType
		case *listenerv3.Listener:
			t = resource.ListenerType
		case *routev3.RouteConfiguration:
			t = resource.RouteType
		}
		byType[t] = append(byType[t], r)
	}
	snap, err := cachev3.NewSnapshot(version, byType)
	Expect(err).NotTo(HaveOccurred())
	Expect(cp.cache.SetSnapshot(context.Background(), "edge-0", snap)).To(Succeed())
}

// nacks are the error_detail messages received, both protocols.
func (cp *controlPlane) nacks() []string {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	var out []string
	for _, r := range cp.sotw {
		if r.GetErrorDetail() != nil {
			out = append(out, r.GetErrorDetail().GetMessage())
		}
	}
	for _, r := range cp.delta {
		if r.GetErrorDetail() != nil {
			out = append(out, r.GetErrorDetail().GetMessage())
		}
	}
	return out
}

func (cp *controlPlane) sotwRequests() []*discoveryv3.DiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*discoveryv3.DiscoveryRequest(nil), cp.sotw...)
}

func (cp *controlPlane) deltaRequests() []*discoveryv3.DeltaDiscoveryRequest {
	cp.mu.Lock()
	defer cp.mu.Unlock()
	return append([]*discoveryv3.DeltaDiscoveryRequest(nil), cp.delta...)
}

// bootstrapYAML is an Envoy bootstrap whose clusters and listeners come over ADS from port.
func bootstrapYAML(apiType string, port int) string {
	return fmt.Sprintf(`
node: {id: edge-0, cluster: edge}
dynamic_resources:
  ads_config:
    api_type: %s
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
  cds_config: {ads: {}, resource_api_version: V3}
  lds_config: {ads: {}, resource_api_version: V3}
static_resources:
  clusters:
  - name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
`, apiType, port)
}

// staticOverADSYAML is a bootstrap without CDS and LDS: a static listener whose routes come from RDS
// and a static cluster whose endpoints come from EDS, over ADS from port.
func staticOverADSYAML(apiType string, port int) string {
	return fmt.Sprintf(`
node: {id: edge-0, cluster: edge}
dynamic_resources:
  ads_config:
    api_type: %s
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
static_resources:
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
          rds: {route_config_name: local_route, config_source: {ads: {}}}
  clusters:
  - name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %d}}}
  - name: backend
    type: EDS
    eds_cluster_config: {eds_config: {ads: {}}}
`, apiType, port)
}

// adsSource is a config source over ADS with an initial_fetch_timeout of 5s.
func adsSource() *corev3.ConfigSource {
	return &corev3.ConfigSource{
		ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}},
		ResourceApiVersion:    corev3.ApiVersion_V3,
		InitialFetchTimeout:   durationpb.New(5 * time.Second),
	}
}

func edsCluster(name string) *clusterv3.Cluster {
	return &clusterv3.Cluster{
		Name:                 name,
		ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
		ConnectTimeout:       durationpb.New(time.Second),
		EdsClusterConfig:     &clusterv3.Cluster_EdsClusterConfig{EdsConfig: adsSource()},
	}
}

func endpoints(cluster string, addrs ...string) *endpointv3.ClusterLoadAssignment {
	var lbs []*endpointv3.LbEndpoint
	for _, a := range addrs {
		host, p, err := net.SplitHostPort(a)
		Expect(err).NotTo(HaveOccurred())
		port, err := strconv.Atoi(p)
		Expect(err).NotTo(HaveOccurred())
		lbs = append(lbs, &endpointv3.LbEndpoint{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
			Address: socket(host, port)}}})
	}
	return &endpointv3.ClusterLoadAssignment{ClusterName: cluster,
		Endpoints: []*endpointv3.LocalityLbEndpoints{{LbEndpoints: lbs}}}
}

func socket(host string, port int) *corev3.Address {
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}
}

// rdsListener listens on a free loopback port with its routes from RDS.
func rdsListener(name, routes string) *listenerv3.Listener {
	hcm := &hcmv3.HttpConnectionManager{
		StatPrefix: name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{
			RouteConfigName: routes, ConfigSource: adsSource()}},
		HttpFilters: []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router",
			ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: mustAny(&routerv3.Router{})}}},
	}
	return &listenerv3.Listener{
		Name:    name,
		Address: socket("127.0.0.1", 0),
		FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{
			Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}}}}},
	}
}

// routeTo sends every request to cluster.
func routeTo(name, cluster string) *routev3.RouteConfiguration {
	return &routev3.RouteConfiguration{Name: name, VirtualHosts: []*routev3.VirtualHost{{
		Name: "all", Domains: []string{"*"},
		Routes: []*routev3.Route{{
			Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: &routev3.RouteAction{
				ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}},
		}},
	}}}
}

func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	Expect(err).NotTo(HaveOccurred())
	return a
}

// recorder is an Applier that keeps every configuration it is given.
type recorder struct {
	mu   sync.Mutex
	cfgs []*config.Bootstrap
	raws []proto.Message
}

func (r *recorder) Apply(cfg *config.Bootstrap, raw proto.Message) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.cfgs = append(r.cfgs, cfg)
	r.raws = append(r.raws, raw)
	return nil
}

func (r *recorder) count() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.cfgs)
}

// last is the last configuration applied (nil: none yet).
func (r *recorder) last() *config.Bootstrap {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.cfgs) == 0 {
		return nil
	}
	return r.cfgs[len(r.cfgs)-1]
}

func (r *recorder) lastRaw() proto.Message {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.raws[len(r.raws)-1]
}

// refusing is a recorder whose Apply fails once an error is set.
type refusing struct {
	*recorder
	mu  sync.Mutex
	err string
}

func (r *refusing) setErr(msg string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.err = msg
}

func (r *refusing) Apply(cfg *config.Bootstrap, raw proto.Message) error {
	r.mu.Lock()
	msg := r.err
	r.mu.Unlock()
	if msg != "" {
		return errors.New(msg)
	}
	return r.recorder.Apply(cfg, raw)
}

// events keeps the client's events.
type events struct {
	mu  sync.Mutex
	all []xds.Event
}

func (e *events) add(ev xds.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) list() []xds.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]xds.Event(nil), e.all...)
}

func (e *events) count(kind xds.EventKind) int {
	n := 0
	for _, ev := range e.list() {
		if ev.Kind == kind {
			n++
		}
	}
	return n
}

// clusterNames and listenerNames list a configuration's clusters and listeners.
func clusterNames(cfg *config.Bootstrap) []string {
	if cfg == nil {
		return nil
	}
	var out []string
	for _, c := range cfg.Clusters {
		out = append(out, c.Name)
	}
	return out
}

func listenerNames(cfg *config.Bootstrap) []string {
	if cfg == nil {
		return nil
	}
	var out []string
	for _, l := range cfg.Listeners {
		out = append(out, l.Name)
	}
	return out
}

func clusterOf(cfg *config.Bootstrap, name string) *config.Cluster {
	for i := range cfg.Clusters {
		if cfg.Clusters[i].Name == name {
			return &cfg.Clusters[i]
		}
	}
	return nil
}

func addresses(c *config.Cluster) []string {
	if c == nil {
		return nil
	}
	out := []string{}
	for _, ep := range c.Endpoints {
		out = append(out, ep.Address)
	}
	return out
}

// routedCluster is the cluster the first route of a listener's first virtual host goes to.
func routedCluster(cfg *config.Bootstrap, listener string) string {
	if cfg == nil {
		return ""
	}
	for _, l := range cfg.Listeners {
		if l.Name == listener && len(l.Routes.VirtualHosts) > 0 && len(l.Routes.VirtualHosts[0].Routes) > 0 {
			return l.Routes.VirtualHosts[0].Routes[0].Action.Cluster
		}
	}
	return ""
}
