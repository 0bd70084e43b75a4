package meshtest_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/mesh"
	. "github.com/meshproof/meshproof/mesh/meshtest"
)

// One run judged twice: by a check as a scenario states it, and by its matcher twin. Both go through
// the same evaluator (reports.EvaluateRun); they must agree on the verdict, and the matcher's message
// must say what the check's verdict observed.
const agreeScenario = `name: matchers
seed: 3
services:
  frontend: {instances: 3, response: {latency: 1ms}, calls: [backend]}
  backend: {instances: 2, response: {latency: 1ms}, capacity: {workers: 8, queue: 16}}
proxies:
  edge:
    routes_to: frontend
    route: {timeout: 1s, retry_policy: {retry_on: 5xx, num_retries: 2}}
    cluster:
      outlier_detection: {consecutive_5xx: 3, interval: 0.2s, base_ejection_time: 10s, max_ejection_percent: 50}
sidecars:
  route: {retry_policy: {retry_on: 5xx, num_retries: 1}}
load:
  target: edge
  phases:
    - {name: warm, duration: 1s, rate: 40/s}
    - {name: steady, duration: 2.5s, rate: 40/s}
faults:
  - {service: frontend, instances: [2], at: 1s, for: 1s, abort: {status: 503}}
  - {service: backend, instances: [1], at: 1s, for: 1s, flap: {down: 200ms, up: 300ms}, abort: {status: 503, percent: 30}}
`

