package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/grpc"

	"github.com/meshproof/meshproof/cmd/internal/proxycmd"
)

// backendNamed answers every request with its name.
func backendNamed(name string) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, name) }))
	DeferCleanup(srv.Close)
	return srv
}

func portOf(url string) string { return url[strings.LastIndex(url, ":")+1:] }

// staticBootstrap is the example bootstrap on free ports, its cluster's two endpoints both at backend.
func staticBootstrap(backend string) string {
	data, err := os.ReadFile("../../proxy/testdata/bootstrap.yaml")
	Expect(err).NotTo(HaveOccurred())
	p := portOf(backend)
	return strings.NewReplacer("port_value: 9901", "port_value: 0", "port_value: 10000", "port_value: 0",
		"port_value: 8080", "port_value: "+p, "port_value: 8081", "port_value: "+p).Replace(string(data))
}

// proxyRun is `meshproof proxy` running in the background with its seams.
type proxyRun struct {
	stdout, stderr  syncBuffer
	done            chan int
	listener, admin string
	cancel          context.CancelFunc
}

var addrsRE = regexp.MustCompile(`listener ingress on (\S+)\n(?:.*\n)*?admin on (\S+)\n|admin on (\S+)\n(?:.*\n)*?listener ingress on (\S+)\n`)

func runProxy(env proxycmd.Env, args ...string) *proxyRun {
	GinkgoHelper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &proxyRun{done: make(chan int, 1), cancel: cancel}
	go func() { r.done <- proxycmd.Run(ctx, env, "meshproof proxy", args, &r.stdout, &r.stderr) }()
	DeferCleanup(func() {
		cancel()
		Eventually(r.done).WithTimeout(10 * time.Second).Should(Receive())
	})
	Eventually(r.stdout.String).WithTimeout(10*time.Second).Should(MatchRegexp(addrsRE.String()), "stderr: %s", r.stderr.String())
	m := addrsRE.FindStringSubmatch(r.stdout.String())
	r.listener, r.admin = m[1]+m[4], m[2]+m[3]
	return r
}

func getBody(url string) (int, string) {
	GinkgoHelper()
	resp, err := http.Get(url)
	Expect(err).NotTo(HaveOccurred())
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	Expect(err).NotTo(HaveOccurred())
	return resp.StatusCode, string(b)
}

// statValue reads one stat from the admin's /stats.
func statValue(admin, name string) int {
	GinkgoHelper()
	_, body := getBody("http://" + admin + "/stats?filter=^" + regexp.QuoteMeta(name) + "$")
	v, _ := strconv.Atoi(strings.TrimSpace(strings.TrimPrefix(body, name+":")))
	return v
}

// clientLoad keeps workers sending GETs over keep-alive connections until stopped, counting failures.
type clientLoad struct {
	ok, failed atomic.Int64
	first      atomic.Value
	stop       func()
}

func startClientLoad(url string, workers int) *clientLoad {
	l := &clientLoad{}
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != 200 {
						err = fmt.Errorf("status %d", resp.StatusCode)
					}
				}
				if err != nil {
					l.failed.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
					continue
				}
				l.ok.Add(1)
			}
		}()
	}
	var once sync.Once
	l.stop = func() { once.Do(func() { cancel(); wg.Wait(); tr.CloseIdleConnections() }) }
	DeferCleanup(l.stop)
	return l
}

func (l *clientLoad) waitFor(n int64) {
	GinkgoHelper()
	target := l.ok.Load() + n
	Eventually(l.ok.Load).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).Should(BeNumerically(">=", target))
}

