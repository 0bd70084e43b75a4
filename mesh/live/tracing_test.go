package live_test

import (
	"context"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy"
)

var _ = Describe("Run with tracing", func() {
	It("traces every request from the load generator through the proxy to the upstreams, in one trace each", func() {
		var spans []sdktrace.ReadOnlySpan
		rec, err := live.Run(context.Background(), parse(scenario), nil, plan.Options{Tracing: &plan.Tracing{
			Spans: func(s []sdktrace.ReadOnlySpan) { spans = s },
		}})
		Expect(err).NotTo(HaveOccurred())
		byTrace := map[trace.TraceID][]sdktrace.ReadOnlySpan{}
		scopes := map[string]int{}
		for _, s := range spans {
			byTrace[s.SpanContext().TraceID()] = append(byTrace[s.SpanContext().TraceID()], s)
			scopes[s.InstrumentationScope().Name]++
		}
		Expect(byTrace).To(HaveLen(len(rec.Samples)))
		Expect(scopes[tracing.ScopeLoad]).To(Equal(len(rec.Samples)))
		var upstreamRequests uint64
		for _, u := range rec.Upstreams {
			upstreamRequests += u.Requests
		}
		Expect(scopes[tracing.ScopeUpstream]).To(BeEquivalentTo(upstreamRequests), "one upstream span per request an instance received")
		Expect(scopes[proxy.TracerName]).To(BeEquivalentTo(len(rec.Samples)+int(upstreamRequests)), "a server span per request, a client span per attempt")
		for _, tr := range byTrace {
			roots := 0
			for _, s := range tr {
				if !s.Parent().IsValid() {
					roots++
					Expect(s.InstrumentationScope().Name).To(Equal(tracing.ScopeLoad))
				}
			}
			Expect(roots).To(Equal(1))
		}
	})

	It("refuses a sample ratio outside (0, 1]", func() {
		rec, err := live.Run(context.Background(), parse(scenario), nil, plan.Options{Tracing: &plan.Tracing{SampleRatio: 2}})
		Expect(err).To(MatchError(ContainSubstring("sample ratio 2")))
		Expect(rec).To(BeNil())
	})
})
