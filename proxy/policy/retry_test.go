package policy_test

import (
	"math/rand/v2"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/policy"
)

var (
	resp        = func(code int) policy.Outcome { return policy.Outcome{Kind: policy.Response, Status: code} }
	reset       = policy.Outcome{Kind: policy.Reset}
	resetBefore = policy.Outcome{Kind: policy.Reset, BeforeRequest: true}
	refused     = policy.Outcome{Kind: policy.Reset, RefusedStream: true}
	connectFail = policy.Outcome{Kind: policy.ConnectFailure, BeforeRequest: true}
	perTry      = policy.Outcome{Kind: policy.PerTryTimeout}
	overflow    = policy.Outcome{Kind: policy.Overflow}
	rateLimited = func(code int) policy.Outcome {
		return policy.Outcome{Kind: policy.Response, Status: code, RateLimited: true}
	}
	grpc = func(code, status int) policy.Outcome {
		return policy.Outcome{Kind: policy.Response, Status: code, GrpcStatus: status}
	}
	alwaysAdmit = func() bool { return true }
	neverAdmit  = func() bool { return false }
	mustRetryOn = func(s string) policy.RetryOn {
		on, err := policy.ParseRetryOn([]string{s})
		Expect(err).NotTo(HaveOccurred())
		return on
	}
)

var _ = Describe("RetryOn", func() {
	DescribeTable("which outcomes each condition retries (Envoy retry_state_impl)",
		func(cond string, o policy.Outcome, want bool) {
			Expect(mustRetryOn(cond).Retriable(o)).To(Equal(want))
		},
		Entry("5xx retries 500", "5xx", resp(500), true),
		Entry("5xx retries 503", "5xx", resp(503), true),
		Entry("5xx does not retry 409", "5xx", resp(409), false),
		Entry("5xx does not retry 200", "5xx", resp(200), false),
		Entry("5xx retries a reset", "5xx", reset, true),
		Entry("5xx retries a connect failure", "5xx", connectFail, true),
		Entry("5xx retries a per-try timeout", "5xx", perTry, true),
		Entry("5xx never retries a local overflow", "5xx", overflow, false),
		Entry("gateway-error retries 502", "gateway-error", resp(502), true),
		Entry("gateway-error retries 504", "gateway-error", resp(504), true),
		Entry("gateway-error does not retry 500", "gateway-error", resp(500), false),
		Entry("gateway-error retries a reset", "gateway-error", reset, true),
		Entry("gateway-error retries a per-try timeout", "gateway-error", perTry, true),
		Entry("reset retries a reset", "reset", reset, true),
		Entry("reset retries a per-try timeout", "reset", perTry, true),
		Entry("reset does not retry 503", "reset", resp(503), false),
		Entry("connect-failure retries a connect failure", "connect-failure", connectFail, true),
		Entry("connect-failure does not retry a reset", "connect-failure", reset, false),
		Entry("connect-failure does not retry a per-try timeout", "connect-failure", perTry, false),
		Entry("connect-failure does not retry 503", "connect-failure", resp(503), false),
		Entry("retriable-4xx retries 409 only", "retriable-4xx", resp(409), true),
		Entry("retriable-4xx does not retry 404", "retriable-4xx", resp(404), false),
		Entry("reset-before-request retries a reset before the request", "reset-before-request", resetBefore, true),
		Entry("reset-before-request does not retry a later reset", "reset-before-request", reset, false),
		Entry("refused-stream retries REFUSED_STREAM", "refused-stream", refused, true),
		Entry("refused-stream does not retry other resets", "refused-stream", reset, false),
		// RetryStateImpl::wouldRetryFromHeaders: a response with x-envoy-ratelimited is decided by
		// envoy-ratelimited alone, whatever else its status meets.
		Entry("envoy-ratelimited retries a rate-limited 429", "envoy-ratelimited", rateLimited(429), true),
		Entry("envoy-ratelimited does not retry a plain 429", "envoy-ratelimited", resp(429), false),
		Entry("5xx does not retry a rate-limited 503", "5xx", rateLimited(503), false),
		Entry("gateway-error does not retry a rate-limited 503", "gateway-error", rateLimited(503), false),
		Entry("retriable-headers does not retry a rate-limited response", "retriable-headers",
			policy.Outcome{Kind: policy.Response, Status: 429, HeadersMatched: true, RateLimited: true}, false),
		// The gRPC conditions: the grpc-status of the response headers, whatever the HTTP status
		// (RetryStateImpl::wouldRetryFromHeaders); never a reset or a timeout (wouldRetryFromReset).
		Entry("cancelled retries grpc-status 1", "cancelled", grpc(200, 1), true),
		Entry("deadline-exceeded retries grpc-status 4", "deadline-exceeded", grpc(200, 4), true),
		Entry("resource-exhausted retries grpc-status 8", "resource-exhausted", grpc(200, 8), true),
		Entry("internal retries grpc-status 13", "internal", grpc(200, 13), true),
		Entry("unavailable retries grpc-status 14", "unavailable", grpc(200, 14), true),
		Entry("unavailable retries grpc-status 14 on any HTTP status", "unavailable", grpc(503, 14), true),
		Entry("unavailable does not retry grpc-status 13", "unavailable", grpc(200, 13), false),
		Entry("internal does not retry grpc-status 2 (unknown)", "internal", grpc(200, 2), false),
		Entry("unavailable does not retry an invalid grpc-status", "unavailable", grpc(200, -1), false),
		Entry("unavailable does not retry a response without grpc-status", "unavailable", resp(200), false),
		Entry("unavailable does not retry a plain 503", "unavailable", resp(503), false),
		Entry("unavailable does not retry a reset", "unavailable", reset, false),
		Entry("unavailable does not retry a connect failure", "unavailable", connectFail, false),
		Entry("deadline-exceeded does not retry a per-try timeout", "deadline-exceeded", perTry, false),
		Entry("unavailable does not retry a rate-limited response", "unavailable",
			policy.Outcome{Kind: policy.Response, Status: 200, GrpcStatus: 14, RateLimited: true}, false),
		Entry("5xx does not retry grpc-status 14 on a 200", "5xx", grpc(200, 14), false),
	)

	It("rejects conditions it does not know, naming them", func() {
		_, err := policy.ParseRetryOn([]string{"5xx", "sometimes"})
		Expect(err).To(MatchError(ContainSubstring(`"sometimes"`)))
	})
})