var _ = Describe("meshproof proxy: reload, drain and xDS", func() {
	It("reloads the bootstrap on SIGHUP 100 times under load without a failed request, and keeps it when the new one is invalid", Label("slow"), func() {
		a, b := backendNamed("a"), backendNamed("b")
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		yamlA, yamlB := staticBootstrap(a.URL), staticBootstrap(b.URL)
		Expect(os.WriteFile(path, []byte(yamlA), 0o644)).To(Succeed())
		hup := make(chan os.Signal, 1)
		reloads := make(chan error, 1)
		r := runProxy(proxycmd.Env{Reload: hup, PollInterval: -1, OnReload: func(err error) { reloads <- err }}, "-c", path, "--drain-time", "0s")
		url := "http://" + r.listener + "/"

		l := startClientLoad(url, 4)
		l.waitFor(20)
		began := time.Now()
		const n = 100
		for i := range n {
			next := yamlB
			if i%2 == 1 {
				next = yamlA
			}
			Expect(os.WriteFile(path, []byte(next), 0o644)).To(Succeed())
			hup <- syscall.SIGHUP
			Eventually(reloads).WithTimeout(5 * time.Second).Should(Receive(BeNil()))
			l.waitFor(10)
		}
		took := time.Since(began)
		l.stop()
		Expect(l.failed.Load()).To(BeZero(), "first failure: %v", l.first.Load())
		AddReportEntry("100 reloads under load", fmt.Sprintf("%d requests in %v, 0 failed", l.ok.Load(), took.Round(time.Millisecond)))
		Expect(statValue(r.admin, "server.config_reload_success")).To(Equal(n))
		Expect(r.listener).To(Equal(regexp.MustCompile(`listener ingress on (\S+)`).FindStringSubmatch(r.stdout.String())[1]))

		// An unsupported field: the running configuration stays, the error names the field.
		bad := strings.Replace(yamlB, "      lb_policy: ROUND_ROBIN\n", "      lb_policy: ROUND_ROBIN\n      dns_lookup_family: V4_ONLY\n", 1)
		Expect(os.WriteFile(path, []byte(bad), 0o644)).To(Succeed())
		hup <- syscall.SIGHUP
		Eventually(reloads).Should(Receive(HaveOccurred()))
		Expect(r.stderr.String()).To(ContainSubstring("static_resources.clusters[0].dns_lookup_family: "))
		Expect(statValue(r.admin, "server.config_reload_failed")).To(Equal(1))
		code, body := getBody(url)
		Expect([]any{code, body}).To(Equal([]any{200, "a"}))
	})

	It("reloads the bootstrap when its file changes", func() {
		a, b := backendNamed("a"), backendNamed("b")
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		Expect(os.WriteFile(path, []byte(staticBootstrap(a.URL)), 0o644)).To(Succeed())
		reloads := make(chan error, 1)
		r := runProxy(proxycmd.Env{PollInterval: 10 * time.Millisecond, OnReload: func(err error) { reloads <- err }}, "-c", path, "--drain-time", "0s")
		_, body := getBody("http://" + r.listener + "/")
		Expect(body).To(Equal("a"))
		Consistently(reloads, 50*time.Millisecond).ShouldNot(Receive()) // an unchanged file is not reloaded

		Expect(os.WriteFile(path, []byte(staticBootstrap(b.URL)), 0o644)).To(Succeed())
		Eventually(reloads).Should(Receive(BeNil()))
		_, body = getBody("http://" + r.listener + "/")
		Expect(body).To(Equal("b"))
	})

	It("drains on SIGTERM: /ready fails at once, an in-flight request completes, then exit 0", func() {
		release := make(chan struct{})
		started := make(chan struct{}, 1)
		slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
			started <- struct{}{}
			<-release
			io.WriteString(w, "slow")
		}))
		DeferCleanup(slow.Close)
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		Expect(os.WriteFile(path, []byte(staticBootstrap(slow.URL)), 0o644)).To(Succeed())
		r := runProxy(proxycmd.Env{PollInterval: -1}, "-c", path, "--drain-time", "300ms")
		got := make(chan string, 1)
		go func() {
			defer GinkgoRecover()
			code, body := getBody("http://" + r.listener + "/")
			got <- fmt.Sprint(code, " ", body)
		}()
		Eventually(started).Should(Receive())
		r.cancel() // SIGTERM
		Eventually(func() int { code, _ := getBody("http://" + r.admin + "/ready"); return code }).Should(Equal(503))
		Eventually(func() error { // after the drain time: no new connection
			c, err := net.Dial("tcp", r.listener)
			if err == nil {
				c.Close()
			}
			return err
		}).Should(HaveOccurred())
		close(release)
		Eventually(got).Should(Receive(Equal("200 slow")))
		Eventually(r.done).WithTimeout(5 * time.Second).Should(Receive(Equal(0)))
		r.done <- 0 // for the cleanup
	})

	It("runs from a dynamic bootstrap: its routes and endpoints over ADS from go-control-plane's server, versions in /config_dump", func() {
		a, b := backendNamed("a"), backendNamed("b")
		cache := cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		Expect(err).NotTo(HaveOccurred())
		ctx, cancel := context.WithCancel(context.Background())
		gs := grpc.NewServer()
		discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, serverv3.NewServer(ctx, cache, nil))
		served := make(chan struct{})
		go func() { defer close(served); _ = gs.Serve(ln) }()
		DeferCleanup(func() { gs.Stop(); cancel(); <-served })

		publish := func(version, backend string) {
			host, p, _ := net.SplitHostPort(strings.TrimPrefix(backend, "http://"))
			port, _ := strconv.Atoi(p)
			eps := &endpointv3.ClusterLoadAssignment{ClusterName: "backend", Endpoints: []*endpointv3.LocalityLbEndpoints{{
				LbEndpoints: []*endpointv3.LbEndpoint{{HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{
					Address: &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
						Address: host, PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(port)}}}}}}}}}}}
			routes := &routev3.RouteConfiguration{Name: "local_route", VirtualHosts: []*routev3.VirtualHost{{
				Name: "all", Domains: []string{"*"}, Routes: []*routev3.Route{{
					Match:  &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
					Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: "backend"}}}}}}}}
			snap, err := cachev3.NewSnapshot(version, map[resource.Type][]types.Resource{
				resource.EndpointType: {eps}, resource.RouteType: {routes}})
			Expect(err).NotTo(HaveOccurred())
			Expect(cache.SetSnapshot(context.Background(), "edge-0", snap)).To(Succeed())
		}
		publish("v1", a.URL)

		_, cpPort, _ := net.SplitHostPort(ln.Addr().String())
		yaml := fmt.Sprintf(`
node: {id: edge-0, cluster: edge}
admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}
dynamic_resources:
  ads_config:
    api_type: GRPC
    transport_api_version: V3
    grpc_services: [{envoy_grpc: {cluster_name: xds_cluster}}]
static_resources:
  listeners:
  - name: ingress
    address: {socket_address: {address: 127.0.0.1, port_value: 0}}
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: ingress_http
          rds: {route_config_name: local_route, config_source: {ads: {}}}
          http_filters:
          - name: envoy.filters.http.router
            typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}
  clusters:
  - name: xds_cluster
    load_assignment:
      cluster_name: xds_cluster
      endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: %s}}}}]}]
  - name: backend
    type: EDS
    eds_cluster_config: {eds_config: {ads: {}}}
`, cpPort)
		path := filepath.Join(GinkgoT().TempDir(), "dynamic.yaml")
		Expect(os.WriteFile(path, []byte(yaml), 0o644)).To(Succeed())
		r := runProxy(proxycmd.Env{PollInterval: -1}, "-c", path, "--drain-time", "0s")
		url := "http://" + r.listener + "/"
		code, body := getBody(url)
		Expect([]any{code, body}).To(Equal([]any{200, "a"}))
		code, body = getBody("http://" + r.admin + "/ready") // INITIALIZING until the first configuration
		Expect([]any{code, body}).To(Equal([]any{200, "LIVE\n"}))
		_, dump := getBody("http://" + r.admin + "/config_dump")
		Expect(dump).To(MatchRegexp(`"version_info":\s*"v1"`))
		Expect(dump).To(ContainSubstring("type.googleapis.com/envoy.admin.v3.EndpointsConfigDump"))

		l := startClientLoad(url, 2)
		l.waitFor(20)
		publish("v2", b.URL) // the endpoints move: new requests go to b
		Eventually(func() string { _, body := getBody(url); return body }).Should(Equal("b"))
		l.waitFor(20)
		l.stop()
		Expect(l.failed.Load()).To(BeZero(), "first failure: %v", l.first.Load())
		_, dump = getBody("http://" + r.admin + "/config_dump")
		Expect(dump).To(MatchRegexp(`"version_info":\s*"v2"`))
		Expect(r.stderr.String()).To(BeEmpty())
	})
})
