package faults_test

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"io"
	"math/big"
	"net"
	"net/http"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

// selfSigned is a throw-away server certificate for 127.0.0.1, and a pool trusting it.
func selfSigned() (tls.Certificate, *x509.CertPool) {
	GinkgoHelper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	Expect(err).NotTo(HaveOccurred())
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	Expect(err).NotTo(HaveOccurred())
	leaf, err := x509.ParseCertificate(der)
	Expect(err).NotTo(HaveOccurred())
	pool := x509.NewCertPool()
	pool.AddCert(leaf)
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, pool
}

// An upstream serving TLS (UpstreamConfig.TLS, issue #16: mesh.mtls).
var _ = Describe("Upstream over TLS", func() {
	var (
		u      *faults.Upstream
		client *http.Client
	)
	start := func(rules ...faults.Fault) {
		GinkgoHelper()
		cert, pool := selfSigned()
		var err error
		u, err = faults.NewUpstream(faults.UpstreamConfig{Service: "backend", Faults: rules,
			TLS: &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
		DeferCleanup(tr.CloseIdleConnections)
		client = &http.Client{Transport: tr}
	}

	It("answers HTTP/1.1 inside TLS and counts the handshake", func() {
		start()
		resp, err := client.Get("https://" + u.Addr() + "/")
		Expect(err).NotTo(HaveOccurred())
		_, _ = io.Copy(io.Discard, resp.Body)
		Expect(resp.Body.Close()).To(Succeed())
		Expect(resp.StatusCode).To(Equal(200))
		Expect(resp.Header.Get(faults.HeaderInstance)).To(Equal("backend/0"))
		Expect(u.Stats()).To(And(HaveField("TLSHandshakes", BeEquivalentTo(1)), HaveField("TLSHandshakeErrors", BeZero())))
	})

	It("still resets the TCP connection for a reset fault", func() {
		start(faults.Fault{Reset: &faults.Reset{Percent: 100}})
		_, err := client.Get("https://" + u.Addr() + "/")
		Expect(err).To(Or(MatchError(syscall.ECONNRESET), MatchError(ContainSubstring("connection reset by peer"))))
		Expect(u.Stats().Resets).To(BeEquivalentTo(1))
	})

	It("fails a plaintext client's handshake before any request, counting it", func() {
		start()
		_, err := (&http.Client{Transport: &http.Transport{DisableKeepAlives: true}}).Get("http://" + u.Addr() + "/")
		Expect(err).To(HaveOccurred())
		Eventually(func() uint64 { return u.Stats().TLSHandshakeErrors }).Should(BeEquivalentTo(1))
		Expect(u.Stats().Requests).To(BeZero())
	})

	It("does not count a client that resets the connection mid-handshake (as Envoy leaves system errors out of ssl.connection_error)", func() {
		start()
		conn, err := net.Dial("tcp", u.Addr())
		Expect(err).NotTo(HaveOccurred())
		// The first bytes of a TLS record (a handshake record's header), then a reset.
		_, err = conn.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x80})
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.(*net.TCPConn).SetLinger(0)).To(Succeed())
		Expect(conn.Close()).To(Succeed())
		Eventually(func() uint64 { return u.Stats().Connections }).Should(BeEquivalentTo(1))
		Consistently(func() uint64 { return u.Stats().TLSHandshakeErrors }, 200*time.Millisecond).Should(BeZero())
	})

	It("does not count a client that closes before sending a byte", func() {
		start()
		conn, err := net.Dial("tcp", u.Addr())
		Expect(err).NotTo(HaveOccurred())
		Expect(conn.Close()).To(Succeed())
		Eventually(func() uint64 { return u.Stats().Connections }).Should(BeEquivalentTo(1))
		Consistently(func() uint64 { return u.Stats().TLSHandshakeErrors }, 200*time.Millisecond).Should(BeZero())
	})
})
