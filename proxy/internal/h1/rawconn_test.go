package h1_test

import (
	"crypto/tls"
	"net"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// wrapped is a connection wrapper that says which connection it wraps, as the proxy's counted
// connections do.
type wrapped struct{ net.Conn }

func (w wrapped) NetConn() net.Conn { return w.Conn }

var _ = Describe("raw socket I/O", func() {
	var tcp net.Conn
	BeforeEach(func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(ln.Close)
		tcp, err = net.Dial("tcp", ln.Addr().String())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(tcp.Close)
	})

	It("reaches a TCP socket through wrappers", func() {
		Expect(h1.HasRawConn(wrapped{tcp})).To(BeTrue())
	})

	// Regression: a *tls.Conn says which connection it wraps too (NetConn), and the codec's raw writes
	// would have sent requests in clear text on a TLS upstream connection.
	It("stops at a TLS connection, whose socket carries records rather than the stream", func() {
		Expect(h1.HasRawConn(wrapped{tls.Client(tcp, &tls.Config{InsecureSkipVerify: true})})).To(BeFalse())
		Expect(h1.HasRawConn(tls.Server(tcp, &tls.Config{}))).To(BeFalse())
	})
})
