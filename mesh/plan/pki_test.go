package plan_test

import (
	"crypto/tls"
	"io"
	"net/http"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/scenarios"
)

const mtlsScenario = `name: mtls
services:
  frontend: {instances: 1, calls: [backend]}
  backend: {instances: 1}
mesh: {mtls: true}
proxies:
  edge: {routes_to: frontend}
load: {target: edge, rate: 10/s, duration: 1s}
`

// An instance of a mutual-TLS mesh (issue #16) serves TLS to the callers its service allows only.
var _ = Describe("an instance under mesh.mtls", func() {
	var (
		sc   *scenarios.Scenario
		pki  *plan.PKI
		host *plan.Host
	)
	BeforeEach(func() {
		var err error
		sc, err = scenarios.Parse([]byte(mtlsScenario), "mtls.yaml")
		Expect(err).NotTo(HaveOccurred())
		p := plan.New(sc, nil)
		pki, err = p.NewPKI(GinkgoT().TempDir())
		Expect(err).NotTo(HaveOccurred())
		in, ok := p.Instance("backend", 0)
		Expect(ok).To(BeTrue())
		host, err = plan.StartHost(in, plan.HostConfig{Listen: "127.0.0.1:0", TLS: pki.ServerConfig("backend", sc.AllowedCallers("backend"))})
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(host.Close)
	})

	// clientAs is a TLS client configuration with workload's certificate ("" for none) that trusts the
	// run's CA and expects the backend.
	clientAs := func(k *plan.PKI, workload string) *tls.Config {
		GinkgoHelper()
		cfg := &tls.Config{RootCAs: pki.Pool(), ServerName: "backend", MinVersion: tls.VersionTLS12}
		if workload != "" {
			c, err := k.Certificate(workload)
			Expect(err).NotTo(HaveOccurred())
			cfg.Certificates = []tls.Certificate{*c}
		}
		return cfg
	}
	get := func(cfg *tls.Config, scheme string) (int, error) {
		tr := &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		resp, err := (&http.Client{Transport: tr}).Get(scheme + "://" + host.Addr() + "/")
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}

	It("answers a caller its service allows, presenting its SPIFFE identity, and counts the handshake", func() {
		Expect(get(clientAs(pki, "frontend"), "https")).To(Equal(200))
		conn, err := tls.Dial("tcp", host.Addr(), clientAs(pki, "frontend"))
		Expect(err).NotTo(HaveOccurred())
		leaf := conn.ConnectionState().PeerCertificates[0]
		Expect(conn.Close()).To(Succeed())
		Expect(leaf.URIs).To(HaveLen(1))
		Expect(leaf.URIs[0].String()).To(Equal("spiffe://meshproof.local/ns/default/sa/backend"))
		Expect(leaf.DNSNames).To(Equal([]string{"backend"}))
		Expect(host.Stats().TLSHandshakes).To(BeNumerically(">=", 1))
		Expect(host.Stats().TLSHandshakeErrors).To(BeZero())
	})

	It("refuses a plaintext client before any request, counting a failed handshake", func() {
		_, err := get(nil, "http")
		Expect(err).To(HaveOccurred())
		Expect(host.Stats().Requests).To(BeZero())
		Eventually(func() uint64 { return host.Stats().TLSHandshakeErrors }).Should(BeEquivalentTo(1))
	})

	It("refuses a client without a certificate", func() {
		_, err := get(clientAs(pki, ""), "https")
		Expect(err).To(HaveOccurred())
		Expect(host.Stats().Requests).To(BeZero())
		Eventually(func() uint64 { return host.Stats().TLSHandshakeErrors }).Should(BeEquivalentTo(1))
	})

	It("refuses a client of the mesh whose identity may not call the service", func() {
		// The ingress proxy routes to frontend only; backend's own identity does not call backend either.
		for _, wrong := range []string{"ingress-edge", "backend"} {
			_, err := get(clientAs(pki, wrong), "https")
			Expect(err).To(HaveOccurred(), wrong)
		}
		Expect(host.Stats().Requests).To(BeZero())
		Eventually(func() uint64 { return host.Stats().TLSHandshakeErrors }).Should(BeEquivalentTo(2))
	})

	It("refuses a client whose certificate another CA issued, even with an allowed name", func() {
		other, err := plan.NewPKI(GinkgoT().TempDir(), []string{"frontend"}, time.Hour)
		Expect(err).NotTo(HaveOccurred())
		_, err = get(clientAs(other, "frontend"), "https")
		Expect(err).To(HaveOccurred())
		Expect(host.Stats().Requests).To(BeZero())
	})

	It("serves the re-issued certificate from the next handshake after a rotation, the open connection kept", func() {
		tr := &http.Transport{TLSClientConfig: clientAs(pki, "frontend")}
		DeferCleanup(tr.CloseIdleConnections)
		client := &http.Client{Transport: tr}
		serial := func() string {
			GinkgoHelper()
			conn, err := tls.Dial("tcp", host.Addr(), clientAs(pki, "frontend"))
			Expect(err).NotTo(HaveOccurred())
			defer conn.Close()
			return conn.ConnectionState().PeerCertificates[0].SerialNumber.String()
		}
		resp, err := client.Get("https://" + host.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())
		before := serial()
		Expect(pki.Rotate()).To(Succeed())
		Expect(pki.Rotations()).To(Equal(1))
		Expect(serial()).NotTo(Equal(before))
		resp, err = client.Get("https://" + host.Addr() + "/") // the kept connection, handshaken before
		Expect(err).NotTo(HaveOccurred())
		Expect(resp.Body.Close()).To(Succeed())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(host.Stats().TLSHandshakeErrors).To(BeZero())
	})
})
