// Package echo is the gRPC service meshproof's fault upstream serves and its load generator calls,
// meshproof.test.v1.Echo (echo.proto), encoded by hand with protowire — two three-field messages do
// not need generated code — with the gRPC message framing and status codes both sides share. It
// imports nothing of ours.
package echo

import (
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protowire"
)

// The service and its methods' paths (":path" of a call: /<package>.<service>/<method>).
const (
	Service          = "meshproof.test.v1.Echo"
	PathUnary        = "/" + Service + "/Unary"
	PathServerStream = "/" + Service + "/ServerStream"
	ContentType      = "application/grpc"
)

// MaxReplies caps Request.Replies (a stream of more is answered with this many).
const MaxReplies = 10000

// Request is meshproof.test.v1.Request.
type Request struct {
	Payload   []byte
	ReplySize uint32 // 0 = the instance's response size
	Replies   uint32 // 0 = 1
}

// Reply is meshproof.test.v1.Reply.
type Reply struct {
	Payload []byte
}

// Field numbers of echo.proto.
const (
	fieldPayload   protowire.Number = 1
	fieldReplySize protowire.Number = 2
	fieldReplies   protowire.Number = 3
)

// Marshal encodes r (proto3: zero fields are left out).
func (r Request) Marshal() []byte {
	var b []byte
	if len(r.Payload) > 0 {
		b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
		b = protowire.AppendBytes(b, r.Payload)
	}
	if r.ReplySize != 0 {
		b = protowire.AppendTag(b, fieldReplySize, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.ReplySize))
	}
	if r.Replies != 0 {
		b = protowire.AppendTag(b, fieldReplies, protowire.VarintType)
		b = protowire.AppendVarint(b, uint64(r.Replies))
	}
	return b
}

// UnmarshalRequest decodes a Request; unknown fields are skipped, as proto3 does.
func UnmarshalRequest(b []byte) (Request, error) {
	var r Request
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		switch {
		case num == fieldPayload && typ == protowire.BytesType:
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			r.Payload, b = v, b[n:]
		case (num == fieldReplySize || num == fieldReplies) && typ == protowire.VarintType:
			v, n := protowire.ConsumeVarint(b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			if num == fieldReplySize {
				r.ReplySize = uint32(v)
			} else {
				r.Replies = uint32(v)
			}
			b = b[n:]
		default:
			n := protowire.ConsumeFieldValue(num, typ, b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			b = b[n:]
		}
	}
	return r, nil
}

// AppendReply appends the encoding of a Reply whose payload is payload.
func AppendReply(b, payload []byte) []byte {
	if len(payload) == 0 {
		return b
	}
	b = protowire.AppendTag(b, fieldPayload, protowire.BytesType)
	return protowire.AppendBytes(b, payload)
}

// UnmarshalReply decodes a Reply.
func UnmarshalReply(b []byte) (Reply, error) {
	var r Reply
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
		if num == fieldPayload && typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return r, protowire.ParseError(n)
			}
			r.Payload, b = v, b[n:]
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return r, protowire.ParseError(n)
		}
		b = b[n:]
	}
	return r, nil
}

// ReplySize is the encoded size of a Reply with a payload of n bytes.
func ReplySize(n int) int {
	if n == 0 {
		return 0
	}
	return protowire.SizeTag(fieldPayload) + protowire.SizeBytes(n)
}

// FrameHeader is the size of the gRPC length-prefixed message header: a compressed flag (always 0
// here) and a big-endian uint32 length, before the message (gRPC PROTOCOL-HTTP2.md, "Length-Prefixed-Message").
const FrameHeader = 5

// AppendFrame appends msg as one uncompressed length-prefixed message.
func AppendFrame(b, msg []byte) []byte {
	b = append(b, 0)
	b = binary.BigEndian.AppendUint32(b, uint32(len(msg)))
	return append(b, msg...)
}

// ErrCompressed is returned for a message with the compressed flag: we never negotiate compression.
var ErrCompressed = errors.New("echo: compressed gRPC message")

