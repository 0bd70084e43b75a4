package faults_test

import (
	"errors"
	"math"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

// fieldErr is what a caller sees of one validation error: its field and its reason, never parsed
// from the message.
type fieldErr struct{ Field, Reason string }

// fieldErrs lists the field errors joined in err, in order; an error without Field and Reason fails.
func fieldErrs(err error) []fieldErr {
	GinkgoHelper()
	if err == nil {
		return nil
	}
	if joined, ok := err.(interface{ Unwrap() []error }); ok {
		var out []fieldErr
		for _, e := range joined.Unwrap() {
			out = append(out, fieldErrs(e)...)
		}
		return out
	}
	var fe interface {
		Field() string
		Reason() string
	}
	Expect(errors.As(err, &fe)).To(BeTrue(), "%q has no Field and Reason", err)
	return []fieldErr{{fe.Field(), fe.Reason()}}
}

var _ = DescribeTable("Fault.Validate returns field errors",
	func(f faults.Fault, want []fieldErr) {
		Expect(fieldErrs(f.Validate())).To(Equal(want))
	},
	Entry("a valid rule", faults.Fault{Abort: &faults.Abort{Status: 503, Percent: 10}}, []fieldErr(nil)),
	Entry("no kind: the rule itself", faults.Fault{}, []fieldErr{{"", "none set, want at least one"}}),
	Entry("negative window", faults.Fault{Start: -1, Duration: -time.Second, Hang: &faults.Hang{}},
		[]fieldErr{{"start", "-1ns is negative, want >= 0"}, {"duration", "-1s is negative, want >= 0"}}),
	Entry("abort status", faults.Fault{Abort: &faults.Abort{Status: 42, Percent: 101}},
		[]fieldErr{{"abort.status", "42 is out of range, want 200..599"}, {"abort.percent", "101 is out of range, want 0..100"}}),
	Entry("abort with both statuses", faults.Fault{Abort: &faults.Abort{Status: 503, GRPCStatus: 14}},
		[]fieldErr{{"abort", "status 503 and grpc_status 14 both set, want one"}}),
	Entry("grpc status", faults.Fault{Abort: &faults.Abort{GRPCStatus: 17}}, []fieldErr{{"abort.grpc_status", "17 is out of range, want 1..16"}}),
	Entry("reset", faults.Fault{Reset: &faults.Reset{Percent: math.NaN(), AfterBytes: intp(-1)}},
		[]fieldErr{{"reset.percent", "NaN is out of range, want 0..100"}, {"reset.after_bytes", "-1 is negative, want 0 to 1073741824 bytes (1 GiB)"}}),
	Entry("hang", faults.Fault{Hang: &faults.Hang{Percent: -1}}, []fieldErr{{"hang.percent", "-1 is out of range, want 0..100"}}),
	Entry("slow_body", faults.Fault{SlowBody: &faults.SlowBody{}}, []fieldErr{{"slow_body.bytes_per_second", "0 is not positive, want > 0"}}),
	Entry("close_after", faults.Fault{CloseAfter: &faults.CloseAfter{Bytes: faults.MaxBodyBytes + 1}},
		[]fieldErr{{"close_after.bytes", "1073741825 is too large, want 0 to 1073741824 bytes (1 GiB)"}}),
	Entry("size", faults.Fault{Size: &faults.Size{Bytes: -2}}, []fieldErr{{"size.bytes", "-2 is negative, want 0 to 1073741824 bytes (1 GiB)"}}),
	Entry("h2 with neither code", faults.Fault{H2: &faults.H2{}}, []fieldErr{{"h2", "want exactly one of rst_stream and goaway"}}),
	Entry("h2 unknown goaway code", faults.Fault{H2: &faults.H2{GoAway: "BYE"}}, []fieldErr{{"h2.goaway",
		`"BYE" is not an HTTP/2 error code, want one of NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, FLOW_CONTROL_ERROR, ` +
			"SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, COMPRESSION_ERROR, CONNECT_ERROR, " +
			"ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED"}}),
	Entry("refuse with a request fault and every", faults.Fault{Refuse: &faults.Refuse{}, Every: 2, Hang: &faults.Hang{}}, []fieldErr{
		{"refuse", "acts on connections, want no match, first or every in its rule"},
		{"refuse", "takes the instance down, want no request fault in its rule"}}),
	Entry("sequences", faults.Fault{First: -1, Every: -2, Hang: &faults.Hang{}}, []fieldErr{
		{"first", "-1 is negative, want >= 0 requests"}, {"every", "-2 is negative, want >= 0 requests"}}),
	Entry("match, below its path", faults.Fault{Match: &faults.Match{Method: "get", Headers: map[string]string{"a b": "x"}}, Hang: &faults.Hang{}},
		[]fieldErr{{"match.headers", `"a b" is not a header name`}, {"match.method", `"get" is not upper case, want e.g. "GET"`}}),
	Entry("flap, below its path", faults.Fault{Flap: &faults.Flap{Up: 1, Down: 1, Offset: -1}, Hang: &faults.Hang{}},
		[]fieldErr{{"flap.offset", "-1ns is negative, want >= 0"}}),
	Entry("latency: several distributions, at the latency", faults.Fault{Latency: &faults.Latency{Fixed: 1, Pareto: &faults.Pareto{Scale: 1, Shape: 1}}},
		[]fieldErr{{"latency", "several set, want at most one"}}),
	Entry("latency: a distribution's field", faults.Fault{Latency: &faults.Latency{LogNormal: &faults.LogNormal{Median: 2, P99: 1}, Percent: 200}},
		[]fieldErr{{"latency.lognormal.p99", "1ns is not above the median 2ns, want > median"}, {"latency.percent", "200 is out of range, want 0..100"}}),
)

var _ = Describe("validation errors", func() {
	It("name the fields a rule must set one of", func() {
		var among interface{ Among() []string }
		Expect(errors.As(faults.Fault{}.Validate(), &among)).To(BeTrue())
		Expect(among.Among()).To(Equal([]string{"latency", "abort", "reset", "hang", "slow_body", "close_after", "size", "h2", "refuse"}))
	})

	It("keep a bad regex's own error as the cause", func() {
		err := faults.Fault{Match: &faults.Match{PathRegex: "("}, Hang: &faults.Hang{}}.Validate()
		Expect(fieldErrs(err)).To(HaveExactElements(HaveField("Field", "match.path_regex")))
		var cause interface{ Unwrap() error }
		Expect(errors.As(err, &cause)).To(BeTrue())
		Expect(cause.Unwrap()).To(MatchError(ContainSubstring("missing closing )")))
	})

	It("place NewUpstream's errors below the config: faults[i], response", func() {
		_, err := faults.NewUpstream(faults.UpstreamConfig{Service: "s", Response: faults.Response{Status: 99},
			Faults: []faults.Fault{abortRule("x", 503, 1), abortRule("x", 503, 1), {Hang: &faults.Hang{Percent: 101}}}})
		Expect(err).To(MatchError(faults.ErrInvalidConfig))
		var joined interface{ Unwrap() []error }
		Expect(errors.As(err, &joined)).To(BeTrue())
		Expect(fieldErrs(joined.Unwrap()[1])).To(Equal([]fieldErr{
			{"response.status", "99 is out of range, want 200..599"},
			{"faults[1]", `name "x" is already used by faults[0]`},
			{"faults[2].hang.percent", "101 is out of range, want 0..100"},
		}))
	})
})
