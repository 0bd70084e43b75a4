package proxy

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// certCheckInterval is how often, at most, the files of a TLS context are looked at again (on the
// proxy's clock, when a handshake needs them): a changed file is re-read and, if it parses, used by
// the connections handshaking from then on. Envoy watches only SDS secrets from files (inotify on a
// file moved into place, or on a watched_directory); meshproof polls plain filename sources instead.
const certCheckInterval = time.Second

// The peer-verification failures, told apart for the ssl.fail_verify_* stats.
var (
	errNoPeerCert = errors.New("peer presented no certificate")
	errVerifyCA   = errors.New("peer certificate not trusted")
	errVerifySAN  = errors.New("peer certificate SAN matches none of match_typed_subject_alt_names")
)

// sslStats are Envoy's TLS statistics (docs: configuration/listeners/stats "TLS statistics"), under
// listener.<address>.ssl. for a listener and cluster.<name>.ssl. for a cluster.
type sslStats struct {
	store  *stats.Store
	prefix string
	// handshake: a handshake completed; connectionError: one failed other than by verification;
	// noCertificate: one completed without a peer certificate; failVerifyNoCert, failVerifyError,
	// failVerifySAN: one failed for a missing, untrusted or SAN-mismatched peer certificate.
	handshake, connectionError, noCertificate, failVerifyNoCert, failVerifyError, failVerifySAN, sessionReused *stats.Counter
}

func newSSLStats(store *stats.Store, prefix string) *sslStats {
	p := prefix + "ssl."
	c := func(n string) *stats.Counter { return store.Counter(p + n) }
	return &sslStats{store: store, prefix: p, handshake: c("handshake"), connectionError: c("connection_error"),
		noCertificate: c("no_certificate"), failVerifyNoCert: c("fail_verify_no_cert"), failVerifyError: c("fail_verify_error"),
		failVerifySAN: c("fail_verify_san"), sessionReused: c("session_reused")}
}

// record counts a handshake's outcome, as Envoy's SslSocket does.
func (s *sslStats) record(st tls.ConnectionState, err error) {
	switch {
	case errors.Is(err, errNoPeerCert):
		s.failVerifyNoCert.Inc()
	case errors.Is(err, errVerifyCA):
		s.failVerifyError.Inc()
	case errors.Is(err, errVerifySAN):
		s.failVerifySAN.Inc()
	case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
		// The peer closed (or reset) before a byte of handshake: no TLS error, as Envoy's SslSocket
		// counts connection_error only for errors BoringSSL queued (drainErrorQueue), and a socket
		// closed by its peer queues none (a load balancer's TCP probe, a port scan).
	case err != nil:
		s.connectionError.Inc()
	default:
		s.handshake.Inc()
		if len(st.PeerCertificates) == 0 {
			s.noCertificate.Inc()
		}
		if st.DidResume {
			s.sessionReused.Inc()
		}
		s.store.Counter(s.prefix + "versions." + envoyVersionName(st.Version)).Inc()
		s.store.Counter(s.prefix + "ciphers." + config.CipherName(st.CipherSuite)).Inc()
	}
}

// envoyVersionName is a TLS version as Envoy's ssl.versions.<version> names it (TLSv1.2).
func envoyVersionName(v uint16) string {
	return strings.Replace(tls.VersionName(v), "TLS 1", "TLSv1", 1)
}

// listenerStatPrefix is Envoy's listener.<address>. scope for a listener without a stat_prefix: the
// configured address with ':' turned into '_' (stat name sanitizing).
func listenerStatPrefix(addr string) string {
	return "listener." + strings.ReplaceAll(addr, ":", "_") + "."
}

// fileStamp is what a file looked like when last read: its metadata and a hash of the content read.
type fileStamp struct {
	info os.FileInfo // nil: inline, or not readable
	sum  [sha256.Size]byte
}

