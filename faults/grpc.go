package faults

import (
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/meshproof/meshproof/faults/echo"
)

// gRPC answers of the upstream: it serves meshproof.test.v1.Echo (package echo) over HTTP/2. A call
// is a request over HTTP/2 whose content-type is application/grpc (or application/grpc+…, not ;…); its body
// (the length-prefixed Request) is kept by the HTTP/2 server (up to maxGRPCRequest bytes). The
// fault decision is the same as for any request; an answer the decision lets through is the
// response HEADERS (:status 200, content-type application/grpc), DATA holding the Reply messages,
// and trailers (grpc-status 0) ending the stream, as in gRPC's PROTOCOL-HTTP2.md. Latency, the
// slow_body pace and the close_after / reset cuts apply to those DATA bytes; an abort with
// grpc_status answers trailers-only; an abort with an HTTP status answers that status (which a
// gRPC client maps to a code: 503 → UNAVAILABLE); the h2 faults answer RST_STREAM or GOAWAY.

// maxGRPCRequest is the most request body bytes kept for a gRPC call (gRPC's default receive limit).
const maxGRPCRequest = 4 << 20

// maxGRPCAnswer caps the bytes of a gRPC answer's messages; a call asking for more gets
// RESOURCE_EXHAUSTED.
const maxGRPCAnswer = 64 << 20

// GRPCContentType reports whether a content-type names gRPC: "application/grpc" or "application/grpc+…"
// ("+proto"), as Envoy's Grpc::Common::hasGrpcContentType (source/common/grpc/common.cc) and the
// proxy's router judge it; "application/grpc;…" is not.
func GRPCContentType(ct string) bool {
	rest, ok := strings.CutPrefix(ct, echo.ContentType) // case-sensitive, as Envoy
	return ok && (rest == "" || rest[0] == '+')
}

// isGRPC reports whether req is a gRPC call.
func isGRPC(req Request) bool {
	return req.HTTP2 && GRPCContentType(req.Header.Get("content-type"))
}

// grpcAnswer is the body of the answer to a gRPC call whose replies carry size bytes each unless the
// call asks otherwise: the length-prefixed Reply messages, or a gRPC status ≠ 0 and its message when
// the call cannot be answered (an unknown method, a malformed request).
func grpcAnswer(req Request, size int) (body []byte, code int, msg string) {
	replies := 1
	switch req.Path {
	case echo.PathUnary, echo.PathServerStream:
	default:
		return nil, echo.Unimplemented, "meshproof: unknown method " + req.Path
	}
	in, rest, ok, err := echo.NextFrame(req.Body)
	if err != nil || !ok || len(rest) > 0 {
		return nil, echo.Internal, "meshproof: want one uncompressed Request message"
	}
	r, err := echo.UnmarshalRequest(in)
	if err != nil {
		return nil, echo.Internal, "meshproof: malformed Request: " + err.Error()
	}
	if r.ReplySize > 0 {
		size = int(r.ReplySize)
	}
	if req.Path == echo.PathServerStream && r.Replies > 1 {
		replies = int(min(r.Replies, echo.MaxReplies))
	}
	one := echo.ReplySize(size) + echo.FrameHeader
	if one*replies > maxGRPCAnswer {
		return nil, 8, "meshproof: answer of " + strconv.Itoa(one*replies) + " bytes is too large" // RESOURCE_EXHAUSTED
	}
	msg1 := echo.AppendReply(nil, pattern(size))
	body = make([]byte, 0, one*replies)
	for range replies {
		body = echo.AppendFrame(body, msg1)
	}
	return body, 0, ""
}

// GRPCDeadlineMessage is the grpc-message of a call whose grpc-timeout passed at the upstream.
const GRPCDeadlineMessage = "meshproof: deadline exceeded"

const grpcDeadlineExceeded = 4 // DEADLINE_EXCEEDED

// grpcDeadlineLeft is what remains, now, of a gRPC call's grpc-timeout counted from its arrival; ok
// is false for a call without one (or a request that is no gRPC call). Like a gRPC server, the
// upstream stops a call's work at its deadline: a delay that reaches it ends the call there with
// DEADLINE_EXCEEDED (deadlineExceeded).
func (u *Upstream) grpcDeadlineLeft(in *inflight) (time.Duration, bool) {
	if !isGRPC(in.req) {
		return 0, false
	}
	ns, ok := echo.ParseTimeout(in.req.Header.Get("grpc-timeout"))
	if !ok {
		return 0, false
	}
	return time.Duration(ns) - u.cfg.Now().Sub(in.arrival), true
}

// deadlineExceeded is the answer to a gRPC call whose deadline passed during its delay: trailers-only
// DEADLINE_EXCEEDED instead of whatever the decision would have done after the delay (a server's
// handler returns its context's error: grpc-go's status.FromContextError).
func deadlineExceeded(d Decision) Decision {
	d.Reset, d.RSTStream, d.GoAway, d.Hang = false, "", "", false
	d.Status, d.GRPCStatus, d.Size, d.Cut, d.BytesPerSecond = http.StatusOK, grpcDeadlineExceeded, 0, CutNone, 0
	return d
}

// grpcTrailers is the trailers of a gRPC answer that ends with code.
func grpcTrailers(code int, msg string) http.Header {
	h := http.Header{}
	h.Set("grpc-status", strconv.Itoa(code))
	if msg != "" {
		h.Set("grpc-message", msg)
	}
	return h
}
