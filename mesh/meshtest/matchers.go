// Package meshtest is meshproof for Go test suites: Gomega matchers on a run's metrics, judged by the
// same evaluator as a scenario's checks, and helpers that run a scenario for a Ginkgo spec or a
// `testing` test.
//
//	res := meshtest.Run(ctx, sc, mesh.Options{})            // in a Ginkgo spec or BeforeAll
//	Expect(res).To(meshtest.HaveSuccessRate(BeNumerically(">=", 99.5)))
//	Expect(res.During(mesh.Fault(0))).To(meshtest.HaveP99(BeNumerically("<", 150*time.Millisecond)))
//	Expect(res).To(meshtest.HaveEjected("checkout/2", meshtest.Within(2*time.Second)))
//	Expect(res.Edge("cart", "payments")).To(meshtest.HaveRetryAmplification(BeNumerically("<=", 1.5)))
//
// A matcher takes a *mesh.Result (the whole run) or a mesh.View (a scope, an edge or a service of it).
// The value a metric matcher hands its inner matcher is typed by the metric's kind: time.Duration for
// latencies, int for counts, float64 for percentages (0 to 100), ratios and rates. Every check a scenario
// file can state has a matcher: HaveMetric takes any metric by its check name, the others are
// shorthands.
package meshtest

import (
	"fmt"
	"time"

	"github.com/onsi/gomega/format"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/mesh"
)

// view is the part of the run a matcher's actual value names.
func view(actual any) (mesh.View, error) {
	switch a := actual.(type) {
	case *mesh.Result:
		if a == nil {
			return mesh.View{}, fmt.Errorf("meshtest: a nil *mesh.Result")
		}
		return a.All(), nil
	case mesh.View:
		if a.Result() == nil {
			return mesh.View{}, fmt.Errorf("meshtest: a mesh.View of no run")
		}
		return a, nil
	}
	return mesh.View{}, fmt.Errorf("meshtest: want a *mesh.Result or a mesh.View, got %s", format.Object(actual, 1))
}

// HaveMetric matches a run (or view) whose metric, named as in a check ("p99", "success_rate",
// "status(503)", "time_to_first_ejection"), satisfies m.
func HaveMetric(metric string, m types.GomegaMatcher) types.GomegaMatcher {
	return &metricMatcher{metric: metric, inner: m}
}

type metricMatcher struct {
	metric   string
	inner    types.GomegaMatcher
	measured mesh.Measurement
	where    string
}

func (mm *metricMatcher) Match(actual any) (bool, error) {
	v, err := view(actual)
	if err != nil {
		return false, err
	}
	mm.where = v.String()
	mm.measured, err = v.Measure(mm.metric)
	if err != nil {
		return false, err
	}
	return mm.inner.Match(mm.measured.Value)
}

func (mm *metricMatcher) FailureMessage(any) string {
	return fmt.Sprintf("%s\n%s", mm.observed(), mm.inner.FailureMessage(mm.measured.Value))
}

func (mm *metricMatcher) NegatedFailureMessage(any) string {
	return fmt.Sprintf("%s\n%s", mm.observed(), mm.inner.NegatedFailureMessage(mm.measured.Value))
}

// observed is the measurement as a check's verdict says it, with the view it was measured on.
func (mm *metricMatcher) observed() string {
	if mm.where == "" {
		return "observed " + mm.measured.Observed
	}
	return fmt.Sprintf("observed %s %s", mm.where, mm.measured.Observed)
}

// The clients' metrics (and, on an edge or a service view, theirs: see reports/README.md).

// HaveRequests matches the number of requests.
func HaveRequests(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("requests", m) }

// HaveSuccesses matches the number of requests answered with a 2xx or 3xx.
func HaveSuccesses(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("successes", m) }

// HaveErrors matches the number of failed requests.
func HaveErrors(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("errors", m) }

// HaveSuccessRate matches the success rate, in percent.
func HaveSuccessRate(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("success_rate", m) }

// HaveErrorRate matches the error rate, in percent.
func HaveErrorRate(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("error_rate", m) }

// HaveAchievedRate matches the requests sent per second.
func HaveAchievedRate(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("achieved_rate", m)
}

// HaveP50 matches the median latency (coordinated-omission corrected), a time.Duration.
func HaveP50(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("p50", m) }

// HaveP90 matches the 90th percentile latency.
func HaveP90(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("p90", m) }

// HaveP99 matches the 99th percentile latency.
func HaveP99(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("p99", m) }

// HaveP999 matches the 99.9th percentile latency.
func HaveP999(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("p999", m) }

// HaveMaxLatency matches the largest latency.
func HaveMaxLatency(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("max", m) }

// HaveUncorrected matches a latency percentile ("p99", "max", …) measured from the actual send time
// rather than the intended one.
func HaveUncorrected(percentile string, m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("uncorrected_"+percentile, m)
}

// HaveRetries matches the proxy's retries.
func HaveRetries(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("retries", m) }

// HaveEjections matches the proxy's enforced ejections.
func HaveEjections(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("ejections", m) }

// HaveUpstreamAttempts matches the upstream attempts (first tries and retries).
func HaveUpstreamAttempts(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("upstream_attempts", m)
}

// HaveRetryAmplification matches upstream attempts per client request (1: no retry); on an edge, the
// caller's sidecars' attempts per call.
func HaveRetryAmplification(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("retry_amplification", m)
}

// HaveUpstreamReceived matches the requests the instances received (whole run only).
func HaveUpstreamReceived(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("upstream_received", m)
}

