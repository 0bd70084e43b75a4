package load_test

import (
	"bytes"
	"context"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/echo"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("gRPC load", func() {
	BeforeEach(func() {
		baseline := gleak.Goroutines()
		DeferCleanup(func() { Eventually(gleak.Goroutines).ShouldNot(gleak.HaveLeaked(baseline)) })
	})

	upstream := func(rules ...faults.Fault) string {
		GinkgoHelper()
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "echo", Response: faults.Response{Size: 64}, Faults: rules})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		return "http://" + u.Addr()
	}

	It("calls Echo/Unary and records each call's gRPC status: an HTTP 200 with grpc-status 14 is a failure", func(ctx SpecContext) {
		url := upstream(faults.Fault{Every: 3, Abort: &faults.Abort{GRPCStatus: 14, Percent: 100}})
		var raw bytes.Buffer
		res, err := load.Generate(ctx, load.Config{URL: url, Rate: 200, Duration: 150 * time.Millisecond, KeepSamples: true,
			GRPC: &load.GRPC{}, Raw: &raw})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples).To(HaveLen(30))
		codes := map[int]int{}
		for _, s := range res.Samples {
			Expect(s.GRPC).To(BeTrue())
			Expect(s.Status).To(Equal(200), "trailers-only answers are HTTP 200 too")
			Expect(s.Error).To(BeEmpty())
			Expect(s.OK()).To(Equal(s.GRPCStatus == 0))
			codes[int(s.GRPCStatus)]++
		}
		Expect(codes).To(Equal(map[int]int{0: 20, 14: 10}), "every 3rd request at the instance aborted")
		Expect(res.Hist.GRPCStatuses).To(Equal(map[int]uint64{0: 20, 14: 10}))
		Expect(res.Hist.Successes).To(BeEquivalentTo(20))
		lines := strings.Split(strings.TrimSpace(raw.String()), "\n")
		Expect(lines[0]).To(Equal("seq,phase,intended_ns,sent_ns,latency_ns,uncorrected_ns,status,error,grpc_status"))
		Expect(lines[1:]).To(ContainElement(HaveSuffix(",200,,14")))
		Expect(lines[1:]).To(ContainElement(HaveSuffix(",200,,0")))
	})

	It("ends a call past its deadline DEADLINE_EXCEEDED, error timeout", func(ctx SpecContext) {
		url := upstream(faults.Fault{Latency: &faults.Latency{Fixed: 2 * time.Second, Percent: 100}})
		var raw bytes.Buffer
		res, err := load.Generate(ctx, load.Config{URL: url, Rate: 20, Duration: 100 * time.Millisecond, KeepSamples: true,
			GRPC: &load.GRPC{Deadline: 50 * time.Millisecond}, Raw: &raw, RawFormat: load.RawJSONL})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples).To(HaveLen(2))
		for _, s := range res.Samples {
			Expect(s).To(And(HaveField("GRPCStatus", BeEquivalentTo(echo.DeadlineExceeded)), HaveField("Error", record.ErrTimeout)))
			Expect(s.Latency).To(BeNumerically("<", time.Second))
		}
		Expect(raw.String()).To(ContainSubstring(`"error":"timeout","grpc_status":4}`))
	})

	It("streams replies from Echo/ServerStream", func(ctx SpecContext) {
		url := upstream()
		res, err := load.Generate(ctx, load.Config{URL: url, Rate: 100, Duration: 50 * time.Millisecond, KeepSamples: true,
			GRPC: &load.GRPC{Method: load.GRPCServerStream, Replies: 4, ReplySize: 10}})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples).To(HaveLen(5))
		for _, s := range res.Samples {
			Expect(s.OK()).To(BeTrue(), "%+v", s)
		}
	})

	It("maps an HTTP answer without grpc-status to its gRPC code (503 → UNAVAILABLE)", func(ctx SpecContext) {
		url := upstream(faults.Fault{Abort: &faults.Abort{Status: 503, Percent: 100}})
		res, err := load.Generate(ctx, load.Config{URL: url, Rate: 100, Duration: 20 * time.Millisecond, KeepSamples: true, GRPC: &load.GRPC{}})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Samples).To(HaveEach(And(HaveField("Status", 503), HaveField("GRPCStatus", BeEquivalentTo(echo.Unavailable)))))
	})

	DescribeTable("refuses a bad gRPC config",
		func(cfg load.Config, want string) {
			cfg.URL, cfg.Rate, cfg.Duration = "http://127.0.0.1:1", 1, time.Second
			_, err := load.Generate(context.Background(), cfg)
			Expect(err).To(MatchError(want))
		},
		Entry("unknown method", load.Config{GRPC: &load.GRPC{Method: "bidi"}}, `load: gRPC method "bidi": want "unary" or "server_stream"`),
		Entry("negative deadline", load.Config{GRPC: &load.GRPC{Deadline: -1}}, "load: gRPC deadline -1ns: want > 0 (or 0 for none)"),
		Entry("a mix", load.Config{GRPC: &load.GRPC{}, Mix: []load.Request{{Weight: 1}}}, "load: a gRPC run has no request mix: every request is the same call"),
	)

	DescribeTable("formats grpc-timeout in the largest unit that keeps 8 digits",
		func(d time.Duration, want string) {
			Expect(echo.Timeout(int64(d))).To(Equal(want))
			ns, ok := echo.ParseTimeout(want)
			Expect(ok).To(BeTrue())
			Expect(time.Duration(ns)).To(BeNumerically(">=", d))
		},
		Entry(nil, 500*time.Millisecond, "500000u"),
		Entry(nil, 50*time.Millisecond, "50000000n"),
		Entry(nil, 2*time.Hour, "7200000m"),
	)
})
