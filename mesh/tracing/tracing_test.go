package tracing_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// newProvider is a TracerProvider recording every span in memory (never the global provider).
func newProvider() (*sdktrace.TracerProvider, *tracetest.SpanRecorder) {
	sr := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(sr))
	DeferCleanup(func() { _ = tp.Shutdown(context.Background()) })
	return tp, sr
}

// startProxy runs a proxy with one listener routing everything to the endpoints, retrying 5xx once.
// It returns the listener's URL and a function that shuts the proxy down: once it returns every
// request has finished, and so every span has ended.
func startProxy(tp trace.TracerProvider, cl config.Cluster) (string, func()) {
	GinkgoHelper()
	rp := &config.RetryPolicy{RetryOn: []string{"5xx"}, NumRetries: 1, BaseInterval: time.Millisecond, MaxInterval: 2 * time.Millisecond}
	cfg := &config.Bootstrap{
		Listeners: []config.Listener{{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress",
			Routes: config.RouteConfig{Name: "r", VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"},
				Routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, Action: config.RouteAction{Cluster: cl.Name, Timeout: 10 * time.Second, RetryPolicy: rp}}}}}}}},
		Clusters: []config.Cluster{cl},
	}
	opts := proxy.Options{}
	if tp != nil {
		opts.TracerProvider, opts.Propagator = tp, tracing.Propagator()
	}
	srv, err := proxy.New(cfg, opts)
	Expect(err).NotTo(HaveOccurred())
	Expect(srv.Start()).To(Succeed())
	DeferCleanup(srv.Close)
	return "http://" + srv.ListenerAddr("edge"), func() { Expect(srv.Shutdown(context.Background())).To(Succeed()) }
}

func attr(s sdktrace.ReadOnlySpan, key attribute.Key) attribute.Value {
	for _, kv := range s.Attributes() {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

func hasAttr(s sdktrace.ReadOnlySpan, key attribute.Key) bool {
	return attr(s, key).Type() != attribute.EMPTY
}

func byScopeKind(spans []sdktrace.ReadOnlySpan, scope string, kind trace.SpanKind) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range spans {
		if s.InstrumentationScope().Name == scope && s.SpanKind() == kind {
			out = append(out, s)
		}
	}
	return out
}

func eventNamed(s sdktrace.ReadOnlySpan, name string) (sdktrace.Event, bool) {
	for _, e := range s.Events() {
		if e.Name == name {
			return e, true
		}
	}
	return sdktrace.Event{}, false
}

func eventAttr(e sdktrace.Event, key attribute.Key) attribute.Value {
	for _, kv := range e.Attributes {
		if kv.Key == key {
			return kv.Value
		}
	}
	return attribute.Value{}
}

// headerRecorder is an upstream that keeps the trace headers of the requests it receives.
type headerRecorder struct {
	mu      sync.Mutex
	headers []http.Header
}

func (h *headerRecorder) start() string {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		h.headers = append(h.headers, r.Header.Clone())
		h.mu.Unlock()
		_, _ = io.WriteString(w, "ok")
	}))
	DeferCleanup(srv.Close)
	return srv.Listener.Addr().String()
}

func (h *headerRecorder) received() []http.Header {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]http.Header(nil), h.headers...)
}

