package tcp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/faults/field"
	"github.com/meshproof/meshproof/faults/internal/netx"
	"github.com/meshproof/meshproof/proxy/clock"
)

// ErrInvalidConfig is wrapped by every error NewProxy and SetToxics return for bad toxics.
var ErrInvalidConfig = errors.New("invalid tcp proxy config")

// errCut ends a pump whose connection a toxic closed.
var errCut = errors.New("tcp: connection cut by a toxic")

// Config configures a Proxy.
type Config struct {
	Name    string           // for events, e.g. "checkout/0"
	Seed    uint64           // with the toxic name and connection index, decides every draw
	Toxics  []Toxic          // initial toxics; SetToxics replaces them
	Now     func() time.Time // clock for event times; nil = time.Now
	OnEvent func(Event)      // optional sink (must be cheap; called concurrently)
}

// Event is one toxic applied to a connection, or the proxy going down or up (Conn 0).
type Event struct {
	Time   time.Time
	Proxy  string
	Conn   uint64 // n-th connection accepted, from 1
	Toxic  string
	Type   string
	Stream string
	Detail string // e.g. "applies", "reset", "closed after 100 bytes", "listener closed"
}

// Proxy forwards TCP connections from its listener to one upstream address through toxics.
//
// Each direction of a connection is an io.Copy from one socket into a chain of toxic stages
// writing to the other. For every chunk read, in this order: timeout drops it; limit_data
// truncates it and then closes the connection; latency waits; slicer cuts it, Delay apart;
// bandwidth paces each piece. A chunk is not read while the previous one waits, so latency also
// slows bulk transfers. slow_close delays the FIN that follows EOF; reset_peer and timeout
// close the connection on a timer started when the toxic is first applied to the connection.
// Toxics are looked up at each chunk, so SetToxics reaches open connections too; whether a toxic
// applies to a connection is decided once per (toxic name, connection).
type Proxy struct {
	cfg    Config
	toxics atomic.Pointer[[]toxic]
	conns  atomic.Uint64

	mu       sync.Mutex // guards the fields below
	addr     string
	upstream string
	ln       net.Listener // nil while down
	started  bool
	closed   bool
	links    map[*link]struct{}
	ctx      context.Context
	cancel   context.CancelFunc
	wg       sync.WaitGroup // accept loops and links; Add only under mu while !closed
	serveErr error
}

// NewProxy validates cfg and returns a Proxy that is not yet listening.
func NewProxy(cfg Config) (*Proxy, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	p := &Proxy{cfg: cfg, links: map[*link]struct{}{}}
	toxics, err := p.check(cfg.Toxics)
	if err != nil {
		return nil, err
	}
	p.toxics.Store(&toxics)
	p.ctx, p.cancel = context.WithCancel(context.Background())
	return p, nil
}

// check validates the toxics, names those without a name and returns their behaviours.
func (p *Proxy) check(in []Toxic) ([]toxic, error) {
	var errs []error
	out := make([]toxic, len(in))
	seen := map[string]string{}
	for i, t := range in {
		path := fmt.Sprintf("toxics[%d]", i)
		if t.Name == "" {
			t.Name = path
		}
		if first, dup := seen[t.Name]; dup {
			errs = append(errs, field.Errorf(path, "name %q is already used by %s", t.Name, first))
		}
		seen[t.Name] = path
		errs = append(errs, field.Within(path, t.Validate())...)
		out[i], _ = behaviour(t)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("tcp: %w %s:\n%w", ErrInvalidConfig, p.cfg.Name, err)
	}
	return out, nil
}

// Start listens on listenAddr (e.g. "127.0.0.1:0") and forwards each connection to upstreamAddr
// until Close.
func (p *Proxy) Start(listenAddr, upstreamAddr string) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	switch {
	case p.closed:
		return fmt.Errorf("tcp: proxy %s: %w", p.cfg.Name, net.ErrClosed)
	case p.started:
		return fmt.Errorf("tcp: proxy %s: already started on %s", p.cfg.Name, p.addr)
	}
	ln, err := net.Listen("tcp", listenAddr)
	if err != nil {
		return fmt.Errorf("tcp: proxy %s: %w", p.cfg.Name, err)
	}
	p.started, p.ln, p.addr, p.upstream = true, ln, ln.Addr().String(), upstreamAddr
	p.wg.Add(1)
	go p.accept(ln)
	events, err := p.applyDownLocked()
	p.emitLater(events)
	return err
}

// Addr returns the host:port the proxy listens on ("" before Start); it stays the same while the
// proxy is down.
func (p *Proxy) Addr() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.addr
}

// Toxics returns the toxics in force, named.
func (p *Proxy) Toxics() []Toxic {
	var out []Toxic
	for _, t := range *p.toxics.Load() {
		out = append(out, t.spec())
	}
	return out
}

