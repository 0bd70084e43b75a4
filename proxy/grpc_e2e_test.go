package proxy_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	grpcstatus "google.golang.org/grpc/status"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/testpki"
	"github.com/meshproof/meshproof/proxy/policy"
)

// rawCodec carries gRPC messages as the bytes they are (*[]byte), on both sides: the specs see
// exactly what crossed the proxy.
type rawCodec struct{}

func (rawCodec) Marshal(v any) ([]byte, error) { return *v.(*[]byte), nil }
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*[]byte) = append([]byte(nil), b...)
	return nil
}
func (rawCodec) Name() string { return "raw" }

// maxMsg is the largest message either end takes (grpc-go's default is 4 MiB received).
const maxMsg = 16 << 20

// grpcBackend is a grpc-go server on loopback (h2c) whose one handler serves every method of
// service e2e.Svc. It fails its first failFirst calls with a trailers-only UNAVAILABLE (or failAll),
// and reports each call's start and the end of its context.
type grpcBackend struct {
	addr      string
	calls     atomic.Int64
	failFirst int64
	failAll   atomic.Bool
	started   chan string // the method of each call that got to its handler (buffered)
	ended     chan error  // a call's context ended before the handler returned: its error
}

func newGrpcBackend(failFirst int64) *grpcBackend {
	GinkgoHelper()
	b := &grpcBackend{failFirst: failFirst, started: make(chan string, 64), ended: make(chan error, 64)}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	b.addr = lis.Addr().String()
	s := grpc.NewServer(grpc.ForceServerCodec(rawCodec{}), grpc.UnknownServiceHandler(b.handle),
		grpc.MaxRecvMsgSize(maxMsg), grpc.MaxSendMsgSize(maxMsg))
	go func() { _ = s.Serve(lis) }()
	DeferCleanup(s.Stop)
	return b
}

func (b *grpcBackend) handle(_ any, ss grpc.ServerStream) error {
	n := b.calls.Add(1)
	if n <= b.failFirst || b.failAll.Load() {
		// Nothing sent before: grpc-go answers with a trailers-only response.
		return grpcstatus.Error(codes.Unavailable, "warming up")
	}
	method, _ := grpc.MethodFromServerStream(ss)
	b.started <- method
	ctx := ss.Context()
	switch strings.TrimPrefix(method, "/e2e.Svc/") {
	case "Unary":
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		_ = ss.SetHeader(metadata.Pairs("x-header-md", "h1"))
		ss.SetTrailer(metadata.Pairs("x-trailer-md", "t1", "x-trailer-md", "t2", "x-blob-bin", "\x00\xffbin"))
		out := append([]byte("echo:"), in...)
		return ss.SendMsg(&out)
	case "Big": // echoes the message back whole
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		return ss.SendMsg(&in)
	case "ServerStream": // the request's first byte is the count of messages answered
		var in []byte
		if err := ss.RecvMsg(&in); err != nil {
			return err
		}
		for i := range int(in[0]) {
			out := []byte{byte(i)}
			if err := ss.SendMsg(&out); err != nil {
				return err
			}
		}
		return nil
	case "ClientStream": // answers the messages received, joined
		var all []byte
		for {
			var in []byte
			err := ss.RecvMsg(&in)
			if errors.Is(err, io.EOF) {
				return ss.SendMsg(&all)
			}
			if err != nil {
				return err
			}
			all = append(all, in...)
		}
	case "Bidi": // answers each message as it comes
		for {
			var in []byte
			err := ss.RecvMsg(&in)
			if errors.Is(err, io.EOF) {
				return nil
			}
			if err != nil {
				return err
			}
			out := append([]byte("re:"), in...)
			if err := ss.SendMsg(&out); err != nil {
				return err
			}
		}
	case "Fail": // a non-OK status with a message, trailers-only
		return grpcstatus.Error(codes.FailedPrecondition, "not ready: 100% ünicode\n")
	case "FailLate": // a non-OK status in the trailers of a response that started
		_ = ss.SendHeader(metadata.Pairs("x-header-md", "h1"))
		ss.SetTrailer(metadata.Pairs("x-trailer-md", "late"))
		return grpcstatus.Error(codes.ResourceExhausted, "quota gone")
	case "InternalLate": // INTERNAL in the trailers of a response that started
		_ = ss.SendHeader(metadata.Pairs("x-header-md", "h1"))
		return grpcstatus.Error(codes.Internal, "broken")
	case "Hang": // waits for its context to end
		<-ctx.Done()
		b.ended <- ctx.Err()
		return ctx.Err()
	}
	return grpcstatus.Error(codes.Unimplemented, method)
}

