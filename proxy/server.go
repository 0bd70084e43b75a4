// Package proxy is meshproof's L7 proxy: Envoy's v3 configuration in (see proxy/config), Envoy's routing,
// retry and timeout semantics and Envoy-named stats out. The same Server runs embedded in a scenario and
// standalone as `meshproof proxy -c bootstrap.yaml`.
package proxy

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log"
	"math/rand/v2"
	"net"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// Options are the proxy's run-time settings that are not Envoy configuration.
type Options struct {
	// Bootstrap is the configuration as given, shown by the admin's /config_dump until an Update
	// gives another (nil: none).
	Bootstrap proto.Message
	// Stats is the store the proxy counts into (nil: a new one).
	Stats *stats.Store
	// OnEvent receives every resilience decision (ejections, un-ejections, health changes, retries); it
	// must be cheap and safe for concurrent use. nil: none.
	OnEvent func(Event)
	// OnRequest receives each finished downstream request that reached a cluster: its x-request-id and
	// how many upstream attempts it took. Cheap and concurrency-safe; nil: none.
	OnRequest func(id string, attempts int)
	// TracerProvider, when set, traces every listener: a SERVER span per downstream request, a CLIENT
	// span per upstream attempt, W3C trace context extracted downstream and injected upstream with
	// Propagator (nil: W3C trace context). A listener's HCM tracing.random_sampling sets the share of
	// requests without a trace context that start one (default 100%). nil: no tracing, no cost.
	TracerProvider trace.TracerProvider
	Propagator     propagation.TextMapPropagator
	// Clock is the time the proxy decides by and waits on: route and per-try timeouts, back-offs,
	// outlier-detection sweeps and ejection times, health-check intervals and timeouts, fault delays,
	// stats flushes, latencies (nil: clock.Real). Socket deadlines that bound I/O (the HCM
	// request_timeout and idle_timeout, connect_timeout, the upstream connections' idle timeout) stay
	// on the real clock; on any other clock the route timeout interrupts an exchange through a timer.
	Clock clock.Clock
	// Rand is the proxy's randomness (back-off jitter, random and least-request picks, hash-less
	// ring-hash picks, outlier enforcing draws and ejection jitter, health-check jitter, fault and
	// sampling draws). New draws a key from it once; every request then draws from a stream derived
	// from the key and its x-request-id, and every cluster and host from one derived from its name, so
	// the same source gives the same draws per request whatever the order requests run in. Used only
	// during New. nil: a random key. See SeededRand.
	Rand rand.Source
	// EnablePprof serves Go's profiles under /debug/pprof/ on the admin interface. Off by default: a
	// profile shows the proxy's memory and CPU time to whoever reaches the admin, and a CPU profile or
	// trace costs the request path while it runs (Envoy's /cpuprofiler and /heapprofiler are as
	// unauthenticated; the admin should be reachable by operators only).
	EnablePprof bool
	// AccessLogOpen opens an access log's path for writing (nil: the file, appended to and created
	// when missing; the process's stdout and stderr for the stdout and stderr loggers). A seam for
	// tests, and for a runner that keeps the logs elsewhere.
	AccessLogOpen func(path string) (io.WriteCloser, error)
	// AccessLogPath, when set, adds an access log in Envoy's default format at this path to every
	// listener, besides the bootstrap's own (a runner keeping each proxy's log in its run directory).
	AccessLogPath string
	// AccessLogBufferBytes bounds each access log file's buffer of lines not yet written (0: 4 MiB);
	// a line beyond it is dropped and counted in filesystem.write_dropped, never waited for.
	AccessLogBufferBytes int
	// DrainTime is Envoy's --drain-time-s: how long a listener drains, after POST
	// /drain_listeners?graceful or when a configuration change removes or replaces it (0: 600 s,
	// Envoy's default).
	DrainTime time.Duration
	// DrainStrategy is Envoy's --drain-strategy (default DrainGradual).
	DrainStrategy DrainStrategy
	// Warn receives each warning about how the proxy runs, once, as Start binds its sockets: today an
	// admin interface bound beyond loopback. nil: the standard logger (log.Print).
	Warn func(msg string)
}

// stopper is a server of the proxy: a listener's (h1) or the admin's (net/http).
type stopper interface {
	Shutdown(context.Context) error
	Close() error
}

