package proxy_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/testpki"
	"github.com/meshproof/meshproof/proxy/policy"
)

// The proxy benchmarks drive one listener over loopback with the features a production route has on:
// a retry policy, outlier detection, circuit breakers, stats, and (in "traced") an OpenTelemetry
// tracer sampling 1% of requests into a discarding exporter. The backend and the client are raw-socket
// HTTP/1.1 loops that allocate nothing per request, so allocs/op and B/op are the proxy's own cost per
// proxied request (a GET answered 200 with a 1 KiB body).
//
// "tls" terminates TLS (1.3, a P-256 certificate) on the listener: its cost over "untraced" is
// the record layer's, the handshake being once per connection.
//
//	go test ./proxy -run '^$' -bench BenchmarkProxy -benchmem
//	go test ./proxy -run '^$' -bench 'BenchmarkProxy/traced/serial' -cpuprofile cpu.out -memprofile mem.out

const benchBodySize = 1024

func BenchmarkProxy(b *testing.B) {
	for _, name := range []string{"untraced", "traced", "logged", "tls"} {
		b.Run(name, func(b *testing.B) {
			addr := startBenchProxy(b, name)
			b.Run("serial", func(b *testing.B) {
				c, err := dialBench(b, addr, name == "tls")
				if err != nil {
					b.Fatal(err)
				}
				b.ReportAllocs()
				for b.Loop() {
					if err := c.roundTrip(); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("parallel", func(b *testing.B) {
				b.ReportAllocs()
				b.SetParallelism(8)
				b.RunParallel(func(pb *testing.PB) {
					// Fatal may not be called from these goroutines: report and stop this one.
					c, err := dialBench(b, addr, name == "tls")
					if err != nil {
						b.Error(err)
						return
					}
					for pb.Next() {
						if err := c.roundTrip(); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		})
	}
}

// startBenchProxy runs a raw backend and a proxy in front of it; it returns the listener's address.
// mode "traced" adds 1% tracing, "logged" an access log in Envoy's default format (to io.Discard).
func startBenchProxy(b *testing.B, mode string) string {
	backend := startRawBackend(b)
	c := config.NewCluster("backend", config.Endpoint{Address: backend, Weight: 1})
	c.ConnectTimeout = time.Second
	o := policy.DefaultOutlierConfig()
	o.Consecutive5xx, o.Interval, o.BaseEjectionTime = 5, time.Second, 30*time.Second
	c.Outlier = &o
	c.Breakers.Default.MaxConnections, c.Breakers.Default.MaxPendingRequests, c.Breakers.Default.MaxRequests = 4096, 4096, 4096
	c.Breakers.Default.MaxRetries = 16
	rp := &config.RetryPolicy{RetryOn: []string{"5xx", "reset", "connect-failure"}, NumRetries: 2,
		BaseInterval: 25 * time.Millisecond, MaxInterval: 250 * time.Millisecond, HostSelectionMaxAttempts: 1}
	l := config.Listener{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress",
		Routes: config.RouteConfig{Name: "r", VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"},
			Routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"},
				Action: config.RouteAction{Cluster: "backend", Timeout: 5 * time.Second, RetryPolicy: rp}}}}}}}
	var opts proxy.Options
	if mode == "logged" {
		l.AccessLogs = []config.AccessLog{{Path: "bench"}}
		opts.AccessLogOpen = func(string) (io.WriteCloser, error) { return nopWriteCloser{io.Discard}, nil }
	}
	if mode == "tls" { // TLS termination: the listener's certificate inline, Envoy's server defaults
		ca, err := testpki.NewCA("bench-ca")
		if err != nil {
			b.Fatal(err)
		}
		leaf, err := ca.Issue("bench", testpki.SANs{DNS: []string{"bench"}})
		if err != nil {
			b.Fatal(err)
		}
		l.TLS = &config.TLS{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13,
			Certificates: []config.CertificatePair{{Chain: config.DataSource{Inline: leaf.CertPEM}, Key: config.DataSource{Inline: leaf.KeyPEM}}}}
	}
	if mode == "traced" {
		tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(discardExporter{}))
		b.Cleanup(func() { _ = tp.Shutdown(context.Background()) })
		opts.TracerProvider = tp
		l.Tracing = &config.HCMTracing{RandomSampling: 0.01}
	}
	srv, err := proxy.New(&config.Bootstrap{Admin: &config.Admin{Address: "127.0.0.1:0"}, Listeners: []config.Listener{l},
		Clusters: []config.Cluster{c}}, opts)
	if err != nil {
		b.Fatal(err)
	}
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = srv.Close() })
	return srv.ListenerAddr("edge")
}

type nopWriteCloser struct{ io.Writer }

func (nopWriteCloser) Close() error { return nil }

// discardExporter drops every span.
type discardExporter struct{}

func (discardExporter) ExportSpans(context.Context, []sdktrace.ReadOnlySpan) error { return nil }
func (discardExporter) Shutdown(context.Context) error                             { return nil }

// startRawBackend answers every request on a keep-alive connection with 200 and a 1 KiB body, without
// allocating per request. It reads request heads only: the proxy forwards GETs without a body.
func startRawBackend(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	resp := []byte("HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: keep-alive\r\nContent-Length: " + strconv.Itoa(benchBodySize) + "\r\n\r\n" +
		strings.Repeat("x", benchBodySize))
	var wg sync.WaitGroup
	b.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Go(func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer conn.Close()
				br := bufio.NewReaderSize(conn, 16<<10)
				for {
					if err := skipHead(br); err != nil {
						return
					}
					if _, err := conn.Write(resp); err != nil {
						return
					}
				}
			})
		}
	})
	return ln.Addr().String()
}

