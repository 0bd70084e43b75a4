package scenarios

import (
	"fmt"
	"path/filepath"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Mesh is the scenario's mesh-wide settings (the top-level `mesh` key).
type Mesh struct {
	// MTLS makes every hop from a proxy (an ingress proxy or an instance's outbound sidecar) to an
	// instance mutual TLS, with a CA and certificates the runner generates for each run (see
	// MeshTLS). The client → ingress proxy hop and an instance → its own sidecar hop stay plain.
	MTLS bool `yaml:"mtls"`
	// RotateEvery, when set (mtls only), re-issues every certificate from the run's CA at this
	// interval during the run: the proxies see their files change, the instances serve the new ones.
	RotateEvery Duration `yaml:"rotate_every"`
}

// MinRotateEvery is the shortest accepted mesh.rotate_every: the proxy looks at its certificate files
// at most once a second.
const MinRotateEvery = 2 * time.Second

// MTLSOn reports whether the scenario's mesh is mutual TLS.
func (sc *Scenario) MTLSOn() bool { return sc.Mesh != nil && sc.Mesh.MTLS }

// TrustDomain is the SPIFFE trust domain of a run's identities.
const TrustDomain = "meshproof.local"

// SPIFFEID is the identity of a workload as a URI SAN, in Istio's form
// (spiffe://<trust domain>/ns/<namespace>/sa/<service account>), the service account being the
// workload's name: a service's, or an ingress proxy's IngressIdentity.
func SPIFFEID(workload string) string {
	return "spiffe://" + TrustDomain + "/ns/default/sa/" + workload
}

// IngressIdentity is the workload name (service account) of an ingress proxy: it gets an identity of
// its own, not one of the services it routes to.
func IngressIdentity(proxy string) string { return "ingress-" + proxy }

// MeshTLS is where a run's mesh certificates are: one directory holding the CA (ca.pem) and, per
// workload, its certificate chain (<workload>.pem) and key (<workload>-key.pem). A workload is a
// service or an ingress proxy's IngressIdentity.
type MeshTLS struct {
	Dir string
}

// CAFile is the run's CA certificate.
func (m *MeshTLS) CAFile() string { return filepath.Join(m.Dir, "ca.pem") }

// CertFile is a workload's certificate chain.
func (m *MeshTLS) CertFile(workload string) string { return filepath.Join(m.Dir, workload+".pem") }

// KeyFile is a workload's private key.
func (m *MeshTLS) KeyFile(workload string) string { return filepath.Join(m.Dir, workload+"-key.pem") }

// Workloads lists every workload that needs a certificate: each service (as a server, and as a caller
// for its sidecar's client certificate) and each ingress proxy.
func (sc *Scenario) Workloads() []string {
	out := sortedKeys(sc.Services)
	for _, p := range sortedKeys(sc.Proxies) {
		out = append(out, IngressIdentity(p))
	}
	return out
}

// AllowedCallers lists the SPIFFE ids an instance of service accepts a client certificate from: its
// callers' (their sidecars call it) and the ingress proxies' that route to it. The instance refuses any
// other identity, even one the run's CA issued (as an Istio AuthorizationPolicy naming principals would).
func (sc *Scenario) AllowedCallers(service string) []string {
	var out []string
	for _, e := range sc.Edges() {
		if e.Callee == service {
			out = append(out, SPIFFEID(e.Caller))
		}
	}
	for _, name := range sortedKeys(sc.Proxies) {
		for _, s := range sc.Proxies[name].Services() {
			if s == service {
				out = append(out, SPIFFEID(IngressIdentity(name)))
			}
		}
	}
	return out
}

// upstreamTLS is the transport socket of a cluster to callee's instances, for a proxy whose workload
// identity is caller: an UpstreamTlsContext (Envoy api/envoy/extensions/transport_sockets/tls/v3/tls.proto)
// presenting caller's certificate, trusting only the run's CA, requiring the server's URI SAN to be
// callee's SPIFFE id (common.proto, CertificateValidationContext.match_typed_subject_alt_names with a
// SubjectAltNameMatcher of san_type URI) and sending callee as the SNI.
func upstreamTLS(m *MeshTLS, caller, callee string) (*corev3.TransportSocket, error) {
	file := func(path string) *corev3.DataSource {
		return &corev3.DataSource{Specifier: &corev3.DataSource_Filename{Filename: path}}
	}
	ctx := &tlsv3.UpstreamTlsContext{
		Sni: callee,
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificates: []*tlsv3.TlsCertificate{{CertificateChain: file(m.CertFile(caller)), PrivateKey: file(m.KeyFile(caller))}},
			ValidationContextType: &tlsv3.CommonTlsContext_ValidationContext{ValidationContext: &tlsv3.CertificateValidationContext{
				TrustedCa: file(m.CAFile()),
				MatchTypedSubjectAltNames: []*tlsv3.SubjectAltNameMatcher{{
					SanType: tlsv3.SubjectAltNameMatcher_URI,
					Matcher: &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: SPIFFEID(callee)}},
				}},
			}},
		},
	}
	typed, err := anypb.New(ctx)
	if err != nil {
		return nil, err
	}
	// The transport socket's name as Envoy's well-known name for TLS (source/extensions/transport_sockets/tls).
	return &corev3.TransportSocket{Name: "envoy.transport_sockets.tls", ConfigType: &corev3.TransportSocket_TypedConfig{TypedConfig: typed}}, nil
}

