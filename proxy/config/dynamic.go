package config

import (
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	"google.golang.org/protobuf/proto"
)

// minFillRate is RateLimitSettings.fill_rate's floor: once a year (config_source.proto).
const minFillRate = 1.0 / (365 * 24 * 60 * 60)

// defaultInitialFetchTimeout is ConfigSource.initial_fetch_timeout's default (15s, config_source.proto).
const defaultInitialFetchTimeout = 15 * time.Second

// dynamicResources converts dynamic_resources: an ads_config over gRPC to a static cluster, and
// cds_config / lds_config over ADS. nil stays nil.
func (c *converter) dynamicResources(d *bootstrapv3.Bootstrap_DynamicResources, path string, static []Cluster) *DynamicResources {
	if d == nil {
		return nil
	}
	out := &DynamicResources{}
	if ads := d.GetAdsConfig(); ads != nil {
		apath := joinPath(path, "ads_config")
		switch ads.GetApiType() {
		case corev3.ApiConfigSource_GRPC:
		case corev3.ApiConfigSource_DELTA_GRPC:
			out.Delta = true
		default:
			c.fail(joinPath(apath, "api_type"), "required: GRPC or DELTA_GRPC")
		}
		out.ADSCluster = c.adsCluster(ads.GetGrpcServices(), joinPath(apath, "grpc_services"), static)
		if rl := ads.GetRateLimitSettings(); rl != nil {
			// Envoy's defaults and floor (config_source.proto; Utility::parseRateLimitSettings).
			out.RateLimit = &RateLimit{MaxTokens: 100, FillRate: 10}
			if v := rl.GetMaxTokens(); v != nil {
				out.RateLimit.MaxTokens = v.GetValue()
			}
			if v := rl.GetFillRate(); v != nil {
				out.RateLimit.FillRate = max(v.GetValue(), minFillRate)
			}
		}
	}
	out.CDS = c.adsSource(d.GetCdsConfig(), joinPath(path, "cds_config"))
	out.LDS = c.adsSource(d.GetLdsConfig(), joinPath(path, "lds_config"))
	return out
}

// adsCluster checks ads_config.grpc_services: exactly one envoy_grpc naming a static cluster with
// endpoints (the control plane).
func (c *converter) adsCluster(services []*corev3.GrpcService, path string, static []Cluster) string {
	if len(services) != 1 {
		c.fail(path, "want exactly one gRPC service (envoy_grpc), got %d", len(services))
		return ""
	}
	path = indexPath(path, 0)
	eg := services[0].GetEnvoyGrpc()
	if eg == nil {
		c.fail(joinPath(path, "envoy_grpc"), "required")
		return ""
	}
	name := eg.GetClusterName()
	for _, cl := range static {
		if cl.Name == name && cl.EDS == nil {
			return name
		}
	}
	c.fail(joinPath(path, "envoy_grpc.cluster_name"), "%q is not a static cluster of type STATIC (static_resources.clusters)", name)
	return ""
}

// adsSource checks a config source that must say ads {} while the bootstrap has an ads_config.
func (c *converter) adsSource(cs *corev3.ConfigSource, path string) *ConfigSource {
	if cs == nil {
		return nil
	}
	if cs.GetAds() == nil {
		c.fail(joinPath(path, "ads"), "required: ads {} (resources over the ADS stream are the only config source supported)")
		return nil
	}
	if !c.ads {
		c.fail(joinPath(path, "ads"), "needs dynamic_resources.ads_config")
		return nil
	}
	return &ConfigSource{InitialFetchTimeout: c.duration(cs.GetInitialFetchTimeout(), defaultInitialFetchTimeout,
		joinPath(path, "initial_fetch_timeout"))}
}

// rds converts an HCM's rds: its routes by name over ADS.
func (c *converter) rds(r *hcmv3.Rds, path string) *RDS {
	src := c.adsSource(r.GetConfigSource(), joinPath(path, "config_source"))
	if r.GetConfigSource() == nil {
		c.fail(joinPath(path, "config_source"), "required: ads {}")
	}
	if src == nil {
		return nil
	}
	return &RDS{RouteConfigName: r.GetRouteConfigName(), Source: *src}
}

