package config

import (
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	httpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/upstreams/http/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
)

// httpProtocolOptionsType is the typed_extension_protocol_options entry of a cluster's HTTP protocol
// (api/envoy/extensions/upstreams/http/v3/http_protocol_options.proto); Envoy also finds it under its
// older name, legacyHTTPProtocolOptionsKey (source/extensions/upstreams/http/config.cc, the factory's
// name).
const (
	httpProtocolOptionsType      = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
	legacyHTTPProtocolOptionsKey = "envoy.upstreams.http.http_protocol_options"
)

// UpstreamProtocol is the HTTP protocol a cluster speaks to its hosts.
type UpstreamProtocol uint8

const (
	// UpstreamHTTP1 is HTTP/1.1 (Envoy's default, and explicit_http_config.http_protocol_options).
	UpstreamHTTP1 UpstreamProtocol = iota
	// UpstreamHTTP2 is HTTP/2 (explicit_http_config.http2_protocol_options, or the deprecated
	// Cluster.http2_protocol_options): prior knowledge (h2c) on a clear-text cluster, h2 over TLS.
	UpstreamHTTP2
	// UpstreamAuto is auto_config: each TLS connection speaks what ALPN negotiated (h2, else HTTP/1.1);
	// a clear-text cluster speaks HTTP/1.1.
	UpstreamAuto
)

func (p UpstreamProtocol) String() string {
	switch p {
	case UpstreamHTTP2:
		return "HTTP/2"
	case UpstreamAuto:
		return "auto"
	}
	return "HTTP/1.1"
}

// UpstreamHTTP is a cluster's HTTP protocol options (HttpProtocolOptions of
// typed_extension_protocol_options), with Envoy's defaults filled in.
type UpstreamHTTP struct {
	Protocol UpstreamProtocol
	// IdleTimeout is common_http_protocol_options.idle_timeout: a connection without a stream this
	// long is closed (default 1h; 0 configured: never).
	IdleTimeout time.Duration
	// NoIdleTimeout: idle_timeout was set to 0, which disables it.
	NoIdleTimeout bool
	// MaxRequestsPerConnection is common_http_protocol_options.max_requests_per_connection: a
	// connection that has carried this many streams takes no more and closes once idle (0: no limit).
	MaxRequestsPerConnection uint32
	// HTTP2 are the http2_protocol_options (used when the connection speaks HTTP/2).
	HTTP2 HTTP2Options
}

// HTTP2Options are the Http2ProtocolOptions meshproof implements upstream, with Envoy's defaults
// (api/envoy/config/core/v3/protocol.proto).
type HTTP2Options struct {
	// MaxConcurrentStreams bounds the streams of one connection, with the peer's
	// SETTINGS_MAX_CONCURRENT_STREAMS (default 2147483647).
	MaxConcurrentStreams uint32
	// InitialStreamWindowSize and InitialConnectionWindowSize are the receive windows advertised
	// (default 268435456 each; range 65535 to 2147483647).
	InitialStreamWindowSize, InitialConnectionWindowSize uint32
}

// Envoy's Http2ProtocolOptions defaults and bounds (protocol.proto; Http2::Utility::OptionsLimits,
// source/common/http/http2/codec_impl.h).
const (
	defaultMaxConcurrentStreams = 2147483647
	defaultH2Window             = 268435456
	minH2Window                 = 65535
	maxH2Window                 = 2147483647
)

// DefaultHTTP2Options are Envoy's defaults.
func DefaultHTTP2Options() HTTP2Options {
	return HTTP2Options{MaxConcurrentStreams: defaultMaxConcurrentStreams,
		InitialStreamWindowSize: defaultH2Window, InitialConnectionWindowSize: defaultH2Window}
}

