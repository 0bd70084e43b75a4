package proxy

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net/http"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/policy"
)

// Request mirroring (RouteAction.request_mirror_policies), as Envoy's router does it: the policies that
// apply are drawn when the request is routed (Filter::decodeHeaders with FilterUtility::shouldShadow,
// source/common/router/router.cc) and, once the whole request is in, each copy is handed to the shadow
// writer (Filter::maybeDoShadowing; ShadowWriterImpl::shadow, shadow_writer_impl.cc): fire and forget,
// with the Host suffixed "-shadow", bounded by the route timeout, its response read and dropped. A
// mirror never delays, fails or changes the request it copies.

// drawMirrors returns the mirror policies that apply to the request. Envoy passes every policy the same
// random value (the stream id) to featureEnabled, which takes it modulo the fraction's denominator; here
// it is the request's own stream for mirrors, so the router's draws (back-off, hosts) are unchanged.
func (f *forward) drawMirrors(reqID string) []config.MirrorPolicy {
	ms := f.route.Action.MirrorPolicies
	if len(ms) == 0 || f.r.Method == http.MethodConnect {
		return nil
	}
	var rng rand.PCG
	f.rt.seeds.request(&rng, reqID, saltMirror)
	draw := rng.Uint64()
	var out []config.MirrorPolicy
	for _, m := range ms {
		if m.Fraction.Denominator > 0 && draw%uint64(m.Fraction.Denominator) < uint64(m.Fraction.Numerator) {
			out = append(out, m)
		}
	}
	return out
}

// mirror sends a copy of the request to the cluster of each policy in ms. The copy is the request as it
// goes upstream on its first attempt — its headers after the route's mutations and rewrites, with the
// router's x-request-id, x-forwarded-proto, x-envoy-expected-rq-timeout-ms (and x-envoy-attempt-count
// 1, x-envoy-original-path when the route adds them) — and its whole body, held in the buffer.
func (f *forward) mirror(ms []config.MirrorPolicy, reqID string, timeout time.Duration) {
	hdr := f.hdr.Clone() // the downstream's header map is reused by its connection after the request
	extra := http.Header{hdrRequestID: {reqID}, hdrForwardedProto: {"http"}}
	if f.origPath != "" {
		extra[hdrOriginalPath] = []string{f.origPath}
	}
	if f.vh.IncludeRequestAttemptCount {
		extra[hdrAttemptCount] = []string{"1"}
	}
	if f.grpcTimeout != "" {
		extra[hdrGrpcTimeout] = []string{f.grpcTimeout}
	}
	if ms := ExpectedTimeoutMs(0, timeout, 0); ms > 0 {
		extra[hdrExpectedTimeout] = []string{strconv.FormatInt(ms, 10)}
	}
	for _, m := range ms {
		cl := f.rt.clusters[m.Cluster]
		if cl == nil {
			// A static route's mirror names a cluster that exists (config validation); one from RDS may
			// not (its clusters are not checked): Envoy's Filter::onRequestComplete skips a shadow whose
			// cluster is not found (router.cc).
			continue
		}
		out := &h1.Request{Method: f.r.Method, URI: f.uri, Host: shadowHost(f.host), Header: hdr,
			Omit: routerHeaderSet, Extra: extra.Clone(), Body: f.body.buf}
		var span trace.Span
		if f.span != nil {
			span = f.mirrorSpan(m.TraceSampled, out)
		}
		rng := f.rt.seeds.stream(reqID+"\x00"+m.Cluster, saltMirror)
		go f.rt.shadow(cl, out, timeout, rng, span)
	}
}

// mirrorSpan propagates the trace to a mirror: a CLIENT span "mirror", child of the request's, when
// trace_sampled (Envoy's AsyncClient child span, setChildSpanName("mirror"), setSampled); else the
// request's span context marked not sampled.
func (f *forward) mirrorSpan(sampled bool, out *h1.Request) trace.Span {
	if !sampled {
		sc := f.span.SpanContext()
		ctx := trace.ContextWithSpanContext(context.Background(), sc.WithTraceFlags(sc.TraceFlags().WithSampled(false)))
		f.rt.prop.Inject(ctx, propagation.HeaderCarrier(out.Extra))
		return nil
	}
	ctx, span := f.rt.tracer.Start(trace.ContextWithSpan(context.Background(), f.span), "mirror", trace.WithSpanKind(trace.SpanKindClient))
	f.rt.prop.Inject(ctx, propagation.HeaderCarrier(out.Extra))
	return span
}

// shadowHost is the Host of a mirror, as Envoy's ShadowWriterImpl (newHost, shadow_writer_impl.cc):
// "-shadow" after the host name, before its port.
func shadowHost(host string) string {
	if strings.Count(host, ":") == 1 { // not an IPv6 literal
		name, port, _ := strings.Cut(host, ":")
		return name + "-shadow:" + port
	}
	return host + "-shadow"
}

// shadow sends one mirror to a host of cl and drops its response. It takes the cluster's breakers and
// counts its stats like any request of the cluster (Envoy sends it through the cluster's async client,
// a router of its own), but it is never retried and answers nobody.
func (rt *router) shadow(cl *cluster, out *h1.Request, timeout time.Duration, rng *rand.PCG, span trace.Span) {
	if span != nil {
		defer span.End()
	}
	ctx, cancel := context.WithCancelCause(context.Background())
	defer cancel(nil)
	if timeout > 0 {
		t := rt.clk.AfterFunc(timeout, func() { cancel(errRouteTimeout) })
		defer t.Stop()
	}
	// The host, then its pool, as for any attempt (see forward.try): the pool's breakers decide, and
	// the mirror takes its max_requests slot once it has its connection.
	cl = cl.newest() // as an attempt does (see forward.try)
	index := cl.pick(rng.Uint64(), nil, nil, rng)
	if index < 0 {
		cl.st.cxNoneHealthy.Inc()
		return
	}
	h := cl.hosts[index]
	att := attachment{cl: cl, host: h}
	out.Attach, out.Detach = att.take, att.release
	defer att.release()
	began := rt.clk.Now()
	resp, err := cl.upstreams[index].RoundTrip(ctx, out)
	if err != nil && !att.attached && !errors.As(err, new(*connectError)) {
		if errors.Is(err, h1.ErrOverflow) {
			cl.st.rqPendingOverflow.Inc()
		}
		return // it never had its connection: nothing reached the host
	}
	var o policy.Outcome
	switch {
	case err == nil:
		code := resp.StatusCode // the response is the connection's: read before it goes back to the pool
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		cl.st.rqTime.Record(rt.clk.Since(began))
		o = policy.Outcome{Kind: policy.Response, Status: code}
		if code >= 500 {
			h.rqError.Add(1)
		} else {
			h.rqSuccess.Add(1)
		}
		cl.st.response(code)
		if err != nil && context.Cause(ctx) == errRouteTimeout {
			cl.st.rqTimeout.Inc()
		}
	case errors.As(err, new(*connectError)):
		o = policy.Outcome{Kind: policy.ConnectFailure, BeforeRequest: true}
		h.rqError.Add(1)
	case context.Cause(ctx) == errRouteTimeout:
		o = policy.Outcome{Kind: policy.PerTryTimeout}
		cl.st.rqTimeout.Inc()
		cl.st.rqTxReset.Inc()
		h.rqTimeout.Add(1)
		h.rqError.Add(1)
	default:
		o = policy.Outcome{Kind: policy.Reset}
		cl.st.rqRxReset.Inc()
		h.rqError.Add(1)
	}
	cl.recordOutcome(index, o)
}
