package proxy_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
)

// The HTTP local rate limit filter (Filter::decodeHeaders, source/extensions/filters/http/local_ratelimit/
// local_ratelimit.cc; docs "Local rate limit"): a token bucket the filter's requests share, stats under
// <stat_prefix>.http_local_rate_limit, a 429 "local_rate_limited" with x-envoy-ratelimited when enforced.
var _ = Describe("the local rate limit filter", func() {
	all := config.Fraction{Numerator: 100, Denominator: 100}
	var (
		clk *clock.Fake
		u   *upstream
	)
	BeforeEach(func() {
		clk = fakeClock()
		u = newUpstream(ok)
	})
	// bucket is the docs' example at a smaller scale: 2 tokens, 1 more every second.
	bucket := func(change func(*config.LocalRateLimit)) *config.LocalRateLimit {
		l := &config.LocalRateLimit{StatPrefix: "http_local_rate_limiter", Status: 429, MaxTokens: 2, TokensPerFill: 1,
			FillInterval: time.Second, Enabled: all, Enforced: all}
		if change != nil {
			change(l)
		}
		return l
	}
	run := func(filters ...config.HTTPFilter) (*proxy.Server, string) {
		return start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			opts: proxy.Options{Clock: clk}, listener: func(l *config.Listener) { l.HTTPFilters = filters }})
	}
	codes := func(url string, n int) []int {
		GinkgoHelper()
		var out []int
		for range n {
			code, _, _ := get(url + "/")
			out = append(out, code)
		}
		return out
	}
	rlStat := func(srv *proxy.Server, name string) uint64 {
		return stat(srv, "http_local_rate_limiter.http_local_rate_limit."+name)
	}

	It("lets max_tokens requests through, answers the next 429 local_rate_limited with x-envoy-ratelimited, and refills every fill_interval", func() {
		lr := bucket(func(l *config.LocalRateLimit) {
			l.ResponseHeaders = config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "X-Local-Rate-Limit", Value: "true", Action: config.OverwriteIfExistsOrAdd}}}
		})
		srv, url := run(config.HTTPFilter{LocalRateLimit: lr})
		Expect(codes(url, 2)).To(Equal([]int{200, 200}))
		code, hdr, body := get(url + "/")
		Expect(code).To(Equal(429))
		Expect(body).To(Equal("local_rate_limited"))
		Expect(hdr.Get("x-envoy-ratelimited")).To(Equal("true"))
		Expect(hdr.Get("x-local-rate-limit")).To(Equal("true"))
		Expect(u.requests.Load()).To(BeEquivalentTo(2))
		Expect([]uint64{rlStat(srv, "enabled"), rlStat(srv, "ok"), rlStat(srv, "rate_limited"), rlStat(srv, "enforced")}).
			To(Equal([]uint64{3, 2, 1, 1}))
		Expect(stat(srv, "http.ingress.downstream_rq_4xx")).To(BeEquivalentTo(1))

		clk.Step(time.Second) // one token back
		Expect(codes(url, 2)).To(Equal([]int{200, 429}))
		clk.Step(10 * time.Second) // never more than max_tokens
		Expect(codes(url, 3)).To(Equal([]int{200, 200, 429}))
	})

	It("answers with status when it is 400 or more", func() {
		_, url := run(config.HTTPFilter{LocalRateLimit: bucket(func(l *config.LocalRateLimit) { l.Status, l.MaxTokens = 503, 1 })})
		Expect(codes(url, 2)).To(Equal([]int{200, 503}))
	})

	// FilterConfig::enforced is false without filter_enforced: the request over the limit is counted
	// and let through.
	It("only counts a request over the limit when not enforced (filter_enforced absent: 0%)", func() {
		srv, url := run(config.HTTPFilter{LocalRateLimit: bucket(func(l *config.LocalRateLimit) { l.Enforced = config.Fraction{Denominator: 100} })})
		Expect(codes(url, 3)).To(Equal([]int{200, 200, 200}))
		Expect([]uint64{rlStat(srv, "rate_limited"), rlStat(srv, "enforced")}).To(Equal([]uint64{1, 0}))
	})

	It("does nothing without filter_enabled (0%)", func() {
		srv, url := run(config.HTTPFilter{LocalRateLimit: bucket(func(l *config.LocalRateLimit) { l.Enabled = config.Fraction{Denominator: 100} })})
		Expect(codes(url, 3)).To(Equal([]int{200, 200, 200}))
		Expect(rlStat(srv, "enabled")).To(BeZero())
	})

	Context("with the fault filter, in the order of http_filters", func() {
		abort := &config.FaultFilter{Abort: &config.FaultAbort{HTTPStatus: 503, Percent: all}}

		It("takes a token before a fault filter after it aborts", func() {
			srv, url := run(config.HTTPFilter{LocalRateLimit: bucket(nil)}, config.HTTPFilter{Fault: abort})
			Expect(codes(url, 3)).To(Equal([]int{503, 503, 429}))
			Expect(rlStat(srv, "ok")).To(BeEquivalentTo(2))
		})

		It("never sees the requests a fault filter before it aborts", func() {
			srv, url := run(config.HTTPFilter{Fault: abort}, config.HTTPFilter{LocalRateLimit: bucket(nil)})
			Expect(codes(url, 3)).To(Equal([]int{503, 503, 503}))
			Expect(rlStat(srv, "enabled")).To(BeZero())
		})
	})
})
