package plan

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/scenarios"
)

// PKI is a run's mesh certificates (mesh.mtls): a CA made for the run and one certificate per
// workload (each service, each ingress proxy) — ECDSA P-256, short-lived, a SPIFFE URI SAN
// (scenarios.SPIFFEID) and a DNS SAN of the workload's name — written as files under one directory
// for the proxies (scenarios.MeshTLS), and kept in memory for the instances' TLS servers. Rotate
// re-issues every certificate from the same CA.
type PKI struct {
	TLS      scenarios.MeshTLS
	lifetime time.Duration
	ca       *x509.Certificate
	caKey    *ecdsa.PrivateKey
	pool     *x509.CertPool

	mu        sync.Mutex // serialises Rotate
	certs     sync.Map   // workload → *atomic.Pointer[tls.Certificate]
	workloads []string
	rotations atomic.Int64
	serial    atomic.Int64
	clients   sync.Map // serial of every client certificate an instance accepted → struct{}
}

// NewPKI makes a CA and issues a certificate valid for lifetime to each workload, written under dir.
func NewPKI(dir string, workloads []string, lifetime time.Duration) (*PKI, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	k := &PKI{TLS: scenarios.MeshTLS{Dir: dir}, lifetime: lifetime, caKey: key, workloads: slices.Clone(workloads)}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(k.serial.Add(1)), Subject: pkix.Name{CommonName: "meshproof run CA", Organization: []string{scenarios.TrustDomain}},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(lifetime + 24*time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	if k.ca, err = x509.ParseCertificate(der); err != nil {
		return nil, err
	}
	k.pool = x509.NewCertPool()
	k.pool.AddCert(k.ca)
	if err := writeFile(k.TLS.CAFile(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, err
	}
	if err := k.issueAll(); err != nil {
		return nil, err
	}
	return k, nil
}

// Rotate re-issues every workload's certificate from the run's CA: the files are replaced (each by a
// rename, the chain before the key) and the instances' servers present the new ones from their next
// handshake. A proxy sees its files change within a second and keeps its previous pair while the chain
// and the key do not match.
func (k *PKI) Rotate() error {
	if err := k.issueAll(); err != nil {
		return err
	}
	k.rotations.Add(1)
	return nil
}

// Rotations is how many times Rotate succeeded.
func (k *PKI) Rotations() int { return int(k.rotations.Load()) }

func (k *PKI) issueAll() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, w := range k.workloads {
		if err := k.issue(w); err != nil {
			return fmt.Errorf("mesh certificate of %s: %w", w, err)
		}
	}
	return nil
}

// issue makes workload's certificate and key, writes them and makes them the current pair.
func (k *PKI) issue(workload string) error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	id, err := url.Parse(scenarios.SPIFFEID(workload))
	if err != nil {
		return err
	}
	now := time.Now()
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(k.serial.Add(1)), Subject: pkix.Name{CommonName: workload},
		NotBefore: now.Add(-time.Minute), NotAfter: now.Add(k.lifetime),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
		DNSNames:    []string{workload}, URIs: []*url.URL{id}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, k.ca, &key.PublicKey, k.caKey)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
	pair, err := tls.X509KeyPair(certPEM, keyPEM)
	if err != nil {
		return err
	}
	if err := writeFile(k.TLS.CertFile(workload), certPEM, 0o644); err != nil {
		return err
	}
	if err := writeFile(k.TLS.KeyFile(workload), keyPEM, 0o600); err != nil {
		return err
	}
	p, _ := k.certs.LoadOrStore(workload, new(atomic.Pointer[tls.Certificate]))
	p.(*atomic.Pointer[tls.Certificate]).Store(&pair)
	return nil
}

// Certificate is workload's current certificate and key.
func (k *PKI) Certificate(workload string) (*tls.Certificate, error) {
	p, ok := k.certs.Load(workload)
	if !ok {
		return nil, fmt.Errorf("no mesh certificate for %q", workload)
	}
	return p.(*atomic.Pointer[tls.Certificate]).Load(), nil
}

// ClientCertificates is how many distinct client certificates the instances accepted (ServerConfig):
// with rotation, more than the proxies' identities once the proxies present re-issued ones.
func (k *PKI) ClientCertificates() int {
	n := 0
	k.clients.Range(func(any, any) bool { n++; return true })
	return n
}

// Pool holds the run's CA.
func (k *PKI) Pool() *x509.CertPool { return k.pool }

// ServerConfig is the TLS server configuration of an instance of service: TLS 1.2 or later, its
// service's current certificate, a client certificate required and verified against the run's CA,
// whose URI SAN must be one of allowed (scenarios.Scenario.AllowedCallers).
func (k *PKI) ServerConfig(service string, allowed []string) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		ClientAuth: tls.RequireAndVerifyClientCert,
		ClientCAs:  k.pool,
		GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
			return k.Certificate(service)
		},
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return errors.New("no client certificate")
			}
			for _, u := range cs.PeerCertificates[0].URIs {
				if slices.Contains(allowed, u.String()) {
					k.clients.Store(cs.PeerCertificates[0].SerialNumber.String(), struct{}{})
					return nil
				}
			}
			return fmt.Errorf("client identity %v may not call %s (allowed: %v)", cs.PeerCertificates[0].URIs, service, allowed)
		},
	}
}

// writeFile replaces path with data by a rename, so that a reader sees the old file or the new one.
func writeFile(path string, data []byte, perm os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), ".tmp-*")
	if err != nil {
		return err
	}
	_, err = tmp.Write(data)
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Chmod(tmp.Name(), perm)
	}
	if err == nil {
		err = os.Rename(tmp.Name(), path)
	}
	if err != nil {
		_ = os.Remove(tmp.Name())
	}
	return err
}
