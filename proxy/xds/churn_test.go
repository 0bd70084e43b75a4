package xds_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	previoushostsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/retry/host/previous_hosts/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/clientload"
	"github.com/meshproof/meshproof/proxy/stats"
	"github.com/meshproof/meshproof/proxy/xds"
)

// instance is one upstream instance on loopback (a pod of the service): it answers after a short
// service time with its name in x-instance, and counts its requests and connections.
type instance struct {
	name               string
	srv                *httptest.Server
	requests           atomic.Int64
	open, opened       atomic.Int64 // connections open now, and ever
	service            time.Duration
	hold               chan struct{} // when set, requests wait for it to close
	closed             atomic.Bool
	requestsAtRemoval  int64 // requests counted once its removal was ACKed
	requestsWhenClosed int64 // requests counted when the proxy had closed its connections
}

func newInstance(name string, service time.Duration) *instance {
	in := &instance{name: name, service: service}
	in.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		in.requests.Add(1)
		if in.hold != nil {
			select {
			case <-in.hold:
			case <-r.Context().Done():
			}
		}
		if in.service > 0 {
			time.Sleep(in.service) // service time: requests are in flight when the configuration changes
		}
		w.Header().Set("x-instance", in.name)
		_, _ = io.WriteString(w, in.name)
	}))
	in.srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateNew:
			in.open.Add(1)
			in.opened.Add(1)
		case http.StateClosed, http.StateHijacked:
			in.open.Add(-1)
		}
	}
	in.srv.Start()
	DeferCleanup(in.stop)
	return in
}

func (in *instance) addr() string { return in.srv.Listener.Addr().String() }

// stop shuts the instance down gracefully: it stops accepting, closes its idle connections and
// waits for the requests it is serving (a pod's SIGTERM after its preStop).
func (in *instance) stop() {
	if in.closed.CompareAndSwap(false, true) {
		in.srv.Close()
	}
}

// kill ends the instance at once: its listener closes and every connection is reset, requests in
// flight included (a pod killed, or a node lost).
func (in *instance) kill() {
	if in.closed.CompareAndSwap(false, true) {
		in.srv.Listener.Close()
		in.srv.CloseClientConnections()
		if in.hold != nil {
			close(in.hold)
		}
		in.srv.Close()
	}
}

// churnRoutes sends every request to backend with a route timeout and a response header, both of which
// the churn changes.
func churnRoutes(name string, timeout time.Duration, headerValue string, retry *routev3.RetryPolicy) *routev3.RouteConfiguration {
	rc := routeTo(name, "backend")
	r := rc.VirtualHosts[0].Routes[0]
	r.GetRoute().Timeout = durationpb.New(timeout)
	r.GetRoute().RetryPolicy = retry
	r.ResponseHeadersToAdd = []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-routes", Value: headerValue}}}
	return rc
}

// breakerCluster is backend with a max_requests circuit breaker.
func breakerCluster(maxRequests uint32) *clusterv3.Cluster {
	c := edsCluster("backend")
	c.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
		MaxRequests: wrapperspb.UInt32(maxRequests)}}}
	return c
}

func addrsOf(ins []*instance) []string {
	out := make([]string, len(ins))
	for i, in := range ins {
		out[i] = in.addr()
	}
	return out
}

