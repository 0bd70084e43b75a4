package scenarios

import (
	"slices"
	"strings"
)

// What the load speaks (load.protocol, load.grpc). With h2c or gRPC the proxies' clusters speak HTTP/2
// to the instances (BuildBootstrap adds HttpProtocolOptions explicit_http_config
// http2_protocol_options to each), and their listeners take h2c with the default codec_type AUTO.

var protocols = []string{ProtocolHTTP1, ProtocolH2C, ProtocolGRPC}

// gRPC methods of load.grpc.method (the calls of meshproof.test.v1.Echo, faults/echo).
var grpcMethods = []string{"unary", "server_stream"}

// maxGRPCPayload is the most bytes a gRPC load's Request carries (gRPC's default receive limit).
const maxGRPCPayload = 4 << 20

// wantsHTTP2 reports whether the load's protocol needs HTTP/2 from the proxies to the instances.
func (l *Load) wantsHTTP2() bool {
	return l != nil && (l.Protocol == ProtocolH2C || l.Protocol == ProtocolGRPC)
}

// markUpstreamHTTP2 sets Proxy.UpstreamHTTP2 on every proxy when the load needs HTTP/2 (run before the
// proxies are checked, whose bootstrap check then includes the options).
func (v *validator) markUpstreamHTTP2() {
	h2 := v.sc.Load.wantsHTTP2()
	for _, p := range v.sc.Proxies {
		if p != nil {
			p.UpstreamHTTP2 = h2
		}
	}
}

// protocol checks load.protocol and load.grpc and fills in their defaults. It runs before the load's
// path and method get their defaults: a gRPC load refuses them.
func (v *validator) protocol(l *Load) {
	switch l.Protocol {
	case "":
		l.Protocol = ProtocolHTTP1
	case ProtocolHTTP1, ProtocolH2C, ProtocolGRPC:
	default:
		v.at("load.protocol", "%q is not accepted: one of %s (default %s)", l.Protocol, strings.Join(protocols, ", "), ProtocolHTTP1)
		return
	}
	if l.wantsHTTP2() {
		for _, name := range sortedKeys(v.sc.Services) {
			if s := v.sc.Services[name]; s != nil && len(s.Calls) > 0 {
				v.at("load.protocol", "%s with services that call others (%s has calls) is not supported yet: "+
					"their calls between sidecars and instances are HTTP/1.1; use %s", l.Protocol, name, ProtocolHTTP1)
				break
			}
		}
	}
	if l.Protocol != ProtocolGRPC {
		if l.GRPC != nil {
			v.at("load.grpc", "only with protocol: grpc (the load's protocol is %s)", l.Protocol)
		}
		return
	}
	// A gRPC load calls meshproof.test.v1.Echo: its path, method and body are the call's.
	for _, f := range []struct {
		field string
		set   bool
	}{{"path", l.Path != ""}, {"method", l.Method != ""}, {"body", l.Body != ""}, {"mix", len(l.Mix) > 0}} {
		if f.set {
			v.at("load."+f.field, "a gRPC load calls meshproof.test.v1.Echo and sets its own %s: leave it out (shape the calls with load.grpc)", f.field)
		}
	}
	if l.GRPC == nil {
		l.GRPC = &LoadGRPC{}
	}
	g := l.GRPC
	switch {
	case g.Method == "":
		g.Method = grpcMethods[0]
	case !slices.Contains(grpcMethods, g.Method):
		v.at("load.grpc.method", "%q is not accepted: one of %s (default %s)", g.Method, strings.Join(grpcMethods, ", "), grpcMethods[0])
	}
	if g.Payload < 0 || g.Payload > maxGRPCPayload {
		v.at("load.grpc.payload", "%d bytes is out of range: 0 to %d", g.Payload, maxGRPCPayload)
	}
	if g.Replies > 0 && g.Method != "server_stream" {
		v.at("load.grpc.replies", "only with method: server_stream (a unary call has one reply)")
	}
}
