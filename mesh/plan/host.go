package plan

import (
	"context"
	"crypto/tls"
	"fmt"
	"strings"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/tcp"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// Host is one upstream instance as every runner starts it: the fault-injecting upstream and, when TCP
// fault rules target the instance, a TCP fault proxy in front of it whose toxics are switched on and
// off at their windows' edges, counted from the run start. The embedded runner starts one Host per
// instance on loopback; `meshproof upstream` starts one inside each upstream container.
type Host struct {
	in      Instance
	up      *faults.Upstream
	tcp     *tcp.Proxy    // nil without TCP rules
	sidecar *proxy.Server // nil for a leaf service

	mu       sync.Mutex
	schedule context.CancelFunc // stops the current toxic schedule
	done     chan struct{}      // closed when the current schedule has stopped
}

// HostConfig completes an instance's upstream configuration with the runner's parts.
type HostConfig struct {
	// Listen is where the instance is reached (the TCP fault proxy's address when there is one; the
	// upstream then listens on an ephemeral loopback port behind it), e.g. "127.0.0.1:0".
	Listen string
	// OnEvent receives every fault event: the upstream's, and the TCP proxy's as kind "tcp_<type>" named
	// after their rule ("faults[3]").
	OnEvent func(faults.Event)
	// Upstream, when set, changes the upstream's configuration before it starts (e.g. to add a tracer
	// or a call sink).
	Upstream func(*faults.UpstreamConfig)
	// Sidecar is the outbound sidecar of an instance that calls others (required then, ignored for a
	// leaf): it starts before the upstream, whose calls go to its listener.
	Sidecar *SidecarConfig
	// TLS, when set, makes the instance serve mutual TLS (PKI.ServerConfig, mesh.mtls); its sidecar's
	// listener, which only its own app calls, stays plain.
	TLS *tls.Config
}

// SidecarConfig is an instance's outbound sidecar: the same proxy as every other, with the
// bootstrap the plan generates for it (Plan.SidecarBootstrap) and the runner's options.
type SidecarConfig struct {
	Bootstrap *bootstrapv3.Bootstrap
	Options   proxy.Options
}

// StartHost starts the instance: its upstream and, with TCP rules, its TCP fault proxy (toxics off until
// SetRunStart).
func StartHost(in Instance, cfg HostConfig) (*Host, error) {
	ucfg := in.Upstream
	ucfg.OnEvent = cfg.OnEvent
	ucfg.TLS = cfg.TLS
	var sidecar *proxy.Server
	if ucfg.App != nil {
		app := *ucfg.App
		ucfg.App = &app
		if cfg.Sidecar == nil {
			return nil, fmt.Errorf("%s calls %s and has no sidecar", in.Name(), strings.Join(in.Callees, ", "))
		}
		var err error
		if sidecar, err = startSidecar(*cfg.Sidecar); err != nil {
			return nil, fmt.Errorf("%s: sidecar: %w", in.Name(), err)
		}
		app.Sidecar = sidecar.ListenerAddr(scenarios.SidecarListener)
	}
	if cfg.Upstream != nil {
		cfg.Upstream(&ucfg)
	}
	up, err := faults.NewUpstream(ucfg)
	if err != nil {
		closeSidecar(sidecar)
		return nil, err
	}
	h := &Host{in: in, up: up, sidecar: sidecar}
	upListen := cfg.Listen
	if len(in.TCP) > 0 {
		upListen = "127.0.0.1:0"
	}
	if err := up.Start(upListen); err != nil {
		closeSidecar(sidecar)
		return nil, err
	}
	if len(in.TCP) > 0 {
		p, err := tcp.NewProxy(tcp.Config{Name: in.Name(), Seed: in.Upstream.Seed, OnEvent: tcpEvents(in, cfg.OnEvent)})
		if err == nil {
			err = p.Start(cfg.Listen, up.Addr())
		}
		if err != nil {
			_ = up.Close()
			closeSidecar(sidecar)
			return nil, fmt.Errorf("%s: TCP fault proxy: %w", in.Name(), err)
		}
		h.tcp = p
	}
	return h, nil
}

func startSidecar(cfg SidecarConfig) (*proxy.Server, error) {
	pcfg, err := config.FromProto(cfg.Bootstrap)
	if err != nil {
		return nil, err
	}
	opts := cfg.Options
	opts.Bootstrap = cfg.Bootstrap
	srv, err := proxy.New(pcfg, opts)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	return srv, nil
}

// closeSidecar stops a sidecar, letting the calls in flight finish for at most 5 s.
func closeSidecar(s *proxy.Server) error {
	if s == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.Shutdown(ctx)
}

// tcpEvents turns the TCP fault proxy's events into fault events of the instance.
func tcpEvents(in Instance, sink func(faults.Event)) func(tcp.Event) {
	if sink == nil {
		return nil
	}
	return func(e tcp.Event) {
		fault, _, _ := strings.Cut(e.Toxic, ".tcp.")
		sink(faults.Event{Time: e.Time, Service: in.Service, Instance: in.Index, Seq: e.Conn, Fault: fault,
			Kind: "tcp_" + e.Type, Detail: e.Detail})
	}
}

// Addr is where the instance is reached: the TCP fault proxy's address when there is one.
func (h *Host) Addr() string {
	if h.tcp != nil {
		return h.tcp.Addr()
	}
	return h.up.Addr()
}

// Instance is the planned instance the host runs.
func (h *Host) Instance() Instance { return h.in }

// Upstream is the instance's fault upstream (its Addr is behind the TCP proxy when there is one).
func (h *Host) Upstream() *faults.Upstream { return h.up }

// Sidecar is the instance's outbound sidecar; nil for a leaf service.
func (h *Host) Sidecar() *proxy.Server { return h.sidecar }

// Stats are the upstream's counters.
func (h *Host) Stats() faults.UpstreamStats { return h.up.Stats() }

// SetRunStart sets the origin of every fault window of the instance: the upstream's HTTP rules, and the
// TCP toxics, which a goroutine switches on and off at their windows' edges from then on (a later call
// replaces the schedule).
func (h *Host) SetRunStart(start time.Time) {
	h.up.SetRunStart(start)
	if h.tcp == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	h.stopSchedule()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	h.schedule, h.done = cancel, done
	go func() {
		defer close(done)
		scheduleToxics(ctx, h.in.TCP, start, h.tcp.SetToxics)
	}()
}

// stopSchedule stops the current toxic schedule and waits for it; h.mu held.
func (h *Host) stopSchedule() {
	if h.schedule != nil {
		h.schedule()
		<-h.done
		h.schedule, h.done = nil, nil
	}
}

// Close stops the toxic schedule, the TCP fault proxy, the upstream and then its sidecar.
func (h *Host) Close() error {
	h.mu.Lock()
	h.stopSchedule()
	h.mu.Unlock()
	var err error
	if h.tcp != nil {
		err = h.tcp.Close()
	}
	if uerr := h.up.Close(); err == nil {
		err = uerr
	}
	if serr := closeSidecar(h.sidecar); err == nil {
		err = serr
	}
	return err
}

// scheduleToxics sets the toxics active at each moment from start on — those of every window that
// holds it, named "<rule>.tcp.toxics[j]" — waking at each window edge, until the last edge or until ctx
// ends. A window holds [Start, Start+Duration), or from Start on when Duration is 0.
func scheduleToxics(ctx context.Context, windows []scenarios.TCPWindow, start time.Time, set func(...tcp.Toxic) error) {
	for {
		elapsed := time.Since(start)
		active, next := ToxicsAt(windows, elapsed)
		_ = set(active...) // validated with the scenario
		if next < 0 {
			return
		}
		t := time.NewTimer(next - elapsed)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return
		}
	}
}

// ToxicsAt returns the toxics active at elapsed (from the run start) and the next window edge after it
// (-1: none).
func ToxicsAt(windows []scenarios.TCPWindow, elapsed time.Duration) (active []tcp.Toxic, next time.Duration) {
	next = -1
	for _, w := range windows {
		end := w.Start + w.Duration
		if elapsed >= w.Start && (w.Duration == 0 || elapsed < end) {
			for j, tx := range w.Toxics {
				if tx.Name == "" {
					tx.Name = fmt.Sprintf("%s.tcp.toxics[%d]", w.Name, j)
				}
				active = append(active, tx)
			}
		}
		for _, edge := range []time.Duration{w.Start, end} {
			if edge > elapsed && (w.Duration > 0 || edge == w.Start) && (next < 0 || edge < next) {
				next = edge
			}
		}
	}
	return active, next
}
