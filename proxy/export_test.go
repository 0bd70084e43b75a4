package proxy

import "github.com/meshproof/meshproof/proxy/internal/h1"

// ListsToken is how the proxy reads a Connection header's names, for the external test package.
var ListsToken = h1.HasToken

// HostAddress is the address the connection manager appends to x-forwarded-for for a loopback peer.
var HostAddress = hostAddress

// ParseGrpcTimeout and FormatGrpcTimeout read and write grpc-timeout values, for the external test package.
var (
	ParseGrpcTimeout  = parseGrpcTimeout
	FormatGrpcTimeout = formatGrpcTimeout
)

// ConnectFailureReason is the reset reason the router writes for a failed connection.
var ConnectFailureReason = connectFailureReason

// MatchSANs reports whether one of a peer certificate's SANs matches one of a validation context's
// matchers, as the proxy's verification does.
var MatchSANs = matchSANs
