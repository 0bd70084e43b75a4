package faults_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/echo"
)

// rawCodec hands grpc-go the bytes that package echo encodes: no generated code needed.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *(v.(*[]byte)), nil }
func (rawCodec) Unmarshal(data []byte, v any) error {
	*(v.(*[]byte)) = append([]byte(nil), data...)
	return nil
}
func (rawCodec) Name() string { return "proto" }

// grpc opens a gRPC call of path on stream with grpc-timeout timeout, sending an empty Request.
func (c *rawH2) grpc(stream uint32, path, timeout string) {
	GinkgoHelper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "upstream"}, {":path", path},
		{"content-type", "application/grpc"}, {"te", "trailers"}, {"grpc-timeout", timeout}} {
		Expect(enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})).To(Succeed())
	}
	Expect(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block.Bytes(), EndHeaders: true})).To(Succeed())
	Expect(c.fr.WriteData(stream, true, echo.AppendFrame(nil, echo.Request{}.Marshal()))).To(Succeed())
}

var _ = Describe("Upstream serving gRPC (meshproof.test.v1.Echo over h2c)", func() {
	var conn *grpc.ClientConn

	start := func(size int, rules ...faults.Fault) *faults.Upstream {
		GinkgoHelper()
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "echo", Response: faults.Response{Size: size}, Faults: rules})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		conn, err = grpc.NewClient("passthrough:///"+u.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()),
			grpc.WithDefaultCallOptions(grpc.ForceCodecV2(nil), grpc.ForceCodec(rawCodec{})))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		return u
	}

	BeforeEach(func() {
		before := Goroutines()
		DeferCleanup(func() { Eventually(Goroutines).ShouldNot(HaveLeaked(before)) })
	})

	unary := func(req echo.Request, opts ...grpc.CallOption) (echo.Reply, error) {
		GinkgoHelper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		in, out := req.Marshal(), []byte(nil)
		err := conn.Invoke(ctx, echo.PathUnary, &in, &out, opts...)
		if err != nil {
			return echo.Reply{}, err
		}
		return echo.UnmarshalReply(out)
	}

	It("answers a unary call with one Reply of response.size bytes, status OK in the trailers", func() {
		u := start(300)
		var header, trailer metadata.MD
		reply, err := unary(echo.Request{Payload: []byte("hi")}, grpc.Header(&header), grpc.Trailer(&trailer))
		Expect(err).NotTo(HaveOccurred())
		Expect(reply.Payload).To(HaveLen(300))
		Expect(header.Get("x-meshproof-instance")).To(ConsistOf("echo/0"))
		Expect(trailer.Get("grpc-status")).To(BeEmpty(), "grpc-go keeps grpc-status out of the metadata")
		Expect(u.Stats().Statuses).To(HaveKeyWithValue(200, BeEquivalentTo(1)))
		Expect(u.Stats().OK).To(ContainElement(BeEquivalentTo(1)))
	})

	It("takes the reply size from the request when it names one", func() {
		start(300)
		reply, err := unary(echo.Request{ReplySize: 7})
		Expect(err).NotTo(HaveOccurred())
		Expect(reply.Payload).To(HaveLen(7))
	})

	It("streams `replies` Replies on ServerStream", func() {
		start(100)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		desc := &grpc.StreamDesc{StreamName: "ServerStream", ServerStreams: true}
		stream, err := conn.NewStream(ctx, desc, echo.PathServerStream)
		Expect(err).NotTo(HaveOccurred())
		in := echo.Request{Replies: 5}.Marshal()
		Expect(stream.SendMsg(&in)).To(Succeed())
		Expect(stream.CloseSend()).To(Succeed())
		n := 0
		for {
			var out []byte
			err := stream.RecvMsg(&out)
			if errors.Is(err, io.EOF) {
				break
			}
			Expect(err).NotTo(HaveOccurred())
			r, err := echo.UnmarshalReply(out)
			Expect(err).NotTo(HaveOccurred())
			Expect(r.Payload).To(HaveLen(100))
			n++
		}
		Expect(n).To(Equal(5))
	})

	It("answers an unknown method UNIMPLEMENTED", func() {
		start(10)
		in, out := echo.Request{}.Marshal(), []byte(nil)
		err := conn.Invoke(context.Background(), "/meshproof.test.v1.Echo/Nope", &in, &out)
		Expect(status.Code(err)).To(Equal(codes.Unimplemented))
	})

	It("applies abort grpc_status as a trailers-only answer the client reads as that code", func() {
		start(10, faults.Fault{Abort: &faults.Abort{GRPCStatus: 14, Percent: 100}})
		_, err := unary(echo.Request{})
		Expect(status.Code(err)).To(Equal(codes.Unavailable))
		Expect(status.Convert(err).Message()).To(Equal(faults.GRPCMessage))
	})

	It("applies an HTTP abort, which the client maps to a gRPC code (503 → UNAVAILABLE)", func() {
		start(10, faults.Fault{Abort: &faults.Abort{Status: 503, Percent: 100}})
		_, err := unary(echo.Request{})
		Expect(status.Code(err)).To(Equal(codes.Unavailable))
	})

	It("applies an RST_STREAM fault (REFUSED_STREAM: grpc-go retries it transparently, once)", func() {
		u := start(10, faults.Fault{First: 1, H2: &faults.H2{RSTStream: "REFUSED_STREAM", Percent: 100}})
		_, err := unary(echo.Request{})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Stats()).To(And(HaveField("Requests", BeEquivalentTo(2)), HaveField("StreamResets", BeEquivalentTo(1))))
	})

	It("applies latency, which a deadline cuts short as DEADLINE_EXCEEDED", func() {
		start(10, faults.Fault{Latency: &faults.Latency{Fixed: time.Second, Percent: 100}})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		in, out := echo.Request{}.Marshal(), []byte(nil)
		err := conn.Invoke(ctx, echo.PathUnary, &in, &out)
		Expect(status.Code(err)).To(Equal(codes.DeadlineExceeded))
	})

	It("ends a call at its grpc-timeout when the delay reaches it, DEADLINE_EXCEEDED trailers-only, as a gRPC server would", func() {
		u := start(10, faults.Fault{Latency: &faults.Latency{Fixed: 300 * time.Millisecond, Percent: 100}})
		c := newRawH2(u.Addr())
		c.grpc(1, echo.PathUnary, "50m")
		f := c.next()
		Expect(f).To(BeAssignableToTypeOf(&http2.MetaHeadersFrame{}))
		h := f.(*http2.MetaHeadersFrame)
		Expect(h.StreamEnded()).To(BeTrue(), "trailers-only")
		Expect(h.PseudoValue("status")).To(Equal("200"))
		fields := map[string]string{}
		for _, hf := range h.RegularFields() {
			fields[hf.Name] = hf.Value
		}
		Expect(fields).To(HaveKeyWithValue("grpc-status", "4"))
		Expect(fields).To(HaveKeyWithValue("grpc-message", faults.GRPCDeadlineMessage))
		Expect(u.Stats().OK).NotTo(ContainElement(BeNumerically(">", 0)))
	})

	It("answers a call whose delay ends before its grpc-timeout", func() {
		start(10, faults.Fault{Latency: &faults.Latency{Fixed: 20 * time.Millisecond, Percent: 100}})
		_, err := unary(echo.Request{})
		Expect(err).NotTo(HaveOccurred())
	})

	It("applies close_after to the messages: the client sees the stream end early", func() {
		start(1000, faults.Fault{CloseAfter: &faults.CloseAfter{Bytes: 100, Percent: 100}})
		_, err := unary(echo.Request{})
		Expect(status.Code(err)).To(Equal(codes.Unavailable), "got %v", err)
	})
})

var _ = DescribeTable("GRPCContentType judges content types as Envoy's hasGrpcContentType",
	func(ct string, want bool) { Expect(faults.GRPCContentType(ct)).To(Equal(want)) },
	Entry(nil, "application/grpc", true),
	Entry(nil, "application/grpc+proto", true),
	Entry("case-sensitive, as Envoy", "Application/GRPC", false),
	Entry("regression: a parameter made it gRPC", "application/grpc;charset=utf-8", false),
	Entry(nil, "application/grpc-web", false),
	Entry(nil, "application/json", false),
	Entry(nil, "", false),
)
