package proxy_test

import (
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

var all = config.Fraction{Numerator: 100, Denominator: 100}

func ptr[T any](v T) *T { return &v }

var _ = Describe("the HTTP fault filter", func() {
	var u *upstream
	BeforeEach(func() { u = newUpstream(ok) })

	startWith := func(f *config.FaultFilter) (*proxy.Server, string) {
		return start(setup{fault: f, routes: []config.Route{prefixRoute("/", "backend", retries(3, "5xx"))},
			clusters: []config.Cluster{cluster("backend", u.addr())}})
	}
	do := func(url string, hdr map[string]string) (int, http.Header, string) {
		GinkgoHelper()
		req, _ := http.NewRequest("GET", url+"/", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}

	It("aborts as a local reply that the router never sees: no upstream request, no retry", func() {
		srv, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 503, Percent: all}})
		code, _, body := do(url, nil)
		Expect(code).To(Equal(503))
		Expect(body).To(Equal("fault filter abort"))
		Expect(u.requests.Load()).To(BeZero())
		Expect(stat(srv, "http.ingress.fault.aborts_injected")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeZero())
		Expect(stat(srv, "cluster.backend.upstream_rq_total")).To(BeZero())
	})

	// FaultFilter::delayDuration (source/extensions/filters/http/fault/fault_filter.cc) returns a delay
	// only when it is above 0: x-envoy-fault-delay-request: 0 injects none and counts none.
	It("injects no delay for x-envoy-fault-delay-request: 0, and counts none", func() {
		srv, url := startWith(&config.FaultFilter{Delay: &config.FaultDelay{FromHeader: true, Percent: all}})
		code, _, _ := do(url, map[string]string{"x-envoy-fault-delay-request": "0"})
		Expect(code).To(Equal(200))
		Expect(stat(srv, "http.ingress.fault.delays_injected")).To(BeZero())
		Expect(stat(srv, "http.ingress.fault.active_faults")).To(BeZero())
		code, _, _ = do(url, map[string]string{"x-envoy-fault-delay-request": "20"})
		Expect(code).To(Equal(200))
		Expect(stat(srv, "http.ingress.fault.delays_injected")).To(BeEquivalentTo(1))
	})

	It("delays, then forwards", func() {
		srv, url := startWith(&config.FaultFilter{Delay: &config.FaultDelay{Fixed: 50 * time.Millisecond, Percent: all}})
		began := time.Now()
		code, _, _ := do(url, nil)
		Expect(code).To(Equal(200))
		Expect(time.Since(began)).To(BeNumerically(">=", 50*time.Millisecond))
		Expect(stat(srv, "http.ingress.fault.delays_injected")).To(BeEquivalentTo(1))
		Expect(u.requests.Load()).To(BeEquivalentTo(1))
	})

	It("takes the abort status from x-envoy-fault-abort-request when header_abort is set, and nothing without it", func() {
		srv, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{FromHeader: true, Percent: all}})
		code, _, _ := do(url, map[string]string{"x-envoy-fault-abort-request": "429"})
		Expect(code).To(Equal(429))
		code, _, _ = do(url, nil)
		Expect(code).To(Equal(200))
		Expect(stat(srv, "http.ingress.fault.aborts_injected")).To(BeEquivalentTo(1))
	})

	It("caps the header percentage by the configured one", func() {
		_, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 500, Percent: config.Fraction{Numerator: 0, Denominator: 100}}})
		for range 20 {
			code, _, _ := do(url, map[string]string{"x-envoy-fault-abort-request-percentage": "100"})
			Expect(code).To(Equal(200))
		}
		_, url = startWith(&config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 500, Percent: all}})
		for range 20 {
			code, _, _ := do(url, map[string]string{"x-envoy-fault-abort-request-percentage": "0"})
			Expect(code).To(Equal(200))
		}
	})

	It("answers a gRPC request's gRPC abort as a trailers-only response: HTTP 200, grpc-status, grpc-message", func() {
		_, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{GRPCStatus: ptr(uint32(14)), Percent: all}})
		code, hdr, body := do(url, map[string]string{"content-type": "application/grpc"})
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(hdr.Get("grpc-message")).To(Equal("fault filter abort"))
		Expect(hdr.Get("content-type")).To(Equal("application/grpc"))
		Expect(body).To(BeEmpty())
	})

	// Regression: a gRPC status abort answered every request as gRPC. Envoy's FaultFilter::abortStatus
	// makes it a local reply of HTTP 200, and sendLocalReply writes the gRPC status only for a gRPC
	// request: any other gets a plain 200 with the body.
	It("answers a non-gRPC request's gRPC abort as a plain 200 local reply", func() {
		_, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{GRPCStatus: ptr(uint32(14)), Percent: all}})
		code, hdr, body := do(url, nil)
		Expect(code).To(Equal(200))
		Expect(hdr.Values("grpc-status")).To(BeEmpty())
		Expect(hdr.Get("content-type")).To(Equal("text/plain"))
		Expect(body).To(Equal("fault filter abort"))
		Expect(u.requests.Load()).To(BeZero())
	})

	It("answers a gRPC request's HTTP abort with the status mapped to gRPC (503: UNAVAILABLE)", func() {
		_, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 503, Percent: all}})
		code, hdr, body := do(url, map[string]string{"content-type": "application/grpc+proto"})
		Expect(code).To(Equal(200))
		Expect(hdr.Get("grpc-status")).To(Equal("14"))
		Expect(hdr.Get("grpc-message")).To(Equal("fault filter abort"))
		Expect(body).To(BeEmpty())
	})

	It("applies only to its upstream_cluster and to requests matching its headers", func() {
		abort := &config.FaultAbort{HTTPStatus: 503, Percent: all}
		_, url := startWith(&config.FaultFilter{Abort: abort, UpstreamCluster: "other"})
		code, _, _ := do(url, nil)
		Expect(code).To(Equal(200))

		_, url = startWith(&config.FaultFilter{Abort: abort, Headers: []config.HeaderMatcher{{Name: "x-chaos", Exact: ptr("on")}}})
		code, _, _ = do(url, map[string]string{"x-chaos": "on"})
		Expect(code).To(Equal(503))
		code, _, _ = do(url, map[string]string{"x-chaos": "off"})
		Expect(code).To(Equal(200))
		code, _, _ = do(url, nil)
		Expect(code).To(Equal(200))
	})

	It("sees the cluster a weighted_clusters route drew, as the router does (clusterEntry before the filters, config_impl.cc)", func() {
		stable, canary := newUpstream(ok), newUpstream(ok)
		srv, url := start(setup{
			fault:    &config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 503, Percent: all}, UpstreamCluster: "canary"},
			clusters: []config.Cluster{cluster("stable", stable.addr()), cluster("canary", canary.addr())},
			routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, Action: config.RouteAction{Timeout: 5 * time.Second,
				WeightedClusters: &config.WeightedClusters{TotalWeight: 2, Clusters: []config.ClusterWeight{
					{Name: "stable", Weight: 1}, {Name: "canary", Weight: 1},
				}}}}},
		})
		aborted := 0
		for i := range 40 {
			code, _, _ := do(url, map[string]string{"x-request-id": fmt.Sprintf("req-%d", i)})
			if code == 503 {
				aborted++
			}
		}
		Expect(aborted).To(BeNumerically(">", 0), "the canary's share is aborted")
		Expect(canary.requests.Load()).To(BeZero(), "every request drawn for the canary is aborted")
		Expect(stable.requests.Load()).To(BeEquivalentTo(40 - aborted))
		Expect(stat(srv, "http.ingress.fault.aborts_injected")).To(BeEquivalentTo(aborted))
	})

	It("counts faults_overflow and injects nothing beyond max_active_faults", func() {
		srv, url := startWith(&config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 503, Percent: all}, MaxActiveFaults: ptr(uint32(0))})
		code, _, _ := do(url, nil)
		Expect(code).To(Equal(200))
		Expect(stat(srv, "http.ingress.fault.faults_overflow")).To(BeEquivalentTo(1))
	})

	It("throttles the response body to the configured rate", func() {
		big := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) { io.WriteString(w, strings.Repeat("x", 8<<10)) })
		clk := fakeClock()
		_, url := start(setup{fault: &config.FaultFilter{RateLimit: &config.FaultRateLimit{KiBps: 16, Percent: all}},
			routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", big.addr())},
			opts: proxy.Options{Clock: clk}})
		began := clk.Now()
		bodies := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			code, _, body := do(url, nil)
			Expect(code).To(Equal(200))
			bodies <- body
		}()
		var body string
		until(clk, 100*time.Millisecond, received(bodies, &body))
		Expect(body).To(HaveLen(8 << 10))
		// Five pauses of 1638 bytes' time at 16 KiB/s (the last for 2 bytes): half a second, less rounding.
		Expect(clk.Since(began)).To(BeNumerically(">=", 499*time.Millisecond), "8 KiB at 16 KiB/s takes half a second")
	})
})
