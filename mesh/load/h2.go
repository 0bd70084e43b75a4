package load

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// h2Pool sends h2c requests (HTTP/2 over cleartext TCP with prior knowledge, no upgrade) over exactly n
// connections, dialled before the run, each request on the next connection in turn: many requests share
// a connection as concurrent streams. A connection that fails is replaced when next picked.
type h2Pool struct {
	t       *target
	timeout time.Duration
	tr      *http.Transport

	mu    sync.Mutex
	conns []*http.ClientConn
	next  atomic.Uint64
	dials atomic.Int64
}

func newH2Pool(t *target, n int, timeout time.Duration) *h2Pool {
	tr := &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second}).DialContext,
		DisableCompression:  true,
		TLSHandshakeTimeout: timeout,
	}
	tr.Protocols = new(http.Protocols)
	tr.Protocols.SetUnencryptedHTTP2(true)
	return &h2Pool{t: t, timeout: timeout, tr: tr, conns: make([]*http.ClientConn, n)}
}

// prefill dials every connection; a failed dial is retried by the first request that picks it.
func (p *h2Pool) prefill(ctx context.Context) {
	for i := range p.conns {
		_, _ = p.conn(ctx, i)
	}
}

// conn returns connection i, dialling it when missing or broken.
func (p *h2Pool) conn(ctx context.Context, i int) (*http.ClientConn, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if c := p.conns[i]; c != nil && c.Err() == nil {
		return c, nil
	} else if c != nil {
		_ = c.Close()
		p.conns[i] = nil
	}
	dctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	c, err := p.tr.NewClientConn(dctx, "http", p.t.addr)
	if err != nil {
		return nil, err
	}
	p.dials.Add(1)
	p.conns[i] = c
	return c, nil
}

func (p *h2Pool) do(ctx context.Context, r *prepared, seq uint64, extra []string) (sent time.Time, status int, err error) {
	rctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return p.exchange(rctx, r, seq, extra, func(resp *http.Response) error {
		_, err := io.Copy(io.Discard, resp.Body)
		return err
	})
}

// exchange sends r on the next connection and hands the response to read, which reads its body.
func (p *h2Pool) exchange(rctx context.Context, r *prepared, seq uint64, extra []string, read func(*http.Response) error) (sent time.Time, status int, err error) {
	var body io.Reader
	if r.body != nil {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(rctx, r.method, r.url, body)
	if err != nil { // checked when prepared
		return time.Now(), 0, err
	}
	req.Header = r.header.Clone()
	req.Header.Set(HeaderRequestID, "mp-"+strconv.FormatUint(seq, 10))
	for i := 0; i+1 < len(extra); i += 2 {
		req.Header.Set(extra[i], extra[i+1])
	}
	req.Host = r.host
	sent = time.Now()
	c, err := p.conn(rctx, int(p.next.Add(1)-1)%len(p.conns))
	if err != nil {
		return sent, 0, err
	}
	resp, err := c.RoundTrip(req)
	if err != nil {
		return sent, 0, err
	}
	err = read(resp)
	_ = resp.Body.Close()
	return sent, resp.StatusCode, err
}

func (p *h2Pool) abort() {} // requests carry the run's context

func (p *h2Pool) close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for i, c := range p.conns {
		if c != nil {
			_ = c.Close()
			p.conns[i] = nil
		}
	}
	p.tr.CloseIdleConnections()
}

func (p *h2Pool) opened() int64 { return p.dials.Load() }
