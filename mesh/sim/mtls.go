package sim

import (
	"strings"
	"time"

	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// meshTLS is mesh.mtls on virtual time: every proxy → instance connection starts with a mutual-TLS
// handshake, and the mesh's certificates are re-issued every rotate_every, as the embedded runner does
// it (mesh/live startPKI and rotate, mesh/plan/pki.go).
//
// What is modelled:
//   - the handshake: one more round trip (2×Hop) after the TCP connect on each new connection of a
//     proxy's pool, before the connection takes a request (TLS 1.3's full handshake is one round trip
//     after the connect; Envoy counts a completed one when SslSocket::onSuccess calls
//     ContextImpl::logHandshake, source/common/tls/ssl_socket.cc and context_impl.cc);
//   - its counters under the live names: the proxy's "cluster.<c>.ssl.handshake" (Envoy's TLS
//     statistics, docs/root/_include/ssl_stats.rst; the others at 0) and the instance's TLSHandshakes;
//   - rotations: one at each multiple of rotate_every up to the load's end, the instant the live record
//     is read (its ticker counts the rounds issued until then);
//   - the distinct client certificates the instances accepted: one per (calling workload, round of
//     issue) that made a handshake.
//
// What is not: certificate failures (no handshake ever fails: ssl_handshake_errors is 0), TLS
// session resumption, and the live proxy's up to one second delay before it presents a re-issued
// certificate (the simulated proxy presents the round in force at the handshake).
type meshTLS struct {
	every     time.Duration // rotate_every; 0: never rotated
	workloads int
	// handshakes are the proxies' completed handshakes, by proxy and cluster.
	handshakes map[*Proxy]map[string]uint64
	clients    map[clientCert]bool
}

// clientCert is one client certificate: a workload's, of one round of issue.
type clientCert struct {
	workload string
	round    int64
}

// newMeshTLS is nil for a plain mesh.
func newMeshTLS(sc *scenarios.Scenario) *meshTLS {
	if !sc.MTLSOn() {
		return nil
	}
	return &meshTLS{every: sc.Mesh.RotateEvery.Duration, workloads: len(sc.Workloads()),
		handshakes: map[*Proxy]map[string]uint64{}, clients: map[clientCert]bool{}}
}

// round is the round of issue in force at t.
func (m *meshTLS) round(t time.Duration) int64 {
	if m.every <= 0 {
		return 0
	}
	return int64(t / m.every)
}

// tlsHandshake is the handshake on a connection h's pool opened, whose connect the instance accepted
// now: the extra delay before the connection is ready (0 on a plain mesh, or toward a non-instance).
// The instance counts its handshake when the client's last flight reaches it (one hop before the proxy
// sees the connection ready); the proxy counts its own when the handshake ends.
func (h *host) tlsHandshake() time.Duration {
	it, ok := inner(h.up)
	if !ok || it.w.mtls == nil {
		return 0
	}
	m, en, px, cluster := it.w.mtls, it.w.en, h.c.p, h.c.name
	// The caller's identity: an ingress proxy's, or the calling service's for a sidecar ("service/i").
	workload := scenarios.IngressIdentity(px.name)
	if svc, _, isSidecar := strings.Cut(px.name, "/"); isSidecar {
		workload = svc
	}
	hop := h.c.p.hop
	en.After(hop, func() {
		it.stats.TLSHandshakes++
		m.clients[clientCert{workload, m.round(en.Now())}] = true
	})
	en.After(2*hop, func() {
		byCluster := m.handshakes[px]
		if byCluster == nil {
			byCluster = map[string]uint64{}
			m.handshakes[px] = byCluster
		}
		byCluster[cluster]++
	})
	return 2 * hop
}

// sslZeroStats are the ssl.* counters of a cluster the simulator never moves.
var sslZeroStats = []string{"connection_error", "no_certificate", "fail_verify_no_cert", "fail_verify_error", "fail_verify_san", "session_reused"}

// addStats adds px's ssl.* counters to its stats m, under the live proxy's names.
func (m *meshTLS) addStats(px *Proxy, stats map[string]uint64) {
	if m == nil {
		return
	}
	// Every cluster of a proxy reaches instances, over mutual TLS: its ssl.* counters exist from the
	// start, the failures' at 0 (proxy/tls.go newSSLStats).
	for _, c := range px.ordered {
		p := "cluster." + c.name + ".ssl."
		for _, name := range sslZeroStats {
			stats[p+name] = 0
		}
		stats[p+"handshake"] = m.handshakes[px][c.name]
	}
}

// record is the run's record.MTLS at the load's end; nil on a plain mesh.
func (m *meshTLS) record(end time.Duration) *record.MTLS {
	if m == nil {
		return nil
	}
	return &record.MTLS{Workloads: m.workloads, Rotations: int(m.round(end)), ClientCertificates: len(m.clients)}
}
