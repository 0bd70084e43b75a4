package faults_test

import (
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptrace"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/faults"
)

// clock is a settable clock for fault windows and event times.
type clock struct {
	mu  sync.Mutex
	now time.Time
	fn  func() time.Time // when set, Now returns its reading instead
}

func (c *clock) Now() time.Time {
	c.mu.Lock()
	fn, now := c.fn, c.now
	c.mu.Unlock()
	if fn != nil {
		return fn()
	}
	return now
}

// SetFunc makes Now read fn (nil: back to the set time).
func (c *clock) SetFunc(fn func() time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.fn = fn
}

func (c *clock) Set(t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.now = t
}

// events collects events from concurrent handlers.
type events struct {
	mu  sync.Mutex
	all []faults.Event
}

func (e *events) Add(ev faults.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) All() []faults.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]faults.Event(nil), e.all...)
}

var _ = Describe("Upstream", func() {
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
		u, err := faults.NewUpstream(cfg)
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		return u
	}

	// get sends one request and returns the response with its body fully read.
	get := func(u *faults.Upstream, requestID string) (*http.Response, []byte, error) {
		GinkgoHelper()
		req, err := http.NewRequest(http.MethodGet, "http://"+u.Addr()+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		if requestID != "" {
			req.Header.Set("x-request-id", requestID)
		}
		resp, err := client.Do(req)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}

	Context("without faults", func() {
		It("answers the status, size and instance header", func() {
			u := start(faults.UpstreamConfig{Service: "checkout", Instance: 2, Response: faults.Response{Status: 202, Size: 512}})
			resp, body, err := get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(202))
			Expect(resp.Header.Get("x-meshproof-instance")).To(Equal("checkout/2"))
			Expect(resp.Header.Get("content-length")).To(Equal("512"))
			Expect(body).To(HaveLen(512))
			Expect(u.Stats()).To(And(
				HaveField("Requests", BeEquivalentTo(1)),
				HaveField("Statuses", Equal(map[int]uint64{202: 1})),
				HaveField("Applied", BeEmpty()),
			))
		})

		// Regression (issue #18): a body was allocated whole per answer, so `size: 100000000000` ran the
		// process out of memory. Bodies are now written in slices of one shared pattern block.
		It("streams a body larger than its write block, byte-exact, with the pattern continuing across writes", func() {
			const size = 3<<20 + 17 // several 64 KiB writes, and a tail that is not a multiple of the period
			u := start(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Size: size}})
			resp, body, err := get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.Header.Get("content-length")).To(Equal(strconv.Itoa(size)))
			Expect(body).To(HaveLen(size))
			const alphabet = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ-_"
			Expect(string(body[:64])).To(Equal(alphabet))
			Expect(string(body)).To(Equal(strings.Repeat(alphabet, size/64) + alphabet[:size%64]))
		})

		It("refuses a response size above MaxBodyBytes", func() {
			_, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Size: faults.MaxBodyBytes + 1}})
			Expect(err).To(MatchError(ContainSubstring("size: 1073741825 is too large")))
		})

		It("reads the request body and keeps one connection alive across requests", func() {
			u := start(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Size: 64}})
			var reused []bool
			for range 5 {
				trace := &httptrace.ClientTrace{GotConn: func(info httptrace.GotConnInfo) { reused = append(reused, info.Reused) }}
				req, err := http.NewRequest(http.MethodPost, "http://"+u.Addr()+"/", strings.NewReader(strings.Repeat("x", 10_000)))
				Expect(err).NotTo(HaveOccurred())
				resp, err := client.Do(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
				Expect(err).NotTo(HaveOccurred())
				_, err = io.Copy(io.Discard, resp.Body)
				Expect(err).NotTo(HaveOccurred())
				Expect(resp.Body.Close()).To(Succeed())
				Expect(resp.StatusCode).To(Equal(200))
			}
			Expect(reused).To(Equal([]bool{false, true, true, true, true}))
			Expect(u.Stats().Connections).To(BeEquivalentTo(1))
			Expect(u.Stats().Requests).To(BeEquivalentTo(5))
		})
	})

	Context("with an abort at 100%", func() {
		It("answers 503 and counts the fault", func() {
			u := start(faults.UpstreamConfig{Service: "checkout", Faults: []faults.Fault{{Abort: &faults.Abort{Status: 503, Percent: 100}}}})
			resp, _, err := get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(503))
			Expect(resp.Header.Get("x-meshproof-instance")).To(Equal("checkout/0"))
			Expect(u.Stats().Statuses).To(Equal(map[int]uint64{503: 1}))
			Expect(u.Stats().Applied).To(Equal(map[string]uint64{"faults[0]/abort": 1}))
		})
	})

	Context("with a reset at 100%", func() {
		It("resets the connection instead of answering", func() {
			u := start(faults.UpstreamConfig{Service: "checkout", Faults: []faults.Fault{{Reset: &faults.Reset{Percent: 100}}}})
			resp, _, err := get(u, "")
			Expect(resp).To(BeNil())
			Expect(err).To(Or(
				MatchError(syscall.ECONNRESET),
				MatchError(ContainSubstring("connection reset by peer")),
			))
			Expect(u.Stats()).To(And(
				HaveField("Requests", BeEquivalentTo(1)),
				HaveField("Resets", BeEquivalentTo(1)),
				HaveField("Statuses", BeEmpty()),
			))
		})
	})

	Context("with latency at 100%", func() {
		It("answers no sooner than the latency", func() {
			u := start(faults.UpstreamConfig{Service: "checkout", Faults: []faults.Fault{
				{Latency: &faults.Latency{Fixed: 30 * time.Millisecond, Percent: 100}},
			}})
			began := time.Now()
			resp, _, err := get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(200))
			Expect(time.Since(began)).To(BeNumerically(">=", 30*time.Millisecond))
		})
	})

	Context("with a clock and a fault window", func() {
		var (
			clk  *clock
			t0   time.Time
			seen *events
			u    *faults.Upstream
		)

		BeforeEach(func() {
			t0 = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
			clk, seen = &clock{now: t0}, &events{}
			u = start(faults.UpstreamConfig{
				Service:  "checkout",
				Instance: 1,
				Seed:     7,
				Start:    t0,
				Now:      clk.Now,
				OnEvent:  seen.Add,
				Faults: []faults.Fault{{
					Name:     "outage",
					Start:    10 * time.Second,
					Duration: 5 * time.Second,
					Latency:  &faults.Latency{Fixed: time.Millisecond, Percent: 100},
					Abort:    &faults.Abort{Status: 503, Percent: 100},
				}},
			})
		})

		It("applies the fault only inside its window", func() {
			status := func(at time.Duration) int {
				clk.Set(t0.Add(at))
				resp, _, err := get(u, "")
				Expect(err).NotTo(HaveOccurred())
				return resp.StatusCode
			}
			Expect(status(5 * time.Second)).To(Equal(200))
			Expect(status(12 * time.Second)).To(Equal(503))
			Expect(status(15 * time.Second)).To(Equal(200))
		})

		It("counts the windows from the run start set after Start", func() {
			u.SetRunStart(t0.Add(time.Minute))
			clk.Set(t0.Add(time.Minute + 5*time.Second))
			resp, _, err := get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(200), "5s after the new start: before the window")
			clk.Set(t0.Add(time.Minute + 12*time.Second))
			resp, _, err = get(u, "")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.StatusCode).To(Equal(503), "12s after the new start: inside the window")
		})

		It("emits one event per applied fault with the request id and sequence", func() {
			clk.Set(t0.Add(11 * time.Second))
			_, _, err := get(u, "req-1")
			Expect(err).NotTo(HaveOccurred())
			_, _, err = get(u, "")
			Expect(err).NotTo(HaveOccurred())

			event := func(seq uint64, requestID, kind, detail string) faults.Event {
				return faults.Event{Time: t0.Add(11 * time.Second), Service: "checkout", Instance: 1,
					Seq: seq, RequestID: requestID, Fault: "outage", Kind: kind, Detail: detail}
			}
			Expect(seen.All()).To(Equal([]faults.Event{
				event(1, "req-1", "latency", "1ms"),
				event(1, "req-1", "abort", "503"),
				event(2, "", "latency", "1ms"),
				event(2, "", "abort", "503"),
			}))
			Expect(u.Stats().Applied).To(Equal(map[string]uint64{"outage/latency": 2, "outage/abort": 2}))
		})
	})

	It("answers the n-th request as Decide does, whatever the interleaving", func() {
		rules := []faults.Fault{{Name: "flaky", Abort: &faults.Abort{Status: 503, Percent: 50}}}
		u := start(faults.UpstreamConfig{Service: "checkout", Instance: 3, Seed: 42, Faults: rules})

		const requests = 50
		statuses := make(chan [2]int, requests)
		var wg sync.WaitGroup
		for range requests {
			wg.Go(func() {
				defer GinkgoRecover()
				resp, _, err := get(u, "")
				Expect(err).NotTo(HaveOccurred())
				seq, err := strconv.Atoi(resp.Header.Get("x-meshproof-seq"))
				Expect(err).NotTo(HaveOccurred())
				statuses <- [2]int{seq, resp.StatusCode}
			})
		}
		wg.Wait()
		close(statuses)
		Expect(statuses).To(HaveLen(requests))
		for got := range statuses {
			want := faults.Decide(faults.Response{}, rules, 0, faults.RequestRand(42, "checkout", 3, uint64(got[0])))
			Expect(got[1]).To(Equal(want.Status), "request %d", got[0])
		}
	})

	Describe("Close", func() {
		It("aborts requests in their delay and leaves no goroutines", func() {
			before := Goroutines()
			u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Latency: time.Minute}})
			Expect(err).NotTo(HaveOccurred())
			Expect(u.Start("127.0.0.1:0")).To(Succeed())

			inFlight := make(chan error, 1)
			go func() {
				defer GinkgoRecover()
				_, _, err := get(u, "")
				inFlight <- err
			}()
			Eventually(func() uint64 { return u.Stats().Requests }).Should(BeEquivalentTo(1))

			Expect(u.Close()).To(Succeed())
			Expect(u.Close()).To(Succeed(), "Close is idempotent")
			Eventually(inFlight).Should(Receive(HaveOccurred()), "the client sees the connection closed")
			Expect(u.Stats().Canceled).To(BeEquivalentTo(1))
			transport.CloseIdleConnections()
			Eventually(Goroutines).ShouldNot(HaveLeaked(before))
		})
	})

	Describe("Start", func() {
		It("refuses to start twice or after Close", func() {
			u := start(faults.UpstreamConfig{Service: "checkout"})
			Expect(u.Start("127.0.0.1:0")).To(MatchError(ContainSubstring("already started on " + u.Addr())))
			Expect(u.Close()).To(Succeed())
			Expect(u.Start("127.0.0.1:0")).To(MatchError(ContainSubstring("closed")))
		})
	})

	DescribeTable("NewUpstream rejects an invalid config",
		func(cfg faults.UpstreamConfig, want string) {
			u, err := faults.NewUpstream(cfg)
			Expect(u).To(BeNil())
			Expect(err).To(MatchError(faults.ErrInvalidConfig))
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("empty service", faults.UpstreamConfig{}, "service: empty, want a service name"),
		Entry("negative instance", faults.UpstreamConfig{Service: "s", Instance: -1}, "instance: -1 is negative, want >= 0"),
		Entry("response status out of range",
			faults.UpstreamConfig{Service: "s", Response: faults.Response{Status: 700}}, "response.status: 700 is out of range, want 200..599"),
		Entry("negative response size",
			faults.UpstreamConfig{Service: "s", Response: faults.Response{Size: -1}}, "response.size: -1 is negative, want 0 to 1073741824 bytes (1 GiB)"),
		Entry("negative response latency",
			faults.UpstreamConfig{Service: "s", Response: faults.Response{Latency: -time.Second}}, "response.latency: -1s is negative, want >= 0"),
		Entry("fault without a kind",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{}}}, "faults[0].{latency,abort,reset,hang,slow_body,close_after,size,h2,refuse}: none set, want at least one"),
		Entry("abort percent above 100",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{abortRule("", 503, 120)}}, "faults[0].abort.percent: 120 is out of range, want 0..100"),
		Entry("abort status below 200",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{abortRule("", 100, 50)}}, "faults[0].abort.status: 100 is out of range, want 200..599"),
		Entry("negative latency percent",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{Latency: &faults.Latency{Percent: -1}}}}, "faults[0].latency.percent: -1 is out of range, want 0..100"),
		Entry("negative latency",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{Latency: &faults.Latency{Fixed: -time.Millisecond, Percent: 1}}}}, "faults[0].latency.fixed: -1ms is negative, want >= 0"),
		Entry("NaN reset percent",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{Reset: &faults.Reset{Percent: math.NaN()}}}}, "faults[0].reset.percent: NaN is out of range, want 0..100"),
		Entry("negative start",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{Start: -time.Second, Reset: &faults.Reset{}}}}, "faults[0].start: -1s is negative, want >= 0"),
		Entry("negative duration",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{{Duration: -time.Second, Reset: &faults.Reset{}}}}, "faults[0].duration: -1s is negative, want >= 0"),
		Entry("duplicate names",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{abortRule("x", 503, 1), abortRule("x", 503, 1)}}, `faults[1]: name "x" is already used by faults[0]`),
		Entry("every error, not just the first",
			faults.UpstreamConfig{Service: "s", Faults: []faults.Fault{abortRule("", 503, 1), abortRule("", 42, 101)}},
			"faults[1].abort.status: 42 is out of range, want 200..599\nfaults[1].abort.percent: 101 is out of range, want 0..100"),
	)

	It("wraps errors so callers can tell bad configs apart", func() {
		_, err := faults.NewUpstream(faults.UpstreamConfig{})
		Expect(errors.Is(err, faults.ErrInvalidConfig)).To(BeTrue())
		Expect(err.Error()).To(HavePrefix("faults: invalid upstream config for /0:"))
	})
})
