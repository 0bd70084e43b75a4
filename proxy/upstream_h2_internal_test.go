package proxy

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// The HTTP/2 pool on its own, against a Go h2c server: what the router relies on beyond status codes.
var _ = Describe("h2Upstream", func() {
	var (
		conns  atomic.Int64
		handle func(w http.ResponseWriter, r *http.Request)
		addr   string
	)
	BeforeEach(func() {
		conns.Store(0)
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { handle(w, r) }))
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			if s == http.StateNew {
				conns.Add(1)
			}
		}
		p := new(http.Protocols)
		p.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = p
		srv.Start()
		DeferCleanup(srv.Close)
		addr = srv.Listener.Addr().String()
	})
	dial := func(ctx context.Context, addr string) (net.Conn, error) {
		return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
	}
	pool := func(opts config.UpstreamHTTP) *h2Upstream {
		if opts.HTTP2 == (config.UpstreamHTTP2Options{}) {
			opts.HTTP2 = config.DefaultUpstreamHTTP2Options()
		}
		p := newH2Upstream(addr, dial, nil, opts, false, nil)
		DeferCleanup(p.Close)
		return p
	}
	roundTrip := func(p *h2Upstream, req *h1.Request) (*http.Response, string, error) {
		GinkgoHelper()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := p.RoundTrip(ctx, req)
		if err != nil {
			return nil, "", err
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp, string(b), err
	}

	It("surfaces the response trailers in resp.Trailer once the body is read", func() {
		handle = func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Trailer", "Grpc-Status")
			io.WriteString(w, "body")
			w.Header().Set("Grpc-Status", "0")
		}
		resp, body, err := roundTrip(pool(config.UpstreamHTTP{}), &h1.Request{Method: "GET", URI: "/x?y=1", Host: "svc"})
		Expect(err).NotTo(HaveOccurred())
		Expect(body).To(Equal("body"))
		Expect(resp.Trailer.Get("Grpc-Status")).To(Equal("0"))
	})

	DescribeTable("streams Body then BodyRest",
		func(length int64, wantLength string) {
			handle = func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				io.WriteString(w, r.Method+" "+r.URL.RequestURI()+" "+r.Host+" "+strconv.FormatInt(r.ContentLength, 10)+" "+string(b))
			}
			_, body, err := roundTrip(pool(config.UpstreamHTTP{}), &h1.Request{Method: "POST", URI: "/up?q=a%20b", Host: "svc",
				Body: []byte("ab"), BodyRest: strings.NewReader("cdef"), BodyLength: length})
			Expect(err).NotTo(HaveOccurred())
			Expect(body).To(Equal("POST /up?q=a%20b svc " + wantLength + " abcdef"))
		},
		Entry("with its length", int64(6), "6"),
		Entry("of unknown length", int64(-1), "-1"),
	)

	It("ends the stream when the aborter interrupts it", func() {
		arrived, gone := make(chan struct{}), make(chan struct{})
		handle = func(w http.ResponseWriter, r *http.Request) {
			close(arrived)
			<-r.Context().Done()
			close(gone)
		}
		ab := &h1.Aborter{}
		errs := make(chan error, 1)
		go func() {
			_, err := pool(config.UpstreamHTTP{}).RoundTrip(context.Background(), &h1.Request{Method: "GET", URI: "/", Abort: ab})
			errs <- err
		}()
		Eventually(arrived).WithTimeout(5 * time.Second).Should(BeClosed())
		ab.Interrupt()
		Eventually(errs).WithTimeout(5 * time.Second).Should(Receive(MatchError(context.Canceled)))
		Eventually(gone).WithTimeout(5 * time.Second).Should(BeClosed()) // the upstream saw the stream reset
	})

	It("fails with os.ErrDeadlineExceeded past the Deadline", func() {
		handle = func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() }
		_, err := pool(config.UpstreamHTTP{}).RoundTrip(context.Background(), &h1.Request{Method: "GET", URI: "/", Deadline: time.Now().Add(50 * time.Millisecond)})
		Expect(errors.Is(err, os.ErrDeadlineExceeded)).To(BeTrue(), "got %v", err)
	})

	It("closes a connection once it carried max_requests_per_connection streams", func() {
		handle = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
		p := pool(config.UpstreamHTTP{MaxRequestsPerConnection: 2})
		for range 3 {
			_, body, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
			Expect(err).NotTo(HaveOccurred())
			Expect(body).To(Equal("ok"))
		}
		Expect(conns.Load()).To(BeEquivalentTo(2))
		Expect(p.Open()).To(Equal(1)) // the first closed after its second stream
	})

	It("drains: idle connections close, later requests are still served", func() {
		handle = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
		p := pool(config.UpstreamHTTP{})
		_, _, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Open()).To(Equal(1))
		p.Drain()
		Expect(p.Open()).To(BeZero())
		_, body, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
		Expect(err).NotTo(HaveOccurred())
		Expect(body).To(Equal("ok"))
		Expect(p.Open()).To(BeZero()) // closed once idle
		Expect(conns.Load()).To(BeEquivalentTo(2))
	})

	// Regression: a connection the upstream closed while idle kept its max_connections slot until the
	// pool's next sweep (every second), so the next request overflowed the breaker and waited for the
	// sweep instead of dialing at once.
	It("gives back the slot of a connection the upstream closed while idle at the next request", func() {
		handle = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
		limits := &oneConnection{}
		p := newH2Upstream(addr, dial, limits, config.UpstreamHTTP{HTTP2: config.DefaultUpstreamHTTP2Options()}, false, nil)
		p.reapEvery = time.Hour // no sweep: the request itself must notice
		DeferCleanup(p.Close)
		_, _, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
		Expect(err).NotTo(HaveOccurred())
		p.mu.Lock()
		c := p.conns[0]
		p.mu.Unlock()
		Expect(c.cc.Close()).To(Succeed()) // as if the upstream had closed it
		_, body, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
		Expect(err).NotTo(HaveOccurred())
		Expect(body).To(Equal("ok"))
		Expect(limits.overflows.Load()).To(BeZero())
		Expect(conns.Load()).To(BeEquivalentTo(2))
	})

	// Regression: a connection dialed after Drain for a request that gave up meanwhile carried no
	// stream, so no release closed it: it kept its max_connections slot until idle_timeout (forever
	// without one).
	It("closes a connection dialed after Drain for a request that gave up, giving its slot back", func() {
		handle = func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }
		limits := &oneConnection{}
		gate := make(chan struct{})
		dialed := make(chan struct{}, 1)
		gated := func(ctx context.Context, addr string) (net.Conn, error) {
			<-gate
			defer func() { dialed <- struct{}{} }()
			return dial(ctx, addr)
		}
		p := newH2Upstream(addr, gated, limits, config.UpstreamHTTP{HTTP2: config.DefaultUpstreamHTTP2Options()}, false, nil)
		p.reapEvery = time.Hour // no sweep: the dial's end itself must close it
		DeferCleanup(p.Close)
		p.Drain()
		_, err := p.RoundTrip(context.Background(), &h1.Request{Method: "GET", URI: "/", Deadline: time.Now().Add(50 * time.Millisecond)})
		Expect(errors.Is(err, os.ErrDeadlineExceeded)).To(BeTrue(), "got %v", err)
		Expect(limits.open.Load()).To(BeEquivalentTo(1), "the dial under way holds the slot")
		close(gate)
		Eventually(dialed).Should(Receive())
		Eventually(limits.open.Load).Should(BeZero())
		Eventually(p.Open).Should(BeZero())
		Expect(conns.Load()).To(BeEquivalentTo(1))
		// The pool still serves a request, on a connection that closes once idle.
		_, body, err := roundTrip(p, &h1.Request{Method: "GET", URI: "/"})
		Expect(err).NotTo(HaveOccurred())
		Expect(body).To(Equal("ok"))
		Eventually(p.Open).Should(BeZero())
		Expect(limits.open.Load()).To(BeZero())
	})

	It("fails a round trip after Close", func() {
		handle = func(w http.ResponseWriter, r *http.Request) {}
		p := pool(config.UpstreamHTTP{})
		p.Close()
		_, err := p.RoundTrip(context.Background(), &h1.Request{Method: "GET", URI: "/"})
		Expect(err).To(MatchError(errPoolClosed))
	})
})

