package proxy

import (
	"net"
	"sync/atomic"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// limitListener is Envoy's connection_limit network filter on a listener
// (source/extensions/filters/network/connection_limit/connection_limit.cc,
// Filter::onNewConnection): it holds at most max downstream connections; one over the limit is
// closed as soon as it is accepted, before anything is read from it (the filter's delay is not
// supported), and counted in connection_limit.<stat_prefix>.limited_connections. The gauge
// connection_limit.<stat_prefix>.active_connections is the connections held.
type limitListener struct {
	net.Listener
	max     int64
	active  atomic.Int64
	limited *stats.Counter
	gauge   *stats.Gauge
}

func newLimitListener(ln net.Listener, cl *config.ConnectionLimit, store *stats.Store) *limitListener {
	p := "connection_limit." + cl.StatPrefix + "."
	return &limitListener{Listener: ln, max: int64(min(cl.MaxConnections, 1<<62)),
		limited: store.Counter(p + "limited_connections"), gauge: store.Gauge(p + "active_connections")}
}

// Accept returns the next connection within the limit, closing those over it.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if l.active.Add(1) > l.max {
			l.active.Add(-1)
			l.limited.Inc()
			c.Close()
			continue
		}
		l.gauge.Inc()
		return &limitedConn{Conn: c, l: l}, nil
	}
}

// limitedConn is a connection a limitListener holds: closing it frees its place.
type limitedConn struct {
	net.Conn
	l      *limitListener
	closed atomic.Bool
}

func (c *limitedConn) Close() error {
	err := c.Conn.Close()
	if c.closed.CompareAndSwap(false, true) {
		c.l.active.Add(-1)
		c.l.gauge.Dec()
	}
	return err
}

// CloseWrite half-closes the connection, as the server does when it aborts one.
func (c *limitedConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// NetConn is the connection underneath.
func (c *limitedConn) NetConn() net.Conn { return c.Conn }
