package reports_test

import (
	"fmt"
	"time"

	"github.com/meshproof/meshproof/reports/record"
)

// meshRun is a three-tier chain, clients → frontend → cart → payments, two instances each, over 10 s at
// 20 requests/s: 200 client requests, request i intended at i × 50 ms, so that "before fault" (0–4 s)
// holds i = 0…79, "during fault" (faults[0], payments/1 answering 503 from 4 s to 6 s) i = 80…119 and
// "after fault" (6–10 s) i = 120…199. The load phases are warmup (0–2 s) and steady (2–10 s).
//
// Clients: every request answers 200 in 20 ms but i = 100 and 101, which get a 503.
//
// frontend → cart: one call per client request, sent at its intended time + 1 ms by frontend/(i mod 2),
// with the client's status; one attempt each but i = 80…84, which took two (the first failed, the retry
// succeeded); latency (i mod 10 + 1) ms.
//
// cart → payments: one call per client request, sent at its intended time + 2 ms by cart/(i mod 2):
//   - before and after the fault: one attempt, 200, 2 ms; but i = 150, 151, 152 (after the fault), which
//     the sidecar turned away (ZeroAttempts, 503, 100 µs; optional calls, so the clients did not fail);
//   - during the fault: even i one attempt (200, 2 ms), odd i two (the first hit payments/1; 200, 5 ms),
//     but i = 100 and 101, which took three and failed (503, 9 ms).
//
// cart/0's sidecar ejected payments/1 at 4.5 s and brought it back at 7 s; cart/1's ejected it at 4.6 s
// for good.
//
// The instances' arrivals per 100 ms bucket b (b = 0…99):
//   - frontend/0 and frontend/1: 1 each per bucket (the even and the odd request of the bucket), all
//     answered 200 but bucket 50 (i = 100, 101), answered 503: 100 requests each, 99 OK.
//   - cart/0: 1 per bucket, 4 in bucket 40 (3 failed first attempts of frontend's retries), OK 1 per
//     bucket but bucket 50 (0): 103 requests, 99 OK (statuses 200: 99, 503: 4); cart/1 the same with 3 in
//     bucket 41: 102 requests, 99 OK (200: 99, 503: 3).
//   - payments/0: 1 per bucket, 2 in buckets 40…59, all OK: 120 requests; payments/1: 1 per bucket, OK
//     but in buckets 40…59 (503): 100 requests, 80 OK.
//
// payments has finite capacity: payments/0 2 workers, busy 4 s, 10 queued waiting 50 ms in all (max
// 12 ms), 3 rejected, 1 timed out; payments/1 2 workers, busy 2 s, 5 queued waiting 25 ms (max 20 ms), 0
// rejected, 1 timed out.
func meshRun() *record.Record {
	rec := &record.Record{Scenario: "three-tier", Seed: 3, TargetRate: 20, Duration: 10 * time.Second,
		Started: time.Date(2026, 5, 1, 10, 0, 0, 0, time.UTC),
		Services: []record.Service{{Name: "cart", Instances: 2}, {Name: "frontend", Instances: 2, Entry: true},
			{Name: "payments", Instances: 2}},
		Windows: []record.FaultWindow{{Name: "faults[0]", Service: "payments", Instances: []int{1},
			Start: 4 * time.Second, End: 6 * time.Second, Kind: "abort"}},
		Phases: []record.LoadPhase{{Name: "warmup", End: 2 * time.Second}, {Name: "steady", Start: 2 * time.Second, End: 10 * time.Second}},
		ProxyStats: map[string]uint64{"cluster.frontend.upstream_rq_total": 200, "cluster.frontend.upstream_rq_retry": 0,
			"cluster.frontend.outlier_detection.ejections_enforced_total": 0},
		Edges: []record.Edge{
			{Caller: "frontend", Callee: "cart", SidecarStats: map[string]uint64{"upstream_rq_total": 205, "upstream_rq_retry": 5,
				"upstream_rq_5xx": 7, "outlier_detection.ejections_enforced_total": 0,
				"outlier_detection.ejections_detected_consecutive_5xx": 0, "outlier_detection.ejections_enforced_consecutive_5xx": 0}},
			{Caller: "cart", Callee: "payments", SidecarStats: map[string]uint64{"upstream_rq_total": 220, "upstream_rq_retry": 23,
				"upstream_rq_5xx": 2, "retry.upstream_rq_5xx": 23, "upstream_rq_pending_overflow": 3, "outlier_detection.ejections_enforced_total": 2,
				"outlier_detection.ejections_detected_consecutive_5xx": 2, "outlier_detection.ejections_enforced_consecutive_5xx": 2}},
		},
		ProxyEvents: []record.ProxyEvent{
			{At: 4500 * time.Millisecond, Kind: record.ProxyEjected, Cluster: "payments", Host: "payments/1", Reason: "consecutive_5xx", Proxy: "cart/0"},
			{At: 4600 * time.Millisecond, Kind: record.ProxyEjected, Cluster: "payments", Host: "payments/1", Reason: "consecutive_5xx", Proxy: "cart/1"},
			{At: 7 * time.Second, Kind: record.ProxyUnejected, Cluster: "payments", Host: "payments/1", Proxy: "cart/0"},
		},
	}
	for i := range 200 {
		at := time.Duration(i) * 50 * time.Millisecond
		s := record.Sample{Seq: uint64(i + 1), Intended: at, Sent: at, Latency: 20 * time.Millisecond, Status: 200, Attempts: 1}
		if i == 100 || i == 101 {
			s.Status = 503
		}
		rec.Samples = append(rec.Samples, s)

		fc := record.Call{At: at + time.Millisecond, Latency: time.Duration(i%10+1) * time.Millisecond, Caller: "frontend",
			CallerInstance: i % 2, Callee: "cart", Status: s.Status, Attempts: 1}
		if i >= 80 && i <= 84 {
			fc.Attempts = 2
		}
		cp := record.Call{At: at + 2*time.Millisecond, Latency: 2 * time.Millisecond, Caller: "cart", CallerInstance: i % 2,
			Callee: "payments", Status: 200, Attempts: 1}
		switch {
		case i == 100 || i == 101:
			cp.Attempts, cp.Status, cp.Latency = 3, 503, 9*time.Millisecond
		case i >= 80 && i < 120 && i%2 == 1:
			cp.Attempts, cp.Latency = 2, 5*time.Millisecond
		case i >= 150 && i <= 152:
			cp.Attempts, cp.ZeroAttempts, cp.Status, cp.Latency, cp.Optional = 0, true, 503, 100*time.Microsecond, true
		}
		rec.Calls = append(rec.Calls, fc, cp)
	}

	instance := func(svc string, n int, received, ok func(b int) uint32, statuses map[int]uint64, capacity *record.CapacityRecord) record.UpstreamRecord {
		u := record.UpstreamRecord{Service: svc, Instance: n, Address: fmt.Sprintf("%s-%d:8080", svc, n), Statuses: statuses, Applied: map[string]uint64{}, Capacity: capacity}
		for b := range 100 {
			u.Received, u.OK = append(u.Received, received(b)), append(u.OK, ok(b))
			u.Requests += uint64(received(b))
		}
		return u
	}
	one := func(int) uint32 { return 1 }
	okBut := func(bad ...int) func(int) uint32 {
		return func(b int) uint32 {
			for _, x := range bad {
				if b == x {
					return 0
				}
			}
			return 1
		}
	}
	extra := func(bucket int, n uint32) func(int) uint32 {
		return func(b int) uint32 {
			if b == bucket {
				return n
			}
			return 1
		}
	}
	duringFault := func(in, out uint32) func(int) uint32 {
		return func(b int) uint32 {
			if b >= 40 && b < 60 {
				return in
			}
			return out
		}
	}
	rec.Upstreams = []record.UpstreamRecord{
		instance("frontend", 0, one, okBut(50), map[int]uint64{200: 99, 503: 1}, nil),
		instance("frontend", 1, one, okBut(50), map[int]uint64{200: 99, 503: 1}, nil),
		instance("cart", 0, extra(40, 4), okBut(50), map[int]uint64{200: 99, 503: 4}, nil),
		instance("cart", 1, extra(41, 3), okBut(50), map[int]uint64{200: 99, 503: 3}, nil),
		instance("payments", 0, duringFault(2, 1), duringFault(2, 1), map[int]uint64{200: 120},
			&record.CapacityRecord{Workers: 2, Queue: 10, Busy: 4 * time.Second, Queued: 10, QueueWait: 50 * time.Millisecond,
				MaxQueueWait: 12 * time.Millisecond, Rejected: 3, TimedOut: 1}),
		instance("payments", 1, one, duringFault(0, 1), map[int]uint64{200: 80, 503: 20},
			&record.CapacityRecord{Workers: 2, Queue: 10, Busy: 2 * time.Second, Queued: 5, QueueWait: 25 * time.Millisecond,
				MaxQueueWait: 20 * time.Millisecond, TimedOut: 1}),
	}
	return rec
}
