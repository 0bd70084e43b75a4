package proxy

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// BenchmarkUpstreamRoundTrip is one GET and its 2-byte body through a host's pool, from parallel
// goroutines, against a loopback Go server: HTTP/2 (h2c, one multiplexed connection) and HTTP/1.1.
//
//	go test -run '^$' -bench UpstreamRoundTrip -benchtime 2s ./proxy/
func BenchmarkUpstreamRoundTrip(b *testing.B) {
	for _, proto := range []string{"h2c", "http1"} {
		b.Run(proto, func(b *testing.B) {
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
			p := new(http.Protocols)
			p.SetHTTP1(true)
			p.SetUnencryptedHTTP2(true)
			srv.Config.Protocols = p
			srv.Start()
			defer srv.Close()
			addr := srv.Listener.Addr().String()
			dial := func(ctx context.Context, addr string) (net.Conn, error) {
				return (&net.Dialer{}).DialContext(ctx, "tcp", addr)
			}
			var u upstream = newH1Upstream(addr, forRequests, dial, nil)
			if proto == "h2c" {
				u = newH2Upstream(addr, dial, nil, config.UpstreamHTTP{HTTP2: config.DefaultHTTP2Options()}, false, nil)
			}
			defer u.Close()
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					resp, err := u.RoundTrip(context.Background(), &h1.Request{Method: "GET", URI: "/", Host: "svc"})
					if err != nil {
						b.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
				}
			})
		})
	}
}
