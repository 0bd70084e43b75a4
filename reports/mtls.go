package reports

import (
	"fmt"

	"github.com/meshproof/meshproof/reports/record"
)

// MTLSOutcome is what a mutual-TLS mesh's handshakes did (record.Record.MTLS): the proxies' side from
// their Envoy ssl.* cluster stats — the ingress proxy's clusters and every sidecar's, summed over the
// call graph's edges — and the instances' side from their records.
type MTLSOutcome struct {
	Workloads, Rotations int
	// ClientCertificates is how many distinct client certificates the instances accepted
	// (record.MTLS.ClientCertificates).
	ClientCertificates int
	// Handshakes are the proxies' completed handshakes (cluster.<c>.ssl.handshake, health checks
	// included); HandshakeErrors their failed ones: ssl.connection_error, ssl.fail_verify_no_cert,
	// ssl.fail_verify_error and ssl.fail_verify_san.
	Handshakes, HandshakeErrors uint64
	// InstanceHandshakes and InstanceHandshakeErrors are the instances' completed and failed handshakes
	// as servers.
	InstanceHandshakes, InstanceHandshakeErrors uint64
}

// Errors is every failed handshake, the proxies' and the instances' (a handshake both sides saw fail
// counts twice): the ssl_handshake_errors metric.
func (m MTLSOutcome) Errors() uint64 { return m.HandshakeErrors + m.InstanceHandshakeErrors }

// sslErrorStats are the ssl.* counters of a failed handshake (Envoy's TLS statistics).
var sslErrorStats = []string{"ssl.connection_error", "ssl.fail_verify_no_cert", "ssl.fail_verify_error", "ssl.fail_verify_san"}

// mtlsOutcome is nil for a plain mesh.
func mtlsOutcome(rec *record.Record) *MTLSOutcome {
	if rec.MTLS == nil {
		return nil
	}
	m := &MTLSOutcome{Workloads: rec.MTLS.Workloads, Rotations: rec.MTLS.Rotations, ClientCertificates: rec.MTLS.ClientCertificates}
	m.Handshakes = sumClusterStat(rec.ProxyStats, "ssl.handshake")
	for _, s := range sslErrorStats {
		m.HandshakeErrors += sumClusterStat(rec.ProxyStats, s)
	}
	for _, e := range rec.Edges {
		m.Handshakes += e.SidecarStats["ssl.handshake"]
		for _, s := range sslErrorStats {
			m.HandshakeErrors += e.SidecarStats[s]
		}
	}
	for _, u := range rec.Upstreams {
		m.InstanceHandshakes += u.TLSHandshakes
		m.InstanceHandshakeErrors += u.TLSHandshakeErrors
	}
	return m
}

// judgeMTLS judges ssl_handshakes, ssl_handshake_errors and cert_rotations.
func judgeMTLS(v Verdict, name string, m *MTLSOutcome) (Verdict, float64, bool) {
	if m == nil {
		v.Observed = name + " not recorded: the mesh is plain (set mesh: {mtls: true})"
		return v, 0, false
	}
	switch name {
	case "ssl_handshakes":
		v.Observed = fmt.Sprintf("ssl_handshakes = %d (the proxies'; the instances completed %d)", m.Handshakes, m.InstanceHandshakes)
		return v, float64(m.Handshakes), true
	case "ssl_handshake_errors":
		v.Observed = fmt.Sprintf("ssl_handshake_errors = %d (the proxies' %d, the instances' %d)", m.Errors(), m.HandshakeErrors, m.InstanceHandshakeErrors)
		return v, float64(m.Errors()), true
	default: // cert_rotations
		v.Observed = fmt.Sprintf("cert_rotations = %d (%d certificates each)", m.Rotations, m.Workloads)
		return v, float64(m.Rotations), true
	}
}

// mtlsText is the key numbers' row of a mutual-TLS mesh.
func mtlsText(m *MTLSOutcome) string {
	return fmt.Sprintf("on: %d handshakes by the proxies, %d failed; the instances %d, %d failed; %d certificates, rotated %d times; %d distinct client certificates accepted",
		m.Handshakes, m.HandshakeErrors, m.InstanceHandshakes, m.InstanceHandshakeErrors, m.Workloads, m.Rotations, m.ClientCertificates)
}