// withMeshTLS gives cluster (to callee) the mesh's transport socket for the caller workload; a nil m
// leaves it as it is.
func withMeshTLS(cluster *clusterv3.Cluster, m *MeshTLS, caller, callee string) error {
	if m == nil {
		return nil
	}
	ts, err := upstreamTLS(m, caller, callee)
	if err != nil {
		return fmt.Errorf("cluster %s: mesh TLS: %w", callee, err)
	}
	cluster.TransportSocket = ts
	return nil
}

// meshTLS checks the mesh section: rotate_every needs mtls and is at least MinRotateEvery;
// with mtls, a cluster's transport_socket is generated, and no service may take an ingress proxy's
// identity.
func (v *validator) meshTLS() {
	m := v.sc.Mesh
	if m == nil {
		return
	}
	if d := m.RotateEvery.Duration; d != 0 {
		switch {
		case !m.MTLS:
			v.at("mesh.rotate_every", "rotate_every re-issues the mesh's certificates, and mesh.mtls is off: set mtls: true")
		case d < MinRotateEvery:
			v.at("mesh.rotate_every", "%s is too short: at least 2s (a proxy looks at its certificate files at most once a second)", d)
		}
	}
	if !m.MTLS {
		return
	}
	for _, name := range sortedKeys(v.sc.Proxies) {
		if p := v.sc.Proxies[name]; p != nil && p.ClusterSpec.GetTransportSocket() != nil {
			v.at("proxies."+name+".cluster.transport_socket", "the transport socket is generated by mesh.mtls (mutual TLS to every instance): remove it, or turn mesh.mtls off")
		}
		if _, clash := v.sc.Services[IngressIdentity(name)]; clash {
			v.at("services."+IngressIdentity(name), "with mesh.mtls, %q is proxy %s's identity: rename the service", IngressIdentity(name), name)
		}
	}
	if sd := v.sc.Sidecars; sd != nil {
		if sd.ClusterSpec.GetTransportSocket() != nil {
			v.at("sidecars.cluster.transport_socket", "the transport socket is generated by mesh.mtls (mutual TLS to every instance): remove it, or turn mesh.mtls off")
		}
		for _, name := range sortedKeys(sd.Services) {
			if c := sd.Services[name]; c != nil && c.ClusterSpec.GetTransportSocket() != nil {
				v.at("sidecars.services."+name+".cluster.transport_socket", "the transport socket is generated by mesh.mtls: remove it, or turn mesh.mtls off")
			}
		}
		for _, key := range sortedKeys(sd.Edges) {
			if c := sd.Edges[key]; c != nil && c.ClusterSpec.GetTransportSocket() != nil {
				v.at("sidecars.edges."+key+".cluster.transport_socket", "the transport socket is generated by mesh.mtls: remove it, or turn mesh.mtls off")
			}
		}
	}
}
