package mesh_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh"
)

// spec is a small one-hop scenario written in Go.
func spec() mesh.Spec {
	return mesh.Spec{
		Name: "go-api",
		Seed: 5,
		Services: map[string]mesh.Service{
			"checkout": {Instances: 3, Response: mesh.Response{Latency: "1ms", Size: 64}},
		},
		Proxies: map[string]mesh.Proxy{"edge": {
			RoutesTo: "checkout",
			Route:    mesh.Fields{"timeout": "1s", "retry_policy": mesh.Fields{"retry_on": "5xx", "num_retries": 2}},
			Cluster:  mesh.Fields{"connect_timeout": "0.25s"},
		}},
		Load:   mesh.Load{Target: "edge", Rate: "40/s", Duration: "1s"},
		Faults: []mesh.FaultRule{{Service: "checkout", Instances: []int{2}, Abort: mesh.Fields{"status": 503, "percent": 50}}},
		Checks: []string{"success_rate >= 99%", "retries > 0", "p99 < 1ms"},
	}
}

var _ = Describe("Spec", func() {
	It("writes the scenario file it stands for, kinds without settings included", func() {
		s := spec()
		s.Faults = append(s.Faults, mesh.FaultRule{Service: "checkout", Instances: []int{0}, At: "500ms", For: "200ms", Refuse: mesh.Fields{}})
		data, err := s.YAML()
		Expect(err).NotTo(HaveOccurred())
		Expect(string(data)).To(ContainSubstring("refuse: {}"))
		fromYAML, err := mesh.Parse(data, "same.yaml")
		Expect(err).NotTo(HaveOccurred())
		built, err := s.Build()
		Expect(err).NotTo(HaveOccurred())
		Expect(built.Faults).To(HaveLen(2))
		Expect(built.Faults[1].Refuse).NotTo(BeNil())
		Expect(built.Load.Planned()).To(Equal(fromYAML.Load.Planned()))
		Expect(built.Proxies["edge"].RouteAction.GetRetryPolicy().GetNumRetries().GetValue()).To(BeEquivalentTo(2))
	})

	It("writes configuration changes as a file's changes", func() {
		s := spec()
		s.Changes = []mesh.Change{
			{At: "300ms", Endpoints: map[string][]int{"checkout": {0, 1}}},
			{At: "600ms", Route: mesh.Fields{"timeout": "2s"}},
			{At: "800ms", Cluster: mesh.Fields{"connect_timeout": "0s"}, Expect: "rejected"},
		}
		built, err := s.Build()
		Expect(err).NotTo(HaveOccurred())
		Expect(built.Changes).To(HaveLen(3))
		Expect(built.Changes[0].State.Instances("checkout", 3)).To(Equal([]int{0, 1}))
		Expect(built.Changes[1].State.Proxy.RouteAction.GetTimeout().AsDuration()).To(Equal(2 * time.Second))
		Expect(built.Changes[2].Expected()).To(Equal("rejected"))
	})

	It("runs the changes and scopes a view to a change's window", func(ctx SpecContext) {
		s := spec()
		s.Faults, s.Checks = nil, nil
		s.Changes = []mesh.Change{{At: "500ms", Endpoints: map[string][]int{"checkout": {0}}}}
		sc, err := s.Build()
		Expect(err).NotTo(HaveOccurred())
		res, err := mesh.Run(ctx, sc, mesh.Options{Dir: GinkgoT().TempDir()})
		Expect(err).NotTo(HaveOccurred())
		m, err := res.During(mesh.ChangeWindow(0)).Measure("requests")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Value).To(Equal(20)) // 40/s from 0.5 s to 1 s
		m, err = res.Before(mesh.AnyChange).Measure("requests")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Value).To(Equal(20))
		applied, err := res.All().Measure("changes_applied")
		Expect(err).NotTo(HaveOccurred())
		Expect(applied.Value).To(Equal(1))
	})

	It("refuses what a file would refuse, with the same field paths", func() {
		for _, c := range []struct {
			mend func(*mesh.Spec)
			path string
		}{
			{func(s *mesh.Spec) {
				s.Proxies["edge"] = mesh.Proxy{RoutesTo: "checkout", Route: mesh.Fields{"retry_policy": mesh.Fields{"num_retriez": 2}}}
			}, "proxies.edge.route.retry_policy.num_retriez"},
			{func(s *mesh.Spec) { s.Load.Rate = "fast" }, "load.rate"},
			{func(s *mesh.Spec) { s.Faults[0].Instances = []int{7} }, "faults[0].instances[0]"},
			{func(s *mesh.Spec) {
				s.Changes = []mesh.Change{{At: "500ms", Cluster: mesh.Fields{"connect_timeout": "0s"}}}
			}, "changes[0].cluster.connect_timeout"},
		} {
			s := spec()
			c.mend(&s)
			_, err := s.Build()
			Expect(err).To(HaveOccurred())
			errs := mesh.Errors(err)
			Expect(errs).To(ContainElement(HaveField("Path", c.path)), err.Error())
			for _, e := range errs {
				Expect(e.File).To(Equal("spec:go-api.yaml"))
				Expect(e.Line).To(BeNumerically(">", 0))
			}
		}
	})
})

