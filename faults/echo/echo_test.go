package echo_test

import (
	"testing"

	"github.com/onsi/gomega"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/meshproof/meshproof/faults/echo"
)

func TestRequestRoundTrip(t *testing.T) {
	g := gomega.NewWithT(t)
	tests := []struct {
		name string
		give echo.Request
	}{
		{"empty", echo.Request{}},
		{"every field", echo.Request{Payload: []byte("abc"), ReplySize: 300, Replies: 7}},
		{"large values", echo.Request{ReplySize: 1 << 31, Replies: 1<<32 - 1}},
	}
	for _, tt := range tests {
		got, err := echo.UnmarshalRequest(tt.give.Marshal())
		g.Expect(err).NotTo(gomega.HaveOccurred(), tt.name)
		if len(tt.give.Payload) == 0 {
			tt.give.Payload = nil
		}
		g.Expect(got).To(gomega.Equal(tt.give), tt.name)
	}
}

func TestUnmarshalSkipsUnknownFieldsAndRefusesTruncated(t *testing.T) {
	g := gomega.NewWithT(t)
	b := echo.Request{Replies: 2}.Marshal()
	b = protowire.AppendTag(b, 9, protowire.BytesType)
	b = protowire.AppendBytes(b, []byte("future"))
	got, err := echo.UnmarshalRequest(b)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(got.Replies).To(gomega.BeEquivalentTo(2))

	_, err = echo.UnmarshalRequest(echo.Request{Payload: []byte("abc")}.Marshal()[:3])
	g.Expect(err).To(gomega.HaveOccurred())
}

func TestReplyAndFraming(t *testing.T) {
	g := gomega.NewWithT(t)
	msg := echo.AppendReply(nil, []byte("hello"))
	g.Expect(msg).To(gomega.HaveLen(echo.ReplySize(5)))
	framed := echo.AppendFrame(echo.AppendFrame(nil, msg), nil)
	first, rest, ok, err := echo.NextFrame(framed)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(ok).To(gomega.BeTrue())
	r, err := echo.UnmarshalReply(first)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(string(r.Payload)).To(gomega.Equal("hello"))
	second, rest, ok, _ := echo.NextFrame(rest)
	g.Expect(ok).To(gomega.BeTrue())
	g.Expect(second).To(gomega.BeEmpty())
	g.Expect(rest).To(gomega.BeEmpty())

	_, _, ok, err = echo.NextFrame(framed[:7])
	g.Expect(ok).To(gomega.BeFalse(), "a partial message")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	_, _, _, err = echo.NextFrame([]byte{1, 0, 0, 0, 0})
	g.Expect(err).To(gomega.MatchError(echo.ErrCompressed))
}

func TestCodesMatchGRPC(t *testing.T) {
	g := gomega.NewWithT(t)
	for c := codes.OK; c <= codes.Unauthenticated; c++ {
		code, err := echo.ParseCode(echo.CodeName(int(c)))
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(code).To(gomega.Equal(int(c)))
	}
	g.Expect(echo.CodeName(int(codes.Unavailable))).To(gomega.Equal("UNAVAILABLE"))
	g.Expect(echo.ParseCode("deadline_exceeded")).To(gomega.Equal(echo.DeadlineExceeded))
	_, err := echo.ParseCode("17")
	g.Expect(err).To(gomega.MatchError(gomega.ContainSubstring(`unknown gRPC status "17"`)))
}

func TestFromHTTP(t *testing.T) {
	g := gomega.NewWithT(t)
	tests := []struct {
		give int
		want codes.Code
	}{
		{400, codes.Internal}, {401, codes.Unauthenticated}, {403, codes.PermissionDenied}, {404, codes.Unimplemented},
		{429, codes.Unavailable}, {502, codes.Unavailable}, {503, codes.Unavailable}, {504, codes.Unavailable},
		{500, codes.Unknown}, {418, codes.Unknown},
	}
	for _, tt := range tests {
		g.Expect(echo.FromHTTP(tt.give)).To(gomega.Equal(int(tt.want)), "HTTP %d", tt.give)
	}
}

func TestTimeoutParsesBack(t *testing.T) {
	g := gomega.NewWithT(t)
	for _, s := range []string{"1n", "99999999u", "50m", "3S", "2M", "1H"} {
		ns, ok := echo.ParseTimeout(s)
		g.Expect(ok).To(gomega.BeTrue(), s)
		back, ok := echo.ParseTimeout(echo.Timeout(ns))
		g.Expect(ok).To(gomega.BeTrue(), s)
		g.Expect(back).To(gomega.Equal(ns), "%s: Timeout keeps the most precise unit of 8 digits, exactly", s)
	}
	for _, s := range []string{"", "5", "5x", "-5m", "123456789m"} {
		_, ok := echo.ParseTimeout(s)
		g.Expect(ok).To(gomega.BeFalse(), s)
	}
}
