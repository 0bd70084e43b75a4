package faults_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/faults"
)

// route is how the fake sidecar answers the calls to one callee.
type route struct {
	status int
	delay  time.Duration
}

// seenCall is one request the fake sidecar received.
type seenCall struct {
	Host, Method, Path, Query string
	Header                    http.Header
	Start, End                time.Time
	Canceled                  bool // its context ended before the sidecar answered
}

// sidecar is a fake outbound sidecar: a plain HTTP server that routes by Host (callees without a
// route answer 200 at once) and records what it received.
type sidecar struct {
	srv    *httptest.Server
	mu     sync.Mutex
	routes map[string]route
	seen   []seenCall
}

func newSidecar(routes map[string]route) *sidecar {
	GinkgoHelper()
	s := &sidecar{routes: routes}
	s.srv = httptest.NewServer(http.HandlerFunc(s.serve))
	DeferCleanup(s.srv.Close)
	return s
}

func (s *sidecar) Addr() string { return strings.TrimPrefix(s.srv.URL, "http://") }

func (s *sidecar) serve(w http.ResponseWriter, r *http.Request) {
	c := seenCall{Host: r.Host, Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: r.Header.Clone(), Start: time.Now()}
	s.mu.Lock()
	rt := s.routes[r.Host]
	s.mu.Unlock()
	if rt.status == 0 {
		rt.status = http.StatusOK
	}
	if rt.delay > 0 {
		t := time.NewTimer(rt.delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			c.Canceled = true
		}
		t.Stop()
	}
	c.End = time.Now()
	s.mu.Lock()
	s.seen = append(s.seen, c)
	s.mu.Unlock()
	if c.Canceled {
		return
	}
	w.Header().Set("content-length", "3")
	w.WriteHeader(rt.status)
	_, _ = io.WriteString(w, "abc")
}

// Seen returns the calls received so far, by callee (Host).
func (s *sidecar) Seen() map[string][]seenCall {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := map[string][]seenCall{}
	for _, c := range s.seen {
		out[c.Host] = append(out[c.Host], c)
	}
	return out
}

// results collects the CallResults of concurrent calls.
type results struct {
	mu  sync.Mutex
	all []faults.CallResult
}

func (r *results) Add(c faults.CallResult) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.all = append(r.all, c)
}

func (r *results) All() []faults.CallResult {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]faults.CallResult(nil), r.all...)
}

func steps(calls ...[]faults.Call) []faults.Step {
	out := make([]faults.Step, len(calls))
	for i, c := range calls {
		out[i] = faults.Step{Calls: c}
	}
	return out
}

