package tcp_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"sync"
	"syscall"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	. "github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/faults/tcp"
)

// server is a loopback TCP server: it writes payload to each connection, then echoes what it reads
// until the client closes its side.
func server(payload []byte) string {
	GinkgoHelper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() {
				defer c.Close()
				if _, err := c.Write(payload); err != nil {
					return
				}
				_, _ = io.Copy(c, c)
			})
		}
	})
	DeferCleanup(func() {
		_ = ln.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

type events struct {
	mu  sync.Mutex
	all []tcp.Event
}

func (e *events) Add(ev tcp.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.all = append(e.all, ev)
}

func (e *events) All() []tcp.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]tcp.Event(nil), e.all...)
}

var _ = Describe("Proxy", func() {
	var seen *events

	BeforeEach(func() {
		before := Goroutines()
		seen = &events{}
		DeferCleanup(func() { Eventually(Goroutines).ShouldNot(HaveLeaked(before)) })
	})

	start := func(upstream string, toxics ...tcp.Toxic) *tcp.Proxy {
		GinkgoHelper()
		p, err := tcp.NewProxy(tcp.Config{Name: "checkout/0", Seed: 7, Toxics: toxics, OnEvent: seen.Add})
		Expect(err).NotTo(HaveOccurred())
		Expect(p.Start("127.0.0.1:0", upstream)).To(Succeed())
		DeferCleanup(p.Close)
		return p
	}

	dial := func(p *tcp.Proxy) net.Conn {
		GinkgoHelper()
		c, err := net.Dial("tcp", p.Addr())
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(c.Close)
		Expect(c.SetDeadline(time.Now().Add(10 * time.Second))).To(Succeed())
		return c
	}

	// readAll reads until EOF or an error, counting the reads that returned data.
	readAll := func(c net.Conn) ([]byte, int, error) {
		var buf bytes.Buffer
		reads := 0
		p := make([]byte, 64<<10)
		for {
			n, err := c.Read(p)
			if n > 0 {
				reads++
				buf.Write(p[:n])
			}
			if err != nil {
				if errors.Is(err, io.EOF) {
					err = nil
				}
				return buf.Bytes(), reads, err
			}
		}
	}

	payload := bytes.Repeat([]byte("0123456789"), 2000) // 20,000 bytes

	It("forwards both ways without toxics", func() {
		p := start(server(payload))
		c := dial(p)
		_, err := c.Write([]byte("ping"))
		Expect(err).NotTo(HaveOccurred())
		Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed())
		got, _, err := readAll(c)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(append(append([]byte(nil), payload...), "ping"...)))
	})

	It("delays data by the latency (lower bound) in the chosen direction", func() {
		p := start(server(nil), tcp.Toxic{Type: tcp.TypeLatency, Latency: 100 * time.Millisecond, Jitter: 10 * time.Millisecond, Stream: tcp.Upstream, Toxicity: 100})
		c := dial(p)
		began := time.Now()
		_, err := c.Write([]byte("ping"))
		Expect(err).NotTo(HaveOccurred())
		got := make([]byte, 4)
		_, err = io.ReadFull(c, got)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(got)).To(Equal("ping"))
		Expect(time.Since(began)).To(BeNumerically(">=", 90*time.Millisecond))
		Expect(seen.All()).To(ContainElement(And(HaveField("Conn", BeEquivalentTo(1)), HaveField("Type", "latency"), HaveField("Detail", "applies"))))
	})

	It("limits the bandwidth (lower bound)", func() {
		p := start(server(payload), tcp.Toxic{Type: tcp.TypeBandwidth, Rate: 100, Toxicity: 100})
		// From before the dial: the proxy starts pacing as soon as it has accepted, which on a busy
		// machine can be before the dialing goroutine runs again.
		began := time.Now()
		c := dial(p)
		got := make([]byte, len(payload))
		_, err := io.ReadFull(c, got)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(payload))
		Expect(time.Since(began)).To(BeNumerically(">=", time.Duration(float64(len(payload))/(100*1024)*float64(time.Second))))
	})

	It("closes the connection after limit_data bytes", func() {
		p := start(server(payload), tcp.Toxic{Type: tcp.TypeLimitData, Bytes: 1000, Toxicity: 100})
		got, _, err := readAll(dial(p))
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(Equal(payload[:1000]))
	})

	It("resets the peer (ECONNRESET) after the timeout", func() {
		p := start(server(nil), tcp.Toxic{Type: tcp.TypeResetPeer, Timeout: 20 * time.Millisecond, Toxicity: 100})
		began := time.Now() // the timer starts when the proxy accepts
		c := dial(p)
		_, _, err := readAll(c)
		Expect(err).To(MatchError(syscall.ECONNRESET))
		Expect(time.Since(began)).To(BeNumerically(">=", 20*time.Millisecond))
		Expect(seen.All()).To(ContainElement(HaveField("Detail", "reset")))
	})

	It("holds data forever with timeout 0, and closes after a timeout otherwise", func() {
		p := start(server(payload), tcp.Toxic{Type: tcp.TypeTimeout, Toxicity: 100})
		c := dial(p)
		Expect(c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))).To(Succeed())
		n, err := c.Read(make([]byte, 10))
		Expect(n).To(BeZero())
		var ne net.Error
		Expect(errors.As(err, &ne) && ne.Timeout()).To(BeTrue(), "got %v", err)

		Expect(p.SetToxics(tcp.Toxic{Name: "t2", Type: tcp.TypeTimeout, Timeout: 30 * time.Millisecond, Toxicity: 100})).To(Succeed())
		began := time.Now() // the timer starts when the proxy accepts
		c = dial(p)
		got, _, err := readAll(c)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(BeEmpty())
		Expect(time.Since(began)).To(BeNumerically(">=", 30*time.Millisecond))
	})

	It("delays the close by slow_close (lower bound)", func() {
		p := start(server(payload), tcp.Toxic{Type: tcp.TypeSlowClose, Delay: 50 * time.Millisecond, Stream: tcp.Upstream, Toxicity: 100})
		c := dial(p)
		got := make([]byte, len(payload))
		_, err := io.ReadFull(c, got)
		Expect(err).NotTo(HaveOccurred())
		began := time.Now()
		Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed())
		_, _, err = readAll(c) // the server sees our FIN late, so closes late
		Expect(err).NotTo(HaveOccurred())
		Expect(time.Since(began)).To(BeNumerically(">=", 50*time.Millisecond))
	})

	It("slices data into several reads, delivering it intact", func() {
		p := start(server(payload[:2000]), tcp.Toxic{Type: tcp.TypeSlicer, AverageSize: 100, SizeVariation: 50, Delay: time.Millisecond, Toxicity: 100})
		c := dial(p)
		got := make([]byte, 2000)
		reads := 0
		for off := 0; off < len(got); reads++ {
			n, err := c.Read(got[off:])
			Expect(err).NotTo(HaveOccurred())
			off += n
		}
		Expect(got).To(Equal(payload[:2000]))
		Expect(reads).To(BeNumerically(">", 1))
	})

	It("refuses connections while down and listens again on the same address after", func() {
		p := start(server([]byte("hi")))
		open := dial(p)
		addr := p.Addr()
		Expect(p.SetToxics(tcp.Toxic{Type: tcp.TypeDown})).To(Succeed())
		_, err := net.Dial("tcp", addr)
		Expect(err).To(MatchError(syscall.ECONNREFUSED))
		_, _, err = readAll(open)
		Expect(err).To(Or(Not(HaveOccurred()), MatchError(syscall.ECONNRESET)), "the open connection is closed")

		Expect(p.SetToxics()).To(Succeed())
		Expect(p.Addr()).To(Equal(addr))
		got := make([]byte, 2)
		_, err = io.ReadFull(dial(p), got)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(got)).To(Equal("hi"))
		Expect(seen.All()).To(ContainElements(HaveField("Detail", "listener closed"), HaveField("Detail", "listener reopened")))
	})

	DescribeTable("applies a toxic to its toxicity's share of connections",
		func(toxicity float64, wantLimited int) {
			p := start(server(payload), tcp.Toxic{Type: tcp.TypeLimitData, Bytes: 10, Toxicity: toxicity})
			limited := 0
			for range 10 {
				c := dial(p)
				Expect(c.(*net.TCPConn).CloseWrite()).To(Succeed()) // the server closes once it has echoed nothing
				got, _, err := readAll(c)
				Expect(err).NotTo(HaveOccurred())
				if len(got) == 10 {
					limited++
				} else {
					Expect(got).To(Equal(payload))
				}
			}
			Expect(limited).To(Equal(wantLimited))
		},
		Entry("0%: none", 0.0, 0),
		Entry("100%: all", 100.0, 10),
	)

	It("decides toxicity per connection from the seed", func() {
		toxic := tcp.Toxic{Name: "lat", Type: tcp.TypeLatency, Toxicity: 50}
		p := start(server(nil), toxic)
		for range 20 {
			c := dial(p)
			_, err := c.Write([]byte("x"))
			Expect(err).NotTo(HaveOccurred())
			_, err = io.ReadFull(c, make([]byte, 1))
			Expect(err).NotTo(HaveOccurred())
		}
		var want, got []uint64
		for n := uint64(1); n <= 20; n++ {
			if toxic.Applies(tcp.ToxicRand(7, "lat", n)) {
				want = append(want, n)
			}
		}
		for _, e := range seen.All() {
			got = append(got, e.Conn)
		}
		Expect(got).To(ConsistOf(want))
		Expect(len(want)).To(BeNumerically("~", 10, 6))
	})

	It("draws the same jitter and slices for the same seed", func() {
		t := tcp.Toxic{Type: tcp.TypeSlicer, AverageSize: 10, SizeVariation: 5, Latency: 0, Jitter: 0}
		Expect(t.SliceSizes(1000, tcp.ToxicRand(1, "s", 3))).To(Equal(t.SliceSizes(1000, tcp.ToxicRand(1, "s", 3))))
		Expect(t.SliceSizes(1000, tcp.ToxicRand(1, "s", 3))).NotTo(Equal(t.SliceSizes(1000, tcp.ToxicRand(1, "s", 4))))
		l := tcp.Toxic{Type: tcp.TypeLatency, Latency: time.Second, Jitter: 100 * time.Millisecond}
		a, b := l.LatencyOf(tcp.ToxicRand(1, "l", 1)), l.LatencyOf(tcp.ToxicRand(1, "l", 1))
		Expect(a).To(Equal(b))
		Expect(a).To(BeNumerically("~", time.Second, 100*time.Millisecond))
	})

	DescribeTable("rejects invalid toxics",
		func(t tcp.Toxic, want string) {
			_, err := tcp.NewProxy(tcp.Config{Toxics: []tcp.Toxic{t}})
			Expect(err).To(MatchError(tcp.ErrInvalidConfig))
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("unknown type", tcp.Toxic{Type: "packet_loss"}, `toxics[0].type: "packet_loss" is not a toxic`),
		Entry("bad stream", tcp.Toxic{Type: "latency", Stream: "sideways"}, `toxics[0].stream: "sideways" is not a stream`),
		Entry("toxicity above 100", tcp.Toxic{Type: "latency", Toxicity: 101}, "toxics[0].toxicity: 101 is out of range, want 0..100"),
		Entry("bandwidth without rate", tcp.Toxic{Type: "bandwidth"}, "toxics[0].rate: 0 is not positive, want > 0 KB/s"),
		Entry("slicer variation too large", tcp.Toxic{Type: "slicer", AverageSize: 10, SizeVariation: 10}, "toxics[0].size_variation: 10 is out of range"),
	)
})
