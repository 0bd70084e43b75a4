package controlplane_test

import (
	"context"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/meshproof/meshproof/mesh/controlplane"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

const scenario = `name: cp
services: {api: {instances: 2}}
proxies: {edge: {routes_to: api}}
load: {target: edge, rate: 10/s, duration: 1s}
`

// ads is a hand-driven ADS client: it subscribes, and ACKs or NACKs what it is sent.
type ads struct {
	stream discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesClient
}

func (a ads) send(typeURL, version, nonce string, names []string, nack string) {
	GinkgoHelper()
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "edge"}, TypeUrl: typeURL, VersionInfo: version,
		ResponseNonce: nonce, ResourceNames: names}
	if nack != "" {
		req.ErrorDetail = &status.Status{Code: 3, Message: nack}
	}
	Expect(a.stream.Send(req)).To(Succeed())
}

func (a ads) recv() *discoveryv3.DiscoveryResponse {
	GinkgoHelper()
	resp, err := a.stream.Recv()
	Expect(err).NotTo(HaveOccurred())
	return resp
}

var _ = Describe("Server", func() {
	var (
		cp  *controlplane.Server
		cli ads
	)
	BeforeEach(func(ctx SpecContext) {
		var err error
		cp, err = controlplane.Start()
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(cp.Close)
		conn, err := grpc.NewClient(cp.Addr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		Expect(err).NotTo(HaveOccurred())
		DeferCleanup(conn.Close)
		sctx, cancel := context.WithCancel(context.Background())
		DeferCleanup(cancel)
		stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(sctx)
		Expect(err).NotTo(HaveOccurred())
		cli = ads{stream}
	})

	push := func(version string, endpoints []string) {
		GinkgoHelper()
		sc, err := scenarios.Parse([]byte(scenario), "cp.yaml")
		Expect(err).NotTo(HaveOccurred())
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0",
			Endpoints: map[string][]string{"api": endpoints}})
		Expect(err).NotTo(HaveOccurred())
		Expect(cp.Push(context.Background(), "edge", version, b)).To(Succeed())
	}

	It("turns a static bootstrap into one that takes routes and clusters over ADS from it", func() {
		sc, err := scenarios.Parse([]byte(scenario), "cp.yaml")
		Expect(err).NotTo(HaveOccurred())
		static, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{Listener: "127.0.0.1:0",
			Endpoints: map[string][]string{"api": {"127.0.0.1:1", "127.0.0.1:2"}}})
		Expect(err).NotTo(HaveOccurred())
		b, err := cp.Bootstrap("edge", static)
		Expect(err).NotTo(HaveOccurred())
		Expect(b.GetNode().GetId()).To(Equal("edge"))
		Expect(b.GetDynamicResources().GetCdsConfig().GetAds()).NotTo(BeNil())
		Expect(b.GetStaticResources().GetClusters()).To(HaveLen(1))
		Expect(b.GetStaticResources().GetClusters()[0].GetName()).To(Equal(controlplane.ClusterName))
		Expect(b.GetStaticResources().GetListeners()).To(HaveLen(1))
		Expect(static.GetStaticResources().GetClusters()[0].GetName()).To(Equal("api"), "the static bootstrap is left as it was")
	})

	It("reads a version applied once every type of the proxy's first version is ACKed, and rejected at its first NACK", func(ctx SpecContext) {
		push("0", []string{"127.0.0.1:1", "127.0.0.1:2"})
		cli.send(resource.ClusterType, "", "", nil, "")
		cds := cli.recv()
		Expect(cds.GetVersionInfo()).To(Equal("0"))
		cli.send(resource.ClusterType, "0", cds.GetNonce(), nil, "")
		cli.send(resource.EndpointType, "", "", []string{"api"}, "")
		eds := cli.recv()
		cli.send(resource.RouteType, "", "", []string{"edge"}, "")
		rds := cli.recv()
		Consistently(func() string { o, _, _ := cp.Outcome("edge", "0"); return o }, 100*time.Millisecond).Should(Equal(record.ChangeUnacknowledged),
			"the endpoints and routes are not ACKed yet")
		cli.send(resource.EndpointType, "0", eds.GetNonce(), []string{"api"}, "")
		cli.send(resource.RouteType, "0", rds.GetNonce(), []string{"edge"}, "")
		wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		outcome, at, _ := cp.Wait(wctx, "edge", "0")
		Expect(outcome).To(Equal(record.ChangeApplied))
		Expect(at).NotTo(BeZero())

		// Version 1: every watched type is sent again; the clusters' ACK alone is not enough.
		push("1", []string{"127.0.0.1:2"})
		got := map[string]*discoveryv3.DiscoveryResponse{}
		for range 3 {
			r := cli.recv()
			got[r.GetTypeUrl()] = r
		}
		Expect(got).To(HaveLen(3))
		cli.send(resource.ClusterType, "1", got[resource.ClusterType].GetNonce(), nil, "")
		Consistently(func() string { o, _, _ := cp.Outcome("edge", "1"); return o }, 200*time.Millisecond).Should(Equal(record.ChangeUnacknowledged))
		cli.send(resource.EndpointType, "0", got[resource.EndpointType].GetNonce(), []string{"api"}, "bad endpoint: field x")
		outcome, _, detail := cp.Wait(wctx, "edge", "1")
		Expect(outcome).To(Equal(record.ChangeRejected))
		Expect(detail).To(Equal("bad endpoint: field x"))
		o0, _, _ := cp.Outcome("edge", "0")
		Expect(o0).To(Equal(record.ChangeApplied), "a NACK of version 1 changes nothing of version 0")

		// Regression: the cache sent the rejected version again at once, and a proxy NACKed it again
		// without end. Now nothing comes until a newer version.
		next := make(chan *discoveryv3.DiscoveryResponse, 1)
		go func() {
			defer GinkgoRecover()
			if r, err := cli.stream.Recv(); err == nil {
				next <- r
			}
		}()
		Consistently(next, 300*time.Millisecond).ShouldNot(Receive())
		push("2", []string{"127.0.0.1:1"})
		var r *discoveryv3.DiscoveryResponse
		Eventually(next, 5*time.Second).Should(Receive(&r))
		Expect(r.GetVersionInfo()).To(Equal("2"))
	})

	It("gives up waiting when its context ends", func(ctx SpecContext) {
		push("0", []string{"127.0.0.1:1"})
		wctx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		outcome, _, _ := cp.Wait(wctx, "edge", "0")
		Expect(outcome).To(Equal(record.ChangeUnacknowledged))
	})
})