// oneConnection is max_connections 1 and no other limit, counting its refusals.
type oneConnection struct {
	open      atomic.Int64
	overflows atomic.Int64
}

func (l *oneConnection) Pending() bool { return true }
func (l *oneConnection) Unpending()    {}
func (l *oneConnection) TryConnection() bool {
	if l.open.Add(1) > 1 {
		l.open.Add(-1)
		l.overflows.Add(1)
		return false
	}
	return true
}
func (l *oneConnection) ForceConnection()  { l.open.Add(1) }
func (l *oneConnection) ConnectionClosed() { l.open.Add(-1) }

// A gRPC server (grpc-go, h2c) takes the pool's requests: a unary call's response message and its
// grpc-status trailer come back, as the router relays them.
var _ = Describe("h2Upstream to a grpc-go server", func() {
	It("completes a unary call, grpc-status in the trailers", func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		gs := grpc.NewServer()
		healthpb.RegisterHealthServer(gs, health.NewServer())
		go func() { _ = gs.Serve(ln) }()
		DeferCleanup(gs.Stop)
		dial := func(ctx context.Context, addr string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
		}
		p := newH2Upstream(ln.Addr().String(), dial, nil, config.UpstreamHTTP{HTTP2: config.DefaultUpstreamHTTP2Options()}, false, nil)
		DeferCleanup(p.Close)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		resp, err := p.RoundTrip(ctx, &h1.Request{Method: "POST", URI: "/grpc.health.v1.Health/Check", Host: "svc",
			Header: http.Header{"Content-Type": {"application/grpc"}, "Te": {"trailers"}},
			Body:   []byte{0, 0, 0, 0, 0}}) // an empty HealthCheckRequest, uncompressed
		Expect(err).NotTo(HaveOccurred())
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(resp.Header.Get("Content-Type")).To(Equal("application/grpc"))
		Expect(body).To(Equal([]byte{0, 0, 0, 0, 2, 0x08, 0x01})) // HealthCheckResponse{status: SERVING}
		Expect(resp.Trailer.Get("Grpc-Status")).To(Equal("0"))
	})
})
