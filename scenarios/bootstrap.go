package scenarios

import (
	"fmt"
	"net"
	"strconv"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	routerv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/router/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	upstreamhttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

type protoMessage = proto.Message

func newRouteAction() *routev3.RouteAction { return &routev3.RouteAction{} }
func newCluster() *clusterv3.Cluster       { return &clusterv3.Cluster{} }
func newVirtualHost() *routev3.VirtualHost { return &routev3.VirtualHost{} }

type generated struct{ field, what string }

// generatedFields lists the Envoy fields a scenario set that the topology generates.
func generatedFields(p *Proxy) []generated {
	var out []generated
	if p.RouteAction.GetClusterSpecifier() != nil {
		out = append(out, generated{"route.cluster", "the route's cluster (it is routes_to)"})
	}
	if p.ClusterSpec.GetName() != "" {
		out = append(out, generated{"cluster.name", "the cluster name (it is the service's name)"})
	}
	if p.ClusterSpec.GetLoadAssignment() != nil {
		out = append(out, generated{"cluster.load_assignment", "the endpoint list (the service's instances)"})
	}
	if p.ClusterSpec.GetClusterDiscoveryType() != nil {
		out = append(out, generated{"cluster.type", "the discovery type (STATIC)"})
	}
	if p.VHostSpec.GetName() != "" || len(p.VHostSpec.GetDomains()) > 0 {
		out = append(out, generated{"virtual_host", "the virtual host's name and domains"})
	}
	if len(p.VHostSpec.GetRoutes()) > 0 {
		out = append(out, generated{"virtual_host.routes", "the virtual host's routes (write them as the proxy's routes)"})
	}
	return out
}

// routeCluster is a cluster a route names, and the field below the route that names it.
type routeCluster struct{ name, field string }

// routeClusters lists the clusters a route names: its cluster, its weighted clusters and its request
// mirrors' clusters (a cluster_header names them at request time, so it lists nothing).
func routeClusters(r *routev3.Route) []routeCluster {
	a := r.GetRoute()
	if a == nil {
		return nil
	}
	var out []routeCluster
	if c := a.GetCluster(); c != "" {
		out = append(out, routeCluster{c, "route.cluster"})
	}
	for i, w := range a.GetWeightedClusters().GetClusters() {
		if w.GetName() != "" {
			out = append(out, routeCluster{w.GetName(), fmt.Sprintf("route.weighted_clusters.clusters[%d].name", i)})
		}
	}
	for i, m := range a.GetRequestMirrorPolicies() {
		if m.GetCluster() != "" {
			out = append(out, routeCluster{m.GetCluster(), fmt.Sprintf("route.request_mirror_policies[%d].cluster", i)})
		}
	}
	return out
}

// Addresses are where a proxy listens and where the instances of the services it routes to are.
type Addresses struct {
	Listener  string              // host:port
	Admin     string              // host:port; "" for no admin interface
	Endpoints map[string][]string // service → host:port of each of its instances, in instance order
	// TLS, when set, makes every cluster mutual TLS to its service's instances with the proxy's own
	// identity (IngressIdentity) and the run's certificates (mesh.mtls); nil: plain.
	TLS *MeshTLS
}

// BuildBootstrap generates the Envoy v3 bootstrap of one proxy of the scenario: a listener with an HTTP
// connection manager and the router, and one virtual host matching every domain. With routes_to, its
// single route (prefix "/") carries the scenario's RouteAction to the routes_to service's cluster; with
// routes, it holds the scenario's routes in order. Each service the proxy routes to (Proxy.Services, in
// that order) has a STATIC cluster with the scenario's Cluster fields and one endpoint per instance.
func BuildBootstrap(sc *Scenario, proxyName string, addrs Addresses) (*bootstrapv3.Bootstrap, error) {
	p, ok := sc.Proxies[proxyName]
	if !ok {
		return nil, fmt.Errorf("no proxy %q in scenario %q", proxyName, sc.Name)
	}
	return proxyBootstrap(p, proxyName, addrs)
}

// proxyBootstrap is BuildBootstrap for the proxy called proxyName configured as p (the scenario's, or
// its state after a change).
func proxyBootstrap(p *Proxy, proxyName string, addrs Addresses) (*bootstrapv3.Bootstrap, error) {
	listenAddr, err := socketAddress(addrs.Listener)
	if err != nil {
		return nil, fmt.Errorf("listener address: %w", err)
	}
	vhost := proto.Clone(orEmpty(p.VHostSpec, newVirtualHost())).(*routev3.VirtualHost)
	vhost.Name, vhost.Domains = proxyName, []string{"*"}
	if p.RoutesTo != "" {
		action := proto.Clone(orEmpty(p.RouteAction, newRouteAction())).(*routev3.RouteAction)
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: p.RoutesTo}
		vhost.Routes = []*routev3.Route{{
			Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
			Action: &routev3.Route_Route{Route: action},
		}}
	} else {
		vhost.Routes = nil
		for _, r := range p.RouteSpecs {
			vhost.Routes = append(vhost.Routes, proto.Clone(r).(*routev3.Route))
		}
	}
	var clusters []*clusterv3.Cluster
	for _, svc := range p.Services() {
		cluster, err := staticCluster(svc, orEmpty(p.ClusterSpec, newCluster()), addrs.Endpoints[svc])
		if err == nil && p.UpstreamHTTP2 {
			err = upstreamHTTP2(cluster)
		}
		if err != nil {
			return nil, err
		}
		if err := withMeshTLS(cluster, addrs.TLS, IngressIdentity(proxyName), svc); err != nil {
			return nil, err
		}
		clusters = append(clusters, cluster)
	}
	b, err := bootstrapOf(proxyName, listenAddr, []*routev3.VirtualHost{vhost}, clusters, nil)
	if err != nil {
		return nil, err
	}
	if addrs.Admin != "" {
		a, err := socketAddress(addrs.Admin)
		if err != nil {
			return nil, fmt.Errorf("admin address: %w", err)
		}
		b.Admin = &bootstrapv3.Admin{Address: a}
	}
	return b, nil
}

