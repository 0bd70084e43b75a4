package sim

import (
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// answer is what a sender got from an instance, and when.
type answer struct {
	got bool
	// headers is when the answer came (its headers), at when the response ended (headers + res's
	// Body, which res holds as 0).
	headers, at time.Duration
	res         Result
}

var _ = Describe("instance", func() {
	var (
		en  *Engine
		w   *world
		cfg faults.UpstreamConfig
	)
	BeforeEach(func() {
		en = &Engine{}
		// 1,000,000 B/s: a byte takes 1 µs, so body times are easy to count by hand.
		w = &world{en: en, bandwidth: 1_000_000}
		cfg = faults.UpstreamConfig{Service: "api", Instance: 0, Seed: 7,
			Response: faults.Response{Latency: 2 * time.Millisecond, Size: 1000}}
	})
	start := func() *instance {
		return newInstance(w, plan.Instance{Service: cfg.Service, Index: cfg.Instance, Upstream: cfg}, "10.0.0.1:8080")
	}
	get := func(path string) *Request {
		return &Request{ID: "mp-1", Method: http.MethodGet, Path: path, Authority: "api", Header: map[string]string{}}
	}
	// serve sends req to it at the instant at, and keeps the cancel function in *cancel when set.
	serve := func(it *instance, at time.Duration, req *Request, cancel *func()) *answer {
		a := &answer{}
		en.At(at, func() {
			c := it.Serve(req, func(r Result) {
				Expect(a.got).To(BeFalse(), "done called twice")
				a.got, a.headers, a.at = true, en.Now(), en.Now()+r.Body
				r.Body = 0
				a.res = r
			})
			if cancel != nil {
				*cancel = c
			}
		})
		return a
	}

	Context("without faults", func() {
		It("answers the status after the latency, the body at the bandwidth", func() {
			it := start()
			a := serve(it, time.Second, get("/"), nil)
			en.Run(-1)
			Expect(a.got).To(BeTrue())
			// 1 s + 2 ms latency + 1000 bytes × 1 µs
			Expect(a.at).To(Equal(time.Second + 3*time.Millisecond))
			Expect(a.res).To(Equal(Result{Status: 200}))
			st := it.snapshot()
			Expect(st.Requests).To(BeEquivalentTo(1))
			Expect(st.Statuses).To(Equal(map[int]uint64{200: 1}))
			Expect(st.Received).To(HaveLen(11)) // bucket 10: [1 s, 1.1 s)
			Expect(st.Received[10]).To(BeEquivalentTo(1))
			Expect(st.OK[10]).To(BeEquivalentTo(1))
		})

		It("sends no body for a HEAD request", func() {
			it := start()
			req := get("/")
			req.Method = http.MethodHead
			a := serve(it, 0, req, nil)
			en.Run(-1)
			Expect(a.at).To(Equal(2 * time.Millisecond))
		})
	})

	Context("with one fault rule", func() {
		rule := func(f faults.Fault) { cfg.Faults = []faults.Fault{f} }

		It("aborts with the status, recording the fault", func() {
			rule(faults.Fault{Abort: &faults.Abort{Status: 503, Percent: 100}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.res.Status).To(Equal(503))
			Expect(a.at).To(Equal(3 * time.Millisecond)) // the service's body still goes out
			Expect(it.snapshot().Applied).To(Equal(map[string]uint64{"faults[0]/abort": 1}))
			Expect(w.events.all()).To(HaveLen(1))
			Expect(*w.events.at(0)).To(Equal(record.FaultEvent{Service: "api", Seq: 1, RequestID: "mp-1", Fault: "faults[0]",
				Kind: "abort", Detail: "503"}))
		})

		It("resets before the headers at the end of the delay", func() {
			rule(faults.Fault{Reset: &faults.Reset{Percent: 100}, Latency: &faults.Latency{Fixed: 5 * time.Millisecond, Percent: 100}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.at).To(Equal(7 * time.Millisecond))
			Expect(a.res).To(Equal(Result{Err: ErrReset}))
			Expect(it.snapshot().Resets).To(BeEquivalentTo(1))
			Expect(it.snapshot().Applied).To(HaveKey("faults[0]/latency"))
		})

		It("resets after the headers and after_bytes of the body", func() {
			n := 100
			rule(faults.Fault{Reset: &faults.Reset{Percent: 100, AfterBytes: &n}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.at).To(Equal(2*time.Millisecond + 100*time.Microsecond))
			Expect(a.res).To(Equal(Result{Status: 200, Err: ErrReset}))
			Expect(it.snapshot().Statuses).To(BeEmpty())
		})

		It("closes after the headers and close_after bytes: an EOF", func() {
			rule(faults.Fault{CloseAfter: &faults.CloseAfter{Bytes: 10, Percent: 100}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.at).To(Equal(2*time.Millisecond + 10*time.Microsecond))
			Expect(a.res).To(Equal(Result{Status: 200, Err: ErrEOF}))
			Expect(it.snapshot().Truncated).To(BeEquivalentTo(1))
		})

		It("paces a slow body as the live upstream does: chunks of bps/20 bytes", func() {
			cfg.Response.Size = 50
			rule(faults.Fault{SlowBody: &faults.SlowBody{BytesPerSecond: 100, Percent: 100}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			// the headers after the 2 ms latency; then 10 chunks of 5 bytes, each 50 ms
			Expect(a.headers).To(Equal(2 * time.Millisecond))
			Expect(a.at).To(Equal(2*time.Millisecond + 500*time.Millisecond))
		})

		It("overrides the size", func() {
			rule(faults.Fault{Size: &faults.Size{Bytes: 4000, Percent: 100}})
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.at).To(Equal(6 * time.Millisecond))
		})

		It("hangs until the sender gives up, counting a hang and no cancel", func() {
			rule(faults.Fault{Hang: &faults.Hang{Percent: 100}})
			it := start()
			var cancel func()
			a := serve(it, 0, get("/"), &cancel)
			en.Run(10 * time.Second)
			Expect(a.got).To(BeFalse())
			Expect(it.open).To(HaveLen(1))
			cancel()
			Expect(it.open).To(BeEmpty())
			st := it.snapshot()
			Expect(st.Hangs).To(BeEquivalentTo(1))
			Expect(st.Canceled).To(BeZero())
		})

		It("applies a rule only inside its window", func() {
			rule(faults.Fault{Start: time.Second, Duration: time.Second, Abort: &faults.Abort{Status: 500, Percent: 100}})
			it := start()
			before := serve(it, 500*time.Millisecond, get("/"), nil)
			during := serve(it, 1500*time.Millisecond, get("/"), nil)
			after := serve(it, 2*time.Second, get("/"), nil)
			en.Run(-1)
			Expect([]int{before.res.Status, during.res.Status, after.res.Status}).To(Equal([]int{200, 500, 200}))
		})

		It("matches on the path without its query, and on headers", func() {
			rule(faults.Fault{Match: &faults.Match{Path: "/pay", Headers: map[string]string{"X-User": "bob"}},
				Abort: &faults.Abort{Status: 502, Percent: 100}})
			it := start()
			bob := get("/pay?x=1")
			bob.Header = map[string]string{"x-user": "bob"}
			alice := get("/pay")
			alice.Header = map[string]string{"x-user": "alice"}
			a, b := serve(it, 0, bob, nil), serve(it, 0, alice, nil)
			en.Run(-1)
			Expect([]int{a.res.Status, b.res.Status}).To(Equal([]int{502, 200}))
		})

		It("decides each request as faults.DecideRequest does with faults.RequestRand", func() {
			rule(faults.Fault{Abort: &faults.Abort{Status: 503, Percent: 30}, Latency: &faults.Latency{
				Uniform: &faults.Uniform{Min: time.Millisecond, Max: 9 * time.Millisecond}, Percent: 50}})
			it := start()
			var answers []*answer
			for i := range 200 {
				answers = append(answers, serve(it, time.Duration(i)*time.Second, get("/"), nil))
			}
			en.Run(-1)
			rules := []faults.Fault{cfg.Faults[0]}
			rules[0].Name = "faults[0]"
			aborts := 0
			for i, a := range answers {
				n := uint64(i + 1)
				d := faults.DecideRequest(cfg.Response, rules, faults.Request{Seq: n, Elapsed: time.Duration(i) * time.Second,
					Method: "GET", Path: "/"}, faults.RequestRand(cfg.Seed, cfg.Service, cfg.Instance, n))
				Expect(a.res.Status).To(Equal(d.Status), "request %d", n)
				Expect(a.at).To(Equal(time.Duration(i)*time.Second+d.Delay+time.Millisecond), "request %d", n)
				if d.Status == 503 {
					aborts++
				}
			}
			Expect(aborts).To(BeNumerically("~", 60, 20)) // the draw is a draw: 30% of 200, roughly
			Expect(it.snapshot().Applied["faults[0]/abort"]).To(BeEquivalentTo(aborts))
		})
	})

	Context("when the sender cancels", func() {
		It("stops a leaf at once during the delay: canceled, never answered", func() {
			it := start()
			var cancel func()
			a := serve(it, 0, get("/"), &cancel)
			en.At(time.Millisecond, func() { cancel() })
			en.Run(-1)
			Expect(a.got).To(BeFalse())
			Expect(it.snapshot().Canceled).To(BeEquivalentTo(1))
			Expect(it.snapshot().Statuses).To(BeEmpty())
		})

		It("lets the work of an instance with capacity run to its answer, then counts it canceled", func() {
			cfg.Capacity = &faults.Capacity{Workers: 1, Queue: 1}
			it := start()
			var cancel func()
			a := serve(it, 0, get("/"), &cancel)
			b := serve(it, 0, get("/"), nil)
			en.At(time.Millisecond, func() { cancel() })
			en.Run(-1)
			Expect(a.got).To(BeFalse())
			// b waited for the worker until the first one's work ended at 2 ms (no body: nobody reads it)
			Expect(b.at).To(Equal(5 * time.Millisecond))
			st := it.snapshot()
			Expect(st.Canceled).To(BeEquivalentTo(1))
			Expect(st.Capacity.QueueWait).To(Equal(2 * time.Millisecond))
		})
	})

	Context("with finite capacity", func() {
		It("serves workers at a time, queues the next, rejects beyond the queue with 503 queue_full", func() {
			cfg.Capacity = &faults.Capacity{Workers: 1, Queue: 1}
			it := start()
			a, b, c := serve(it, 0, get("/"), nil), serve(it, 0, get("/"), nil), serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.at).To(Equal(3 * time.Millisecond))
			Expect(b.at).To(Equal(6 * time.Millisecond))
			Expect(c.at).To(BeZero())
			Expect(c.res).To(Equal(Result{Status: 503, Header: map[string]string{faults.HeaderOverload: faults.OverloadQueueFull}}))
			st := it.snapshot()
			Expect(*st.Capacity).To(Equal(faults.CapacityStats{Workers: 1, Queue: 1, Busy: 6 * time.Millisecond, Queued: 1,
				QueueWait: 3 * time.Millisecond, MaxQueueWait: 3 * time.Millisecond, Rejected: 1}))
			Expect(st.Statuses).To(Equal(map[int]uint64{200: 2, 503: 1}))
		})

		It("answers 503 queue_timeout after queue_timeout", func() {
			cfg.Capacity = &faults.Capacity{Workers: 1, Queue: 5, QueueTimeout: time.Millisecond}
			it := start()
			_, b := serve(it, 0, get("/"), nil), serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(b.at).To(Equal(time.Millisecond))
			Expect(b.res.Header).To(HaveKeyWithValue(faults.HeaderOverload, faults.OverloadQueueTimeout))
			Expect(it.snapshot().Capacity.TimedOut).To(BeEquivalentTo(1))
		})

		It("resets a request that finds the queue full with when_full: refuse", func() {
			cfg.Capacity = &faults.Capacity{Workers: 1, WhenFull: faults.WhenFullRefuse}
			it := start()
			_, b := serve(it, 0, get("/"), nil), serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(b.res).To(Equal(Result{Err: ErrReset}))
			Expect(it.snapshot().Resets).To(BeEquivalentTo(1))
		})
	})

	Context("with a refuse rule", func() {
		It("refuses inside the window, closing the connections in flight, and reopens at its end", func() {
			cfg.Response.Latency = 100 * time.Millisecond
			cfg.Faults = []faults.Fault{{Start: time.Second, Duration: time.Second, Refuse: &faults.Refuse{}}}
			it := start()
			it.startRefuse()
			var refusing []bool
			for _, at := range []time.Duration{500 * time.Millisecond, 1500 * time.Millisecond, 2500 * time.Millisecond} {
				en.At(at, func() { refusing = append(refusing, it.Refusing()) })
			}
			cut := serve(it, 950*time.Millisecond, get("/"), nil)
			en.Run(-1)
			Expect(refusing).To(Equal([]bool{false, true, false}))
			Expect(cut.at).To(Equal(time.Second))
			Expect(cut.res).To(Equal(Result{Err: ErrEOF}))
			Expect(w.events.all()).To(HaveLen(2))
			Expect([]string{w.events.at(0).Detail, w.events.at(1).Detail}).To(Equal([]string{faults.RefuseClosed, faults.RefuseReopened}))
			Expect([]time.Duration{w.events.at(0).At, w.events.at(1).At}).To(Equal([]time.Duration{time.Second, 2 * time.Second}))
			st := it.snapshot()
			Expect(st.Refusals).To(BeEquivalentTo(1))
			Expect(st.Canceled).To(BeEquivalentTo(1))
		})

		It("refuses a request sent while refusing (on a connection kept from before): never arrives", func() {
			cfg.Faults = []faults.Fault{{Start: time.Second, Refuse: &faults.Refuse{}}}
			it := start()
			it.startRefuse()
			a := serve(it, 1500*time.Millisecond, get("/"), nil)
			en.Run(-1)
			Expect(a.got).To(BeTrue())
			Expect(a.at).To(Equal(1500 * time.Millisecond))
			Expect(a.res).To(Equal(Result{Err: ErrRefused}))
			Expect(it.snapshot().Requests).To(BeZero())
		})
	})

	Context("with calls and a propagated deadline", func() {
		It("does not send a call whose budget is spent, and answers on_failure naming the callee", func() {
			cfg.App = &faults.App{PropagateDeadline: true, OnFailure: 502,
				Steps: []faults.Step{{Calls: []faults.Call{{Service: "db"}}}}}
			it := start()
			req := get("/")
			req.Header = map[string]string{faults.HeaderExpectedTimeout: "1"} // 1 ms, the latency is 2 ms
			a := serve(it, 0, req, nil)
			en.Run(-1)
			Expect(a.at).To(Equal(2 * time.Millisecond)) // no body
			Expect(a.res).To(Equal(Result{Status: 502, Header: map[string]string{faults.HeaderFailedCall: "db"}}))
			Expect(w.calls.len()).To(Equal(1))
			Expect(w.calls.at(0).call.Error).To(Equal(faults.CallErrDeadline))
			Expect(w.calls.at(0).call.AttemptsKnown()).To(BeFalse())
			st := it.snapshot()
			Expect([]uint64{st.Calls, st.CallFailures}).To(Equal([]uint64{1, 1}))
		})

		It("makes no call for an aborted request", func() {
			cfg.App = &faults.App{Steps: []faults.Step{{Calls: []faults.Call{{Service: "db"}}}}}
			cfg.Faults = []faults.Fault{{Abort: &faults.Abort{Status: 503, Percent: 100}}}
			it := start()
			a := serve(it, 0, get("/"), nil)
			en.Run(-1)
			Expect(a.res.Status).To(Equal(503))
			Expect(w.calls.len()).To(BeZero())
		})
	})
})
