package proxy

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/proxy/config"
)

// hdrGrpcTimeout is gRPC's request deadline (PROTOCOL-HTTP2.md: TimeoutValue, at most 8 digits, then a
// unit of H, M, S, m, u or n).
const hdrGrpcTimeout = "Grpc-Timeout"

// maxGrpcTimeoutValue is the largest TimeoutValue: 8 digits.
const maxGrpcTimeoutValue = 99999999

// streamLimit is a request's max stream duration: when it ends (zero: never) and the grpc-timeout it
// goes upstream with ("": the request's own, if any).
type streamLimit struct {
	end         time.Time
	grpcTimeout string
	idle        *streamIdle // the stream idle timer; nil: none
}

// streamDuration is the request's max stream duration on its route, as Envoy's
// ActiveStream::refreshDurationTimeout (source/common/http/conn_manager_impl.cc): the route's
// max_stream_duration (0: none), else the HCM's (hcm; 0: none) — unless the request has a valid
// grpc-timeout and the route sets grpc_timeout_header_max, when it is the grpc-timeout, capped by
// grpc_timeout_header_max (0: no cap), less grpc_timeout_header_offset (down to 0). A gRPC request on a
// route with the max_stream_duration message (usingNewTimeouts) then goes upstream with that duration as
// its grpc-timeout. ok is false when the stream has no max duration; dropGrpcTimeout then says that the
// route's 0 disabled the HCM's, and Envoy removes a gRPC request's grpc-timeout.
func streamDuration(a *config.RouteAction, hcm time.Duration, r *http.Request) (d time.Duration, ok bool, grpcTimeout string, dropGrpcTimeout bool) {
	header, hasHeader := parseGrpcTimeout(headerValue(r.Header, hdrGrpcTimeout))
	if !hasHeader || a.GrpcTimeoutHeaderMax == nil {
		switch {
		case a.MaxStreamDuration != nil && *a.MaxStreamDuration == 0:
			// An explicit 0 disables the timer the HCM's duration armed at the stream's start.
			return 0, false, "", hcm > 0 && a.NewTimeouts && isGrpcRequest(r)
		case a.MaxStreamDuration != nil:
			d = *a.MaxStreamDuration
		case hcm > 0:
			d = hcm
		default:
			return 0, false, "", false
		}
	} else {
		d = header
		if limit := *a.GrpcTimeoutHeaderMax; limit != 0 && d > limit {
			d = limit
		}
		if off := a.GrpcTimeoutHeaderOffset; d != 0 && off != nil {
			d = max(d-*off, 0)
		}
	}
	if a.NewTimeouts && isGrpcRequest(r) {
		grpcTimeout = formatGrpcTimeout(d.Milliseconds())
	}
	return d, true, grpcTimeout, false
}

// parseGrpcTimeout reads a grpc-timeout value as Envoy's Grpc::Common::getGrpcTimeout
// (source/common/grpc/common.cc): at most 8 digits and a unit, to the millisecond, microseconds and
// nanoseconds rounded up; false when absent or invalid.
func parseGrpcTimeout(v string) (time.Duration, bool) {
	if v == "" {
		return 0, false
	}
	n, err := strconv.ParseInt(v[:len(v)-1], 10, 64)
	if err != nil || n < 0 || n > maxGrpcTimeoutValue {
		return 0, false
	}
	var ms int64 // in milliseconds, as Envoy: 99999999 hours fit, where they overflow a time.Duration
	switch v[len(v)-1] {
	case 'H':
		ms = n * 3_600_000
	case 'M':
		ms = n * 60_000
	case 'S':
		ms = n * 1000
	case 'm':
		ms = n
	case 'u':
		ms = (n + 999) / 1000
	case 'n':
		ms = (n + 999_999) / 1_000_000
	default:
		return 0, false
	}
	return time.Duration(min(ms, math.MaxInt64/int64(time.Millisecond))) * time.Millisecond, true
}

// formatGrpcTimeout writes ms as Envoy's Grpc::Common::toGrpcTimeout does: milliseconds while they fit
// 8 digits, else seconds, minutes, then hours (clipped to 8 digits).
func formatGrpcTimeout(ms int64) string {
	const units = "mSMH"
	v, u := ms, 0
	if v > maxGrpcTimeoutValue {
		v /= 1000
		u++
	}
	for v > maxGrpcTimeoutValue {
		if units[u] == 'H' {
			v = maxGrpcTimeoutValue
			break
		}
		v /= 60
		u++
	}
	return strconv.FormatInt(v, 10) + units[u:u+1]
}

// isGrpcRequest reports whether a request is gRPC by its content type, as Envoy's
// Grpc::Common::isGrpcRequestHeaders / hasGrpcContentType (source/common/grpc/common.cc): exactly
// application/grpc, or application/grpc followed by "+" (application/grpc+proto); not
// application/grpc-web, nor application/grpc;… (Envoy checks only for "+").
func isGrpcRequest(r *http.Request) bool {
	const grpc = "application/grpc"
	ct := headerValue(r.Header, hdrContentType)
	if !strings.HasPrefix(ct, grpc) {
		return false
	}
	return len(ct) == len(grpc) || ct[len(grpc)] == '+'
}