var _ = Describe("a proxy configured over ADS, under load", func() {
	for _, apiType := range []string{"GRPC", "DELTA_GRPC"} {
		Context("over ADS "+apiType, func() {
			var (
				cp      *controlPlane
				evs     *events
				srv     *proxy.Server
				version int
			)

			BeforeEach(func() {
				cp = newControlPlane()
				DeferCleanup(cp.shutdown)
				evs = &events{}
				version = 0
			})

			// start runs a proxy whose listener, routes, cluster and endpoints come over ADS, and its xDS
			// client (on a fake clock: no initial fetch timeout or back-off fires) applying every
			// configuration with Server.Update, once the control plane has a first snapshot.
			start := func() {
				cfg, pb, err := config.ParseBootstrap([]byte(bootstrapYAML(apiType, cp.port())), "bootstrap.yaml")
				Expect(err).NotTo(HaveOccurred())
				st := stats.NewStore()
				srv, err = proxy.New(cfg, proxy.Options{Bootstrap: pb, Stats: st, DrainTime: time.Second})
				Expect(err).NotTo(HaveOccurred())
				Expect(srv.Start()).To(Succeed())
				DeferCleanup(srv.Close)
				c, err := xds.New(xds.Options{Bootstrap: pb, Config: cfg, Applier: srv, Stats: st,
					Clock: clock.NewFake(time.Unix(1_700_000_000, 0)), OnEvent: evs.add})
				Expect(err).NotTo(HaveOccurred())
				ctx, cancel := context.WithCancel(context.Background())
				done := make(chan error, 1)
				go func() { done <- c.Run(ctx) }()
				DeferCleanup(func() {
					cancel()
					Eventually(done).WithTimeout(wait).Should(Receive(MatchError(context.Canceled)))
				})
				Eventually(func() string { return srv.ListenerAddr("ingress") }).WithTimeout(wait).WithPolling(poll).ShouldNot(BeEmpty())
			}

			// publish sets the next snapshot version and waits until the proxy ACKed it for the type url
			// (the type that changed: a delta stream only sends what changed). The ACK is sent once
			// Server.Update returned: the proxy runs it.
			publish := func(url string, rs ...types.Resource) string {
				GinkgoHelper()
				version++
				v := "v" + strconv.Itoa(version)
				cp.set(v, rs...)
				Eventually(evs.list).WithTimeout(wait).WithPolling(poll).Should(ContainElement(And(
					HaveField("Kind", xds.EventACK), HaveField("TypeURL", url), HaveField("Version", v))),
					"the ACK of %s %s", url, v)
				return v
			}

			It("churn: serves every request during a rolling replacement, a route change and a cluster change", func() {
				const (
					live    = 3  // instances serving at any time (the Deployment's replicas)
					rolls   = 10 // replacements: each is two EDS versions, one added, one removed
					workers = 6
				)
				var all []*instance
				for i := range live + rolls {
					all = append(all, newInstance(fmt.Sprintf("pod-%d", i), 500*time.Microsecond))
				}
				serving := append([]*instance(nil), all[:live]...)
				routes := churnRoutes("local_route", 5*time.Second, "r1", nil)
				backend := breakerCluster(1024)
				listener := rdsListener("ingress", "local_route")
				snapshot := func() []types.Resource {
					return []types.Resource{backend, endpoints("backend", addrsOf(serving)...), listener, routes}
				}
				cp.set("v0", snapshot()...)
				start()
				url := "http://" + srv.ListenerAddr("ingress") + "/"

				l := clientload.Start(url, workers, nil)
				l.WaitFor(100)
				began := time.Now()
				acked := map[string]bool{}
				for k := range rolls {
					// A new pod is ready: added.
					serving = append(serving, all[live+k])
					acked[publish(xds.TypeEndpoint, snapshot()...)] = true
					l.WaitFor(30)

					// An old pod is terminating: removed from EDS, still running through its preStop.
					old := serving[0]
					serving = serving[1:]
					acked[publish(xds.TypeEndpoint, snapshot()...)] = true
					old.requestsAtRemoval = old.requests.Load()
					// Envoy drains a removed host's connection pools: its idle connections close now, the
					// others once their requests are answered. Ours close once the requests that began on
					// the configuration before (which may still pick it) are answered.
					Eventually(old.open.Load).WithTimeout(wait).WithPolling(time.Millisecond).Should(BeZero(),
						"the connections to %s, removed", old.name)
					old.requestsWhenClosed = old.requests.Load()
					l.WaitFor(30)
					old.stop() // its preStop ended: SIGTERM

					switch k {
					case rolls / 2:
						// The routes change: a shorter timeout, another response header.
						routes = churnRoutes("local_route", 3*time.Second, "r2", nil)
						acked[publish(xds.TypeRoute, snapshot()...)] = true
						l.WaitFor(30)
						resp, err := http.Get(url)
						Expect(err).NotTo(HaveOccurred())
						_, _ = io.Copy(io.Discard, resp.Body)
						resp.Body.Close()
						Expect(resp.Header.Get("x-routes")).To(Equal("r2"))
					case rolls/2 + 1:
						// The cluster changes (its breaker): Envoy replaces the cluster, new pools; the old
						// cluster's connections close once its requests are answered.
						backend = breakerCluster(512)
						acked[publish(xds.TypeCluster, snapshot()...)] = true
						l.WaitFor(30)
					}
				}
				took := time.Since(began)
				l.Stop()

				Expect(l.Failed.Load()).To(BeZero(), "first failure: %v", l.FirstFailure())
				Expect(acked).To(HaveLen(2*rolls + 2))
				Expect(cp.nacks()).To(BeEmpty())
				AddReportEntry("churn "+apiType, fmt.Sprintf("%d requests in %v, %d EDS versions, 1 RDS, 1 CDS change, 0 failed",
					l.OK.Load(), took.Round(time.Millisecond), 2*rolls))

				for i, in := range all {
					if i >= live {
						Expect(in.requests.Load()).To(BeNumerically(">", 0), "the new %s got traffic", in.name)
					}
					if i >= rolls {
						continue // still serving
					}
					// Removed: only the requests that began before the removal was applied (at most one
					// per worker) reached it afterwards, and none once its connections were closed.
					Expect(in.requests.Load()-in.requestsAtRemoval).To(BeNumerically("<=", workers), in.name)
					Expect(in.requests.Load()).To(Equal(in.requestsWhenClosed), in.name)
				}
				for _, in := range serving {
					Expect(in.closed.Load()).To(BeFalse())
				}
				Expect(srv.Stats().Counter("cluster.backend.membership_change").Value()).To(BeNumerically(">=", 2*rolls-2))
				Expect(srv.Stats().Counter("cluster_manager.cluster_modified").Value()).To(Equal(uint64(1)))
			})

			It("churn: serves every request while its listener changes its route configuration, then its connection settings", func() {
				in := newInstance("pod-0", 500*time.Microsecond)
				listener, routes := rdsListener("ingress", "local_route"), "local_route"
				// A consistent snapshot: the route configuration the listener names (go-control-plane's
				// cache in ADS mode answers a state-of-the-world request only when it names every resource
				// of its type in the snapshot).
				snapshot := func() []types.Resource {
					return []types.Resource{edsCluster("backend"), endpoints("backend", in.addr()), listener,
						churnRoutes(routes, 5*time.Second, strings.TrimSuffix(routes, "_route"), nil)}
				}
				cp.set("v0", snapshot()...)
				start()
				addr := srv.ListenerAddr("ingress")
				routesHeader := func() string {
					resp, err := http.Get("http://" + addr + "/")
					Expect(err).NotTo(HaveOccurred())
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					return resp.Header.Get("x-routes")
				}
				Expect(routesHeader()).To(Equal("local"))
				l := clientload.Start("http://"+addr+"/", 6, nil)
				l.WaitFor(100)

				// Another route configuration: the listener warms until it arrives, then its connections
				// take it from their next request (no drain: Envoy's listener_manager.listener_in_place_updated).
				listener, routes = rdsListener("ingress", "other_route"), "other_route"
				publish(xds.TypeListener, snapshot()...)
				Eventually(routesHeader).WithTimeout(wait).WithPolling(poll).Should(Equal("other"))
				l.WaitFor(100)
				Expect(srv.Stats().Gauge("listener_manager.total_listeners_draining").Value()).To(BeZero())

				// Its connections' idle timeout: a new server takes the socket, the old one drains its
				// connections (Connection: close) over the drain time, then closes them.
				hcm := &hcmv3.HttpConnectionManager{}
				Expect(listener.FilterChains[0].Filters[0].GetTypedConfig().UnmarshalTo(hcm)).To(Succeed())
				hcm.CommonHttpProtocolOptions = &corev3.HttpProtocolOptions{IdleTimeout: durationpb.New(time.Minute)}
				listener.FilterChains[0].Filters[0].ConfigType = &listenerv3.Filter_TypedConfig{TypedConfig: mustAny(hcm)}
				publish(xds.TypeListener, snapshot()...)
				Expect(srv.Stats().Gauge("listener_manager.total_listeners_draining").Value()).To(Equal(int64(1)))
				l.WaitFor(100)
				Eventually(srv.Stats().Gauge("listener_manager.total_listeners_draining").Value).WithTimeout(wait).
					WithPolling(poll).Should(BeZero())
				l.WaitFor(100)
				l.Stop()

				Expect(l.Failed.Load()).To(BeZero(), "first failure: %v", l.FirstFailure())
				Expect(srv.ListenerAddr("ingress")).To(Equal(addr))
				Expect(srv.Stats().Counter("listener_manager.listener_modified").Value()).To(Equal(uint64(2)))
				Expect(srv.Stats().Counter("http.ingress.downstream_cx_drain_close").Value()).To(BeNumerically(">", 0))
				Expect(cp.nacks()).To(BeEmpty())
			})

			// Envoy's behaviour for a host removed and killed at once (no preStop): the requests in flight
			// on its connections are reset, which the router answers with a 503 "upstream connect error or
			// disconnect/reset before headers. reset reason: connection termination" (UC) unless the route
			// retries on reset (Router::Filter::onUpstreamReset, source/common/router/router.cc; retry_on
			// "reset", router docs x-envoy-retry-on); a request that picked it before the removal was
			// applied fails to connect, retried on connect-failure. Once the removal is applied, no
			// attempt goes to it (the removed host leaves the host set the load balancer picks from).
			Context("churn: an instance removed from EDS and killed at the same moment", func() {
				var a, b *instance
				var l *clientload.Load
				// killA starts load on a and b, holds requests on a, then removes a and kills it.
				killA := func(retry *routev3.RetryPolicy) {
					a, b = newInstance("a", 0), newInstance("b", 500*time.Microsecond)
					a.hold = make(chan struct{})
					// Every request held on a is retried at once when it is killed: more than Envoy's default
					// max_retries breaker (3) allows (upstream_rq_retry_overflow, a 503).
					backend := breakerCluster(1024)
					backend.CircuitBreakers.Thresholds[0].MaxRetries = wrapperspb.UInt32(64)
					cp.set("v0", backend, endpoints("backend", a.addr(), b.addr()),
						rdsListener("ingress", "local_route"), churnRoutes("local_route", 5*time.Second, "r1", retry))
					start()
					l = clientload.Start("http://"+srv.ListenerAddr("ingress")+"/", 6, nil)
					Eventually(a.requests.Load).WithTimeout(wait).WithPolling(time.Millisecond).Should(BeNumerically(">=", 3))
					cp.set("v1", backend, endpoints("backend", b.addr()),
						rdsListener("ingress", "local_route"), churnRoutes("local_route", 5*time.Second, "r1", retry))
					a.kill()
					Eventually(evs.list).WithTimeout(wait).WithPolling(poll).Should(ContainElement(And(
						HaveField("Kind", xds.EventACK), HaveField("TypeURL", xds.TypeEndpoint), HaveField("Version", "v1"))))
					l.WaitFor(200)
					l.Stop()
				}

				It("fails the requests in flight on it with a 503 (UC) without retries", func() {
					killA(nil)
					Expect(l.Failed.Load()).To(BeNumerically(">=", 3), "the requests held on a")
					Expect(l.FirstFailure()).To(Equal("status 503"))
					Expect(srv.Stats().Counter("cluster.backend.upstream_rq_rx_reset").Value()).
						To(BeNumerically(">=", 1))
				})

				It("saves them with retry_on reset,connect-failure: zero failed requests", func() {
					// Envoy's advice for retries to other hosts: the previous_hosts predicate (a retry that
					// began before the removal was applied could pick the killed host again).
					killA(&routev3.RetryPolicy{RetryOn: "reset,connect-failure", NumRetries: wrapperspb.UInt32(2),
						RetryHostPredicate: []*routev3.RetryPolicy_RetryHostPredicate{{Name: "envoy.retry_host_predicates.previous_hosts",
							ConfigType: &routev3.RetryPolicy_RetryHostPredicate_TypedConfig{TypedConfig: mustAny(&previoushostsv3.PreviousHostsPredicate{})}}},
						HostSelectionRetryMaxAttempts: 3})
					Expect(l.Failed.Load()).To(BeZero(), "first failure: %v", l.FirstFailure())
					Expect(srv.Stats().Counter("cluster.backend.upstream_rq_retry").Value()).To(BeNumerically(">=", 3))
					Expect(srv.Stats().Counter("cluster.backend.upstream_rq_retry_success").Value()).To(BeNumerically(">=", 3))
				})
			})
		})
	}
})