// same reports whether the file at path is still as stamped: the same inode, size and modification
// time, and then the same content (a rewrite in place within the file system's time granularity, or
// one that kept the modification time, keeps the rest).
func (s fileStamp) same(path string) bool {
	info, err := os.Stat(path)
	if err != nil || s.info == nil || !os.SameFile(s.info, info) || !s.info.ModTime().Equal(info.ModTime()) ||
		s.info.Size() != info.Size() {
		return false
	}
	b, err := os.ReadFile(path)
	return err == nil && sha256.Sum256(b) == s.sum
}

// reloading is a value parsed from data sources, re-parsed when one of their files changes: at most
// every certCheckInterval, when asked for. A re-read that fails to parse (a pair half rewritten, a
// file missing for a moment) keeps the value in use, and is tried again at the next check.
type reloading[T any] struct {
	srcs  []config.DataSource
	parse func([][]byte) (T, error)
	clk   clock.Clock
	files bool

	mu      sync.Mutex
	checked time.Time
	stamps  []fileStamp
	cur     atomic.Pointer[T]
}

func newReloading[T any](srcs []config.DataSource, clk clock.Clock, parse func([][]byte) (T, error)) (*reloading[T], error) {
	r := &reloading[T]{srcs: srcs, parse: parse, clk: clk, stamps: make([]fileStamp, len(srcs))}
	for _, s := range srcs {
		r.files = r.files || s.Filename != ""
	}
	r.checked = clk.Now()
	v, stamps, err := r.read()
	if err != nil {
		return nil, err
	}
	r.cur.Store(&v)
	r.stamps = stamps
	return r, nil
}

// read reads and parses every source, stamping the files before reading them (a change during the
// read is seen at the next check).
func (r *reloading[T]) read() (T, []fileStamp, error) {
	var zero T
	stamps := make([]fileStamp, len(r.srcs))
	data := make([][]byte, len(r.srcs))
	for i, s := range r.srcs {
		if s.Filename != "" {
			info, err := os.Stat(s.Filename)
			if err != nil {
				return zero, nil, err
			}
			stamps[i].info = info
		}
		b, err := s.Read()
		if err != nil {
			return zero, nil, err
		}
		stamps[i].sum = sha256.Sum256(b)
		data[i] = b
	}
	v, err := r.parse(data)
	return v, stamps, err
}

// get is the current value, re-read first if a file changed since the last check.
func (r *reloading[T]) get() *T {
	if !r.files {
		return r.cur.Load()
	}
	now := r.clk.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	if now.Sub(r.checked) < certCheckInterval {
		return r.cur.Load()
	}
	r.checked = now
	changed := false
	for i, s := range r.srcs {
		if s.Filename == "" {
			continue
		}
		if !r.stamps[i].same(s.Filename) {
			changed = true
			break
		}
	}
	if changed {
		if v, stamps, err := r.read(); err == nil {
			r.cur.Store(&v)
			r.stamps = stamps
		}
	}
	return r.cur.Load()
}

// tlsContext is a TLS context at run time: its certificates and trusted CAs, re-read as their files
// change, and the crypto/tls configuration built on them.
type tlsContext struct {
	cfg    *config.TLS
	certs  []*reloading[tls.Certificate]
	ca     *reloading[*x509.CertPool] // nil: the peer's chain is not verified
	st     *sslStats
	server bool
	base   *tls.Config
	// withCAs is base with ClientCAs set to the current trusted_ca pool (a listener's), rebuilt when
	// the pool is.
	withCAs atomic.Pointer[tls.Config]
}

// serverConfig is the listener's configuration for a handshake, nil for base itself:
//   - with trusted_ca, base with its CAs as the client CA list, as Envoy's server context hands them to
//     SSL_CTX_set_client_CA_list (the pool re-read as its file changes);
//   - for a client offering ALPN protocols none of which the listener has, no ALPN: Envoy's
//     ServerContextImpl::alpnSelectCallback answers SSL_TLSEXT_ERR_NOACK and the handshake goes on
//     (crypto/tls would refuse it with no_application_protocol).
func (t *tlsContext) serverConfig(hello *tls.ClientHelloInfo) (*tls.Config, error) {
	var c *tls.Config
	if t.ca != nil {
		pool := *t.ca.get()
		if c = t.withCAs.Load(); c == nil || c.ClientCAs != pool {
			c = t.base.Clone()
			c.GetConfigForClient = nil
			c.ClientCAs = pool
			t.withCAs.Store(c)
		}
	}
	if len(t.base.NextProtos) > 0 && len(hello.SupportedProtos) > 0 &&
		!slices.ContainsFunc(hello.SupportedProtos, func(p string) bool { return slices.Contains(t.base.NextProtos, p) }) {
		if c == nil {
			c = t.base
		}
		c = c.Clone()
		c.GetConfigForClient = nil
		c.NextProtos = nil
	}
	return c, nil
}

