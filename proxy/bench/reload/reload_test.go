package main

import (
	"encoding/json"
	"testing"
	"time"

	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

var testPorts = ports{listener: 18284, admin: 18285, upstreams: [2]int{18280, 18282}, controls: [2]int{18281, 18283}}

// The two valid bootstraps load, keep the listener's address and differ in the route and the cluster,
// so that every reload replaces the cluster and changes what a response looks like.
func TestBootstrapsDiffer(t *testing.T) {
	g := NewWithT(t)
	var cfgs [2]*config.Bootstrap
	for i := range 2 {
		cfg, _, err := config.ParseBootstrap([]byte(bootstrap(testPorts, i)), "config-"+configName(i)+".yaml")
		g.Expect(err).NotTo(HaveOccurred())
		cfgs[i] = cfg
	}
	a, b := cfgs[0], cfgs[1]
	g.Expect(a.Listeners).To(HaveLen(1))
	g.Expect(b.Listeners).To(HaveLen(1))
	g.Expect(a.Listeners[0].Address).To(Equal("127.0.0.1:18284"))
	g.Expect(b.Listeners[0].Address).To(Equal(a.Listeners[0].Address))
	g.Expect(a.Listeners[0].Routes).NotTo(Equal(b.Listeners[0].Routes))
	g.Expect([]any{a.Clusters[0].ConnectTimeout, b.Clusters[0].ConnectTimeout}).To(Equal([]any{time.Second, 500 * time.Millisecond}))
	g.Expect(a.Clusters[0].Endpoints).To(Equal([]config.Endpoint{{Address: "127.0.0.1:18280", Weight: 1}}))
	g.Expect(b.Clusters[0].Endpoints).To(Equal([]config.Endpoint{{Address: "127.0.0.1:18282", Weight: 1}}))
}

// Each invalid bootstrap is refused when it is read, with the error the proxy prints and counts in
// server.config_reload_failed.
func TestInvalidBootstraps(t *testing.T) {
	tests := []struct {
		name string
		give int
		want string
	}{
		{"unsupported field", 0, "static_resources.clusters[0].dns_lookup_family: field not supported by meshproof"},
		{"unknown cluster", 1, `route.cluster: unknown cluster "missing" (clusters: backend)`},
		{"malformed YAML", 2, "invalid YAML"},
		{"the kinds in turn", 3, "dns_lookup_family"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := NewWithT(t)
			_, _, err := config.ParseBootstrap([]byte(invalidBootstrap(testPorts, tt.give)), "bootstrap.yaml")
			g.Expect(err).To(MatchError(ContainSubstring(tt.want)))
		})
	}
}

// Failed requests are those neither answered 2xx nor cancelled by the run's end: other statuses and
// transport errors.
func TestLoadResultFailed(t *testing.T) {
	g := NewWithT(t)
	var l loadResult
	g.Expect(json.Unmarshal([]byte(`{"requests":100,"successes":97,"canceled":1,
		"status_codes":{"200":95,"204":1,"503":2},"error_kinds":{"reset":1,"canceled":1}}`), &l)).To(Succeed())
	g.Expect(l.answered()).To(Equal(int64(96)))
	g.Expect(l.failed()).To(Equal(int64(3)))
}

func TestSpread(t *testing.T) {
	tests := []struct {
		name string
		give []float64
		want string
	}{
		{"odd", []float64{3, 1, 2}, "2 [1–3]"},
		{"even", []float64{4, 1, 2, 3}, "2.5 [1–4]"},
		{"all equal", []float64{7, 7}, "7"},
		{"none", nil, "n/a"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			NewWithT(t).Expect(spread(tt.give, "%g")).To(Equal(tt.want))
		})
	}
}