// SidecarAddresses are where an instance's outbound sidecar listens and where its callees' instances are.
type SidecarAddresses struct {
	Listener  string              // host:port
	Admin     string              // host:port; "" for no admin interface
	Endpoints map[string][]string // callee service → host:port of each of its instances, in instance order
	// TLS, when set, makes every cluster mutual TLS to its callee's instances with the calling
	// service's identity and the run's certificates (mesh.mtls); nil: plain.
	TLS *MeshTLS
}

// SidecarListener is the name of a sidecar's outbound listener, and its connection manager's stat
// prefix.
const SidecarListener = "outbound"

// SidecarBootstrap generates the Envoy v3 bootstrap of the outbound sidecar of an instance of caller: a
// listener whose connection manager has one virtual host per callee, matching the callee's name as the
// Host (the app sends its calls with Host: <callee>), whose single route (prefix "/") carries the edge's merged RouteAction
// (Scenario.EdgeConfig) to the callee's STATIC cluster, which carries the edge's merged Cluster fields
// and one endpoint per callee instance. Virtual host and cluster i are the caller's i-th callee
// (Scenario.Callees).
func SidecarBootstrap(sc *Scenario, caller string, addrs SidecarAddresses) (*bootstrapv3.Bootstrap, error) {
	callees := sc.Callees(caller)
	if len(callees) == 0 {
		return nil, fmt.Errorf("service %q calls no other service: it has no sidecar", caller)
	}
	listenAddr, err := socketAddress(addrs.Listener)
	if err != nil {
		return nil, fmt.Errorf("listener address: %w", err)
	}
	var vhosts []*routev3.VirtualHost
	var clusters []*clusterv3.Cluster
	for _, callee := range callees {
		action, spec := sc.EdgeConfig(Edge{caller, callee})
		action.ClusterSpecifier = &routev3.RouteAction_Cluster{Cluster: callee}
		vhosts = append(vhosts, &routev3.VirtualHost{
			Name:    callee,
			Domains: []string{callee},
			Routes: []*routev3.Route{{
				Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: action},
			}},
		})
		c, err := staticCluster(callee, spec, addrs.Endpoints[callee])
		if err != nil {
			return nil, err
		}
		if err := withMeshTLS(c, addrs.TLS, caller, callee); err != nil {
			return nil, err
		}
		clusters = append(clusters, c)
	}
	b, err := bootstrapOf(SidecarListener, listenAddr, vhosts, clusters, trustLocalApp)
	if err != nil {
		return nil, err
	}
	if addrs.Admin != "" {
		a, err := socketAddress(addrs.Admin)
		if err != nil {
			return nil, fmt.Errorf("admin address: %w", err)
		}
		b.Admin = &bootstrapv3.Admin{Address: a}
	}
	return b, nil
}

// trustLocalApp makes a sidecar's connection manager take its app's requests (from loopback) for
// internal, so that the router honours the app's x-envoy-upstream-rq-timeout-ms (deadline
// propagation): Envoy removes the router's request headers from any other request, and since 1.33
// holds no address internal without an internal_address_config. Istio's sidecars do the same.
func trustLocalApp(hcm *hcmv3.HttpConnectionManager) {
	hcm.UseRemoteAddress = wrapperspb.Bool(true)
	hcm.InternalAddressConfig = &hcmv3.HttpConnectionManager_InternalAddressConfig{CidrRanges: []*corev3.CidrRange{
		{AddressPrefix: "127.0.0.0", PrefixLen: wrapperspb.UInt32(8)},
		{AddressPrefix: "::1", PrefixLen: wrapperspb.UInt32(128)},
	}}
}