var _ = Describe("Upstream with an app (calls through its sidecar)", func() {
	var (
		transport *http.Transport
		client    *http.Client
		side      *sidecar
		calls     *results
	)

	BeforeEach(func() {
		transport = &http.Transport{}
		client = &http.Client{Transport: transport}
		DeferCleanup(transport.CloseIdleConnections)
		calls = &results{}
	})

	// start starts checkout/2 calling through side with app's steps.
	start := func(cfg faults.UpstreamConfig, app faults.App) *faults.Upstream {
		GinkgoHelper()
		cfg.Service, cfg.Instance = "checkout", 2
		app.Sidecar, app.OnCall = side.Addr(), calls.Add
		cfg.App = &app
		u, err := faults.NewUpstream(cfg)
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		return u
	}

	do := func(u *faults.Upstream, header http.Header) (*http.Response, string) {
		GinkgoHelper()
		req, err := http.NewRequest(http.MethodGet, "http://"+u.Addr()+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		for k, v := range header {
			req.Header[k] = v
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		return resp, string(body)
	}

	It("sends each call to the sidecar with the callee as Host, and its method and path", func() {
		side = newSidecar(nil)
		u := start(faults.UpstreamConfig{Response: faults.Response{Size: 10}}, faults.App{Steps: steps(
			[]faults.Call{{Service: "inventory", Path: "/items?sku=1", Method: http.MethodPost}, {Service: "pricing"}})})
		resp, body := do(u, nil)
		Expect(resp.StatusCode).To(Equal(200))
		Expect(body).To(HaveLen(10))
		seen := side.Seen()
		Expect(seen["inventory"]).To(HaveExactElements(And(
			HaveField("Method", "POST"), HaveField("Path", "/items"), HaveField("Query", "sku=1"))))
		Expect(seen["pricing"]).To(HaveExactElements(And(HaveField("Method", "GET"), HaveField("Path", "/"))))
		Expect(calls.All()).To(ConsistOf(
			And(HaveField("Callee", "inventory"), HaveField("Path", "/items?sku=1"), HaveField("Status", 200), HaveField("Error", "")),
			And(HaveField("Callee", "pricing"), HaveField("Path", "/"), HaveField("Status", 200), HaveField("Error", "")),
		))
		Expect(u.Stats()).To(And(HaveField("Calls", BeEquivalentTo(2)), HaveField("CallFailures", BeEquivalentTo(0))))
	})

	It("runs the steps one after another and the calls of a step in parallel", func() {
		side = newSidecar(map[string]route{"a": {delay: 100 * time.Millisecond}, "b": {delay: 100 * time.Millisecond}})
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps(
			[]faults.Call{{Service: "a"}, {Service: "b"}},
			[]faults.Call{{Service: "c"}})})
		began := time.Now()
		resp, _ := do(u, nil)
		Expect(resp.StatusCode).To(Equal(200))
		Expect(time.Since(began)).To(BeNumerically("<", 190*time.Millisecond), "a and b waited together")
		seen := side.Seen()
		a, b, c := seen["a"][0], seen["b"][0], seen["c"][0]
		Expect(a.Start.Before(b.End) && b.Start.Before(a.End)).To(BeTrue(), "a and b overlap")
		Expect(c.Start).To(BeTemporally(">=", a.End))
		Expect(c.Start).To(BeTemporally(">=", b.End))
		Expect(calls.All()).To(HaveEach(HaveField("Latency", BeNumerically(">=", 0))))
		for _, r := range calls.All() {
			if r.Callee != "c" {
				Expect(r.Latency).To(BeNumerically(">=", 100*time.Millisecond), r.Callee)
			}
		}
	})

	It("answers OnFailure without running later steps when a required call fails", func() {
		side = newSidecar(map[string]route{"inventory": {status: 503}})
		u := start(faults.UpstreamConfig{Response: faults.Response{Size: 100}},
			faults.App{OnFailure: 502, Steps: steps([]faults.Call{{Service: "inventory"}}, []faults.Call{{Service: "pricing"}})})
		resp, body := do(u, nil)
		Expect(resp.StatusCode).To(Equal(502))
		Expect(resp.Header.Get("x-meshproof-failed-call")).To(Equal("inventory"))
		Expect(body).To(BeEmpty())
		Expect(side.Seen()).NotTo(HaveKey("pricing"))
		Expect(calls.All()).To(HaveExactElements(And(HaveField("Callee", "inventory"), HaveField("Status", 503))))
		Expect(u.Stats()).To(And(
			HaveField("Statuses", Equal(map[int]uint64{502: 1})),
			HaveField("Calls", BeEquivalentTo(1)),
			HaveField("CallFailures", BeEquivalentTo(1)),
		))
	})

	It("answers 503 by default when a required call fails", func() {
		side = newSidecar(map[string]route{"inventory": {status: 500}})
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		resp, _ := do(u, nil)
		Expect(resp.StatusCode).To(Equal(503))
	})

	It("ignores the failure of an optional call", func() {
		side = newSidecar(map[string]route{"recommendations": {status: 500}})
		u := start(faults.UpstreamConfig{Response: faults.Response{Status: 201, Size: 5}}, faults.App{Steps: steps(
			[]faults.Call{{Service: "recommendations", Optional: true}}, []faults.Call{{Service: "pricing"}})})
		resp, body := do(u, nil)
		Expect(resp.StatusCode).To(Equal(201))
		Expect(resp.Header.Get("x-meshproof-failed-call")).To(BeEmpty())
		Expect(body).To(HaveLen(5))
		Expect(side.Seen()).To(HaveKey("pricing"))
		Expect(calls.All()).To(ContainElement(And(HaveField("Callee", "recommendations"), HaveField("Optional", true),
			HaveField("Status", 500))))
		Expect(u.Stats().CallFailures).To(BeEquivalentTo(1))
	})

	It("makes no call for a request that is reset or aborted before answering", func() {
		side = newSidecar(nil)
		u := start(faults.UpstreamConfig{Faults: []faults.Fault{{Reset: &faults.Reset{Percent: 100}}}},
			faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		_, err := client.Get("http://" + u.Addr() + "/")
		Expect(err).To(HaveOccurred())
		Expect(side.Seen()).To(BeEmpty())
		Expect(u.Stats().Calls).To(BeZero())
	})

	It("makes no call for a request an abort fault answers: the service fails fast", func() {
		side = newSidecar(nil)
		u := start(faults.UpstreamConfig{Faults: []faults.Fault{{Abort: &faults.Abort{Status: 500, Percent: 100}}}},
			faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		res, err := client.Get("http://" + u.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		_ = res.Body.Close()
		Expect(res.StatusCode).To(Equal(500))
		Expect(side.Seen()).To(BeEmpty())
		Expect(u.Stats().Calls).To(BeZero())
	})

	It("sends each call with its own x-request-id below the request's", func() {
		side = newSidecar(nil)
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps(
			[]faults.Call{{Service: "a"}, {Service: "b"}}, []faults.Call{{Service: "c"}})})
		do(u, http.Header{"X-Request-Id": {"r1"}})
		do(u, nil)
		ids := map[string]bool{}
		for _, cs := range side.Seen() {
			for _, c := range cs {
				ids[c.Header.Get("x-request-id")] = true
			}
		}
		Expect(ids).To(HaveLen(6), "unique per call")
		Expect(ids).To(SatisfyAll(
			HaveKey(MatchRegexp(`^r1/checkout\.2\.[1-3]$`)),
			HaveKey(MatchRegexp(`^req/checkout\.2\.[4-6]$`)),
		))
		Expect(side.Seen()["c"][0].Header.Get("x-request-id")).To(Equal("r1/checkout.2.3"), "steps after the parallel calls")
		for _, r := range calls.All() {
			Expect(ids).To(HaveKey(r.RequestID))
		}
	})

	It("propagates the trace context it received when it does not trace", func() {
		side = newSidecar(nil)
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		const parent = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
		do(u, http.Header{"Traceparent": {parent}})
		Expect(side.Seen()["inventory"][0].Header.Get("traceparent")).To(Equal(parent))
	})

	It("traces each call as a CLIENT span below its SERVER span, and propagates it", func() {
		side = newSidecar(nil)
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		DeferCleanup(tp.Shutdown, context.Background())
		u := start(faults.UpstreamConfig{Tracer: tp.Tracer("faults")}, faults.App{Steps: steps(
			[]faults.Call{{Service: "inventory"}})})
		const traceID = "0af7651916cd43dd8448eb211c80319c"
		do(u, http.Header{"Traceparent": {"00-" + traceID + "-b7ad6b7169203331-01"}})

		Eventually(rec.Ended).Should(HaveLen(2), "the SERVER span ends once the answer is written")
		spans := rec.Ended()
		server, callSpan := spans[1], spans[0]
		Expect(server.SpanKind()).To(Equal(trace.SpanKindServer))
		Expect(callSpan.SpanKind()).To(Equal(trace.SpanKindClient))
		Expect(callSpan.Name()).To(Equal("GET inventory"))
		Expect(callSpan.Parent().SpanID()).To(Equal(server.SpanContext().SpanID()))
		Expect(callSpan.SpanContext().TraceID().String()).To(Equal(traceID))
		Expect(callSpan.Attributes()).To(ContainElements(
			attribute.String("meshproof.callee", "inventory"),
			attribute.Int("http.response.status_code", 200),
		))

		sc := trace.SpanContextFromContext(propagation.TraceContext{}.Extract(context.Background(),
			propagation.HeaderCarrier(side.Seen()["inventory"][0].Header)))
		Expect(sc.TraceID().String()).To(Equal(traceID))
		Expect(sc.SpanID()).To(Equal(callSpan.SpanContext().SpanID()))
	})

	It("goes on with its calls when its own client goes away, as a server thread does, and counts the work canceled", func() {
		// Issue #14: without a propagated deadline a service does not learn that its client gave up;
		// the work it does then is wasted, and the deadline example shows propagation stopping it.
		side = newSidecar(map[string]route{"inventory": {delay: 300 * time.Millisecond}})
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Addr()+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		_, err = client.Do(req)
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Eventually(calls.All).Should(HaveExactElements(And(HaveField("Error", ""), HaveField("Status", 200))), "the call ran to its end")
		Expect(side.Seen()).To(HaveKeyWithValue("inventory", HaveExactElements(HaveField("Canceled", false))))
		Eventually(func() uint64 { return u.Stats().Canceled }).Should(BeEquivalentTo(1), "nobody read the answer")
	})

	It("makes its calls for HTTP/2 requests too", func() {
		side = newSidecar(map[string]route{"inventory": {status: 500}})
		u := start(faults.UpstreamConfig{}, faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
		protocols := new(http.Protocols)
		protocols.SetUnencryptedHTTP2(true) // prior knowledge
		h2 := &http.Transport{Protocols: protocols}
		DeferCleanup(h2.CloseIdleConnections)
		resp, err := (&http.Client{Transport: h2}).Get("http://" + u.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		Expect(resp.Body.Close()).To(Succeed())
		Expect(resp.ProtoMajor).To(Equal(2))
		Expect(resp.StatusCode).To(Equal(503))
		Expect(resp.Header.Get("x-meshproof-failed-call")).To(Equal("inventory"))
	})

	Context("propagating deadlines", func() {
		It("sends the remaining budget with each call", func() {
			side = newSidecar(nil)
			clk := &clock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
			u := start(faults.UpstreamConfig{Now: clk.Now}, faults.App{PropagateDeadline: true,
				Steps: steps([]faults.Call{{Service: "inventory"}})})
			do(u, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"750"}})
			Expect(side.Seen()["inventory"][0].Header.Get("x-envoy-upstream-rq-timeout-ms")).To(Equal("750"))
		})

		It("counts the budget from the arrival, on the upstream's clock", func() {
			side = newSidecar(nil)
			t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			clk := &clock{}
			var reads sync.Mutex
			n := 0
			clk.SetFunc(func() time.Time { // every reading of the clock is 100ms later than the last
				reads.Lock()
				defer reads.Unlock()
				n++
				return t0.Add(time.Duration(n) * 100 * time.Millisecond)
			})
			u := start(faults.UpstreamConfig{Now: clk.Now, Start: t0}, faults.App{PropagateDeadline: true,
				Steps: steps([]faults.Call{{Service: "inventory"}})})
			do(u, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"1000"}})
			got, err := strconv.Atoi(side.Seen()["inventory"][0].Header.Get("x-envoy-upstream-rq-timeout-ms"))
			Expect(err).NotTo(HaveOccurred())
			Expect(got).To(BeNumerically("<", 1000))
			Expect(got).To(BeNumerically(">", 0))
			Expect(got % 100).To(BeZero())
		})

		It("does not send a call whose budget is spent, and fails the request", func() {
			side = newSidecar(nil)
			u := start(faults.UpstreamConfig{Response: faults.Response{Latency: 60 * time.Millisecond}},
				faults.App{PropagateDeadline: true, Steps: steps([]faults.Call{{Service: "inventory"}})})
			resp, _ := do(u, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"20"}})
			Expect(resp.StatusCode).To(Equal(503))
			Expect(resp.Header.Get("x-meshproof-failed-call")).To(Equal("inventory"))
			Expect(side.Seen()).To(BeEmpty())
			Expect(calls.All()).To(HaveExactElements(And(HaveField("Error", "deadline"), HaveField("Status", 0),
				HaveField("Callee", "inventory"))))
			Expect(u.Stats().CallFailures).To(BeEquivalentTo(1))
		})

		It("bounds a call by the remaining budget: it times out", func() {
			side = newSidecar(map[string]route{"inventory": {delay: 5 * time.Second}})
			u := start(faults.UpstreamConfig{}, faults.App{PropagateDeadline: true, Steps: steps([]faults.Call{{Service: "inventory"}})})
			began := time.Now()
			resp, _ := do(u, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"100"}})
			Expect(time.Since(began)).To(BeNumerically("<", time.Second))
			Expect(resp.StatusCode).To(Equal(503))
			Expect(calls.All()).To(HaveExactElements(And(HaveField("Error", "timeout"),
				HaveField("Latency", BeNumerically(">=", 90*time.Millisecond)))))
		})

		It("sends no timeout header without propagation, nor without a budget", func() {
			side = newSidecar(nil)
			u := start(faults.UpstreamConfig{}, faults.App{Steps: steps([]faults.Call{{Service: "inventory"}})})
			do(u, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"750"}})
			Expect(side.Seen()["inventory"][0].Header).NotTo(HaveKey("X-Envoy-Upstream-Rq-Timeout-Ms"))

			propagating := start(faults.UpstreamConfig{}, faults.App{PropagateDeadline: true, Steps: steps([]faults.Call{{Service: "pricing"}})})
			do(propagating, http.Header{"X-Envoy-Expected-Rq-Timeout-Ms": {"soon"}})
			Expect(side.Seen()["pricing"][0].Header).NotTo(HaveKey("X-Envoy-Upstream-Rq-Timeout-Ms"))
		})
	})
})

