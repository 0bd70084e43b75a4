package sim

import (
	"strconv"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/reports/record"
)

// The app of a calling instance (faults/app.go): after the delay of a request it answers, the steps run
// one after another, the calls of a step in parallel through the instance's own sidecar; a required call
// that failed ends the steps and the request is answered OnFailure.

// step runs step i of the app's steps, then the next, then the answer.
func (ex *exchange) step(i int) {
	it := ex.it
	if i == len(it.app.Steps) {
		ex.answerDecision("")
		return
	}
	calls := it.app.Steps[i].Calls
	results := make([]faults.CallResult, len(calls))
	pending := len(calls)
	for j, c := range calls {
		it.call(ex, c, func(r faults.CallResult) {
			results[j] = r
			pending--
			if pending > 0 {
				return
			}
			for _, r := range results {
				if !r.Optional && !r.OK() {
					ex.answerDecision(r.Callee)
					return
				}
			}
			ex.step(i + 1)
		})
	}
}

// call makes one call through the sidecar within the request's remaining deadline (App.PropagateDeadline):
// the budget is the x-envoy-expected-rq-timeout-ms a proxy's router set on the request (the route timeout
// less the time already spent: Envoy's FilterUtility::setTimeoutHeaders, source/common/router/router.cc),
// and the call carries what remains as x-envoy-upstream-rq-timeout-ms, which the sidecar's router takes as
// the call's route timeout (FilterUtility::finalTimeout, same file). It records the call as the live
// runner does (record.Call with its sidecar's attempts) and hands its result to next at the instant the
// caller has it.
func (it *instance) call(ex *exchange, c faults.Call, next func(faults.CallResult)) {
	en := it.w.en
	it.callSeq++
	parent := ex.req.ID
	if parent == "" {
		parent = "req"
	}
	start := en.Now()
	res := faults.CallResult{Callee: c.Service, Path: c.Path, Optional: c.Optional,
		RequestID: parent + "/" + it.in.Service + "." + strconv.Itoa(it.in.Index) + "." + strconv.FormatUint(it.callSeq, 10)}
	rc := it.w.calls.add(callEntry{call: record.Call{At: start, Caller: it.in.Service, CallerInstance: it.in.Index,
		Callee: c.Service, Optional: c.Optional}, end: -1})
	ended := false
	var deadline Timer
	finish := func(status int, err string) {
		ended = true
		en.Stop(deadline)
		res.Status, res.Error, res.Latency = status, err, en.Now()-start
		call := &rc.call
		call.Latency, call.Status, call.Error = res.Latency, status, err
		rc.end = en.Now()
		it.stats.Calls++
		if !res.OK() {
			it.stats.CallFailures++
		}
		next(res)
	}
	header := map[string]string{faults.HeaderRequestID: res.RequestID}
	if it.app.PropagateDeadline && ex.budget > 0 {
		remaining := ex.budget - (start - ex.arrival)
		if remaining <= 0 {
			// Not sent: no sidecar attempt is known (as live, where the sidecar never saw it).
			en.At(start, func() { finish(0, faults.CallErrDeadline) })
			return
		}
		header[faults.HeaderUpstreamTimeout] = strconv.FormatInt(max(remaining.Milliseconds(), 1), 10)
		deadline = en.After(remaining, func() { finish(0, faults.CallErrTimeout) })
	}
	req := &Request{ID: res.RequestID, Method: c.Method, Path: c.Path, Authority: c.Service, Header: header}
	hop := it.w.hop
	en.After(hop, func() {
		it.sidecar.Handle(req, func(r Result) {
			en.After(hop, func() {
				// The sidecar's attempt count is known even for a call the caller stopped waiting for.
				call := &rc.call
				call.Attempts, call.ZeroAttempts = r.Attempts, r.ZeroAttempts
				if ended {
					return
				}
				finish(r.Status, callError(r.Err))
			})
		})
	})
}

// callError names an exchange's error as faults' classifyCall (and the load generator) name it.
func callError(k ErrKind) string {
	switch k {
	case ErrNone:
		return ""
	case ErrReset:
		return record.ErrReset
	case ErrRefused:
		return record.ErrRefused
	case ErrEOF:
		return record.ErrEOF
	case ErrTimeout:
		return record.ErrTimeout
	}
	return record.ErrOther
}
