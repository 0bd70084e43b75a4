package proxy

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/meshproof/meshproof/proxy/policy"
)

// gRPC's headers, as the router and the local replies read and write them.
const (
	hdrGrpcStatus  = "Grpc-Status"
	hdrGrpcMessage = "Grpc-Message"
)

// grpcContentType is the content-type of a gRPC local reply (Envoy's ContentTypeValues.Grpc).
const grpcContentType = "application/grpc"

// The gRPC status codes the proxy writes itself (grpc/status codes, Envoy's Grpc::Status).
const (
	grpcUnknown          = 2
	grpcDeadlineExceeded = 4
	grpcPermissionDenied = 7
	grpcUnimplemented    = 12
	grpcInternal         = 13
	grpcUnavailable      = 14
	grpcUnauthenticated  = 16
	grpcMaximumKnown     = 16
)

// grpcStatusOf is a response's grpc-status as Envoy's Grpc::Common::getGrpcStatus reads it from one
// header map (source/common/grpc/common.cc): 0 when there is none (the retry conditions treat it as
// OK), -1 (InvalidCode) when it is not a decimal number or is above 16, else the code.
func grpcStatusOf(h http.Header) int {
	v := headerValue(h, hdrGrpcStatus)
	if v == "" {
		return 0
	}
	n, err := strconv.ParseUint(strings.TrimSpace(v), 10, 64)
	if err != nil || n > grpcMaximumKnown {
		return -1
	}
	return int(n)
}

// grpcStatusIn is grpcStatusOf when h has a grpc-status; ok is false when it has none (Envoy's
// Grpc::Common::getGrpcStatus returning no value).
func grpcStatusIn(h http.Header) (code int, ok bool) {
	if headerValue(h, hdrGrpcStatus) == "" {
		return 0, false
	}
	return grpcStatusOf(h), true
}

// grpcToHTTPStatus is Envoy's Grpc::Utility::grpcToHttpStatus (source/common/grpc/status.cc): the HTTP
// status a gRPC status stands for when the router reports it to outlier detection and to a host's
// rq_success / rq_error. An invalid code (-1) is 500.
func grpcToHTTPStatus(code int) int {
	switch code {
	case 0:
		return 200
	case 1: // CANCELLED: client closed request
		return 499
	case 3, 9, 11: // INVALID_ARGUMENT, FAILED_PRECONDITION, OUT_OF_RANGE
		return 400
	case 4: // DEADLINE_EXCEEDED
		return 504
	case 5: // NOT_FOUND
		return 404
	case 6, 10: // ALREADY_EXISTS, ABORTED
		return 409
	case 7: // PERMISSION_DENIED
		return 403
	case 8: // RESOURCE_EXHAUSTED
		return 429
	case 12: // UNIMPLEMENTED
		return 501
	case 14: // UNAVAILABLE
		return 503
	case 16: // UNAUTHENTICATED
		return 401
	}
	return 500 // UNKNOWN, INTERNAL, DATA_LOSS, an invalid code
}

// withGrpcStatus completes a response outcome with the grpc-status of its headers, which the gRPC
// retry conditions read (only a trailers-only response has one there: a grpc-status in trailers comes
// after the retry decision, as in Envoy, whose RetryStateImpl::wouldRetryFromHeaders sees the headers).
func withGrpcStatus(a *upstreamRequest) {
	if a.outcome.Kind == policy.Response && a.resp != nil {
		a.outcome.GrpcStatus = grpcStatusOf(a.resp.Header)
	}
}

// httpToGrpcStatus is Envoy's Grpc::Utility::httpToGrpcStatus (source/common/grpc/status.cc): the
// grpc-status of a gRPC local reply answered with HTTP status code.
func httpToGrpcStatus(code int) int {
	switch code {
	case 400:
		return grpcInternal
	case 401:
		return grpcUnauthenticated
	case 403:
		return grpcPermissionDenied
	case 404:
		return grpcUnimplemented
	case 429, 502, 503, 504:
		return grpcUnavailable
	}
	return grpcUnknown
}

// grpcPercentEncode is Envoy's Http::Utility::PercentEncoding::encode with its default reserved "%"
// (source/common/http/utility.cc), which writes a gRPC local reply's grpc-message: every byte below
// ' ', from '~' up (Envoy compares a signed char, so '~' and every byte above 0x7e are encoded), and
// '%' become %XX in upper-case hex; the rest is kept.
func grpcPercentEncode(s string) string {
	i := 0
	for i < len(s) && !grpcEncodes(s[i]) {
		i++
	}
	if i == len(s) {
		return s
	}
	const hex = "0123456789ABCDEF"
	b := make([]byte, i, len(s)+16)
	copy(b, s[:i])
	for ; i < len(s); i++ {
		c := s[i]
		if grpcEncodes(c) {
			b = append(b, '%', hex[c>>4], hex[c&0xf])
			continue
		}
		b = append(b, c)
	}
	return string(b)
}

func grpcEncodes(c byte) bool { return c < ' ' || c >= '~' || c == '%' }