var _ = Describe("Upstream with a finite capacity", func() {
	var (
		transport *http.Transport
		client    *http.Client
	)

	BeforeEach(func() {
		transport = &http.Transport{}
		client = &http.Client{Transport: transport}
		DeferCleanup(transport.CloseIdleConnections)
	})

	start := func(cfg faults.UpstreamConfig) *faults.Upstream {
		GinkgoHelper()
		cfg.Service = "checkout"
		u, err := faults.NewUpstream(cfg)
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		return u
	}

	type answer struct {
		Status   int
		Overload string
		Err      error
		Took     time.Duration
	}
	// send sends a request in the background; its answer comes on the channel.
	send := func(ctx context.Context, u *faults.Upstream) <-chan answer {
		out := make(chan answer, 1)
		go func() {
			defer GinkgoRecover()
			began := time.Now()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Addr()+"/", nil)
			Expect(err).NotTo(HaveOccurred())
			resp, err := client.Do(req)
			if err != nil {
				out <- answer{Err: err, Took: time.Since(began)}
				return
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			out <- answer{Status: resp.StatusCode, Overload: resp.Header.Get("x-meshproof-overload"), Took: time.Since(began)}
		}()
		return out
	}
	queued := func(u *faults.Upstream) func() uint64 {
		return func() uint64 { return u.Stats().Capacity.Queued }
	}
	requests := func(u *faults.Upstream) func() uint64 {
		return func() uint64 { return u.Stats().Requests }
	}

	It("serves Workers at a time, queues Queue more and rejects the rest with 503 queue_full", func() {
		u := start(faults.UpstreamConfig{Response: faults.Response{Latency: 200 * time.Millisecond},
			Capacity: &faults.Capacity{Workers: 1, Queue: 1}})
		first := send(context.Background(), u)
		Eventually(requests(u)).Should(BeEquivalentTo(1))
		second := send(context.Background(), u)
		Eventually(queued(u)).Should(BeEquivalentTo(1))
		third := send(context.Background(), u)

		var a3 answer
		Eventually(third).Should(Receive(&a3))
		Expect(a3).To(And(HaveField("Status", 503), HaveField("Overload", "queue_full"), HaveField("Took", BeNumerically("<", 150*time.Millisecond))))
		var a1, a2 answer
		Eventually(first).Should(Receive(&a1))
		Eventually(second).Should(Receive(&a2))
		Expect(a1.Status).To(Equal(200))
		Expect(a2.Status).To(Equal(200))
		Expect(a2.Took).To(BeNumerically(">=", 300*time.Millisecond), "waited for the first one's worker")

		busy := func() time.Duration { return u.Stats().Capacity.Busy }
		Eventually(busy).Should(BeNumerically(">=", 2*200*time.Millisecond), "counted as the workers are released, after the answers")
		st := u.Stats()
		Expect(st.Requests).To(BeEquivalentTo(3))
		Expect(st.Statuses).To(Equal(map[int]uint64{200: 2, 503: 1}))
		Expect(*st.Capacity).To(And(
			HaveField("Workers", 1), HaveField("Queue", 1),
			HaveField("Queued", BeEquivalentTo(1)), HaveField("Rejected", BeEquivalentTo(1)), HaveField("TimedOut", BeZero()),
			HaveField("Busy", And(BeNumerically(">=", 400*time.Millisecond), BeNumerically("<", time.Second))),
			HaveField("QueueWait", And(BeNumerically(">=", 100*time.Millisecond), BeNumerically("<=", 200*time.Millisecond+50*time.Millisecond))),
		))
		Expect(st.Capacity.MaxQueueWait).To(Equal(st.Capacity.QueueWait))
	})

	It("resets the connection of a request that finds the queue full, with WhenFull refuse", func() {
		u := start(faults.UpstreamConfig{Response: faults.Response{Latency: 200 * time.Millisecond},
			Capacity: &faults.Capacity{Workers: 1, WhenFull: faults.WhenFullRefuse}})
		first := send(context.Background(), u)
		Eventually(requests(u)).Should(BeEquivalentTo(1))
		var a answer
		Eventually(send(context.Background(), u)).Should(Receive(&a))
		Expect(a.Err).To(Or(MatchError(syscall.ECONNRESET), MatchError(ContainSubstring("connection reset by peer"))))
		Eventually(first).Should(Receive(HaveField("Status", 200)))
		Expect(u.Stats().Resets).To(BeEquivalentTo(1))
		Expect(u.Stats().Capacity.Rejected).To(BeEquivalentTo(1))
	})

	It("answers 503 queue_timeout to a request that waited QueueTimeout", func() {
		u := start(faults.UpstreamConfig{Response: faults.Response{Latency: 300 * time.Millisecond},
			Capacity: &faults.Capacity{Workers: 1, Queue: 5, QueueTimeout: 50 * time.Millisecond}})
		first := send(context.Background(), u)
		Eventually(requests(u)).Should(BeEquivalentTo(1))
		var a answer
		Eventually(send(context.Background(), u)).Should(Receive(&a))
		Expect(a).To(And(HaveField("Status", 503), HaveField("Overload", "queue_timeout"),
			HaveField("Took", And(BeNumerically(">=", 50*time.Millisecond), BeNumerically("<", 250*time.Millisecond)))))
		Eventually(first).Should(Receive(HaveField("Status", 200)))
		Expect(*u.Stats().Capacity).To(And(HaveField("TimedOut", BeEquivalentTo(1)), HaveField("Queued", BeEquivalentTo(1)),
			HaveField("MaxQueueWait", BeNumerically(">=", 50*time.Millisecond))))
	})

	It("serves a queued request whose client went away, as a server does, and counts it canceled", func() {
		u := start(faults.UpstreamConfig{Response: faults.Response{Latency: 200 * time.Millisecond},
			Capacity: &faults.Capacity{Workers: 1, Queue: 1}})
		first := send(context.Background(), u)
		Eventually(requests(u)).Should(BeEquivalentTo(1))
		ctx, cancel := context.WithCancel(context.Background())
		gone := send(ctx, u)
		Eventually(queued(u)).Should(BeEquivalentTo(1))
		cancel()
		Eventually(gone).Should(Receive(HaveField("Err", MatchError(context.Canceled))))
		Eventually(first).Should(Receive(HaveField("Status", 200)))
		// The abandoned request still takes the worker for its service time: the wasted work that
		// feeds a retry storm.
		Expect(u.Stats().Canceled).To(BeZero())
		Eventually(func() time.Duration { return u.Stats().Capacity.Busy }).Should(BeNumerically(">=", 400*time.Millisecond))
		Expect(u.Stats().Canceled).To(BeEquivalentTo(1))
		Eventually(send(context.Background(), u)).Should(Receive(HaveField("Status", 200)), "the worker was not leaked")
		Expect(u.Stats().Capacity.Rejected).To(BeZero())
	})

	It("holds a worker through the calls: a slow callee fills the queue", func() {
		side := newSidecar(map[string]route{"inventory": {delay: 200 * time.Millisecond}})
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Capacity: &faults.Capacity{Workers: 1},
			App: &faults.App{Sidecar: side.Addr(), Steps: steps([]faults.Call{{Service: "inventory"}})}})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		first := send(context.Background(), u)
		Eventually(requests(u)).Should(BeEquivalentTo(1))
		Eventually(send(context.Background(), u)).Should(Receive(HaveField("Overload", "queue_full")))
		Eventually(first).Should(Receive(HaveField("Status", 200)))
		Eventually(func() time.Duration { return u.Stats().Capacity.Busy }).Should(BeNumerically(">=", 200*time.Millisecond))
	})
})