// NextFrame splits the first length-prefixed message off b. ok is false when b does not hold a whole one.
func NextFrame(b []byte) (msg, rest []byte, ok bool, err error) {
	if len(b) < FrameHeader {
		return nil, b, false, nil
	}
	if b[0] != 0 {
		return nil, b, false, ErrCompressed
	}
	n := binary.BigEndian.Uint32(b[1:5])
	if uint64(len(b)-FrameHeader) < uint64(n) {
		return nil, b, false, nil
	}
	return b[FrameHeader : FrameHeader+int(n)], b[FrameHeader+int(n):], true, nil
}

// Status codes of gRPC (grpc/grpc doc/statuscodes.md), by number.
var codeNames = [...]string{"OK", "CANCELLED", "UNKNOWN", "INVALID_ARGUMENT", "DEADLINE_EXCEEDED", "NOT_FOUND",
	"ALREADY_EXISTS", "PERMISSION_DENIED", "RESOURCE_EXHAUSTED", "FAILED_PRECONDITION", "ABORTED", "OUT_OF_RANGE",
	"UNIMPLEMENTED", "INTERNAL", "UNAVAILABLE", "DATA_LOSS", "UNAUTHENTICATED"}

// Some codes by number.
const (
	OK               = 0
	Cancelled        = 1
	Unknown          = 2
	DeadlineExceeded = 4
	Unimplemented    = 12
	Internal         = 13
	Unavailable      = 14
)

// CodeName is the canonical name of a code ("UNAVAILABLE"), or its number for one outside 0..16.
func CodeName(code int) string {
	if code >= 0 && code < len(codeNames) {
		return codeNames[code]
	}
	return strconv.Itoa(code)
}

// ParseCode reads a code by number (0..16) or by name, in any case ("UNAVAILABLE", "unavailable").
func ParseCode(s string) (int, error) {
	if n, err := strconv.Atoi(s); err == nil && n >= 0 && n < len(codeNames) {
		return n, nil
	}
	for i, name := range codeNames {
		if strings.EqualFold(s, name) {
			return i, nil
		}
	}
	return 0, fmt.Errorf("unknown gRPC status %q: want 0..16 or a name such as UNAVAILABLE (%s)", s, strings.Join(codeNames[:], ", "))
}

// FromHTTP is the gRPC status a client reports for an HTTP response without grpc-status, as gRPC's
// doc/http-grpc-status-mapping.md and Envoy's Grpc::Utility::httpToGrpcStatus
// (source/common/grpc/status.cc) map it.
func FromHTTP(status int) int {
	switch status {
	case 400:
		return Internal
	case 401:
		return 16
	case 403:
		return 7
	case 404:
		return Unimplemented
	case 429, 502, 503, 504:
		return Unavailable
	}
	return Unknown
}

// Timeout formats d as a grpc-timeout header value (at most 8 digits and a unit, rounded up).
func Timeout(ns int64) string {
	units := []struct {
		unit string
		ns   int64
	}{{"n", 1}, {"u", 1e3}, {"m", 1e6}, {"S", 1e9}, {"M", 60e9}, {"H", 3600e9}}
	for _, u := range units {
		v := (ns + u.ns - 1) / u.ns
		if v < 1e8 {
			return strconv.FormatInt(max(v, 1), 10) + u.unit
		}
	}
	return "99999999H"
}

// ParseTimeout reads a grpc-timeout header value into nanoseconds; ok is false when malformed.
func ParseTimeout(s string) (ns int64, ok bool) {
	if len(s) < 2 || len(s) > 9 {
		return 0, false
	}
	v, err := strconv.ParseInt(s[:len(s)-1], 10, 64)
	if err != nil || v < 0 {
		return 0, false
	}
	scale := map[byte]int64{'n': 1, 'u': 1e3, 'm': 1e6, 'S': 1e9, 'M': 60e9, 'H': 3600e9}[s[len(s)-1]]
	if scale == 0 {
		return 0, false
	}
	return v * scale, true
}