// grpcClient dials the proxy's listener at addr with creds (nil: insecure, h2c prior knowledge).
func grpcClient(addr string, creds credentials.TransportCredentials) *grpc.ClientConn {
	GinkgoHelper()
	if creds == nil {
		creds = insecure.NewCredentials()
	}
	conn, err := grpc.NewClient("passthrough:///"+addr, grpc.WithTransportCredentials(creds),
		grpc.WithDefaultCallOptions(grpc.ForceCodec(rawCodec{}), grpc.MaxCallRecvMsgSize(maxMsg), grpc.MaxCallSendMsgSize(maxMsg)))
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	return conn
}

// grpcSetup is a proxy whose one route (no route timeout, as Envoy advises for streams) sends every
// request to cluster backend, speaking HTTP/2 to b; listener codec AUTO.
func grpcSetup(b *grpcBackend, rp *config.RetryPolicy) setup {
	r := prefixRoute("/", "backend", rp)
	r.Action.Timeout = 0
	return setup{routes: []config.Route{r}, clusters: []config.Cluster{h2Cluster("backend", 0, b.addr)}}
}

// unary calls method with msg, returning the answer, the header and trailer metadata and the error.
func unary(ctx context.Context, conn *grpc.ClientConn, method string, msg []byte) ([]byte, metadata.MD, metadata.MD, error) {
	var out []byte
	var hdr, trl metadata.MD
	err := conn.Invoke(ctx, "/e2e.Svc/"+method, &msg, &out, grpc.Header(&hdr), grpc.Trailer(&trl))
	return out, hdr, trl, err
}

// clientStream makes a client-streaming call sending each part as a message, and returns the answer.
func clientStream(conn *grpc.ClientConn, parts ...string) string {
	GinkgoHelper()
	st, err := conn.NewStream(bounded(), &grpc.StreamDesc{ClientStreams: true}, "/e2e.Svc/ClientStream")
	Expect(err).NotTo(HaveOccurred())
	for _, s := range parts {
		m := []byte(s)
		Expect(st.SendMsg(&m)).To(Succeed())
	}
	Expect(st.CloseSend()).To(Succeed())
	var out []byte
	Expect(st.RecvMsg(&out)).To(Succeed())
	return string(out)
}

// hostStat is the admin's /clusters value of name for cluster backend's host at addr.
func hostStat(srv *proxy.Server, addr, name string) string {
	GinkgoHelper()
	_, _, body := get("http://" + srv.AdminAddr() + "/clusters")
	prefix := "backend::" + addr + "::" + name + "::"
	for line := range strings.SplitSeq(body, "\n") {
		if v, ok := strings.CutPrefix(line, prefix); ok {
			return v
		}
	}
	return "(none)"
}

// bounded is a context that ends every call of a spec that fails to end it itself.
func bounded() context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	DeferCleanup(cancel)
	return ctx
}

