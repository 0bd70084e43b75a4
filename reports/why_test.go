package reports_test

// Issue #13, "What a reader needs": when an expected ejection did not happen, the check says why, from
// the proxy's own counters and events. Every expected text is worked out by hand below.

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("why an expected ejection did not happen (#13)", func() {
	const od = "cluster.inv.outlier_detection."
	// The run: 10/s for 5s, faults[0] on inv/1 over [1s, 3s); the proxy exports every outlier counter of
	// cluster inv (all 0 unless set).
	rec := func(set map[string]uint64, events ...record.ProxyEvent) *record.Record {
		r := &record.Record{TargetRate: 10, Duration: 5 * time.Second, Samples: steady(50, 10, func(int) time.Duration { return ms })}
		r.Windows = []record.FaultWindow{{Name: "faults[0]", Service: "inv", Instances: []int{1}, Start: time.Second, End: 3 * time.Second, Kind: "abort"}}
		r.ProxyStats = map[string]uint64{od + "ejections_overflow": 0, od + "ejections_enforced_total": 0, od + "ejections_active": 0,
			"cluster.inv.lb_healthy_panic": 0}
		for _, t := range []string{"consecutive_5xx", "consecutive_gateway_failure", "consecutive_local_origin_failure", "success_rate",
			"local_origin_success_rate", "failure_percentage", "local_origin_failure_percentage"} {
			r.ProxyStats[od+"ejections_detected_"+t], r.ProxyStats[od+"ejections_enforced_"+t] = 0, 0
		}
		for k, v := range set {
			r.ProxyStats[k] = v
		}
		r.ProxyEvents = append([]record.ProxyEvent{{At: 100 * ms, Kind: record.ProxyRetry, Cluster: "inv"}}, events...)
		return r
	}
	ev := func(at time.Duration, kind, host string) record.ProxyEvent {
		return record.ProxyEvent{At: at, Kind: kind, Cluster: "inv", Host: host, Reason: "consecutive_5xx"}
	}

	It("names max_ejection_percent when it capped the ejections", func() {
		// consecutive_5xx fired 3 times: inv/0 ejected at 0.5s (before the window, another host), inv/1
		// refused twice by max_ejection_percent (1.2s, 1.8s): detected 3, enforced 1, overflow 2 — the 2
		// not enforced are the 2 overflows, so no enforcing_* is blamed.
		r := rec(map[string]uint64{od + "ejections_detected_consecutive_5xx": 3, od + "ejections_enforced_consecutive_5xx": 1,
			od + "ejections_enforced_total": 1, od + "ejections_overflow": 2},
			ev(500*ms, record.ProxyEjected, "inv/0"), ev(1200*ms, record.ProxyOverflow, "inv/1"), ev(1800*ms, record.ProxyOverflow, "inv/1"))
		v := judgeOne("during faults[0]: time_to_first_ejection < 1s", r)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("time_to_first_ejection: no ejection of a host faults[0] targets (inv/1) between its start at 1s and 1s after its end (4s)" +
			"; why, from the proxy: " + od + "ejections_detected_consecutive_5xx = 3 > ejections_enforced_consecutive_5xx = 1; " +
			od + "ejections_overflow = 2: max_ejection_percent capped 2 ejection(s); " +
			"inv/1 detected (consecutive_5xx) but refused by max_ejection_percent at 1.2s, 1.8s"))
	})

	It("names the enforcing_* draw when detections were not enforced", func() {
		// Detected 4 times, enforced 0, no overflow: 4 − 0 = 4 detections refused by the enforcing draw;
		// the events show the first 3 times and "1 more".
		r := rec(map[string]uint64{od + "ejections_detected_consecutive_5xx": 4},
			ev(1100*ms, record.ProxyDetectedNotEnforced, "inv/1"), ev(1300*ms, record.ProxyDetectedNotEnforced, "inv/1"),
			ev(1500*ms, record.ProxyDetectedNotEnforced, "inv/1"), ev(1700*ms, record.ProxyDetectedNotEnforced, "inv/1"))
		v := judgeOne("ejected(inv/1)", r)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("inv/1 never ejected; why, from the proxy: " + od + "ejections_detected_consecutive_5xx = 4 > ejections_enforced_consecutive_5xx = 0; " +
			"4 detection(s) not enforced: an enforcing_* below 100% drew no; " +
			"inv/1 detected (consecutive_5xx) but not enforced (enforcing_consecutive_5xx drew no) at 1.1s, 1.3s, 1.5s and 1 more"))
	})

	It("says no detector fired, and what the volume-based ones need, when every ejections_detected_* is 0", func() {
		r := rec(map[string]uint64{"cluster.inv.lb_healthy_panic": 7})
		v := judgeOne("during faults[0]: ejected(inv/1) within 2s", r)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("inv/1 never ejected; faults[0] started at 1s; why, from the proxy: no detector fired for cluster inv " +
			"(every " + od + "ejections_detected_* is 0): the failures never made consecutive_5xx (or consecutive_gateway_failure) in a row, " +
			"and success_rate / failure_percentage judge only hosts with success_rate_request_volume (default 100) / " +
			"failure_percentage_request_volume (default 50) requests in one interval, from at least success_rate_minimum_hosts / " +
			"failure_percentage_minimum_hosts (default 5) such hosts; " +
			"cluster.inv.lb_healthy_panic = 7: below healthy_panic_threshold the ejected hosts got traffic again"))
	})

	It("says when the cluster has no outlier detection at all", func() {
		r := rec(nil)
		r.ProxyStats = map[string]uint64{"cluster.inv.upstream_rq_total": 50}
		v := judgeOne("during faults[0] down: time_to_first_ejection < 1s", r)
		Expect(v.Passed).To(BeFalse())
		Expect(v.Observed).To(Equal("time_to_first_ejection: no ejection of a host faults[0] targets in its down periods (1s–3s) nor 1s after each" +
			"; why, from the proxy: cluster inv exports no outlier_detection counters: outlier detection is not configured for it"))
	})
})
