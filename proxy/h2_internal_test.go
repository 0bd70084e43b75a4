package proxy

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
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