// upstreamHTTP converts a cluster's HTTP protocol options: typed_extension_protocol_options'
// HttpProtocolOptions, or the deprecated http2_protocol_options (Envoy still reads it when the
// extension options are absent, ClusterInfoImpl's createOptions, source/common/upstream/upstream_impl.cc).
func (c *converter) upstreamHTTP(cl *clusterv3.Cluster, path string) UpstreamHTTP {
	out := UpstreamHTTP{IdleTimeout: defaultIdleTimeout, HTTP2: DefaultHTTP2Options()}
	opts := cl.GetTypedExtensionProtocolOptions()
	tpath := joinPath(path, "typed_extension_protocol_options")
	var hpo *httpv3.HttpProtocolOptions
	for key, a := range opts {
		kpath := tpath + "[" + key + "]"
		if key != httpProtocolOptionsType && key != legacyHTTPProtocolOptionsKey {
			c.fail(kpath, "unsupported extension %q: only %q is supported", key, httpProtocolOptionsType)
			continue
		}
		if hpo != nil {
			c.fail(kpath, "HttpProtocolOptions given twice (under %q and %q)", httpProtocolOptionsType, legacyHTTPProtocolOptionsKey)
			continue
		}
		var ok bool
		if hpo, ok = unpack[*httpv3.HttpProtocolOptions](c, a, kpath); !ok {
			hpo = nil
		}
	}
	//lint:ignore SA1019 Envoy still reads the deprecated field; so does meshproof
	if old := cl.GetHttp2ProtocolOptions(); old != nil {
		opath := joinPath(path, "http2_protocol_options")
		if hpo != nil {
			c.fail(opath, "deprecated: not with typed_extension_protocol_options[%s]", httpProtocolOptionsType)
		} else {
			out.Protocol = UpstreamHTTP2
			out.HTTP2 = c.http2Options(old, opath)
		}
	}
	if hpo == nil {
		if out.Protocol == UpstreamHTTP1 {
			return UpstreamHTTP{} // nothing configured: the zero value stands for Envoy's defaults
		}
		return out
	}
	path = tpath + "[" + httpProtocolOptionsType + "]"
	if common := hpo.GetCommonHttpProtocolOptions(); common != nil {
		cpath := joinPath(path, "common_http_protocol_options")
		if common.GetIdleTimeout() != nil {
			out.IdleTimeout = c.duration(common.GetIdleTimeout(), defaultIdleTimeout, joinPath(cpath, "idle_timeout"))
			out.NoIdleTimeout = out.IdleTimeout == 0
		}
		if v := common.GetMaxRequestsPerConnection(); v != nil {
			out.MaxRequestsPerConnection = v.GetValue()
		}
		// The message is the HCM's too: the fields only a downstream has are refused here.
		if common.GetMaxStreamDuration() != nil {
			c.fail(joinPath(cpath, "max_stream_duration"), "not supported on a cluster yet")
		}
		if common.GetHeadersWithUnderscoresAction() != corev3.HttpProtocolOptions_ALLOW {
			c.fail(joinPath(cpath, "headers_with_underscores_action"), "not supported on a cluster")
		}
	}
	switch pc := hpo.GetUpstreamProtocolOptions().(type) {
	case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_:
		epath := joinPath(path, "explicit_http_config")
		switch p := pc.ExplicitHttpConfig.GetProtocolConfig().(type) {
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_Http2ProtocolOptions:
			out.Protocol = UpstreamHTTP2
			out.HTTP2 = c.http2Options(p.Http2ProtocolOptions, joinPath(epath, "http2_protocol_options"))
		case *httpv3.HttpProtocolOptions_ExplicitHttpConfig_HttpProtocolOptions:
			out.Protocol = UpstreamHTTP1
		default:
			c.fail(epath, "want http_protocol_options or http2_protocol_options")
		}
	case *httpv3.HttpProtocolOptions_AutoConfig:
		out.Protocol = UpstreamAuto
		if h2 := pc.AutoConfig.GetHttp2ProtocolOptions(); h2 != nil {
			out.HTTP2 = c.http2Options(h2, joinPath(joinPath(path, "auto_config"), "http2_protocol_options"))
		}
	default:
		// Envoy requires one of explicit_http_config, use_downstream_protocol_config and auto_config
		// (the oneof is validated required); the decoder refused use_downstream_protocol_config.
		c.fail(path, "want explicit_http_config or auto_config")
	}
	if out.MaxRequestsPerConnection > 0 && out.Protocol != UpstreamHTTP2 {
		c.fail(joinPath(joinPath(path, "common_http_protocol_options"), "max_requests_per_connection"),
			"only for HTTP/2 (explicit_http_config.http2_protocol_options) yet: the HTTP/1.1 pool does not implement it")
	}
	return out
}

// healthCheckHTTP2 reports whether the cluster's health check speaks HTTP/2
// (HttpHealthCheck.codec_client_type; Envoy's default is HTTP1, HttpHealthCheckerImpl's codecClientType).
func healthCheckHTTP2(cl *clusterv3.Cluster) bool {
	hcs := cl.GetHealthChecks()
	return len(hcs) > 0 && hcs[0].GetHttpHealthCheck().GetCodecClientType() == typev3.CodecClientType_HTTP2
}

// http2Options converts Http2ProtocolOptions (the fields the subset accepts), Envoy's defaults filled in.
func (c *converter) http2Options(o *corev3.Http2ProtocolOptions, path string) HTTP2Options {
	out := DefaultHTTP2Options()
	if v := o.GetMaxConcurrentStreams(); v != nil {
		if v.GetValue() < 1 || v.GetValue() > defaultMaxConcurrentStreams {
			c.fail(joinPath(path, "max_concurrent_streams"), "%d is out of range: 1 to %d", v.GetValue(), defaultMaxConcurrentStreams)
		} else {
			out.MaxConcurrentStreams = v.GetValue()
		}
	}
	window := func(v uint32, name string) uint32 {
		if v < minH2Window || v > maxH2Window {
			c.fail(joinPath(path, name), "%d is out of range: %d to %d", v, minH2Window, maxH2Window)
			return defaultH2Window
		}
		return v
	}
	if v := o.GetInitialStreamWindowSize(); v != nil {
		out.InitialStreamWindowSize = window(v.GetValue(), "initial_stream_window_size")
	}
	if v := o.GetInitialConnectionWindowSize(); v != nil {
		out.InitialConnectionWindowSize = window(v.GetValue(), "initial_connection_window_size")
	}
	return out
}