// HaveDeliveredAmplification matches requests delivered to instances per client request.
func HaveDeliveredAmplification(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("delivered_amplification", m)
}

// HaveStatus matches the responses with one status (503) or class ("5xx").
func HaveStatus[S int | string](status S, m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric(fmt.Sprintf("status(%v)", status), m)
}

// HaveAttemptsMax matches the most upstream attempts any request took.
func HaveAttemptsMax(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("attempts_max", m) }

// HaveOverflows matches the circuit breakers' overflows (pending and retry); whole run only.
func HaveOverflows(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("overflows", m) }

// HavePendingOverflows matches the pending-queue overflows.
func HavePendingOverflows(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("pending_overflows", m)
}

// HaveRetryOverflows matches the retries refused by the retry breaker.
func HaveRetryOverflows(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("retry_overflows", m)
}

// HaveTimeToFirstEjection matches the time from a fault's start to the first ejection of a host it
// targets (math.MaxInt64 when none came); on r.During(mesh.Fault(i)) for one window.
func HaveTimeToFirstEjection(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("time_to_first_ejection", m)
}

// HaveRecoveryTime matches the time from a fault's end until a whole second of requests succeeds again
// (math.MaxInt64 when it never did); on r.After(mesh.Fault(i)) for one window.
func HaveRecoveryTime(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("recovery_time", m)
}

// The metrics of a service of the call graph (on res.Service(name)).

// HaveAmplification matches the requests a service received per client request.
func HaveAmplification(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("amplification", m)
}

// HaveUtilisation matches the share of a service's workers' time spent busy, in percent.
func HaveUtilisation(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("utilisation", m) }

// HaveQueueTimeMean and HaveQueueTimeMax match the time requests waited for a service's worker.
func HaveQueueTimeMean(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("queue_time_mean", m)
}

// HaveQueueTimeMax matches the longest wait for a service's worker.
func HaveQueueTimeMax(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("queue_time_max", m)
}

// HaveRejected matches the requests a service's full queue turned away.
func HaveRejected(m types.GomegaMatcher) types.GomegaMatcher { return HaveMetric("rejected", m) }

// HaveQueueTimeouts matches the requests that left a service's queue at its timeout.
func HaveQueueTimeouts(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("queue_timeouts", m)
}

// The metrics of an edge of the call graph (on res.Edge(caller, callee)).

// HaveActualSuccessRate matches the success rate of an edge's attempts (before the sidecar's retries).
func HaveActualSuccessRate(m types.GomegaMatcher) types.GomegaMatcher {
	return HaveMetric("actual_success_rate", m)
}

// EjectedOption refines HaveEjected.
type EjectedOption func(*ejectedMatcher)

// Within bounds the ejection to d after the start of the fault window (or down period) it is credited
// to, as "ejected(HOST) within d".
func Within(d time.Duration) EjectedOption { return func(m *ejectedMatcher) { m.within = d } }

// HaveEjected matches a run (or a scoped view) in which a proxy ejected host ("service/instance" or its
// address), as the check "ejected(HOST) [within DURATION]".
func HaveEjected(host string, opts ...EjectedOption) types.GomegaMatcher {
	m := &ejectedMatcher{host: host}
	for _, o := range opts {
		o(m)
	}
	return m
}

type ejectedMatcher struct {
	host    string
	within  time.Duration
	where   string
	verdict string
}

func (em *ejectedMatcher) Match(actual any) (bool, error) {
	v, err := view(actual)
	if err != nil {
		return false, err
	}
	em.where = v.String()
	vd := v.Ejected(em.host, em.within)
	em.verdict = vd.Observed
	return vd.Passed, nil
}

func (em *ejectedMatcher) required() string {
	s := "ejected(" + em.host + ")"
	if em.within > 0 {
		s += " within " + em.within.String()
	}
	return s
}

func (em *ejectedMatcher) FailureMessage(any) string {
	return fmt.Sprintf("expected %s%s, observed: %s", prefix(em.where), em.required(), em.verdict)
}

func (em *ejectedMatcher) NegatedFailureMessage(any) string {
	return fmt.Sprintf("expected not %s%s, observed: %s", prefix(em.where), em.required(), em.verdict)
}

func prefix(where string) string {
	if where == "" {
		return ""
	}
	return where + " "
}

// Pass matches a run whose scenario's checks all held; its failure message lists each failed check
// with what was observed and required.
func Pass() types.GomegaMatcher { return passMatcher{} }

type passMatcher struct{}

func (passMatcher) Match(actual any) (bool, error) {
	r, ok := actual.(*mesh.Result)
	if !ok || r == nil {
		return false, fmt.Errorf("meshtest: Pass wants a *mesh.Result, got %s", format.Object(actual, 1))
	}
	return r.Passed(), nil
}

func (passMatcher) FailureMessage(actual any) string {
	r := actual.(*mesh.Result)
	msg := fmt.Sprintf("expected every check of scenario %q to hold", r.Scenario.Name)
	if r.Report.Partial != "" {
		msg += "; the run is partial: " + r.Report.Partial
	}
	for _, v := range r.Failed() {
		msg += fmt.Sprintf("\n  FAIL  %s: observed %s, required %s", v.Check, v.Observed, v.Required)
	}
	return msg
}

func (passMatcher) NegatedFailureMessage(actual any) string {
	return fmt.Sprintf("expected a check of scenario %q to fail, but all %d held", actual.(*mesh.Result).Scenario.Name, len(actual.(*mesh.Result).Checks()))
}
