package load

import (
	"context"
	"net"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Span attributes of the load generator's own (not in the semantic conventions).
const (
	AttrSeq       = attribute.Key("meshproof.seq")        // the request's Seq
	AttrRequestID = attribute.Key("meshproof.request_id") // its x-request-id, "mp-<seq>"
	AttrPhase     = attribute.Key("meshproof.phase")      // the phase it was scheduled in
)

// EventSent marks, on a request's span, the moment it was actually sent: the span itself starts at the
// intended send time, so its duration is the coordinated-omission-corrected latency.
const EventSent = "sent"

// headerPairs collects injected headers as name, value pairs.
type headerPairs []string

var _ propagation.TextMapCarrier = (*headerPairs)(nil)

func (h *headerPairs) Get(key string) string {
	for i := 0; i+1 < len(*h); i += 2 {
		if (*h)[i] == key {
			return (*h)[i+1]
		}
	}
	return ""
}

func (h *headerPairs) Set(key, value string) { *h = append(*h, key, value) }

func (h *headerPairs) Keys() []string {
	keys := make([]string, 0, len(*h)/2)
	for i := 0; i < len(*h); i += 2 {
		keys = append(keys, (*h)[i])
	}
	return keys
}

// startSpan starts the root CLIENT span of one request, at its intended send time (closed loop: now),
// and returns the context to send with and the trace headers to add.
func (g *gen) startSpan(ctx context.Context, j job) (context.Context, trace.Span, []string) {
	c := g.p.cfg
	start := time.Now()
	if j.intended >= 0 {
		start = g.start.Add(j.intended)
	}
	t := g.p.target
	host, portStr, _ := net.SplitHostPort(t.addr)
	port, _ := strconv.Atoi(portStr)
	id := "mp-" + strconv.FormatUint(j.seq, 10)
	ctx, span := c.Tracer.Start(ctx, "load "+j.req.method, trace.WithNewRoot(), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithTimestamp(start), trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(j.req.method),
			semconv.URLFull(j.req.url),
			semconv.ServerAddress(host),
			semconv.ServerPort(port),
			AttrSeq.Int64(int64(j.seq)),
			AttrRequestID.String(id),
			AttrPhase.String(g.p.phases[j.phase].Name),
		))
	prop := c.Propagator
	if prop == nil {
		prop = propagation.TraceContext{}
	}
	var hdr headerPairs
	prop.Inject(ctx, &hdr)
	return ctx, span, hdr
}

// endSpan records the request's outcome on its span and ends it when the response has been read. Per
// the HTTP conventions for client spans, a 4xx or 5xx is an error, as is any failure to get a response.
func (g *gen) endSpan(span trace.Span, s record.Sample, sent time.Time, err error) {
	span.AddEvent(EventSent, trace.WithTimestamp(sent))
	if s.Status > 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(s.Status))
	}
	switch {
	case err != nil:
		span.SetAttributes(semconv.ErrorTypeKey.String(s.Error))
		span.SetStatus(codes.Error, err.Error())
	case s.Status >= 400:
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(s.Status)))
		span.SetStatus(codes.Error, "")
	}
	span.End()
}
