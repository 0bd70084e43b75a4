package xds

import (
	"maps"
	"slices"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// dump is the configuration as Envoy's admin /config_dump shows it (admin.v3.ConfigDump): the
// bootstrap, then the clusters, listeners, route configurations and endpoints, the dynamic ones with
// the version each came with. A cluster or listener that is not in use (active) is warming.
func (s *state) dump(clusters map[string]activeCluster, listeners map[string]activeListener) *adminv3.ConfigDump {
	cds := &adminv3.ClustersConfigDump{VersionInfo: s.types[TypeCluster].version}
	for _, cl := range s.c.opts.Bootstrap.GetStaticResources().GetClusters() {
		cds.StaticClusters = append(cds.StaticClusters, &adminv3.ClustersConfigDump_StaticCluster{Cluster: mustAny(cl)})
	}
	ts := s.types[TypeCluster]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		e := ts.entries[name]
		d := &adminv3.ClustersConfigDump_DynamicCluster{VersionInfo: e.version, Cluster: mustAny(e.raw),
			LastUpdated: timestamppb.New(e.updated)}
		if _, ok := clusters[name]; ok {
			cds.DynamicActiveClusters = append(cds.DynamicActiveClusters, d)
		} else {
			cds.DynamicWarmingClusters = append(cds.DynamicWarmingClusters, d)
		}
	}
	lds := &adminv3.ListenersConfigDump{VersionInfo: s.types[TypeListener].version}
	for _, l := range s.c.opts.Bootstrap.GetStaticResources().GetListeners() {
		lds.StaticListeners = append(lds.StaticListeners, &adminv3.ListenersConfigDump_StaticListener{Listener: mustAny(l)})
	}
	ts = s.types[TypeListener]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		e := ts.entries[name]
		st := &adminv3.ListenersConfigDump_DynamicListenerState{VersionInfo: e.version, Listener: mustAny(e.raw),
			LastUpdated: timestamppb.New(e.updated)}
		d := &adminv3.ListenersConfigDump_DynamicListener{Name: name}
		if _, ok := listeners[name]; ok {
			d.ActiveState = st
		} else {
			d.WarmingState = st
		}
		lds.DynamicListeners = append(lds.DynamicListeners, d)
	}
	rds := &adminv3.RoutesConfigDump{}
	ts = s.types[TypeRoute]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		e := ts.entries[name]
		rds.DynamicRouteConfigs = append(rds.DynamicRouteConfigs, &adminv3.RoutesConfigDump_DynamicRouteConfig{
			VersionInfo: e.version, RouteConfig: mustAny(e.raw), LastUpdated: timestamppb.New(e.updated)})
	}
	eds := &adminv3.EndpointsConfigDump{}
	ts = s.types[TypeEndpoint]
	for _, name := range slices.Sorted(maps.Keys(ts.entries)) {
		e := ts.entries[name]
		eds.DynamicEndpointConfigs = append(eds.DynamicEndpointConfigs, &adminv3.EndpointsConfigDump_DynamicEndpointConfig{
			VersionInfo: e.version, EndpointConfig: mustAny(e.raw), LastUpdated: timestamppb.New(e.updated)})
	}
	return &adminv3.ConfigDump{Configs: []*anypb.Any{
		mustAny(&adminv3.BootstrapConfigDump{Bootstrap: s.c.opts.Bootstrap}),
		mustAny(cds), mustAny(lds), mustAny(rds), mustAny(eds),
	}}
}

// mustAny packs m; marshalling a valid message does not fail.
func mustAny(m proto.Message) *anypb.Any {
	a, err := anypb.New(m)
	if err != nil {
		panic(err)
	}
	return a
}
