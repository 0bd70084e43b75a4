package faults_test

import (
	"math/rand/v2"
	"net/http"
	"slices"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

// samples draws n delays from l, each from its own request's random source.
func samples(l faults.Latency, n int) []time.Duration {
	out := make([]time.Duration, n)
	for i := range out {
		out[i] = l.Sample(faults.RequestRand(7, "checkout", 0, uint64(i+1)))
	}
	slices.Sort(out)
	return out
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	return sorted[int(q*float64(len(sorted)-1))]
}

func intp(n int) *int { return &n }

var _ = Describe("Latency.Sample", func() {
	const n = 20_000

	It("returns Fixed as is", func() {
		Expect(samples(faults.Latency{Fixed: 50 * time.Millisecond}, 10)).To(HaveEach(50 * time.Millisecond))
	})

	It("draws uniform delays within [min, max)", func() {
		s := samples(faults.Latency{Uniform: &faults.Uniform{Min: 10 * time.Millisecond, Max: 20 * time.Millisecond}}, n)
		Expect(s[0]).To(BeNumerically(">=", 10*time.Millisecond))
		Expect(s[n-1]).To(BeNumerically("<", 20*time.Millisecond))
		Expect(quantile(s, 0.5)).To(BeNumerically("~", 15*time.Millisecond, 300*time.Microsecond))
	})

	It("draws normal delays around the mean, never negative", func() {
		s := samples(faults.Latency{Normal: &faults.Normal{Mean: 10 * time.Millisecond, StdDev: 10 * time.Millisecond}}, n)
		Expect(s[0]).To(BeNumerically(">=", 0))
		Expect(quantile(s, 0.5)).To(BeNumerically("~", 10*time.Millisecond, 400*time.Microsecond))
		Expect(quantile(s, 0.8413)).To(BeNumerically("~", 20*time.Millisecond, 800*time.Microsecond), "one sigma above")
	})

	DescribeTable("draws log-normal delays with the median and p99 asked for",
		func(ln faults.LogNormal) {
			s := samples(faults.Latency{LogNormal: &ln}, n)
			Expect(quantile(s, 0.5)).To(BeNumerically("~", 20*time.Millisecond, time.Millisecond))
			Expect(quantile(s, 0.99)).To(BeNumerically("~", 200*time.Millisecond, 25*time.Millisecond))
		},
		Entry("from p99", faults.LogNormal{Median: 20 * time.Millisecond, P99: 200 * time.Millisecond}),
		Entry("from sigma", faults.LogNormal{Median: 20 * time.Millisecond, Sigma: 0.98979}), // ln(10)/z99
	)

	It("draws a Pareto long tail never below the scale", func() {
		s := samples(faults.Latency{Pareto: &faults.Pareto{Scale: 10 * time.Millisecond, Shape: 2}}, n)
		Expect(s[0]).To(BeNumerically(">=", 10*time.Millisecond))
		// P(X > x) = (scale/x)^shape: the median is scale·2^(1/shape), p99 is scale·100^(1/shape).
		Expect(quantile(s, 0.5)).To(BeNumerically("~", 14142*time.Microsecond, 500*time.Microsecond))
		Expect(quantile(s, 0.99)).To(BeNumerically("~", 100*time.Millisecond, 12*time.Millisecond))
	})

	It("adds a jitter within ±Jitter and clamps to [0, Max]", func() {
		s := samples(faults.Latency{Fixed: 10 * time.Millisecond, Jitter: 5 * time.Millisecond}, n)
		Expect(s[0]).To(BeNumerically(">=", 5*time.Millisecond))
		Expect(s[n-1]).To(BeNumerically("<=", 15*time.Millisecond))
		Expect(s[0]).To(BeNumerically("<", 6*time.Millisecond), "the jitter spreads the whole range")

		capped := samples(faults.Latency{Pareto: &faults.Pareto{Scale: time.Millisecond, Shape: 0.5}, Max: 50 * time.Millisecond}, n)
		Expect(capped[n-1]).To(Equal(50 * time.Millisecond))
		Expect(samples(faults.Latency{Jitter: time.Millisecond}, n)[0]).To(BeZero(), "negative delays become 0")
	})
})

var _ = Describe("DecideRequest", func() {
	var rng *rand.Rand
	BeforeEach(func() { rng = rand.New(rand.NewPCG(7, 11)) })

	req := func(seq uint64, method, path string, header http.Header) faults.Request {
		return faults.Request{Seq: seq, Method: method, Path: path, Header: header}
	}

	DescribeTable("targets requests with match",
		func(m faults.Match, r faults.Request, want bool) {
			rule := faults.Fault{Name: "f", Match: &m, Abort: &faults.Abort{Status: 503, Percent: 100}}
			Expect(faults.DecideRequest(faults.Response{}, []faults.Fault{rule}, r, rng).Status == 503).To(Equal(want))
		},
		Entry("exact path", faults.Match{Path: "/pay"}, req(1, "GET", "/pay", nil), true),
		Entry("exact path, other path", faults.Match{Path: "/pay"}, req(1, "GET", "/pay/1", nil), false),
		Entry("prefix", faults.Match{PathPrefix: "/api/"}, req(1, "GET", "/api/v1", nil), true),
		Entry("prefix, other path", faults.Match{PathPrefix: "/api/"}, req(1, "GET", "/health", nil), false),
		Entry("regex matches the whole path", faults.Match{PathRegex: `/items/\d+`}, req(1, "GET", "/items/42", nil), true),
		Entry("regex, partial match only", faults.Match{PathRegex: `/items/\d+`}, req(1, "GET", "/items/42/x", nil), false),
		Entry("method", faults.Match{Method: "POST"}, req(1, "POST", "/", nil), true),
		Entry("method, other method", faults.Match{Method: "POST"}, req(1, "GET", "/", nil), false),
		Entry("header, any case of the name", faults.Match{Headers: map[string]string{"X-User": "canary"}},
			req(1, "GET", "/", http.Header{"X-User": {"a", "canary"}}), true),
		Entry("header, other value", faults.Match{Headers: map[string]string{"x-user": "canary"}},
			req(1, "GET", "/", http.Header{"X-User": {"stable"}}), false),
		Entry("every condition must hold", faults.Match{Method: "POST", PathPrefix: "/api"}, req(1, "GET", "/api", nil), false),
	)

	DescribeTable("applies sequences by request number",
		func(rule faults.Fault, want []uint64) {
			rule.Name, rule.Abort = "f", &faults.Abort{Status: 503, Percent: 100}
			var got []uint64
			for n := uint64(1); n <= 12; n++ {
				if faults.DecideRequest(faults.Response{}, []faults.Fault{rule}, req(n, "GET", "/", nil), rng).Status == 503 {
					got = append(got, n)
				}
			}
			Expect(got).To(Equal(want))
		},
		Entry("first 2", faults.Fault{First: 2}, []uint64{1, 2}),
		Entry("every 5th", faults.Fault{Every: 5}, []uint64{5, 10}),
		Entry("every 2nd of the first 6", faults.Fault{First: 6, Every: 2}, []uint64{2, 4, 6}),
	)

	It("never applies first or every when the sequence is unknown (Decide)", func() {
		rule := faults.Fault{Name: "f", First: 3, Abort: &faults.Abort{Status: 503, Percent: 100}}
		Expect(faults.Decide(faults.Response{}, []faults.Fault{rule}, 0, rng).Status).To(Equal(200))
	})

	Context("with every kind firing", func() {
		all := func(name string) faults.Fault {
			return faults.Fault{Name: name,
				Abort:      &faults.Abort{Status: 503, Percent: 100},
				Size:       &faults.Size{Bytes: 100, Percent: 100},
				SlowBody:   &faults.SlowBody{BytesPerSecond: 1000, Percent: 100},
				CloseAfter: &faults.CloseAfter{Bytes: 10, Percent: 100},
			}
		}

		It("shapes the answer with abort, size, slow body and close_after, in that order", func() {
			d := faults.DecideRequest(faults.Response{Size: 5}, []faults.Fault{all("f")}, req(1, "GET", "/", nil), rng)
			Expect(d).To(Equal(faults.Decision{Status: 503, Size: 100, BytesPerSecond: 1000, Cut: faults.CutClose, CutAfter: 10,
				Applied: []faults.Applied{
					{Fault: "f", Kind: "abort", Detail: "503"},
					{Fault: "f", Kind: "size", Detail: "100 bytes"},
					{Fault: "f", Kind: "slow_body", Detail: "1000 B/s"},
					{Fault: "f", Kind: "close_after", Detail: "fin after 10 bytes"},
				}}))
		})

		It("lets a mid-body reset win over close_after, capped at the body size", func() {
			rules := []faults.Fault{all("f"), {Name: "r", Reset: &faults.Reset{Percent: 100, AfterBytes: intp(1000)}}}
			d := faults.DecideRequest(faults.Response{}, rules, req(1, "GET", "/", nil), rng)
			Expect(d.Cut).To(Equal(faults.CutReset))
			Expect(d.CutAfter).To(Equal(100))
			Expect(d.Reset).To(BeFalse(), "headers are sent first")
			Expect(d.Applied[len(d.Applied)-1]).To(Equal(faults.Applied{Fault: "r", Kind: "reset", Detail: "rst after 100 bytes"}))
		})

		It("lets h2 win over hang and hang over the answer", func() {
			hang := faults.Fault{Name: "h", Hang: &faults.Hang{Percent: 100}}
			h2 := faults.Fault{Name: "x", H2: &faults.H2{RSTStream: "REFUSED_STREAM", Percent: 100}}
			rules := []faults.Fault{all("f"), hang, h2}
			d := faults.DecideRequest(faults.Response{}, rules, faults.Request{Seq: 1, HTTP2: true}, rng)
			Expect(d.RSTStream).To(Equal("REFUSED_STREAM"))
			Expect(d.Applied).To(Equal([]faults.Applied{{Fault: "x", Kind: "rst_stream", Detail: "REFUSED_STREAM"}}))

			d = faults.DecideRequest(faults.Response{}, rules, faults.Request{Seq: 1}, rng)
			Expect(d.Hang).To(BeTrue(), "h2 faults never apply to HTTP/1.1")
			Expect(d.Applied).To(Equal([]faults.Applied{{Fault: "h", Kind: "hang", Detail: "hang"}}))
		})

		It("answers a gRPC abort as HTTP 200 without a body", func() {
			rule := faults.Fault{Name: "g", Abort: &faults.Abort{GRPCStatus: 14, Percent: 100}}
			d := faults.DecideRequest(faults.Response{Size: 64}, []faults.Fault{rule}, req(1, "POST", "/", nil), rng)
			Expect(d).To(Equal(faults.Decision{Status: 200, GRPCStatus: 14, Applied: []faults.Applied{{Fault: "g", Kind: "abort", Detail: "grpc 14"}}}))
		})
	})
})

var _ = Describe("Fault schedules", func() {
	flap := faults.Fault{Name: "flap", Start: 10 * time.Second, Duration: 10 * time.Second,
		Flap: &faults.Flap{Down: time.Second, Up: 2 * time.Second}, Refuse: &faults.Refuse{}}

	DescribeTable("flap is active in its down periods inside the window",
		func(at time.Duration, want bool) { Expect(flap.Active(at)).To(Equal(want)) },
		Entry("before the window", 9*time.Second, false),
		Entry("first down period", 10*time.Second, true),
		Entry("end of the first down period", 11*time.Second-1, true),
		Entry("first up period", 11*time.Second, false),
		Entry("second down period", 13500*time.Millisecond, true),
		Entry("after the window", 22*time.Second, false),
	)

	It("waits out the offset first", func() {
		f := flap
		f.Flap = &faults.Flap{Down: time.Second, Up: time.Second, Offset: 500 * time.Millisecond}
		Expect(f.Active(10 * time.Second)).To(BeFalse())
		Expect(f.Active(10500 * time.Millisecond)).To(BeTrue())
	})

	It("gives the next change of state", func() {
		var changes []time.Duration
		for t, ok := time.Duration(0), true; ok; {
			if t, ok = flap.NextChange(t); ok {
				changes = append(changes, t)
			}
		}
		s := time.Second
		Expect(changes).To(Equal([]time.Duration{10 * s, 11 * s, 13 * s, 14 * s, 16 * s, 17 * s, 19 * s, 20 * s}))
		_, ok := faults.Fault{Start: s}.NextChange(2 * s)
		Expect(ok).To(BeFalse(), "an open-ended window never ends")
	})

	It("reports the refuse rule in force", func() {
		rules := []faults.Fault{{Name: "slow", Latency: &faults.Latency{Fixed: time.Second, Percent: 100}}, flap}
		name, ok := faults.Refusing(rules, 10*time.Second)
		Expect(ok).To(BeTrue())
		Expect(name).To(Equal("flap"))
		_, ok = faults.Refusing(rules, 12*time.Second)
		Expect(ok).To(BeFalse())
		next, ok := faults.NextRefuseChange(rules, 12*time.Second)
		Expect(ok).To(BeTrue())
		Expect(next).To(Equal(13 * time.Second))
	})
})

var _ = DescribeTable("Fault.Validate rejects",
	func(f faults.Fault, want string) {
		Expect(f.Validate()).To(MatchError(ContainSubstring(want)))
	},
	Entry("two distributions", faults.Fault{Latency: &faults.Latency{Fixed: 1, Uniform: &faults.Uniform{}}},
		"latency.{fixed,uniform,normal,lognormal,pareto}: several set, want at most one"),
	Entry("uniform max below min", faults.Fault{Latency: &faults.Latency{Uniform: &faults.Uniform{Min: 2, Max: 1}}},
		"latency.uniform.max: 1ns is below min 2ns, want >= min"),
	Entry("lognormal without sigma or p99", faults.Fault{Latency: &faults.Latency{LogNormal: &faults.LogNormal{Median: 1}}},
		"latency.lognormal: want exactly one of sigma and p99"),
	Entry("pareto without shape", faults.Fault{Latency: &faults.Latency{Pareto: &faults.Pareto{Scale: 1}}},
		"latency.pareto.shape: 0 is not a positive number, want > 0"),
	Entry("grpc status out of range", faults.Fault{Abort: &faults.Abort{GRPCStatus: 17}}, "abort.grpc_status: 17 is out of range, want 1..16"),
	Entry("status and grpc status", faults.Fault{Abort: &faults.Abort{Status: 503, GRPCStatus: 14}}, "abort: status 503 and grpc_status 14 both set, want one"),
	Entry("negative after_bytes", faults.Fault{Reset: &faults.Reset{AfterBytes: intp(-1)}}, "reset.after_bytes: -1 is negative, want 0 to 1073741824 bytes (1 GiB)"),
	Entry("slow body without a rate", faults.Fault{SlowBody: &faults.SlowBody{}}, "slow_body.bytes_per_second: 0 is not positive, want > 0"),
	Entry("unknown h2 code", faults.Fault{H2: &faults.H2{RSTStream: "NOPE"}}, `h2.rst_stream: "NOPE" is not an HTTP/2 error code`),
	Entry("h2 with both", faults.Fault{H2: &faults.H2{RSTStream: "CANCEL", GoAway: "NO_ERROR"}}, "h2: want exactly one of rst_stream and goaway"),
	Entry("bad regex", faults.Fault{Match: &faults.Match{PathRegex: "("}, Hang: &faults.Hang{}}, `match.path_regex: "(" does not compile`),
	Entry("flap without down", faults.Fault{Flap: &faults.Flap{Up: 1}, Refuse: &faults.Refuse{}}, "flap.down: 0s is not positive, want > 0"),
	Entry("refuse with a match", faults.Fault{Refuse: &faults.Refuse{}, First: 2}, "refuse: acts on connections, want no match, first or every in its rule"),
	Entry("refuse with a request fault", faults.Fault{Refuse: &faults.Refuse{}, Hang: &faults.Hang{}}, "refuse: takes the instance down, want no request fault in its rule"),
	Entry("negative every", faults.Fault{Every: -1, Hang: &faults.Hang{}}, "every: -1 is negative, want >= 0 requests"),
)
