package config

import (
	"net/url"

	tracev3 "github.com/envoyproxy/go-control-plane/envoy/config/trace/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// otelTracerName is the name Envoy gives the OpenTelemetry tracer in tracing.http.
const otelTracerName = "envoy.tracers.opentelemetry"

// tracing converts the bootstrap's tracing provider: the OpenTelemetry tracer with an http_service,
// exported over OTLP/HTTP to http_uri.uri. Envoy sends through http_uri.cluster; meshproof accepts the
// field (Envoy requires it) and sends to the uri directly.
func (c *converter) tracing(t *tracev3.Tracing, path string) *Tracing {
	if t == nil {
		return nil
	}
	path = joinPath(path, "http")
	h := t.GetHttp()
	if h == nil {
		c.fail(path, "required: the %s provider", otelTracerName)
		return nil
	}
	if h.GetName() != "" && h.GetName() != otelTracerName {
		c.fail(joinPath(path, "name"), "%q is not supported: want %q", h.GetName(), otelTracerName)
		return nil
	}
	path = joinPath(path, "typed_config")
	cfg, ok := unpack[*tracev3.OpenTelemetryConfig](c, h.GetTypedConfig(), path)
	if !ok {
		return nil
	}
	hs := cfg.GetHttpService()
	if hs == nil {
		c.fail(joinPath(path, "http_service"), "required: meshproof exports over OTLP/HTTP (grpc_service is not supported)")
		return nil
	}
	uriPath := joinPath(joinPath(joinPath(path, "http_service"), "http_uri"), "uri")
	uri := hs.GetHttpUri().GetUri()
	if u, err := url.Parse(uri); err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		c.fail(uriPath, "%q: want an http:// or https:// URL of an OTLP/HTTP receiver, e.g. http://127.0.0.1:4318/v1/traces", uri)
		return nil
	}
	timeout := c.duration(hs.GetHttpUri().GetTimeout(), 0, joinPath(joinPath(joinPath(path, "http_service"), "http_uri"), "timeout"))
	return &Tracing{Endpoint: uri, Timeout: timeout, ServiceName: cfg.GetServiceName()}
}

// hcmTracing converts an HTTP connection manager's tracing: random_sampling (a percentage, default
// 100%) becomes a fraction.
func (c *converter) hcmTracing(t *hcmv3.HttpConnectionManager_Tracing) *HCMTracing {
	if t == nil {
		return nil
	}
	out := &HCMTracing{RandomSampling: 1}
	if p := t.GetRandomSampling(); p != nil {
		out.RandomSampling = p.GetValue() / 100 // validated by Envoy's rules: 0 ≤ value ≤ 100
	}
	return out
}
