package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
	"github.com/meshproof/meshproof/proxy/stats"
)

// trailerUpstream is an upstream test double answering every request with a body and trailers, as an
// HTTP/2 (gRPC) upstream does.
type trailerUpstream struct{}

func (trailerUpstream) RoundTrip(_ context.Context, _ *h1.Request) (*http.Response, error) {
	return &http.Response{StatusCode: 200, Proto: "HTTP/2.0", ProtoMajor: 2, ContentLength: -1,
		Header:  http.Header{"Content-Type": {"application/grpc"}},
		Body:    io.NopCloser(strings.NewReader("payload")),
		Trailer: http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"done"}}}, nil
}
func (trailerUpstream) Close() {}
func (trailerUpstream) Drain() {}

// The router forwards an upstream response's trailers to an HTTP/2 downstream (gRPC's status).
func TestH2DownstreamGetsUpstreamTrailers(t *testing.T) {
	g := gomega.NewWithT(t)
	cl := config.NewCluster("backend")
	cl.ConnectTimeout = time.Second
	cl.Endpoints = []config.Endpoint{{Address: "127.0.0.1:1", Weight: 1}}
	cfg := &config.Bootstrap{Clusters: []config.Cluster{cl},
		Listeners: []config.Listener{{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress",
			Routes: config.RouteConfig{Name: "r", VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"},
				Routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, Action: config.RouteAction{Cluster: "backend", Timeout: 5 * time.Second}}}}}}}}}
	srv, err := New(cfg, Options{})
	g.Expect(err).NotTo(gomega.HaveOccurred())
	srv.gen.Load().clusters["backend"].upstreams[0] = trailerUpstream{} // behind the upstream seam, before any request
	g.Expect(srv.Start()).To(gomega.Succeed())
	defer srv.Close()

	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: p}}
	resp, err := c.Get("http://" + srv.ListenerAddr("edge") + "/svc.Echo/Call")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	b, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(string(b)).To(gomega.Equal("payload"))
	g.Expect(resp.Trailer).To(gomega.Equal(http.Header{"Grpc-Status": {"0"}, "Grpc-Message": {"done"}}))

	// An HTTP/1.1 downstream gets the body, no trailers (Envoy's HTTP/1 codec without enable_trailers).
	resp, err = http.Get("http://" + srv.ListenerAddr("edge") + "/svc.Echo/Call")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	g.Expect(string(b)).To(gomega.Equal("payload"))
	g.Expect(resp.Trailer).To(gomega.BeEmpty())
}

// chunkConn is a connection whose reads return its chunks one by one, the last with io.EOF.
type chunkConn struct {
	net.Conn
	chunks [][]byte
	reads  int // Read calls that reached the connection
}

func (c *chunkConn) Read(p []byte) (int, error) {
	c.reads++
	if len(c.chunks) == 0 {
		return 0, io.EOF
	}
	n := copy(p, c.chunks[0])
	if c.chunks[0] = c.chunks[0][n:]; len(c.chunks[0]) == 0 {
		c.chunks = c.chunks[1:]
	}
	if len(c.chunks) == 0 {
		return n, io.EOF
	}
	return n, nil
}

func (c *chunkConn) Close() error { return nil }

// h2Frame is a raw frame: its header and payload.
func h2Frame(typ, flags byte, id uint32, payload []byte) []byte {
	n := len(payload)
	return append([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}, payload...)
}

// x/net reads a frame's header and payload in two reads: the connection's read-ahead takes the frames
// the socket holds in one system call, hands x/net the same bytes in the same order, reads a large
// payload straight from the socket, returns the socket's error only after the bytes read with it, and
// its frame scanner still sees every frame (a stream opened and closed both ways is counted closed).
func TestH2ConnReadAheadKeepsBytesAndFrames(t *testing.T) {
	g := gomega.NewWithT(t)
	srv := newH2Server(config.Listener{StatPrefix: "ingress"}, http.NotFoundHandler(), nil, stats.NewStore(), clock.Real{}, nil)
	headers := h2Frame(0x1, 0x4|0x1, 1, []byte{0x82, 0x86, 0x84}) // GET http / (static table), END_STREAM
	big := h2Frame(0x0, 0x1, 3, bytes.Repeat([]byte("d"), 2*h2ReadBuffer))
	var all []byte
	all = append(all, headers...)
	all = append(all, h2Frame(0x8, 0, 0, []byte{0, 0, 0, 1})...)
	all = append(all, h2Frame(0x1, 0x4, 3, []byte{0x83, 0x86, 0x84})...) // POST, body open
	split := len(all)
	all = append(all, big...)
	nc := &chunkConn{chunks: [][]byte{bytes.Clone(all[:split]), bytes.Clone(all[split:])}}
	c := &h2Conn{Conn: nc, srv: srv, streams: map[uint32]*h2Stream{}}

	var got []byte
	var reads []int
	hdr := make([]byte, 9)
	var err error
	for err == nil {
		// As Framer.ReadFrame: io.ReadFull of the header, then of the payload.
		if _, err = io.ReadFull(c, hdr); err != nil {
			break
		}
		got = append(got, hdr...)
		payload := make([]byte, int(hdr[0])<<16|int(hdr[1])<<8|int(hdr[2]))
		_, err = io.ReadFull(c, payload)
		got = append(got, payload...)
		reads = append(reads, nc.reads)
	}
	g.Expect(err).To(gomega.MatchError(io.EOF))
	g.Expect(got).To(gomega.Equal(all))
	// The three small frames came in one read of the socket; the large frame in two (the buffer
	// filled for its header, the rest of its payload straight), then the end.
	g.Expect(reads).To(gomega.Equal([]int{1, 1, 1, 3}))
	g.Expect(nc.reads).To(gomega.Equal(4))
	g.Expect(c.opened).To(gomega.Equal(uint64(2)))
	g.Expect(c.windowUpd).To(gomega.Equal(uint64(1)))
	g.Expect(c.streams).To(gomega.HaveKey(uint32(1)), "stream 1 is still open our way: no response")
	g.Expect(c.streams[3].remoteDone).To(gomega.BeTrue(), "the DATA frame read straight from the socket ended stream 3")
}