var _ = Describe("UpstreamStats.Received and OK", func() {
	It("count arrivals and their 2xx/3xx answers per 100ms bucket of the run", func() {
		t0 := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
		clk := &clock{now: t0}
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Start: t0, Now: clk.Now,
			Faults: []faults.Fault{{Start: 200 * time.Millisecond, Duration: 100 * time.Millisecond, Abort: &faults.Abort{Status: 503, Percent: 100}}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		transport := &http.Transport{}
		DeferCleanup(transport.CloseIdleConnections)
		for _, at := range []time.Duration{50, 120, 250, 260, 510} {
			clk.Set(t0.Add(at * time.Millisecond))
			resp, err := (&http.Client{Transport: transport}).Get("http://" + u.Addr() + "/")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Body.Close()).To(Succeed())
		}
		clk.Set(t0.Add(-time.Second)) // before the run start: in no bucket
		resp, err := (&http.Client{Transport: transport}).Get("http://" + u.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())

		st := u.Stats()
		Expect(st.Requests).To(BeEquivalentTo(6))
		Expect(st.Received).To(Equal([]uint32{1, 1, 2, 0, 0, 1}))
		Expect(st.OK).To(Equal([]uint32{1, 1, 0, 0, 0, 1}))
		Expect(faults.BucketWidth).To(Equal(100 * time.Millisecond))

		st.Received[0] = 99
		Expect(u.Stats().Received[0]).To(BeEquivalentTo(1), "Stats returns copies")
	})
})

