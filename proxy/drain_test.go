package proxy_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/clientload"
)

// post POSTs to an admin path and returns the status, checking the body of a 200 (Envoy's "OK").
func post(url string) int {
	GinkgoHelper()
	resp, err := client.Post(url, "", nil)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	if resp.StatusCode == 200 {
		Expect(string(b)).To(Equal("OK\n"))
	}
	return resp.StatusCode
}

// closes says whether a GET of url is answered with Connection: close.
func closes(url string) bool {
	GinkgoHelper()
	resp, err := client.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	_, _ = io.Copy(io.Discard, resp.Body)
	Expect(resp.StatusCode).To(Equal(200))
	return resp.Close
}

func refused(addr string) func() error {
	return func() error {
		c, err := net.Dial("tcp", addr)
		if err == nil {
			c.Close()
		}
		return err
	}
}

var _ = Describe("Draining", func() {
	var backend *upstream
	BeforeEach(func() { backend = newUpstream(ok) })

	It("fails the health check: /ready answers 503 at once and every response closes its connection", func() {
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())}})
		admin := "http://" + srv.AdminAddr()
		code, _, body := get(admin + "/ready")
		Expect([]any{code, body}).To(Equal([]any{200, "LIVE\n"}))
		Expect(closes(url + "/")).To(BeFalse())

		Expect(post(admin + "/healthcheck/fail")).To(Equal(200))
		code, _, body = get(admin + "/ready")
		Expect([]any{code, body}).To(Equal([]any{503, "DRAINING\n"}))
		Expect(closes(url + "/")).To(BeTrue())
		Expect(closes(url + "/")).To(BeTrue())
		Expect(stat(srv, "http.ingress.downstream_cx_drain_close")).To(Equal(uint64(2)))
		Expect(stat(srv, "server.state")).To(Equal(uint64(1)))
		Expect(stat(srv, "server.live")).To(BeZero())

		Expect(post(admin + "/healthcheck/ok")).To(Equal(200))
		code, _, _ = get(admin + "/ready")
		Expect(code).To(Equal(200))
		Expect(closes(url + "/")).To(BeFalse())
		Expect(stat(srv, "server.state")).To(BeZero())
	})

	It("answers /ready 503 INITIALIZING until the first configuration (a dynamic bootstrap's initial fetch)", func() {
		srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())}})
		admin := "http://" + srv.AdminAddr()
		srv.SetInitializing(true)
		code, _, body := get(admin + "/ready")
		Expect([]any{code, body}).To(Equal([]any{503, "INITIALIZING\n"}))
		_, _, info := get(admin + "/server_info")
		Expect(info).To(MatchRegexp(`"state":\s*"INITIALIZING"`))
		Expect(stat(srv, "server.state")).To(Equal(uint64(3)))
		srv.SetInitializing(false)
		code, _, body = get(admin + "/ready")
		Expect([]any{code, body}).To(Equal([]any{200, "LIVE\n"}))
		Expect(stat(srv, "server.live")).To(Equal(uint64(1)))
	})

	It("stops accepting at once on POST /drain_listeners; a GET is refused", func() {
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())}})
		admin := "http://" + srv.AdminAddr()
		code, _, body := get(admin + "/drain_listeners")
		Expect([]any{code, body}).To(Equal([]any{405, "Method GET not allowed, POST required.\n"}))
		Expect(post(admin + "/drain_listeners")).To(Equal(200))
		Eventually(refused(srv.ListenerAddr("edge"))).Should(HaveOccurred())
		Expect(stat(srv, "listener_manager.listener_stopped")).To(Equal(uint64(1)))
		code, _, _ = get(admin + "/ready")
		Expect(code).To(Equal(503))
		_, err := http.Get(url + "/")
		Expect(err).To(HaveOccurred())
	})

	It("ends a long drain sooner when a shorter one is asked for (SIGTERM during /drain_listeners?graceful)", func() {
		clk := fakeClock()
		srv, _ := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", backend.addr())},
			opts: proxy.Options{Clock: clk, DrainTime: time.Hour}})
		long := srv.Drain(true, 0)
		short := srv.Drain(true, time.Second)
		Expect(short).To(Equal(long))
		Expect(refused(srv.ListenerAddr("edge"))()).To(Succeed())
		clk.Step(time.Second)
		Eventually(short).Should(BeClosed())
		Eventually(refused(srv.ListenerAddr("edge"))).Should(HaveOccurred())
	})

	It("drains gracefully behind a client that honours Connection: close, without a failed request", func() {
		clk := fakeClock()
		release := make(chan struct{})
		var slowStarted atomic.Bool
		slow := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/slow" {
				slowStarted.Store(true)
				<-release
			}
			io.WriteString(w, "ok")
		})
		srv, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", slow.addr())},
			opts: proxy.Options{Clock: clk, DrainTime: 10 * time.Second}})
		admin := "http://" + srv.AdminAddr()
		var inRotation atomic.Bool // the client's balancer: it stops sending once it saw /ready fail
		inRotation.Store(true)
		l := clientload.Start(url+"/", 4, inRotation.Load)
		l.WaitFor(50)

		Expect(post(admin + "/drain_listeners?graceful")).To(Equal(200))
		code, _, _ := get(admin + "/ready")
		Expect(code).To(Equal(503))
		// The balancer takes a while to act on /ready: meanwhile responses close their
		// connections, more and more often, and the client opens new ones.
		for range 9 {
			clk.Step(time.Second)
			l.WaitFor(30)
		}
		Expect(stat(srv, "http.ingress.downstream_cx_drain_close")).To(BeNumerically(">", 0))
		Expect(refused(srv.ListenerAddr("edge"))()).To(Succeed()) // still accepting within the drain time

		inFlight := make(chan int, 1)
		go func() {
			defer GinkgoRecover()
			code, _, _ := get(url + "/slow")
			inFlight <- code
		}()
		Eventually(slowStarted.Load).Should(BeTrue())
		inRotation.Store(false)
		// Regression (a CI flake): a request the balancer had already let through could still be
		// connecting — its connection in the listener's backlog — when the listener closed, and was
		// reset. A balancer's last requests must be answered before the proxy stops accepting, as with
		// Envoy, whose closed listener resets its backlog too.
		Eventually(l.InFlight.Load).Should(BeZero())
		clk.Step(time.Second) // the drain time is over: no new connection
		Eventually(refused(srv.ListenerAddr("edge"))).Should(HaveOccurred())

		close(release)
		Eventually(inFlight).Should(Receive(Equal(200)))
		l.Stop()
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		Expect(srv.Shutdown(ctx)).To(Succeed())
		Expect(l.Failed.Load()).To(BeZero(), "first failure: %v", l.FirstFailure())
		GinkgoWriter.Printf("%d requests, %d closed by the drain, 0 failed\n", l.OK.Load(), stat(srv, "http.ingress.downstream_cx_drain_close"))
	})
})