// newTLSContext builds the runtime form of cfg (server: a listener's).
func newTLSContext(cfg *config.TLS, server bool, clk clock.Clock, st *sslStats) (*tlsContext, error) {
	t := &tlsContext{cfg: cfg, st: st, server: server}
	for i, pair := range cfg.Certificates {
		r, err := newReloading([]config.DataSource{pair.Chain, pair.Key}, clk, func(b [][]byte) (tls.Certificate, error) {
			return tls.X509KeyPair(b[0], b[1])
		})
		if err != nil {
			return nil, fmt.Errorf("tls_certificates[%d]: %w", i, err)
		}
		t.certs = append(t.certs, r)
	}
	if v := cfg.Validation; v != nil && v.TrustedCA != nil {
		r, err := newReloading([]config.DataSource{*v.TrustedCA}, clk, func(b [][]byte) (*x509.CertPool, error) {
			certs, err := config.ParseCertificates(b[0])
			if err != nil {
				return nil, err
			}
			pool := x509.NewCertPool()
			for _, c := range certs {
				pool.AddCert(c)
			}
			return pool, nil
		})
		if err != nil {
			return nil, fmt.Errorf("validation_context.trusted_ca: %w", err)
		}
		t.ca = r
	}
	if v := cfg.Validation; v != nil && len(v.SANs) > 0 && t.ca == nil {
		// The configuration refuses this (config.validation); a context built by hand must not verify
		// a SAN on an unverified chain.
		return nil, errors.New("validation_context.match_typed_subject_alt_names: needs trusted_ca")
	}
	// The peer's certificate is verified here, in VerifyConnection, not by crypto/tls: Envoy checks
	// the chain against trusted_ca only, never the host name (without auto_sni_san_validation), then
	// the SAN matchers; and with no validation_context it verifies nothing.
	base := &tls.Config{MinVersion: cfg.MinVersion, MaxVersion: cfg.MaxVersion, CipherSuites: slices.Clone(cfg.CipherSuites),
		NextProtos: slices.Clone(cfg.ALPN), InsecureSkipVerify: true, VerifyConnection: t.verify}
	if server {
		switch {
		case t.clientCertRequired():
			// Asked for, and its absence refused in verify (counted as fail_verify_no_cert).
			base.ClientAuth = tls.RequestClientCert
		case t.ca != nil:
			// Optional, and verified if sent. A validation_context with neither trusted_ca nor SAN
			// matchers asks for none: Envoy's DefaultCertValidator::initializeSslContexts leaves
			// SSL_VERIFY_NONE then (default_validator.cc).
			base.ClientAuth = tls.RequestClientCert
		}
		base.GetCertificate = t.serverCertificate
		base.GetConfigForClient = t.serverConfig
	} else {
		base.ServerName = cfg.SNI
		if len(t.certs) > 0 {
			base.GetClientCertificate = func(*tls.CertificateRequestInfo) (*tls.Certificate, error) { return t.certs[0].get(), nil }
		}
	}
	t.base = base
	return t, nil
}

// clientCertRequired: a listener refuses a client without a certificate when require_client_certificate
// is set, or when SAN matchers are (CertificateValidationContext: "a client certificate is optional,
// unless ... match_typed_subject_alt_names ... is also specified").
func (t *tlsContext) clientCertRequired() bool {
	return t.cfg.RequireClientCertificate || t.cfg.Validation != nil && len(t.cfg.Validation.SANs) > 0
}

