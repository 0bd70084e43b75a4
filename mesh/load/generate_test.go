package load_test

import (
	"bufio"
	"bytes"
	"encoding/csv"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/mesh/load"
)

var _ = Describe("Generate", func() {
	BeforeEach(func() {
		baseline := gleak.Goroutines()
		DeferCleanup(func() {
			Eventually(gleak.Goroutines).ShouldNot(gleak.HaveLeaked(baseline))
		})
	})

	// newServer starts a loopback server counting the connections it accepts.
	newServer := func(h http.HandlerFunc, h2c bool) (string, *atomic.Int64) {
		var conns atomic.Int64
		srv := httptest.NewUnstartedServer(h)
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		if h2c {
			srv.Config.Protocols = new(http.Protocols)
			srv.Config.Protocols.SetHTTP1(true)
			srv.Config.Protocols.SetUnencryptedHTTP2(true)
		}
		srv.Start()
		DeferCleanup(srv.Close)
		return srv.URL, &conns
	}
	ok := func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "hello") }

	Describe("the reported percentiles", func() {
		It("match the exact percentiles of the raw log within 0.1%", func(ctx SpecContext) {
			// Responses take 0..3ms, varying with the request id, for a spread of latencies.
			url, _ := newServer(func(w http.ResponseWriter, r *http.Request) {
				id, _ := strconv.Atoi(r.Header.Get("x-request-id")[3:])
				time.Sleep(time.Duration(id*7919%3000) * time.Microsecond)
				_, _ = io.WriteString(w, "hello")
			}, false)
			var raw bytes.Buffer
			res, err := load.Generate(ctx, load.Config{URL: url, Rate: 2000, Duration: time.Second, Raw: &raw})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.RawErr).NotTo(HaveOccurred())

			rows, err := csv.NewReader(&raw).ReadAll()
			Expect(err).NotTo(HaveOccurred())
			Expect(rows[0]).To(Equal([]string{"seq", "phase", "intended_ns", "sent_ns", "latency_ns", "uncorrected_ns", "status", "error"}))
			Expect(rows).To(HaveLen(2001))
			var corrected, uncorrected []time.Duration
			for _, row := range rows[1:] {
				Expect(row[1]).To(Equal("main"))
				Expect(row[6]).To(Equal("200"))
				c, _ := strconv.ParseInt(row[4], 10, 64)
				u, _ := strconv.ParseInt(row[5], 10, 64)
				corrected, uncorrected = append(corrected, time.Duration(c)), append(uncorrected, time.Duration(u))
			}
			for _, q := range []float64{0.5, 0.9, 0.99, 0.999, 0.9999, 1} {
				for _, view := range []struct {
					hist  *record.LatencyHist
					exact []time.Duration
				}{{res.Hist.Latency.Corrected, corrected}, {res.Hist.Latency.Uncorrected, uncorrected}} {
					want := record.ExactPercentile(view.exact, q)
					Expect(float64(view.hist.Quantile(q))).To(BeNumerically("~", float64(want), 0.001*float64(want)), "q=%g", q)
				}
			}
			Expect(res.Hist.Latency.Corrected.Max()).To(Equal(record.ExactPercentile(corrected, 1)))
			Expect(res.Hist.Phases[0].Requests).To(BeEquivalentTo(2000))
			// Not whether the rate held: that is wall-clock performance (2,000/s under the race detector
			// on 2 cores, beside another spec), which failed CI on a loaded machine; the phase's requests are
			// counted above, and rate-held reporting has its own spec.
			Expect(res.Samples).To(BeEmpty()) // not kept unless asked
		})
	})

	// A server that stalls: requests arriving in [stallAt, stallAt+stall) after its first request are
	// held until the stall ends.
	//
	// Open loop at 200/s for 2s is 400 requests; the 80 intended during the 400ms stall each end when
	// it does, so their corrected latency is spread evenly over (0, 400ms] while the other 320 are fast.
	// Then P(latency > x) = (80/400)·(1 − x/400ms) for x ≤ 400ms; p99 is where that is 1%:
	// 0.2·(1 − x/400ms) = 0.01 ⇒ x = 380ms. With 2 connections the generator is coordinated like wrk:
	// only the 2 requests on the wire during the stall wait on it, the others wait in the generator
	// (send lag) and are then answered at once; from the actual send, 2 slow requests of 400 (0.5%)
	// cannot move the p99, which stays at the server's fast answers.
	It("corrects for coordinated omission: a stall shows in the corrected p99, not in the uncorrected one", func(ctx SpecContext) {
		const stallAt, stall = time.Second, 400 * time.Millisecond
		var once sync.Once
		var first time.Time
		url, _ := newServer(func(w http.ResponseWriter, r *http.Request) {
			once.Do(func() { first = time.Now() })
			if since := time.Since(first); since >= stallAt && since < stallAt+stall {
				t := time.NewTimer(stallAt + stall - since)
				defer t.Stop()
				select {
				case <-t.C:
				case <-r.Context().Done():
				}
			}
			_, _ = io.WriteString(w, "hello")
		}, false)
		res, err := load.Generate(ctx, load.Config{URL: url, Rate: 200, Duration: 2 * time.Second, Connections: 2})
		Expect(err).NotTo(HaveOccurred())
		h := res.Hist
		Expect(h.Requests).To(BeEquivalentTo(400))
		Expect(h.Successes).To(BeEquivalentTo(400))
		Expect(h.Latency.Corrected.Quantile(0.99)).To(BeNumerically("~", 380*time.Millisecond, 40*time.Millisecond))
		Expect(h.Latency.Corrected.Max()).To(BeNumerically("~", stall, 50*time.Millisecond))
		Expect(h.Latency.Uncorrected.Quantile(0.99)).To(BeNumerically("<", 50*time.Millisecond))
		Expect(h.MaxSendLag).To(BeNumerically(">", 300*time.Millisecond)) // the queue behind the 2 connections
		Expect(res.Connections).To(BeEquivalentTo(2))
	})

	Context("in closed loop", func() {
		It("keeps exactly N requests in flight, each intended when sent", func(ctx SpecContext) {
			var mu sync.Mutex
			inFlight, most := 0, 0
			url, _ := newServer(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				inFlight++
				most = max(most, inFlight)
				mu.Unlock()
				time.Sleep(2 * time.Millisecond)
				mu.Lock()
				inFlight--
				mu.Unlock()
			}, false)
			res, err := load.Generate(ctx, load.Config{URL: url, Concurrency: 4, Duration: 200 * time.Millisecond, KeepSamples: true})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Closed).To(BeTrue())
			mu.Lock()
			Expect(most).To(Equal(4))
			mu.Unlock()
			Expect(len(res.Samples)).To(BeNumerically(">", 8))
			for i, s := range res.Samples {
				Expect(s.Seq).To(BeEquivalentTo(i + 1))
				Expect(s.Intended).To(Equal(s.Sent), "closed loop: intended = sent")
				Expect(s.Latency).To(Equal(s.Uncorrected()))
			}
			Expect(res.Hist.Latency.Corrected.Quantile(0.99)).To(Equal(res.Hist.Latency.Uncorrected.Quantile(0.99)))
			Expect(res.Connections).To(BeEquivalentTo(4))
			Expect(res.Hist.Phases[0].Name).To(Equal("closed"))
			Expect(res.Hist.RateHeld()).To(BeTrue())
		})

		It("pauses each worker for the think time between requests", func(ctx SpecContext) {
			url, _ := newServer(ok, false)
			res, err := load.Generate(ctx, load.Config{URL: url, Concurrency: 1, Think: 40 * time.Millisecond, Duration: 200 * time.Millisecond})
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Hist.Requests).To(BeNumerically("<=", 5)) // each cycle takes ≥ 40ms
			Expect(res.Hist.Requests).To(BeNumerically(">=", 1))
		})
	})

	DescribeTable("opens exactly the connections asked for, and shares them",
		func(ctx SpecContext, h2c bool, cfg load.Config, want int) {
			url, conns := newServer(ok, h2c)
			cfg.URL, cfg.H2C = url, h2c
			res, err := load.Generate(ctx, cfg)
			Expect(err).NotTo(HaveOccurred())
			Expect(res.Hist.Successes).To(Equal(res.Hist.Requests))
			Expect(conns.Load()).To(BeEquivalentTo(want))
			Expect(res.Connections).To(BeEquivalentTo(want))
		},
		Entry("HTTP/1.1, open loop", false, load.Config{Rate: 1000, Duration: 100 * time.Millisecond, Connections: 3}, 3),
		Entry("HTTP/1.1, closed loop with fewer connections than workers", false, load.Config{Concurrency: 8, Duration: 50 * time.Millisecond, Connections: 2}, 2),
		Entry("h2c, open loop", true, load.Config{Rate: 1000, Duration: 100 * time.Millisecond, Connections: 2}, 2),
		Entry("h2c, default: one connection", true, load.Config{Rate: 1000, Duration: 100 * time.Millisecond}, 1),
		Entry("h2c, closed loop", true, load.Config{Concurrency: 8, Duration: 50 * time.Millisecond, Connections: 3}, 3),
	)

	It("speaks h2c with prior knowledge", func(ctx SpecContext) {
		var protos sync.Map
		url, _ := newServer(func(w http.ResponseWriter, r *http.Request) {
			protos.Store(r.Proto, true)
			if r.Header.Get("x-request-id") == "" {
				w.WriteHeader(http.StatusBadRequest)
			}
			_, _ = io.WriteString(w, "hello")
		}, true)
		res, err := load.Generate(ctx, load.Config{URL: url, H2C: true, Rate: 500, Duration: 100 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Hist.StatusCodes).To(Equal(map[int]uint64{200: 50}))
		var seen []any
		protos.Range(func(k, _ any) bool { seen = append(seen, k); return true })
		Expect(seen).To(ConsistOf("HTTP/2.0"))
	})

	It("draws the request mix in proportion to the weights, each entry with its method, path and body", func(ctx SpecContext) {
		var mu sync.Mutex
		seen := map[string]int{}
		url, _ := newServer(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			mu.Lock()
			seen[r.Method+" "+r.URL.RequestURI()+" "+string(b)+" "+r.Header.Get("x-kind")]++
			mu.Unlock()
		}, false)
		res, err := load.Generate(ctx, load.Config{URL: url + "/base?x=1", Rate: 5000, Duration: 400 * time.Millisecond, Seed: 9,
			Header: http.Header{"X-Kind": {"all"}},
			Mix: []load.Request{
				{Weight: 1, Body: []byte("one")},
				{Weight: 3, Method: http.MethodPost, Path: "/orders?id=2", Body: []byte("three"), Header: http.Header{"X-Kind": {"order"}}},
			}})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Hist.Requests).To(BeEquivalentTo(2000))
		mu.Lock()
		defer mu.Unlock()
		Expect(seen).To(HaveLen(2))
		Expect(float64(seen["POST /orders?id=2 three order"])).To(BeNumerically("~", 1500, 60)) // 3σ ≈ 58
		Expect(seen["GET /base?x=1 one all"] + seen["POST /orders?id=2 three order"]).To(Equal(2000))
	})

	// Serial: it judges the achieved rate of each phase, which another spec running beside it on the
	// 2 cores could spoil.
	It("reports achieved against target rate per phase, and per second", Serial, func(ctx SpecContext) {
		url, _ := newServer(ok, false)
		res, err := load.Generate(ctx, load.Config{URL: url, Phases: []load.Phase{
			load.Constant("warm", 200*time.Millisecond, 100),
			load.Ramp("ramp", 200*time.Millisecond, 100, 300),
			load.Bursts("spike", 200*time.Millisecond, 10, 100*time.Millisecond),
		}, Poisson: false})
		Expect(err).NotTo(HaveOccurred())
		ph := res.Hist.Phases
		Expect(ph).To(HaveLen(3))
		Expect([]uint64{ph[0].Requests, ph[1].Requests, ph[2].Requests}).To(Equal([]uint64{20, 40, 20}))
		Expect(ph[1].TargetRate()).To(BeNumerically("~", 200, 1e-9))
		for _, p := range ph {
			Expect(p.AchievedRate()).To(BeNumerically("~", p.TargetRate(), 0.05*p.TargetRate()), p.Name)
			Expect(p.RateHeld()).To(BeTrue(), p.Name)
		}
		Expect(res.Hist.Seconds).NotTo(BeEmpty())
		Expect(res.Hist.Seconds[0].Intended).To(BeEquivalentTo(80))
	})

	It("writes the raw log as JSON lines", func(ctx SpecContext) {
		url, _ := newServer(ok, false)
		var raw bytes.Buffer
		_, err := load.Generate(ctx, load.Config{URL: url, Rate: 100, Duration: 100 * time.Millisecond, Raw: &raw, RawFormat: load.RawJSONL})
		Expect(err).NotTo(HaveOccurred())
		sc := bufio.NewScanner(&raw)
		n := 0
		for sc.Scan() {
			var line map[string]any
			Expect(json.Unmarshal(sc.Bytes(), &line)).To(Succeed())
			Expect(line).To(HaveKeyWithValue("status", 200.0))
			Expect(line).To(HaveKeyWithValue("phase", "main"))
			Expect(line).To(HaveKey("latency_ns"))
			n++
		}
		Expect(n).To(Equal(10))
	})

	DescribeTable("rejects an invalid config",
		func(ctx SpecContext, cfg load.Config, want string) {
			if cfg.URL == "" {
				cfg.URL = "http://x"
			}
			_, err := load.Generate(ctx, cfg)
			Expect(err).To(MatchError(want))
		},
		Entry("rate and phases", load.Config{Rate: 1, Phases: load.Steps("s", time.Second, 1)}, `load: rate 1 and 1 phases: set one or the other`),
		Entry("a phase without duration", load.Config{Phases: []load.Phase{{Name: "p", Rate: 1}}}, `load: phase 1 (p): duration 0s: want > 0`),
		Entry("a burst without period", load.Config{Phases: []load.Phase{{Duration: time.Second, Burst: 3}}}, `load: phase 1: burst period 0s: want > 0`),
		Entry("a negative ramp", load.Config{Phases: []load.Phase{load.Ramp("r", time.Second, 1, -1)}}, `load: phase 1 (r): ramp to -1: want a finite number of requests/s ≥ 0`),
		Entry("phases planning nothing", load.Config{Phases: []load.Phase{load.Constant("idle", time.Second, 0)}}, `load: the phases plan no request (0 in total)`),
		Entry("negative connections", load.Config{Rate: 1, Duration: time.Second, Connections: -1}, `load: connections -1: want > 0 (or 0 to open them as needed)`),
		Entry("think time in open loop", load.Config{Rate: 1, Duration: time.Second, Think: time.Second}, `load: think time 1s: only for closed loop (concurrency without a rate)`),
		Entry("Poisson in closed loop", load.Config{Concurrency: 2, Duration: time.Second, Poisson: true}, `load: Poisson arrivals need a rate: closed loop has no schedule`),
		Entry("h2c over https", load.Config{URL: "https://x", H2C: true, Rate: 1, Duration: time.Second}, `load: h2c needs an http:// URL, not "https://x"`),
		Entry("a zero weight", load.Config{Rate: 1, Duration: time.Second, Mix: []load.Request{{}}}, `load: mix[0]: weight 0: want > 0`),
		Entry("an absolute mix path", load.Config{Rate: 1, Duration: time.Second, Mix: []load.Request{{Weight: 1, Path: "http://y/"}}}, `load: mix[0]: path "http://y/": want a path and query starting with /`),
		Entry("a header with a newline", load.Config{Rate: 1, Duration: time.Second, Header: http.Header{"X-A": {"a\r\nb"}}}, `load: invalid value for header "X-A"`),
		Entry("a bad raw format", load.Config{Rate: 1, Duration: time.Second, RawFormat: "xml"}, `load: raw format "xml": want "csv" or "jsonl"`),
	)
})