// Server is a running proxy: its listeners, clusters and admin interface.
type Server struct {
	opts  Options
	store *stats.Store
	mgr   managerStats
	// gen is the configuration requests run on (see update.go).
	gen atomic.Pointer[generation]

	mu        sync.Mutex
	cfg       *config.Bootstrap
	started   bool
	stopped   bool
	listeners map[string]net.Listener // by listener name: the bound socket (ListenerAddr)
	bound     map[string]*boundListener
	servers   []stopper
	adminLn   net.Listener
	// liveClusters are the clusters not closed yet (current, or held by a request or a draining
	// listener).
	liveClusters map[*cluster]struct{}

	live             atomic.Bool // false after POST /healthcheck/fail
	initializing     atomic.Bool // SetInitializing
	drain            atomic.Pointer[drainer]
	listenersStopped atomic.Bool
	drained          chan struct{} // closed when the listeners stopped accepting (Drain)
	drainTimer       clock.Timer
	drainDeadline    time.Time
	drawMu           sync.Mutex
	drawRand         *rand.Rand

	quit      chan struct{}
	quitOnce  sync.Once
	stop      chan struct{} // closed when the server stops: ends the stats flush loop
	stopOnce  sync.Once
	clk       clock.Clock
	seeds     seeds
	startedAt time.Time // when Start ran, on clk: /server_info's uptime
	// logFiles are the access log files by path, shared by the listeners that name the same one.
	logFiles map[string]*logFile
}

// statsFlushInterval is Envoy's default stats_flush_interval: histograms' interval values cover it.
const statsFlushInterval = 5 * time.Second

// New builds a proxy from a validated configuration; Start opens its sockets.
func New(cfg *config.Bootstrap, opts Options) (*Server, error) {
	if cfg == nil {
		return nil, errors.New("proxy: nil configuration")
	}
	s := &Server{opts: opts, store: opts.Stats, listeners: map[string]net.Listener{}, bound: map[string]*boundListener{},
		liveClusters: map[*cluster]struct{}{}, quit: make(chan struct{}), stop: make(chan struct{}),
		clk: opts.Clock, seeds: newSeeds(opts.Rand)}
	if s.store == nil {
		s.store = stats.NewStore()
	}
	if s.clk == nil {
		s.clk = clock.Real{}
	}
	s.mgr = newManagerStats(s.store)
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.applyLocked(cfg, opts.Bootstrap); err != nil {
		return nil, err
	}
	s.live.Store(true)
	s.publishState()
	return s, nil
}

// Start binds every listener and the admin interface and serves them in the background. On error
// nothing is left open.
func (s *Server) Start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.startedAt = s.clk.Now()
	s.started = true
	g := s.gen.Load()
	if err := s.applyLocked(g.cfg, g.raw); err != nil {
		s.closeLocked()
		return err
	}
	if s.cfg.Admin != nil {
		ln, err := net.Listen("tcp", s.cfg.Admin.Address)
		if err != nil {
			s.closeLocked()
			return fmt.Errorf("admin: %w", err)
		}
		s.adminLn = ln
		if msg := adminExposure(s.cfg.Admin.Address, ln.Addr()); msg != "" {
			warn := s.opts.Warn
			if warn == nil {
				warn = func(m string) { log.Print(m) }
			}
			warn(msg)
		}
		srv := &http.Server{Handler: s.adminHandler(), ReadHeaderTimeout: 10 * time.Second, ErrorLog: discardLog}
		s.servers = append(s.servers, srv)
		go func() { _ = srv.Serve(ln) }()
	}
	for c := range s.liveClusters {
		c.start()
	}
	go s.flushStats(s.clk.NewTicker(statsFlushInterval))
	return nil
}

// adminExposure is the warning for an admin interface configured at addr (an IP address and port) and
// bound at bound, "" when it is on loopback. Envoy binds the admin where its bootstrap says, with no
// authentication: anyone who reaches it can read the configuration and stats, fail the health check
// and stop the proxy.
func adminExposure(addr string, bound net.Addr) string {
	host, _, err := net.SplitHostPort(addr)
	ip := net.ParseIP(host)
	if err != nil || ip == nil || ip.IsLoopback() {
		return ""
	}
	where := "a non-loopback address"
	if ip.IsUnspecified() {
		where = "every interface"
	}
	if ta, ok := bound.(*net.TCPAddr); ok {
		addr = net.JoinHostPort(host, strconv.Itoa(ta.Port))
	}
	return fmt.Sprintf("warning: the admin interface listens on %s (%s): it has no authentication, and whoever "+
		"reaches it can read the configuration and stats, POST /healthcheck/fail and /quitquitquit; "+
		"bind admin.address to 127.0.0.1 unless it must be reached from elsewhere", addr, where)
}

