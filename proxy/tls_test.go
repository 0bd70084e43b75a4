package proxy_test

import (
	"crypto/tls"
	"crypto/x509"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/testpki"
	"github.com/meshproof/meshproof/proxy/policy"
)

// tlsBootstrap is a bootstrap whose listener's transport_socket is a DownstreamTlsContext of the
// fields downstream and whose cluster's is an UpstreamTlsContext of the fields upstream ("" for
// none): the TLS contexts go through the configuration's decoder and converter as a user's would.
func tlsContexts(downstream, upstream string) (listener, cluster *config.TLS) {
	GinkgoHelper()
	doc := `static_resources:
  listeners:
  - name: edge
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
          route_config:
            virtual_hosts:
            - {name: all, domains: ["*"], routes: [{match: {prefix: /}, route: {cluster: backend}}]}
  clusters:
  - name: backend
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8080}}}
`
	if downstream != "" {
		doc = strings.Replace(doc, "    - filters:\n", "    - transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext, "+downstream+"}}\n      filters:\n", 1)
	}
	if upstream != "" {
		doc = strings.Replace(doc, "  - name: backend\n", "  - name: backend\n    transport_socket: {name: envoy.transport_sockets.tls, typed_config: {\"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext, "+upstream+"}}\n", 1)
	}
	b, _, err := config.ParseBootstrap([]byte(doc), "tls.yaml")
	Expect(err).NotTo(HaveOccurred())
	return b.Listeners[0].TLS, b.Clusters[0].TLS
}

// pkiFiles is a CA and the files of certificates it issued, in a temporary directory.
type pkiFiles struct {
	ca  *testpki.CA
	dir string
}

func newPKI() *pkiFiles {
	GinkgoHelper()
	ca, err := testpki.NewCA("mesh-ca")
	Expect(err).NotTo(HaveOccurred())
	p := &pkiFiles{ca: ca, dir: GinkgoT().TempDir()}
	p.write("ca.pem", ca.CertPEM)
	return p
}

func (p *pkiFiles) path(name string) string { return filepath.Join(p.dir, name) }

func (p *pkiFiles) write(name string, b []byte) {
	GinkgoHelper()
	Expect(os.WriteFile(p.path(name), b, 0o600)).To(Succeed())
}

func (p *pkiFiles) issue(cn string, sans testpki.SANs) *testpki.Leaf {
	GinkgoHelper()
	l, err := p.ca.Issue(cn, sans)
	Expect(err).NotTo(HaveOccurred())
	return l
}

// certs is a tls_certificates list of the files name.pem and name-key.pem holding leaf.
func (p *pkiFiles) certs(name string, leaf *testpki.Leaf) string {
	GinkgoHelper()
	p.write(name+".pem", leaf.CertPEM)
	p.write(name+"-key.pem", leaf.KeyPEM)
	return "tls_certificates: [{certificate_chain: {filename: " + p.path(name+".pem") + "}, private_key: {filename: " + p.path(name+"-key.pem") + "}}]"
}

// httpsClient trusts ca (nil: none), presents certs, and dials a new connection per request.
func httpsClient(ca *x509.CertPool, cfg func(*tls.Config), certs ...tls.Certificate) *http.Client {
	c := &tls.Config{RootCAs: ca, ServerName: "proxy.internal", Certificates: certs}
	if cfg != nil {
		cfg(c)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: c, DisableKeepAlives: true}}
}

