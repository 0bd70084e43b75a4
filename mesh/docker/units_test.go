package docker_test

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/mesh/docker"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("ParseStats", func() {
	DescribeTable("reads the proxy's /stats text",
		func(give string, want map[string]uint64) {
			Expect(docker.ParseStats(give)).To(Equal(want))
		},
		Entry("counters and gauges", "cluster.a.upstream_rq_total: 12\nhttp.edge.downstream_cx_active: 3\n",
			map[string]uint64{"cluster.a.upstream_rq_total": 12, "http.edge.downstream_cx_active": 3}),
		Entry("a negative gauge reads as zero, like proxy.Stats().Values()", "cluster.a.upstream_rq_active: -1\n",
			map[string]uint64{"cluster.a.upstream_rq_active": 0}),
		Entry("histogram summaries are skipped", "cluster.a.upstream_rq_total: 1\ncluster.a.upstream_rq_time: P0(nan,1) P25(nan,2)\n",
			map[string]uint64{"cluster.a.upstream_rq_total": 1}),
		Entry("empty", "", map[string]uint64{}),
	)

	It("names the line that is not 'name: value'", func() {
		_, err := docker.ParseStats("a: 1\nnonsense\n")
		Expect(err).To(MatchError(`stats line 2: "nonsense": want "name: value"`))
	})
})

var _ = Describe("ValidateFaults", func() {
	var sc *scenarios.Scenario
	BeforeEach(func() {
		var err error
		sc, err = scenarios.LoadFile("testdata/partition.yaml") // orders: 3 instances, load 9s
		Expect(err).NotTo(HaveOccurred())
	})

	It("accepts faults on distinct instances or at distinct times", func() {
		Expect(docker.ValidateFaults(sc, []docker.ContainerFault{
			{At: time.Second, For: time.Second, Service: "orders", Instance: 0, Kind: docker.FaultPartition},
			{At: 2 * time.Second, Service: "orders", Instance: 0, Kind: docker.FaultRestart},
			{At: 3 * time.Second, Service: "orders", Instance: 0, Kind: docker.FaultKill},
			{At: time.Second, Service: "orders", Instance: 2, Kind: docker.FaultPause},
		})).To(Succeed())
	})

	DescribeTable("reports each problem by index",
		func(f docker.ContainerFault, want string) {
			err := docker.ValidateFaults(sc, []docker.ContainerFault{f})
			Expect(err).To(MatchError(docker.ErrInvalidFaults))
			Expect(err).To(MatchError(ContainSubstring(want)))
		},
		Entry("kind", docker.ContainerFault{Service: "orders", Kind: "explode"}, `container_faults[0].kind: "explode": want one of kill, pause, partition, restart`),
		Entry("service", docker.ContainerFault{Service: "cart", Kind: docker.FaultKill}, `container_faults[0].service: "cart": want one of the scenario's services (orders)`),
		Entry("instance", docker.ContainerFault{Service: "orders", Instance: 3, Kind: docker.FaultKill}, `container_faults[0].instance: 3: service orders has instances 0 to 2`),
		Entry("at after the load", docker.ContainerFault{At: 9 * time.Second, Service: "orders", Kind: docker.FaultKill}, `container_faults[0].at: 9s: want before the end of the load (9s)`),
		Entry("negative for", docker.ContainerFault{For: -time.Second, Service: "orders", Kind: docker.FaultPause}, `container_faults[0].for: -1s: want >= 0`),
	)

	It("refuses two faults on one instance at the same time", func() {
		err := docker.ValidateFaults(sc, []docker.ContainerFault{
			{At: time.Second, For: 2 * time.Second, Service: "orders", Instance: 1, Kind: docker.FaultPause},
			{At: 2 * time.Second, For: time.Second, Service: "orders", Instance: 1, Kind: docker.FaultPartition},
		})
		Expect(err).To(MatchError(ContainSubstring("container_faults[1]: overlaps container_faults[0] on orders/1")))
	})
})

