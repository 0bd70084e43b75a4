package plan

import (
	"math"
	"sort"
	"strings"
	"time"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/reports/record"
)

// FaultEvent is e as the record holds it: its time an offset from the load's start.
func FaultEvent(e faults.Event, loadStart time.Time) record.FaultEvent {
	return record.FaultEvent{At: e.Time.Sub(loadStart), Service: e.Service, Instance: e.Instance,
		Seq: e.Seq, RequestID: e.RequestID, Fault: e.Fault, Kind: e.Kind, Detail: e.Detail}
}

// UpstreamRecord is what one instance received and answered, as the record holds it.
func UpstreamRecord(in Instance, addr string, st faults.UpstreamStats) record.UpstreamRecord {
	return record.UpstreamRecord{Service: in.Service, Instance: in.Index, Address: addr,
		Requests: st.Requests, Statuses: st.Statuses, Resets: st.Resets, Applied: st.Applied,
		Canceled: st.Canceled, Hangs: st.Hangs, Truncated: st.Truncated, StreamResets: st.StreamResets, GoAways: st.GoAways,
		Received: st.Received, OK: st.OK, Capacity: capacityRecord(st.Capacity),
		TLSHandshakes: st.TLSHandshakes, TLSHandshakeErrors: st.TLSHandshakeErrors}
}

func capacityRecord(c *faults.CapacityStats) *record.CapacityRecord {
	if c == nil {
		return nil
	}
	return &record.CapacityRecord{Workers: c.Workers, Queue: c.Queue, Busy: c.Busy, Queued: c.Queued,
		QueueWait: c.QueueWait, MaxQueueWait: c.MaxQueueWait, Rejected: c.Rejected, TimedOut: c.TimedOut}
}

// CallRecord is a call as the record holds it: its time an offset from the load's start.
func CallRecord(in Instance, c faults.CallResult, loadStart time.Time) record.Call {
	return record.Call{At: c.Start.Sub(loadStart), Latency: c.Latency, Caller: in.Service, CallerInstance: in.Index,
		Callee: c.Callee, Status: c.Status, Error: c.Error, Optional: c.Optional}
}

// SidecarStats sums the counters of the callee's cluster over sidecars' stats, named without their
// "cluster.<callee>." prefix.
func SidecarStats(callee string, stats ...map[string]uint64) map[string]uint64 {
	prefix := "cluster." + callee + "."
	out := map[string]uint64{}
	for _, st := range stats {
		for k, v := range st {
			if name, ok := strings.CutPrefix(k, prefix); ok {
				out[name] += v
			}
		}
	}
	return out
}

// ExtendRefuseWindows ends each refuse window when the last of its instances accepted connections
// again. An instance reopens its listener on a timer at or after the window's planned end (a timer fires
// late, never early), so a request intended at the end — on every edge with an integer rate — could
// still be refused; with the window ending at the reopen, such a request counts in the window, and no
// request "after" it can meet a closed listener. The start stays: the listener never closes before it.
//
// A flapping rule's down periods are ended the same way: each at the last reopen of its instances at or
// after its planned end and before the next period starts.
func ExtendRefuseWindows(windows []record.FaultWindow, events []record.FaultEvent) {
	for i := range windows {
		w := &windows[i]
		reopened := func(e record.FaultEvent) bool {
			return e.Fault == w.Name && e.Kind == faults.KindRefuse && e.Detail == faults.RefuseReopened
		}
		for j := range w.Down {
			d := &w.Down[j]
			next := time.Duration(math.MaxInt64)
			if j+1 < len(w.Down) {
				next = w.Down[j+1].Start
			}
			end := d.End
			for _, e := range events {
				if reopened(e) && e.At >= d.End && e.At < next && e.At > end {
					end = e.At
				}
			}
			d.End = end
		}
		if w.End == 0 {
			continue
		}
		for _, e := range events {
			if reopened(e) && e.At > w.End {
				w.End = e.At
			}
		}
	}
}

// SortFaultEvents orders events by time, keeping the order of simultaneous ones.
func SortFaultEvents(events []record.FaultEvent) {
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
}

// SortProxyEvents orders events by time, keeping the order of simultaneous ones.
func SortProxyEvents(events []record.ProxyEvent) {
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
}

// SortCalls puts calls in send order (caller and callee break ties, for a stable record).
func SortCalls(calls []record.Call) {
	sort.SliceStable(calls, func(i, j int) bool {
		a, b := calls[i], calls[j]
		if a.At != b.At {
			return a.At < b.At
		}
		if a.Caller != b.Caller {
			return a.Caller < b.Caller
		}
		return a.CallerInstance < b.CallerInstance
	})
}
