package proxy

import (
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/proxy/policy"
)

// TracerName is the instrumentation scope of the proxy's spans.
const TracerName = "github.com/meshproof/meshproof/proxy"

// Span attributes and events of the proxy (besides the HTTP semantic conventions).
const (
	AttrRequestID = attribute.Key("meshproof.request_id") // server span: the x-request-id
	AttrCluster   = attribute.Key("meshproof.cluster")    // server and attempt spans: the routed cluster
	AttrAttempts  = attribute.Key("meshproof.attempts")   // server span: upstream attempts made
	AttrAttempt   = attribute.Key("meshproof.attempt")    // attempt span: 1 for the first try
	AttrHost      = attribute.Key("meshproof.host")       // attempt span, ejection events: host:port
	AttrOutcome   = attribute.Key("meshproof.outcome")    // attempt span: response, reset, connect_failure, per_try_timeout
	AttrDelay     = attribute.Key("meshproof.delay_ms")   // retry event: the back-off drawn, in ms
	AttrReason    = attribute.Key("meshproof.reason")     // retry event: what the retried attempt ended with; ejection: why
	AttrBreaker   = attribute.Key("meshproof.breaker")    // overflow events: which limit was hit

	EventRetry             = "retry"               // server span: a retry was scheduled after a back-off
	EventOverflow          = "overflow"            // server span: a circuit breaker refused an attempt
	EventRetryOverflow     = "retry_overflow"      // server span: retriable, but the max_retries breaker was full
	EventRetryLimit        = "retry_limit_reached" // server span: retriable, but num_retries were used up
	EventNoHealthyUpstream = "no_healthy_upstream" // server span: no host could be picked
	// Attempt spans get an event named after each outlier-detection decision its outcome caused
	// (policy.EventEjected "ejected", "detected_not_enforced", "overflow"), with its reason.
)

// tracing is the first layer of a traced listener: it extracts the downstream trace context (W3C),
// samples requests that start a trace, and wraps each sampled request in a SERVER span. The router adds
// the attempt spans and the decision events (see forward).
type tracing struct {
	next     http.Handler
	tracer   trace.Tracer
	prop     propagation.TextMapPropagator
	sampling float64 // share of requests without a trace context that are traced, in [0, 1]
	seeds    seeds
}

var _ http.Handler = (*tracing)(nil)

func newTracing(next http.Handler, tracer trace.Tracer, prop propagation.TextMapPropagator, sampling float64, sd seeds) *tracing {
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	return &tracing{next: next, tracer: tracer, prop: prop, sampling: sampling, seeds: sd}
}

// sampled draws whether a request that starts a trace is traced, from the request's own stream.
func (t *tracing) sampled(r *http.Request) bool {
	var rng rand.PCG
	t.seeds.request(&rng, headerValue(r.Header, hdrRequestID), saltTracing)
	return float64(rng.Uint64()>>11)/(1<<53) < t.sampling
}

func (t *tracing) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	ctx := t.prop.Extract(r.Context(), headerCarrier(r.Header))
	// Like Envoy's random_sampling: a request that continues a trace follows its caller's decision;
	// one that starts a trace is traced at the listener's rate.
	if t.sampling < 1 && !trace.SpanContextFromContext(ctx).IsValid() && !t.sampled(r) {
		t.next.ServeHTTP(w, r)
		return
	}
	ctx, span := t.tracer.Start(ctx, "proxy "+r.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(r.Method),
			semconv.URLPath(r.URL.Path),
			semconv.URLScheme("http"),
		))
	sw := &statusWriter{ResponseWriter: w}
	defer func() {
		p := recover()
		switch {
		case sw.status > 0:
			span.SetAttributes(semconv.HTTPResponseStatusCode(sw.status))
			if sw.status >= 500 { // a 4xx is the client's error: not an error of a server span
				span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(sw.status)))
				span.SetStatus(codes.Error, "")
			}
		case p != nil || ctx.Err() != nil:
			span.SetAttributes(semconv.ErrorTypeKey.String("aborted"))
			span.SetStatus(codes.Error, "aborted")
		}
		if p != nil && sw.status > 0 {
			span.SetStatus(codes.Error, "response aborted mid-body")
		}
		span.End()
		if p != nil {
			panic(p)
		}
	}()
	t.next.ServeHTTP(sw, r.WithContext(ctx))
}

// headerCarrier is propagation.HeaderCarrier that finds the W3C trace context names without
// canonicalizing them on every request (which allocates for names net/textproto does not know).
type headerCarrier http.Header

func (c headerCarrier) Get(key string) string {
	switch key {
	case "traceparent":
		return headerValue(http.Header(c), "Traceparent")
	case "tracestate":
		return headerValue(http.Header(c), "Tracestate")
	case "baggage":
		return headerValue(http.Header(c), "Baggage")
	}
	return http.Header(c).Get(key)
}

func (c headerCarrier) Set(key, value string) { http.Header(c).Set(key, value) }
func (c headerCarrier) Keys() []string        { return propagation.HeaderCarrier(c).Keys() }

// statusWriter remembers the response status for the server span.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 && code >= 200 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

// Unwrap lets http.NewResponseController reach the connection (deadlines, flushes).
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// attemptOutcome records an attempt's outcome on its span, and the outlier-detection decisions it
// caused (an ejection above all) as events. Per the conventions for client spans, a 4xx or 5xx is an
// error, as is any failure to get a response.
func attemptOutcome(span trace.Span, o policy.Outcome, evs []policy.Event, hosts []*host) {
	span.SetAttributes(AttrOutcome.String(o.Kind.String()))
	if o.Kind == policy.Response {
		span.SetAttributes(semconv.HTTPResponseStatusCode(o.Status))
		if o.Status >= 400 {
			span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(o.Status)))
			span.SetStatus(codes.Error, "")
		}
	} else {
		span.SetAttributes(semconv.ErrorTypeKey.String(o.Kind.String()))
		span.SetStatus(codes.Error, o.Kind.String())
	}
	for _, e := range evs {
		span.AddEvent(e.Kind, trace.WithTimestamp(e.Time), trace.WithAttributes(
			AttrHost.String(hosts[e.Host].addr), AttrReason.String(e.Reason)))
	}
}

// retryEvent marks a scheduled retry on the server span: what the attempt ended with and the back-off.
func retryEvent(span trace.Span, o policy.Outcome, n int, delay time.Duration) {
	span.AddEvent(EventRetry, trace.WithAttributes(AttrAttempt.Int(n), AttrReason.String(OutcomeReason(o)),
		AttrDelay.Float64(float64(delay)/float64(time.Millisecond))))
}
