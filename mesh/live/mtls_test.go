package live_test

import (
	"os"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

// The example's mesh, certificates rotated every 2 s under 50 requests/s for 5 s.
var _ = Describe("Run a mutual-TLS mesh (issue #16)", func() {
	It("makes every proxy → instance hop mutual TLS and rotates the certificates under load with no failed request", Label("slow"), func(ctx SpecContext) {
		data, err := os.ReadFile("../../scenarios/examples/mesh-mtls.yaml")
		Expect(err).NotTo(HaveOccurred())
		// Timeouts far above the example's: the claim is that no request fails for TLS or a rotation, and a
		// race-enabled build on a shared machine can take over a second to answer.
		doc := strings.NewReplacer("rate: 100/s, duration: 6s", "rate: 50/s, duration: 5s",
			"route: {timeout: 2s}", "route: {timeout: 30s}", "timeout: 1s", "timeout: 20s").Replace(string(data))
		// The example's counts are for its own rate; these hold at any.
		doc, _, _ = strings.Cut(doc, "checks:")
		doc += "checks: [success_rate == 100%, ssl_handshake_errors == 0, ssl_handshakes > 0, cert_rotations >= 2]\n"
		sc := parse(doc)

		rec, err := live.Run(ctx, sc, nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())

		Expect(rec.Samples).To(HaveLen(250))
		var failedCalls []record.Call
		for _, c := range rec.Calls {
			if c.Status != 200 {
				failedCalls = append(failedCalls, c)
			}
		}
		for _, s := range rec.Samples {
			Expect(s.Status).To(Equal(200), "request %d: %s; failed calls %+v; sidecar stats %v", s.Seq, s.Error, failedCalls, rec.Edges[0].SidecarStats)
		}
		Expect(rec.MTLS).NotTo(BeNil())
		Expect(rec.MTLS.Workloads).To(Equal(3)) // backend, frontend, ingress-edge
		Expect(rec.MTLS.Rotations).To(BeNumerically(">=", 2))
		// Two calling identities (frontend's sidecars, the ingress proxy): more distinct client
		// certificates than that means the proxies presented re-issued ones, read from their files.
		Expect(rec.MTLS.ClientCertificates).To(BeNumerically(">", 2))
		var resets uint64
		for _, u := range rec.Upstreams {
			resets += u.Resets
			Expect(u.TLSHandshakes).To(BeNumerically(">", 0), "%s/%d served no TLS", u.Service, u.Instance)
			Expect(u.TLSHandshakeErrors).To(BeZero(), "%s/%d", u.Service, u.Instance)
		}
		Expect(resets).To(BeNumerically(">", 0), "the fault made the sidecars open new connections")
		// The ingress proxy's own cluster stats (Envoy's ssl.*), and each sidecar's.
		Expect(rec.ProxyStats).To(HaveKeyWithValue("cluster.frontend.ssl.handshake", BeNumerically(">", 0)))
		Expect(rec.Edges[0].SidecarStats).To(HaveKeyWithValue("ssl.handshake", BeNumerically(">", 0)))

		rep := reports.NewReport(rec, sc.CheckList())
		for _, v := range rep.Checks {
			Expect(v.Passed).To(BeTrue(), "%s: %s", v.Check, v.Observed)
		}
		Expect(rep.Outcomes.MTLS.Errors()).To(BeZero())
	}, SpecTimeout(time.Minute))

	It("gives the clusters a control plane pushes over xDS the same mutual TLS", Label("slow"), func(ctx SpecContext) {
		data, err := os.ReadFile("../../scenarios/examples/canary-weight-shift.yaml")
		Expect(err).NotTo(HaveOccurred())
		// Timeouts far above the example's (a handshake counts in the connect timeout, and a race-enabled
		// build on a shared machine can take longer than its 250 ms); the example's failure rates are its
		// own suite's business.
		doc := strings.NewReplacer("\nseed:", "\nmesh: {mtls: true}\nseed:", "connect_timeout: 0.25s", "connect_timeout: 10s",
			"timeout: 1s", "timeout: 20s").Replace(string(data))
		sc := parse(doc)
		Expect(sc.MTLSOn()).To(BeTrue())

		rec, err := live.Run(ctx, sc, nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())
		// A proxy whose configuration changes gets every cluster over xDS from the scenario's control
		// plane: the canary (0% until changes[0]) answered over TLS, so the pushed clusters carried the
		// UpstreamTlsContext (a plain cluster's requests would all fail their handshake).
		for _, u := range rec.Upstreams {
			Expect(u.Requests).To(BeNumerically(">", 0), "%s/%d", u.Service, u.Instance)
			Expect(u.TLSHandshakes).To(BeNumerically(">", 0), "%s/%d", u.Service, u.Instance)
			Expect(u.TLSHandshakeErrors).To(BeZero(), "%s/%d", u.Service, u.Instance)
		}
		var cs []checks.Check
		for _, expr := range []string{"changes_rejected == 1", "changes_unexpected == 0", "ssl_handshake_errors == 0", "status(5xx) < 300"} {
			c, err := checks.Parse(expr)
			Expect(err).NotTo(HaveOccurred())
			cs = append(cs, c)
		}
		for _, v := range reports.EvaluateRun(cs, rec) {
			Expect(v.Passed).To(BeTrue(), "%s: %s", v.Check, v.Observed)
		}
	}, SpecTimeout(time.Minute))
})
