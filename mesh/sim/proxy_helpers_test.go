package sim_test

import (
	"fmt"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/sim"
	"github.com/meshproof/meshproof/proxy/config"
)

const ms = time.Millisecond

// fakeUp is a scripted instance: answer says, for its n-th request (from 1), how long it works on it
// and what it answers.
type fakeUp struct {
	en       *sim.Engine
	name     string
	addr     string
	refusing func() bool
	answer   func(n int, req *sim.Request) (time.Duration, sim.Result)

	// sync: the instance answers within Serve (as a full queue does), after no time.
	sync      bool
	n         int
	served    []served // every request that reached it, health checks included
	cancelled []time.Duration
}

type served struct {
	at  time.Duration
	req sim.Request
}

func (u *fakeUp) Name() string { return u.name }
func (u *fakeUp) Addr() string { return u.addr }
func (u *fakeUp) Refusing() bool {
	return u.refusing != nil && u.refusing()
}

func (u *fakeUp) Serve(req *sim.Request, done func(sim.Result)) func() {
	kept := *req // the proxy reuses req once the exchange ends: what is kept is copied
	kept.Header = make(map[string]string, len(req.Header))
	for k, v := range req.Header {
		kept.Header[k] = v
	}
	u.served = append(u.served, served{at: u.en.Now(), req: kept})
	if req.HealthCheck {
		d, r := u.answerFor(0, req)
		t := u.en.After(d, func() { done(r) })
		return func() { u.en.Stop(t) }
	}
	u.n++
	d, r := u.answerFor(u.n, req)
	if u.sync {
		done(r)
		return func() { u.cancelled = append(u.cancelled, u.en.Now()) } // a cancel after the answer: a bug
	}
	t := u.en.After(d, func() { done(r) })
	return func() {
		if u.en.Stop(t) {
			u.cancelled = append(u.cancelled, u.en.Now())
		}
	}
}

func (u *fakeUp) answerFor(n int, req *sim.Request) (time.Duration, sim.Result) {
	if u.answer == nil {
		return 0, sim.Result{Status: 200}
	}
	return u.answer(n, req)
}

// requests are the non-health-check requests it got.
func (u *fakeUp) requests() []served {
	var out []served
	for _, s := range u.served {
		if !s.req.HealthCheck {
			out = append(out, s)
		}
	}
	return out
}

func always(d time.Duration, status int) func(int, *sim.Request) (time.Duration, sim.Result) {
	return func(int, *sim.Request) (time.Duration, sim.Result) { return d, sim.Result{Status: status} }
}

// bootstrap is an Envoy bootstrap of one listener routing /  to cluster "backend" of n endpoints
// (10.0.0.<i>:8080), parsed by proxy/config: route and cluster are extra lines of the route action and
// the cluster (YAML, one field per line, as under "route:" and the cluster).
func bootstrap(n int, route, cluster []string) *config.Bootstrap {
	y := bootstrapYAML(n, route, cluster)
	b, _, err := config.ParseBootstrap([]byte(y), "test.yaml")
	ExpectWithOffset(1, err).NotTo(HaveOccurred(), y)
	return b
}

// bootstrapYAML is the YAML of bootstrap(n, route, cluster).
func bootstrapYAML(n int, route, cluster []string) string {
	var eps strings.Builder
	for i := range n {
		fmt.Fprintf(&eps, "        - endpoint: {address: {socket_address: {address: 10.0.0.%d, port_value: 8080}}}\n", i)
	}
	indent := func(lines []string, pad string) string {
		var b strings.Builder
		for _, l := range lines {
			b.WriteString(pad + l + "\n")
		}
		return b.String()
	}
	y := `static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 10000}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          route_config:
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {prefix: /}
                route:
                  cluster: backend
` + indent(route, "                  ") + `          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: backend
    type: STATIC
    connect_timeout: 1s
` + indent(cluster, "    ") + `    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
` + eps.String()
	return y
}

// rig is a proxy on an engine with fake instances at its endpoints.
type rig struct {
	en     *sim.Engine
	p      *sim.Proxy
	ups    []*fakeUp
	events []sim.ProxyEvent
	got    []proxyAnswer
}

type proxyAnswer struct {
	id string
	at time.Duration
	r  sim.Result
}

func newRig(b *config.Bootstrap, seed uint64, hop time.Duration, answers ...func(int, *sim.Request) (time.Duration, sim.Result)) *rig {
	en := &sim.Engine{}
	rg := &rig{en: en}
	byAddr := map[string]*fakeUp{}
	for i, ep := range b.Clusters[0].Endpoints {
		u := &fakeUp{en: en, name: fmt.Sprintf("backend/%d", i), addr: ep.Address}
		if i < len(answers) {
			u.answer = answers[i]
		}
		rg.ups = append(rg.ups, u)
		byAddr[ep.Address] = u
	}
	p, err := sim.NewProxy(en, sim.ProxyConfig{Name: "edge", Config: b, Seed: seed, Hop: hop,
		Resolve: func(addr string) (sim.Upstream, bool) { u, ok := byAddr[addr]; return u, ok },
		OnEvent: func(e sim.ProxyEvent) { rg.events = append(rg.events, e) }})
	ExpectWithOffset(1, err).NotTo(HaveOccurred())
	rg.p = p
	p.Start()
	return rg
}

// send schedules a request with this id at the instant at.
func (rg *rig) send(at time.Duration, id string) {
	rg.en.At(at, func() {
		rg.p.Handle(&sim.Request{ID: id, Method: "GET", Path: "/", Authority: "svc", Header: map[string]string{}},
			func(r sim.Result) { rg.got = append(rg.got, proxyAnswer{id: id, at: rg.en.Now(), r: r}) })
	})
}

func (rg *rig) answerOf(id string) proxyAnswer {
	for _, a := range rg.got {
		if a.id == id {
			return a
		}
	}
	Fail("no answer for " + id)
	return proxyAnswer{}
}

func (rg *rig) eventsOf(kind string) []sim.ProxyEvent {
	var out []sim.ProxyEvent
	for _, e := range rg.events {
		if e.Kind == kind {
			out = append(out, e)
		}
	}
	return out
}

// sendWith schedules a request with these headers at the instant at.
func (rg *rig) sendWith(at time.Duration, id string, h map[string]string) {
	rg.en.At(at, func() {
		rg.p.Handle(&sim.Request{ID: id, Method: "GET", Path: "/", Authority: "svc", Header: h},
			func(r sim.Result) { rg.got = append(rg.got, proxyAnswer{id: id, at: rg.en.Now(), r: r}) })
	})
}