var _ = Describe("RetryState", func() {
	It("never retries a rate-limited response under retriable-status-codes (retry_state_impl.cc wouldRetryFromHeaders)", func() {
		rs := policy.NewRetryState(mustRetryOn("retriable-status-codes"), 1).WithStatusCodes([]int{429})
		d, _ := rs.Decide(rateLimited(429), alwaysAdmit)
		Expect(d).To(Equal(policy.NoRetry))
		d, _ = rs.Decide(resp(429), alwaysAdmit)
		Expect(d).To(Equal(policy.Retry))
	})

	It("allows num_retries retries, then reports the limit exceeded", func() {
		rs := policy.NewRetryState(mustRetryOn("5xx"), 2)
		d, _ := rs.Decide(resp(503), alwaysAdmit)
		Expect(d).To(Equal(policy.Retry))
		d, _ = rs.Decide(resp(503), alwaysAdmit)
		Expect(d).To(Equal(policy.Retry))
		d, _ = rs.Decide(resp(503), alwaysAdmit)
		Expect(d).To(Equal(policy.LimitExceeded))
	})

	It("reports retry success only when an armed retry needed no further retry", func() {
		rs := policy.NewRetryState(mustRetryOn("5xx"), 1)
		d, success := rs.Decide(resp(200), alwaysAdmit)
		Expect(d).To(Equal(policy.NoRetry))
		Expect(success).To(BeFalse(), "the first try was not a retry")

		rs = policy.NewRetryState(mustRetryOn("5xx"), 1)
		_, _ = rs.Decide(resp(503), alwaysAdmit)
		d, success = rs.Decide(resp(200), alwaysAdmit)
		Expect(d).To(Equal(policy.NoRetry))
		Expect(success).To(BeTrue())
	})

	It("consumes the retry before asking the breaker, and reports overflow when it is full", func() {
		rs := policy.NewRetryState(mustRetryOn("5xx"), 1)
		d, _ := rs.Decide(resp(503), neverAdmit)
		Expect(d).To(Equal(policy.RetryOverflow))
		d, _ = rs.Decide(resp(503), alwaysAdmit)
		Expect(d).To(Equal(policy.LimitExceeded), "the overflowed retry still used up num_retries")
	})

	It("does not ask the breaker for outcomes it will not retry", func() {
		asked := false
		rs := policy.NewRetryState(mustRetryOn("5xx"), 1)
		d, _ := rs.Decide(resp(404), func() bool { asked = true; return true })
		Expect(d).To(Equal(policy.NoRetry))
		Expect(asked).To(BeFalse())
	})
})

