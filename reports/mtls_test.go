package reports_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// A mutual-TLS mesh's handshakes in the report and the checks (issue #16).
var _ = Describe("mesh.mtls in the report", func() {
	mtlsRecord := func() *record.Record {
		rec := &record.Record{Scenario: "mtls", Started: time.Unix(0, 0), Duration: time.Second, TargetRate: 2,
			Samples: []record.Sample{{Seq: 0, Status: 200}, {Seq: 1, Intended: 500 * time.Millisecond, Status: 200}},
			ProxyStats: map[string]uint64{"cluster.frontend.ssl.handshake": 2, "cluster.frontend.ssl.fail_verify_san": 1,
				"cluster.frontend.upstream_rq_total": 2},
			Services: []record.Service{{Name: "backend", Instances: 1}, {Name: "frontend", Instances: 1, Entry: true}},
			Edges: []record.Edge{{Caller: "frontend", Callee: "backend", SidecarStats: map[string]uint64{
				"ssl.handshake": 3, "ssl.connection_error": 1, "ssl.fail_verify_error": 1}}},
			Upstreams: []record.UpstreamRecord{{Service: "backend", TLSHandshakes: 3, TLSHandshakeErrors: 2},
				{Service: "frontend", TLSHandshakes: 2}},
			MTLS: &record.MTLS{Workloads: 3, Rotations: 2, ClientCertificates: 6},
		}
		return rec
	}
	judge := func(rec *record.Record, exprs ...string) []reports.Verdict {
		GinkgoHelper()
		var cs []checks.Check
		for _, e := range exprs {
			c, err := checks.Parse(e)
			Expect(err).NotTo(HaveOccurred())
			cs = append(cs, c)
		}
		return reports.EvaluateRun(cs, rec)
	}

	It("sums the ingress proxy's and the sidecars' ssl stats, and adds the instances' failed handshakes", func() {
		v := judge(mtlsRecord(), "ssl_handshakes == 5", "ssl_handshake_errors == 5", "cert_rotations >= 2")
		Expect(v[0].Passed).To(BeTrue(), v[0].Observed)
		Expect(v[0].Observed).To(Equal("ssl_handshakes = 5 (the proxies'; the instances completed 5)"))
		Expect(v[1].Passed).To(BeTrue(), v[1].Observed)
		Expect(v[1].Observed).To(Equal("ssl_handshake_errors = 5 (the proxies' 3, the instances' 2)"))
		Expect(v[2].Passed).To(BeTrue(), v[2].Observed)
		Expect(v[2].Observed).To(Equal("cert_rotations = 2 (3 certificates each)"))
	})

	It("fails the checks of a plain mesh, saying why", func() {
		rec := mtlsRecord()
		rec.MTLS = nil
		v := judge(rec, "ssl_handshake_errors == 0")
		Expect(v[0].Passed).To(BeFalse())
		Expect(v[0].Observed).To(Equal("ssl_handshake_errors not recorded: the mesh is plain (set mesh: {mtls: true})"))
	})

	It("takes them over the whole run only", func() {
		_, err := checks.Parse("during fault: ssl_handshake_errors == 0")
		Expect(err).To(MatchError(ContainSubstring("ssl_handshake_errors is counted over the whole run only")))
	})

	It("shows the mutual TLS in summary.md and report.json", func() {
		r := reports.NewReport(mtlsRecord(), nil)
		var md strings.Builder
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(md.String()).To(ContainSubstring("| mutual TLS | on: 5 handshakes by the proxies, 3 failed; the instances 5, 2 failed; 3 certificates, rotated 2 times; 6 distinct client certificates accepted |"))

		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, r)).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		var doc struct {
			Outcomes struct {
				MTLS map[string]float64 `json:"mtls"`
			} `json:"outcomes"`
			Upstreams []map[string]any `json:"upstreams"`
		}
		Expect(json.Unmarshal(data, &doc)).To(Succeed())
		Expect(doc.Outcomes.MTLS).To(Equal(map[string]float64{"handshakes": 5, "handshake_errors": 3, "instance_handshakes": 5,
			"instance_handshake_errors": 2, "certificates": 3, "rotations": 2, "client_certificates": 6}))
		Expect(doc.Upstreams[0]).To(HaveKeyWithValue("tls_handshake_errors", 2.0))
	})

	It("leaves report.json without mtls for a plain mesh", func() {
		rec := mtlsRecord()
		rec.MTLS = nil
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, reports.NewReport(rec, nil))).To(Succeed())
		data, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(data)).NotTo(ContainSubstring(`"mtls":`))
	})
})
