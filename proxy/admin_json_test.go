package proxy_test

import (
	"net"
	"strconv"
	"strings"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("the admin's Envoy-shaped JSON endpoints", func() {
	var (
		admin, url, upAddr string
	)
	BeforeEach(func() {
		u := newUpstream(ok)
		upAddr = u.addr()
		srv, l := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())}})
		url, admin = l, "http://"+srv.AdminAddr()
		get(url + "/")
	})
	decode := func(path string, m proto.Message) {
		GinkgoHelper()
		code, hdr, body := get(admin + path)
		Expect(code).To(Equal(200))
		Expect(hdr.Get("content-type")).To(Equal("application/json"))
		Expect(protojson.Unmarshal([]byte(body), m)).To(Succeed(), body)
	}

	// ClustersHandler::writeClustersAsJson (source/server/admin/clusters_handler.cc).
	It("answers /clusters?format=json with cluster_statuses, their host_statuses, health_status and stats", func() {
		var got adminv3.Clusters
		decode("/clusters?format=json", &got)
		Expect(got.GetClusterStatuses()).To(HaveLen(1))
		cs := got.GetClusterStatuses()[0]
		Expect(cs.GetName()).To(Equal("backend"))
		Expect(cs.GetObservabilityName()).To(Equal("backend"))
		th := cs.GetCircuitBreakers().GetThresholds()
		Expect(th).To(HaveLen(2))
		Expect(th[0].GetMaxRequests().GetValue()).To(BeEquivalentTo(1024))
		Expect(th[1].GetPriority()).To(Equal(corev3.RoutingPriority_HIGH))
		Expect(cs.GetHostStatuses()).To(HaveLen(1))
		hs := cs.GetHostStatuses()[0]
		host, port, _ := net.SplitHostPort(upAddr)
		p, _ := strconv.Atoi(port)
		Expect(hs.GetAddress().GetSocketAddress().GetAddress()).To(Equal(host))
		Expect(hs.GetAddress().GetSocketAddress().GetPortValue()).To(BeEquivalentTo(p))
		Expect(hs.GetHealthStatus().GetEdsHealthStatus()).To(Equal(corev3.HealthStatus_HEALTHY))
		Expect(hs.GetHealthStatus().GetFailedOutlierCheck()).To(BeFalse())
		Expect(hs.GetWeight()).To(BeEquivalentTo(1))
		values := map[string]uint64{}
		for _, m := range hs.GetStats() {
			values[m.GetName()] = m.GetValue()
			if m.GetName() == "cx_active" || m.GetName() == "rq_active" {
				Expect(m.GetType()).To(Equal(adminv3.SimpleMetric_GAUGE))
			}
		}
		Expect(values).To(HaveKeyWithValue("rq_total", BeEquivalentTo(1)))
		Expect(values).To(HaveKeyWithValue("rq_success", BeEquivalentTo(1)))
		Expect(values).To(HaveKey("cx_active"))
		_, _, body := get(admin + "/clusters?format=json")
		Expect(body).To(ContainSubstring(`"cluster_statuses"`), "proto field names, as Envoy writes them")
	})

	// ListenersHandler (source/server/admin/listeners_handler.cc).
	It("answers /listeners as <name>::<address> lines, and as admin.v3.Listeners with ?format=json", func() {
		addr := strings.TrimPrefix(url, "http://")
		_, _, body := get(admin + "/listeners")
		Expect(body).To(Equal("edge::" + addr + "\n"))
		var got adminv3.Listeners
		decode("/listeners?format=json", &got)
		Expect(got.GetListenerStatuses()).To(HaveLen(1))
		Expect(got.GetListenerStatuses()[0].GetName()).To(Equal("edge"))
		_, port, _ := net.SplitHostPort(addr)
		Expect(strconv.Itoa(int(got.GetListenerStatuses()[0].GetLocalAddress().GetSocketAddress().GetPortValue()))).To(Equal(port))
	})

	// ServerInfoHandler (source/server/admin/server_info_handler.cc): DRAINING once the health check
	// fails, as Utility::serverState says.
	It("answers /server_info with the version, LIVE or DRAINING, and the uptime", func() {
		var got adminv3.ServerInfo
		decode("/server_info", &got)
		Expect(got.GetVersion()).To(HavePrefix("meshproof/"))
		Expect(got.GetState()).To(Equal(adminv3.ServerInfo_LIVE))
		Expect(got.GetUptimeCurrentEpoch()).NotTo(BeNil())
		resp, err := client.Post(admin+"/healthcheck/fail", "text/plain", nil)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		decode("/server_info", &got)
		Expect(got.GetState()).To(Equal(adminv3.ServerInfo_DRAINING))
	})

	It("answers /runtime with no layers and no entries", func() {
		code, _, body := get(admin + "/runtime")
		Expect(code).To(Equal(200))
		Expect(body).To(MatchJSON(`{"layers": [], "entries": {}}`))
	})
})