var _ = DescribeTable("App.Validate returns field errors",
	func(a faults.App, want []fieldErr) {
		Expect(fieldErrs(a.Validate())).To(Equal(want))
	},
	Entry("a valid app", faults.App{Sidecar: "127.0.0.1:1", Steps: steps([]faults.Call{{Service: "a", Path: "/x", Method: "POST"}})}, []fieldErr(nil)),
	Entry("no calls, no sidecar", faults.App{}, []fieldErr(nil)),
	Entry("a call without a service", faults.App{Sidecar: "127.0.0.1:1", Steps: steps([]faults.Call{{Service: "a"}, {}})},
		[]fieldErr{{"steps[0].calls[1].service", "empty, want the callee's service name"}}),
	Entry("a bad service, path and method", faults.App{Sidecar: "127.0.0.1:1", Steps: steps([]faults.Call{{Service: "a b", Path: "x", Method: "get"}})},
		[]fieldErr{
			{"steps[0].calls[0].service", `"a b" is not a service name (sent as the Host header)`},
			{"steps[0].calls[0].path", `"x" is not a path, want e.g. "/items"`},
			{"steps[0].calls[0].method", `"get" is not upper case, want e.g. "GET"`},
		}),
	Entry("a step without calls", faults.App{Sidecar: "127.0.0.1:1", Steps: []faults.Step{{}}},
		[]fieldErr{{"steps[0].calls", "empty, want at least one call"}}),
	Entry("on_failure out of range", faults.App{OnFailure: 99}, []fieldErr{{"on_failure", "99 is out of range, want 200..599"}}),
	Entry("calls without a sidecar", faults.App{Steps: steps([]faults.Call{{Service: "a"}})},
		[]fieldErr{{"sidecar", "empty, want the host:port of the instance's outbound sidecar"}}),
	Entry("a sidecar that is not host:port", faults.App{Sidecar: "localhost"},
		[]fieldErr{{"sidecar", `"localhost" is not host:port: address localhost: missing port in address`}}),
)

var _ = DescribeTable("Capacity.Validate returns field errors",
	func(c faults.Capacity, want []fieldErr) {
		Expect(fieldErrs(c.Validate())).To(Equal(want))
	},
	Entry("a valid capacity", faults.Capacity{Workers: 1, Queue: 0, QueueTimeout: time.Second, WhenFull: "refuse"}, []fieldErr(nil)),
	Entry("no workers", faults.Capacity{Workers: 0}, []fieldErr{{"workers", "0 is below 1, want >= 1"}}),
	Entry("negative queue", faults.Capacity{Workers: 1, Queue: -1}, []fieldErr{{"queue", "-1 is negative, want >= 0"}}),
	Entry("negative queue timeout", faults.Capacity{Workers: 1, QueueTimeout: -time.Second}, []fieldErr{{"queue_timeout", "-1s is negative, want >= 0"}}),
	Entry("unknown when_full", faults.Capacity{Workers: 1, WhenFull: "x"}, []fieldErr{{"when_full", `"x" is not a choice, want reject or refuse`}}),
)

var _ = Describe("NewUpstream with an app and a capacity", func() {
	It("places their errors below app and capacity", func() {
		_, err := faults.NewUpstream(faults.UpstreamConfig{Service: "s",
			App:      &faults.App{OnFailure: 99, Sidecar: "127.0.0.1:1", Steps: steps([]faults.Call{{}})},
			Capacity: &faults.Capacity{Workers: 0, Queue: -1}})
		Expect(err).To(MatchError(faults.ErrInvalidConfig))
		var joined interface{ Unwrap() []error }
		Expect(errors.As(err, &joined)).To(BeTrue())
		Expect(fieldErrs(joined.Unwrap()[1])).To(Equal([]fieldErr{
			{"app.steps[0].calls[0].service", "empty, want the callee's service name"},
			{"app.on_failure", "99 is out of range, want 200..599"},
			{"capacity.workers", "0 is below 1, want >= 1"},
			{"capacity.queue", "-1 is negative, want >= 0"},
		}))
	})

	It("does not keep the caller's steps", func() {
		app := &faults.App{Sidecar: "127.0.0.1:1", Steps: steps([]faults.Call{{Service: "a"}})}
		_, err := faults.NewUpstream(faults.UpstreamConfig{Service: "s", App: app})
		Expect(err).NotTo(HaveOccurred())
		Expect(app.Steps[0].Calls[0]).To(Equal(faults.Call{Service: "a"}), "defaults are filled in the upstream's copy")
	})
})