// bootstrapOf is a static bootstrap with one listener (name, also its connection manager's stat
// prefix and route configuration's name) routing by vhosts through the router filter, and clusters;
// tune, when set, adjusts the connection manager.
func bootstrapOf(name string, listenAddr *corev3.Address, vhosts []*routev3.VirtualHost, clusters []*clusterv3.Cluster,
	tune func(*hcmv3.HttpConnectionManager)) (*bootstrapv3.Bootstrap, error) {
	router, err := anypb.New(&routerv3.Router{})
	if err != nil {
		return nil, err
	}
	m := &hcmv3.HttpConnectionManager{
		StatPrefix:     name,
		RouteSpecifier: &hcmv3.HttpConnectionManager_RouteConfig{RouteConfig: &routev3.RouteConfiguration{Name: name, VirtualHosts: vhosts}},
		HttpFilters:    []*hcmv3.HttpFilter{{Name: "envoy.filters.http.router", ConfigType: &hcmv3.HttpFilter_TypedConfig{TypedConfig: router}}},
	}
	if tune != nil {
		tune(m)
	}
	hcm, err := anypb.New(m)
	if err != nil {
		return nil, err
	}
	return &bootstrapv3.Bootstrap{
		StaticResources: &bootstrapv3.Bootstrap_StaticResources{
			Listeners: []*listenerv3.Listener{{
				Name:         name,
				Address:      listenAddr,
				FilterChains: []*listenerv3.FilterChain{{Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}},
			}},
			Clusters: clusters,
		},
	}, nil
}

// staticCluster is a copy of spec named service, STATIC, with one endpoint per address.
func staticCluster(service string, spec *clusterv3.Cluster, endpoints []string) (*clusterv3.Cluster, error) {
	cluster := proto.Clone(spec).(*clusterv3.Cluster)
	cluster.Name = service
	cluster.ClusterDiscoveryType = &clusterv3.Cluster_Type{Type: clusterv3.Cluster_STATIC}
	la := &endpointv3.ClusterLoadAssignment{ClusterName: service, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
	for i, ep := range endpoints {
		a, err := socketAddress(ep)
		if err != nil {
			return nil, fmt.Errorf("endpoint %s/%d: %w", service, i, err)
		}
		la.Endpoints[0].LbEndpoints = append(la.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
			HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: a}},
		})
	}
	cluster.LoadAssignment = la
	return cluster, nil
}

// HTTPProtocolOptionsKey is the typed_extension_protocol_options key of a cluster's upstream HTTP
// protocol options (Envoy's envoy.extensions.upstreams.http.v3.HttpProtocolOptions, by its extension
// name; see Envoy's api/envoy/config/cluster/v3/cluster.proto, typed_extension_protocol_options).
const HTTPProtocolOptionsKey = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"

// upstreamHTTP2 makes a cluster speak HTTP/2 to its hosts, as Envoy's HttpProtocolOptions
// explicit_http_config {http2_protocol_options {}} does (api/envoy/extensions/upstreams/http/v3/
// http_protocol_options.proto) — unless the scenario's cluster already sets its HTTP protocol options,
// which are kept as written.
func upstreamHTTP2(c *clusterv3.Cluster) error {
	if _, ok := c.GetTypedExtensionProtocolOptions()[HTTPProtocolOptionsKey]; ok {
		return nil
	}
	opts, err := anypb.New(&upstreamhttpv3.HttpProtocolOptions{
		UpstreamProtocolOptions: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_{
			ExplicitHttpConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig{
				ProtocolConfig: &upstreamhttpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions{
					Http2ProtocolOptions: &corev3.Http2ProtocolOptions{},
				},
			},
		},
	})
	if err != nil {
		return err
	}
	if c.TypedExtensionProtocolOptions == nil {
		c.TypedExtensionProtocolOptions = map[string]*anypb.Any{}
	}
	c.TypedExtensionProtocolOptions[HTTPProtocolOptionsKey] = opts
	return nil
}

func orEmpty[T proto.Message](m, empty T) T {
	if proto.Message(m) == nil || !m.ProtoReflect().IsValid() {
		return empty
	}
	return m
}

func socketAddress(hostport string) (*corev3.Address, error) {
	host, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return nil, err
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return nil, fmt.Errorf("port %q: %w", port, err)
	}
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(n)},
	}}}, nil
}
