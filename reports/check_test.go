package reports_test

import (
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
)

const allMetrics = "requests, successes, errors, success_rate, error_rate, achieved_rate, p50, p90, p99, p999, max, " +
	"uncorrected_p50, uncorrected_p90, uncorrected_p99, uncorrected_p999, uncorrected_max, retries, ejections, " +
	"upstream_attempts, retry_amplification, upstream_received, delivered_amplification, status(N), status(Nxx), grpc_status(CODE), attempts_max, overflows, pending_overflows, " +
	"retry_overflows, time_to_first_ejection, recovery_time, ejected(HOST) [within DURATION], " +
	"changes_applied, changes_rejected, changes_unexpected, change_apply_time, ssl_handshakes, ssl_handshake_errors, cert_rotations"

var _ = Describe("ParseCheck", func() {
	DescribeTable("valid checks",
		func(expr string, want checks.Check) {
			want.Expr = expr
			Expect(checks.Parse(expr)).To(Equal(want))
		},
		Entry(nil, "success_rate >= 99.9%", checks.Check{Metric: "success_rate", Op: ">=", Value: 99.9, Unit: "%"}),
		Entry(nil, "error_rate < 1%", checks.Check{Metric: "error_rate", Op: "<", Value: 1, Unit: "%"}),
		Entry(nil, "p99 < 50ms", checks.Check{Metric: "p99", Op: "<", Value: 0.05, Unit: "ms"}),
		Entry(nil, "p99<50ms", checks.Check{Metric: "p99", Op: "<", Value: 0.05, Unit: "ms"}),
		Entry(nil, "P99 < 1.5s", checks.Check{Metric: "p99", Op: "<", Value: 1.5, Unit: "s"}),
		Entry(nil, "p999 <= 1e2 ms", checks.Check{Metric: "p999", Op: "<=", Value: 0.1, Unit: "ms"}),
		Entry(nil, "max < 2m", checks.Check{Metric: "max", Op: "<", Value: 120, Unit: "m"}),
		Entry(nil, "p50 > 10ns", checks.Check{Metric: "p50", Op: ">", Value: 1e-8, Unit: "ns"}),
		Entry(nil, "uncorrected_max <= 250us", checks.Check{Metric: "uncorrected_max", Op: "<=", Value: 0.00025, Unit: "us"}),
		Entry(nil, "uncorrected_p90 < 100µs", checks.Check{Metric: "uncorrected_p90", Op: "<", Value: 1e-4, Unit: "µs"}),
		Entry(nil, "retry_amplification <= 1.5", checks.Check{Metric: "retry_amplification", Op: "<=", Value: 1.5}),
		Entry(nil, "retries > 0", checks.Check{Metric: "retries", Op: ">", Value: 0}),
		Entry(nil, "ejections == 0", checks.Check{Metric: "ejections", Op: "==", Value: 0}),
		Entry(nil, "requests >= 100", checks.Check{Metric: "requests", Op: ">=", Value: 100}),
		Entry(nil, "upstream_attempts != 0", checks.Check{Metric: "upstream_attempts", Op: "!=", Value: 0}),
		Entry(nil, "upstream_received >= 100", checks.Check{Metric: "upstream_received", Op: ">=", Value: 100}),
		Entry(nil, "delivered_amplification >= 0.9", checks.Check{Metric: "delivered_amplification", Op: ">=", Value: 0.9}),
		Entry(nil, "achieved_rate >= 95/s", checks.Check{Metric: "achieved_rate", Op: ">=", Value: 95, Unit: "/s"}),
		Entry(nil, "status(503) == 0", checks.Check{Metric: "status(503)", Op: "==", Value: 0}),
		Entry(nil, "STATUS( 5XX ) != 0", checks.Check{Metric: "status(5xx)", Op: "!=", Value: 0}),
	)

	DescribeTable("invalid checks say which part is wrong and what is accepted",
		func(expr, want string) {
			_, err := checks.Parse(expr)
			Expect(err).To(MatchError(want))
		},
		Entry("empty", " ", `empty check: want "<metric> <operator> <value>", e.g. "p99 < 50ms"`),
		Entry("no operator", "p99 50ms", `check "p99 50ms": no comparison operator; want "<metric> <operator> <value>" with an operator among < <= > >= == !=`),
		Entry("unknown operator", "p99 => 50ms", `check "p99 => 50ms": unknown operator "=>"; accepted: < <= > >= == !=`),
		Entry("single =", "p99 = 50ms", `check "p99 = 50ms": unknown operator "="; accepted: < <= > >= == !=`),
		Entry("no metric", "< 50ms", `check "< 50ms": missing metric before "<"; accepted: `+allMetrics),
		Entry("unknown metric", "p95 < 50ms", `check "p95 < 50ms": unknown metric "p95"; accepted: `+allMetrics),
		Entry("status out of range", "status(600) == 0", `check "status(600) == 0": bad status "600" in status(600): want a code 100..599 such as status(503) or a class 1xx..5xx such as status(5xx)`),
		Entry("bad status class", "status(5x) == 0", `check "status(5x) == 0": bad status "5x" in status(5x): want a code 100..599 such as status(503) or a class 1xx..5xx such as status(5xx)`),
		Entry("no value", "p99 <", `check "p99 <": missing value after "<"; e.g. "p99 < 50ms"`),
		Entry("not a number", "p99 < fast", `check "p99 < fast": value "fast" is not a number; p99 is a latency, e.g. "p99 < 50ms"`),
		Entry("latency without unit", "p99 < 50", `check "p99 < 50": p99 is a latency: give the value a unit (ns, us, µs, ms, s, m), e.g. "p99 < 50ms"`),
		Entry("latency with a percent", "p99 < 50%", `check "p99 < 50%": unit "%" does not fit p99, a latency; accepted: ns, us, µs, ms, s, m, e.g. "p99 < 50ms"`),
		Entry("percentage without %", "success_rate >= 99.9", `check "success_rate >= 99.9": success_rate is a percentage: give the value a unit (%), e.g. "success_rate >= 99.9%"`),
		Entry("rate without /s", "achieved_rate >= 95", `check "achieved_rate >= 95": achieved_rate is a rate: give the value a unit (/s), e.g. "achieved_rate >= 95/s"`),
		Entry("count with a unit", "retries > 5ms", `check "retries > 5ms": unit "ms" does not fit retries, a count; accepted: a plain number without unit, e.g. "retries <= 100"`),
		Entry("ratio with a unit", "retry_amplification <= 1.5x", `check "retry_amplification <= 1.5x": unit "x" does not fit retry_amplification, a ratio; accepted: a plain number without unit, e.g. "retry_amplification <= 1.5"`),
		Entry("percentage above 100", "error_rate < 120%", `check "error_rate < 120%": value 120% is above 100%`),
		Entry("retired upstream_requests", "upstream_requests != 0", `check "upstream_requests != 0": upstream_requests is retired: `+
			`it meant the requests the instances received over the whole run but the proxy's attempts within a scope; write `+
			`upstream_attempts (upstream attempts the proxy made, any scope) or upstream_received (requests the instances received, whole run)`),
		Entry("negative", "retries >= -1", `check "retries >= -1": value -1 is negative; retries is never negative`),
	)
})

