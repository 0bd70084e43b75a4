package tcp_test

import (
	"errors"
	"math"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults/tcp"
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

var _ = DescribeTable("Toxic.Validate returns field errors",
	func(t tcp.Toxic, want []fieldErr) {
		Expect(fieldErrs(t.Validate())).To(Equal(want))
	},
	Entry("a valid toxic", tcp.Toxic{Type: tcp.TypeLatency, Latency: 1}, []fieldErr(nil)),
	Entry("unknown type", tcp.Toxic{Type: "packet_loss"}, []fieldErr{{"type",
		`"packet_loss" is not a toxic, want one of latency, bandwidth, slow_close, timeout, reset_peer, slicer, limit_data, down`}}),
	Entry("negative durations", tcp.Toxic{Type: tcp.TypeSlowClose, Latency: -1, Jitter: -2, Delay: -3, Timeout: -4}, []fieldErr{
		{"latency", "-1ns is negative, want >= 0"}, {"jitter", "-2ns is negative, want >= 0"},
		{"delay", "-3ns is negative, want >= 0"}, {"timeout", "-4ns is negative, want >= 0"}}),
	Entry("toxicity", tcp.Toxic{Type: tcp.TypeDown, Toxicity: math.NaN()}, []fieldErr{{"toxicity", "NaN is out of range, want 0..100"}}),
	Entry("stream", tcp.Toxic{Type: tcp.TypeTimeout, Stream: "sideways"}, []fieldErr{{"stream", `"sideways" is not a stream, want upstream or downstream`}}),
	Entry("bandwidth", tcp.Toxic{Type: tcp.TypeBandwidth, Rate: -1}, []fieldErr{{"rate", "-1 is not positive, want > 0 KB/s"}}),
	Entry("slicer", tcp.Toxic{Type: tcp.TypeSlicer, SizeVariation: -1}, []fieldErr{
		{"average_size", "0 is not positive, want > 0 bytes"}, {"size_variation", "-1 is out of range, want 0..average_size-1"}}),
	Entry("limit_data", tcp.Toxic{Type: tcp.TypeLimitData, Bytes: -1}, []fieldErr{{"bytes", "-1 is negative, want >= 0"}}),
)

var _ = Describe("NewProxy's validation errors", func() {
	It("are field errors below toxics[i]", func() {
		_, err := tcp.NewProxy(tcp.Config{Name: "p", Toxics: []tcp.Toxic{
			{Name: "a", Type: tcp.TypeDown}, {Name: "a", Type: tcp.TypeBandwidth}}})
		Expect(err).To(MatchError(tcp.ErrInvalidConfig))
		var joined interface{ Unwrap() []error }
		Expect(errors.As(err, &joined)).To(BeTrue())
		Expect(fieldErrs(joined.Unwrap()[1])).To(Equal([]fieldErr{
			{"toxics[1]", `name "a" is already used by toxics[0]`},
			{"toxics[1].rate", "0 is not positive, want > 0 KB/s"},
		}))
	})
})