// serverCertificate picks the listener's certificate: the first whose chain suits the client hello
// (as Envoy picks among tls_certificates by key type), else the first.
func (t *tlsContext) serverCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	var first *tls.Certificate
	for _, r := range t.certs {
		c := r.get()
		if first == nil {
			first = c
		}
		if len(t.certs) == 1 || hello.SupportsCertificate(c) == nil {
			return c, nil
		}
	}
	if first == nil {
		return nil, errors.New("no certificate")
	}
	return first, nil
}

// verify checks the peer's certificate as Envoy's default certificate validator does.
func (t *tlsContext) verify(cs tls.ConnectionState) error {
	if len(cs.PeerCertificates) == 0 {
		if t.server && t.clientCertRequired() {
			return errNoPeerCert
		}
		if !t.server && t.cfg.Validation != nil {
			return errNoPeerCert
		}
		return nil
	}
	v := t.cfg.Validation
	if v == nil {
		return nil
	}
	leaf := cs.PeerCertificates[0]
	if t.ca != nil {
		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}
		// The peer's extended key usage is held to its role: Envoy's DefaultCertValidator::doVerifyCertChain
		// (source/extensions/transport_sockets/tls/cert_validator/default_validator.cc) sets
		// X509_STORE_CTX_set_default(ctx, is_server ? "ssl_client" : "ssl_server") before
		// X509_verify_cert: a listener accepts a client certificate only for clientAuth, a cluster a
		// server's only for serverAuth (a certificate without the extension passes, in Go as in BoringSSL).
		usage := x509.ExtKeyUsageServerAuth
		if t.server {
			usage = x509.ExtKeyUsageClientAuth
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: *t.ca.get(), Intermediates: inter,
			KeyUsages: []x509.ExtKeyUsage{usage}}); err != nil {
			return fmt.Errorf("%w: %v", errVerifyCA, err)
		}
	}
	if len(v.SANs) > 0 && !matchSANs(leaf, v.SANs) {
		return errVerifySAN
	}
	return nil
}

// matchSANs reports whether one of leaf's SANs matches one of the matchers of its type.
func matchSANs(leaf *x509.Certificate, matchers []config.SANMatcher) bool {
	for _, m := range matchers {
		switch m.Type {
		case "DNS":
			for _, n := range leaf.DNSNames {
				if m.Match.Exact != nil && dnsNameMatch(*m.Match.Exact, n) || m.Match.Exact == nil && m.Match.Matches(n) {
					return true
				}
			}
		case "URI":
			for _, u := range leaf.URIs {
				if m.Match.Matches(u.String()) {
					return true
				}
			}
		case "EMAIL":
			for _, e := range leaf.EmailAddresses {
				if m.Match.Matches(e) {
					return true
				}
			}
		case "IP_ADDRESS":
			for _, ip := range leaf.IPAddresses {
				// As Envoy's Utility::generalNameAsString: 4 bytes are an IPv4 address, 16 an IPv6 one,
				// an IPv4-mapped one too ("::ffff:10.0.0.1", inet_ntop's form, never unmapped).
				if a, ok := netip.AddrFromSlice(ip); ok && m.Match.Matches(a.String()) {
					return true
				}
			}
		}
	}
	return false
}

// dnsNameMatch is how an exact matcher matches a DNS SAN, as Envoy's StringSanMatcher (san_matcher.cc)
// hands an exact DNS matcher to Utility::dnsNameMatch (source/common/tls/utility.cc): both sides
// lowercased (DNS names are case-insensitive), and a SAN "*.example.com" matches one label in its
// place ("api.example.com", not "a.b.example.com" nor "example.com"). Envoy also accepts a wildcard
// within the left-most label ("api*.example.com", not in an xn-- A-label); meshproof does not: such a
// SAN matches only itself, exactly.
func dnsNameMatch(name, san string) bool {
	if strings.EqualFold(name, san) {
		return true
	}
	if !strings.HasPrefix(san, "*.") {
		return false
	}
	i := strings.IndexByte(name, '.')
	return i > 0 && strings.EqualFold(name[i:], san[1:])
}

