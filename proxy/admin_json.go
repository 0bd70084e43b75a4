package proxy

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime/debug"
	"sort"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy/policy"
)

// writeAdminJSON writes an admin message as Envoy does (MessageUtil::getJsonStringFromMessageOrError,
// source/common/protobuf/utility.cc): proto field names, pretty-printed, default values left out.
func writeAdminJSON(w http.ResponseWriter, m proto.Message) {
	b, err := protojson.MarshalOptions{Multiline: true, Indent: " ", UseProtoNames: true}.Marshal(m)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("content-type", "application/json")
	w.Write(append(b, '\n'))
}

// sortedClusters are the proxy's clusters by name.
func (s *Server) sortedClusters() []*cluster {
	g := s.current()
	defer g.release()
	out := make([]*cluster, 0, len(g.clusters))
	for _, c := range g.clusters {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

// serveClustersJSON answers /clusters?format=json with Envoy's admin.v3.Clusters
// (ClustersHandler::writeClustersAsJson, source/server/admin/clusters_handler.cc): per cluster its
// name, observability_name, both priorities' circuit-breaker thresholds and its hosts, each with its
// address, counters and gauges (SimpleMetric), health_status and weight.
func (s *Server) serveClustersJSON(w http.ResponseWriter) {
	out := &adminv3.Clusters{}
	for _, c := range s.sortedClusters() {
		cs := &adminv3.ClusterStatus{Name: c.name, ObservabilityName: c.name,
			CircuitBreakers: circuitBreakers(c.cfg.Breakers.Default, c.cfg.Breakers.High)}
		for i, h := range c.hosts {
			if h.removed.Load() {
				continue // a host pending removal that failed its checks: gone
			}
			hs := &adminv3.HostStatus{Address: socketAddress(h.addr), Weight: h.weight.Load()}
			counter := func(name string, v uint64) {
				hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Type: adminv3.SimpleMetric_COUNTER, Name: name, Value: v})
			}
			gauge := func(name string, v int64) {
				hs.Stats = append(hs.Stats, &adminv3.SimpleMetric{Type: adminv3.SimpleMetric_GAUGE, Name: name, Value: uint64(max(v, 0))})
			}
			counter("cx_connect_fail", h.cxConnectFail.Load())
			counter("cx_total", h.cxTotal.Load())
			counter("rq_error", h.rqError.Load())
			counter("rq_success", h.rqSuccess.Load())
			counter("rq_timeout", h.rqTimeout.Load())
			counter("rq_total", h.rqTotal.Load())
			gauge("cx_active", h.cxActive.Load())
			gauge("rq_active", h.rqActive.Load())
			hs.HealthStatus = &adminv3.HostHealthStatus{
				EdsHealthStatus:         corev3.HealthStatus_HEALTHY, // static hosts: Envoy's default
				FailedOutlierCheck:      c.outlier != nil && c.outlier.Ejected(i),
				FailedActiveHealthCheck: c.hc != nil && !c.hc.Healthy(i),
				PendingDynamicRemoval:   h.pendingRemoval.Load(), // HostUtility's PENDING_DYNAMIC_REMOVAL flag
			}
			cs.HostStatuses = append(cs.HostStatuses, hs)
		}
		out.ClusterStatuses = append(out.ClusterStatuses, cs)
	}
	writeAdminJSON(w, out)
}

// circuitBreakers are the thresholds as ClustersHandler::addCircuitBreakerSettingsAsJson lists them.
func circuitBreakers(def, high policy.CircuitBreakerThresholds) *clusterv3.CircuitBreakers {
	th := func(p corev3.RoutingPriority, t policy.CircuitBreakerThresholds) *clusterv3.CircuitBreakers_Thresholds {
		return &clusterv3.CircuitBreakers_Thresholds{Priority: p,
			MaxConnections: wrapperspb.UInt32(uint32(t.MaxConnections)), MaxPendingRequests: wrapperspb.UInt32(uint32(t.MaxPendingRequests)),
			MaxRequests: wrapperspb.UInt32(uint32(t.MaxRequests)), MaxRetries: wrapperspb.UInt32(uint32(t.MaxRetries))}
	}
	return &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{
		th(corev3.RoutingPriority_DEFAULT, def), th(corev3.RoutingPriority_HIGH, high)}}
}

// socketAddress is a host:port as Envoy's config.core.v3.Address.
func socketAddress(hostPort string) *corev3.Address {
	host, port, err := net.SplitHostPort(hostPort)
	if err != nil {
		return &corev3.Address{Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: hostPort}}}
	}
	p, _ := strconv.ParseUint(port, 10, 32)
	return &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(p)}}}}
}

// serveListeners answers /listeners as Envoy does (ListenersHandler, source/server/admin/
// listeners_handler.cc): "<name>::<address>" per line, or with ?format=json admin.v3.Listeners.
func (s *Server) serveListeners(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	type named struct{ name, addr string }
	var ls []named
	for _, l := range s.cfg.Listeners {
		addr := l.Address
		if ln := s.listeners[l.Name]; ln != nil {
			addr = ln.Addr().String()
		}
		ls = append(ls, named{l.Name, addr})
	}
	s.mu.Unlock()
	if r.URL.Query().Get("format") == "json" {
		out := &adminv3.Listeners{}
		for _, l := range ls {
			out.ListenerStatuses = append(out.ListenerStatuses, &adminv3.ListenerStatus{Name: l.name, LocalAddress: socketAddress(l.addr)})
		}
		writeAdminJSON(w, out)
		return
	}
	var b strings.Builder
	for _, l := range ls {
		fmt.Fprintf(&b, "%s::%s\n", l.name, l.addr)
	}
	w.Header().Set("content-type", "text/plain")
	io.WriteString(w, b.String())
}

// serveServerInfo answers /server_info with Envoy's admin.v3.ServerInfo (ServerInfoHandler,
// source/server/admin/server_info_handler.cc): the version, LIVE or DRAINING (after POST
// /healthcheck/fail, as Envoy's Utility::serverState says), and the uptime. meshproof has no hot
// restart, so both uptimes are the process's.
func (s *Server) serveServerInfo(w http.ResponseWriter) {
	state := adminv3.ServerInfo_State(adminv3.ServerInfo_State_value[s.state()])
	up := durationpb.New(s.clk.Since(s.startedAt).Truncate(1e9))
	writeAdminJSON(w, &adminv3.ServerInfo{Version: proxyVersion(), State: state, UptimeCurrentEpoch: up,
		UptimeAllEpochs: up, CommandLineOptions: &adminv3.CommandLineOptions{}})
}

// proxyVersion is meshproof's version as the module was built ("meshproof/(devel)" from a checkout).
func proxyVersion() string {
	v := "(devel)"
	if info, ok := debug.ReadBuildInfo(); ok && info.Main.Version != "" {
		v = info.Main.Version
	}
	return "meshproof/" + v
}

// serveRuntime answers /runtime as Envoy's RuntimeHandler (source/server/admin/runtime_handler.cc)
// does with no runtime layers: meshproof has no runtime, so no layers and no entries; it is read-only
// (no /runtime_modify).
func serveRuntimeLayers(w http.ResponseWriter) {
	w.Header().Set("content-type", "application/json")
	io.WriteString(w, "{\n \"layers\": [],\n \"entries\": {}\n}\n")
}
