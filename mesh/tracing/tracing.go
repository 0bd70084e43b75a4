// Package tracing wires OpenTelemetry's SDK for a run: one TracerProvider per run (never the global
// one), W3C trace-context propagation, an in-memory collector of the run's spans, the OTLP/JSON file
// writer (traces.otlp.json) and, when configured, OTLP/HTTP export to a collector.
//
// The instrumented packages (mesh/load, proxy, faults) only see the API (trace.Tracer,
// trace.TracerProvider, propagation.TextMapPropagator); this package is where the SDK lives.
package tracing

import (
	"context"
	"fmt"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Instrumentation scope names (the tracer names) of the instrumented components.
const (
	ScopeLoad     = "github.com/meshproof/meshproof/mesh/load"
	ScopeProxy    = "github.com/meshproof/meshproof/proxy"
	ScopeUpstream = "github.com/meshproof/meshproof/faults"
)

// DefaultServiceName is the resource's service.name when Config.ServiceName is empty.
const DefaultServiceName = "meshproof"

// DefaultMaxSpans bounds what a Collector keeps: past it spans are counted as dropped.
const DefaultMaxSpans = 1 << 20

// Propagator is the W3C trace-context propagator every component uses (traceparent, tracestate).
func Propagator() propagation.TextMapPropagator { return propagation.TraceContext{} }

// Config configures a run's TracerProvider.
type Config struct {
	// ServiceName is the resource's service.name; default "meshproof".
	ServiceName string
	// SampleRatio is the share of new traces (root spans) that are recorded, in (0, 1]; 0 means the
	// default 1.0. Child spans follow their parent's decision (ParentBased).
	SampleRatio float64
	// OTLPEndpoint, when set, exports every span over OTLP/HTTP (protobuf) to this URL, e.g.
	// "http://127.0.0.1:4318/v1/traces" (a URL without a path gets /v1/traces).
	OTLPEndpoint string
	// OTLPTimeout bounds each export; 0 = the exporter's default (10s).
	OTLPTimeout time.Duration
	// Collect keeps every span of the run in memory (Provider.Spans), for traces.otlp.json.
	Collect bool
	// MaxSpans bounds the collected spans; 0 = DefaultMaxSpans.
	MaxSpans int
}

// Provider is a run's TracerProvider with its collector.
type Provider struct {
	*sdktrace.TracerProvider
	collector *Collector // nil unless Config.Collect

	// What For's providers share with the run's: the sampler and the span processors.
	sampler    sdktrace.Sampler
	processors []sdktrace.SpanProcessor
	env        *resource.Resource // the attributes OTEL_RESOURCE_ATTRIBUTES names (empty without it)
	mu         sync.Mutex
	children   map[[2]string]*sdktrace.TracerProvider
}

// Service names of the run's own components, as their spans' resources carry them.
const (
	// LoadServiceName is the load generator's service.name.
	LoadServiceName = "meshproof-load"
)

// For returns the TracerProvider of one component of the run: its spans carry the resource
// service.name = service and, when instance is not "", service.instance.id = instance, and go to the
// same collector and exporter as the run's (one trace crosses every component). The providers For
// returns are not shut down on their own: Shutdown of the run's Provider flushes their spans.
func (p *Provider) For(service, instance string) *sdktrace.TracerProvider {
	p.mu.Lock()
	defer p.mu.Unlock()
	key := [2]string{service, instance}
	if tp, ok := p.children[key]; ok {
		return tp
	}
	attrs := []attribute.KeyValue{semconv.ServiceName(service)}
	if instance != "" {
		attrs = append(attrs, semconv.ServiceInstanceID(instance))
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithSampler(p.sampler),
		sdktrace.WithResource(p.resource(attrs...))}
	for _, sp := range p.processors {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	tp := sdktrace.NewTracerProvider(opts...)
	if p.children == nil {
		p.children = map[[2]string]*sdktrace.TracerProvider{}
	}
	p.children[key] = tp
	return tp
}

// New builds a TracerProvider from cfg. Shut it down (Shutdown) when the run ends: that flushes the
// OTLP exporter.
func New(cfg Config) (*Provider, error) {
	ratio := cfg.SampleRatio
	if ratio == 0 {
		ratio = 1
	}
	if !(ratio > 0 && ratio <= 1) {
		return nil, fmt.Errorf("tracing: sample ratio %g: want a number in (0, 1]", cfg.SampleRatio)
	}
	name := cfg.ServiceName
	if name == "" {
		name = DefaultServiceName
	}
	env, err := envResource()
	if err != nil {
		return nil, err
	}
	p := &Provider{sampler: sdktrace.ParentBased(sdktrace.TraceIDRatioBased(ratio)), env: env}
	opts := []sdktrace.TracerProviderOption{
		sdktrace.WithSampler(p.sampler),
		sdktrace.WithResource(p.resource(semconv.ServiceName(name))),
	}
	if cfg.Collect {
		p.collector = NewCollector(cfg.MaxSpans)
		p.processors = append(p.processors, p.collector)
	}
	if cfg.OTLPEndpoint != "" {
		exp, err := NewOTLPHTTPExporter(cfg.OTLPEndpoint, cfg.OTLPTimeout)
		if err != nil {
			return nil, err
		}
		p.processors = append(p.processors, sdktrace.NewBatchSpanProcessor(exp))
	}
	for _, sp := range p.processors {
		opts = append(opts, sdktrace.WithSpanProcessor(sp))
	}
	p.TracerProvider = sdktrace.NewTracerProvider(opts...)
	return p, nil
}

// EnvResourceAttributes is the OpenTelemetry environment variable whose key=value attributes every
// span's resource carries (the SDK's resource.WithFromEnv: comma-separated, values percent-decoded).
const EnvResourceAttributes = "OTEL_RESOURCE_ATTRIBUTES"

// envResource parses OTEL_RESOURCE_ATTRIBUTES; a malformed value is an error naming it.
func envResource() (*resource.Resource, error) {
	v := os.Getenv(EnvResourceAttributes)
	if strings.TrimSpace(v) == "" {
		return resource.Empty(), nil
	}
	// Only the attributes: OTEL_SERVICE_NAME is each command's own business (the components of a
	// run each have their service.name).
	var attrs []attribute.KeyValue
	for _, pair := range strings.Split(v, ",") {
		key, value, ok := strings.Cut(pair, "=")
		key = strings.TrimSpace(key)
		if !ok || key == "" {
			return nil, fmt.Errorf("tracing: %s=%q: %q is not key=value", EnvResourceAttributes, v, strings.TrimSpace(pair))
		}
		decoded, err := url.PathUnescape(strings.TrimSpace(value))
		if err != nil {
			return nil, fmt.Errorf("tracing: %s=%q: the value of %s: %v", EnvResourceAttributes, v, key, err)
		}
		attrs = append(attrs, attribute.String(key, decoded))
	}
	return resource.NewSchemaless(attrs...), nil
}

// resource is the resource of a provider's spans: attrs over OTEL_RESOURCE_ATTRIBUTES's (attrs win:
// service.name and service.instance.id are the component's).
func (p *Provider) resource(attrs ...attribute.KeyValue) *resource.Resource {
	ours := resource.NewWithAttributes(semconv.SchemaURL, attrs...)
	merged, err := resource.Merge(p.env, ours)
	if err != nil { // only on conflicting schema URLs, which a schemaless resource cannot have
		return ours
	}
	return merged
}

// Spans returns the spans collected so far, in the order they ended (nil without Config.Collect).
func (p *Provider) Spans() []sdktrace.ReadOnlySpan {
	if p.collector == nil {
		return nil
	}
	return p.collector.Spans()
}

// Dropped is how many ended spans the collector did not keep (over Config.MaxSpans).
func (p *Provider) Dropped() int {
	if p.collector == nil {
		return 0
	}
	return p.collector.Dropped()
}

// NewOTLPHTTPExporter returns an OTLP/HTTP (protobuf) span exporter sending to endpoint, a URL such as
// "http://127.0.0.1:4318/v1/traces"; a URL without a path gets /v1/traces.
func NewOTLPHTTPExporter(endpoint string, timeout time.Duration) (sdktrace.SpanExporter, error) {
	u, err := url.Parse(endpoint)
	if err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "" {
		return nil, fmt.Errorf("tracing: OTLP endpoint %q: want an http:// or https:// URL", endpoint)
	}
	if strings.Trim(u.Path, "/") == "" {
		u.Path = "/v1/traces"
	}
	opts := []otlptracehttp.Option{otlptracehttp.WithEndpointURL(u.String())}
	if timeout > 0 {
		opts = append(opts, otlptracehttp.WithTimeout(timeout))
	}
	// New only builds the client: nothing is dialled until the first export.
	return otlptracehttp.New(context.Background(), opts...)
}

// Collector is a span processor that keeps the ended spans of a run in memory, up to a limit.
type Collector struct {
	max int

	mu      sync.Mutex
	spans   []sdktrace.ReadOnlySpan
	dropped int
}

var _ sdktrace.SpanProcessor = (*Collector)(nil)

// NewCollector keeps up to max spans (0 = DefaultMaxSpans).
func NewCollector(max int) *Collector {
	if max <= 0 {
		max = DefaultMaxSpans
	}
	return &Collector{max: max}
}

// OnStart does nothing: only ended spans are kept.
func (c *Collector) OnStart(context.Context, sdktrace.ReadWriteSpan) {}

// OnEnd keeps a sampled span.
func (c *Collector) OnEnd(s sdktrace.ReadOnlySpan) {
	if !s.SpanContext().IsSampled() {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.spans) >= c.max {
		c.dropped++
		return
	}
	c.spans = append(c.spans, s)
}

// Shutdown does nothing: the spans stay readable.
func (c *Collector) Shutdown(context.Context) error { return nil }

// ForceFlush does nothing: spans are kept as they end.
func (c *Collector) ForceFlush(context.Context) error { return nil }

// Spans returns a copy of the kept spans, in the order they ended.
func (c *Collector) Spans() []sdktrace.ReadOnlySpan {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]sdktrace.ReadOnlySpan(nil), c.spans...)
}

// Dropped is how many spans ended over the limit.
func (c *Collector) Dropped() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.dropped
}
