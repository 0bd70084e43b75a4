package proxy_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/testpki"
)

// h2cClient speaks HTTP/2 with prior knowledge over clear text.
func h2cClient() *http.Client {
	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: p}}
}

// h2Raw is a raw HTTP/2 client connection: the preface and an empty SETTINGS sent, frames read and
// written by hand.
type h2Raw struct {
	conn net.Conn
	fr   *http2.Framer
	enc  *hpack.Encoder
	buf  bytes.Buffer
}

func dialH2(addr string) *h2Raw {
	GinkgoHelper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(c.Close)
	Expect(c.SetDeadline(time.Now().Add(20 * time.Second))).To(Succeed())
	_, err = io.WriteString(c, http2.ClientPreface)
	Expect(err).NotTo(HaveOccurred())
	r := &h2Raw{conn: c, fr: http2.NewFramer(c, c)}
	r.enc = hpack.NewEncoder(&r.buf)
	Expect(r.fr.WriteSettings()).To(Succeed())
	return r
}

// request sends a GET of path on stream id (the request ends with its headers).
func (r *h2Raw) request(id uint32, path string) error {
	r.buf.Reset()
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "h2.test"}, {":path", path}} {
		_ = r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	return r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.buf.Bytes(), EndStream: true, EndHeaders: true})
}

// frames reads frames (settings acknowledged) into the channel until the connection ends.
func (r *h2Raw) frames() <-chan any {
	out := make(chan any, 4096)
	go func() {
		defer close(out)
		for {
			f, err := r.fr.ReadFrame()
			if err != nil {
				return
			}
			if s, ok := f.(*http2.SettingsFrame); ok && !s.IsAck() {
				continue
			}
			if d, ok := f.(*http2.DataFrame); ok { // the framer reuses its buffer: keep a copy
				out <- &dataCopy{stream: d.StreamID, data: bytes.Clone(d.Data()), end: d.StreamEnded()}
				continue
			}
			out <- f
		}
	}()
	return out
}

type dataCopy struct {
	stream uint32
	data   []byte
	end    bool
}

// h2Route is a listener answering /direct itself and sending the rest to backend.
func h2Route(backend string) setup {
	return setup{routes: []config.Route{
		{Match: config.RouteMatch{Prefix: "/direct"}, DirectResponse: &config.DirectResponse{Status: 200, Body: "direct"}},
		prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend)}}
}

