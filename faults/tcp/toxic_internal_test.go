package tcp

import (
	"testing"
	"time"

	"github.com/onsi/gomega"
)

// Every toxic type has a behaviour that does something: acts on chunks, on a timer, on the close or
// on the listener; and its name is the type that builds it.
func TestToxicTypes(t *testing.T) {
	tests := []struct {
		give string
		want []string // the interfaces it implements
	}{
		{TypeLatency, []string{"chunker"}},
		{TypeBandwidth, []string{"chunker"}},
		{TypeSlowClose, []string{"closer"}},
		{TypeTimeout, []string{"chunker", "timed"}},
		{TypeResetPeer, []string{"timed"}},
		{TypeSlicer, []string{"chunker"}},
		{TypeLimitData, []string{"chunker"}},
		{TypeDown, []string{"listener"}},
	}
	g := gomega.NewWithT(t)
	g.Expect(typeNames()).To(gomega.HaveLen(len(tests)), "a toxic type without a row here")
	for _, tt := range tests {
		t.Run(tt.give, func(t *testing.T) {
			g := gomega.NewWithT(t)
			b, ok := behaviour(Toxic{Name: "x", Type: tt.give})
			g.Expect(ok).To(gomega.BeTrue())
			g.Expect(b.spec()).To(gomega.Equal(Toxic{Name: "x", Type: tt.give}))
			var got []string
			if _, ok := b.(chunker); ok {
				got = append(got, "chunker")
			}
			if _, ok := b.(timed); ok {
				got = append(got, "timed")
			}
			if _, ok := b.(closer); ok {
				got = append(got, "closer")
			}
			if _, ok := b.(listenerToxic); ok {
				got = append(got, "listener")
			}
			g.Expect(got).To(gomega.Equal(tt.want))
		})
	}
	_, ok := behaviour(Toxic{Type: "packet_loss"})
	g.Expect(ok).To(gomega.BeFalse())
}

// The timers: timeout only with a Timeout, reset_peer always (0 = at once).
func TestTimedAfter(t *testing.T) {
	tests := []struct {
		name      string
		give      timed
		wantDelay int64
		wantArmed bool
	}{
		{"timeout 0 never closes", timeout{Toxic{Type: TypeTimeout}}, 0, false},
		{"timeout closes after Timeout", timeout{Toxic{Type: TypeTimeout, Timeout: 5}}, 5, true},
		{"reset_peer 0 resets at once", resetPeer{Toxic{Type: TypeResetPeer}}, 0, true},
		{"reset_peer resets after Timeout", resetPeer{Toxic{Type: TypeResetPeer, Timeout: 7}}, 7, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gomega.NewWithT(t)
			d, armed := tt.give.after()
			g.Expect(int64(d)).To(gomega.Equal(tt.wantDelay))
			g.Expect(armed).To(gomega.Equal(tt.wantArmed))
		})
	}
}

// A chunk through limit_data, latency, slicer and bandwidth: truncated, delayed by the drawn
// latency, cut by the first slicer, paced by every bandwidth.
func TestChunk(t *testing.T) {
	g := gomega.NewWithT(t)
	var events []Event
	l := &link{p: &Proxy{cfg: Config{Name: "p", Now: time.Now, OnEvent: func(e Event) { events = append(events, e) }}}, n: 1}
	c := chunk{l: l, p: []byte("0123456789")}
	lat := latency{Toxic{Name: "l", Type: TypeLatency, Latency: 3}}
	first, second := slicer{Toxic{Name: "s1", Type: TypeSlicer, AverageSize: 2}}, slicer{Toxic{Name: "s2", Type: TypeSlicer, AverageSize: 5}}
	limitData{Toxic{Name: "d", Type: TypeLimitData, Bytes: 4}}.chunk(&c, &state{forwarded: 1})
	lat.chunk(&c, &state{rng: ToxicRand(1, "l", 1)})
	first.chunk(&c, &state{rng: ToxicRand(1, "s1", 1)})
	second.chunk(&c, &state{rng: ToxicRand(1, "s2", 1)})
	bandwidth{Toxic{Type: TypeBandwidth, Rate: 10}}.chunk(&c, nil)
	bandwidth{Toxic{Type: TypeBandwidth, Rate: 5}}.chunk(&c, nil)
	g.Expect(string(c.p)).To(gomega.Equal("012"), "4 bytes allowed, 1 already forwarded")
	g.Expect(c.cut).To(gomega.BeTrue())
	g.Expect(int64(c.delay)).To(gomega.Equal(int64(3)))
	g.Expect(c.slicer.Name).To(gomega.Equal("s1"))
	g.Expect(c.rates).To(gomega.Equal([]int{10, 5}))
	g.Expect(c.drop).To(gomega.BeFalse())
	g.Expect(events).To(gomega.HaveExactElements(gomega.And(
		gomega.HaveField("Toxic", "d"), gomega.HaveField("Conn", uint64(1)), gomega.HaveField("Detail", "closed after 4 bytes"))))
	timeout{Toxic{Type: TypeTimeout}}.chunk(&c, nil)
	g.Expect(c.drop).To(gomega.BeTrue())
}