// eds converts the eds_cluster_config of a cluster of type EDS, which must not list endpoints itself.
func (c *converter) eds(cl *clusterv3.Cluster, path string) *EDS {
	if cl.GetLoadAssignment() != nil {
		c.fail(joinPath(path, "load_assignment"), "not with type EDS: the endpoints come from EDS")
	}
	ec := cl.GetEdsClusterConfig()
	if ec == nil {
		c.fail(joinPath(path, "eds_cluster_config"), "required with type EDS")
		return nil
	}
	epath := joinPath(path, "eds_cluster_config")
	src := c.adsSource(ec.GetEdsConfig(), joinPath(epath, "eds_config"))
	if ec.GetEdsConfig() == nil {
		c.fail(joinPath(epath, "eds_config"), "required: ads {}")
	}
	if src == nil {
		return nil
	}
	name := ec.GetServiceName()
	if name == "" {
		name = cl.GetName()
	}
	return &EDS{ServiceName: name, Source: *src}
}

// The functions below check and convert one resource received over xDS, with the same subset, proto
// rules and semantic checks as a static bootstrap. Error paths start at the resource's own fields
// (e.g. "load_assignment.endpoints[0]"); all errors found are returned, joined, each an *Error.

// ClusterFromProto checks and converts a cluster from CDS (type STATIC or EDS).
func ClusterFromProto(cl *clusterv3.Cluster) (Cluster, error) {
	c, ok := resourceConverter(cl)
	if !ok {
		return Cluster{}, joinErrors(c.errs)
	}
	out := c.cluster(cl, "")
	return out, joinErrors(c.errs)
}

// ListenerFromProto checks and converts a listener from LDS. Its routes are inline, or named by rds
// (Listener.RDS) and checked on their own by RouteConfigFromProto.
func ListenerFromProto(l *listenerv3.Listener) (Listener, error) {
	c, ok := resourceConverter(l)
	if !ok {
		return Listener{}, joinErrors(c.errs)
	}
	// The clusters an inline route configuration names are not checked: they may come from CDS later.
	out := c.listener(l, "", nil)
	return out, joinErrors(c.errs)
}

// RouteConfigFromProto checks and converts a route configuration from RDS. The clusters it names are
// not checked (see knownCluster).
func RouteConfigFromProto(rc *routev3.RouteConfiguration) (RouteConfig, error) {
	c, ok := resourceConverter(rc)
	if !ok {
		return RouteConfig{}, joinErrors(c.errs)
	}
	out := c.routeConfig(rc, "", nil)
	return out, joinErrors(c.errs)
}

// EndpointsFromProto checks and converts a cluster load assignment from EDS. It may hold no endpoint
// (a cluster with no hosts).
func EndpointsFromProto(cla *endpointv3.ClusterLoadAssignment) ([]Endpoint, error) {
	c, ok := resourceConverter(cla)
	if !ok {
		return nil, joinErrors(c.errs)
	}
	var out []Endpoint
	for i, locality := range cla.GetEndpoints() {
		lpath := joinPath(indexPath("endpoints", i), "lb_endpoints")
		for j, lb := range locality.GetLbEndpoints() {
			out = append(out, c.endpoint(lb, indexPath(lpath, j)))
		}
	}
	return out, joinErrors(c.errs)
}

// resourceConverter checks m against the supported subset and its own proto rules and returns a
// converter for it; ok is false when m failed those checks (c.errs says why).
func resourceConverter(m proto.Message) (c *converter, ok bool) {
	c = &converter{ads: true}
	if errs := checkSupported(m.ProtoReflect(), ""); len(errs) > 0 {
		c.errs = errs
		return c, false
	}
	if v, isV := m.(interface{ ValidateAll() error }); isV {
		if errs := pgvErrors(v.ValidateAll(), m.ProtoReflect().Descriptor(), ""); len(errs) > 0 {
			c.errs = errs
			return c, false
		}
	}
	return c, true
}
