package drive_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/drive"
	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("Config", func() {
	parse := func(loadYAML string) *scenarios.Load {
		GinkgoHelper()
		sc, err := scenarios.Parse([]byte("name: d\nservices: {api: {}}\nproxies: {edge: {routes_to: api}}\nload:\n"+loadYAML), "d.yaml")
		Expect(err).NotTo(HaveOccurred())
		return sc.Load
	}

	It("sends a constant rate for the duration, with the request's method, path, headers and body", func() {
		cfg := drive.Config(parse("  {target: edge, rate: 20/s, duration: 3s, path: /buy, method: post, headers: {x-a: b}, body: hi}\n"), "http://127.0.0.1:1")
		Expect(cfg.URL).To(Equal("http://127.0.0.1:1/buy"))
		Expect(cfg.Method).To(Equal("POST"))
		Expect(cfg.Header.Get("x-a")).To(Equal("b"))
		Expect(string(cfg.Body)).To(Equal("hi"))
		Expect(cfg.Rate).To(BeNumerically("==", 20))
		Expect(cfg.Duration).To(Equal(3 * time.Second))
		Expect(cfg.Timeout).To(Equal(30 * time.Second))
		Expect(cfg.Phases).To(BeEmpty())
	})

	It("makes a gRPC load's calls (path, method and body are the call's own) and an h2c load h2c", func() {
		// Built by hand, to show the translation alone (Parse accepts h2c and gRPC loads too).
		l := &scenarios.Load{Target: "edge", Rate: scenarios.Rate{PerSecond: 10}, Duration: scenarios.Duration{Duration: time.Second},
			Path: "/", Method: "GET", Protocol: scenarios.ProtocolGRPC,
			GRPC: &scenarios.LoadGRPC{Method: "server_stream", Deadline: scenarios.Duration{Duration: 500 * time.Millisecond}, Replies: 3}}
		cfg := drive.Config(l, "http://x")
		Expect(cfg.GRPC).To(Equal(&load.GRPC{Method: load.GRPCServerStream, Deadline: 500 * time.Millisecond, Replies: 3}))
		Expect(cfg.URL).To(Equal("http://x/"))
		Expect(cfg.Method).To(BeEmpty())
		Expect(cfg.Body).To(BeNil())
		Expect(cfg.H2C).To(BeFalse(), "implied by GRPC")

		l.Protocol, l.GRPC = scenarios.ProtocolH2C, nil
		cfg = drive.Config(l, "http://x")
		Expect(cfg.H2C).To(BeTrue())
		Expect(cfg.GRPC).To(BeNil())
	})

	It("turns named phases into the generator's phases", func() {
		cfg := drive.Config(parse(`  target: edge
  phases:
    - {name: a, duration: 1s, rate: 10/s}
    - {name: b, duration: 2s, ramp: {from: 10/s, to: 30/s}}
    - {name: c, duration: 3s, burst: {requests: 5, every: 500ms}}
`), "http://x")
		Expect(cfg.Rate).To(BeZero())
		Expect(cfg.Phases).To(Equal([]load.Phase{
			load.Constant("a", time.Second, 10),
			load.Ramp("b", 2*time.Second, 10, 30),
			load.Bursts("c", 3*time.Second, 5, 500*time.Millisecond),
		}))
	})

	It("turns the mix into the generator's weighted requests, leaving out what an entry does not set", func() {
		cfg := drive.Config(parse(`  target: edge
  rate: 10/s
  duration: 1s
  headers: {x-a: b}
  mix:
    - {weight: 3}
    - {path: /cart?id=1, method: put, headers: {x-canary: always}, body: ""}
`), "http://x")
		Expect(cfg.Header.Get("x-a")).To(Equal("b"))
		Expect(cfg.Mix).To(HaveLen(2))
		Expect(cfg.Mix[0]).To(Equal(load.Request{Weight: 3}))
		Expect(cfg.Mix[1].Weight).To(Equal(1))
		Expect(cfg.Mix[1].Path).To(Equal("/cart?id=1"))
		Expect(cfg.Mix[1].Method).To(Equal("PUT"))
		Expect(cfg.Mix[1].Header.Get("x-canary")).To(Equal("always"))
		Expect(cfg.Mix[1].Body).To(Equal([]byte{}), "an empty body written replaces the load's")
	})
})
