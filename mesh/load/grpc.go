package load

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/faults/echo"
	"github.com/meshproof/meshproof/reports/record"
)

// gRPC load: every request is a call of meshproof.test.v1.Echo (package echo, served by the fault
// upstream) over h2c, as gRPC's PROTOCOL-HTTP2.md frames one: POST /<service>/<method>, content-type
// application/grpc, te: trailers, grpc-timeout when the call has a deadline, the length-prefixed
// Request as the body. The call's status is the grpc-status of the trailers, or of the headers of a
// trailers-only answer; an answer without one gets the code gRPC maps its HTTP status to
// (echo.FromHTTP); a transport error gets the code a gRPC client reports for it (a deadline or the
// request timeout: DEADLINE_EXCEEDED; the run stopped: CANCELLED; anything else: UNAVAILABLE).

// gRPC methods of GRPC.Method.
const (
	GRPCUnary        = "unary"
	GRPCServerStream = "server_stream"
)

// GRPC makes every request of a run a gRPC call (see Config.GRPC).
type GRPC struct {
	Method string // GRPCUnary (default) or GRPCServerStream
	// Deadline is each call's deadline, sent as grpc-timeout and enforced by the generator (a call past
	// it ends DEADLINE_EXCEEDED, Error "timeout"); 0 = none (Config.Timeout still bounds the call).
	Deadline time.Duration
	// Payload is the bytes of the Request's payload; ReplySize asks for replies of that many bytes
	// (0: the instance's response size); Replies asks ServerStream for that many replies (0: 1).
	Payload   int
	ReplySize uint32
	Replies   uint32
}

// checkGRPC validates a GRPC and returns the body and headers of its calls.
func checkGRPC(g *GRPC, c Config) (path string, body []byte, header http.Header, err error) {
	switch g.Method {
	case "", GRPCUnary:
		path = echo.PathUnary
	case GRPCServerStream:
		path = echo.PathServerStream
	default:
		return "", nil, nil, fmt.Errorf("load: gRPC method %q: want %q or %q", g.Method, GRPCUnary, GRPCServerStream)
	}
	switch {
	case g.Deadline < 0:
		return "", nil, nil, fmt.Errorf("load: gRPC deadline %s: want > 0 (or 0 for none)", g.Deadline)
	case g.Payload < 0 || g.Payload > 4<<20:
		return "", nil, nil, fmt.Errorf("load: gRPC payload %d bytes: want 0..%d", g.Payload, 4<<20)
	case len(c.Mix) > 0:
		return "", nil, nil, errors.New("load: a gRPC run has no request mix: every request is the same call")
	case c.Body != nil:
		return "", nil, nil, errors.New("load: a gRPC run sends its own body (the Echo Request): leave Body empty")
	}
	req := echo.Request{Payload: make([]byte, g.Payload), ReplySize: g.ReplySize, Replies: g.Replies}
	body = echo.AppendFrame(nil, req.Marshal())
	header = c.Header.Clone()
	if header == nil {
		header = http.Header{}
	}
	header.Set("content-type", echo.ContentType)
	header.Set("te", "trailers")
	if g.Deadline > 0 {
		header.Set("grpc-timeout", echo.Timeout(int64(g.Deadline)))
	}
	return path, body, header, nil
}

// grpcResult is what a gRPC call ended with.
type grpcResult struct {
	sent   time.Time
	status int // HTTP status, 0 without a response
	code   int // gRPC status
	err    error
}

// doGRPC makes one gRPC call over the h2c pool.
func (p *h2Pool) doGRPC(ctx context.Context, r *prepared, seq uint64, extra []string, deadline time.Duration) grpcResult {
	timeout := p.timeout
	if deadline > 0 {
		timeout = min(timeout, deadline)
	}
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	res := grpcResult{}
	res.sent, res.status, res.err = p.exchange(rctx, r, seq, extra, func(resp *http.Response) error {
		_, err := io.Copy(io.Discard, resp.Body)
		if err != nil {
			return err
		}
		s := resp.Trailer.Get("grpc-status")
		if s == "" {
			s = resp.Header.Get("grpc-status") // trailers-only
		}
		switch code, perr := strconv.Atoi(s); {
		case s != "" && perr == nil:
			res.code = code
		case resp.StatusCode != http.StatusOK:
			res.code = echo.FromHTTP(resp.StatusCode)
		default:
			res.code = echo.Internal // a 200 that ends without a grpc-status
		}
		return nil
	})
	if res.err != nil {
		switch {
		case ctx.Err() != nil:
			res.code = echo.Cancelled
		case errors.Is(res.err, context.DeadlineExceeded):
			res.code = echo.DeadlineExceeded
		default:
			res.code = echo.Unavailable
		}
	}
	return res
}

// grpcSample fills in a sample's gRPC status.
func grpcSample(s *record.Sample, code int) {
	s.GRPC, s.GRPCStatus = true, int32(code)
}
