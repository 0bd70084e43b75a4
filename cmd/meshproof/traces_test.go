package main

import (
	"path/filepath"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/cmd/internal/proxycmd"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("meshproof run traces", func() {
	var out string
	BeforeEach(func() { out = GinkgoT().TempDir() })

	It("writes traces.otlp.json next to report.json: one trace per client request", Label("e2e"), func() {
		code, stdout, stderr := run("run", "testdata/violated.yaml", "--out", out)
		Expect(code).To(Equal(1), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		path := filepath.Join(out, tracing.FileOTLP)
		Expect(stdout).To(ContainSubstring("traces: " + path))
		reqs, err := tracing.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		roots, traces := 0, map[string]bool{}
		for _, r := range reqs {
			for _, rs := range r.GetResourceSpans() {
				for _, ss := range rs.GetScopeSpans() {
					for _, s := range ss.GetSpans() {
						traces[string(s.GetTraceId())] = true
						if ss.GetScope().GetName() == tracing.ScopeLoad {
							roots++
						}
					}
				}
			}
		}
		Expect(roots).To(Equal(100))
		Expect(traces).To(HaveLen(100))
	})

	It("writes no trace file with --trace-ratio 0", Label("e2e"), func() {
		code, _, _ := run("run", "testdata/violated.yaml", "--out", out, "--trace-ratio", "0")
		Expect(code).To(Equal(1))
		Expect(filepath.Join(out, tracing.FileOTLP)).NotTo(BeAnExistingFile())
		Expect(filepath.Join(out, "report.json")).To(BeAnExistingFile())
	})
})

var _ = Describe("meshproof proxy tracing", func() {
	It("takes the exporter from the bootstrap's tracing.http, else from --otlp-endpoint", func() {
		cfg := &config.Bootstrap{Tracing: &config.Tracing{Endpoint: "http://127.0.0.1:4318/v1/traces", ServiceName: "edge"}}
		Expect(proxycmd.Tracing(cfg, "http://ignored:4318", "")).To(Equal(&tracing.Config{ServiceName: "edge", OTLPEndpoint: "http://127.0.0.1:4318/v1/traces"}))
		Expect(proxycmd.Tracing(&config.Bootstrap{}, "http://127.0.0.1:4318", "")).To(Equal(&tracing.Config{OTLPEndpoint: "http://127.0.0.1:4318"}))
		Expect(proxycmd.Tracing(&config.Bootstrap{}, "", "")).To(BeNil())
	})
})
