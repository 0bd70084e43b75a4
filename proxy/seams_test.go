package proxy_test

import (
	"context"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("The proxy's randomness (Options.Rand)", func() {
	// backoffs runs the requests, in this order, through a proxy whose one host always answers 503 and
	// whose route retries twice, and returns each request's back-off delays (ms) from its retry events.
	backoffs := func(src func() proxy.Options, ids []string) map[string][]float64 {
		GinkgoHelper()
		exp := tracetest.NewInMemoryExporter()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(exp), sdktrace.WithSampler(sdktrace.AlwaysSample()))
		DeferCleanup(func() { _ = tp.Shutdown(context.Background()) })
		opts := src()
		opts.TracerProvider = tp
		rp := retries(2, "5xx")
		rp.BaseInterval, rp.MaxInterval = 10*time.Millisecond, 100*time.Millisecond // draws in [0, 10) and [0, 20) ms
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", rp)},
			clusters: []config.Cluster{cluster("backend", newUpstream(status(503)).addr())}, opts: opts})
		for _, id := range ids {
			req, _ := http.NewRequest("GET", url+"/", nil)
			req.Header.Set("x-request-id", id)
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(503))
		}
		got := map[string][]float64{}
		for _, sp := range exp.GetSpans() {
			var id string
			for _, a := range sp.Attributes {
				if a.Key == proxy.AttrRequestID {
					id = a.Value.AsString()
				}
			}
			for _, e := range sp.Events {
				if e.Name != proxy.EventRetry {
					continue
				}
				for _, a := range e.Attributes {
					if a.Key == proxy.AttrDelay {
						got[id] = append(got[id], a.Value.AsFloat64())
					}
				}
			}
		}
		Expect(got).To(HaveLen(len(ids)))
		return got
	}
	ids := []string{"mp-1", "mp-2", "mp-3", "mp-4", "mp-5", "mp-6"}
	reversed := []string{"mp-6", "mp-5", "mp-4", "mp-3", "mp-2", "mp-1"}
	seeded := func(seed uint64) func() proxy.Options {
		return func() proxy.Options { return proxy.Options{Rand: proxy.SeededRand(seed, "edge")} }
	}

	It("draws the same back-offs for a request id from the same seed, whatever order the requests come in", func() {
		first := backoffs(seeded(7), ids)
		Expect(backoffs(seeded(7), reversed)).To(Equal(first))
		Expect(backoffs(seeded(8), ids)).NotTo(Equal(first), "another seed, other draws")
	})

	It("draws at random without a source", func() {
		unseeded := func() proxy.Options { return proxy.Options{} }
		Expect(backoffs(unseeded, ids)).NotTo(Equal(backoffs(unseeded, ids)))
	})
})
