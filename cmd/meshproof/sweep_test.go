package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
)

// sweepFakeRunner derives a run's record from its scenario alone, so that a sweep's verdicts can be worked
// out by hand: of N = rate × duration requests, the first round(N × q^(r+1)) fail with 503 after r+1
// attempts (q the first fault's abort percent / 100, r the load target's num_retries: each attempt
// fails with probability q), the others succeed at the first attempt; above 100 requests/s per instance
// every odd request fails too (overload). With 3 instances the run breaks; with more than 8 the runner
// refuses the scenario.
type sweepFakeRunner struct{}

func (sweepFakeRunner) Name() string { return "fake" }

func (sweepFakeRunner) Supports(p *plan.Plan, _ plan.Options) error {
	if n := p.Scenario.Services["backend"].Instances; n > 8 {
		return &plan.Unsupported{Runner: "fake", Parts: []string{fmt.Sprintf("services.backend.instances: %d (at most 8)", n)}}
	}
	return nil
}

func (sweepFakeRunner) Run(_ context.Context, p *plan.Plan, _ plan.Options) (*record.Record, error) {
	sc := p.Scenario
	instances := sc.Services["backend"].Instances
	if instances == 3 {
		return nil, errors.New("fake runner: backend/2 crashed")
	}
	retries := 0
	if rp := sc.Proxies[sc.Load.Target].RouteAction.GetRetryPolicy(); rp != nil {
		retries = 1 // RetryPolicy.num_retries defaults to 1 (api/envoy/config/route/v3/route_components.proto)
		if rp.GetNumRetries() != nil {
			retries = int(rp.GetNumRetries().GetValue())
		}
	}
	q := 0.0
	if len(sc.Faults) > 0 && sc.Faults[0].Abort != nil {
		q = sc.Faults[0].Abort.Percent / 100
	}
	rate := sc.Load.Rate.PerSecond
	n := int(math.Round(rate * sc.Load.Duration.Seconds()))
	failed := int(math.Round(float64(n) * math.Pow(q, float64(retries+1))))
	overloaded := rate > 100*float64(instances)
	samples := make([]record.Sample, n)
	var retried uint64
	for i := range samples {
		at := time.Duration(float64(i) / rate * float64(time.Second))
		s := record.Sample{Seq: uint64(i), Intended: at, Sent: at, Status: 200, Attempts: 1}
		if i < failed {
			s.Status, s.Attempts = 503, retries+1
		}
		if overloaded && i%2 == 1 {
			s.Status = 503
		}
		s.Latency = time.Duration(s.Attempts) * 5 * time.Millisecond
		retried += uint64(s.Attempts - 1)
		samples[i] = s
	}
	rec := sc.NewRecord(p.Seed, time.Unix(0, 0), samples)
	rec.ProxyStats = map[string]uint64{"cluster.backend.upstream_rq_retry": retried}
	return rec, nil
}

// sweepJSON reads a sweep directory's sweep.json.
func sweepJSON(dir string) map[string]any {
	data, err := os.ReadFile(filepath.Join(dir, "sweep.json"))
	Expect(err).NotTo(HaveOccurred())
	var j map[string]any
	Expect(json.Unmarshal(data, &j)).To(Succeed())
	return j
}

// pointField lists one field of every point of sweep.json, in grid order.
func pointField(j map[string]any, field ...string) []any {
	var out []any
	for _, p := range j["points"].([]any) {
		var v any = p
		for _, f := range field {
			v = v.(map[string]any)[f]
		}
		out = append(out, v)
	}
	return out
}

