package plan_test

import (
	"io"
	"net/http"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/faults/tcp"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/scenarios"
)

const scenario = `name: p
seed: 7
services:
  api: {instances: 3, response: {size: 16}}
  db: {instances: 1}
proxies:
  edge: {routes_to: api}
  side: {routes_to: db}
load: {target: edge, rate: 10/s, duration: 10s}
faults:
  - {service: api, instances: [1], at: 1s, for: 2s, abort: {status: 503}}
  - {service: api, instances: [0, 1], at: 2s, for: 3s, tcp: {toxics: [{type: latency, latency: 10ms}, {type: down}]}}
  - {service: api, instances: [2], at: 4s, tcp: {toxics: [{type: latency, latency: 5ms}]}}
  - {service: db, instances: [0], at: 1s, for: 1s, container: kill}
`

func parse(doc string) *scenarios.Scenario {
	GinkgoHelper()
	sc, err := scenarios.Parse([]byte(doc), "p.yaml")
	Expect(err).NotTo(HaveOccurred())
	return sc
}

var _ = Describe("New", func() {
	It("plans every instance with its own rules, in service then index order, and the proxies by name", func() {
		p := plan.New(parse(scenario), nil)
		Expect(p.Seed).To(BeEquivalentTo(7))
		var names []string
		for _, in := range p.Instances {
			names = append(names, in.Name())
			Expect(in.Upstream.Seed).To(BeEquivalentTo(7))
		}
		Expect(names).To(Equal([]string{"api/0", "api/1", "api/2", "db/0"}))
		api1, ok := p.Instance("api", 1)
		Expect(ok).To(BeTrue())
		Expect(api1.Upstream.Faults).To(HaveLen(1))
		Expect(api1.Upstream.Faults[0].Name).To(Equal("faults[0]"))
		Expect(api1.TCP).To(HaveLen(1))
		api0, _ := p.Instance("api", 0)
		Expect(api0.Upstream.Faults).To(BeEmpty())
		Expect(api0.TCP).To(HaveLen(1))
		Expect(p.Proxies).To(Equal([]plan.Proxy{{Name: "edge", Services: []string{"api"}}, {Name: "side", Services: []string{"db"}}}))
		Expect(p.Containers).To(HaveLen(1))
		Expect(p.Containers[0].Kind).To(Equal("kill"))
		Expect(p.Kinds()).To(Equal([]string{"abort", "tcp:latency", "tcp:down", "container:kill"}))
	})

	It("takes another seed for every instance", func() {
		seed := uint64(99)
		p := plan.New(parse(scenario), &seed)
		Expect(p.Seed).To(BeEquivalentTo(99))
		for _, in := range p.Instances {
			Expect(in.Upstream.Seed).To(BeEquivalentTo(99))
		}
	})

	It("lists a service's endpoints in instance order", func() {
		p := plan.New(parse(scenario), nil)
		Expect(p.Endpoints("api", func(in plan.Instance) string { return in.Name() })).To(Equal([]string{"api/0", "api/1", "api/2"}))
	})

	It("gives a proxy with routes the endpoints of every service they name, each an entry service, and the mix the run's seed", func() {
		seed := uint64(42)
		p := plan.New(parse(`name: p
seed: 7
services: {v1: {instances: 2}, v2: {}, other: {}}
proxies:
  edge:
    routes:
      - {match: {prefix: /, headers: [{name: x-v2, present_match: true}]}, route: {cluster: v2}}
      - {match: {prefix: /}, route: {weighted_clusters: {clusters: [{name: v1, weight: 9}, {name: v2, weight: 1}]}}}
load: {target: edge, rate: 10/s, duration: 1s, mix: [{weight: 1}, {weight: 1, headers: {x-v2: "1"}}]}
`), &seed)
		Expect(p.Proxies).To(Equal([]plan.Proxy{{Name: "edge", Services: []string{"v1", "v2"}}}))
		Expect(p.ProxyEndpoints(p.Proxies[0], func(in plan.Instance) string { return in.Name() })).To(Equal(map[string][]string{
			"v1": {"v1/0", "v1/1"}, "v2": {"v2/0"},
		}))
		services, _ := p.Graph()
		entry := map[string]bool{}
		for _, s := range services {
			entry[s.Name] = s.Entry
		}
		Expect(entry).To(Equal(map[string]bool{"v1": true, "v2": true, "other": false}))
		cfg := p.LoadConfig("http://127.0.0.1:1")
		Expect(cfg.Seed).To(BeEquivalentTo(42))
		Expect(cfg.Mix).To(HaveLen(2))
	})
})

