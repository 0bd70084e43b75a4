package proxy

import (
	"context"
	"net"
	"net/http"
	"time"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// upstream is how the proxy reaches one host: one request out, its response head back (the body
// streams until closed), Close for its connections, and Drain to close them as they fall idle while it
// still serves the requests that reach it (a removed host's). It never sends a request twice: whether and
// where to retry is the router's decision. The HTTP/1.1 pool is one; HTTP/2 pools, a simulator's model
// and test doubles are others (as Caddy's reverse proxy takes an http.RoundTripper).
type upstream interface {
	RoundTrip(ctx context.Context, req *h1.Request) (*http.Response, error)
	Close()
	Drain()
}

var _ upstream = (*h1.Pool)(nil)

// upstreamUse says what an upstream is for: its connections differ.
type upstreamUse uint8

const (
	// forRequests: the cluster's connection pool for the host, counted in upstream_cx_* and the
	// host's cx_* stats.
	forRequests upstreamUse = iota
	// forHealthChecks: the health checker's own connection to the host, apart from the pool and not
	// counted in its stats, kept from check to check as Envoy does by default
	// (HealthCheck.reuse_connection, default true; source/extensions/health_checkers/http/health_checker_impl.cc
	// HttpHealthCheckerImpl::HttpActiveHealthCheckSession::onInterval).
	forHealthChecks
)

// newH1Upstream is the HTTP/1.1 pool to one host. dial opens its connections; limits, when set, are
// the cluster's circuit breakers (the pool counts its open connections, idle ones included, against
// max_connections, and queues the requests waiting for one).
func newH1Upstream(addr string, use upstreamUse, dial func(ctx context.Context, addr string) (net.Conn, error), limits h1.Limits) upstream {
	p := &h1.Pool{Addr: addr, Dial: dial, Limits: limits}
	if use == forHealthChecks {
		p.MaxIdle = 1
	}
	return p
}

// healthCheckDialer opens a health checker's connections: no connection stats, TCP keep-alive as the
// pool's, and the cluster's connect_timeout (the pool's dials outlive the check that asked for them).
// On a cluster with a TLS transport socket (t non-nil) the connection is handshaken as the pool's are,
// within the same connect_timeout, and counted in the cluster's ssl stats: Envoy's health checkers open
// their connections with the host's createHealthCheckConnection, on the cluster's transport socket
// factory (source/common/upstream/upstream_impl.cc), so a check of a TLS host is itself TLS.
func healthCheckDialer(connectTimeout time.Duration, t *tlsContext) func(ctx context.Context, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: connectTimeout, KeepAlive: 30 * time.Second}
	return func(ctx context.Context, addr string) (net.Conn, error) {
		dialed := time.Now() // socket deadlines are on the real clock, as the pool's dialer
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err != nil || t == nil {
			return conn, err
		}
		tc, err := t.clientHandshake(ctx, conn, dialed.Add(connectTimeout))
		if err != nil {
			conn.Close()
			return nil, err
		}
		return tc, nil
	}
}