// getVia GETs url with c and returns the status and body, or the error.
func getVia(c *http.Client, url string) (int, string, *tls.ConnectionState, error) {
	resp, err := c.Get(url)
	if err != nil {
		return 0, "", nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.TLS, err
}

const sslListener = "listener.127.0.0.1_0.ssl."

var _ = Describe("TLS", func() {
	var pki *pkiFiles
	BeforeEach(func() { pki = newPKI() })

	// startTLS starts a proxy whose listener has the DownstreamTlsContext fields downstream (before
	// the backend's cluster, whose UpstreamTlsContext is upstream) and returns it with its https URL.
	startTLS := func(downstream, upstream string, backend string, opts proxy.Options) (*proxy.Server, string) {
		GinkgoHelper()
		ltls, ctls := tlsContexts(downstream, upstream)
		cl := cluster("backend", backend)
		cl.TLS = ctls
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cl}, opts: opts,
			listener: func(l *config.Listener) { l.TLS = ltls }})
		if ltls != nil {
			url = strings.Replace(url, "http://", "https://", 1)
		}
		return srv, url
	}

	Describe("a listener (DownstreamTlsContext)", func() {
		var serverCerts string
		BeforeEach(func() {
			serverCerts = pki.certs("server", pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}}))
		})

		It("completes the handshake and proxies the request, counting it in Envoy's ssl stats", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+"}", "", backend.addr(), proxy.Options{})
			code, body, st, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
			Expect(err).NotTo(HaveOccurred())
			Expect([]any{code, body}).To(Equal([]any{200, "hello"}))
			Expect(st.Version).To(Equal(uint16(tls.VersionTLS13))) // the server's default maximum
			Expect(stat(srv, sslListener+"handshake")).To(Equal(uint64(1)))
			Expect(stat(srv, sslListener+"no_certificate")).To(Equal(uint64(1)))
			Expect(stat(srv, sslListener+"versions.TLSv1.3")).To(Equal(uint64(1)))
			Expect(stat(srv, sslListener+"connection_error")).To(BeZero())
		})

		It("counts a clear-text client as a connection error and answers it nothing", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+"}", "", backend.addr(), proxy.Options{})
			_, _, _, err := getVia(client, strings.Replace(url, "https://", "http://", 1)+"/")
			Expect(err).To(HaveOccurred())
			Eventually(func() uint64 { return stat(srv, sslListener+"connection_error") }).Should(Equal(uint64(1)))
			Expect(backend.requests.Load()).To(BeZero())
		})

		// Regression: a client that connected and closed (or reset) without a byte was counted as a
		// TLS connection error.
		It("counts no connection error for a client that closes before its hello", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+"}", "", backend.addr(), proxy.Options{})
			addr := strings.TrimPrefix(url, "https://")
			closed, err := net.Dial("tcp", addr)
			Expect(err).NotTo(HaveOccurred())
			Expect(closed.Close()).To(Succeed())
			reset, err := net.Dial("tcp", addr)
			Expect(err).NotTo(HaveOccurred())
			Expect(reset.(*net.TCPConn).SetLinger(0)).To(Succeed())
			Expect(reset.Close()).To(Succeed())
			Eventually(func() []uint64 {
				return []uint64{stat(srv, "http.ingress.downstream_cx_total"), stat(srv, "http.ingress.downstream_cx_active")}
			}).Should(Equal([]uint64{2, 0}), "both connections accepted, read from and closed")
			Expect(stat(srv, sslListener+"connection_error")).To(BeZero())
			Expect(stat(srv, sslListener+"handshake")).To(BeZero())
			_, _, _, err = getVia(client, strings.Replace(url, "https://", "http://", 1)+"/") // a real TLS error still counts
			Expect(err).To(HaveOccurred())
			Eventually(func() uint64 { return stat(srv, sslListener+"connection_error") }).Should(Equal(uint64(1)))
		})

		// Regression: crypto/tls refused a client whose ALPN protocols the listener had none of; Envoy
		// goes on without ALPN.
		It("completes the handshake without ALPN when the client offers none of alpn_protocols", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {alpn_protocols: [http/1.1], "+serverCerts+"}", "", backend.addr(), proxy.Options{})
			addr := strings.TrimPrefix(url, "https://")
			conn, err := tls.Dial("tcp", addr, &tls.Config{RootCAs: pki.ca.Pool(), ServerName: "proxy.internal", NextProtos: []string{"h2"}})
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(conn.Close)
			Expect(conn.ConnectionState().NegotiatedProtocol).To(BeEmpty())
			_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: proxy.internal\r\nConnection: close\r\n\r\n")
			Expect(err).NotTo(HaveOccurred())
			reply, err := io.ReadAll(conn)
			Expect(err).NotTo(HaveOccurred())
			Expect(string(reply)).To(HavePrefix("HTTP/1.1 200 OK\r\n"))
			_, _, st, err := getVia(httpsClient(pki.ca.Pool(), func(c *tls.Config) { c.NextProtos = []string{"h2", "http/1.1"} }), url+"/")
			Expect(err).NotTo(HaveOccurred())
			Expect(st.NegotiatedProtocol).To(Equal("http/1.1"))
			Expect(stat(srv, sslListener+"handshake")).To(Equal(uint64(2)))
		})

		It("holds clients to tls_params' version bounds", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_2}, "+serverCerts+"}", "",
				backend.addr(), proxy.Options{})
			_, _, _, err := getVia(httpsClient(pki.ca.Pool(), func(c *tls.Config) { c.MinVersion = tls.VersionTLS13 }), url+"/")
			Expect(err).To(MatchError(ContainSubstring("protocol version")))
			_, _, _, err = getVia(httpsClient(pki.ca.Pool(), func(c *tls.Config) {
				c.MinVersion, c.MaxVersion = tls.VersionTLS10, tls.VersionTLS11 // below the default minimum, TLS 1.2
			}), url+"/")
			Expect(err).To(HaveOccurred())
			code, _, st, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(200))
			Expect(st.Version).To(Equal(uint16(tls.VersionTLS12)))
			Expect(tls.CipherSuiteName(st.CipherSuite)).To(Equal("TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256"))
			Eventually(func() uint64 { return stat(srv, sslListener+"connection_error") }).Should(Equal(uint64(2)))
			Expect(stat(srv, sslListener+"versions.TLSv1.2")).To(Equal(uint64(1)))
			Expect(stat(srv, sslListener+"ciphers.ECDHE-ECDSA-AES128-GCM-SHA256")).To(Equal(uint64(1)))
		})

		// Regression: the default server list was an older, 14-suite one that let in CBC suites.
		It("refuses a TLS 1.2 client offering only CBC suites, by default", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+"}", "", backend.addr(), proxy.Options{})
			_, _, _, err := getVia(httpsClient(pki.ca.Pool(), func(c *tls.Config) {
				c.MaxVersion = tls.VersionTLS12
				c.CipherSuites = []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA, tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA}
			}), url+"/")
			Expect(err).To(MatchError(ContainSubstring("handshake failure")))
			Eventually(func() uint64 { return stat(srv, sslListener+"connection_error") }).Should(Equal(uint64(1)))
			Expect(backend.requests.Load()).To(BeZero())
		})

		// askedFor is a client presenting leaf that records the CAs the server's certificate request
		// named, if it sent one.
		askedFor := func(leaf *testpki.Leaf, asked *[][]byte, requested *bool) *http.Client {
			cert := leaf.TLS()
			return httpsClient(pki.ca.Pool(), func(c *tls.Config) {
				c.GetClientCertificate = func(r *tls.CertificateRequestInfo) (*tls.Certificate, error) {
					*requested, *asked = true, r.AcceptableCAs
					return &cert, nil
				}
			})
		}

		// expectRogueClientRefused sends a request with a certificate (with sans) that another CA
		// issued — sent although the certificate request names the mesh's CA only (Go's client would
		// send none) — and expects the listener to refuse it: fail_verify_error, no handshake.
		expectRogueClientRefused := func(srv *proxy.Server, url string, sans testpki.SANs) {
			GinkgoHelper()
			rogue, err := testpki.NewCA("rogue")
			Expect(err).NotTo(HaveOccurred())
			forged, err := rogue.Issue("frontend", sans)
			Expect(err).NotTo(HaveOccurred())
			var (
				asked     [][]byte
				requested bool
			)
			_, _, _, err = getVia(askedFor(forged, &asked, &requested), url+"/")
			Expect(err).To(HaveOccurred())
			Expect(requested).To(BeTrue())
			Eventually(func() uint64 { return stat(srv, sslListener+"fail_verify_error") }).Should(Equal(uint64(1)))
			Expect(stat(srv, sslListener+"handshake")).To(BeZero())
		}

		// Regression: a validation_context with neither trusted_ca nor SAN matchers asked for a client
		// certificate, where Envoy (SSL_VERIFY_NONE) asks for none.
		It("asks for no client certificate when the validation_context has neither trusted_ca nor SANs", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+", validation_context: {}}", "", backend.addr(), proxy.Options{})
			var (
				asked     [][]byte
				requested bool
			)
			code, _, _, err := getVia(askedFor(pki.issue("frontend", testpki.SANs{}), &asked, &requested), url+"/")
			Expect(err).NotTo(HaveOccurred())
			Expect(code).To(Equal(200))
			Expect(requested).To(BeFalse())
			Expect(stat(srv, sslListener+"no_certificate")).To(Equal(uint64(1)))
		})

		// Regression: the certificate request named no CA, where Envoy names trusted_ca's.
		Context("with a trusted_ca only (an optional client certificate)", func() {
			var (
				srv *proxy.Server
				url string
			)
			BeforeEach(func() {
				backend := newUpstream(ok)
				srv, url = startTLS("common_tls_context: {"+serverCerts+", validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+"}}}", "",
					backend.addr(), proxy.Options{})
			})

			It("asks for a certificate naming trusted_ca's CA, and takes a trusted one", func() {
				var (
					asked     [][]byte
					requested bool
				)
				code, _, _, err := getVia(askedFor(pki.issue("frontend", testpki.SANs{}), &asked, &requested), url+"/")
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(200))
				Expect(requested).To(BeTrue())
				Expect(asked).To(Equal([][]byte{pki.ca.Cert.RawSubject}))
				Expect(stat(srv, sslListener+"handshake")).To(Equal(uint64(1)))
				Expect(stat(srv, sslListener+"no_certificate")).To(BeZero())
			})

			It("lets in a client without a certificate", func() {
				code, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(200))
				Expect(stat(srv, sslListener+"no_certificate")).To(Equal(uint64(1)))
			})

			It("verifies a certificate that is sent: another CA's is refused (fail_verify_error)", func() {
				expectRogueClientRefused(srv, url, testpki.SANs{})
			})
		})

		// SAN matchers alone make the certificate required, as in Envoy (verify_mode_validation_context).
		It("refuses a client without a certificate when SAN matchers are set, without require_client_certificate", func() {
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+serverCerts+", validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
				"}, match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: \"spiffe://mesh/frontend\"}}]}}", "", backend.addr(), proxy.Options{})
			_, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
			Expect(err).To(HaveOccurred())
			Eventually(func() uint64 { return stat(srv, sslListener+"fail_verify_no_cert") }).Should(Equal(uint64(1)))
			Expect(backend.requests.Load()).To(BeZero())
		})

		Context("with require_client_certificate and a validation_context (mTLS)", func() {
			var (
				srv *proxy.Server
				url string
			)
			BeforeEach(func() {
				backend := newUpstream(ok)
				srv, url = startTLS("require_client_certificate: true, common_tls_context: {"+serverCerts+
					", validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
					"}, match_typed_subject_alt_names: [{san_type: URI, matcher: {exact: \"spiffe://mesh/frontend\"}}]}}", "",
					backend.addr(), proxy.Options{})
			})

			It("lets in a client whose certificate is trusted and has the SAN", func() {
				frontend := pki.issue("frontend", testpki.SANs{URIs: []string{"spiffe://mesh/frontend"}})
				code, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil, frontend.TLS()), url+"/")
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(200))
				Expect(stat(srv, sslListener+"handshake")).To(Equal(uint64(1)))
				Expect(stat(srv, sslListener+"no_certificate")).To(BeZero())
			})

			It("refuses a client without a certificate (fail_verify_no_cert)", func() {
				_, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
				Expect(err).To(HaveOccurred())
				Eventually(func() uint64 { return stat(srv, sslListener+"fail_verify_no_cert") }).Should(Equal(uint64(1)))
				Expect(stat(srv, sslListener+"handshake")).To(BeZero())
			})

			It("refuses a client whose certificate has another SAN (fail_verify_san)", func() {
				other := pki.issue("other", testpki.SANs{URIs: []string{"spiffe://mesh/other"}})
				_, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil, other.TLS()), url+"/")
				Expect(err).To(HaveOccurred())
				Eventually(func() uint64 { return stat(srv, sslListener+"fail_verify_san") }).Should(Equal(uint64(1)))
				Expect(stat(srv, sslListener+"handshake")).To(BeZero())
			})

			// Regression: any extended key usage passed, so a server-only certificate of the CA
			// authenticated a client.
			It("refuses a client certificate issued for serverAuth only, takes one for clientAuth only", func() {
				serverOnly, err := pki.ca.Issue("frontend", testpki.SANs{URIs: []string{"spiffe://mesh/frontend"}},
					testpki.OnlyUsage(x509.ExtKeyUsageServerAuth))
				Expect(err).NotTo(HaveOccurred())
				_, _, _, err = getVia(httpsClient(pki.ca.Pool(), nil, serverOnly.TLS()), url+"/")
				Expect(err).To(HaveOccurred())
				Eventually(func() uint64 { return stat(srv, sslListener+"fail_verify_error") }).Should(Equal(uint64(1)))
				clientOnly, err := pki.ca.Issue("frontend", testpki.SANs{URIs: []string{"spiffe://mesh/frontend"}},
					testpki.OnlyUsage(x509.ExtKeyUsageClientAuth))
				Expect(err).NotTo(HaveOccurred())
				code, _, _, err := getVia(httpsClient(pki.ca.Pool(), nil, clientOnly.TLS()), url+"/")
				Expect(err).NotTo(HaveOccurred())
				Expect(code).To(Equal(200))
				Expect(stat(srv, sslListener+"handshake")).To(Equal(uint64(1)))
			})

			It("refuses a client whose certificate another CA issued (fail_verify_error)", func() {
				expectRogueClientRefused(srv, url, testpki.SANs{URIs: []string{"spiffe://mesh/frontend"}})
			})
		})
	})

	Describe("a cluster (UpstreamTlsContext)", func() {
		var (
			backend *httptest.Server
			sni     atomic.Value // the server name the backend's last client hello asked for
			peer    atomic.Value // the common name of the backend's last client certificate
		)
		// startBackend serves "secure" over TLS with leaf, asking for a client certificate of the CA
		// when mtls; adjust, if any, sets up its server before it starts.
		startBackend := func(leaf *testpki.Leaf, mtls bool, adjust ...func(*http.Server)) {
			backend = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if len(r.TLS.PeerCertificates) > 0 {
					peer.Store(r.TLS.PeerCertificates[0].Subject.CommonName)
				}
				io.WriteString(w, "secure")
			}))
			backend.TLS = &tls.Config{Certificates: []tls.Certificate{leaf.TLS()},
				GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) { sni.Store(h.ServerName); return nil, nil }}
			backend.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshakes refused on purpose
			if mtls {
				backend.TLS.ClientAuth, backend.TLS.ClientCAs = tls.RequireAndVerifyClientCert, pki.ca.Pool()
			}
			for _, f := range adjust {
				f(backend.Config)
			}
			backend.StartTLS()
			DeferCleanup(backend.Close)
		}
		addr := func() string { return backend.Listener.Addr().String() }

		It("sends the SNI and verifies the server's chain and SAN", func() {
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), false)
			srv, url := startTLS("", "sni: backend.internal, common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
				"}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: backend.internal}}]}}", addr(), proxy.Options{})
			code, _, body := get(url + "/")
			Expect([]any{code, body}).To(Equal([]any{200, "secure"}))
			Expect(sni.Load()).To(Equal("backend.internal"))
			Expect(stat(srv, "cluster.backend.ssl.handshake")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.ssl.versions.TLSv1.2")).To(Equal(uint64(1))) // a client's default maximum
		})

		It("fails the request 503 UF when the server's SAN does not match, as a connect failure", func() {
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), false)
			ltls, ctls := tlsContexts("", "sni: backend.internal, common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
				"}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: payments.internal}}]}}")
			Expect(ltls).To(BeNil())
			cl := cluster("backend", addr())
			cl.TLS = ctls
			srv, url, m := logged(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cl}},
				textLog("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"))
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(HavePrefix("upstream connect error or disconnect/reset before headers. reset reason: remote connection failure, transport failure reason: TLS_error:"))
			Expect(flushed(srv, m)).To(ConsistOf(HavePrefix("503 UF upstream_reset_before_response_started{remote_connection_failure|TLS_error:")))
			Expect(stat(srv, "cluster.backend.ssl.fail_verify_san")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.ssl.handshake")).To(BeZero())
			Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(Equal(uint64(1)))
		})

		// Regression: a handshake cut by connect_timeout was a TLS error ("TLS_error:|… i/o timeout"),
		// counted in ssl.connection_error and not in upstream_cx_connect_timeout.
		It("counts a handshake past connect_timeout as a connect timeout, as Envoy's connect timer", func() {
			ln, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never answers the client hello
			Expect(err).NotTo(HaveOccurred())
			DeferCleanup(ln.Close)
			go func() {
				var held []net.Conn
				defer func() {
					for _, c := range held {
						c.Close()
					}
				}()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					held = append(held, c)
				}
			}()
			_, ctls := tlsContexts("", "common_tls_context: {}")
			cl := cluster("backend", ln.Addr().String())
			cl.TLS = ctls
			cl.ConnectTimeout = 100 * time.Millisecond // a socket deadline: the real clock
			srv, url, m := logged(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cl}},
				textLog("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"))
			code, _, body := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(body).To(Equal("upstream connect error or disconnect/reset before headers. reset reason: connection timeout"))
			Expect(flushed(srv, m)).To(ConsistOf("503 UF upstream_reset_before_response_started{connection_timeout}"))
			Expect(stat(srv, "cluster.backend.upstream_cx_connect_timeout")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.upstream_cx_connect_fail")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.ssl.connection_error")).To(BeZero())
		})

		It("refuses a server certificate another CA issued (fail_verify_error)", func() {
			rogue, err := testpki.NewCA("rogue")
			Expect(err).NotTo(HaveOccurred())
			leaf, err := rogue.Issue("backend", testpki.SANs{DNS: []string{"backend.internal"}})
			Expect(err).NotTo(HaveOccurred())
			startBackend(leaf, false)
			srv, url := startTLS("", "common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+"}}}", addr(), proxy.Options{})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(stat(srv, "cluster.backend.ssl.fail_verify_error")).To(Equal(uint64(1)))
		})

		// Regression: any extended key usage passed, so a client-only certificate of the CA
		// authenticated a server.
		It("refuses a server certificate issued for clientAuth only (fail_verify_error)", func() {
			leaf, err := pki.ca.Issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}, testpki.OnlyUsage(x509.ExtKeyUsageClientAuth))
			Expect(err).NotTo(HaveOccurred())
			startBackend(leaf, false)
			srv, url := startTLS("", "common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+"}}}", addr(), proxy.Options{})
			code, _, _ := get(url + "/")
			Expect(code).To(Equal(503))
			Expect(stat(srv, "cluster.backend.ssl.fail_verify_error")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.ssl.handshake")).To(BeZero())
		})

		It("does not verify the server without a validation_context, as Envoy", func() {
			rogue, err := testpki.NewCA("rogue")
			Expect(err).NotTo(HaveOccurred())
			leaf, err := rogue.Issue("anything", testpki.SANs{DNS: []string{"elsewhere.example"}})
			Expect(err).NotTo(HaveOccurred())
			startBackend(leaf, false)
			srv, url := startTLS("", "common_tls_context: {}", addr(), proxy.Options{})
			code, _, body := get(url + "/")
			Expect([]any{code, body}).To(Equal([]any{200, "secure"}))
			Expect(sni.Load()).To(Equal("")) // no sni configured: none sent
			Expect(stat(srv, "cluster.backend.ssl.handshake")).To(Equal(uint64(1)))
		})

		// Regression: the pool did not probe idle TLS connections, so the request that took one the
		// server had closed while idle failed 503 "connection termination".
		It("does not reuse an idle connection the server closed", func() {
			closed := make(chan struct{}, 10)
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), false, func(s *http.Server) {
				s.IdleTimeout = 20 * time.Millisecond
				s.ConnState = func(_ net.Conn, st http.ConnState) {
					if st == http.StateClosed {
						closed <- struct{}{}
					}
				}
			})
			srv, url := startTLS("", "common_tls_context: {}", addr(), proxy.Options{})
			for i := range 3 {
				code, _, body := get(url + "/")
				Expect([]any{i, code, body}).To(Equal([]any{i, 200, "secure"}))
				Eventually(closed).WithTimeout(5 * time.Second).Should(Receive()) // the server closed it, idle
			}
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(Equal(uint64(3)))
		})

		It("keeps reusing an idle TLS 1.3 connection the server left open", func() {
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), false)
			srv, url := startTLS("", "common_tls_context: {tls_params: {tls_maximum_protocol_version: TLSv1_3}}", addr(), proxy.Options{})
			for i := range 5 {
				code, _, body := get(url + "/")
				Expect([]any{i, code, body}).To(Equal([]any{i, 200, "secure"}))
			}
			Expect(stat(srv, "cluster.backend.upstream_cx_total")).To(Equal(uint64(1)))
			Expect(stat(srv, "cluster.backend.ssl.versions.TLSv1.3")).To(Equal(uint64(1)))
		})

		// Regression: the health checker dialled clear text to a TLS host, whose HTTPS server answered
		// 400, so the host was failed.
		It("health-checks a TLS host over TLS, on the cluster's transport socket", func() {
			var checks atomic.Int64
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), true, func(s *http.Server) {
				next := s.Handler
				s.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if r.URL.Path == "/healthz" && r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
						checks.Add(1)
					}
					next.ServeHTTP(w, r)
				})
			})
			certs := pki.certs("client", pki.issue("edge-proxy", testpki.SANs{URIs: []string{"spiffe://mesh/edge"}}))
			_, ctls := tlsContexts("", "sni: backend.internal, common_tls_context: {"+certs+", validation_context: {trusted_ca: {filename: "+
				pki.path("ca.pem")+"}, match_typed_subject_alt_names: [{san_type: DNS, matcher: {exact: backend.internal}}]}}")
			cl := cluster("backend", addr())
			cl.TLS = ctls
			cl.HealthChecks = []policy.HealthCheckConfig{{Timeout: 5 * time.Second, Interval: time.Second, NoTrafficInterval: time.Second,
				UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
			clk := fakeClock()
			srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cl}, opts: proxy.Options{Clock: clk}})
			until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.health_check.success") >= 2 })
			Expect(stat(srv, "cluster.backend.health_check.failure")).To(BeZero())
			Expect(stat(srv, "cluster.backend.health_check.healthy")).To(Equal(uint64(1)))
			Expect(checks.Load()).To(BeNumerically(">=", 2), "checks over mTLS, with the cluster's client certificate")
			Expect(sni.Load()).To(Equal("backend.internal"))
			Expect(stat(srv, "cluster.backend.ssl.handshake")).To(BeNumerically(">=", 1))
		})

		// The same for a host an EDS update adds (the carried cluster builds its health checker's
		// dialer anew).
		It("health-checks over TLS a host an endpoint update added", func() {
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), true)
			first := addr()
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), true)
			second := addr()
			certs := pki.certs("client", pki.issue("edge-proxy", testpki.SANs{URIs: []string{"spiffe://mesh/edge"}}))
			_, ctls := tlsContexts("", "common_tls_context: {"+certs+", validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+"}}}")
			cfg := func(addrs ...string) *config.Bootstrap {
				b := bootstrapTo("backend", addrs[0])
				cl := cluster("backend", addrs...)
				cl.EDS = &config.EDS{ServiceName: "backend"}
				cl.TLS = ctls
				cl.HealthChecks = []policy.HealthCheckConfig{{Timeout: 5 * time.Second, Interval: time.Second, NoTrafficInterval: time.Second,
					UnhealthyThreshold: 1, HealthyThreshold: 1, Path: "/healthz"}}
				b.Clusters = []config.Cluster{cl}
				return b
			}
			clk := fakeClock()
			srv, err := proxy.New(cfg(first), proxy.Options{Clock: clk})
			Expect(err).NotTo(HaveOccurred())
			Expect(srv.Start()).To(Succeed())
			DeferCleanup(srv.Close)
			until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.membership_healthy") == 1 })
			Expect(srv.Update(cfg(first, second), nil)).To(Succeed())
			until(clk, 100*time.Millisecond, func() bool { return stat(srv, "cluster.backend.membership_healthy") == 2 })
			Expect(stat(srv, "cluster.backend.health_check.failure")).To(BeZero())
			Expect(stat(srv, "cluster.backend.health_check.network_failure")).To(BeZero())
		})

		It("presents its client certificate to a server that requires one (mTLS)", func() {
			startBackend(pki.issue("backend", testpki.SANs{DNS: []string{"backend.internal"}}), true)
			certs := pki.certs("client", pki.issue("edge-proxy", testpki.SANs{URIs: []string{"spiffe://mesh/edge"}}))
			_, url := startTLS("", "common_tls_context: {"+certs+"}", addr(), proxy.Options{})
			code, _, body := get(url + "/")
			Expect([]any{code, body}).To(Equal([]any{200, "secure"}))
			Expect(peer.Load()).To(Equal("edge-proxy"))
		})
	})

	// The SAN matchers (match_typed_subject_alt_names) on certificates the test CA issues, the
	// matchers converted from YAML as a user's are.
	DescribeTable("matching a peer certificate's SANs",
		func(sans testpki.SANs, matcher string, want bool) {
			_, ctls := tlsContexts("", "common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
				"}, match_typed_subject_alt_names: ["+matcher+"]}}")
			leaf := pki.issue("peer", sans)
			Expect(proxy.MatchSANs(leaf.Cert, ctls.Validation.SANs)).To(Equal(want))
		},
		// Regression: an exact DNS matcher was case-sensitive; Envoy's dnsNameMatch lowercases both.
		Entry("DNS exact, another case", testpki.SANs{DNS: []string{"Backend.Internal"}}, "{san_type: DNS, matcher: {exact: backend.INTERNAL}}", true),
		Entry("DNS exact, another name", testpki.SANs{DNS: []string{"backend.internal"}}, "{san_type: DNS, matcher: {exact: payments.internal}}", false),
		Entry("DNS exact, a one-label wildcard SAN", testpki.SANs{DNS: []string{"*.Internal"}}, "{san_type: DNS, matcher: {exact: backend.internal}}", true),
		Entry("DNS exact, a wildcard SAN for two labels", testpki.SANs{DNS: []string{"*.internal"}}, "{san_type: DNS, matcher: {exact: a.backend.internal}}", false),
		Entry("DNS exact, a wildcard SAN for no label", testpki.SANs{DNS: []string{"*.backend.internal"}}, "{san_type: DNS, matcher: {exact: backend.internal}}", false),
		Entry("DNS exact, a partial-label wildcard SAN (refused; Envoy takes it)", testpki.SANs{DNS: []string{"api*.internal"}}, "{san_type: DNS, matcher: {exact: api1.internal}}", false),
		Entry("DNS suffix is case-sensitive without ignore_case", testpki.SANs{DNS: []string{"backend.INTERNAL"}}, "{san_type: DNS, matcher: {suffix: .internal}}", false),
		Entry("DNS suffix with ignore_case", testpki.SANs{DNS: []string{"backend.INTERNAL"}}, "{san_type: DNS, matcher: {suffix: .internal, ignore_case: true}}", true),
		Entry("IP_ADDRESS, IPv4", testpki.SANs{IPs: []string{"10.0.0.1"}}, "{san_type: IP_ADDRESS, matcher: {exact: 10.0.0.1}}", true),
		Entry("IP_ADDRESS, IPv6", testpki.SANs{IPs: []string{"fd00::1"}}, "{san_type: IP_ADDRESS, matcher: {exact: \"fd00::1\"}}", true),
		Entry("IP_ADDRESS, another address", testpki.SANs{IPs: []string{"10.0.0.2"}}, "{san_type: IP_ADDRESS, matcher: {exact: 10.0.0.1}}", false),
		Entry("IP_ADDRESS, not a DNS matcher", testpki.SANs{IPs: []string{"10.0.0.1"}}, "{san_type: DNS, matcher: {exact: 10.0.0.1}}", false),
		Entry("EMAIL exact", testpki.SANs{Emails: []string{"ops@mesh.example"}}, "{san_type: EMAIL, matcher: {exact: ops@mesh.example}}", true),
		Entry("EMAIL, another address", testpki.SANs{Emails: []string{"dev@mesh.example"}}, "{san_type: EMAIL, matcher: {exact: ops@mesh.example}}", false),
		Entry("URI safe_regex, anchored", testpki.SANs{URIs: []string{"spiffe://mesh/ns/prod/sa/web"}},
			"{san_type: URI, matcher: {safe_regex: {regex: \"spiffe://mesh/ns/[a-z]+/sa/web\"}}}", true),
		Entry("URI safe_regex matches the whole SAN only", testpki.SANs{URIs: []string{"spiffe://mesh/ns/prod/sa/web2"}},
			"{san_type: URI, matcher: {safe_regex: {regex: \"spiffe://mesh/ns/[a-z]+/sa/web\"}}}", false),
		Entry("URI exact with ignore_case", testpki.SANs{URIs: []string{"spiffe://Mesh/Web"}}, "{san_type: URI, matcher: {exact: \"spiffe://mesh/web\", ignore_case: true}}", true),
		Entry("one of several matchers", testpki.SANs{URIs: []string{"spiffe://mesh/web"}},
			"{san_type: DNS, matcher: {exact: web.internal}}, {san_type: URI, matcher: {contains: /web}}", true),
	)

	// Regression: a 16-byte IPv4-mapped IPv6 SAN was unmapped, so it matched "10.0.0.1", where Envoy
	// sees "::ffff:10.0.0.1".
	It("reads a 16-byte IPv4-mapped IP SAN as an IPv6 address, as Envoy", func() {
		_, ctls := tlsContexts("", "common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
			"}, match_typed_subject_alt_names: [{san_type: IP_ADDRESS, matcher: {exact: 10.0.0.1}}]}}")
		_, mapped := tlsContexts("", "common_tls_context: {validation_context: {trusted_ca: {filename: "+pki.path("ca.pem")+
			"}, match_typed_subject_alt_names: [{san_type: IP_ADDRESS, matcher: {exact: \"::ffff:10.0.0.1\"}}]}}")
		leaf, err := pki.ca.Issue("peer", testpki.SANs{}, testpki.RawIPSANs(net.ParseIP("10.0.0.1").To16()))
		Expect(err).NotTo(HaveOccurred())
		Expect(leaf.Cert.IPAddresses).To(ConsistOf(HaveLen(16)))
		Expect(proxy.MatchSANs(leaf.Cert, ctls.Validation.SANs)).To(BeFalse())
		Expect(proxy.MatchSANs(leaf.Cert, mapped.Validation.SANs)).To(BeTrue())
		four, err := pki.ca.Issue("peer", testpki.SANs{}, testpki.RawIPSANs(net.ParseIP("10.0.0.1").To4()))
		Expect(err).NotTo(HaveOccurred())
		Expect(proxy.MatchSANs(four.Cert, ctls.Validation.SANs)).To(BeTrue())
		Expect(proxy.MatchSANs(four.Cert, mapped.Validation.SANs)).To(BeFalse())
	})

	Describe("certificate rotation", func() {
		It("serves a listener's new TLS context after a configuration update (a new server)", func() {
			first, second := pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}}), pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}})
			tlsA, _ := tlsContexts("common_tls_context: {"+pki.certs("a", first)+"}", "")
			tlsB, _ := tlsContexts("common_tls_context: {"+pki.certs("b", second)+"}", "")
			backend := newUpstream(ok)
			bootstrap := func(t *config.TLS) *config.Bootstrap {
				return &config.Bootstrap{Listeners: []config.Listener{{Name: "edge", Address: "127.0.0.1:0", StatPrefix: "ingress", TLS: t,
					Routes: config.RouteConfig{Name: "r", VirtualHosts: []config.VirtualHost{{Name: "all", Domains: []string{"*"},
						Routes: []config.Route{prefixRoute("/", "backend", nil)}}}}}},
					Clusters: []config.Cluster{cluster("backend", backend.addr())}}
			}
			srv, err := proxy.New(bootstrap(tlsA), proxy.Options{DrainTime: time.Millisecond})
			Expect(err).NotTo(HaveOccurred())
			Expect(srv.Start()).To(Succeed())
			DeferCleanup(srv.Close)
			url := "https://" + srv.ListenerAddr("edge") + "/"
			serial := func() string {
				_, _, st, err := getVia(httpsClient(pki.ca.Pool(), nil), url)
				Expect(err).NotTo(HaveOccurred())
				return st.PeerCertificates[0].SerialNumber.String()
			}
			Expect(serial()).To(Equal(first.Cert.SerialNumber.String()))
			Expect(srv.Update(bootstrap(tlsB), nil)).To(Succeed())
			Eventually(serial).Should(Equal(second.Cert.SerialNumber.String()))
		})

		// Regression: a file was judged unchanged by its inode, size and modification time alone, so a
		// certificate rewritten in place with the same size and time was never re-read.
		It("re-reads a certificate rewritten in place with the same size and modification time", func() {
			clk := fakeClock()
			first := pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}})
			var second *testpki.Leaf
			for range 100 { // an ECDSA signature's length varies by a byte or two: find one of the same
				if l := pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}}); len(l.CertPEM) == len(first.CertPEM) && len(l.KeyPEM) == len(first.KeyPEM) {
					second = l
					break
				}
			}
			Expect(second).NotTo(BeNil(), "no certificate of the same size in 100 tries")
			backend := newUpstream(ok)
			_, url := startTLS("common_tls_context: {"+pki.certs("server", first)+"}", "", backend.addr(), proxy.Options{Clock: clk})
			serial := func() string {
				_, _, st, err := getVia(httpsClient(pki.ca.Pool(), nil), url+"/")
				Expect(err).NotTo(HaveOccurred())
				return st.PeerCertificates[0].SerialNumber.String()
			}
			Expect(serial()).To(Equal(first.Cert.SerialNumber.String()))
			for name, b := range map[string][]byte{"server.pem": second.CertPEM, "server-key.pem": second.KeyPEM} {
				info, err := os.Stat(pki.path(name))
				Expect(err).NotTo(HaveOccurred())
				pki.write(name, b)
				Expect(os.Chtimes(pki.path(name), info.ModTime(), info.ModTime())).To(Succeed())
			}
			clk.Step(time.Second)
			Expect(serial()).To(Equal(second.Cert.SerialNumber.String()))
		})

		It("serves new connections the new certificate once its files changed, under load, with no failed request", func() {
			clk := fakeClock()
			first := pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}})
			certs := pki.certs("server", first)
			backend := newUpstream(ok)
			srv, url := startTLS("common_tls_context: {"+certs+"}", "", backend.addr(), proxy.Options{Clock: clk})

			var (
				failures atomic.Int64
				mu       sync.Mutex
				serials  = map[string]int{} // the serial of each certificate served → requests
				stop     = make(chan struct{})
				wg       sync.WaitGroup
			)
			c := httpsClient(pki.ca.Pool(), nil)
			for range 8 {
				wg.Add(1)
				go func() {
					defer GinkgoRecover()
					defer wg.Done()
					for {
						select {
						case <-stop:
							return
						default:
						}
						code, _, st, err := getVia(c, url+"/")
						if err != nil || code != 200 {
							failures.Add(1)
							continue
						}
						mu.Lock()
						serials[st.PeerCertificates[0].SerialNumber.String()]++
						mu.Unlock()
					}
				}()
			}
			served := func(l *testpki.Leaf) func() int {
				return func() int {
					mu.Lock()
					defer mu.Unlock()
					return serials[l.Cert.SerialNumber.String()]
				}
			}
			Eventually(served(first)).WithTimeout(10 * time.Second).Should(BeNumerically(">=", 100))

			// Rewritten in place, one file after the other: in between the pair does not match, and
			// the old certificate stays in use.
			second := pki.issue("proxy", testpki.SANs{DNS: []string{"proxy.internal"}})
			pki.write("server.pem", second.CertPEM)
			clk.Step(time.Second)
			before := served(first)()
			Eventually(served(first)).WithTimeout(10 * time.Second).Should(BeNumerically(">=", before+100))
			Expect(served(second)()).To(BeZero())
			pki.write("server-key.pem", second.KeyPEM)
			clk.Step(time.Second)
			Eventually(served(second)).WithTimeout(10 * time.Second).Should(BeNumerically(">=", 200))
			close(stop)
			wg.Wait()
			GinkgoWriter.Printf("requests by certificate serial: %v; failed: %d\n", serials, failures.Load())
			Expect(failures.Load()).To(BeZero())
			Expect(stat(srv, sslListener+"connection_error")).To(BeZero())
			Expect(stat(srv, sslListener+"handshake")).To(BeNumerically(">=", 400))
		})
	})
})
