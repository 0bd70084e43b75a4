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
	"syscall"
	"testing"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

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

// BenchmarkProxyH2c drives the listener's downstream HTTP/2 (h2c, prior knowledge) path, the proxy
// forwarding HTTP/1.1 to the raw backend as in BenchmarkProxy ("untraced" features). The client is a
// raw frame loop that allocates nothing per request (one pre-encoded HEADERS block, frame headers read
// and payloads skipped), so allocs/op is the proxy's cost per proxied h2 stream. "serial" keeps one
// stream in flight on one connection; "mux" keeps 10 in flight on each of 8 connections, as h2load -m10
// does (proxy/bench/run.sh's h2 phase).
//
//	go test ./proxy -run '^$' -bench BenchmarkProxyH2c -benchmem
//	go test ./proxy -run '^$' -bench 'BenchmarkProxyH2c/mux' -cpuprofile cpu.out -memprofile mem.out
func BenchmarkProxyH2c(b *testing.B) {
	addr := startBenchProxy(b, "untraced")
	b.Run("serial", func(b *testing.B) {
		c, err := dialH2Bench(b, addr, 1)
		if err != nil {
			b.Fatal(err)
		}
		b.ReportAllocs()
		defer reportCPU(b)()
		for b.Loop() {
			if err := c.next(); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("mux", func(b *testing.B) {
		b.ReportAllocs()
		defer reportCPU(b)()
		b.SetParallelism(8)
		b.RunParallel(func(pb *testing.PB) {
			c, err := dialH2Bench(b, addr, 10)
			if err != nil {
				b.Error(err)
				return
			}
			for pb.Next() {
				if err := c.next(); err != nil {
					b.Error(err)
					return
				}
			}
		})
	})
}

// reportCPU reports the process's CPU time (user and system, every thread: the proxy's and the
// client's) per op as cpu-µs/op, the figure that holds on a busy machine where ns/op does not. Call
// the function it returns when the loop is done.
func reportCPU(b *testing.B) func() {
	start := processCPU()
	return func() {
		if b.N > 0 {
			b.ReportMetric(float64((processCPU()-start).Microseconds())/float64(b.N), "cpu-µs/op")
		}
	}
}

func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// h2BenchClient is one h2c connection keeping up to depth GET streams in flight. It ACKs the server's
// SETTINGS, opens every window at the start and tops the connection's up as DATA arrives; it does not
// decode the responses' header blocks (it has no use for the server's HPACK state), only checks that
// each stream ends with END_STREAM on a HEADERS or DATA frame and carries benchBodySize DATA bytes.
type h2BenchClient struct {
	conn     net.Conn
	br       *bufio.Reader
	depth    int
	inFlight int
	nextID   uint32
	hdr      [9]byte
	req      []byte // a HEADERS frame (END_STREAM|END_HEADERS), its stream id patched in per request
	got      map[uint32]int
	unacked  int // DATA bytes not yet returned to the connection window
	wu       []byte
}

const h2BenchWindow = 1<<31 - 1

func dialH2Bench(b *testing.B, addr string, depth int) (*h2BenchClient, error) {
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		return nil, err
	}
	b.Cleanup(func() { conn.Close() })
	// The header block: indexed static entries and never-indexed literals, so it stays valid on every
	// stream whatever the server's decoder table holds.
	var block bytes.Buffer
	enc := hpack.NewEncoder(&block)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":path", "/"}, {":authority", "bench"}, {"user-agent", "bench"}} {
		if err := enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1], Sensitive: true}); err != nil {
			return nil, err
		}
	}
	c := &h2BenchClient{conn: conn, br: bufio.NewReaderSize(conn, 64<<10), depth: depth, nextID: 1,
		got: make(map[uint32]int, depth), wu: make([]byte, 13)}
	c.req = append(frameHead(block.Len(), 0x1, 0x1|0x4, 0), block.Bytes()...)
	var start bytes.Buffer
	start.WriteString(http2.ClientPreface)
	fr := http2.NewFramer(&start, nil)
	if err := fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2BenchWindow}); err != nil {
		return nil, err
	}
	if err := fr.WriteWindowUpdate(0, h2BenchWindow-65535); err != nil {
		return nil, err
	}
	if _, err := conn.Write(start.Bytes()); err != nil {
		return nil, err
	}
	return c, nil
}

// frameHead is an HTTP/2 frame header (RFC 9113 §4.1).
func frameHead(length int, typ, flags byte, id uint32) []byte {
	return []byte{byte(length >> 16), byte(length >> 8), byte(length), typ, flags, byte(id >> 24), byte(id >> 16), byte(id >> 8), byte(id)}
}

// next opens streams up to depth and reads frames until one stream completes.
func (c *h2BenchClient) next() error {
	for c.inFlight < c.depth {
		id := c.nextID
		c.nextID += 2
		c.req[5], c.req[6], c.req[7], c.req[8] = byte(id>>24), byte(id>>16), byte(id>>8), byte(id)
		if _, err := c.conn.Write(c.req); err != nil {
			return err
		}
		c.got[id] = 0
		c.inFlight++
	}
	for {
		if _, err := io.ReadFull(c.br, c.hdr[:]); err != nil {
			return err
		}
		n := int(c.hdr[0])<<16 | int(c.hdr[1])<<8 | int(c.hdr[2])
		typ, flags := c.hdr[3], c.hdr[4]
		id := (uint32(c.hdr[5])<<24 | uint32(c.hdr[6])<<16 | uint32(c.hdr[7])<<8 | uint32(c.hdr[8])) & 0x7fffffff
		if _, err := c.br.Discard(n); err != nil {
			return err
		}
		switch typ {
		case 0x4: // SETTINGS
			if flags&0x1 == 0 {
				if _, err := c.conn.Write(frameHead(0, 0x4, 0x1, 0)); err != nil {
					return err
				}
			}
			continue
		case 0x7: // GOAWAY
			return fmt.Errorf("GOAWAY from the proxy")
		case 0x3: // RST_STREAM
			return fmt.Errorf("stream %d reset", id)
		case 0x0: // DATA
			c.got[id] += n
			if c.unacked += n; c.unacked >= 1<<20 {
				copy(c.wu, frameHead(4, 0x8, 0, 0))
				c.wu[9], c.wu[10], c.wu[11], c.wu[12] = byte(c.unacked>>24), byte(c.unacked>>16), byte(c.unacked>>8), byte(c.unacked)
				c.unacked = 0
				if _, err := c.conn.Write(c.wu); err != nil {
					return err
				}
			}
		case 0x1, 0x9: // HEADERS, CONTINUATION
		default:
			continue
		}
		if flags&0x1 == 0 || typ == 0x9 {
			continue
		}
		got, ok := c.got[id]
		if !ok {
			return fmt.Errorf("END_STREAM on stream %d, not in flight", id)
		}
		delete(c.got, id)
		c.inFlight--
		if got != benchBodySize {
			return fmt.Errorf("stream %d: got %d body bytes, want %d", id, got, benchBodySize)
		}
		return nil
	}
}