// SetToxics replaces the toxics, for new and open connections alike: a down toxic closes the
// listener and the open connections, and removing it listens again on the same address.
func (p *Proxy) SetToxics(toxics ...Toxic) error {
	checked, err := p.check(toxics)
	if err != nil {
		return err
	}
	p.toxics.Store(&checked)
	p.mu.Lock()
	if p.closed || !p.started {
		p.mu.Unlock()
		return nil
	}
	events, err := p.applyDownLocked()
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.emit(events)
	for _, l := range links {
		l.refresh()
	}
	return err
}

// applyDownLocked closes or reopens the listener after the down toxic. Under mu.
func (p *Proxy) applyDownLocked() ([]Event, error) {
	var down toxic
	for _, t := range *p.toxics.Load() {
		if _, ok := t.(listenerToxic); ok {
			down = t
			break
		}
	}
	switch {
	case down != nil && p.ln != nil:
		_ = p.ln.Close()
		p.ln = nil
		for l := range p.links {
			l.close() // takes l.mu only; the link unregisters itself when its goroutine ends
		}
		return []Event{p.event(0, down.spec(), "listener closed")}, nil
	case down == nil && p.ln == nil:
		ln, err := net.Listen("tcp", p.addr)
		if err != nil {
			return nil, fmt.Errorf("tcp: proxy %s: reopen: %w", p.cfg.Name, err)
		}
		p.ln = ln
		p.wg.Add(1)
		go p.accept(ln)
		return []Event{p.event(0, Toxic{Type: TypeDown}, "listener reopened")}, nil
	}
	return nil, nil
}

// Close stops listening, closes every connection and returns once every goroutine the proxy
// started has finished. Close is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	ln := p.ln
	p.ln = nil
	links := make([]*link, 0, len(p.links))
	for l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.cancel()
	if ln != nil {
		_ = ln.Close()
	}
	for _, l := range links {
		l.close()
	}
	p.wg.Wait()
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.serveErr
}

func (p *Proxy) accept(ln net.Listener) {
	defer p.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			if !errors.Is(err, net.ErrClosed) {
				p.mu.Lock()
				p.serveErr = errors.Join(p.serveErr, err)
				p.mu.Unlock()
			}
			return
		}
		p.mu.Lock()
		if p.closed || p.ln != ln {
			p.mu.Unlock()
			netx.RST(c)
			continue
		}
		ctx, cancel := context.WithCancel(p.ctx)
		l := &link{p: p, n: p.conns.Add(1), client: c, ctx: ctx, cancel: cancel, states: map[string]*state{}}
		p.links[l] = struct{}{}
		p.wg.Add(1)
		p.mu.Unlock()
		go l.run(p.upstream)
	}
}

func (p *Proxy) event(conn uint64, t Toxic, detail string) Event {
	return Event{Time: p.cfg.Now(), Proxy: p.cfg.Name, Conn: conn, Toxic: t.Name, Type: t.Type, Stream: t.Stream, Detail: detail}
}

func (p *Proxy) emit(events []Event) {
	if p.cfg.OnEvent == nil {
		return
	}
	for _, e := range events {
		p.cfg.OnEvent(e)
	}
}

// emitLater emits from a goroutine that does not hold mu (Start holds it). Called under mu.
func (p *Proxy) emitLater(events []Event) {
	if len(events) == 0 || p.cfg.OnEvent == nil {
		return
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		p.emit(events)
	}()
}

// link is one proxied connection.
type link struct {
	p      *Proxy
	n      uint64
	client net.Conn
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex // guards the fields below
	server   net.Conn
	states   map[string]*state // by toxic name
	halfDone int
	closed   bool

	pumps  sync.WaitGroup
	timers sync.WaitGroup // Add only under mu while !closed
}

// state is a toxic's decision and draws on one connection.
type state struct {
	applies   bool
	rng       *rand.Rand
	forwarded int64 // limit_data
}

func (l *link) run(upstream string) {
	defer l.p.wg.Done()
	defer l.unregister()
	var d net.Dialer
	server, err := d.DialContext(l.ctx, "tcp", upstream)
	if err != nil {
		_ = l.client.Close()
		return
	}
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		_ = server.Close()
		return
	}
	l.server = server
	l.mu.Unlock()
	l.refresh()
	l.pumps.Add(2)
	go l.pump(server, l.client, Upstream)
	go l.pump(l.client, server, Downstream)
	l.pumps.Wait()
	l.close()
	l.timers.Wait()
}

func (l *link) unregister() {
	l.p.mu.Lock()
	delete(l.p.links, l)
	l.p.mu.Unlock()
}

// refresh decides the toxics not yet seen on this connection and arms their timers.
func (l *link) refresh() {
	for _, t := range *l.p.toxics.Load() {
		l.state(t)
	}
}

