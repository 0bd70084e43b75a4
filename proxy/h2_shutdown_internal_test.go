package proxy

import (
	"bytes"
	"context"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"github.com/onsi/gomega"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// A shutdown that comes as a connection was just accepted (in s.conns, x/net not yet serving it)
// still has it go away: GOAWAY is sent, the stream it processed completes, and shutdown returns
// without waiting out its context (which would close the connection, its streams with it).
func TestH2ShutdownRacingAFreshConnectionSendsGoAway(t *testing.T) {
	g := gomega.NewWithT(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	g.Expect(err).NotTo(gomega.HaveOccurred())
	defer ln.Close()
	var hdr bytes.Buffer
	enc := hpack.NewEncoder(&hdr)
	for _, f := range [][2]string{{":method", "GET"}, {":scheme", "http"}, {":authority", "h2.test"}, {":path", "/"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	for i := range 300 {
		srv := newH2Server(config.Listener{StatPrefix: "ingress"}, http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			_, _ = io.WriteString(w, "ok")
		}), &connManager{st: newHCMStats(stats.NewStore(), "ingress")}, stats.NewStore(), clock.Real{}, nil)
		cc, err := net.Dial("tcp", ln.Addr().String())
		g.Expect(err).NotTo(gomega.HaveOccurred())
		nc, err := ln.Accept()
		g.Expect(err).NotTo(gomega.HaveOccurred())
		g.Expect(cc.SetDeadline(time.Now().Add(10 * time.Second))).To(gomega.Succeed())
		_, err = io.WriteString(cc, http2.ClientPreface)
		g.Expect(err).NotTo(gomega.HaveOccurred())
		fr := http2.NewFramer(cc, cc)
		g.Expect(fr.WriteSettings()).To(gomega.Succeed())
		g.Expect(fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: hdr.Bytes(), EndStream: true, EndHeaders: true})).To(gomega.Succeed())

		type result struct {
			goAway *http2.GoAwayFrame
			body   string
			ended  bool
		}
		read := make(chan result, 1)
		go func() {
			var r result
			for {
				f, err := fr.ReadFrame()
				if err != nil {
					read <- r
					return
				}
				switch f := f.(type) {
				case *http2.SettingsFrame:
					if !f.IsAck() {
						_ = fr.WriteSettingsAck()
					}
				case *http2.GoAwayFrame:
					r.goAway = f
				case *http2.DataFrame:
					r.body += string(f.Data())
					r.ended = r.ended || f.StreamEnded()
				}
				if r.goAway != nil && (r.goAway.LastStreamID == 0 || r.ended) {
					cc.Close() // as a client does: x/net would otherwise wait a second for it
				}
			}
		}()
		go srv.serveConn(nc, nil)
		// Shut down as soon as the connection is in s.conns: x/net has most likely not registered it.
		for {
			srv.mu.Lock()
			n := len(srv.conns)
			srv.mu.Unlock()
			if n > 0 {
				break
			}
			time.Sleep(time.Microsecond)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		err = srv.shutdown(ctx)
		cancel()
		g.Expect(err).NotTo(gomega.HaveOccurred(), "iteration %d: shutdown waited out its context", i)
		var r result
		g.Eventually(read).WithTimeout(5*time.Second).Should(gomega.Receive(&r), "iteration %d", i)
		cc.Close()
		g.Expect(r.goAway).NotTo(gomega.BeNil(), "iteration %d: a GOAWAY", i)
		g.Expect(r.goAway.ErrCode).To(gomega.Equal(http2.ErrCodeNo), "iteration %d", i)
		if r.goAway.LastStreamID == 1 { // the stream was processed: it completed
			g.Expect([]any{r.body, r.ended}).To(gomega.Equal([]any{"ok", true}), "iteration %d", i)
		} else { // GOAWAY came before x/net read the stream: not processed, the client may retry it
			g.Expect(r.goAway.LastStreamID).To(gomega.BeZero(), "iteration %d", i)
		}
	}
}