func (s *Server) flushStats(t clock.Ticker) {
	defer t.Stop()
	for {
		select {
		case <-t.C():
			s.store.FlushHistograms()
		case <-s.stop:
			return
		}
	}
}

func (s *Server) stopFlush() { s.stopOnce.Do(func() { close(s.stop) }) }

// ListenerAddr is the bound host:port of the named listener ("" if there is none).
func (s *Server) ListenerAddr(name string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if ln := s.listeners[name]; ln != nil {
		return ln.Addr().String()
	}
	return ""
}

// AdminAddr is the bound host:port of the admin interface ("" if there is none).
func (s *Server) AdminAddr() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.adminLn != nil {
		return s.adminLn.Addr().String()
	}
	return ""
}

// Stats is the proxy's stats store.
func (s *Server) Stats() *stats.Store { return s.store }

// Quit is closed when the admin receives POST /quitquitquit.
func (s *Server) Quit() <-chan struct{} { return s.quit }

// Shutdown stops accepting, lets in-flight requests finish until ctx ends, then closes everything.
func (s *Server) Shutdown(ctx context.Context) error {
	s.mu.Lock()
	s.stopped = true
	s.stopListenersLocked()
	if s.drainTimer != nil {
		s.drainTimer.Stop()
	}
	servers := append([]stopper(nil), s.servers...)
	s.mu.Unlock()
	var errs []error
	for _, srv := range servers {
		if err := srv.Shutdown(ctx); err != nil {
			errs = append(errs, err)
			_ = srv.Close()
		}
	}
	s.stopFlush()
	for _, c := range s.takeClusters() {
		c.close()
	}
	// The access logs last, once no request is left to log: what they buffered is written.
	for _, f := range s.takeLogFiles() {
		if err := f.close(ctx); err != nil {
			errs = append(errs, fmt.Errorf("access log %q: %w", f.path, err))
		}
	}
	return errors.Join(errs...)
}

// accessLogs opens the files of a listener's access logs (each path once per proxy). s.mu is held.
func (s *Server) accessLogs(cfgs []config.AccessLog) ([]accessLog, error) {
	if s.logFiles == nil {
		s.logFiles = map[string]*logFile{}
	}
	out := make([]accessLog, 0, len(cfgs))
	for _, c := range cfgs {
		f := s.logFiles[c.Path]
		if f == nil {
			var err error
			if f, err = newLogFile(c.Path, s.opts.AccessLogOpen, s.opts.AccessLogBufferBytes, newLogFileStats(s.store), s.clk); err != nil {
				return nil, err
			}
			s.logFiles[c.Path] = f
		}
		out = append(out, accessLog{filter: c.Filter, format: c.Format, file: f})
	}
	return out, nil
}

// takeClusters removes the clusters not closed yet from the server, for closing.
func (s *Server) takeClusters() []*cluster {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make([]*cluster, 0, len(s.liveClusters))
	for c := range s.liveClusters {
		out = append(out, c)
	}
	clear(s.liveClusters)
	return out
}

// takeLogFiles removes the access log files from the server, for closing.
func (s *Server) takeLogFiles() []*logFile {
	s.mu.Lock()
	defer s.mu.Unlock()
	files := make([]*logFile, 0, len(s.logFiles))
	for _, f := range s.logFiles {
		files = append(files, f)
	}
	s.logFiles = nil
	return files
}

// reopenLogs has every access log file reopened before its next write (admin POST /reopen_logs).
func (s *Server) reopenLogs() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, f := range s.logFiles {
		f.requestReopen()
	}
}

// FlushAccessLogs waits until every access log line buffered so far is written, or ctx ends.
func (s *Server) FlushAccessLogs(ctx context.Context) error {
	s.mu.Lock()
	files := make([]*logFile, 0, len(s.logFiles))
	for _, f := range s.logFiles {
		files = append(files, f)
	}
	s.mu.Unlock()
	for _, f := range files {
		if err := f.flush(ctx); err != nil {
			return err
		}
	}
	return nil
}

// Close stops everything at once.
func (s *Server) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closeLocked()
	return nil
}

func (s *Server) closeLocked() {
	s.stopped = true
	for _, srv := range s.servers {
		_ = srv.Close()
	}
	for _, b := range s.bound {
		b.sock.close()
	}
	if s.adminLn != nil {
		_ = s.adminLn.Close()
	}
	s.stopFlush()
	for c := range s.liveClusters {
		c.close()
	}
	clear(s.liveClusters)
	// The access logs write what they buffered in the background; Close does not wait for it.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	for path, f := range s.logFiles {
		_ = f.close(done)
		delete(s.logFiles, path)
	}
}