// A stream that its HEADERS ended reaches the handler with http.NoBody, as net/http's and the h1
// server's bodiless requests do; a stream with a body open (even an announced empty one) keeps x/net's.
func TestH2StreamWithoutBodyGetsNoBody(t *testing.T) {
	g := gomega.NewWithT(t)
	type seen struct {
		noBody bool
		body   string
	}
	got := make(chan seen, 3)
	srv := newH2Server(config.Listener{StatPrefix: "ingress"}, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Body == http.NoBody, string(b)}
	}), &connManager{st: newHCMStats(stats.NewStore(), "ingress")}, stats.NewStore(), clock.Real{}, nil)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer ln.Close()
	go func() {
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			go srv.serveConn(nc, nil)
		}
	}()
	defer srv.close()

	p := new(http.Protocols)
	p.SetUnencryptedHTTP2(true)
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Protocols: p}}
	defer c.CloseIdleConnections()
	for _, tc := range []struct {
		name string
		req  func() (*http.Request, error)
		want seen
	}{
		{"GET", func() (*http.Request, error) { return http.NewRequest("GET", "http://"+ln.Addr().String()+"/", nil) }, seen{noBody: true}},
		{"POST with a body", func() (*http.Request, error) {
			return http.NewRequest("POST", "http://"+ln.Addr().String()+"/", strings.NewReader("abc"))
		}, seen{body: "abc"}},
		{"POST with an empty body and a length", func() (*http.Request, error) {
			r, err := http.NewRequest("POST", "http://"+ln.Addr().String()+"/", io.NopCloser(strings.NewReader("")))
			if err == nil {
				r.ContentLength, r.Header["Content-Length"] = 0, []string{"0"}
			}
			return r, err
		}, seen{}},
	} {
		req, err := tc.req()
		g.Expect(err).NotTo(gomega.HaveOccurred())
		resp, err := c.Do(req)
		g.Expect(err).NotTo(gomega.HaveOccurred(), tc.name)
		resp.Body.Close()
		g.Expect(resp.ProtoMajor).To(gomega.Equal(2))
		g.Eventually(got).Should(gomega.Receive(gomega.Equal(tc.want)), tc.name)
	}
}

// Regression (review): after our GOAWAY the codec ignores new streams without a frame, so the scanner
// kept a record of each — a client could grow the map without bound and raise the flood limits'
// thresholds. Streams past max_concurrent_streams (refused by the codec) are not recorded either.
func TestH2ScannerRecordsNoStreamTheCodecWillNotServe(t *testing.T) {
	g := gomega.NewWithT(t)
	srv := newH2Server(config.Listener{StatPrefix: "ingress", HTTP2: config.HTTP2Options{MaxConcurrentStreams: 3}},
		http.NotFoundHandler(), nil, stats.NewStore(), clock.Real{}, nil)
	var all []byte
	for id := uint32(1); id <= 11; id += 2 { // six streams, their bodies open
		all = append(all, h2Frame(0x1, 0x4, id, []byte{0x83, 0x86, 0x84})...)
	}
	c := &h2Conn{Conn: &chunkConn{chunks: [][]byte{all}}, srv: srv, streams: map[uint32]*h2Stream{}}
	_, err := io.ReadAll(c)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(c.streams).To(gomega.HaveLen(3), "past max_concurrent_streams: refused by the codec, not recorded")
	g.Expect(c.opened).To(gomega.Equal(uint64(3)))

	all = all[:0]
	for id := uint32(13); id <= 2013; id += 2 {
		all = append(all, h2Frame(0x1, 0x4, id, []byte{0x83, 0x86, 0x84})...)
	}
	c = &h2Conn{Conn: &chunkConn{chunks: [][]byte{all}}, srv: srv, streams: map[uint32]*h2Stream{}, goingAway: true}
	_, err = io.ReadAll(c)
	g.Expect(err).NotTo(gomega.HaveOccurred())
	g.Expect(c.streams).To(gomega.BeEmpty(), "after our GOAWAY new streams are ignored, not recorded")
	g.Expect(c.opened).To(gomega.BeZero())
}