var _ = Describe("ToxicsAt", func() {
	windows := []scenarios.TCPWindow{
		{Name: "faults[1]", Start: 2 * time.Second, Duration: 3 * time.Second, Toxics: []tcp.Toxic{{Type: tcp.TypeLatency}, {Type: tcp.TypeDown}}},
		{Name: "faults[2]", Start: 4 * time.Second, Toxics: []tcp.Toxic{{Type: tcp.TypeLatency}}},
	}
	names := func(ts []tcp.Toxic) []string {
		var out []string
		for _, t := range ts {
			out = append(out, t.Name)
		}
		return out
	}
	DescribeTable("switches each window's toxics on over [start, end), from start on without a duration",
		func(at time.Duration, active []string, next time.Duration) {
			got, n := plan.ToxicsAt(windows, at)
			Expect(names(got)).To(Equal(active))
			Expect(n).To(Equal(next))
		},
		Entry("before any window", time.Second, nil, 2*time.Second),
		Entry("at a window's start", 2*time.Second, []string{"faults[1].tcp.toxics[0]", "faults[1].tcp.toxics[1]"}, 4*time.Second),
		Entry("two windows at once", 4500*time.Millisecond, []string{"faults[1].tcp.toxics[0]", "faults[1].tcp.toxics[1]", "faults[2].tcp.toxics[0]"}, 5*time.Second),
		Entry("at a window's end: off", 5*time.Second, []string{"faults[2].tcp.toxics[0]"}, time.Duration(-1)),
	)
})

var _ = Describe("Host", func() {
	get := func(addr string) (int, error) {
		c := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: 5 * time.Second}
		resp, err := c.Get("http://" + addr + "/")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}

	It("serves an instance without TCP rules directly, its HTTP faults counted from the run start", func() {
		p := plan.New(parse(scenario), nil)
		in, _ := p.Instance("api", 1)
		var mu sync.Mutex
		var events []faults.Event
		h, err := plan.StartHost(in, plan.HostConfig{Listen: "127.0.0.1:0", OnEvent: func(e faults.Event) { mu.Lock(); events = append(events, e); mu.Unlock() }})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(h.Close)
		Expect(h.Addr()).NotTo(Equal(h.Upstream().Addr()), "api/1 has a TCP rule: the TCP proxy is in front")
		h.SetRunStart(time.Now().Add(-1500 * time.Millisecond)) // inside faults[0] (1s–3s), before faults[1] (2s–5s)
		Expect(get(h.Addr())).To(Equal(503))
		mu.Lock()
		defer mu.Unlock()
		Expect(events).To(ContainElement(And(HaveField("Fault", "faults[0]"), HaveField("Kind", faults.KindAbort))))
	})

	It("switches the TCP proxy's toxics with its windows: a down toxic refuses connections inside its window only", func() {
		p := plan.New(parse(scenario), nil)
		in, _ := p.Instance("api", 0) // faults[1]: latency + down over 2s–5s
		var mu sync.Mutex
		var kinds []string
		h, err := plan.StartHost(in, plan.HostConfig{Listen: "127.0.0.1:0", OnEvent: func(e faults.Event) { mu.Lock(); kinds = append(kinds, e.Fault+" "+e.Kind); mu.Unlock() }})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(h.Close)
		Expect(get(h.Addr())).To(Equal(200), "no window holds before SetRunStart")

		h.SetRunStart(time.Now().Add(-2500 * time.Millisecond)) // 2.5s into the run: inside faults[1]
		Eventually(func() error { _, err := get(h.Addr()); return err }).WithTimeout(2*time.Second).
			Should(MatchError(ContainSubstring("connection refused")), "the down toxic closes the listener")

		h.SetRunStart(time.Now().Add(-6 * time.Second)) // past the window's end: the toxics are off again
		Eventually(func() (int, error) { return get(h.Addr()) }).WithTimeout(2 * time.Second).Should(Equal(200))
		mu.Lock()
		defer mu.Unlock()
		Expect(kinds).To(ContainElement(HavePrefix("faults[1] tcp_")))
	})

	It("refuses an instance whose rules do not validate", func() {
		in := plan.Instance{Service: "api", Upstream: faults.UpstreamConfig{Service: "api", Response: faults.Response{Size: -1}}}
		_, err := plan.StartHost(in, plan.HostConfig{Listen: "127.0.0.1:0"})
		Expect(err).To(MatchError(faults.ErrInvalidConfig))
	})
})