var _ = Describe("matchers and their YAML twins, on one run", Ordered, func() {
	var res *mesh.Result
	BeforeAll(func(ctx SpecContext) {
		sc, err := mesh.Parse([]byte(agreeScenario), "agree.yaml")
		Expect(err).NotTo(HaveOccurred())
		res = Run(ctx, sc, mesh.Options{})
	})

	ms := time.Millisecond
	type twin struct {
		view    func(*mesh.Result) any
		matcher types.GomegaMatcher
	}
	all := func(r *mesh.Result) any { return r }
	on := func(f func(*mesh.Result) mesh.View) func(*mesh.Result) any {
		return func(r *mesh.Result) any { return f(r) }
	}
	DescribeTable("agree on the verdict and say what was observed",
		func(check string, t twin) {
			vs, err := res.Judge(check)
			Expect(err).NotTo(HaveOccurred())
			verdict := vs[0]
			if !strings.Contains(check, "ejected(") {
				Expect(verdict.Measured).To(BeTrue(), "the check itself must be judgeable here: %s", verdict.Observed)
			}
			ok, err := t.matcher.Match(t.view(res))
			Expect(err).NotTo(HaveOccurred())
			Expect(ok).To(Equal(verdict.Passed), "%s: check says %v (%s), matcher says %v", check, verdict.Passed, verdict.Observed, ok)
			msg := t.matcher.FailureMessage(t.view(res))
			if ok {
				msg = t.matcher.NegatedFailureMessage(t.view(res))
			}
			Expect(msg).To(ContainSubstring(verdict.Observed))
		},
		Entry(nil, "requests == 140", twin{all, HaveRequests(Equal(140))}),
		Entry(nil, "successes >= 139", twin{all, HaveSuccesses(BeNumerically(">=", 139))}),
		Entry(nil, "errors == 0", twin{all, HaveErrors(BeZero())}),
		Entry(nil, "success_rate >= 99.5%", twin{all, HaveSuccessRate(BeNumerically(">=", 99.5))}),
		Entry(nil, "error_rate < 0.01%", twin{all, HaveErrorRate(BeNumerically("<", 0.01))}),
		Entry(nil, "achieved_rate >= 39/s", twin{all, HaveAchievedRate(BeNumerically(">=", 39))}),
		Entry(nil, "p50 < 1s", twin{all, HaveP50(BeNumerically("<", time.Second))}),
		Entry(nil, "p90 < 1s", twin{all, HaveP90(BeNumerically("<", time.Second))}),
		Entry(nil, "p99 < 1ms", twin{all, HaveP99(BeNumerically("<", ms))}),
		Entry(nil, "p999 < 1s", twin{all, HaveP999(BeNumerically("<", time.Second))}),
		Entry(nil, "max >= 1ms", twin{all, HaveMaxLatency(BeNumerically(">=", ms))}),
		Entry(nil, "uncorrected_p99 < 1s", twin{all, HaveUncorrected("p99", BeNumerically("<", time.Second))}),
		Entry(nil, "retries > 0", twin{all, HaveRetries(BeNumerically(">", 0))}),
		Entry(nil, "ejections == 1", twin{all, HaveEjections(Equal(1))}),
		Entry(nil, "upstream_attempts > 140", twin{all, HaveUpstreamAttempts(BeNumerically(">", 140))}),
		Entry(nil, "retry_amplification <= 1.01", twin{all, HaveRetryAmplification(BeNumerically("<=", 1.01))}),
		Entry(nil, "upstream_received >= 140", twin{all, HaveUpstreamReceived(BeNumerically(">=", 140))}),
		Entry(nil, "delivered_amplification < 1.5", twin{all, HaveDeliveredAmplification(BeNumerically("<", 1.5))}),
		Entry(nil, "status(503) == 0", twin{all, HaveStatus(503, BeZero())}),
		Entry(nil, "status(2xx) == 140", twin{all, HaveStatus("2xx", Equal(140))}),
		Entry(nil, "attempts_max <= 2", twin{all, HaveAttemptsMax(BeNumerically("<=", 2))}),
		Entry(nil, "overflows == 0", twin{all, HaveOverflows(BeZero())}),
		Entry(nil, "pending_overflows == 0", twin{all, HavePendingOverflows(BeZero())}),
		Entry(nil, "retry_overflows > 0", twin{all, HaveRetryOverflows(BeNumerically(">", 0))}),
		Entry(nil, "time_to_first_ejection < 1s", twin{all, HaveTimeToFirstEjection(BeNumerically("<", time.Second))}),
		Entry(nil, "during faults[1]: time_to_first_ejection < 1s",
			twin{on(func(r *mesh.Result) mesh.View { return r.During(mesh.Fault(1)) }), HaveTimeToFirstEjection(BeNumerically("<", time.Second))}),
		Entry(nil, "after faults[0]: recovery_time < 2s",
			twin{on(func(r *mesh.Result) mesh.View { return r.After(mesh.Fault(0)) }), HaveRecoveryTime(BeNumerically("<", 2*time.Second))}),
		Entry(nil, "before fault: success_rate == 100%",
			twin{on(func(r *mesh.Result) mesh.View { return r.Before(mesh.AnyFault) }), HaveSuccessRate(BeNumerically("==", 100))}),
		Entry(nil, "during faults[0]: p99 < 2ms",
			twin{on(func(r *mesh.Result) mesh.View { return r.During(mesh.Fault(0)) }), HaveP99(BeNumerically("<", 2*ms))}),
		Entry(nil, "during faults[1] down: requests > 0",
			twin{on(func(r *mesh.Result) mesh.View { return r.DuringDown(mesh.Fault(1)) }), HaveRequests(BeNumerically(">", 0))}),
		Entry(nil, "during phase steady: requests == 100",
			twin{on(func(r *mesh.Result) mesh.View { return r.Phase("steady") }), HaveRequests(Equal(100))}),
		Entry(nil, "edge(frontend->backend): retry_amplification < 1.2",
			twin{on(func(r *mesh.Result) mesh.View { return r.Edge("frontend", "backend") }), HaveRetryAmplification(BeNumerically("<", 1.2))}),
		Entry(nil, "edge(frontend->backend): actual_success_rate == 100%",
			twin{on(func(r *mesh.Result) mesh.View { return r.Edge("frontend", "backend") }), HaveActualSuccessRate(BeNumerically("==", 100))}),
		Entry(nil, "during fault: edge(frontend->backend): success_rate == 100%",
			twin{on(func(r *mesh.Result) mesh.View { return r.During(mesh.AnyFault).Edge("frontend", "backend") }), HaveSuccessRate(BeNumerically("==", 100))}),
		Entry(nil, "service(backend): amplification <= 1.1",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveAmplification(BeNumerically("<=", 1.1))}),
		Entry(nil, "service(backend): utilisation < 50%",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveUtilisation(BeNumerically("<", 50))}),
		Entry(nil, "service(backend): queue_time_max < 1ms",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveQueueTimeMax(BeNumerically("<", ms))}),
		Entry(nil, "service(backend): queue_time_mean < 1ms",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveQueueTimeMean(BeNumerically("<", ms))}),
		Entry(nil, "service(backend): rejected == 0",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveRejected(BeZero())}),
		Entry(nil, "service(backend): queue_timeouts == 0",
			twin{on(func(r *mesh.Result) mesh.View { return r.Service("backend") }), HaveQueueTimeouts(BeZero())}),
		Entry(nil, "ejected(frontend/2)", twin{all, HaveEjected("frontend/2")}),
		Entry(nil, "during fault: ejected(frontend/2) within 500ms",
			twin{on(func(r *mesh.Result) mesh.View { return r.During(mesh.AnyFault) }), HaveEjected("frontend/2", Within(500*ms))}),
		Entry(nil, "ejected(backend/1)", twin{all, HaveEjected("backend/1")}),
		Entry(nil, "during faults[0]: ejected(frontend/2) within 1ms",
			twin{on(func(r *mesh.Result) mesh.View { return r.During(mesh.Fault(0)) }), HaveEjected("frontend/2", Within(ms))}),
	)

	It("fails on a metric the run cannot judge, saying why, as the check does", func() {
		_, err := HaveP99(BeNumerically("<", time.Second)).Match(res.During(mesh.Fault(7)))
		Expect(err).To(MatchError(ContainSubstring("faults[7]")))
		_, err = HaveMetric("p98", BeZero()).Match(res)
		Expect(err).To(MatchError(ContainSubstring("p98")))
		_, err = HaveP99(BeZero()).Match("a run")
		Expect(err).To(MatchError(ContainSubstring("want a *mesh.Result or a mesh.View")))
	})

	It("says which checks failed through Pass", func() {
		Expect(res).To(Pass(), "no checks: every check held")
		sc, err := mesh.Parse([]byte(agreeScenario+"checks: [p99 < 1us, requests == 140]\n"), "agree.yaml")
		Expect(err).NotTo(HaveOccurred())
		failing := &mesh.Result{Scenario: sc, Record: res.Record}
		failing.Report = res.Report
		failing.Report.Checks, _ = res.Judge("p99 < 1us", "requests == 140")
		failing.Report.Passed = false
		msg := Pass().FailureMessage(failing)
		Expect(msg).To(ContainSubstring("FAIL  p99 < 1us: observed p99 = "))
		Expect(msg).NotTo(ContainSubstring("requests == 140"))
	})
})
