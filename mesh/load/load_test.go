package load_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"sync"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/mesh/load"
)

var _ = Describe("Run", func() {
	BeforeEach(func() {
		// Registered first, so it runs last: after the servers below are closed.
		baseline := gleak.Goroutines()
		DeferCleanup(func() {
			Eventually(gleak.Goroutines).ShouldNot(gleak.HaveLeaked(baseline))
		})
	})

	serve := func(h http.HandlerFunc) string {
		srv := httptest.NewServer(h)
		DeferCleanup(srv.Close)
		return srv.URL
	}

	Context("against a healthy server", func() {
		var (
			url  string
			mu   sync.Mutex
			seen map[string]int // x-request-id → count
		)

		BeforeEach(func() {
			seen = map[string]int{}
			url = serve(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				seen[r.Header.Get("x-request-id")]++
				mu.Unlock()
				_, _ = io.WriteString(w, "hello")
			})
		})

		It("sends Rate × Duration requests at their intended times, in Seq order", func(ctx SpecContext) {
			before := time.Now()
			samples, start, err := load.Run(ctx, load.Config{URL: url, Rate: 200, Duration: 500 * time.Millisecond})
			Expect(err).NotTo(HaveOccurred())
			Expect(start).To(BeTemporally(">=", before))
			Expect(samples).To(HaveLen(100))
			want := map[string]int{}
			for i, s := range samples {
				Expect(s.Seq).To(BeEquivalentTo(i+1), "sample %d", i)
				Expect(s.Intended).To(Equal(time.Duration(i)*5*time.Millisecond), "sample %d", i)
				Expect(s.Status).To(Equal(http.StatusOK), "sample %d", i)
				Expect(s.Error).To(BeEmpty(), "sample %d", i)
				Expect(s.Sent).To(BeNumerically(">=", s.Intended), "sample %d", i)
				Expect(s.Uncorrected()).To(BeNumerically(">", 0), "sample %d", i)
				want[fmt.Sprintf("mp-%d", i+1)] = 1
			}
			mu.Lock()
			defer mu.Unlock()
			Expect(seen).To(Equal(want))
		})

		It("calls OnStart once with the run's origin before the first request is sent", func(ctx SpecContext) {
			var (
				origins  []time.Time
				received int // requests the server had seen when OnStart ran
			)
			res, err := load.Generate(ctx, load.Config{URL: url, Rate: 100, Duration: 50 * time.Millisecond, KeepSamples: true,
				OnStart: func(t time.Time) {
					mu.Lock()
					defer mu.Unlock()
					origins, received = append(origins, t), len(seen)
				}})
			Expect(err).NotTo(HaveOccurred())
			Expect(origins).To(Equal([]time.Time{res.Start}))
			Expect(received).To(BeZero())
			Expect(res.Samples).To(HaveLen(5))
		})

		It("never has more than MaxInFlight requests in flight, and drops none", func(ctx SpecContext) {
			var inFlight, most int
			url = serve(func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				inFlight++
				most = max(most, inFlight)
				mu.Unlock()
				_, _ = io.WriteString(w, "hello")
				mu.Lock()
				inFlight--
				mu.Unlock()
			})
			samples, _, err := load.Run(ctx, load.Config{URL: url, Rate: 1000, Duration: 20 * time.Millisecond, MaxInFlight: 1})
			Expect(err).NotTo(HaveOccurred())
			Expect(samples).To(HaveLen(20))
			Expect(samples).To(HaveEach(HaveField("Status", http.StatusOK)))
			mu.Lock()
			defer mu.Unlock()
			Expect(most).To(Equal(1))
		})
	})

	It("sends the method, body and headers of the config", func(ctx SpecContext) {
		type got struct{ method, body, header, host string }
		seen := make(chan got, 1)
		url := serve(func(w http.ResponseWriter, r *http.Request) {
			b, _ := io.ReadAll(r.Body)
			seen <- got{r.Method, string(b), r.Header.Get("x-tenant"), r.Host}
			w.WriteHeader(http.StatusServiceUnavailable)
		})
		samples, _, err := load.Run(ctx, load.Config{URL: url, Method: http.MethodPost, Body: []byte("ping"),
			Header: http.Header{"X-Tenant": {"blue"}, "Host": {"checkout.local"}}, Rate: 10, Duration: 100 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		Expect(samples).To(HaveExactElements(And(HaveField("Status", 503), HaveField("Error", ""))))
		Expect(<-seen).To(Equal(got{"POST", "ping", "blue", "checkout.local"}))
	})

	DescribeTable("classifies transport errors",
		func(ctx SpecContext, url func() string, timeout time.Duration, want string) {
			samples, _, err := load.Run(ctx, load.Config{URL: url(), Rate: 100, Duration: 30 * time.Millisecond, Timeout: timeout})
			Expect(err).NotTo(HaveOccurred())
			Expect(samples).To(HaveLen(3))
			Expect(samples).To(HaveEach(And(HaveField("Error", want), HaveField("Status", 0))))
		},
		Entry("a reset connection (SO_LINGER 0)", func() string {
			return serve(hijack(func(c *net.TCPConn) { _ = c.SetLinger(0) }))
		}, time.Duration(0), record.ErrReset),
		Entry("a connection closed before the response", func() string {
			return serve(hijack(func(*net.TCPConn) {}))
		}, time.Duration(0), record.ErrEOF),
		Entry("a closed port", func() string {
			l, err := net.Listen("tcp", "127.0.0.1:0")
			Expect(err).NotTo(HaveOccurred())
			Expect(l.Close()).To(Succeed())
			return "http://" + l.Addr().String()
		}, time.Duration(0), record.ErrRefused),
		Entry("a server slower than the timeout", func() string {
			return serve(func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
		}, 20*time.Millisecond, record.ErrTimeout),
	)

	It("stops early when its context is cancelled, ending requests in flight as canceled", func(ctx SpecContext) {
		arrived := make(chan struct{}, 1000)
		url := serve(func(w http.ResponseWriter, r *http.Request) {
			arrived <- struct{}{}
			<-r.Context().Done() // held until the client goes away
		})
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		type result struct {
			samples []record.Sample
			err     error
		}
		done := make(chan result, 1)
		go func() {
			samples, _, err := load.Run(runCtx, load.Config{URL: url, Rate: 100, Duration: time.Minute})
			done <- result{samples, err}
		}()
		Eventually(ctx, arrived).Should(Receive())
		cancel()
		var r result
		Eventually(ctx, done).Should(Receive(&r))
		Expect(r.err).NotTo(HaveOccurred())
		Expect(len(r.samples)).To(BeNumerically("<", 6000))
		Expect(r.samples).NotTo(BeEmpty())
		Expect(r.samples).To(HaveEach(HaveField("Error", record.ErrCanceled)))
		for i, s := range r.samples {
			Expect(s.Seq).To(BeEquivalentTo(i + 1))
		}
	})

	DescribeTable("rejects an invalid config",
		func(cfg load.Config, want string) {
			_, _, err := load.Run(context.Background(), cfg)
			Expect(err).To(MatchError(want))
		},
		Entry("no URL", load.Config{Rate: 1, Duration: time.Second}, `load: URL "": want an absolute http:// or https:// URL`),
		Entry("a relative URL", load.Config{URL: "/path", Rate: 1, Duration: time.Second}, `load: URL "/path": want an absolute http:// or https:// URL`),
		Entry("zero rate", load.Config{URL: "http://x", Duration: time.Second}, `load: rate 0: want a finite number of requests/s > 0`),
		Entry("zero duration", load.Config{URL: "http://x", Rate: 1}, `load: duration 0s: want > 0`),
		Entry("negative timeout", load.Config{URL: "http://x", Rate: 1, Duration: time.Second, Timeout: -time.Second}, `load: timeout -1s: want > 0 (or 0 for the default 30s)`),
		Entry("negative max in flight", load.Config{URL: "http://x", Rate: 1, Duration: time.Second, MaxInFlight: -1}, `load: max in flight -1: want > 0 (or 0 for the default 10000)`),
		Entry("too many requests", load.Config{URL: "http://x", Rate: 1e9, Duration: time.Second}, `load: 1e+09/s for 1s is more than 100000000 requests`),
		Entry("a bad method", load.Config{URL: "http://x", Method: "GE T", Rate: 1, Duration: time.Second}, `load: net/http: invalid method "GE T"`),
	)
})

// hijack returns a handler that takes over the connection, lets prepare set it up, and closes it
// without a response.
func hijack(prepare func(*net.TCPConn)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err != nil {
			panic(err)
		}
		prepare(conn.(*net.TCPConn))
		_ = conn.Close()
	}
}
