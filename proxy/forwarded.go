package proxy

import (
	"net"
	"net/http"
	"net/netip"
	"strings"

	"github.com/meshproof/meshproof/proxy/config"
)

// The headers the connection manager sets or removes to say where a request comes from.
const (
	hdrForwardedFor    = "X-Forwarded-For"
	hdrEnvoyInternal   = "X-Envoy-Internal"
	hdrExternalAddress = "X-Envoy-External-Address"
	valueTrue          = "true"
	schemeHTTP         = "http"
	xffSeparator       = ","
)

// Shared one-value slices: their capacity is their length, so a later append copies them.
var (
	trueValue = []string{valueTrue}[:1:1]
	httpValue = []string{schemeHTTP}[:1:1]
)

// externalOnlyHeaders are the x-envoy request headers that only an internal request may bring: Envoy's
// ConnectionManagerUtility::cleanInternalHeaders (source/common/http/conn_manager_utility.cc) removes
// them from every request that is not internal, so that the router never acts on them.
var externalOnlyHeaders = []string{
	"X-Envoy-Retriable-Status-Codes", "X-Envoy-Retriable-Header-Names", "X-Envoy-Retry-On",
	"X-Envoy-Retry-Grpc-On", "X-Envoy-Max-Retries", "X-Envoy-Upstream-Alt-Stat-Name",
	"X-Envoy-Upstream-Rq-Timeout-Ms", "X-Envoy-Upstream-Rq-Per-Try-Timeout-Ms",
	"X-Envoy-Upstream-Rq-Timeout-Alt-Response", "X-Envoy-Expected-Rq-Timeout-Ms", "X-Envoy-Force-Trace",
	"X-Envoy-Ip-Tags", "X-Envoy-Original-Url", "X-Envoy-Hedge-On-Per-Try-Timeout",
}

// edgeOnlyHeaders are removed from an edge request only (cleanInternalHeaders' edge_request branch).
var edgeOnlyHeaders = []string{
	"X-Envoy-Decorator-Operation", "X-Envoy-Downstream-Service-Cluster", "X-Envoy-Downstream-Service-Node",
}

// forwarding is the connection manager's part of Envoy's ConnectionManagerUtility::mutateRequestHeaders
// (source/common/http/conn_manager_utility.cc) that finds the trusted client address and whether the
// request is internal: it appends to x-forwarded-for, sets x-forwarded-proto, x-envoy-internal and
// x-envoy-external-address, and removes the x-envoy headers an external request may not bring.
type forwarding struct {
	useRemote  bool
	hops       uint32
	skipAppend bool
	internal   []netip.Prefix // nil: no address is internal
	// local is appended to x-forwarded-for for a loopback peer, as Envoy appends its own address
	// (LocalInfo's, the host's first non-loopback address) rather than 127.0.0.1.
	local string
}

func newForwarding(l config.Listener) forwarding {
	return forwarding{useRemote: l.UseRemoteAddress, hops: l.XffNumTrustedHops, skipAppend: l.SkipXffAppend,
		internal: l.InternalAddresses, local: hostAddress()}
}

// mutate applies the request header mutations to a request from remote (the peer's host:port).
func (fw *forwarding) mutate(h http.Header, remote string) {
	delete(h, hdrEnvoyInternal)
	var (
		client       netip.Addr // the trusted client address; invalid: none
		singleXFF    bool
		peer, peerOK = peerAddr(remote)
	)
	if fw.useRemote {
		// The peer is the client, unless trusted proxies in front appended it to x-forwarded-for.
		singleXFF = len(h[hdrForwardedFor]) == 0
		if fw.hops > 0 {
			client, _ = lastXFF(h[hdrForwardedFor], fw.hops-1)
		}
		if !client.IsValid() && peerOK {
			client = peer
		}
		if !fw.skipAppend && peerOK {
			appended := peer
			if peer.IsLoopback() {
				appended = netip.Addr{}
			}
			fw.appendXFF(h, appended)
		}
		h[hdrForwardedProto] = httpValue // plaintext listeners only
	} else {
		// The client is the address that many trusted hops from the right of x-forwarded-for.
		client, singleXFF = lastXFF(h[hdrForwardedFor], fw.hops)
	}
	if len(h[hdrForwardedProto]) == 0 {
		h[hdrForwardedProto] = httpValue
	}
	// Internal: x-forwarded-for held a single address (after the append), an internal one. Without
	// use_remote_address and x-forwarded-for, a request is external whatever its peer.
	internal := singleXFF && client.IsValid() && fw.isInternal(client)
	edge := !internal && fw.useRemote
	if internal {
		h[hdrEnvoyInternal] = trueValue
	} else {
		for _, k := range externalOnlyHeaders {
			delete(h, k)
		}
		if edge {
			for _, k := range edgeOnlyHeaders {
				delete(h, k)
			}
		}
	}
	if edge && client.IsValid() {
		// The first hop into the trusted network says who the client was; its request gets a new
		// x-request-id (Envoy's request ID extension replaces it on edge requests).
		h[hdrExternalAddress] = []string{client.String()}
		h[hdrRequestID] = []string{newRequestID()}
	}
}