// state returns the toxic's state on this connection, deciding it the first time: whether it
// applies (the first draw of its random source; a listener toxic applies to no connection and draws
// nothing), and for a timed toxic that applies, its timer.
func (l *link) state(t toxic) *state {
	cfg := t.spec()
	l.mu.Lock()
	defer l.mu.Unlock()
	if s, ok := l.states[cfg.Name]; ok {
		return s
	}
	rng := ToxicRand(l.p.cfg.Seed, cfg.Name, l.n)
	_, onListener := t.(listenerToxic)
	s := &state{applies: !onListener && cfg.Applies(rng), rng: rng}
	l.states[cfg.Name] = s
	if !s.applies || l.closed {
		return s
	}
	l.p.emit([]Event{l.p.event(l.n, cfg, "applies")})
	if tt, ok := t.(timed); ok {
		if d, armed := tt.after(); armed {
			l.timers.Add(1)
			go l.timer(tt, d)
		}
	}
	return s
}

// timer lets a timed toxic act on the connection after d.
func (l *link) timer(t timed, d time.Duration) {
	defer l.timers.Done()
	if clock.Sleep(l.ctx, clock.Real{}, d) {
		t.expire(l)
	}
}

// active returns the toxics of a direction that apply to this connection, with their states.
func (l *link) active(dir string) ([]toxic, []*state) {
	var ts []toxic
	var ss []*state
	for _, t := range *l.p.toxics.Load() {
		if _, onListener := t.(listenerToxic); onListener || t.spec().stream() != dir {
			continue
		}
		if s := l.state(t); s.applies {
			ts, ss = append(ts, t), append(ss, s)
		}
	}
	return ts, ss
}

// pump copies src into dst through the toxics of dir, then half-closes dst.
func (l *link) pump(dst, src net.Conn, dir string) {
	defer l.pumps.Done()
	_, err := io.Copy(&stage{l: l, dst: dst, dir: dir}, src)
	if err != nil {
		l.close()
		return
	}
	ts, _ := l.active(dir)
	for _, t := range ts {
		if c, ok := t.(closer); ok && !clock.Sleep(l.ctx, clock.Real{}, c.closeDelay()) {
			return
		}
	}
	if cw, ok := dst.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	l.mu.Lock()
	l.halfDone++
	both := l.halfDone == 2
	l.mu.Unlock()
	if both {
		l.close()
	}
}

// close closes both sides once.
func (l *link) close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	server := l.server
	l.mu.Unlock()
	l.cancel()
	_ = l.client.Close()
	if server != nil {
		_ = server.Close()
	}
}

// reset sends a TCP RST to the peer of dir (the client for downstream) and closes the other side.
func (l *link) reset(dir string) {
	l.mu.Lock()
	peer := l.client
	if dir == Upstream {
		peer = l.server
	}
	l.mu.Unlock()
	if peer != nil {
		netx.RST(peer)
	}
	l.close()
}

// stage is the toxic chain of one direction: io.Copy writes each chunk read into it.
type stage struct {
	l   *link
	dst net.Conn
	dir string
}

func (s *stage) Write(p []byte) (int, error) {
	l := s.l
	toxics, states := l.active(s.dir)
	n := len(p)
	c := chunk{l: l, p: p}
	for i, t := range toxics {
		if ch, ok := t.(chunker); ok {
			ch.chunk(&c, states[i])
			if c.drop {
				return n, nil // the data never arrives
			}
		}
	}
	if !clock.Sleep(l.ctx, clock.Real{}, c.delay) {
		return 0, errCut
	}
	pieces := []int{len(c.p)}
	if c.slicer != nil {
		l.mu.Lock()
		pieces = c.slicer.SliceSizes(len(c.p), c.slicerRand)
		l.mu.Unlock()
	}
	off := 0
	for i, size := range pieces {
		if i > 0 && c.slicer != nil && !clock.Sleep(l.ctx, clock.Real{}, c.slicer.Delay) {
			return off, errCut
		}
		if err := s.paced(c.p[off:off+size], c.rates); err != nil {
			return off, err
		}
		off += size
	}
	if c.cut {
		l.close()
		return off, errCut
	}
	return n, nil
}

// paced writes p at the slowest of rates (KB/s), in pieces of a tenth of a second each.
func (s *stage) paced(p []byte, rates []int) error {
	if len(rates) == 0 {
		_, err := s.dst.Write(p)
		return err
	}
	bps := int64(rates[0]) * 1024
	for _, r := range rates[1:] {
		bps = min(bps, int64(r)*1024)
	}
	piece := max(int(bps/10), 1)
	for len(p) > 0 {
		n := min(piece, len(p))
		if !clock.Sleep(s.l.ctx, clock.Real{}, time.Duration((int64(n)*int64(time.Second)+bps-1)/bps)) {
			return errCut
		}
		if _, err := s.dst.Write(p[:n]); err != nil {
			return err
		}
		p = p[n:]
	}
	return nil
}
