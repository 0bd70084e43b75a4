package proxy

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
	"github.com/meshproof/meshproof/proxy/stats"
)

// defaultMaxRetries is Envoy's default max_retries circuit-breaker threshold: concurrent retries per cluster.
const defaultMaxRetries = 3

// cluster is the runtime of one upstream cluster: its hosts, load balancer, connection pool and stats.
type cluster struct {
	name      string
	hosts     []*host
	lb        *policy.RoundRobin
	transport *http.Transport
	st        clusterStats

	maxRetries    int64
	activeRetries atomic.Int64
}

// host is one endpoint of a cluster with its per-host counters (admin /clusters).
type host struct {
	addr   string
	weight uint32

	cxTotal, cxConnectFail, rqTotal, rqSuccess, rqError, rqTimeout atomic.Uint64
	cxActive, rqActive                                             atomic.Int64
}

// clusterStats are the cluster's Envoy-named stats, resolved once.
type clusterStats struct {
	store  *stats.Store
	prefix string

	rqTotal, rqCompleted, rqTimeout, rqPerTryTimeout, rqRxReset, rqTxReset    *stats.Counter
	rqRetry, rqRetrySuccess, rqRetryOverflow, rqRetryLimitExceeded            *stats.Counter
	rqRetryBackoffExponential, cxTotal, cxConnectFail, cxConnectTimeout       *stats.Counter
	cxNoneHealthy, rq2xx, rq3xx, rq4xx, rq5xx, lbHealthyPanic, rqPendingTotal *stats.Counter
	rqActive, cxActive, membershipHealthy, membershipTotal, retryOpen         *stats.Gauge
	rqTime, cxConnectMs                                                       *stats.Histogram
}

func newClusterStats(store *stats.Store, name string) clusterStats {
	p := "cluster." + name + "."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	g := func(n string) *stats.Gauge { return store.Gauge(p + n) }
	return clusterStats{
		store: store, prefix: p,
		rqTotal: c("upstream_rq_total"), rqCompleted: c("upstream_rq_completed"),
		rqTimeout: c("upstream_rq_timeout"), rqPerTryTimeout: c("upstream_rq_per_try_timeout"),
		rqRxReset: c("upstream_rq_rx_reset"), rqTxReset: c("upstream_rq_tx_reset"),
		rqRetry: c("upstream_rq_retry"), rqRetrySuccess: c("upstream_rq_retry_success"),
		rqRetryOverflow: c("upstream_rq_retry_overflow"), rqRetryLimitExceeded: c("upstream_rq_retry_limit_exceeded"),
		rqRetryBackoffExponential: c("upstream_rq_retry_backoff_exponential"),
		cxTotal:                   c("upstream_cx_total"), cxConnectFail: c("upstream_cx_connect_fail"),
		cxConnectTimeout: c("upstream_cx_connect_timeout"), cxNoneHealthy: c("upstream_cx_none_healthy"),
		rq2xx: c("upstream_rq_2xx"), rq3xx: c("upstream_rq_3xx"), rq4xx: c("upstream_rq_4xx"), rq5xx: c("upstream_rq_5xx"),
		lbHealthyPanic: c("lb_healthy_panic"), rqPendingTotal: c("upstream_rq_pending_total"),
		rqActive: g("upstream_rq_active"), cxActive: g("upstream_cx_active"),
		membershipHealthy: g("membership_healthy"), membershipTotal: g("membership_total"),
		retryOpen: g("circuit_breakers.default.rq_retry_open"),
		rqTime:    store.Histogram(p + "upstream_rq_time"), cxConnectMs: store.Histogram(p + "upstream_cx_connect_ms"),
	}
}

// status counts a response code the Envoy way: upstream_rq_<code> and upstream_rq_<N>xx.
func (s *clusterStats) status(code int) {
	s.store.Counter(fmt.Sprintf("%supstream_rq_%d", s.prefix, code)).Inc()
	switch code / 100 {
	case 2:
		s.rq2xx.Inc()
	case 3:
		s.rq3xx.Inc()
	case 4:
		s.rq4xx.Inc()
	case 5:
		s.rq5xx.Inc()
	}
}

func newCluster(cfg config.Cluster, store *stats.Store) *cluster {
	c := &cluster{name: cfg.Name, st: newClusterStats(store, cfg.Name), maxRetries: defaultMaxRetries}
	weights := make([]uint32, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		c.hosts = append(c.hosts, &host{addr: ep.Address, weight: max(ep.Weight, 1)})
		weights[i] = ep.Weight
	}
	c.lb = policy.NewRoundRobin(weights)
	c.st.membershipTotal.Set(int64(len(c.hosts)))
	c.st.membershipHealthy.Set(int64(len(c.hosts)))

	dialer := &net.Dialer{Timeout: cfg.ConnectTimeout, KeepAlive: 30 * time.Second}
	c.transport = &http.Transport{
		Proxy: nil, // never the environment's proxy: endpoints are addressed directly
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			h := c.hostByAddr(addr)
			c.st.cxTotal.Inc()
			if h != nil {
				h.cxTotal.Add(1)
			}
			began := time.Now()
			conn, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				c.st.cxConnectFail.Inc()
				if h != nil {
					h.cxConnectFail.Add(1)
				}
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					c.st.cxConnectTimeout.Inc()
				}
				return nil, &connectError{err: err}
			}
			c.st.cxConnectMs.Record(time.Since(began))
			c.st.cxActive.Inc()
			if h != nil {
				h.cxActive.Add(1)
			}
			return &countedConn{Conn: conn, onClose: func() {
				c.st.cxActive.Dec()
				if h != nil {
					h.cxActive.Add(-1)
				}
			}}, nil
		},
		MaxIdleConns:        0, // no global cap
		MaxIdleConnsPerHost: 1024,
		IdleConnTimeout:     time.Hour, // Envoy keeps idle upstream connections open by default
		DisableCompression:  true,
		ForceAttemptHTTP2:   false,
	}
	return c
}

func (c *cluster) hostByAddr(addr string) *host {
	for _, h := range c.hosts {
		if h.addr == addr {
			return h
		}
	}
	return nil
}

// admitRetry takes a slot of the max_retries breaker; the caller releases it when the retried attempt ends.
func (c *cluster) admitRetry() bool {
	if c.activeRetries.Add(1) > c.maxRetries {
		c.activeRetries.Add(-1)
		return false
	}
	if c.activeRetries.Load() >= c.maxRetries {
		c.st.retryOpen.Set(1)
	}
	return true
}

func (c *cluster) releaseRetry() {
	if c.activeRetries.Add(-1) < c.maxRetries {
		c.st.retryOpen.Set(0)
	}
}

func (c *cluster) close() { c.transport.CloseIdleConnections() }

// connectError marks a failure to establish the upstream TCP connection.
type connectError struct{ err error }

func (e *connectError) Error() string { return "upstream connect: " + e.err.Error() }
func (e *connectError) Unwrap() error { return e.err }

// countedConn calls onClose once when the connection closes.
type countedConn struct {
	net.Conn
	closed  atomic.Bool
	onClose func()
}

func (c *countedConn) Close() error {
	if c.closed.CompareAndSwap(false, true) {
		c.onClose()
	}
	return c.Conn.Close()
}
