//lint:file-ignore SA1019 x/net's http2.Transport is the client whose errors (http2.StreamError) the specs assert on; net/http's bundled HTTP/2 hides them in unexported types on Go 1.26.
package faults_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshproof/meshproof/faults"
)

// dialH2C dials addr and speaks HTTP/2 with prior knowledge.
func dialH2C(ctx context.Context, network, addr string, _ *tls.Config) (net.Conn, error) {
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// rawH2 is a framer-level HTTP/2 client, to see exactly which frames the upstream sends.
type rawH2 struct {
	conn net.Conn
	fr   *http2.Framer
}

func newRawH2(addr string) *rawH2 {
	GinkgoHelper()
	conn, err := net.Dial("tcp", addr)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(conn.Close)
	Expect(conn.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
	_, err = io.WriteString(conn, http2.ClientPreface)
	Expect(err).NotTo(HaveOccurred())
	fr := http2.NewFramer(conn, conn)
	fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	Expect(fr.WriteSettings()).To(Succeed())
	return &rawH2{conn: conn, fr: fr}
}

func (c *rawH2) get(stream uint32, path string) {
	GinkgoHelper()
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "upstream"}, {":path", path}} {
		Expect(enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})).To(Succeed())
	}
	Expect(c.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: stream, BlockFragment: block.Bytes(), EndStream: true, EndHeaders: true})).To(Succeed())
}

// next returns the next frame that is not about the connection settings.
func (c *rawH2) next() http2.Frame {
	GinkgoHelper()
	for {
		f, err := c.fr.ReadFrame()
		Expect(err).NotTo(HaveOccurred())
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				Expect(c.fr.WriteSettingsAck()).To(Succeed())
			}
		case *http2.WindowUpdateFrame:
		default:
			return f
		}
	}
}

