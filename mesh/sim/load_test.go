package sim

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/reports/record"
)

// echo answers every request after a fixed delay with 200, keeping what it received by request id.
type echo struct {
	en    *Engine
	delay time.Duration
	got   map[string]string // "mp-<seq>" → "METHOD path host"
}

func (e *echo) Handle(req *Request, done func(Result)) {
	e.got[req.ID] = req.Method + " " + req.Path + " " + req.Authority
	e.en.After(e.delay, func() { done(Result{Status: 200, Attempts: 1}) })
}

func (e *echo) Stats() map[string]uint64 { return nil }

var _ = Describe("the simulated load", func() {
	cfg := func(url string) load.Config {
		return load.Config{URL: url + "/base", Seed: 42, Poisson: true,
			Phases: []load.Phase{load.Constant("warm", 200*time.Millisecond, 100), load.Ramp("ramp", 300*time.Millisecond, 100, 300)},
			Mix:    []load.Request{{Weight: 3}, {Weight: 1, Method: http.MethodPost, Path: "/b?x=1"}}}
	}

	It("sends the live generator's requests at its intended times for a seed", func() {
		var mu sync.Mutex
		live := map[string]string{}
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			mu.Lock()
			live[r.Header.Get(load.HeaderRequestID)] = r.Method + " " + r.URL.RequestURI()
			mu.Unlock()
		}))
		DeferCleanup(srv.Close)
		liveSamples, _, err := load.Run(context.Background(), cfg(srv.URL))
		Expect(err).NotTo(HaveOccurred())
		Expect(len(liveSamples)).To(BeNumerically(">", 50))

		en := &Engine{}
		e := &echo{en: en, delay: time.Millisecond, got: map[string]string{}}
		c, err := newClient(en, cfg("http://edge:10000"), e, "edge:10000", 50*time.Microsecond)
		Expect(err).NotTo(HaveOccurred())
		c.start()
		en.Run(-1)

		Expect(c.samples).To(HaveLen(len(liveSamples)))
		for i, s := range c.samples {
			Expect(s.Seq).To(Equal(liveSamples[i].Seq))
			Expect(s.Intended).To(Equal(liveSamples[i].Intended), "seq %d", s.Seq)
			id := "mp-" + strconv.FormatUint(s.Seq, 10)
			method, rest, _ := strings.Cut(e.got[id], " ")
			path, host, _ := strings.Cut(rest, " ")
			Expect(method+" "+path).To(Equal(live[id]), "seq %d", s.Seq)
			Expect(host).To(Equal("edge:10000"))
			// sent at once, one hop there and back around the echo's 1 ms
			Expect(s).To(Equal(record.Sample{Seq: s.Seq, Intended: s.Intended, Sent: s.Intended,
				Latency: time.Millisecond + 100*time.Microsecond, Status: 200, Attempts: 1}))
		}
	})

	It("holds a request due while the in-flight cap is reached until one ends: send lag, latency from the intended time", func() {
		en := &Engine{}
		e := &echo{en: en, delay: 25 * time.Millisecond, got: map[string]string{}}
		lc := load.Config{URL: "http://edge/", Rate: 100, Duration: 50 * time.Millisecond}
		c, err := newClient(en, lc, e, "edge", 0)
		Expect(err).NotTo(HaveOccurred())
		c.max = 2
		c.start()
		en.Run(-1)
		// Intended 0, 10, 20, 30, 40 ms; each takes 25 ms; two at a time.
		sent := []time.Duration{}
		for _, s := range c.samples {
			sent = append(sent, s.Sent)
			Expect(s.Latency).To(Equal(s.Sent - s.Intended + 25*time.Millisecond))
		}
		Expect(sent).To(Equal([]time.Duration{0, 10 * time.Millisecond, 25 * time.Millisecond, 35 * time.Millisecond, 50 * time.Millisecond}))
	})

	It("times a request out at the client's timeout from its send", func() {
		en := &Engine{}
		e := &echo{en: en, delay: time.Hour, got: map[string]string{}}
		lc := load.Config{URL: "http://edge/", Rate: 10, Duration: 300 * time.Millisecond, Timeout: 2 * time.Second}
		c, err := newClient(en, lc, e, "edge", 50*time.Microsecond)
		Expect(err).NotTo(HaveOccurred())
		idle := time.Duration(-1)
		c.onIdle = func() { idle = en.Now() }
		c.start()
		en.Run(-1)
		Expect(c.samples).To(HaveLen(3))
		for _, s := range c.samples {
			Expect(s.Error).To(Equal(record.ErrTimeout))
			Expect(s.Latency).To(Equal(2 * time.Second))
		}
		Expect(idle).To(Equal(200*time.Millisecond + 2*time.Second))
	})
})