var _ = Describe("HTTP/2 downstream", func() {
	It("serves HTTP/2 with prior knowledge and HTTP/1.1 on the same listener (codec AUTO), counting each", func() {
		backend := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			_, _ = io.WriteString(w, r.Proto+" "+r.Host+" te="+r.Header.Get("Te"))
		})
		srv, url := start(h2Route(backend.addr()))
		h2 := h2cClient()
		for _, path := range []string{"/direct", "/up"} {
			req, _ := http.NewRequest(http.MethodGet, url+path, nil)
			req.Header.Set("Te", "trailers")
			resp, err := h2.Do(req)
			Expect(err).NotTo(HaveOccurred())
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			Expect(resp.ProtoMajor).To(Equal(2))
			Expect(resp.StatusCode).To(Equal(200))
			if path == "/up" { // :authority became the Host; the upstream (HTTP/1.1) sees no te: trailers
				Expect(string(b)).To(Equal("HTTP/1.1 " + strings.TrimPrefix(url, "http://") + " te="))
			} else {
				Expect(string(b)).To(Equal("direct"))
			}
		}
		code, _, body := get(url + "/direct")
		Expect([]any{code, body}).To(Equal([]any{200, "direct"}))
		Expect(stat(srv, "http.ingress.downstream_cx_http2_total")).To(Equal(uint64(1)))
		Expect(stat(srv, "http.ingress.downstream_cx_http2_active")).To(Equal(uint64(1)))
		Expect(stat(srv, "http.ingress.downstream_cx_http1_total")).To(Equal(uint64(1)))
		Expect(stat(srv, "http.ingress.downstream_rq_2xx")).To(Equal(uint64(3)))
		h2.CloseIdleConnections()
		Eventually(func() []uint64 {
			return []uint64{stat(srv, "http.ingress.downstream_cx_http2_active"), stat(srv, "http.ingress.downstream_cx_active")}
		}).Should(Equal([]uint64{0, 1}), "the HTTP/2 connection's end counted; the HTTP/1 client's keep-alive one open")
	})

	It("routes on :authority as on Host", func() {
		backend := newUpstream(ok)
		s := h2Route(backend.addr())
		s.vhosts = []config.VirtualHost{
			{Name: "h2", Domains: []string{"h2.test"}, Routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 200, Body: "h2.test"}}}},
			{Name: "other", Domains: []string{"*"}, Routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 404}}}}}
		srv, _ := start(s)
		r := dialH2(srv.ListenerAddr("edge"))
		frames := r.frames()
		Expect(r.request(1, "/")).To(Succeed())
		var got []string
		for f := range frames {
			if d, ok := f.(*dataCopy); ok && d.stream == 1 {
				got = append(got, string(d.data))
				if d.end {
					break
				}
			}
		}
		Expect(strings.Join(got, "")).To(Equal("h2.test"))
	})

	It("answers the preface as an HTTP/1 request line with codec HTTP1, and refuses HTTP/1 with codec HTTP2", func() {
		backend := newUpstream(ok)
		s := h2Route(backend.addr())
		s.listener = func(l *config.Listener) { l.Codec = config.CodecHTTP1 }
		srv, _ := start(s)
		got := rawExchange("http://"+srv.ListenerAddr("edge"), http2.ClientPreface, false)
		Expect(got).To(HavePrefix("HTTP/1.1 505 "))

		s.listener = func(l *config.Listener) { l.Codec = config.CodecHTTP2 }
		srv2, url2 := start(s)
		_, err := client.Get(url2 + "/direct")
		Expect(err).To(HaveOccurred(), "an HTTP/1 request on an HTTP/2-only listener")
		resp, err := h2cClient().Get(url2 + "/direct")
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.ProtoMajor).To(Equal(2))
		Expect(stat(srv2, "http.ingress.downstream_cx_http1_total")).To(BeZero())
	})

	It("serves h2 to a TLS client that chose it by ALPN, and HTTP/1.1 to one that did not", func() {
		pki := newPKI()
		certs := pki.certs("server", pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}}))
		ltls, _ := tlsContexts("common_tls_context: {alpn_protocols: [h2, http/1.1], "+certs+"}", "")
		backend := newUpstream(ok)
		s := h2Route(backend.addr())
		s.listener = func(l *config.Listener) { l.TLS = ltls }
		srv, url := start(s)
		url = strings.Replace(url, "http://", "https://", 1)
		p := new(http.Protocols)
		p.SetHTTP2(true)
		h2 := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: p,
			TLSClientConfig: &tls.Config{RootCAs: pki.ca.Pool(), ServerName: "proxy.internal"}}}
		resp, err := h2.Get(url + "/up")
		Expect(err).NotTo(HaveOccurred())
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect([]any{resp.ProtoMajor, resp.StatusCode, string(b), resp.TLS.NegotiatedProtocol}).To(Equal([]any{2, 200, "hello", "h2"}))
		code, body, st, err := getVia(httpsClient(pki.ca.Pool(), func(c *tls.Config) { c.NextProtos = []string{"http/1.1"} }), url+"/direct")
		Expect(err).NotTo(HaveOccurred())
		Expect([]any{code, body, st.NegotiatedProtocol}).To(Equal([]any{200, "direct", "http/1.1"}))
		Expect(stat(srv, "http.ingress.downstream_cx_http2_total")).To(Equal(uint64(1)))
		Expect(stat(srv, "http.ingress.downstream_cx_http1_total")).To(Equal(uint64(1)))
	})

	It("counts a stream the client reset in downstream_rq_rx_reset, not as a connection destroyed", func() {
		backend := newUpstream(hang)
		srv, _ := start(h2Route(backend.addr()))
		r := dialH2(srv.ListenerAddr("edge"))
		_ = r.frames()
		Expect(r.request(1, "/up")).To(Succeed())
		Eventually(func() uint64 { return stat(srv, "cluster.backend.upstream_rq_total") }).Should(BeEquivalentTo(1))
		Expect(r.fr.WriteRSTStream(1, http2.ErrCodeCancel)).To(Succeed())
		Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_rq_rx_reset") }).Should(BeEquivalentTo(1))
		Expect(stat(srv, "http.ingress.downstream_cx_destroy_remote_active_rq")).To(BeZero(), "the connection lives on")
		Expect(stat(srv, "http.ingress.downstream_cx_http2_active")).To(BeEquivalentTo(1))
	})

	Describe("rapid reset (CVE-2023-44487)", func() {
		It("closes a connection once 500 streams closed and at least half were reset before their response", func() {
			backend := newUpstream(hang)
			s := h2Route(backend.addr())
			s.opts = proxy.Options{Clock: fakeClock()} // no stream lives a second: every reset is premature
			srv, _ := start(s)
			goroutines := runtime.NumGoroutine()
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			// 300 answered streams first: the premature resets after them reach half of those closed
			// only at 300 of 600 (past the total count of 500, half of all closed streams is the rule).
			id := uint32(1)
			for ; id < 600; id += 2 {
				Expect(r.request(id, "/direct")).To(Succeed())
				for f := range frames {
					if d, ok := f.(*dataCopy); ok && d.stream == id && d.end {
						break
					}
				}
			}
			for ; id < 2*5000; id += 2 {
				if r.request(id, "/up") != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break // closed by the proxy
				}
			}
			for range frames { // until the proxy closes the connection
			}
			Expect(stat(srv, "http.ingress.downstream_rq_too_many_premature_resets")).To(Equal(uint64(1)))
			Expect(stat(srv, "http2.rx_reset")).To(Equal(uint64(300)), "closed at 300 premature of 600 closed")
			Eventually(func() uint64 { return stat(srv, "http.ingress.downstream_cx_http2_active") }).Should(BeZero())
			Eventually(runtime.NumGoroutine).WithTimeout(10*time.Second).Should(BeNumerically("<=", goroutines+10),
				"the streams' goroutines are gone with the connection")
		})

		It("closes a connection as soon as 250 streams were reset prematurely, before 500 closed", func() {
			// Envoy's maybeDrainDueToPrematureResets: below the total count, premature resets reaching
			// half of it close the connection at once (the rest could not bring the share under half).
			backend := newUpstream(hang)
			s := h2Route(backend.addr())
			s.opts = proxy.Options{Clock: fakeClock()}
			srv, _ := start(s)
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			for id := uint32(1); id < 2*300; id += 2 {
				if r.request(id, "/up") != nil || r.fr.WriteRSTStream(id, http2.ErrCodeCancel) != nil {
					break
				}
			}
			for range frames {
			}
			Expect(stat(srv, "http.ingress.downstream_rq_too_many_premature_resets")).To(Equal(uint64(1)))
			Expect(stat(srv, "http2.rx_reset")).To(Equal(uint64(250)), "closed at the 250th premature reset, of 300 sent")
		})

		It("keeps a connection whose 600 streams were answered", func() {
			srv, _ := start(h2Route(closedAddr()))
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			done := 0
			for id := uint32(1); id <= 1199; id += 2 {
				Expect(r.request(id, "/direct")).To(Succeed())
				for f := range frames {
					if d, ok := f.(*dataCopy); ok && d.stream == id && d.end {
						break
					}
				}
				done++
			}
			Expect(done).To(Equal(600))
			Expect(r.request(1201, "/direct")).To(Succeed())
			Eventually(frames).Should(Receive(BeAssignableToTypeOf(&dataCopy{})), "the connection still serves")
			Expect(stat(srv, "http.ingress.downstream_rq_too_many_premature_resets")).To(BeZero())
		})
	})

	Describe("flood limits", func() {
		It("closes a connection sending empty DATA frames (max_consecutive_inbound_frames_with_empty_payload 1)", func() {
			srv, _ := start(h2Route(closedAddr()))
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			r.buf.Reset()
			for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "h2.test"}, {":path", "/direct"}} {
				_ = r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
			}
			Expect(r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: r.buf.Bytes(), EndHeaders: true})).To(Succeed())
			Expect(r.fr.WriteData(1, false, nil)).To(Succeed())
			Expect(r.fr.WriteData(1, false, nil)).To(Succeed())
			for range frames {
			}
			Expect(stat(srv, "http2.inbound_empty_frames_flood")).To(Equal(uint64(1)))
		})

		It("closes a connection sending more PRIORITY frames than max_inbound_priority_frames_per_stream allows", func() {
			s := h2Route(closedAddr())
			s.listener = func(l *config.Listener) {
				l.HTTP2 = config.HTTP2Options{MaxConsecutiveInboundFramesWithEmptyPayload: 1, MaxInboundPriorityFramesPerStream: 5,
					MaxInboundWindowUpdateFramesPerDataFrameSent: 10}
			}
			srv, _ := start(s)
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			for range 6 { // 5 × (1 + 0 streams) allowed
				Expect(r.fr.WritePriority(3, http2.PriorityParam{Weight: 1})).To(Succeed())
			}
			for range frames {
			}
			Expect(stat(srv, "http2.inbound_priority_frames_flood")).To(Equal(uint64(1)))
		})

		It("closes a connection sending WINDOW_UPDATE frames the proxy sent no DATA for", func() {
			srv, _ := start(h2Route(closedAddr()))
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			for range 6 { // 5 + 2 × (0 streams + 10 × 0 DATA frames) allowed
				Expect(r.fr.WriteWindowUpdate(0, 1)).To(Succeed())
			}
			for range frames {
			}
			Expect(stat(srv, "http2.inbound_window_update_frames_flood")).To(Equal(uint64(1)))
		})
	})

	Describe("drain and shutdown", func() {
		var release chan struct{}
		var backend *upstream
		BeforeEach(func() {
			release = make(chan struct{})
			backend = newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
				<-release
				_, _ = io.WriteString(w, "late")
			})
			DeferCleanup(func() { // before the upstream closes: a failed spec must not leave it waiting
				select {
				case <-release:
				default:
					close(release)
				}
			})
		})

		// goAwayOf waits for the connection's GOAWAY, passing over other frames.
		goAwayOf := func(frames <-chan any) *http2.GoAwayFrame {
			GinkgoHelper()
			var ga *http2.GoAwayFrame
			Eventually(func() bool {
				for {
					select {
					case f, ok := <-frames:
						if !ok {
							return true
						}
						if g, isGA := f.(*http2.GoAwayFrame); isGA {
							ga = g
							return true
						}
					default:
						return false
					}
				}
			}).WithTimeout(10 * time.Second).Should(BeTrue())
			Expect(ga).NotTo(BeNil(), "a GOAWAY before the connection ended")
			return ga
		}

		// readUntilClosed collects the frames of a connection until it ends.
		readUntilClosed := func(frames <-chan any) (goAway *http2.GoAwayFrame, ended map[uint32]string) {
			ended = map[uint32]string{}
			bodies := map[uint32]string{}
			for f := range frames {
				switch f := f.(type) {
				case *http2.GoAwayFrame:
					Expect(goAway).To(BeNil(), "one GOAWAY")
					goAway = f
				case *dataCopy:
					bodies[f.stream] += string(f.data)
					if f.end {
						ended[f.stream] = bodies[f.stream]
					}
				}
			}
			return goAway, ended
		}

		It("sends GOAWAY on the first stream after a drain started, finishes the streams in flight and closes", func() {
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())},
				opts: proxy.Options{DrainStrategy: proxy.DrainImmediate, DrainTime: time.Hour}})
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			Expect(r.request(1, "/a")).To(Succeed())
			Eventually(backend.requests.Load).Should(Equal(int64(1)))
			srv.Drain(true, 0)
			Expect(r.request(3, "/b")).To(Succeed())
			Eventually(backend.requests.Load).Should(Equal(int64(2)))
			ga := goAwayOf(frames)
			Expect([]any{ga.LastStreamID, ga.ErrCode}).To(Equal([]any{uint32(3), http2.ErrCodeNo}))
			Expect(r.request(5, "/c")).To(Succeed()) // after the GOAWAY: not processed
			close(release)
			goAway, ended := readUntilClosed(frames)
			Expect(goAway).To(BeNil(), "no second GOAWAY")
			Expect(ended).To(Equal(map[uint32]string{1: "late", 3: "late"}))
			Expect(backend.requests.Load()).To(Equal(int64(2)))
			Expect(stat(srv, "http.ingress.downstream_cx_drain_close")).To(Equal(uint64(1)))
		})

		It("sends GOAWAY on the stream that reaches max_requests_per_connection, and serves it", func() {
			close(release)
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())},
				maxRequests: 2})
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			Expect(r.request(1, "/")).To(Succeed())
			Expect(r.request(3, "/")).To(Succeed())
			goAway, ended := readUntilClosed(frames)
			Expect(goAway).NotTo(BeNil())
			Expect(goAway.LastStreamID).To(Equal(uint32(3)))
			Expect(ended).To(Equal(map[uint32]string{1: "late", 3: "late"}))
			Expect(stat(srv, "http.ingress.downstream_cx_max_requests_reached")).To(Equal(uint64(1)))
		})

		It("sends GOAWAY on Shutdown, lets the streams in flight finish, and Shutdown returns once they did", func() {
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())}})
			r := dialH2(srv.ListenerAddr("edge"))
			frames := r.frames()
			for _, id := range []uint32{1, 3, 5} {
				Expect(r.request(id, "/")).To(Succeed())
			}
			Eventually(backend.requests.Load).Should(Equal(int64(3)))
			shut := make(chan error, 1)
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			DeferCleanup(cancel)
			go func() { shut <- srv.Shutdown(ctx) }()
			Expect(goAwayOf(frames).LastStreamID).To(Equal(uint32(5)))
			Consistently(shut).ShouldNot(Receive(), "Shutdown waits for the streams")
			close(release)
			_, ended := readUntilClosed(frames)
			Expect(ended).To(Equal(map[uint32]string{1: "late", 3: "late", 5: "late"}))
			var err error
			Eventually(shut).WithTimeout(10 * time.Second).Should(Receive(&err))
			Expect(err).NotTo(HaveOccurred())
			_, err = h2cClient().Get("http://" + r.conn.RemoteAddr().String() + "/")
			Expect(errors.Is(err, context.DeadlineExceeded) || err != nil).To(BeTrue(), "no new connection")
		})
	})
})