var _ = Describe("Upstream over HTTP/2 (h2c, prior knowledge)", func() {
	var transport *http2.Transport

	BeforeEach(func() {
		before := Goroutines()
		transport = &http2.Transport{AllowHTTP: true, DialTLSContext: dialH2C}
		DeferCleanup(func() {
			transport.CloseIdleConnections()
			Eventually(Goroutines).ShouldNot(HaveLeaked(before))
		})
	})

	start := func(size int, rules ...faults.Fault) *faults.Upstream {
		GinkgoHelper()
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "checkout", Response: faults.Response{Size: size}, Faults: rules})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		return u
	}

	get := func(u *faults.Upstream, path string) (*http.Response, []byte, error) {
		GinkgoHelper()
		resp, err := (&http.Client{Transport: transport}).Get("http://" + u.Addr() + path)
		if err != nil {
			return nil, nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(resp.Body)
		return resp, body, err
	}

	It("answers on the same port as HTTP/1.1, with flow control for large bodies", func() {
		u := start(1 << 20)
		for range 3 {
			resp, body, err := get(u, "/")
			Expect(err).NotTo(HaveOccurred())
			Expect(resp.ProtoMajor).To(Equal(2))
			Expect(resp.StatusCode).To(Equal(200))
			Expect(resp.Header.Get("x-meshproof-instance")).To(Equal("checkout/0"))
			Expect(body).To(HaveLen(1 << 20))
		}
		Expect(u.Stats().Connections).To(BeEquivalentTo(1), "one multiplexed connection")

		resp, err := http.Get("http://" + u.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.ProtoMajor).To(Equal(1))
		_, _ = io.Copy(io.Discard, resp.Body)
		Expect(resp.Body.Close()).To(Succeed())
		http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	})

	DescribeTable("answers RST_STREAM with the chosen code",
		func(code string, want http2.ErrCode) {
			u := start(10, faults.Fault{H2: &faults.H2{RSTStream: code, Percent: 100}})
			c := newRawH2(u.Addr())
			c.get(1, "/")
			Expect(c.next()).To(And(BeAssignableToTypeOf(&http2.RSTStreamFrame{}), HaveField("StreamID", BeEquivalentTo(1)), HaveField("ErrCode", want)))
			Expect(u.Stats().StreamResets).To(BeEquivalentTo(1))
		},
		Entry("REFUSED_STREAM", "REFUSED_STREAM", http2.ErrCodeRefusedStream),
		Entry("CANCEL", "CANCEL", http2.ErrCodeCancel),
		Entry("INTERNAL_ERROR", "INTERNAL_ERROR", http2.ErrCodeInternal),
		Entry("ENHANCE_YOUR_CALM", "ENHANCE_YOUR_CALM", http2.ErrCodeEnhanceYourCalm),
	)

	It("makes http2.Transport see REFUSED_STREAM as a StreamError", func() {
		u := start(10, faults.Fault{H2: &faults.H2{RSTStream: "REFUSED_STREAM", Percent: 100}})
		conn, err := net.Dial("tcp", u.Addr())
		Expect(err).NotTo(HaveOccurred())
		cc, err := transport.NewClientConn(conn)
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cc.Close)
		req, err := http.NewRequest(http.MethodGet, "http://"+u.Addr()+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		_, err = cc.RoundTrip(req) // one attempt: no transparent retry
		var se http2.StreamError
		Expect(errors.As(err, &se)).To(BeTrue(), "got %v", err)
		Expect(se.Code).To(Equal(http2.ErrCodeRefusedStream))
	})

	It("lets http2.Transport retry a refused stream transparently", func() {
		u := start(10, faults.Fault{First: 1, H2: &faults.H2{RSTStream: "REFUSED_STREAM", Percent: 100}})
		resp, _, err := get(u, "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(resp.Header.Get("x-meshproof-seq")).To(Equal("2"))
		Expect(u.Stats()).To(And(HaveField("Requests", BeEquivalentTo(2)), HaveField("StreamResets", BeEquivalentTo(1))))
	})

	It("sends GOAWAY with the last processed stream and the chosen code", func() {
		u := start(10, faults.Fault{Every: 2, H2: &faults.H2{GoAway: "ENHANCE_YOUR_CALM", Percent: 100}})
		c := newRawH2(u.Addr())
		c.get(1, "/")
		Expect(c.next()).To(And(BeAssignableToTypeOf(&http2.MetaHeadersFrame{}), HaveField("StreamID", BeEquivalentTo(1))))
		Expect(c.next()).To(And(BeAssignableToTypeOf(&http2.DataFrame{}), HaveField("StreamID", BeEquivalentTo(1))))
		c.get(3, "/")
		f := c.next()
		Expect(f).To(BeAssignableToTypeOf(&http2.GoAwayFrame{}))
		Expect(f.(*http2.GoAwayFrame).LastStreamID).To(BeEquivalentTo(1))
		Expect(f.(*http2.GoAwayFrame).ErrCode).To(Equal(http2.ErrCodeEnhanceYourCalm))
		_, err := c.fr.ReadFrame()
		Expect(err).To(MatchError(io.EOF), "the upstream closes its side once no stream is left")
		Expect(u.Stats().GoAways).To(BeEquivalentTo(1))
	})

	It("makes http2.Transport see the GOAWAY", func() {
		u := start(10, faults.Fault{H2: &faults.H2{GoAway: "INTERNAL_ERROR", Percent: 100}})
		_, _, err := get(u, "/")
		Expect(err).To(MatchError(ContainSubstring("GOAWAY")))
		Expect(err).To(MatchError(ContainSubstring("INTERNAL_ERROR")))
	})

	It("answers gRPC aborts trailers-only", func() {
		u := start(10, faults.Fault{Abort: &faults.Abort{GRPCStatus: 14, Percent: 100}})
		resp, body, err := get(u, "/pkg.Svc/Method")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(resp.Header.Get("content-type")).To(Equal("application/grpc"))
		Expect(resp.Header.Get("grpc-status")).To(Equal("14"))
		Expect(resp.Header.Get("grpc-message")).To(Equal(faults.GRPCMessage))
		Expect(body).To(BeEmpty())
	})

	It("resets the connection in the middle of the body", func() {
		u := start(64<<10, faults.Fault{Reset: &faults.Reset{Percent: 100, AfterBytes: intp(1000)}})
		resp, body, err := get(u, "/")
		Expect(resp).NotTo(BeNil())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(err).To(Or(MatchError(syscall.ECONNRESET), MatchError(io.ErrUnexpectedEOF), MatchError(ContainSubstring("connection reset"))))
		Expect(len(body)).To(BeNumerically("<=", 1000))
	})

	It("hangs a stream until the client gives up", func() {
		u := start(10, faults.Fault{Hang: &faults.Hang{Percent: 100}})
		ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+u.Addr()+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		_, err = transport.RoundTrip(req)
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Eventually(func() uint64 { return u.Stats().Hangs }).Should(BeEquivalentTo(1))
	})
})