// gRPC end to end: grpc-go client → the proxy (codec AUTO) → cluster with explicit HTTP/2 → grpc-go
// server.
var _ = Describe("gRPC end to end", func() {
	var (
		b    *grpcBackend
		srv  *proxy.Server
		conn *grpc.ClientConn
	)
	startWith := func(s setup) {
		srv, _ = start(s)
		conn = grpcClient(srv.ListenerAddr("edge"), nil)
	}

	Context("over h2c", func() {
		BeforeEach(func() {
			b = newGrpcBackend(0)
			startWith(grpcSetup(b, nil))
		})

		It("relays a unary call, its header metadata and its trailers (grpc-status and custom metadata)", func() {
			out, hdr, trl, err := unary(bounded(), conn, "Unary", []byte("hello"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(out)).To(Equal("echo:hello"))
			Expect(hdr.Get("x-header-md")).To(Equal([]string{"h1"}))
			Expect(trl.Get("x-trailer-md")).To(Equal([]string{"t1", "t2"}))
			Expect(trl.Get("x-blob-bin")).To(Equal([]string{"\x00\xffbin"}), "a binary trailer, base64 on the wire")
			Expect(stat(srv, "http.ingress.downstream_cx_http2_total")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_cx_http2_total")).To(BeEquivalentTo(1))
			Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(1))
		})

		It("streams the server's messages", func() {
			st, err := conn.NewStream(bounded(), &grpc.StreamDesc{ServerStreams: true}, "/e2e.Svc/ServerStream")
			Expect(err).NotTo(HaveOccurred())
			in := []byte{5}
			Expect(st.SendMsg(&in)).To(Succeed())
			Expect(st.CloseSend()).To(Succeed())
			var got []byte
			for {
				var m []byte
				err := st.RecvMsg(&m)
				if errors.Is(err, io.EOF) {
					break
				}
				Expect(err).NotTo(HaveOccurred())
				got = append(got, m...)
			}
			Expect(got).To(Equal([]byte{0, 1, 2, 3, 4}))
		})

		It("streams the client's messages", func() {
			Expect(clientStream(conn, "a", "bb", "ccc")).To(Equal("abbccc"))
		})

		It("streams both ways at once, each answer before the next message is sent", func() {
			st, err := conn.NewStream(bounded(), &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/e2e.Svc/Bidi")
			Expect(err).NotTo(HaveOccurred())
			for _, s := range []string{"one", "two", "three"} {
				m := []byte(s)
				Expect(st.SendMsg(&m)).To(Succeed())
				var out []byte
				Expect(st.RecvMsg(&out)).To(Succeed())
				Expect(string(out)).To(Equal("re:" + s))
			}
			Expect(st.CloseSend()).To(Succeed())
			var m []byte
			Expect(st.RecvMsg(&m)).To(MatchError(io.EOF))
		})

		It("carries 4 MiB messages each way, beyond HTTP/2's default windows", func() {
			big := make([]byte, 4<<20)
			for i := range big {
				big[i] = byte(i * 7)
			}
			out, _, _, err := unary(bounded(), conn, "Big", big)
			Expect(err).NotTo(HaveOccurred())
			Expect(out).To(HaveLen(len(big)))
			Expect(out).To(Equal(big))
		})

		It("passes a non-OK status and its message through, trailers-only or in trailers", func() {
			_, _, _, err := unary(bounded(), conn, "Fail", nil)
			st, _ := grpcstatus.FromError(err)
			Expect([]any{st.Code(), st.Message()}).To(Equal([]any{codes.FailedPrecondition, "not ready: 100% ünicode\n"}))

			_, hdr, trl, err := unary(bounded(), conn, "FailLate", nil)
			st, _ = grpcstatus.FromError(err)
			Expect([]any{st.Code(), st.Message()}).To(Equal([]any{codes.ResourceExhausted, "quota gone"}))
			Expect(hdr.Get("x-header-md")).To(Equal([]string{"h1"}))
			Expect(trl.Get("x-trailer-md")).To(Equal([]string{"late"}))
			Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(2), "gRPC errors are HTTP 200")
		})

		It("propagates the client's cancellation upstream: the server's stream context ends", func() {
			ctx, cancel := context.WithCancel(bounded())
			st, err := conn.NewStream(ctx, &grpc.StreamDesc{ClientStreams: true, ServerStreams: true}, "/e2e.Svc/Hang")
			Expect(err).NotTo(HaveOccurred())
			Eventually(b.started).WithTimeout(5 * time.Second).Should(Receive(Equal("/e2e.Svc/Hang")))
			cancel()
			var m []byte
			Expect(grpcstatus.Code(st.RecvMsg(&m))).To(Equal(codes.Canceled))
			Eventually(b.ended).WithTimeout(5 * time.Second).Should(Receive(MatchError(context.Canceled)))
		})
	})

	It("retries a trailers-only UNAVAILABLE under retry_on unavailable, and succeeds", func() {
		b = newGrpcBackend(2)
		startWith(grpcSetup(b, retries(3, "unavailable")))
		out, _, _, err := unary(bounded(), conn, "Unary", []byte("x"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(out)).To(Equal("echo:x"))
		Expect(b.calls.Load()).To(BeEquivalentTo(3))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry_success")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.retry.upstream_rq_200")).To(BeEquivalentTo(2))
	})

	// Regression: the proxy read a request body up to the buffer limit before its first attempt, so
	// a bidirectional call (its client waits for each answer) hung, and a cancelled call never
	// reached the upstream. A gRPC body now streams, kept for a retry up to the limit.
	It("retries a client-streaming call, sending again what was streamed and what comes after", func() {
		b = newGrpcBackend(1)
		startWith(grpcSetup(b, retries(1, "unavailable")))
		Expect(clientStream(conn, "a", "bb", "ccc")).To(Equal("abbccc"))
		Expect(b.calls.Load()).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_retry")).To(BeEquivalentTo(1))
	})

	It("streams a body beyond the buffer limit, giving up its retry (retry_or_shadow_abandoned)", func() {
		b = newGrpcBackend(0)
		s := grpcSetup(b, retries(1, "unavailable"))
		s.bufferLimit = 1024
		startWith(s)
		st, err := conn.NewStream(bounded(), &grpc.StreamDesc{ClientStreams: true}, "/e2e.Svc/ClientStream")
		Expect(err).NotTo(HaveOccurred())
		for range 3 {
			m := []byte(strings.Repeat("x", 1000))
			Expect(st.SendMsg(&m)).To(Succeed())
		}
		Expect(st.CloseSend()).To(Succeed())
		var out []byte
		Expect(st.RecvMsg(&out)).To(Succeed())
		Expect(out).To(HaveLen(3000))
		Expect(stat(srv, "cluster.backend.retry_or_shadow_abandoned")).To(BeEquivalentTo(1))
	})

	It("relays UNAVAILABLE when no retry policy asks for more", func() {
		b = newGrpcBackend(1)
		startWith(grpcSetup(b, nil))
		_, _, _, err := unary(bounded(), conn, "Unary", []byte("x"))
		Expect(grpcstatus.Code(err)).To(Equal(codes.Unavailable))
		Expect(b.calls.Load()).To(BeEquivalentTo(1))
	})

	// The proxy's own timing on a fake clock; the client's deadline (real time) is far enough away
	// never to end the call itself.
	It("ends a call at its grpc-timeout (max_stream_duration with grpc_timeout_header_max) with DEADLINE_EXCEEDED, cancelling the upstream's", func() {
		clk := fakeClock()
		b = newGrpcBackend(0)
		s := grpcSetup(b, nil)
		s.routes[0].Action.GrpcTimeoutHeaderMax = dur(0) // the grpc-timeout, uncapped
		s.opts = proxy.Options{Clock: clk}
		startWith(s)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second) // grpc-timeout: ~20s
		DeferCleanup(cancel)
		errs := make(chan error, 1)
		go func() {
			_, _, _, err := unary(ctx, conn, "Hang", nil)
			errs <- err
		}()
		Eventually(b.started).WithTimeout(5 * time.Second).Should(Receive(Equal("/e2e.Svc/Hang")))
		clk.Step(19 * time.Second)
		Consistently(errs).WithTimeout(200*time.Millisecond).ShouldNot(Receive(), "before the grpc-timeout")
		var err error
		until(clk, time.Second, received(errs, &err))
		st, _ := grpcstatus.FromError(err)
		Expect(st.Code()).To(Equal(codes.DeadlineExceeded))
		Expect(ctx.Err()).NotTo(HaveOccurred(), "the proxy's answer, not the client's own deadline")
		Expect(stat(srv, "http.ingress.downstream_rq_max_duration_reached")).To(BeEquivalentTo(1))
		Eventually(b.ended).WithTimeout(5*time.Second).Should(Receive(HaveOccurred()), "the upstream stream is reset")
	})

	It("serves gRPC over TLS to a client that chose h2 by ALPN", func() {
		pki := newPKI()
		certs := pki.certs("server", pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}}))
		ltls, _ := tlsContexts("common_tls_context: {alpn_protocols: [h2, http/1.1], "+certs+"}", "")
		b = newGrpcBackend(0)
		s := grpcSetup(b, nil)
		s.listener = func(l *config.Listener) { l.TLS = ltls }
		srv, _ = start(s)
		var negotiated atomic.Value
		creds := credentials.NewTLS(&tls.Config{RootCAs: pki.ca.Pool(), ServerName: "proxy.internal",
			VerifyConnection: func(cs tls.ConnectionState) error { negotiated.Store(cs.NegotiatedProtocol); return nil }})
		conn = grpcClient(srv.ListenerAddr("edge"), creds)
		out, _, trl, err := unary(bounded(), conn, "Unary", []byte("tls"))
		Expect(err).NotTo(HaveOccurred())
		Expect(string(out)).To(Equal("echo:tls"))
		Expect(trl.Get("x-trailer-md")).To(Equal([]string{"t1", "t2"}))
		Expect(negotiated.Load()).To(Equal("h2"))
	})

	// Envoy's router hands a host's outlier detector Grpc::Utility::grpcToHttpStatus of a
	// trailers-only response's grpc-status (Filter::onUpstreamHeaders, router.cc): UNAVAILABLE is 503.
	// Regression: outlier detection saw the HTTP status, 200, and never ejected.
	It("ejects a host on consecutive_5xx from trailers-only UNAVAILABLE answers", func() {
		b = newGrpcBackend(0)
		b.failAll.Store(true)
		s := grpcSetup(b, nil)
		o := policy.DefaultOutlierConfig()
		o.Interval, o.BaseEjectionTime, o.MaxEjectionTime = time.Hour, time.Hour, 0
		o.Consecutive5xx, o.MaxEjectionPercent = 3, 100
		s.clusters[0].Outlier = &o
		startWith(s)
		for range 3 {
			_, _, _, err := unary(bounded(), conn, "Unary", nil)
			Expect(grpcstatus.Code(err)).To(Equal(codes.Unavailable))
		}
		Expect(stat(srv, "cluster.backend.outlier_detection.ejections_enforced_consecutive_5xx")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.outlier_detection.ejections_active")).To(BeEquivalentTo(1))
	})

	// Filter::handleNon5xxResponseHeaders / onUpstreamTrailers (router.cc): a gRPC response's host
	// success is its grpc-status mapped by grpcToHttpStatus, from a trailers-only response's headers or
	// else from its trailers. Regression: every HTTP 200 counted as rq_success.
	It("counts a host's rq_success and rq_error by grpc-status, trailers-only or in trailers", func() {
		b = newGrpcBackend(0)
		startWith(grpcSetup(b, nil))
		for _, m := range []string{"Unary", "Fail", "FailLate", "InternalLate"} { // OK, 400, 429: successes; 500: an error
			_, _, _, _ = unary(bounded(), conn, m, nil)
		}
		b.failAll.Store(true)
		_, _, _, err := unary(bounded(), conn, "Unary", nil) // trailers-only UNAVAILABLE: 503, an error
		Expect(grpcstatus.Code(err)).To(Equal(codes.Unavailable))
		Expect([]string{hostStat(srv, b.addr, "rq_success"), hostStat(srv, b.addr, "rq_error")}).To(Equal([]string{"3", "2"}))
		Expect(stat(srv, "cluster.backend.upstream_rq_200")).To(BeEquivalentTo(5))
	})
})

