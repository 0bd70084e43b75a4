package faults

import (
	"context"
	"net/http"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// Span attributes and events of an upstream's SERVER span.
const (
	AttrInstance    = attribute.Key("meshproof.instance")     // "<service>/<instance>"
	AttrSeq         = attribute.Key("meshproof.upstream.seq") // n-th request at the instance
	AttrRequestID   = attribute.Key("meshproof.request_id")   // the request's x-request-id
	AttrOutcome     = attribute.Key("meshproof.outcome")      // status, reset, rst_stream, goaway, hang, reset_mid_body, closed_mid_body, canceled
	AttrFaultRules  = attribute.Key("meshproof.fault.rules")  // the applied faults' rule names, in order
	AttrFaultKinds  = attribute.Key("meshproof.fault.kinds")  // their kinds, in the same order
	AttrFaultRule   = attribute.Key("meshproof.fault.rule")   // on EventFault
	AttrFaultKind   = attribute.Key("meshproof.fault.kind")   // on EventFault
	AttrFaultDetail = attribute.Key("meshproof.fault.detail") // on EventFault, e.g. "503", "50ms"
	EventFault      = "fault"                                 // one per applied fault
)

// headerCarrier reads the trace context from the request's header.
type headerCarrier http.Header

func (h headerCarrier) Get(key string) string { return http.Header(h).Get(key) }
func (h headerCarrier) Set(key, value string) { http.Header(h).Set(key, value) }
func (h headerCarrier) Keys() []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// propagator is the trace-context propagator of the upstream: cfg.Propagator, or W3C trace context.
func (u *Upstream) propagator() propagation.TextMapPropagator {
	if u.cfg.Propagator != nil {
		return u.cfg.Propagator
	}
	return propagation.TraceContext{}
}

// startSpan starts the SERVER span of one request, child of the trace context in ctx (extracted
// from the request), and returns ctx with the span.
func (u *Upstream) startSpan(ctx context.Context, req Request) (context.Context, trace.Span) {
	return u.cfg.Tracer.Start(ctx, "upstream "+req.Method, trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(
			semconv.HTTPRequestMethodKey.String(req.Method),
			semconv.URLPath(req.Path),
			semconv.URLScheme("http"),
			AttrInstance.String(u.id),
			AttrRequestID.String(http.Header(req.Header).Get(HeaderRequestID)),
		))
}

// endSpan records what the upstream did: the faults applied (as attributes and one event each) and
// the outcome, and attrs. A 5xx or an answer other than a response is an error.
func (u *Upstream) endSpan(span trace.Span, d Decision, seq uint64, canceled bool, attrs ...attribute.KeyValue) {
	span.SetAttributes(attrs...)
	if seq > 0 {
		span.SetAttributes(AttrSeq.Int64(int64(seq)))
	}
	if len(d.Applied) > 0 {
		rules := make([]string, len(d.Applied))
		kinds := make([]string, len(d.Applied))
		for i, a := range d.Applied {
			rules[i], kinds[i] = a.Fault, a.Kind
			span.AddEvent(EventFault, trace.WithAttributes(AttrFaultRule.String(a.Fault), AttrFaultKind.String(a.Kind),
				AttrFaultDetail.String(a.Detail)))
		}
		span.SetAttributes(AttrFaultRules.StringSlice(rules), AttrFaultKinds.StringSlice(kinds))
	}
	outcome := ""
	switch {
	case d.Reset:
		outcome = "reset"
	case d.RSTStream != "":
		outcome = "rst_stream"
	case d.GoAway != "":
		outcome = "goaway"
	case d.Hang:
		outcome = "hang"
	case canceled:
		outcome = "canceled"
	case d.Cut == CutReset:
		outcome = "reset_mid_body"
	case d.Cut == CutClose:
		outcome = "closed_mid_body"
	}
	if outcome != "" {
		span.SetAttributes(AttrOutcome.String(outcome), semconv.ErrorTypeKey.String(outcome))
		span.SetStatus(codes.Error, outcome)
		span.End()
		return
	}
	span.SetAttributes(AttrOutcome.String("status"), semconv.HTTPResponseStatusCode(d.Status))
	if d.Status >= 500 {
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(d.Status)))
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// endOverloadSpan ends the span of a request that capacity turned away: a 503 with the reason in
// AttrOverload, a reset (queue full, refuse), or canceled while it waited.
func (u *Upstream) endOverloadSpan(span trace.Span, t ticket, canceled bool) {
	switch t.outcome {
	case admitFull:
		if u.cfg.Capacity.WhenFull == WhenFullRefuse {
			u.endSpan(span, Decision{Reset: true}, 0, canceled, AttrOverload.String(OverloadQueueFull))
			return
		}
		u.endSpan(span, Decision{Status: http.StatusServiceUnavailable}, 0, canceled, AttrOverload.String(OverloadQueueFull))
	case admitTimedOut:
		u.endSpan(span, Decision{Status: http.StatusServiceUnavailable}, 0, canceled, AttrOverload.String(OverloadQueueTimeout))
	default:
		u.endSpan(span, Decision{}, 0, true)
	}
}