var _ = Describe("Traces of a run", func() {
	var (
		tp *sdktrace.TracerProvider
		sr *tracetest.SpanRecorder
	)
	BeforeEach(func() { tp, sr = newProvider() })

	Context("a client request whose first attempt gets a 503 and whose retry succeeds", func() {
		var spans []sdktrace.ReadOnlySpan

		BeforeEach(func() {
			// The upstream aborts its first request with 503; outlier detection ejects it at once
			// (consecutive_5xx: 1), and with no healthy host left the retry goes to it in panic mode.
			up, err := faults.NewUpstream(faults.UpstreamConfig{Service: "backend", Seed: 1,
				Faults: []faults.Fault{{Name: "first-503", First: 1, Abort: &faults.Abort{Status: 503, Percent: 100}}},
				Tracer: tp.Tracer(tracing.ScopeUpstream), Propagator: tracing.Propagator()})
			Expect(err).NotTo(HaveOccurred())
			Expect(up.Start("127.0.0.1:0")).To(Succeed())
			DeferCleanup(up.Close)
			cl := config.NewCluster("backend", config.Endpoint{Address: up.Addr(), Weight: 1})
			od := policy.DefaultOutlierConfig()
			od.Consecutive5xx, od.MaxEjectionPercent = 1, 100
			cl.Outlier = &od
			url, stop := startProxy(tp, cl)

			res, err := load.Generate(context.Background(), load.Config{URL: url + "/checkout", Rate: 1, Duration: time.Second,
				Tracer: tp.Tracer(tracing.ScopeLoad), Propagator: tracing.Propagator(), KeepSamples: true})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Samples).To(HaveLen(1))
			Expect(res.Samples[0].Status).To(Equal(200))
			stop()
			Expect(up.Close()).To(Succeed()) // waits for its handlers: their spans have ended
			spans = sr.Ended()
		})

		It("records one trace rooted at the load generator's span", func() {
			roots := byScopeKind(spans, tracing.ScopeLoad, trace.SpanKindClient)
			Expect(roots).To(HaveLen(1))
			root := roots[0]
			Expect(root.Parent().IsValid()).To(BeFalse())
			Expect(root.Name()).To(Equal("load GET"))
			Expect(attr(root, "http.response.status_code").AsInt64()).To(BeEquivalentTo(200))
			Expect(attr(root, load.AttrRequestID).AsString()).To(Equal("mp-1"))
			for _, s := range spans {
				Expect(s.SpanContext().TraceID()).To(Equal(root.SpanContext().TraceID()), "span %q", s.Name())
			}
			Expect(spans).To(HaveLen(1 + 1 + 2 + 2))
		})

		It("has exactly one proxy server span, child of the root, and two attempt spans under it", func() {
			root := byScopeKind(spans, tracing.ScopeLoad, trace.SpanKindClient)[0]
			servers := byScopeKind(spans, proxy.TracerName, trace.SpanKindServer)
			Expect(servers).To(HaveLen(1))
			server := servers[0]
			Expect(server.Parent().SpanID()).To(Equal(root.SpanContext().SpanID()))
			Expect(server.Parent().IsRemote()).To(BeTrue())
			Expect(attr(server, "http.request.method").AsString()).To(Equal("GET"))
			Expect(attr(server, "url.path").AsString()).To(Equal("/checkout"))
			Expect(attr(server, "url.scheme").AsString()).To(Equal("http"))
			Expect(attr(server, "http.response.status_code").AsInt64()).To(BeEquivalentTo(200))
			Expect(attr(server, proxy.AttrAttempts).AsInt64()).To(BeEquivalentTo(2))
			Expect(server.Status().Code).NotTo(Equal(codes.Error))

			retry, ok := eventNamed(server, proxy.EventRetry)
			Expect(ok).To(BeTrue(), "the server span has a retry event")
			Expect(eventAttr(retry, proxy.AttrReason).AsString()).To(Equal("503"))
			Expect(eventAttr(retry, proxy.AttrDelay).AsFloat64()).To(BeNumerically("<", 2))

			attempts := byScopeKind(spans, proxy.TracerName, trace.SpanKindClient)
			Expect(attempts).To(HaveLen(2))
			for i, a := range attempts {
				Expect(a.Parent().SpanID()).To(Equal(server.SpanContext().SpanID()))
				Expect(attr(a, proxy.AttrAttempt).AsInt64()).To(BeEquivalentTo(i + 1))
				Expect(attr(a, "server.address").AsString()).To(Equal("127.0.0.1"))
				Expect(hasAttr(a, "server.port")).To(BeTrue())
				Expect(attr(a, "url.full").AsString()).To(HavePrefix("http://127.0.0.1:"))
				Expect(attr(a, "url.full").AsString()).To(HaveSuffix("/checkout"))
				Expect(attr(a, "http.request.method").AsString()).To(Equal("GET"))
			}
			Expect(hasAttr(attempts[0], "http.request.resend_count")).To(BeFalse())
			Expect(attr(attempts[1], "http.request.resend_count").AsInt64()).To(BeEquivalentTo(1))
			Expect(attr(attempts[0], "http.response.status_code").AsInt64()).To(BeEquivalentTo(503))
			Expect(attempts[0].Status().Code).To(Equal(codes.Error))
			Expect(attr(attempts[1], "http.response.status_code").AsInt64()).To(BeEquivalentTo(200))

			ejected, ok := eventNamed(attempts[0], policy.EventEjected)
			Expect(ok).To(BeTrue(), "the first attempt's 503 ejected the host")
			Expect(eventAttr(ejected, proxy.AttrReason).AsString()).To(Equal("consecutive_5xx"))
			_, ok = eventNamed(attempts[1], policy.EventEjected)
			Expect(ok).To(BeFalse())
		})

		It("makes each attempt the parent of an upstream server span, the first carrying the abort", func() {
			attempts := byScopeKind(spans, proxy.TracerName, trace.SpanKindClient)
			ups := byScopeKind(spans, tracing.ScopeUpstream, trace.SpanKindServer)
			Expect(ups).To(HaveLen(2))
			child := map[trace.SpanID]sdktrace.ReadOnlySpan{}
			for _, u := range ups {
				child[u.Parent().SpanID()] = u
			}
			first, second := child[attempts[0].SpanContext().SpanID()], child[attempts[1].SpanContext().SpanID()]
			Expect(first).NotTo(BeNil())
			Expect(second).NotTo(BeNil())

			Expect(attr(first, "http.response.status_code").AsInt64()).To(BeEquivalentTo(503))
			Expect(attr(first, faults.AttrFaultRules).AsStringSlice()).To(Equal([]string{"first-503"}))
			Expect(attr(first, faults.AttrFaultKinds).AsStringSlice()).To(Equal([]string{faults.KindAbort}))
			fault, ok := eventNamed(first, faults.EventFault)
			Expect(ok).To(BeTrue())
			Expect(eventAttr(fault, faults.AttrFaultRule).AsString()).To(Equal("first-503"))
			Expect(eventAttr(fault, faults.AttrFaultKind).AsString()).To(Equal(faults.KindAbort))
			Expect(eventAttr(fault, faults.AttrFaultDetail).AsString()).To(Equal("503"))
			Expect(first.Status().Code).To(Equal(codes.Error))

			Expect(attr(second, "http.response.status_code").AsInt64()).To(BeEquivalentTo(200))
			Expect(second.Events()).To(BeEmpty())
			Expect(attr(second, faults.AttrInstance).AsString()).To(Equal("backend/0"))
		})

		It("writes traces.otlp.json whose lines parse back into export requests holding every span", func() {
			path := filepath.Join(GinkgoT().TempDir(), tracing.FileOTLP)
			Expect(tracing.WriteFile(path, spans)).To(Succeed())
			reqs, err := tracing.ReadFile(path)
			Expect(err).NotTo(HaveOccurred())
			Expect(reqs).To(HaveLen(1))
			var got []*tracepb.Span
			scopes := map[string]int{}
			for _, rs := range reqs[0].GetResourceSpans() {
				for _, ss := range rs.GetScopeSpans() {
					scopes[ss.GetScope().GetName()] += len(ss.GetSpans())
					got = append(got, ss.GetSpans()...)
				}
			}
			Expect(got).To(HaveLen(len(spans)))
			Expect(scopes).To(Equal(map[string]int{tracing.ScopeLoad: 1, proxy.TracerName: 3, tracing.ScopeUpstream: 2}))
			ids := map[string]bool{}
			for _, s := range spans {
				sid := s.SpanContext().SpanID()
				ids[string(sid[:])] = true
			}
			root := byScopeKind(spans, tracing.ScopeLoad, trace.SpanKindClient)[0]
			tid := root.SpanContext().TraceID()
			for _, s := range got {
				Expect(ids).To(HaveKey(string(s.GetSpanId())), "span %q round-trips its ID", s.GetName())
				Expect(s.GetTraceId()).To(Equal(tid[:]))
				Expect(s.GetStartTimeUnixNano()).To(BeNumerically("<=", s.GetEndTimeUnixNano()))
				if s.GetName() == "load GET" {
					Expect(s.GetParentSpanId()).To(BeEmpty())
					Expect(s.GetKind()).To(Equal(tracepb.Span_SPAN_KIND_CLIENT))
				} else {
					Expect(s.GetParentSpanId()).To(HaveLen(8))
				}
			}
		})

		It("encodes IDs as hex, as OTLP/JSON requires", func() {
			line, err := tracing.MarshalOTLPJSON(tracing.ToOTLP(spans))
			Expect(err).NotTo(HaveOccurred())
			root := byScopeKind(spans, tracing.ScopeLoad, trace.SpanKindClient)[0]
			Expect(string(line)).To(ContainSubstring(`"traceId":"` + root.SpanContext().TraceID().String() + `"`))
			Expect(string(line)).To(ContainSubstring(`"spanId":"` + root.SpanContext().SpanID().String() + `"`))
			Expect(string(line)).NotTo(ContainSubstring("\n"))
		})
	})

	It("honours the trace context of a downstream request", func() {
		rec := &headerRecorder{}
		url, stop := startProxy(tp, config.NewCluster("backend", config.Endpoint{Address: rec.start(), Weight: 1}))
		const parent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
		req, err := http.NewRequest(http.MethodGet, url+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("traceparent", parent)
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
		stop()

		spans := sr.Ended()
		server := byScopeKind(spans, proxy.TracerName, trace.SpanKindServer)
		Expect(server).To(HaveLen(1))
		Expect(server[0].SpanContext().TraceID().String()).To(Equal("4bf92f3577b34da6a3ce929d0e0e4736"))
		Expect(server[0].Parent().SpanID().String()).To(Equal("00f067aa0ba902b7"))
		Expect(server[0].Parent().IsRemote()).To(BeTrue())
		attempt := byScopeKind(spans, proxy.TracerName, trace.SpanKindClient)
		Expect(attempt).To(HaveLen(1))
		// The upstream receives the attempt's context, not the downstream one.
		got := rec.received()
		Expect(got).To(HaveLen(1))
		Expect(got[0].Get("traceparent")).To(Equal("00-4bf92f3577b34da6a3ce929d0e0e4736-" + attempt[0].SpanContext().SpanID().String() + "-01"))
	})

	It("adds no traceparent and records no span when no tracing is configured", func() {
		rec := &headerRecorder{}
		url, stop := startProxy(nil, config.NewCluster("backend", config.Endpoint{Address: rec.start(), Weight: 1}))
		up, err := faults.NewUpstream(faults.UpstreamConfig{Service: "plain"})
		Expect(err).NotTo(HaveOccurred())
		Expect(up.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(up.Close)

		res, err := load.Generate(context.Background(), load.Config{URL: url + "/", Rate: 3, Duration: time.Second, KeepSamples: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples).To(HaveLen(3))
		res, err = load.Generate(context.Background(), load.Config{URL: "http://" + up.Addr() + "/", Rate: 1, Duration: time.Second, KeepSamples: true})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples[0].Status).To(Equal(200))
		stop()
		Expect(up.Close()).To(Succeed())

		got := rec.received()
		Expect(got).To(HaveLen(3))
		for _, h := range got {
			Expect(h).NotTo(HaveKey("Traceparent"))
			Expect(h).NotTo(HaveKey("Tracestate"))
		}
		Expect(sr.Ended()).To(BeEmpty())
		Expect(sr.Started()).To(BeEmpty())
	})

	It("injects the load generator's span context over h2c too", func() {
		up, err := faults.NewUpstream(faults.UpstreamConfig{Service: "h2", Tracer: tp.Tracer(tracing.ScopeUpstream)})
		Expect(err).NotTo(HaveOccurred())
		Expect(up.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(up.Close)
		_, err = load.Generate(context.Background(), load.Config{URL: "http://" + up.Addr() + "/x", Rate: 1, Duration: time.Second, H2C: true,
			Tracer: tp.Tracer(tracing.ScopeLoad)})
		Expect(err).NotTo(HaveOccurred())
		Expect(up.Close()).To(Succeed())
		spans := sr.Ended()
		root := byScopeKind(spans, tracing.ScopeLoad, trace.SpanKindClient)
		ups := byScopeKind(spans, tracing.ScopeUpstream, trace.SpanKindServer)
		Expect(root).To(HaveLen(1))
		Expect(ups).To(HaveLen(1))
		Expect(ups[0].Parent().SpanID()).To(Equal(root[0].SpanContext().SpanID()))
		Expect(attr(ups[0], "url.path").AsString()).To(Equal("/x"))
	})
})

var _ = Describe("Provider", func() {
	It("collects the run's spans, samples root spans at the ratio and refuses a ratio outside (0, 1]", func() {
		_, err := tracing.New(tracing.Config{SampleRatio: 1.5})
		Expect(err).To(MatchError(ContainSubstring("sample ratio 1.5")))
		_, err = tracing.New(tracing.Config{OTLPEndpoint: "localhost:4318"})
		Expect(err).To(MatchError(ContainSubstring("want an http:// or https:// URL")))

		p, err := tracing.New(tracing.Config{Collect: true, MaxSpans: 3})
		Expect(err).NotTo(HaveOccurred())
		tr := p.Tracer("t")
		for range 5 {
			_, s := tr.Start(context.Background(), "s")
			s.End()
		}
		Expect(p.Shutdown(context.Background())).To(Succeed())
		Expect(p.Spans()).To(HaveLen(3))
		Expect(p.Dropped()).To(Equal(2))
	})
})

var _ = Describe("Provider.For", func() {
	It("gives each component its own resource, in one trace, into the run's collector", func() {
		p, err := tracing.New(tracing.Config{Collect: true})
		Expect(err).NotTo(HaveOccurred())
		ctx, root := p.For(tracing.LoadServiceName, "").Tracer("t").Start(context.Background(), "client")
		_, child := p.For("cart", "cart/1").Tracer("t").Start(ctx, "server")
		child.End()
		root.End()
		Expect(p.For("cart", "cart/1")).To(BeIdenticalTo(p.For("cart", "cart/1")))
		Expect(p.Shutdown(context.Background())).To(Succeed())

		spans := p.Spans()
		Expect(spans).To(HaveLen(2))
		Expect(spans[0].SpanContext().TraceID()).To(Equal(spans[1].SpanContext().TraceID()))
		attrs := func(s sdktrace.ReadOnlySpan) map[string]string {
			out := map[string]string{}
			for _, kv := range s.Resource().Attributes() {
				out[string(kv.Key)] = kv.Value.AsString()
			}
			return out
		}
		Expect(attrs(spans[0])).To(And(HaveKeyWithValue("service.name", "cart"), HaveKeyWithValue("service.instance.id", "cart/1")))
		Expect(attrs(spans[1])).To(And(HaveKeyWithValue("service.name", "meshproof-load"), Not(HaveKey("service.instance.id"))))
		Expect(tracing.ToOTLP(spans).GetResourceSpans()).To(HaveLen(2))
	})
})
