package proxy

import (
	"context"
	"math/rand/v2"
	"net"
	"sync"
	"time"
)

// DrainStrategy is Envoy's --drain-strategy: how a draining listener closes its connections.
type DrainStrategy int

const (
	// DrainGradual (Envoy's default): the chance that a response says Connection: close grows with the
	// time since the drain began, to certainty at the end of the drain time.
	DrainGradual DrainStrategy = iota
	// DrainImmediate: every response says Connection: close from the start.
	DrainImmediate
)

// defaultDrainTime is Envoy's --drain-time-s default (600 s).
const defaultDrainTime = 600 * time.Second

func (s *Server) drainTime() time.Duration {
	if s.opts.DrainTime > 0 {
		return s.opts.DrainTime
	}
	return defaultDrainTime
}

// drainer is one drain sequence: its start on the proxy's clock, its length and strategy.
type drainer struct {
	s         *Server
	start     time.Time
	period    time.Duration
	immediate bool
}

func (s *Server) newDrainer(period time.Duration) *drainer {
	return &drainer{s: s, start: s.clk.Now(), period: period, immediate: s.opts.DrainStrategy == DrainImmediate}
}

// close draws whether a response closes its connection now: P = elapsed / drain time under the
// gradual strategy (DrainManagerImpl::drainClose, which draws in whole seconds; here on the clock's
// resolution), always once the drain time passed or under the immediate strategy.
func (d *drainer) close() bool {
	if d.immediate {
		return true
	}
	elapsed := d.s.clk.Since(d.start)
	if elapsed >= d.period {
		return true
	}
	return d.s.drawDrain(d.period) < elapsed
}

// drawDrain is a uniform duration in [0, period) from the proxy's drain stream.
func (s *Server) drawDrain(period time.Duration) time.Duration {
	s.drawMu.Lock()
	defer s.drawMu.Unlock()
	if s.drawRand == nil {
		s.drawRand = rand.New(s.seeds.stream("drain", saltDrain))
	}
	return time.Duration(s.drawRand.Int64N(int64(period)))
}

// Draining says whether the proxy is not LIVE: its health check failed (POST /healthcheck/fail) or
// its listeners drain (POST /drain_listeners, Drain). /ready then answers 503.
func (s *Server) Draining() bool {
	return !s.live.Load() || s.drain.Load() != nil || s.listenersStopped.Load()
}

// Drain starts draining every listener, as Envoy's POST /drain_listeners does: with graceful, for
// period (0: the drain time, Options.DrainTime) the listeners keep accepting while responses say
// Connection: close as the drain strategy says, then they stop accepting; without graceful they stop
// accepting at once. Connections already open stay, their requests served, until Shutdown. The
// returned channel is closed once the listeners stopped accepting. A second call joins the first,
// ending it sooner when its period ends sooner.
func (s *Server) Drain(graceful bool, period time.Duration) <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.drained == nil {
		s.drained = make(chan struct{})
	}
	done := s.drained
	if s.listenersStopped.Load() {
		return done
	}
	defer s.publishState()
	if !graceful {
		s.stopListenersLocked()
		return done
	}
	if period <= 0 {
		period = s.drainTime()
	}
	deadline := s.clk.Now().Add(period)
	if s.drain.Load() != nil {
		if !deadline.Before(s.drainDeadline) {
			return done
		}
		s.drainTimer.Stop() // a shorter drain asked for (SIGTERM during a long one): it ends sooner
	} else {
		s.drain.Store(s.newDrainer(period))
	}
	s.drainDeadline = deadline
	s.drainTimer = s.clk.AfterFunc(period, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		s.stopListenersLocked()
	})
	return done
}

// stopListenersLocked closes every listener's socket: no new connection (s.mu held).
func (s *Server) stopListenersLocked() {
	if s.listenersStopped.Swap(true) {
		return
	}
	for _, b := range s.bound {
		b.sock.close()
		s.mgr.listenerStopped.Inc()
	}
	if s.drained != nil {
		close(s.drained)
	}
}

// socket is a listener's bound socket: one accept loop hands its connections to whichever server
// listens on it now, so that a server can take a socket over from another without closing it.
type socket struct {
	ln    net.Listener
	conns chan net.Conn
	done  chan struct{}
	once  sync.Once
}

func newSocket(ln net.Listener) *socket {
	so := &socket{ln: ln, conns: make(chan net.Conn), done: make(chan struct{})}
	go so.loop()
	return so
}

func (so *socket) loop() {
	for {
		c, err := so.ln.Accept()
		if err != nil {
			if ne, ok := err.(net.Error); ok && ne.Timeout() {
				continue
			}
			so.close()
			return
		}
		select {
		case so.conns <- c:
		case <-so.done:
			c.Close()
			return
		}
	}
}

func (so *socket) close() {
	so.once.Do(func() {
		close(so.done)
		so.ln.Close()
	})
}

// listener is a server's view of the socket: closing it stops that server's accepts, not the socket.
func (so *socket) listener() *socketListener {
	return &socketListener{so: so, closed: make(chan struct{})}
}

type socketListener struct {
	so     *socket
	closed chan struct{}
	once   sync.Once
}

func (l *socketListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.so.conns:
		return c, nil
	case <-l.closed:
	case <-l.so.done:
	}
	return nil, net.ErrClosed
}

func (l *socketListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *socketListener) Addr() net.Addr { return l.so.ln.Addr() }

// closedAfter is a context that ends when stop is closed.
func closedAfter(stop <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stop
		cancel()
	}()
	return ctx
}

// setLive sets the health check state (POST /healthcheck/ok and /healthcheck/fail): failed, /ready
// answers 503 and every response closes its connection (Envoy's drainClose with drain_type DEFAULT).
func (s *Server) setLive(ok bool) {
	s.live.Store(ok)
	s.publishState()
}

// SetInitializing marks the proxy INITIALIZING (on) or done with it: /ready answers 503
// INITIALIZING meanwhile, as Envoy's until its initial xDS fetch is done (Utility::serverState).
// meshproof proxy sets it while a dynamic bootstrap waits for its first configuration.
func (s *Server) SetInitializing(on bool) {
	s.initializing.Store(on)
	s.publishState()
}

// state is the server's state as Envoy's admin reports it: DRAINING once the health check failed or
// the listeners drain, else INITIALIZING before the first configuration, else LIVE.
func (s *Server) state() string {
	switch {
	case s.Draining():
		return "DRAINING"
	case s.initializing.Load():
		return "INITIALIZING"
	}
	return "LIVE"
}

// publishState sets server.state (Envoy's values: 0 LIVE, 1 DRAINING, 3 INITIALIZING) and server.live.
func (s *Server) publishState() {
	st, live := int64(0), int64(1)
	switch s.state() {
	case "DRAINING":
		st, live = 1, 0
	case "INITIALIZING":
		st, live = 3, 0
	}
	s.mgr.serverState.Set(st)
	s.mgr.serverLive.Set(live)
}