// appendXFF appends addr (invalid: the host's own address) to x-forwarded-for, as Envoy's
// Utility::appendXff: after a comma, without a space.
func (fw *forwarding) appendXFF(h http.Header, addr netip.Addr) {
	s := fw.local
	if addr.IsValid() {
		s = addr.String()
	}
	old := h[hdrForwardedFor]
	if len(old) == 0 {
		h[hdrForwardedFor] = []string{s}
		return
	}
	n := len(s)
	for _, v := range old {
		n += len(v) + len(xffSeparator)
	}
	var b strings.Builder
	b.Grow(n)
	for _, v := range old {
		b.WriteString(v)
		b.WriteString(xffSeparator)
	}
	b.WriteString(s)
	h[hdrForwardedFor] = []string{b.String()}
}

func (fw *forwarding) isInternal(a netip.Addr) bool {
	for _, p := range fw.internal {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// lastXFF is Envoy's Utility::getLastAddressFromXFF (source/common/http/utility.cc): skip the last skip
// addresses of x-forwarded-for (its lines joined by commas, as Envoy's codec joins them), and parse the
// one before them, spaces trimmed; invalid when there are not enough or it is not an IP address. single
// reports that x-forwarded-for held only that address (and nothing was skipped).
func lastXFF(values []string, skip uint32) (addr netip.Addr, single bool) {
	if len(values) == 0 {
		return netip.Addr{}, false
	}
	xff := values[0]
	if len(values) > 1 {
		xff = strings.Join(values, xffSeparator)
	}
	for range skip {
		i := strings.LastIndex(xff, xffSeparator)
		if i < 0 {
			return netip.Addr{}, false
		}
		xff = xff[:i]
	}
	i := strings.LastIndex(xff, xffSeparator)
	if i >= 0 && i+1 < len(xff) {
		xff = xff[i+1:]
	}
	a, err := netip.ParseAddr(strings.Trim(xff, " \t"))
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a.Unmap(), i < 0 && skip == 0
}

// peerAddr is the IP address of a host:port.
func peerAddr(remote string) (netip.Addr, bool) {
	ap, err := netip.ParseAddrPort(remote)
	if err != nil {
		return netip.Addr{}, false
	}
	return ap.Addr().Unmap(), true
}

// hostAddress is the host's first IPv4 address that is not loopback or link-local, on an interface
// that is up, else its first such IPv6 address, else 127.0.0.1: like Envoy's local address
// (Network::Utility::getLocalAddress, source/common/network/utility.cc), which it appends to
// x-forwarded-for for a loopback peer.
func hostAddress() string {
	ifaces, err := net.Interfaces()
	if err != nil {
		return loopbackAddress
	}
	var v6 string
	for _, ifc := range ifaces {
		if ifc.Flags&net.FlagUp == 0 {
			continue
		}
		addrs, err := ifc.Addrs()
		if err != nil {
			continue
		}
		for _, a := range addrs {
			pn, ok := a.(*net.IPNet)
			if !ok {
				continue
			}
			ip, ok := netip.AddrFromSlice(pn.IP)
			if !ok || ip.IsLoopback() || ip.IsLinkLocalUnicast() {
				continue
			}
			if ip = ip.Unmap(); ip.Is4() {
				return ip.String()
			}
			if v6 == "" {
				v6 = ip.String()
			}
		}
	}
	if v6 == "" {
		return loopbackAddress
	}
	return v6
}

const loopbackAddress = "127.0.0.1"

// forwardingHandler applies the forwarding mutations to each request before the rest of the chain.
type forwardingHandler struct {
	fw   forwarding
	next http.Handler
}

var _ http.Handler = (*forwardingHandler)(nil)

func (h *forwardingHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h.fw.mutate(r.Header, r.RemoteAddr)
	h.next.ServeHTTP(w, r)
}
