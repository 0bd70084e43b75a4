package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/mesh/sim/bench/treemesh"
	"github.com/meshproof/meshproof/reports/record"
)

// refusing is a runner that supports nothing.
type refusing struct{}

func (refusing) Name() string { return "refusing" }
func (refusing) Supports(*plan.Plan, plan.Options) error {
	return &plan.Unsupported{Runner: "refusing", Parts: []string{"faults[0]: everything"}}
}
func (refusing) Run(context.Context, *plan.Plan, plan.Options) (*record.Record, error) {
	panic("Run without Supports")
}

var _ = Describe("simbench", func() {
	var (
		file           string
		stdout, stderr *bytes.Buffer
	)
	BeforeEach(func() {
		// 4 services in 2 tiers of 2 instances, each first-tier service calling both second-tier ones:
		// 3 requests reach the instances per client request; no fault, fixed service times.
		data, sum, err := treemesh.Generate(treemesh.Params{Services: 4, Instances: 2, Fanout: 2, Depth: 2,
			Rate: 20, Duration: time.Second, Seed: 3})
		Expect(err).NotTo(HaveOccurred())
		Expect(sum.AttemptsPerRequest).To(Equal(3))
		file = filepath.Join(GinkgoT().TempDir(), "tiny.yaml")
		Expect(os.WriteFile(file, data, 0o644)).To(Succeed())
		stdout, stderr = &bytes.Buffer{}, &bytes.Buffer{}
	})

	It("measures a run on the embedded runner end to end, on one core", func() {
		Expect(run(context.Background(), []string{"-runner", "embedded", "-timeout", "1m", file}, stdout, stderr)).To(Equal(exitOK), stderr.String())
		var res Result
		Expect(json.Unmarshal(stdout.Bytes(), &res)).To(Succeed())
		Expect(res.Runner).To(Equal("embedded"))
		Expect(res.Scenario).To(Equal("treemesh-4x2-f2-d2"))
		Expect(res.ClientRequests).To(Equal(20))
		Expect(res.Successes).To(Equal(20))
		Expect(res.UpstreamAttempts).To(BeEquivalentTo(60), "20 client requests × (1 + 2)")
		Expect(res.AttemptsPerClientRq).To(BeNumerically("==", 3))
		Expect(res.GOMAXPROCS).To(Equal(1))
		Expect(res.SimulatedSeconds).To(BeNumerically(">=", 1))
		Expect(res.WallSeconds).To(BeNumerically(">", 0))
		Expect(res.TotalSeconds).To(BeNumerically("~", res.LoadSeconds+res.WallSeconds, 1e-9))
		Expect(res.AttemptsPerWallSecond).To(BeNumerically("~", 60/res.WallSeconds, 1e-6))
		Expect(res.Speedup).To(BeNumerically("~", res.SimulatedSeconds/res.WallSeconds, 1e-9))
		Expect(res.PeakRSSMiB).To(BeNumerically(">", 1))
		Expect(res.Events).To(BeNil(), "the embedded runner counts no events")
	})

	It("writes a CPU and an allocation profile of the sim run and reports the GC target it ran with", func() {
		dir := GinkgoT().TempDir()
		cpu, mem := filepath.Join(dir, "cpu.prof"), filepath.Join(dir, "mem.prof")
		args := []string{"-runner", "sim", "-gcpercent", "400", "-cpuprofile", cpu, "-memprofile", mem, file}
		Expect(run(context.Background(), args, stdout, stderr)).To(Equal(exitOK), stderr.String())
		var res Result
		Expect(json.Unmarshal(stdout.Bytes(), &res)).To(Succeed())
		Expect(res.GCPercent).To(Equal(400))
		Expect(res.UpstreamAttempts).To(BeEquivalentTo(60), "the profiles change nothing in the run")
		for _, f := range []string{cpu, mem} {
			st, err := os.Stat(f)
			Expect(err).NotTo(HaveOccurred())
			Expect(st.Size()).To(BeNumerically(">", 0), f)
		}
	})

	It("exits 2 naming -cpuprofile when the profile cannot be created", func() {
		bad := filepath.Join(GinkgoT().TempDir(), "no", "such", "dir", "cpu.prof")
		Expect(run(context.Background(), []string{"-runner", "sim", "-cpuprofile", bad, file}, stdout, stderr)).To(Equal(exitInvalid))
		Expect(stderr.String()).To(ContainSubstring("-cpuprofile: "))
		Expect(stdout.String()).To(BeEmpty())
	})

	It("refuses a runner that is not registered, listing those that are", func() {
		Expect(run(context.Background(), []string{"-runner", "nosuch", file}, stdout, stderr)).To(Equal(exitInvalid))
		Expect(stderr.String()).To(ContainSubstring(`-runner "nosuch" is not registered; registered: embedded`))
		Expect(stdout.String()).To(BeEmpty())
	})

	It("exits 2 with the runner's refusal, by name, without running", func() {
		runners["refusing"] = func() plan.Runner { return refusing{} }
		DeferCleanup(func() { delete(runners, "refusing") })
		Expect(run(context.Background(), []string{"-runner", "refusing", file}, stdout, stderr)).To(Equal(exitInvalid))
		Expect(stderr.String()).To(ContainSubstring("the refusing runner cannot do faults[0]: everything"))
	})

	It("exits 2 on an invalid scenario, naming the file and line", func() {
		bad := filepath.Join(GinkgoT().TempDir(), "bad.yaml")
		Expect(os.WriteFile(bad, []byte("name: bad\nservices:\n  a: {instancez: 1}\n"), 0o644)).To(Succeed())
		Expect(run(context.Background(), []string{"-runner", "embedded", bad}, stdout, stderr)).To(Equal(exitInvalid))
		Expect(stderr.String()).To(ContainSubstring("bad.yaml:3:"))
		Expect(stderr.String()).To(ContainSubstring("instancez"))
	})
})