var _ = Describe("Control", func() {
	var (
		ctl  *docker.Control
		up   *faults.Upstream
		srv  *httptest.Server
		data string
	)
	BeforeEach(func() {
		ctl = docker.NewControl("checkout", 3, 2)
		var err error
		up, err = faults.NewUpstream(faults.UpstreamConfig{
			Service: "checkout", Instance: 3, Seed: 7,
			Faults:  []faults.Fault{{Name: "faults[0]", Abort: &faults.Abort{Status: 503, Percent: 100}}},
			OnEvent: ctl.Record,
		})
		Expect(err).NotTo(HaveOccurred())
		srv = httptest.NewServer(ctl.Handler(time.Now))
		DeferCleanup(srv.Close)
	})
	attach := func() {
		Expect(up.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(up.Close)
		ctl.Attach(up, up.Addr(), time.Now())
		data = "http://" + up.Addr()
	}
	call := func(method, path string) (int, string) {
		GinkgoHelper()
		req, err := http.NewRequest(method, srv.URL+path, nil)
		Expect(err).NotTo(HaveOccurred())
		resp, err := http.DefaultClient.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	status := func(method, path string) int {
		GinkgoHelper()
		code, _ := call(method, path)
		return code
	}

	It("is not ready until the upstream is attached", func() {
		Expect(status("GET", docker.PathReady)).To(Equal(http.StatusServiceUnavailable))
		attach()
		code, body := call("GET", docker.PathReady)
		Expect(code).To(Equal(http.StatusOK))
		Expect(body).To(Equal("READY\n"))
	})

	It("sets the run start from an RFC 3339 time or now, and refuses anything else", func() {
		attach()
		at := time.Date(2030, 1, 2, 3, 4, 5, 6, time.UTC)
		Expect(status("POST", docker.PathStart+"?at="+url.QueryEscape(at.Format(time.RFC3339Nano)))).To(Equal(http.StatusOK))
		Expect(ctl.Report().RunStart).To(BeTemporally("==", at))
		Expect(status("POST", docker.PathStart+"?at=now")).To(Equal(http.StatusOK))
		Expect(ctl.Report().RunStart).To(BeTemporally("~", time.Now(), time.Second))
		code, body := call("POST", docker.PathStart+"?at=yesterday")
		Expect(code).To(Equal(http.StatusBadRequest))
		Expect(body).To(ContainSubstring(`at="yesterday": want an RFC 3339 time`))
		Expect(status("GET", docker.PathStart)).To(Equal(http.StatusMethodNotAllowed))
	})

	It("reports the counters and the fault events as JSON, keeping at most its bound of events", func() {
		attach()
		for range 3 {
			resp, err := http.Get(data + "/")
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(503))
		}
		code, body := call("GET", docker.PathRecord)
		Expect(code).To(Equal(http.StatusOK))
		var rep docker.UpstreamReport
		Expect(json.Unmarshal([]byte(body), &rep)).To(Succeed())
		Expect(rep.Service).To(Equal("checkout"))
		Expect(rep.Instance).To(Equal(3))
		Expect(rep.Listen).To(Equal(up.Addr()))
		Expect(rep.Stats.Requests).To(Equal(uint64(3)))
		Expect(rep.Stats.Statuses).To(Equal(map[int]uint64{503: 3}))
		Expect(rep.Stats.Applied).To(Equal(map[string]uint64{"faults[0]/abort": 3}))
		Expect(rep.Events).To(HaveLen(2))
		Expect(rep.Events[0]).To(And(HaveField("Seq", uint64(1)), HaveField("Fault", "faults[0]"), HaveField("Kind", "abort"), HaveField("Detail", "503")))
		Expect(rep.DroppedEvents).To(Equal(uint64(1)))
	})

	It("reports a calling instance's calls with its sidecar's attempt counts, and its sidecar's decisions but retries", func() {
		attach()
		t0 := time.Now()
		ctl.RecordCall(faults.CallResult{Start: t0, Latency: time.Millisecond, Callee: "payments", Path: "/pay", Status: 503, RequestID: "mp-1/checkout.3.1"})
		ctl.RecordCall(faults.CallResult{Start: t0, Callee: "payments", Path: "/pay", Error: "reset", RequestID: "mp-2/checkout.3.2"})
		ctl.RecordCall(faults.CallResult{Start: t0, Callee: "payments", RequestID: "mp-3/checkout.3.3"}) // over the bound of 2
		ctl.RecordAttempts("mp-1/checkout.3.1", 3)
		ctl.RecordProxyEvent(proxy.Event{Time: t0, Cluster: "payments", Host: "10.0.0.2:8080", Kind: "retry", Reason: "503"})
		ctl.RecordProxyEvent(proxy.Event{Time: t0, Cluster: "payments", Host: "10.0.0.2:8080", Kind: "ejected", Reason: "consecutive_5xx"})

		_, body := call("GET", docker.PathRecord)
		var rep docker.UpstreamReport
		Expect(json.Unmarshal([]byte(body), &rep)).To(Succeed())
		Expect(rep.Calls).To(HaveLen(2))
		Expect(rep.Calls[0]).To(And(HaveField("Callee", "payments"), HaveField("Path", "/pay"), HaveField("Status", 503),
			HaveField("Latency", time.Millisecond), HaveField("Attempts", 3), HaveField("AttemptsKnown", true)))
		Expect(rep.Calls[0].Start).To(BeTemporally("==", t0))
		Expect(rep.Calls[1]).To(And(HaveField("Error", "reset"), HaveField("AttemptsKnown", false)))
		Expect(rep.DroppedCalls).To(Equal(uint64(1)))
		Expect(rep.SidecarEvents).To(ConsistOf(And(HaveField("Kind", "ejected"), HaveField("Host", "10.0.0.2:8080"), HaveField("Reason", "consecutive_5xx"))))
		Expect(rep.SidecarCounters).To(BeNil(), "a bare upstream has no sidecar")
	})
})

var _ = Describe("MergeStats", func() {
	It("adds up an instance's lives: counters, buckets by index, capacity (the longest wait the longest)", func() {
		got := docker.MergeStats(
			docker.UpstreamStats{Requests: 3, Statuses: map[int]uint64{200: 3}, Received: []uint32{1, 2}, OK: []uint32{1, 2}, Calls: 2,
				Capacity: &docker.CapacityStats{Workers: 2, Queue: 4, Queued: 1, QueueWait: time.Second, MaxQueueWait: time.Second, Rejected: 1}},
			docker.UpstreamStats{Requests: 2, Statuses: map[int]uint64{200: 1, 503: 1}, Received: []uint32{0, 0, 2}, OK: []uint32{0, 0, 1}, CallFailures: 1,
				Capacity: &docker.CapacityStats{Workers: 2, Queue: 4, Queued: 2, QueueWait: time.Second, MaxQueueWait: 500 * time.Millisecond}},
		)
		Expect(got).To(Equal(faults.UpstreamStats{Requests: 5, Statuses: map[int]uint64{200: 4, 503: 1}, Applied: map[string]uint64{},
			Received: []uint32{1, 2, 2}, OK: []uint32{1, 2, 1}, Calls: 2, CallFailures: 1,
			Capacity: &faults.CapacityStats{Workers: 2, Queue: 4, Queued: 3, QueueWait: 2 * time.Second, MaxQueueWait: time.Second, Rejected: 1}}))
	})
})

var _ = Describe("BootstrapJSON", func() {
	It("renders a generated bootstrap that `meshproof proxy -c` loads", func() {
		sc, err := scenarios.LoadFile("testdata/partition.yaml")
		Expect(err).NotTo(HaveOccurred())
		b, err := scenarios.BuildBootstrap(sc, "edge", scenarios.Addresses{
			Listener: "0.0.0.0:10000", Admin: "0.0.0.0:9901", Endpoints: map[string][]string{"orders": {"172.18.0.2:8080", "172.18.0.3:8080", "172.18.0.4:8080"}},
		})
		Expect(err).NotTo(HaveOccurred())
		data, err := docker.BootstrapJSON(b)
		Expect(err).NotTo(HaveOccurred())
		path := filepath.Join(GinkgoT().TempDir(), "bootstrap.yaml")
		Expect(os.WriteFile(path, data, 0o644)).To(Succeed())
		cfg, _, err := config.LoadBootstrap(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(cfg.Listeners).To(HaveLen(1))
	})
})

// The docker runner says what it cannot do before it starts anything (issue #12).
var _ = Describe("Runner.Supports", func() {
	var p *plan.Plan
	BeforeEach(func() {
		sc, err := scenarios.LoadFile("testdata/partition-scenario.yaml")
		Expect(err).NotTo(HaveOccurred())
		p = plan.New(sc, nil)
	})

	It("supports the plan's container faults, every other fault kind and traces", func() {
		Expect(docker.Runner{}.Supports(p, plan.Options{})).To(Succeed())
		Expect(docker.Runner{}.Supports(p, plan.Options{Tracing: &plan.Tracing{}})).To(Succeed())
	})

	It("supports calls between services and finite capacity: each calling instance's sidecar runs in its container", func() {
		Expect(docker.Runner{}.Supports(plan.New(loadYAML(threeTier), nil), plan.Options{})).To(Succeed())
	})

	It("refuses a scenario without a file, which the upstream containers read, by name", func() {
		sc := *p.Scenario
		sc.File = ""
		err := docker.Runner{}.Supports(plan.New(&sc, nil), plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
		Expect(err).To(MatchError(ContainSubstring("the docker runner cannot do a scenario without a file")))
	})

	It("refuses an h2c or gRPC load, by name: not yet run in containers", func() {
		sc := *p.Scenario
		l := *sc.Load
		l.Protocol, sc.Load = scenarios.ProtocolGRPC, &l
		err := docker.Runner{}.Supports(plan.New(&sc, nil), plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
		Expect(err).To(MatchError(ContainSubstring("load.protocol grpc (not yet run in containers)")))
	})

	It("refuses configuration changes, by name: their control plane runs in the runner's process", func() {
		sc := *p.Scenario
		sc.Changes = []*scenarios.Change{{}, {}}
		err := docker.Runner{}.Supports(plan.New(&sc, nil), plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
		Expect(err).To(MatchError(ContainSubstring("changes[1]: a configuration change pushed over xDS")))
	})

	It("refuses mesh.mtls by name rather than run the mesh in clear text", func() {
		sc := *p.Scenario
		sc.Mesh = &scenarios.Mesh{MTLS: true}
		err := docker.Runner{}.Supports(plan.New(&sc, nil), plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
		Expect(err).To(MatchError(ContainSubstring("the docker runner cannot do mesh.mtls: mutual TLS")))
		Expect(err).To(MatchError(ContainSubstring("use --runner embedded")))
	})

	It("refuses container faults of the options that do not fit the scenario", func() {
		err := docker.Runner{Options: docker.Options{Faults: []docker.ContainerFault{{Service: "nowhere", Kind: docker.FaultKill}}}}.Supports(p, plan.Options{})
		Expect(err).To(MatchError(docker.ErrInvalidFaults))
	})
})