var _ = Describe("Backoff", func() {
	It("draws each delay below min(base·2^(n−1), max) with Envoy's defaults", func() {
		rng := rand.New(rand.NewPCG(1, 2))
		bounds := []time.Duration{25, 50, 100, 200, 250, 250}
		for trial := 0; trial < 200; trial++ {
			b := policy.NewBackoff(25*time.Millisecond, 250*time.Millisecond)
			for _, bound := range bounds {
				Expect(b.Next(rng)).To(BeNumerically("<", bound*time.Millisecond))
			}
		}
	})

	It("spreads delays over the whole range (full jitter)", func() {
		rng := rand.New(rand.NewPCG(3, 4))
		var low, high int
		for range 2000 {
			d := policy.NewBackoff(100*time.Millisecond, time.Second).Next(rng)
			if d < 25*time.Millisecond {
				low++
			}
			if d >= 75*time.Millisecond {
				high++
			}
		}
		Expect(low).To(BeNumerically("~", 500, 100))
		Expect(high).To(BeNumerically("~", 500, 100))
	})
})

var _ = Describe("RoundRobin", func() {
	It("cycles through equal hosts in order", func() {
		rr := policy.NewRoundRobin([]uint32{1, 1, 1})
		var got []int
		for range 6 {
			got = append(got, rr.Pick(nil))
		}
		Expect(got).To(Equal([]int{0, 1, 2, 0, 1, 2}))
	})

	It("honours weights, spreading picks evenly", func() {
		rr := policy.NewRoundRobin([]uint32{5, 1, 1})
		counts := map[int]int{}
		for range 70 {
			counts[rr.Pick(nil)]++
		}
		Expect(counts).To(Equal(map[int]int{0: 50, 1: 10, 2: 10}))
	})

	It("skips excluded hosts unless every host is excluded", func() {
		rr := policy.NewRoundRobin([]uint32{1, 1})
		Expect(rr.Pick(func(i int) bool { return i == 0 })).To(Equal(1))
		Expect(rr.Pick(func(i int) bool { return i == 0 })).To(Equal(1))
		Expect(rr.Pick(func(int) bool { return true })).To(BeElementOf(0, 1))
	})

	It("returns -1 without hosts", func() {
		Expect(policy.NewRoundRobin(nil).Pick(nil)).To(Equal(-1))
	})
})

var _ = Describe("retriable-headers", func() {
	It("retries a response whose headers matched, whatever its status", func() {
		on := mustRetryOn("retriable-headers")
		Expect(on.Retriable(policy.Outcome{Kind: policy.Response, Status: 200, HeadersMatched: true})).To(BeTrue())
		Expect(on.Retriable(policy.Outcome{Kind: policy.Response, Status: 503})).To(BeFalse())
	})
})

var _ = Describe("RateLimitedDelay", func() {
	now := time.Unix(1_700_000_000, 0)
	headers := []policy.ResetHeader{{Name: "Retry-After"}, {Name: "X-RateLimit-Reset", UnixTimestamp: true}}
	get := func(h map[string]string) func(string) string { return func(n string) string { return h[n] } }

	It("draws the delay in [interval, 1.5·interval) from the first header that parses", func() {
		rng := rand.New(rand.NewPCG(5, 6))
		for range 200 {
			d, ok := policy.RateLimitedDelay(headers, time.Minute, get(map[string]string{"Retry-After": "2"}), now, rng)
			Expect(ok).To(BeTrue())
			Expect(d).To(And(BeNumerically(">=", 2*time.Second), BeNumerically("<", 3*time.Second)))
		}
	})

	It("reads a Unix timestamp as the time until then", func() {
		d, ok := policy.RateLimitedDelay(headers, time.Minute, get(map[string]string{"X-RateLimit-Reset": "1700000010"}), now, rand.New(rand.NewPCG(1, 1)))
		Expect(ok).To(BeTrue())
		Expect(d).To(And(BeNumerically(">=", 10*time.Second), BeNumerically("<", 15*time.Second)))
	})

	It("skips intervals above max_interval, in the past, or unparsable", func() {
		for _, h := range []map[string]string{{"Retry-After": "600"}, {"X-RateLimit-Reset": "1600000000"}, {"Retry-After": "soon"}, {}} {
			_, ok := policy.RateLimitedDelay(headers, 5*time.Minute, get(h), now, rand.New(rand.NewPCG(1, 1)))
			Expect(ok).To(BeFalse(), "%v", h)
		}
	})
})
