package netx_test

import (
	"errors"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults/internal/netx"
)

func TestRST(t *testing.T) {
	g := gomega.NewWithT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			accepted <- c
		}
	}()
	client, err := net.Dial("tcp", ln.Addr().String())
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer client.Close()
	netx.RST(<-accepted)
	_, err = io.ReadAll(client)
	g.Expect(errors.Is(err, syscall.ECONNRESET)).To(gomega.BeTrue(), "got %v, want ECONNRESET", err)
}
