package config

import (
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
)

// Codec is the HCM codec_type: which protocols a listener's connections may speak.
type Codec int

const (
	// CodecAuto (Envoy's AUTO, the default): HTTP/2 when the connection starts with the HTTP/2
	// preface (prior knowledge, or after ALPN chose h2), else HTTP/1.1.
	CodecAuto Codec = iota
	// CodecHTTP1 (HTTP1): HTTP/1.1 only; a preface is answered as a bad request line.
	CodecHTTP1
	// CodecHTTP2 (HTTP2): HTTP/2 only; a connection that does not start with the preface is closed.
	CodecHTTP2
)

// HTTP2Options are the HCM http2_protocol_options (envoy.config.core.v3.Http2ProtocolOptions) of a
// listener's downstream HTTP/2 connections. The conversion fills every field; a Listener built in code
// whose HTTP2Options are all zero gets the defaults named on each field.
type HTTP2Options struct {
	// MaxConcurrentStreams is max_concurrent_streams, advertised in SETTINGS. Envoy's default,
	// 2147483647, costs Envoy nothing per idle stream; here each stream runs a goroutine, so unset (0)
	// means 1000 (see proxy/README.md).
	MaxConcurrentStreams uint32
	// InitialStreamWindowSize and InitialConnectionWindowSize are initial_stream_window_size and
	// initial_connection_window_size (65535..2147483647). Unset (0): 1 MiB each, not Envoy's 256 MiB:
	// the codec buffers whatever arrives within the window (see proxy/README.md).
	InitialStreamWindowSize, InitialConnectionWindowSize uint32
	// Flood limits, as Envoy's codec enforces them (ProtocolConstraints,
	// source/common/http/http2/protocol_constraints.cc); unset: Envoy's defaults.
	MaxConsecutiveInboundFramesWithEmptyPayload  uint32 // default 1
	MaxInboundPriorityFramesPerStream            uint32 // default 100
	MaxInboundWindowUpdateFramesPerDataFrameSent uint32 // default 10
}

// Envoy's defaults of the flood limits (Http2ProtocolOptions, envoy/config/core/v3/protocol.proto).
const (
	DefaultMaxConsecutiveInboundFramesWithEmptyPayload  = 1
	DefaultMaxInboundPriorityFramesPerStream            = 100
	DefaultMaxInboundWindowUpdateFramesPerDataFrameSent = 10
)

// codecOf reads the HCM codec_type (the accepted values are listed in supported.go).
func codecOf(hcm *hcmv3.HttpConnectionManager) Codec {
	switch hcm.GetCodecType() {
	case hcmv3.HttpConnectionManager_HTTP1:
		return CodecHTTP1
	case hcmv3.HttpConnectionManager_HTTP2:
		return CodecHTTP2
	}
	return CodecAuto
}

// http2Options converts the HCM http2_protocol_options at path.
func (c *converter) http2Options(o *corev3.Http2ProtocolOptions) HTTP2Options {
	var out HTTP2Options
	if o == nil {
		return out
	}
	// The ranges (max_concurrent_streams 1..2^31-1, the windows 65535..2^31-1) are the proto's own
	// rules, checked with its validation before this runs.
	out.MaxConcurrentStreams = o.GetMaxConcurrentStreams().GetValue()
	out.InitialStreamWindowSize = o.GetInitialStreamWindowSize().GetValue()
	out.InitialConnectionWindowSize = o.GetInitialConnectionWindowSize().GetValue()
	out.MaxConsecutiveInboundFramesWithEmptyPayload = u32(o.GetMaxConsecutiveInboundFramesWithEmptyPayload(),
		DefaultMaxConsecutiveInboundFramesWithEmptyPayload)
	out.MaxInboundPriorityFramesPerStream = u32(o.GetMaxInboundPriorityFramesPerStream(), DefaultMaxInboundPriorityFramesPerStream)
	out.MaxInboundWindowUpdateFramesPerDataFrameSent = u32(o.GetMaxInboundWindowUpdateFramesPerDataFrameSent(),
		DefaultMaxInboundWindowUpdateFramesPerDataFrameSent)
	return out
}
