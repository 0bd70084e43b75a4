package plan

import (
	"sort"
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
		Requests: st.Requests, Statuses: st.Statuses, Resets: st.Resets, Applied: st.Applied}
}

// SortFaultEvents orders events by time, keeping the order of simultaneous ones.
func SortFaultEvents(events []record.FaultEvent) {
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
}

// SortProxyEvents orders events by time, keeping the order of simultaneous ones.
func SortProxyEvents(events []record.ProxyEvent) {
	sort.SliceStable(events, func(i, j int) bool { return events[i].At < events[j].At })
}
