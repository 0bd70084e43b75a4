package live

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/meshproof/meshproof/mesh/controlplane"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/xds"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// initialVersion is the version of the configuration a changed proxy starts with (its scenario
// configuration and every change at 0s); changes[i] pushed later is version i+1.
const initialVersion = "0"

// readyTimeout bounds the wait for a changed proxy's first configuration.
const readyTimeout = 10 * time.Second

// changes is the scenario's control plane at work: the server, and the xDS clients of the proxies it
// configures (they run until close).
type changes struct {
	cp     *controlplane.Server
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu      sync.Mutex
	pushErr error // the first push that failed
	// answered is when each changed proxy answered its first configuration (Wait, before the load):
	// a request naming that version later (another type's update) would move Outcome's time into the
	// load.
	answered map[string]time.Time
}

func startChanges() (*changes, error) {
	cp, err := controlplane.Start()
	if err != nil {
		return nil, err
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &changes{cp: cp, ctx: ctx, cancel: cancel}, nil
}

// close stops the pushes and the xDS clients, then the server; the proxies keep their configuration.
func (c *changes) close() {
	c.cancel()
	c.wg.Wait()
	c.cp.Close()
}

// err is the first push that failed, if any.
func (c *changes) err() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.pushErr
}

// startDynamicProxy starts the proxy px of a scenario with changes: it takes its routes, clusters and
// endpoints from the scenario's control plane over ADS, starting from its initial state (version 0);
// Start returns once it applied them.
func (t *topology) startDynamicProxy(p *plan.Plan, px plan.Proxy, addrs map[string]string) (*proxy.Server, error) {
	st := p.Scenario.InitialState(px.Name)
	static, err := st.Bootstrap(px.Name, t.stateAddresses(p, st, addrs))
	if err != nil {
		return nil, err
	}
	b, err := t.changes.cp.Bootstrap(px.Name, static)
	if err != nil {
		return nil, err
	}
	cfg, err := config.FromProto(b)
	if err != nil {
		return nil, err
	}
	popts := t.proxyOptions(p, px.Name, px.Name, px.Name)
	popts.Bootstrap = b
	srv, err := xds.NewServer(cfg, popts)
	if err != nil {
		return nil, err
	}
	if err := srv.Start(); err != nil {
		return nil, err
	}
	ready := make(chan struct{})
	var once sync.Once
	client, err := xds.New(xds.Options{Bootstrap: b, Config: cfg, Stats: srv.Stats(),
		Applier: xds.ServerApplier(srv, func(*config.Bootstrap) { once.Do(func() { close(ready) }) })})
	if err != nil {
		_ = srv.Close()
		return nil, err
	}
	t.changes.wg.Add(1)
	go func() {
		defer t.changes.wg.Done()
		_ = client.Run(t.changes.ctx)
	}()
	if err := t.changes.cp.Push(t.changes.ctx, px.Name, initialVersion, static); err != nil {
		_ = srv.Close()
		return nil, err
	}
	wctx, wcancel := context.WithTimeout(t.changes.ctx, readyTimeout)
	defer wcancel()
	outcome, at, detail := t.changes.cp.Wait(wctx, px.Name, initialVersion)
	if outcome == record.ChangeRejected {
		_ = srv.Close()
		return nil, fmt.Errorf("its first configuration from the control plane was rejected: %s", detail)
	}
	if outcome == record.ChangeApplied {
		t.changes.mu.Lock()
		if t.changes.answered == nil {
			t.changes.answered = map[string]time.Time{}
		}
		t.changes.answered[px.Name] = at
		t.changes.mu.Unlock()
	}
	select { // its ACK of the clusters can come before the endpoints and routes complete it
	case <-ready:
		return srv, nil
	case <-wctx.Done():
		_ = srv.Close()
		return nil, fmt.Errorf("it did not take its first configuration from the control plane within %s", readyTimeout)
	}
}

// stateAddresses are the listener, admin and endpoint addresses of a proxy in state st: the instances
// each of its clusters holds.
func (t *topology) stateAddresses(p *plan.Plan, st *scenarios.ProxyState, addrs map[string]string) scenarios.Addresses {
	eps := map[string][]string{}
	for _, svc := range st.Proxy.Services() {
		s := p.Scenario.Services[svc]
		if s == nil { // a rejected change's route may name anything; the loader refuses that, this is a guard
			continue
		}
		n := s.Instances
		for _, i := range st.Instances(svc, n) {
			eps[svc] = append(eps[svc], addrs[fmt.Sprintf("%s/%d", svc, i)])
		}
		if eps[svc] == nil {
			eps[svc] = []string{}
		}
	}
	return scenarios.Addresses{Listener: "127.0.0.1:0", Admin: "127.0.0.1:0", Endpoints: eps, TLS: t.meshTLS()}
}

// schedule pushes every change after 0s at its time from origin, the load's start, until the changes
// close.
func (t *topology) schedule(p *plan.Plan, origin time.Time, addrs map[string]string) {
	ctx := t.changes.ctx
	t.changes.wg.Add(1)
	go func() {
		defer t.changes.wg.Done()
		for i, c := range p.Scenario.Changes {
			if c.At.Duration == 0 {
				continue
			}
			timer := time.NewTimer(time.Until(origin.Add(c.At.Duration)))
			select {
			case <-ctx.Done():
				timer.Stop()
				return
			case <-timer.C:
			}
			name := p.Scenario.ChangeProxy(c)
			static, err := c.State.Bootstrap(name, t.stateAddresses(p, c.State, addrs))
			if err == nil {
				err = t.changes.cp.Push(ctx, name, strconv.Itoa(i+1), static)
			}
			if err != nil && ctx.Err() == nil {
				t.changes.mu.Lock()
				if t.changes.pushErr == nil {
					t.changes.pushErr = fmt.Errorf("changes[%d]: %w", i, err)
				}
				t.changes.mu.Unlock()
			}
		}
	}()
}

// changeRecords fills in rec.Changes how each proxy answered each change, as offsets from start.
func (t *topology) changeRecords(rec *record.Record, start time.Time, p *plan.Plan) {
	for i := range rec.Changes {
		rc := &rec.Changes[i]
		c := p.Scenario.Changes[i]
		version := strconv.Itoa(i + 1)
		if c.At.Duration == 0 {
			version = initialVersion
		}
		outcome, at, detail := t.changes.cp.Outcome(rc.Proxy, version)
		if c.At.Duration == 0 && outcome == record.ChangeApplied {
			t.changes.mu.Lock()
			if first, ok := t.changes.answered[rc.Proxy]; ok {
				at = first
			}
			t.changes.mu.Unlock()
		}
		rc.Outcome, rc.Detail = outcome, detail
		if outcome != record.ChangeUnacknowledged {
			rc.Answered = max(at.Sub(start), 0)
		}
	}
}