// tlsListener is a listener's TLS: each accepted connection is a server-side TLS connection whose
// handshake runs on the connection's first read or write (the server's goroutine for it, not the
// accept loop), counted in the listener's ssl stats.
type tlsListener struct {
	net.Listener
	t *tlsContext
}

func (l *tlsListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return &tlsConn{Conn: tls.Server(c, l.t.base), st: l.t.st}, nil
}

// tlsConn is a TLS connection whose handshake is counted.
type tlsConn struct {
	*tls.Conn
	st     *sslStats
	client bool // an upstream connection: handshaken before use (clientHandshake)
	once   sync.Once
	err    error
}

func (c *tlsConn) handshake() error {
	if c.client {
		return nil
	}
	c.once.Do(func() {
		c.err = c.Conn.Handshake()
		c.st.record(c.Conn.ConnectionState(), c.err)
	})
	return c.err
}

func (c *tlsConn) Read(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Read(b)
}

func (c *tlsConn) Write(b []byte) (int, error) {
	if err := c.handshake(); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

// NetConn is the *tls.Conn (not its socket): the h1 codec does no raw I/O under a *tls.Conn, and its
// pool checks an idle TLS connection through it.
func (c *tlsConn) NetConn() net.Conn { return c.Conn }

// clientHandshake runs the upstream TLS handshake on a dialled connection within ctx and before
// deadline (the connect_timeout: Envoy's connection is connected, and its connect timer stopped, once
// the transport socket's handshake is done), counting it in the cluster's ssl stats. A failure is a
// connection failure (the caller closes conn): Envoy's upstream TLS error is a connect failure,
// answered 503 with response flag UF.
func (t *tlsContext) clientHandshake(ctx context.Context, conn net.Conn, deadline time.Time) (net.Conn, error) {
	tc := tls.Client(conn, t.base)
	_ = conn.SetDeadline(deadline)
	err := tc.HandshakeContext(ctx)
	_ = conn.SetDeadline(time.Time{})
	if errors.Is(err, os.ErrDeadlineExceeded) { // the socket deadline, not ctx's (its error is no os.ErrDeadlineExceeded)
		// Envoy's connect timer covers the handshake: when it fires first, the pool closes the
		// connection as a connect timeout (ActiveClient::onConnectTimeout: upstream_cx_connect_timeout,
		// reset reason "connection timeout"), not as a TLS failure, and SslSocket counts no
		// ssl.connection_error for a connection closed locally.
		return nil, &connectTimeoutError{err: err}
	}
	t.st.record(tc.ConnectionState(), err)
	if err != nil {
		return nil, &tlsHandshakeError{err: err}
	}
	return &tlsConn{Conn: tc, st: t.st, client: true}, nil
}

// connectTimeoutError is an upstream handshake cut by the connect_timeout: a connect timeout, as a
// TCP connect cut by it.
type connectTimeoutError struct{ err error }

func (e *connectTimeoutError) Error() string {
	return "TLS handshake: connect timeout: " + e.err.Error()
}
func (e *connectTimeoutError) Unwrap() error { return e.err }
func (e *connectTimeoutError) Timeout() bool { return true }

// tlsHandshakeError is a failed upstream handshake.
type tlsHandshakeError struct{ err error }

func (e *tlsHandshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsHandshakeError) Unwrap() error { return e.err }

// tlsFailureReason is the transport failure reason of a failed upstream handshake, in the form of
// Envoy's (SslSocket's failure reason, "TLS_error:|<BoringSSL error>:TLS_error_end"): a verification
// failure is BoringSSL's CERTIFICATE_VERIFY_FAILED; other failures carry crypto/tls's words, as
// BoringSSL's codes have no Go equivalent.
func tlsFailureReason(err error) (string, bool) {
	var he *tlsHandshakeError
	if !errors.As(err, &he) {
		return "", false
	}
	if errors.Is(err, errNoPeerCert) || errors.Is(err, errVerifyCA) || errors.Is(err, errVerifySAN) {
		return "TLS_error:|268435581:SSL routines:OPENSSL_internal:CERTIFICATE_VERIFY_FAILED:TLS_error_end", true
	}
	return "TLS_error:|" + he.err.Error() + ":TLS_error_end", true
}