var _ = Describe("Evaluate", func() {
	summary := reports.Summary{
		Requests: 1000, Successes: 999, Errors: 1, SuccessRate: 99.9, ErrorRate: 0.1, AchievedRate: 199.8,
		StatusCodes: map[int]uint64{200: 998, 302: 1, 503: 1},
		Latency:     record.Percentiles{P50: 2 * ms, P99: 12300 * time.Microsecond, Max: 40 * ms},
		Uncorrected: record.Percentiles{P99: 850 * time.Microsecond},
		Retries:     250, UpstreamAttempts: 1250, AttemptsOver: 1000, AttemptsFrom: reports.AttemptsFromSamples, RetryAmplification: 1.25,
	}

	DescribeTable("judges a check and says why",
		func(expr string, passed bool, observed, required string) {
			c, err := checks.Parse(expr)
			Expect(err).NotTo(HaveOccurred())
			Expect(words(reports.Evaluate([]checks.Check{c}, summary))).To(Equal([]reports.Verdict{
				{Check: expr, Passed: passed, Observed: observed, Required: required},
			}))
		},
		Entry(nil, "success_rate >= 99.9%", true, "success_rate = 99.9% (999/1000)", ">= 99.9%"),
		Entry(nil, "success_rate == 100%", false, "success_rate = 99.9% (999/1000)", "== 100%"),
		Entry(nil, "error_rate < 1%", true, "error_rate = 0.1% (1/1000)", "< 1%"),
		Entry(nil, "p99 < 50ms", true, "p99 = 12.3ms", "< 50ms"),
		Entry(nil, "p99 < 10ms", false, "p99 = 12.3ms", "< 10ms"),
		Entry(nil, "p99 <= 12.3ms", true, "p99 = 12.3ms", "<= 12.3ms"),
		Entry(nil, "max < 1m", true, "max = 40ms", "< 1m"),
		Entry(nil, "uncorrected_p99 < 1ms", true, "uncorrected_p99 = 850µs", "< 1ms"),
		Entry(nil, "status(5xx) == 0", false, "status(5xx) = 1", "== 0"),
		Entry(nil, "status(3xx) == 1", true, "status(3xx) = 1", "== 1"),
		Entry(nil, "status(503) >= 1", true, "status(503) = 1", ">= 1"),
		Entry(nil, "status(404) == 0", true, "status(404) = 0", "== 0"),
		Entry(nil, "retry_amplification <= 1.2", false, "retry_amplification = 1.25 (1250 upstream attempts / 1000 requests)", "<= 1.2"),
		Entry(nil, "achieved_rate >= 190/s", true, "achieved_rate = 199.8/s", ">= 190/s"),
		Entry(nil, "retries != 0", true, "retries = 250", "!= 0"),
		Entry(nil, "ejections > 0", false, "ejections = 0", "> 0"),
		Entry(nil, "requests < 1000", false, "requests = 1000", "< 1000"),
	)

	It("keeps the value it compared, in the metric's normalized unit, for the Gomega matchers", func() {
		v := reports.Evaluate([]checks.Check{mustCheck("p99 < 50ms"), mustCheck("success_rate >= 99%"), mustCheck("status(5xx) == 0")}, summary)
		Expect(v[0].Measured).To(BeTrue())
		Expect(v[0].Value).To(BeNumerically("~", 0.0123, 1e-12))
		Expect(v[1].Value).To(BeNumerically("~", 99.9, 1e-9))
		Expect(v[2].Value).To(BeNumerically("==", 1))
		unjudged := reports.Evaluate([]checks.Check{mustCheck("during fault: p99 < 1s")}, summary)
		Expect(unjudged[0].Measured).To(BeFalse(), "a check that could not be judged measured nothing")
	})

	It("rebuilds the text of a check that was not parsed", func() {
		v := reports.Evaluate([]checks.Check{{Metric: "p99", Op: "<", Value: 0.05, Unit: "ms"}}, summary)
		Expect(words(v)).To(HaveExactElements(reports.Verdict{Check: "p99 < 50ms", Passed: true, Observed: "p99 = 12.3ms", Required: "< 50ms"}))
	})

	It("fails a check with a scope rather than judging it over the whole run, pointing to EvaluateRun", func() {
		v := reports.Evaluate([]checks.Check{{Scope: "during fault", Metric: "p99", Op: "<", Value: 1, Unit: "s"}}, summary)
		Expect(v).To(HaveExactElements(reports.Verdict{Check: "during fault: p99 < 1s", Passed: false,
			Observed: "p99 needs the run record: judge it with EvaluateRun (or NewReport), not Evaluate", Required: "< 1s"}))
	})

	It("fails the metrics computed from the record, pointing to EvaluateRun", func() {
		for _, expr := range []string{"recovery_time < 5s", "overflows == 0", "attempts_max <= 3", "ejected(checkout/2) within 2s"} {
			c, err := checks.Parse(expr)
			Expect(err).NotTo(HaveOccurred())
			v := reports.Evaluate([]checks.Check{c}, summary)
			Expect(v[0].Passed).To(BeFalse(), expr)
			Expect(v[0].Observed).To(HaveSuffix("needs the run record: judge it with EvaluateRun (or NewReport), not Evaluate"), expr)
		}
	})
})

// Regression (found by FuzzParseCheck): a value that overflows once scaled was +Inf, a bound every
// observation meets, so the check passed whatever happened.
var _ = Describe("ParseCheck with an overflowing value", func() {
	It("refuses p99 < 1e308m (+Inf seconds) instead of a check that always holds", func() {
		_, err := checks.Parse("p99 < 1e308m")
		Expect(err).To(MatchError(ContainSubstring("value 1e308m is too large to compare")))
	})
})
