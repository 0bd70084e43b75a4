package sim

import (
	"fmt"
	"strings"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"

	"github.com/meshproof/meshproof/mesh/controlplane"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// Configuration changes (a scenario's changes:), on virtual time. The embedded runner pushes each
// change from a control plane over ADS (mesh/live/changes.go) and its proxy's xDS client decodes,
// applies and ACKs it, or NACKs it with an error_detail (proxy/xds). The simulator builds the same
// configuration from the same functions (the scenario's ProxyState.Bootstrap, the instances each
// cluster holds), checks it resource by resource as the xDS client decodes it (so a NACK says what the
// live one says), and puts it in use with Proxy.Update one ChangeDelay after the change's at: the
// push's round trip. The change's record entry is answered (ACK or NACK) at that instant.

// DefaultChangeDelay is the time from a change's push to the proxy using it (and answering it): the
// round trip of an ADS push and its ACK on loopback, with the proxy's decoding and update.
const DefaultChangeDelay = time.Millisecond

// changePlan is one change after 0s of the scenario, ready to apply.
type changePlan struct {
	index  int
	proxy  string
	at     time.Duration
	cfg    *config.Bootstrap // the configuration the proxy puts in use; nil when it refuses it
	detail string            // the NACK's error_detail when it refuses it
}

// changeAnswer is how the proxy answered a change.
type changeAnswer struct {
	outcome string
	at      time.Duration
	detail  string
}

// proxyListener is the synthetic listener address of the k-th proxy of the plan.
func proxyListener(k int) string {
	return fmt.Sprintf("10.255.%d.%d:10000", (k+1)>>8&0xff, (k+1)&0xff)
}

// stateBootstrap is the static bootstrap of proxy name in state st, as the embedded runner builds it
// for its control plane (topology.stateAddresses): its clusters hold the instances st says.
func stateBootstrap(p *plan.Plan, name string, st *scenarios.ProxyState, listener string, addrs map[string]string) (*bootstrapv3.Bootstrap, error) {
	eps := map[string][]string{}
	for _, svc := range st.Proxy.Services() {
		s := p.Scenario.Services[svc]
		if s == nil {
			continue
		}
		eps[svc] = []string{}
		for _, i := range st.Instances(svc, s.Instances) {
			eps[svc] = append(eps[svc], addrs[fmt.Sprintf("%s/%d", svc, i)])
		}
	}
	return st.Bootstrap(name, scenarios.Addresses{Listener: listener, Endpoints: eps})
}

// stateConfig is the configuration proxy name takes in state st: nil and the NACK's error_detail
// when it refuses it.
func stateConfig(p *plan.Plan, name string, st *scenarios.ProxyState, listener string, addrs map[string]string) (*config.Bootstrap, string, error) {
	b, err := stateBootstrap(p, name, st, listener, addrs)
	if err != nil {
		return nil, "", err
	}
	detail, err := nackDetail(b)
	if err != nil {
		return nil, "", err
	}
	if detail != "" {
		return nil, detail, nil
	}
	cfg, err := config.FromProto(b)
	if err != nil {
		// The resources decode one by one but the whole does not: the live client's Applier refuses
		// it (proxy/xds/apply.go reconcile), and the NACK says so.
		return nil, "applying the configuration: " + err.Error(), nil
	}
	return cfg, "", nil
}

// planChanges builds every change after 0s of the scenario; listeners are the proxies' listener
// addresses by name.
func planChanges(p *plan.Plan, listeners, addrs map[string]string) ([]changePlan, error) {
	var out []changePlan
	for i, c := range p.Scenario.Changes {
		if c.At.Duration == 0 {
			continue // in the proxy's first configuration (configs)
		}
		name := p.Scenario.ChangeProxy(c)
		if c.State == nil {
			return nil, fmt.Errorf("changes[%d]: no configuration (the scenario was not loaded)", i)
		}
		cfg, detail, err := stateConfig(p, name, c.State, listeners[name], addrs)
		if err != nil {
			return nil, fmt.Errorf("changes[%d]: %w", i, err)
		}
		out = append(out, changePlan{index: i, proxy: name, at: c.At.Duration, cfg: cfg, detail: detail})
	}
	return out, nil
}

// changeConfs are the configurations the changes put in use, for Unsupported.
func changeConfs(chs []changePlan) []proxyConf {
	var out []proxyConf
	for _, ch := range chs {
		if ch.cfg != nil {
			out = append(out, proxyConf{name: fmt.Sprintf("%s (changes[%d])", ch.proxy, ch.index), cfg: ch.cfg})
		}
	}
	return out
}

// nackDetail is the error_detail of the proxy's NACK of the resources the live control plane makes of
// static (controlplane.Server.Push: every cluster an EDS cluster with its ClusterLoadAssignment, each
// connection manager's route configuration), decoded as the xDS client decodes them (proxy/xds
// state.decode and update: `<kind> "<name>": <error>`, one line per resource refused); "" when every
// resource decodes; an error when the resources cannot be made. The clusters come first (CDS before EDS and RDS, and the first NACK is the
// record's); a response of another type is answered on its own.
func nackDetail(static *bootstrapv3.Bootstrap) (string, error) {
	clusters, loads, routes, err := controlplane.Resources(static)
	if err != nil {
		return "", err // the live control plane's Push fails the same way, and the run with it
	}
	line := func(kind, name string, err error) string {
		return fmt.Sprintf("%s %q: %s", kind, name, strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	var refusedClusters, refusedLoads, refusedRoutes []string
	for i, c := range clusters {
		if _, err := config.ClusterFromProto(c); err != nil {
			refusedClusters = append(refusedClusters, line("cluster", c.GetName(), err))
		}
		if _, err := config.EndpointsFromProto(loads[i]); err != nil {
			refusedLoads = append(refusedLoads, line("cluster load assignment", loads[i].GetClusterName(), err))
		}
	}
	for _, rc := range routes {
		if _, err := config.RouteConfigFromProto(rc); err != nil {
			refusedRoutes = append(refusedRoutes, line("route configuration", rc.GetName(), err))
		}
	}
	for _, errs := range [][]string{refusedClusters, refusedLoads, refusedRoutes} {
		if len(errs) > 0 {
			return strings.Join(errs, "\n"), nil
		}
	}
	return "", nil
}

// scheduleChanges arms each change at its at: the proxy takes it (or refuses it) delay later.
func (w *world) scheduleChanges(chs []changePlan, delay time.Duration) {
	w.answers = map[int]changeAnswer{}
	for i, c := range w.p.Scenario.Changes {
		if c.At.Duration == 0 {
			w.answers[i] = changeAnswer{outcome: record.ChangeApplied} // the first configuration
		}
	}
	for _, ch := range chs {
		w.en.At(ch.at+delay, func() { w.applyChange(ch) })
	}
}

// applyChange puts a change in use in its proxy, or records its refusal.
func (w *world) applyChange(ch changePlan) {
	now := w.en.Now()
	if ch.cfg == nil {
		w.answers[ch.index] = changeAnswer{outcome: record.ChangeRejected, at: now, detail: ch.detail}
		return
	}
	if err := w.proxies[ch.proxy].Update(ch.cfg); err != nil {
		w.answers[ch.index] = changeAnswer{outcome: record.ChangeRejected, at: now, detail: "applying the configuration: " + err.Error()}
		return
	}
	w.answers[ch.index] = changeAnswer{outcome: record.ChangeApplied, at: now}
}

// fillChanges fills in rec.Changes how each proxy answered each change by the end of the load, as the
// embedded runner's changeRecords.
func (w *world) fillChanges(rec *record.Record, end *snapshot) {
	for i := range rec.Changes {
		a, ok := w.answers[i]
		if !ok || a.at > end.at {
			continue // unacknowledged
		}
		rc := &rec.Changes[i]
		rc.Outcome, rc.Answered, rc.Detail = a.outcome, a.at, a.detail
	}
}

// listenerAddrs are the ingress proxies' listener addresses by name.
func listenerAddrs(confs []proxyConf) map[string]string {
	out := map[string]string{}
	for _, c := range confs {
		if c.instance == nil {
			out[c.name] = c.listener
		}
	}
	return out
}