var _ = Describe("meshproof sweep", func() {
	var out string
	BeforeEach(func() {
		out = GinkgoT().TempDir()
		saved := sweepRunner
		sweepRunner = func() plan.Runner { return sweepFakeRunner{} }
		DeferCleanup(func() { sweepRunner = saved })
	})
	const file = "testdata/sweep-fake.yaml"

	Context("a grid of abort percents × num_retries", func() {
		args := []string{"sweep", file, "--set", "faults[0].abort.percent=10,50", "--set", "proxies.edge.route.retry_policy.num_retries=0,1,2"}

		It("runs every point in grid order and reports its verdicts, outcomes and the safe region", func() {
			code, stdout, stderr := run(append(args, "--out", out)...)
			Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			j := sweepJSON(out)
			Expect(j["runner"]).To(Equal("fake"))
			Expect(pointField(j, "values")).To(Equal([]any{
				[]any{"10", "0"}, []any{"10", "1"}, []any{"10", "2"}, []any{"50", "0"}, []any{"50", "1"}, []any{"50", "2"}}))
			// 1000 requests: q^(r+1) of them fail. 10%: 100, 10, 1; 50%: 500, 250, 125.
			Expect(pointField(j, "outcomes", "success_rate")).To(Equal([]any{90.0, 99.0, 99.9, 50.0, 75.0, 87.5}))
			// Failing requests make r+1 attempts: (1000 + F·r) / 1000.
			Expect(pointField(j, "outcomes", "retry_amplification")).To(Equal([]any{1.0, 1.01, 1.002, 1.0, 1.25, 1.25}))
			Expect(pointField(j, "outcomes", "retries")).To(Equal([]any{0.0, 10.0, 2.0, 0.0, 250.0, 250.0}))
			Expect(pointField(j, "status")).To(Equal([]any{"fail", "pass", "pass", "fail", "fail", "fail"}))
			Expect(j["safe"]).To(Equal([]any{1.0, 2.0}))
			Expect(j["passed"]).To(BeTrue())
			first := j["points"].([]any)[0].(map[string]any)
			Expect(first["settings"]).To(Equal(map[string]any{"faults[0].abort.percent": "10", "proxies.edge.route.retry_policy.num_retries": "0"}))
			Expect(first["checks"]).To(ConsistOf(
				HaveKeyWithValue("passed", false), HaveKeyWithValue("passed", true)))

			Expect(stdout).To(MatchRegexp(`(?m)^10 +1 +PASS +99% +1\.01 +10 `))
			Expect(stdout).To(MatchRegexp(`(?m)^50 +0 +FAIL +50% .*success_rate >= 99%`))
			Expect(stdout).To(ContainSubstring("safe region: 2 of 6 points pass every check:\n" +
				"  faults[0].abort.percent=10 proxies.edge.route.retry_policy.num_retries=1\n" +
				"  faults[0].abort.percent=10 proxies.edge.route.retry_policy.num_retries=2\n"))

			md, err := os.ReadFile(filepath.Join(out, "summary.md"))
			Expect(err).NotTo(HaveOccurred())
			Expect(string(md)).To(ContainSubstring("2 of 6 points pass every check"))
			Expect(string(md)).To(ContainSubstring("| 50 | 2 | FAIL | 87.5% | 1.25 | 250 |"))

			html, err := os.ReadFile(filepath.Join(out, "report.html"))
			Expect(err).NotTo(HaveOccurred())
			// 7 heat maps (success, retry amplification, retries, ejections, overflows, p50, p99), each
			// with the two passing cells marked.
			Expect(strings.Count(string(html), `class="cell-pass"`)).To(Equal(7 * 2))
			Expect(strings.Count(string(html), `class="cell-fail"`)).To(Equal(7 * 4))
			Expect(string(html)).To(ContainSubstring("<h3>success rate</h3>"))
			Expect(filepath.Join(out, FileIncomplete)).NotTo(BeAnExistingFile())
		})

		It("gives the same points whatever the number of jobs", func() {
			one, four := filepath.Join(out, "one"), filepath.Join(out, "four")
			code, _, _ := run(append(args, "--out", one, "--jobs", "1")...)
			Expect(code).To(Equal(0))
			code, _, _ = run(append(args, "--out", four, "--jobs", "4")...)
			Expect(code).To(Equal(0))
			Expect(sweepJSON(four)["points"]).To(Equal(sweepJSON(one)["points"]))
		})
	})

	It("exits 1 when no point passes every check", func() {
		code, stdout, _ := run("sweep", file, "--out", out, "--set", "proxies.edge.route.retry_policy.num_retries=0,1")
		Expect(code).To(Equal(1))
		Expect(stdout).To(ContainSubstring("safe region: none of the 2 points passes every check"))
		Expect(sweepJSON(out)["passed"]).To(BeFalse())
	})

	It("reports a point whose run fails as an error, not a pass, and goes on with the others", func() {
		code, stdout, _ := run("sweep", file, "--out", out, "--set", "faults[0].abort.percent=0", "--set", "services.backend.instances=2,3,4")
		Expect(code).To(Equal(0))
		j := sweepJSON(out)
		Expect(pointField(j, "status")).To(Equal([]any{"pass", "error", "pass"}))
		Expect(pointField(j, "error")).To(Equal([]any{nil, "fake runner: backend/2 crashed", nil}))
		Expect(stdout).To(MatchRegexp(`(?m)^0 +3 +ERROR .*run error: fake runner: backend/2 crashed`))
	})

	It("exits 130 when interrupted, reporting the points not run as errors and keeping the INCOMPLETE marker", func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		var stdout, stderr strings.Builder
		code := Main(ctx, []string{"sweep", file, "--out", out, "--set", "services.backend.instances=1,2"}, &stdout, &stderr)
		Expect(code).To(Equal(130), "stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
		j := sweepJSON(out)
		Expect(pointField(j, "status")).To(Equal([]any{"error", "error"}))
		Expect(pointField(j, "error")).To(Equal([]any{"not run: context canceled", "not run: context canceled"}))
		Expect(filepath.Join(out, FileIncomplete)).To(BeAnExistingFile())
	})

	It("draws one heat map per combination of the dimensions beyond the second", func() {
		code, _, _ := run("sweep", file, "--out", out, "--set", "faults[0].abort.percent=10", "--set", "proxies.edge.route.retry_policy.num_retries=1,2",
			"--set", "services.backend.instances=2,4")
		Expect(code).To(Equal(0))
		html, err := os.ReadFile(filepath.Join(out, "report.html"))
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Count(string(html), "<code>services.backend.instances = 2</code>")).To(Equal(7))
		Expect(strings.Count(string(html), "<code>services.backend.instances = 4</code>")).To(Equal(7))
		Expect(pointField(sweepJSON(out), "values")).To(HaveLen(4))
	})

	DescribeTable("refuses invalid input with exit 2 before running anything",
		func(want string, args ...string) {
			code, stdout, stderr := run(append([]string{"sweep", file, "--out", out}, args...)...)
			Expect(code).To(Equal(2), "stdout:\n%s", stdout)
			Expect(stderr).To(ContainSubstring(want))
			Expect(filepath.Join(out, "sweep.json")).NotTo(BeAnExistingFile())
		},
		Entry("a path through a missing field: names it and the fields there", `meshproof: --set proxies.edge.route.retry_polcy.num_retries=1,2: testdata/sweep-fake.yaml:13:5: proxies.edge.route: has no field "retry_polcy" (the first segment of the path missing from the file); fields here: timeout, retry_policy`,
			"--set", "proxies.edge.route.retry_polcy.num_retries=1,2"),
		Entry("a bad value: the loader's error, prefixed with the setting", "--set faults[0].abort.percent=150: testdata/sweep-fake.yaml:18:",
			"--set", "faults[0].abort.percent=10,150"),
		Entry("a malformed --set", "want PATH=v1,v2", "--set", "services.backend.instances"),
		Entry("a path given twice", "--set services.backend.instances is given twice", "--set", "services.backend.instances=1", "--set", "services.backend.instances=2"),
		Entry("the runner refusing a point's scenario, by name", "--set services.backend.instances=9: the fake runner cannot do services.backend.instances: 9 (at most 8)",
			"--set", "services.backend.instances=2,9"),
		Entry("a rate bracket without --find-max-rate", "go with --find-max-rate", "--rate-max", "100"),
		Entry("an empty rate bracket", "--rate-min 50 and --rate-max 40: want 0 < rate-min < rate-max", "--find-max-rate", "--rate-min", "50", "--rate-max", "40"),
	)

	It("prints its usage and flags to stdout on --help, and exits 0", func() {
		code, stdout, stderr := run("sweep", "--help")
		Expect(code).To(Equal(0))
		Expect(stdout).To(ContainSubstring("usage: meshproof sweep FILE --set PATH=v1,v2,…"))
		Expect(stdout).To(ContainSubstring("-find-max-rate"))
		Expect(stderr).To(BeEmpty())
	})

	It("refuses a scenario that does not load, with the loader's error", func() {
		code, _, stderr := run("sweep", "testdata/malformed.yaml", "--out", out, "--set", "services.backend.instances=1")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("testdata/malformed.yaml:"))
	})

	Context("--find-max-rate", func() {
		It("bisects each point's rate for the highest at which every check holds, printing each probe", func() {
			// No fault; 100 requests/s per instance before overload: 100/s with one instance, 200/s with two.
			code, stdout, stderr := run("sweep", file, "--out", out, "--find-max-rate", "--rate-min", "50", "--rate-max", "400", "--precision", "5",
				"--set", "faults[0].abort.percent=0", "--set", "services.backend.instances=1,2", "--jobs", "1")
			Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			// Two instances: 400 fails, 50 passes, then the middle of [lo, hi] (to 0.01/s) until hi − lo ≤ 5.
			Expect(stdout).To(ContainSubstring(strings.Join([]string{
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 400/s FAIL (success_rate >= 99%)",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 50/s PASS",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 225/s FAIL (success_rate >= 99%)",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 137.5/s PASS",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 181.2/s PASS",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 203.1/s FAIL (success_rate >= 99%)",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 192.2/s PASS",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 197.7/s PASS",
				"probe --set faults[0].abort.percent=0 --set services.backend.instances=2: 200.4/s FAIL (success_rate >= 99%)",
				"point 2: --set faults[0].abort.percent=0 --set services.backend.instances=2: PASS (highest passing rate: 197.7/s)",
			}, "\n")))
			j := sweepJSON(out)
			Expect(pointField(j, "max_rate", "result")).To(Equal([]any{"found", "found"}))
			rates := pointField(j, "max_rate", "rate")
			Expect(rates[0]).To(And(BeNumerically(">", 95), BeNumerically("<=", 100)))
			Expect(rates[1]).To(And(BeNumerically(">", 195), BeNumerically("<=", 200)))
			Expect(j["find_max_rate"]).To(Equal(map[string]any{"rate_min": 50.0, "rate_max": 400.0, "precision": 5.0}))
		})

		It("says when the checks hold at the top of the bracket, or fail at its bottom", func() {
			code, stdout, _ := run("sweep", file, "--out", out, "--find-max-rate", "--rate-min", "150", "--rate-max", "180",
				"--set", "faults[0].abort.percent=0", "--set", "services.backend.instances=1,2", "--jobs", "1")
			Expect(code).To(Equal(0))
			Expect(stdout).To(ContainSubstring("services.backend.instances=1: FAIL (highest passing rate: none (it fails at --rate-min))"))
			Expect(stdout).To(ContainSubstring("services.backend.instances=2: PASS (highest passing rate: ≥ 180/s (it holds at --rate-max))"))
			Expect(pointField(sweepJSON(out), "max_rate", "result")).To(Equal([]any{"fails at --rate-min", "holds at --rate-max"}))
		})

		It("searches the scenario as written when there is no --set, and says so in the safe region", func() {
			code, stdout, stderr := run("sweep", "testdata/sweep-fake-nofault.yaml", "--out", out, "--find-max-rate", "--rate-min", "50", "--rate-max", "400", "--precision", "5")
			Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
			Expect(stdout).To(ContainSubstring("point 1: the scenario: PASS (highest passing rate: 99.22/s)"))
			Expect(stdout).To(ContainSubstring("safe region: the scenario as written passes every check\n"))
		})
	})
})