// Regression: an HTTP/2 upstream's RST_STREAM in the middle of its response body was logged UC
// connection_termination; Envoy's reset reason is remote reset, flag UR
// (Filter::streamResetReasonToResponseFlag, router.cc).
var _ = Describe("an HTTP/2 upstream reset mid-body", func() {
	It("is UR upstream_reset_after_response_started{remote_reset}, the downstream reset too", func() {
		up := newH2Backend(false, true, false, 0, func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Length", "100")
			_, _ = io.WriteString(w, "0123456789")
			w.(http.Flusher).Flush()
			panic(http.ErrAbortHandler) // the HTTP/2 server resets the stream (RST_STREAM), not the connection
		})
		s := setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{h2Cluster("backend", 0, up.addr())}}
		srv, url, m := logged(s, textLog("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"))
		resp, err := client.Get(url + "/")
		Expect(err).NotTo(HaveOccurred())
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(err).To(HaveOccurred())
		Eventually(func() []string { return flushed(srv, m) }).WithTimeout(5 * time.Second).
			Should(Equal([]string{"200 UR upstream_reset_after_response_started{remote_reset}"}))
		Expect(stat(srv, "cluster.backend.upstream_rq_rx_reset")).To(BeEquivalentTo(1))
		Expect(stat(srv, "cluster.backend.http2.rx_reset")).To(BeEquivalentTo(1))
	})
})
