package netx_test

import (
	"context"
	"errors"
	"io"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults/internal/netx"
)

func TestSleep(t *testing.T) {
	tests := []struct {
		name     string
		give     time.Duration
		cancelAt time.Duration // 0 = never
		want     bool
		wantTook time.Duration
	}{
		{"waits the whole delay", 2 * time.Second, 0, true, 2 * time.Second},
		{"ends early when the context ends", 2 * time.Second, 500 * time.Millisecond, false, 500 * time.Millisecond},
		{"no delay, live context", 0, 0, true, 0},
		{"negative delay is none", -time.Second, 0, true, 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				g := gomega.NewWithT(t)
				ctx, cancel := context.WithCancel(t.Context())
				defer cancel()
				if tt.cancelAt > 0 {
					time.AfterFunc(tt.cancelAt, cancel)
				}
				began := time.Now()
				g.Expect(netx.Sleep(ctx, tt.give)).To(gomega.Equal(tt.want))
				g.Expect(time.Since(began)).To(gomega.Equal(tt.wantTook))
			})
		})
	}
}

func TestSleepOnAnEndedContext(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	gomega.NewWithT(t).Expect(netx.Sleep(ctx, 0)).To(gomega.BeFalse())
}

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