// The real runner (sweepRunner: the simulator) on a scenario whose verdicts are known by hand: instance 0 of 2 answers 503 to everything, round
// robin alternates them, a 5xx is retried on another host. Without a retry every other request fails
// (50%); with one or two every request succeeds on instance 1 (100%).
var _ = Describe("meshproof sweep on the real runner", Label("sim"), func() {
	It("finds success 50% / 100% / 100% at num_retries 0 / 1 / 2", func() {
		out := GinkgoT().TempDir()
		code, stdout, stderr := run("sweep", "testdata/sweep-retries.yaml", "--out", out, "--jobs", "1",
			"--set", "proxies.edge.route.retry_policy.num_retries=0,1,2")
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		j := sweepJSON(out)
		Expect(pointField(j, "outcomes", "success_rate")).To(Equal([]any{50.0, 100.0, 100.0}), "stdout:\n%s", stdout)
		Expect(pointField(j, "status")).To(Equal([]any{"fail", "pass", "pass"}))
		Expect(pointField(j, "outcomes", "requests")).To(Equal([]any{40.0, 40.0, 40.0}))
	})

	It("reports each point's own seed when a --set sweeps it", func() {
		out := GinkgoT().TempDir()
		code, stdout, stderr := run("sweep", "testdata/sweep-retries.yaml", "--out", out, "--set", "seed=3,4")
		Expect(code).To(BeNumerically("<=", 1), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(pointField(sweepJSON(out), "seed")).To(Equal([]any{3.0, 4.0}))
	})
})

// The simulator-only examples (scenarios/examples/sim): the sweep example finds the safe region its
// description states, and the 200-service mesh passes its checks on the sim runner.
var _ = Describe("the simulator's examples", Label("sim"), func() {
	It("sweeps metastable-retry-sweep.yaml to the safe region its description states", func() {
		out := GinkgoT().TempDir()
		code, stdout, stderr := run("sweep", "../../scenarios/examples/sim/metastable-retry-sweep.yaml", "--out", out,
			"--set", "sidecars.route.retry_policy.num_retries=0,1,2,3",
			"--set", "sidecars.cluster.circuit_breakers.thresholds[0].max_retries=3,10,1000")
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(pointField(sweepJSON(out), "status")).To(Equal([]any{
			"pass", "pass", "pass", // no retries
			"pass", "fail", "fail", // 1 retry: breaker 3, 10, 1000
			"pass", "fail", "fail",
			"pass", "fail", "fail",
		}), "stdout:\n%s", stdout)
		Expect(stdout).To(ContainSubstring("safe region: 6 of 12 points pass every check"))
	})

	It("runs mesh-200-services.yaml on the sim runner and passes its checks", func() {
		out := GinkgoT().TempDir()
		code, stdout, stderr := run("run", "../../scenarios/examples/sim/mesh-200-services.yaml", "--runner", "sim", "--out", out)
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(stdout).To(ContainSubstring("PASS: all 4 checks held"))
	})

	It("validates every simulator example", func() {
		files, _ := filepath.Glob("../../scenarios/examples/sim/*.yaml")
		Expect(files).To(HaveLen(2))
		code, stdout, _ := run(append([]string{"validate"}, files...)...)
		Expect(code).To(Equal(0))
		Expect(strings.Count(stdout, ": ok")).To(Equal(len(files)))
	})
})