// skipHead reads one HTTP/1.1 message head and returns its Content-Length (-1 when absent).
func skipHead(br *bufio.Reader) error {
	_, err := readHead(br)
	return err
}

func readHead(br *bufio.Reader) (contentLength int, err error) {
	contentLength = -1
	for {
		line, err := br.ReadSlice('\n')
		if err != nil {
			return 0, err
		}
		if len(line) <= 2 {
			return contentLength, nil
		}
		if k, v, ok := bytes.Cut(line, []byte(":")); ok && bytes.EqualFold(k, []byte("content-length")) {
			contentLength = 0
			for _, c := range bytes.TrimSpace(v) {
				contentLength = contentLength*10 + int(c-'0')
			}
		}
	}
}

// benchClient is one keep-alive downstream connection sending GET / and reading the whole response.
type benchClient struct {
	conn net.Conn
	br   *bufio.Reader
	req  []byte
	buf  []byte
}

func dialBench(b *testing.B, addr string, secure bool) (*benchClient, error) {
	var conn net.Conn
	var err error
	if secure {
		conn, err = tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true})
	} else {
		conn, err = net.Dial("tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	b.Cleanup(func() { conn.Close() })
	return &benchClient{conn: conn, br: bufio.NewReaderSize(conn, 16<<10),
		req: []byte("GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: bench\r\n\r\n"), buf: make([]byte, benchBodySize)}, nil
}

// roundTrip sends one request and reads its response; its error says what was wrong.
func (c *benchClient) roundTrip() error {
	if _, err := c.conn.Write(c.req); err != nil {
		return err
	}
	status, err := c.br.ReadSlice('\n')
	if err != nil {
		return err
	}
	if !bytes.HasPrefix(status, []byte("HTTP/1.1 200 ")) {
		return fmt.Errorf("got %q, want HTTP/1.1 200", status)
	}
	n, err := readHead(c.br)
	if err != nil {
		return err
	}
	if n != benchBodySize {
		return fmt.Errorf("got content-length %d, want %d", n, benchBodySize)
	}
	_, err = io.ReadFull(c.br, c.buf)
	return err
}
