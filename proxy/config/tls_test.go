package config_test

import (
	"crypto/tls"
	"encoding/base64"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/testpki"
)

// tlsDoc is minimal with a listener transport_socket (downstream, a YAML flow mapping of the
// DownstreamTlsContext's fields) and a cluster transport_socket (upstream), each "" for none.
func tlsDoc(downstream, upstream string) string {
	doc := minimal
	if downstream != "" {
		doc = strings.Replace(doc, "    - filters:\n", "    - transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, "+downstream+"}}\n      filters:\n", 1)
	}
	if upstream != "" {
		doc = strings.Replace(doc, "  - name: backend\n    load_assignment:", "  - name: backend\n    transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, "+upstream+"}}\n    load_assignment:", 1)
	}
	return doc
}

const (
	dsPath = "static_resources.listeners[0].filter_chains[0].transport_socket.typed_config"
	usPath = "static_resources.clusters[0].transport_socket.typed_config"
)

// tlsErr matches an error with a position in the document, at path, whose message contains msg.
func tlsErr(path, msg string) types.GomegaMatcher {
	return SatisfyAll(HaveField("File", file), HaveField("Line", BeNumerically(">", 0)),
		HaveField("Path", path), HaveField("Msg", ContainSubstring(msg)))
}

var _ = Describe("TLS transport sockets", func() {
	var (
		dir   string
		leaf  *testpki.Leaf
		ca    *testpki.CA
		certs string // a tls_certificates list of the leaf's files
	)
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		Expect(os.WriteFile(p, b, 0o600)).To(Succeed())
		return p
	}
	BeforeEach(func() {
		dir = GinkgoT().TempDir()
		var err error
		ca, err = testpki.NewCA("test-ca")
		Expect(err).NotTo(HaveOccurred())
		leaf, err = ca.Issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}})
		Expect(err).NotTo(HaveOccurred())
		certs = "tls_certificates: [{certificate_chain: {filename: " + write("cert.pem", leaf.CertPEM) +
			"}, private_key: {filename: " + write("key.pem", leaf.KeyPEM) + "}}]"
	})

	parse := func(doc string) *config.Bootstrap {
		GinkgoHelper()
		b, _, err := config.ParseBootstrap([]byte(doc), file)
		Expect(err).NotTo(HaveOccurred())
		return b
	}

	It("takes a listener's certificate from files, with Envoy's server defaults", func() {
		b := parse(tlsDoc("common_tls_context: {"+certs+"}", ""))
		t := b.Listeners[0].TLS
		Expect(t).NotTo(BeNil())
		Expect(t.Certificates).To(HaveLen(1))
		Expect(t.Certificates[0].Chain.Filename).To(HaveSuffix("cert.pem"))
		Expect([]uint16{t.MinVersion, t.MaxVersion}).To(Equal([]uint16{tls.VersionTLS12, tls.VersionTLS13}))
		// Envoy's default server list (common.proto, v1.40.0): the six ECDHE AEAD suites, as the
		// client's. Regression: an older, 14-suite list with CBC and RSA key exchange suites.
		Expect(t.CipherSuites).To(ConsistOf(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384))
		Expect(t.Validation).To(BeNil())
		Expect(t.ALPN).To(BeNil())
		Expect(b.Clusters[0].TLS).To(BeNil())
	})

	It("takes an inline certificate, mTLS settings, versions, ciphers and ALPN", func() {
		b := parse(tlsDoc(`require_client_certificate: true, common_tls_context: {alpn_protocols: [h2, http/1.1],
            tls_params: {tls_minimum_protocol_version: TLSv1_3, cipher_suites: ["[ECDHE-ECDSA-AES128-GCM-SHA256|ECDHE-RSA-AES128-GCM-SHA256]", AES256-SHA]},
            tls_certificates: [{certificate_chain: {inline_string: "`+strings.ReplaceAll(string(leaf.CertPEM), "\n", `\n`)+`"},
              private_key: {inline_bytes: "`+b64(leaf.KeyPEM)+`"}}],
            validation_context: {trusted_ca: {filename: `+write("ca.pem", ca.CertPEM)+`},
              match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: "spiffe://mesh/"}}]}}`, ""))
		t := b.Listeners[0].TLS
		Expect(t.RequireClientCertificate).To(BeTrue())
		Expect(t.Certificates[0].Chain.Inline).To(Equal(leaf.CertPEM))
		Expect(t.Certificates[0].Key.Inline).To(Equal(leaf.KeyPEM))
		Expect([]uint16{t.MinVersion, t.MaxVersion}).To(Equal([]uint16{tls.VersionTLS13, tls.VersionTLS13}))
		Expect(t.CipherSuites).To(Equal([]uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_CBC_SHA}))
		Expect(t.ALPN).To(Equal([]string{"h2", "http/1.1"}))
		Expect(t.Validation.TrustedCA.Filename).To(HaveSuffix("ca.pem"))
		Expect(t.Validation.SANs).To(HaveLen(1))
		Expect(t.Validation.SANs[0].Type).To(Equal("URI"))
		Expect(t.Validation.SANs[0].Match.Matches("spiffe://mesh/client")).To(BeTrue())
		Expect(t.Validation.SANs[0].Match.Matches("spiffe://other/client")).To(BeFalse())
	})

	It("takes a cluster's SNI and client certificate, with Envoy's client defaults", func() {
		b := parse(tlsDoc("", "sni: backend.internal, common_tls_context: {"+certs+
			", validation_context: {trusted_ca: {filename: "+write("ca.pem", ca.CertPEM)+
			"}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: backend.internal}}]}}"))
		t := b.Clusters[0].TLS
		Expect(t.SNI).To(Equal("backend.internal"))
		Expect(t.Certificates).To(HaveLen(1))
		Expect([]uint16{t.MinVersion, t.MaxVersion}).To(Equal([]uint16{tls.VersionTLS12, tls.VersionTLS12}))
		Expect(t.CipherSuites).To(ConsistOf(tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
			tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384)) // Envoy's default client list
		Expect(t.Validation.TrustedCA.Filename).To(HaveSuffix("ca.pem"))
		Expect(t.Validation.SANs).To(HaveLen(1))
	})

	DescribeTable("rejects, by field path",
		func(downstream, upstream string, want types.GomegaMatcher) {
			doc := tlsDoc(strings.ReplaceAll(downstream, "CERTS", certs), strings.ReplaceAll(upstream, "CERTS", certs))
			doc = strings.ReplaceAll(doc, "DIR", dir)
			_, _, err := config.ParseBootstrap([]byte(doc), file)
			Expect(config.Errors(err)).To(ContainElement(want))
		},
		Entry("a missing certificate file",
			"common_tls_context: {tls_certificates: [{certificate_chain: {filename: DIR/missing.pem}, private_key: {filename: DIR/missing-key.pem}}]}", "",
			tlsErr(dsPath+".common_tls_context.tls_certificates[0].certificate_chain", "cannot read: open")),
		Entry("a certificate that is not PEM",
			"common_tls_context: {tls_certificates: [{certificate_chain: {inline_string: not a certificate}, private_key: {inline_string: nor a key}}]}", "",
			tlsErr(dsPath+".common_tls_context.tls_certificates[0].certificate_chain", "no PEM CERTIFICATE block found")),
		Entry("a key that is not the certificate's",
			"common_tls_context: {tls_certificates: [{certificate_chain: {filename: DIR/cert.pem}, private_key: {filename: DIR/cert.pem}}]}", "",
			tlsErr(dsPath+".common_tls_context.tls_certificates[0].private_key", "not the certificate's PEM private key")),
		Entry("a listener without a certificate",
			"common_tls_context: {}", "",
			tlsErr(dsPath+".common_tls_context.tls_certificates", "required")),
		Entry("an unsupported field",
			"ocsp_staple_policy: STRICT_STAPLING, common_tls_context: {CERTS}", "",
			tlsErr(dsPath+".ocsp_staple_policy", "field not supported by meshproof")),
		Entry("a protocol other than h2 and http/1.1 in ALPN",
			"common_tls_context: {alpn_protocols: [h3, http/1.1], CERTS}", "",
			tlsErr(dsPath+".common_tls_context.alpn_protocols[0]", `protocol "h3" is not supported: only "h2" and "http/1.1" may be offered`)),
		Entry("h3 in an upstream's ALPN",
			"", "common_tls_context: {alpn_protocols: [h2, h3]}",
			tlsErr(usPath+".common_tls_context.alpn_protocols[1]", `protocol "h3" is not supported: only "h2" and "http/1.1" may be offered`)),
		Entry("a cipher Go does not implement",
			"common_tls_context: {tls_params: {cipher_suites: [ECDHE-PSK-CHACHA20-POLY1305]}, CERTS}", "",
			tlsErr(dsPath+".common_tls_context.tls_params.cipher_suites[0]", `cipher suite "ECDHE-PSK-CHACHA20-POLY1305" is not supported; supported: AES128-GCM-SHA256`)),
		Entry("a minimum version above the maximum",
			"common_tls_context: {tls_params: {tls_minimum_protocol_version: TLSv1_3, tls_maximum_protocol_version: TLSv1_2}, CERTS}", "",
			tlsErr(dsPath+".common_tls_context.tls_params.tls_minimum_protocol_version", "TLS 1.3 is above the maximum, TLS 1.2")),
		Entry("a SAN type not supported",
			"common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: OTHER_NAME, matcher: {exact: x}}]}, CERTS}", "",
			tlsErr(dsPath+".common_tls_context.validation_context.match_typed_subject_alt_names[0].san_type", "OTHER_NAME")),
		Entry("a trusted CA that is not PEM",
			"", "common_tls_context: {validation_context: {trusted_ca: {inline_string: garbage}}}",
			tlsErr(usPath+".common_tls_context.validation_context.trusted_ca", "no PEM CERTIFICATE block found")),
		// Regression: SAN matchers without trusted_ca loaded, and any self-made certificate with the
		// SAN passed.
		Entry("SAN matchers without trusted_ca on a cluster",
			"", "common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: backend.internal}}]}}",
			tlsErr(usPath+".common_tls_context.validation_context.match_typed_subject_alt_names", "without trusted_ca is insecure and not allowed")),
		Entry("SAN matchers without trusted_ca on a listener",
			"common_tls_context: {validation_context: {match_typed_subject_alt_names: [{san_type: URI, matcher: {prefix: \"spiffe://mesh/\"}}]}, CERTS}", "",
			tlsErr(dsPath+".common_tls_context.validation_context.match_typed_subject_alt_names", "without trusted_ca is insecure and not allowed")),
		Entry("two client certificates",
			"", "common_tls_context: {tls_certificates: [{certificate_chain: {filename: DIR/cert.pem}, private_key: {filename: DIR/key.pem}}, {certificate_chain: {filename: DIR/cert.pem}, private_key: {filename: DIR/key.pem}}]}",
			tlsErr(usPath+".common_tls_context.tls_certificates", "at most one client certificate, got 2")),
	)

	It("rejects an UpstreamTlsContext on a listener", func() {
		doc := strings.Replace(tlsDoc("common_tls_context: {"+certs+"}", ""), "DownstreamTlsContext", "UpstreamTlsContext", 1)
		_, _, err := config.ParseBootstrap([]byte(doc), file)
		Expect(config.Errors(err)).To(ContainElement(tlsErr("static_resources.listeners[0].filter_chains[0].transport_socket.typed_config",
			"want a typed_config of type envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, got envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext")))
	})
})

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }
