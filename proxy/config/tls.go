package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"regexp"
	"slices"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/proto"
)

// The transport socket typed_configs (envoy.transport_sockets.tls).
const (
	downstreamTLSType = "envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext"
	upstreamTLSType   = "envoy.extensions.transport_sockets.tls.v3.UpstreamTlsContext"
)

// TLS is a transport socket's TLS context: a listener filter chain's DownstreamTlsContext or a
// cluster's UpstreamTlsContext.
type TLS struct {
	// Certificates are common_tls_context.tls_certificates: the certificate chains and keys presented
	// (the server's, or the client's for mTLS upstream). Files are re-read when they change (see the
	// proxy's README).
	Certificates []CertificatePair
	// MinVersion and MaxVersion are tls_params' protocol bounds as crypto/tls versions. Defaults
	// (common.proto, TlsParameters): minimum TLS 1.2 for both sides; maximum TLS 1.3 for a server
	// (downstream), TLS 1.2 for a client (upstream).
	MinVersion, MaxVersion uint16
	// CipherSuites are tls_params.cipher_suites as crypto/tls IDs (TLS 1.0–1.2 only: TLS 1.3's are
	// not configurable, as in Envoy); unset, Envoy's default list for the side.
	CipherSuites []uint16
	// ALPN is common_tls_context.alpn_protocols (only "http/1.1" for now); nil: no ALPN.
	ALPN []string
	// Validation is common_tls_context.validation_context: how the peer's certificate is verified.
	// nil: it is not (a server asks for no client certificate; a client accepts any server
	// certificate, as Envoy does without a validation_context).
	Validation *Validation
	// RequireClientCertificate is the DownstreamTlsContext's require_client_certificate.
	RequireClientCertificate bool
	// SNI is the UpstreamTlsContext's sni: the server name sent upstream ("" none).
	SNI string
	// Key identifies the configuration (its proto, deterministically marshalled): a listener whose
	// TLS context changed gets a new server.
	Key string
}

// CertificatePair is a TlsCertificate: a PEM certificate chain and its PEM private key.
type CertificatePair struct {
	Chain, Key DataSource
}

// DataSource is Envoy's DataSource: a file's path, or inline content.
type DataSource struct {
	Filename string // filename; "" for inline content
	Inline   []byte // inline_string or inline_bytes
}

// Read returns the source's content (the file read now).
func (d DataSource) Read() ([]byte, error) {
	if d.Filename == "" {
		return d.Inline, nil
	}
	return os.ReadFile(d.Filename)
}

// Validation is a CertificateValidationContext: the peer's chain is verified against TrustedCA (when
// set) and its subject alternative names against SANs (when set: one must match). SANs are refused
// without TrustedCA, as in Envoy.
type Validation struct {
	TrustedCA *DataSource // trusted_ca; nil: the chain is not verified (and SANs is empty)
	SANs      []SANMatcher
}

// SANMatcher is a SubjectAltNameMatcher: a SAN of Type (DNS, URI, EMAIL or IP_ADDRESS) matched by
// Match.
type SANMatcher struct {
	Type  string
	Match StringMatch
}

// StringMatch is Envoy's StringMatcher: exactly one of the kinds.
type StringMatch struct {
	Exact, Prefix, Suffix, Contains *string
	Regex                           *regexp.Regexp // safe_regex, anchored
	IgnoreCase                      bool
}

// Matches reports whether s matches.
func (m StringMatch) Matches(s string) bool {
	if m.Regex != nil {
		return m.Regex.MatchString(s)
	}
	norm := func(x string) string {
		if m.IgnoreCase {
			return strings.ToLower(x)
		}
		return x
	}
	s = norm(s)
	switch {
	case m.Exact != nil:
		return s == norm(*m.Exact)
	case m.Prefix != nil:
		return strings.HasPrefix(s, norm(*m.Prefix))
	case m.Suffix != nil:
		return strings.HasSuffix(s, norm(*m.Suffix))
	case m.Contains != nil:
		return strings.Contains(s, norm(*m.Contains))
	}
	return false
}

// cipherNames maps Envoy's (BoringSSL's) TLS 1.0–1.2 cipher suite names to crypto/tls's, for those Go
// implements. Others (e.g. ECDHE-PSK-CHACHA20-POLY1305, or 3DES ones) are refused by field path.
var cipherNames = map[string]uint16{
	"ECDHE-ECDSA-AES128-GCM-SHA256": tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-RSA-AES128-GCM-SHA256":   tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
	"ECDHE-ECDSA-AES256-GCM-SHA384": tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-RSA-AES256-GCM-SHA384":   tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
	"ECDHE-ECDSA-CHACHA20-POLY1305": tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-RSA-CHACHA20-POLY1305":   tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256,
	"ECDHE-ECDSA-AES128-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA,
	"ECDHE-RSA-AES128-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA,
	"ECDHE-ECDSA-AES256-SHA":        tls.TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA,
	"ECDHE-RSA-AES256-SHA":          tls.TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA,
	"AES128-GCM-SHA256":             tls.TLS_RSA_WITH_AES_128_GCM_SHA256,
	"AES256-GCM-SHA384":             tls.TLS_RSA_WITH_AES_256_GCM_SHA384,
	"AES128-SHA":                    tls.TLS_RSA_WITH_AES_128_CBC_SHA,
	"AES256-SHA":                    tls.TLS_RSA_WITH_AES_256_CBC_SHA,
}

// CipherName is Envoy's name of a crypto/tls cipher suite (TLS 1.3 suites keep their IANA names, as
// Envoy's ssl.ciphers.<name> stats do).
func CipherName(id uint16) string {
	for name, v := range cipherNames {
		if v == id {
			return name
		}
	}
	return tls.CipherSuiteName(id)
}

// Envoy's default cipher lists (non-FIPS builds; common.proto, TlsParameters.cipher_suites, as of
// the pinned go-control-plane envoy v1.40.0): the server's and the client's are the same six ECDHE
// AEAD suites (older Envoys also offered CBC and RSA key exchange suites to clients; no longer). The
// "[A|B]" equal-preference groups are flattened: crypto/tls orders suites itself.
var (
	defaultServerCiphers = []string{
		"ECDHE-ECDSA-AES128-GCM-SHA256", "ECDHE-ECDSA-CHACHA20-POLY1305", "ECDHE-RSA-AES128-GCM-SHA256",
		"ECDHE-RSA-CHACHA20-POLY1305", "ECDHE-ECDSA-AES256-GCM-SHA384", "ECDHE-RSA-AES256-GCM-SHA384",
	}
	defaultClientCiphers = defaultServerCiphers
)

// tlsVersions are TlsParameters.TlsProtocol's values as crypto/tls versions (TLS_AUTO: 0, the default).
var tlsVersions = map[tlsv3.TlsParameters_TlsProtocol]uint16{
	tlsv3.TlsParameters_TLSv1_0: tls.VersionTLS10,
	tlsv3.TlsParameters_TLSv1_1: tls.VersionTLS11,
	tlsv3.TlsParameters_TLSv1_2: tls.VersionTLS12,
	tlsv3.TlsParameters_TLSv1_3: tls.VersionTLS13,
}

// downstreamTLS converts a filter chain's transport_socket (nil: clear text).
func (c *converter) downstreamTLS(ts *corev3.TransportSocket, path string) *TLS {
	if ts == nil {
		return nil
	}
	ctx, ok := unpack[*tlsv3.DownstreamTlsContext](c, ts.GetTypedConfig(), joinPath(path, "typed_config"))
	if !ok {
		return nil
	}
	path = joinPath(path, "typed_config")
	out := c.commonTLS(ctx.GetCommonTlsContext(), joinPath(path, "common_tls_context"), true)
	out.RequireClientCertificate = ctx.GetRequireClientCertificate().GetValue()
	if len(out.Certificates) == 0 {
		c.fail(joinPath(path, "common_tls_context.tls_certificates"), "required: a listener's TLS context needs a certificate")
	}
	out.Key = tlsKey(ctx)
	return out
}

// upstreamTLS converts a cluster's transport_socket (nil: clear text).
func (c *converter) upstreamTLS(ts *corev3.TransportSocket, path string) *TLS {
	if ts == nil {
		return nil
	}
	ctx, ok := unpack[*tlsv3.UpstreamTlsContext](c, ts.GetTypedConfig(), joinPath(path, "typed_config"))
	if !ok {
		return nil
	}
	path = joinPath(path, "typed_config")
	out := c.commonTLS(ctx.GetCommonTlsContext(), joinPath(path, "common_tls_context"), false)
	out.SNI = ctx.GetSni()
	if len(out.Certificates) > 1 {
		c.fail(joinPath(path, "common_tls_context.tls_certificates"), "at most one client certificate, got %d", len(out.Certificates))
	}
	out.Key = tlsKey(ctx)
	return out
}

func tlsKey(m proto.Message) string {
	b, _ := proto.MarshalOptions{Deterministic: true}.Marshal(m)
	return string(b)
}

// commonTLS converts a CommonTlsContext; server says which side's defaults apply.
func (c *converter) commonTLS(ctx *tlsv3.CommonTlsContext, path string, server bool) *TLS {
	out := &TLS{MinVersion: tls.VersionTLS12, MaxVersion: tls.VersionTLS13}
	ciphers := defaultServerCiphers
	if !server {
		out.MaxVersion = tls.VersionTLS12
		ciphers = defaultClientCiphers
	}
	params := ctx.GetTlsParams()
	ppath := joinPath(path, "tls_params")
	if v, ok := tlsVersions[params.GetTlsMinimumProtocolVersion()]; ok {
		out.MinVersion = v
	}
	if v, ok := tlsVersions[params.GetTlsMaximumProtocolVersion()]; ok {
		out.MaxVersion = v
	}
	if out.MinVersion > out.MaxVersion {
		c.fail(joinPath(ppath, "tls_minimum_protocol_version"), "%s is above the maximum, %s",
			tls.VersionName(out.MinVersion), tls.VersionName(out.MaxVersion))
	}
	if cs := params.GetCipherSuites(); len(cs) > 0 {
		ciphers = nil
		for i, entry := range cs {
			// An entry may be an "[A|B]" equal-preference group, as in Envoy's own default list.
			for name := range strings.SplitSeq(strings.Trim(entry, "[]"), "|") {
				if _, ok := cipherNames[name]; !ok {
					c.fail(indexPath(joinPath(ppath, "cipher_suites"), i), "cipher suite %q is not supported; supported: %s",
						name, strings.Join(sortedKeys(cipherNames), ", "))
					continue
				}
				ciphers = append(ciphers, name)
			}
		}
	}
	for _, name := range ciphers {
		out.CipherSuites = append(out.CipherSuites, cipherNames[name])
	}
	for i, p := range ctx.GetAlpnProtocols() {
		ap := indexPath(joinPath(path, "alpn_protocols"), i)
		switch {
		case p == "http/1.1":
			out.ALPN = append(out.ALPN, p)
		case p == "h2" && !server:
			// A cluster may offer h2: its connections speak HTTP/2 when it is negotiated (auto_config)
			// or configured (see upstream_http.go).
			out.ALPN = append(out.ALPN, p)
		case p == "h2":
			c.fail(ap, "HTTP/2 is not supported yet: only \"http/1.1\" may be offered")
		default:
			c.fail(ap, "protocol %q is not supported: only \"http/1.1\" may be offered", p)
		}
	}
	for i, tc := range ctx.GetTlsCertificates() {
		c.certificate(tc, indexPath(joinPath(path, "tls_certificates"), i), out)
	}
	if vc := ctx.GetValidationContext(); vc != nil {
		out.Validation = c.validation(vc, joinPath(path, "validation_context"))
	}
	return out
}

// certificate converts a TlsCertificate, checking now that its chain and key are PEM and belong
// together.
func (c *converter) certificate(tc *tlsv3.TlsCertificate, path string, out *TLS) {
	chain, okc := c.dataSource(tc.GetCertificateChain(), joinPath(path, "certificate_chain"))
	key, okk := c.dataSource(tc.GetPrivateKey(), joinPath(path, "private_key"))
	if !okc || !okk {
		return
	}
	pair := CertificatePair{Chain: chain, Key: key}
	chainPEM, err := chain.Read()
	if err != nil {
		c.fail(joinPath(path, "certificate_chain"), "cannot read: %v", err)
		return
	}
	keyPEM, err := key.Read()
	if err != nil {
		c.fail(joinPath(path, "private_key"), "cannot read: %v", err)
		return
	}
	if _, err := ParseCertificates(chainPEM); err != nil {
		c.fail(joinPath(path, "certificate_chain"), "%v", err)
		return
	}
	if _, err := tls.X509KeyPair(chainPEM, keyPEM); err != nil {
		c.fail(joinPath(path, "private_key"), "not the certificate's PEM private key: %v", err)
		return
	}
	out.Certificates = append(out.Certificates, pair)
}

// validation converts a CertificateValidationContext.
func (c *converter) validation(vc *tlsv3.CertificateValidationContext, path string) *Validation {
	out := &Validation{}
	if ca := vc.GetTrustedCa(); ca != nil {
		src, ok := c.dataSource(ca, joinPath(path, "trusted_ca"))
		if ok {
			if b, err := src.Read(); err != nil {
				c.fail(joinPath(path, "trusted_ca"), "cannot read: %v", err)
			} else if _, err := ParseCertificates(b); err != nil {
				c.fail(joinPath(path, "trusted_ca"), "%v", err)
			} else {
				out.TrustedCA = &src
			}
		}
	}
	for i, m := range vc.GetMatchTypedSubjectAltNames() {
		mpath := indexPath(joinPath(path, "match_typed_subject_alt_names"), i)
		if m.GetMatcher() == nil {
			c.fail(joinPath(mpath, "matcher"), "required")
			continue
		}
		sm, ok := c.sanStringMatch(m.GetMatcher(), joinPath(mpath, "matcher"))
		if ok {
			out.SANs = append(out.SANs, SANMatcher{Type: m.GetSanType().String(), Match: sm})
		}
	}
	// Envoy refuses SAN matchers without a trusted CA: a SAN alone proves nothing, as anyone can
	// issue a certificate with any SAN (CertificateValidationContextConfigImpl::initialize, "SAN-based
	// verification of peer certificates without trusted CA is insecure and not allowed").
	if len(vc.GetMatchTypedSubjectAltNames()) > 0 && vc.GetTrustedCa() == nil {
		c.fail(joinPath(path, "match_typed_subject_alt_names"),
			"SAN-based verification of peer certificates without trusted_ca is insecure and not allowed: set trusted_ca too")
	}
	return out
}

// sanStringMatch converts a SAN matcher's StringMatcher.
func (c *converter) sanStringMatch(m *matcherv3.StringMatcher, path string) (StringMatch, bool) {
	out := StringMatch{IgnoreCase: m.GetIgnoreCase()}
	switch p := m.GetMatchPattern().(type) {
	case *matcherv3.StringMatcher_Exact:
		out.Exact = &p.Exact
	case *matcherv3.StringMatcher_Prefix:
		out.Prefix = &p.Prefix
	case *matcherv3.StringMatcher_Suffix:
		out.Suffix = &p.Suffix
	case *matcherv3.StringMatcher_Contains:
		out.Contains = &p.Contains
	case *matcherv3.StringMatcher_SafeRegex:
		re := c.regex(p.SafeRegex.GetRegex(), joinPath(joinPath(path, "safe_regex"), "regex"))
		if re == nil {
			return out, false
		}
		out.Regex = re
	default:
		c.fail(path, "want one of exact, prefix, suffix, contains, safe_regex")
		return out, false
	}
	return out, true
}

// dataSource converts a DataSource of TLS material: a filename or inline content.
func (c *converter) dataSource(ds *corev3.DataSource, path string) (DataSource, bool) {
	switch s := ds.GetSpecifier().(type) {
	case *corev3.DataSource_Filename:
		return DataSource{Filename: s.Filename}, true
	case *corev3.DataSource_InlineString:
		return DataSource{Inline: []byte(s.InlineString)}, true
	case *corev3.DataSource_InlineBytes:
		return DataSource{Inline: s.InlineBytes}, true
	}
	c.fail(path, "required: one of filename, inline_string, inline_bytes")
	return DataSource{}, false
}

// inlineOnly refuses a DataSource's filename where meshproof reads inline content only.
func (c *converter) inlineOnly(ds *corev3.DataSource, path string) {
	if _, ok := ds.GetSpecifier().(*corev3.DataSource_Filename); ok {
		c.fail(joinPath(path, "filename"), "not supported here (only for TLS certificates, keys and CAs); use inline_string or inline_bytes")
	}
}

// ParseCertificates parses the PEM CERTIFICATE blocks of b (other blocks are skipped); none is an
// error.
func ParseCertificates(b []byte) ([]*x509.Certificate, error) {
	var out []*x509.Certificate
	for n := 1; ; n++ {
		var block *pem.Block
		block, b = pem.Decode(b)
		if block == nil {
			break
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("PEM block %d: not an X.509 certificate: %v", n, err)
		}
		out = append(out, cert)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no PEM CERTIFICATE block found")
	}
	return out, nil
}

func sortedKeys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	slices.Sort(out)
	return out
}
