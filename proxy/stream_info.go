package proxy

import (
	"context"
	"math/bits"
	"net/http"
	"strings"
	"sync/atomic"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
)

// responseFlags are Envoy's response flags (StreamInfo::CoreResponseFlag, envoy/stream_info/
// stream_info.h), one bit each. Only the flags the proxy can set are defined.
type responseFlags uint32

const (
	flagNoHealthyUpstream               responseFlags = 1 << iota // UH
	flagUpstreamRequestTimeout                                    // UT
	flagUpstreamConnectionFailure                                 // UF
	flagUpstreamConnectionTermination                             // UC
	flagUpstreamOverflow                                          // UO
	flagNoRouteFound                                              // NR
	flagDelayInjected                                             // DI
	flagFaultInjected                                             // FI
	flagRateLimited                                               // RL
	flagDownstreamConnectionTermination                           // DC
	flagUpstreamRetryLimitExceeded                                // URX
	flagStreamIdleTimeout                                         // SI
	flagDownstreamProtocolError                                   // DPE
	flagNoClusterFound                                            // NC
	flagUpstreamRemoteReset                                       // UR
	numResponseFlags                    = iota
)

// responseFlagNames are the flags' short names, by bit.
var responseFlagNames = [numResponseFlags]string{"UH", "UT", "UF", "UC", "UO", "NR", "DI", "FI", "RL", "DC", "URX",
	"SI", "DPE", "NC", "UR"}

// flagList is the response flags of a stream in the order they were set, which is the order
// %RESPONSE_FLAGS% lists them in: Envoy's StreamInfoImpl::setResponseFlag appends a flag not yet set to
// response_flags_, and ResponseFlagUtils::toString walks that list (source/common/stream_info/
// utility.cc), so a retried connection failure reads "URX,UF" (the router decides on the retry limit
// before Filter::onUpstreamAbort sets UF).
type flagList struct {
	set   responseFlags
	order [numResponseFlags]uint8 // bit indexes, the first n of them set
	n     uint8
}

// add sets a flag once; the same flag again keeps its place.
func (l *flagList) add(f responseFlags) {
	if f == 0 || l.set&f != 0 {
		return
	}
	l.set |= f
	l.order[l.n] = uint8(bits.TrailingZeros32(uint32(f)))
	l.n++
}

// String is %RESPONSE_FLAGS%: the short names joined by ",", "-" for none (ResponseFlagUtils::toString).
func (l *flagList) String() string {
	if l.n == 0 {
		return "-"
	}
	var b strings.Builder
	for i, bit := range l.order[:l.n] {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(responseFlagNames[bit])
	}
	return b.String()
}

// streamInfo is what an access log reads of a finished downstream request (Envoy's StreamInfo): the
// filters, the connection manager and the router fill it in as the request goes. It exists only when
// the listener has access logs (infoOf is nil otherwise, and every method does nothing on nil), so
// the request path costs nothing more without them. All but bytesIn are written by the request's own
// goroutine.
type streamInfo struct {
	start   time.Time
	flags   flagList
	details string // %RESPONSE_CODE_DETAILS% ("": none yet)
	code    int    // the response code sent; 0: none
	bytesIn atomic.Int64
	// bytesOut is the response body bytes sent downstream.
	bytesOut int64
	// upstreamRx is when the final attempt's response headers arrived (zero: no upstream response).
	upstreamRx time.Time
	upstream   string // the final attempt's host, host:port ("": none)
	cluster    string // the route's cluster, once the router has it
	route      *config.Route
	attempts   int // upstream attempts made (%UPSTREAM_REQUEST_ATTEMPT_COUNT%)
	// respHeader is the upstream response's headers as sent downstream, copied (the relayed headers'
	// values belong to the upstream connection once its body is closed); nil: the writer's are ours.
	respHeader http.Header
}

type streamInfoKey struct{}

// infoOf is the request's streamInfo, nil when its listener has no access log.
func infoOf(r *http.Request) *streamInfo {
	if r == nil {
		return nil
	}
	si, _ := r.Context().Value(streamInfoKey{}).(*streamInfo)
	return si
}

func withStreamInfo(r *http.Request, si *streamInfo) *http.Request {
	return r.WithContext(context.WithValue(r.Context(), streamInfoKey{}, si))
}

// setFlag adds a response flag (Envoy's StreamInfo::setResponseFlag: flags accumulate).
func (si *streamInfo) setFlag(f responseFlags) {
	if si != nil {
		si.flags.add(f)
	}
}

// setDetails sets %RESPONSE_CODE_DETAILS%, once: the first reason given is the one that decided the
// response (later ones, such as the generic local reply's, do not replace it).
func (si *streamInfo) setDetails(d string) {
	if si != nil && si.details == "" {
		si.details = d
	}
}

// failStarted sets a response flag and the details of a stream reset after its response started:
// they replace the details set when it started (via_upstream), as Envoy's setResponseCodeDetails does.
func (si *streamInfo) failStarted(f responseFlags, details string) {
	if si != nil {
		si.flags.add(f)
		si.details = details
	}
}

// fail sets a response flag and the details of the reply it causes.
func (si *streamInfo) fail(f responseFlags, details string) {
	si.setFlag(f)
	si.setDetails(details)
}

// sent records the response code and body bytes sent downstream.
func (si *streamInfo) sent(code int, bytes int64) {
	if si != nil {
		si.code = code
		si.bytesOut += bytes
	}
}