var _ = Describe("Run", func() {
	It("runs a scenario built in code on the embedded runner, judges its checks and writes the run's files", func(ctx SpecContext) {
		sc, err := spec().Build()
		Expect(err).NotTo(HaveOccurred())
		dir := filepath.Join(GinkgoT().TempDir(), "run")
		var progress strings.Builder
		res, err := mesh.Run(ctx, sc, mesh.Options{Dir: dir, Progress: &progress, ProgressInterval: 200 * time.Millisecond})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Seed).To(BeEquivalentTo(5))
		Expect(res.Summary().Requests).To(BeEquivalentTo(40))
		Expect(res.Checks()).To(HaveLen(3))
		Expect(res.Failed()).To(ContainElement(HaveField("Check", "p99 < 1ms")), "a 1 ms service cannot answer under 1 ms")
		Expect(res.Passed()).To(BeFalse())
		Expect(progress.String()).To(ContainSubstring("progress: "))
		for _, f := range []string{"report.json", "summary.md", "junit.xml", "report.html"} {
			Expect(filepath.Join(dir, f)).To(BeAnExistingFile())
		}
		Expect(res.Dir).To(Equal(dir))

		vs, err := res.Judge("requests == 40", "before faults[0]: success_rate == 100%")
		Expect(err).NotTo(HaveOccurred())
		Expect(vs[0].Passed).To(BeTrue(), vs[0].Observed)
		Expect(vs[1].Observed).To(ContainSubstring("no requests before faults[0]"), "the fault starts at 0")
		_, err = res.Judge("p99 <")
		Expect(err).To(MatchError(ContainSubstring(`check "p99 <"`)))

		m, err := res.All().Measure("p99")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Value).To(BeAssignableToTypeOf(time.Duration(0)))
		Expect(m.Value.(time.Duration)).To(BeNumerically(">=", time.Millisecond))
		Expect(m.Observed).To(HavePrefix("p99 = "))
		m, err = res.During(mesh.Fault(0)).Measure("requests")
		Expect(err).NotTo(HaveOccurred())
		Expect(m.Value).To(Equal(40))
		_, err = res.During(mesh.Fault(3)).Measure("requests")
		Expect(err).To(MatchError(ContainSubstring("faults[3]")))
		_, err = res.All().Measure("p98")
		Expect(err).To(HaveOccurred())
	})

	It("runs the same scenario in virtual time on the sim runner, the same report for the same seed", func(ctx SpecContext) {
		sc, err := spec().Build()
		Expect(err).NotTo(HaveOccurred())
		res, err := mesh.Run(ctx, sc, mesh.Options{Runner: mesh.Sim})
		Expect(err).NotTo(HaveOccurred())
		Expect(res.Summary().Requests).To(BeEquivalentTo(40))
		Expect(res.Failed()).To(ContainElement(HaveField("Check", "p99 < 1ms")), "a 1 ms service cannot answer under 1 ms")
		again, err := mesh.Run(ctx, sc, mesh.Options{Runner: mesh.Sim})
		Expect(err).NotTo(HaveOccurred())
		Expect(again.Record.Samples).To(Equal(res.Record.Samples))
		_, err = mesh.Run(ctx, sc, mesh.Options{Runner: mesh.Sim, TraceRatio: 1})
		Expect(errors.Is(err, mesh.ErrUnsupported)).To(BeTrue(), "%v", err)
	})

	It("refuses a scenario the runner cannot do, naming what, before starting anything", func(ctx SpecContext) {
		s := spec()
		s.Faults = []mesh.FaultRule{{Service: "checkout", Instances: []int{0}, At: "100ms", For: "200ms", Container: "kill"}}
		sc, err := s.Build()
		Expect(err).NotTo(HaveOccurred())
		_, err = mesh.Run(ctx, sc, mesh.Options{})
		Expect(errors.Is(err, mesh.ErrUnsupported)).To(BeTrue(), "%v", err)
		Expect(err.Error()).To(ContainSubstring("container"))
		_, err = mesh.Run(ctx, sc, mesh.Options{Runner: "k8s"})
		Expect(err).To(MatchError(ContainSubstring(`runner "k8s"`)))
	})

	It("stops when its context is cancelled, returning the partial result, which does not pass", func(ctx SpecContext) {
		s := spec()
		s.Load.Duration = "30s"
		s.Checks = nil
		sc, err := s.Build()
		Expect(err).NotTo(HaveOccurred())
		runCtx, cancel := context.WithTimeout(ctx, 700*time.Millisecond)
		defer cancel()
		started := time.Now()
		res, err := mesh.Run(runCtx, sc, mesh.Options{Dir: filepath.Join(GinkgoT().TempDir(), "partial")})
		Expect(err).To(MatchError(context.DeadlineExceeded))
		Expect(time.Since(started)).To(BeNumerically("<", 15*time.Second))
		Expect(res).NotTo(BeNil())
		Expect(res.Passed()).To(BeFalse())
		Expect(res.Report.Partial).To(ContainSubstring("interrupted"))
		Expect(res.Summary().Requests).To(BeNumerically("<", 30*40))
		_, statErr := os.Stat(filepath.Join(res.Dir, "report.json"))
		Expect(statErr).NotTo(HaveOccurred())
	})
})
