package xds

import (
	"context"
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// errorDetail is a NACK's error_detail: code INTERNAL, as Envoy's GrpcMuxImpl sets it
// (source/extensions/config_subscription/grpc/grpc_mux_impl.cc), and the reasons.
func errorDetail(err error) *statuspb.Status {
	if err == nil {
		return nil
	}
	return &statuspb.Status{Code: int32(codes.Internal), Message: err.Error()}
}

// ackEvent reports the ACK or NACK of a response.
func (c *Client) ackEvent(url, version string, err error) {
	if err != nil {
		c.event(Event{Kind: EventNACK, TypeURL: url, Version: version, Detail: err.Error()})
		return
	}
	c.event(Event{Kind: EventACK, TypeURL: url, Version: version})
}

// runSotW runs one state-of-the-world ADS stream until it fails or ctx ends; received says whether a
// response arrived on it.
//
// Each type is requested once on a new stream with the last version accepted (so a control plane that
// has nothing newer need not answer), CDS and EDS before LDS and RDS; every response is answered by
// a request of its type with its nonce: an ACK carries its version_info, a NACK the previous one and
// error_detail. The RDS and EDS resource names follow the listeners and clusters accepted; a change
// is a new request of that type. The node is sent on every request (Envoy's default,
// set_node_on_first_message_only false).
func (c *Client) runSotW(ctx context.Context, conn grpc.ClientConnInterface) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	c.event(Event{Kind: EventStreamOpened})
	c.connected(true)
	sent := map[string][]string{} // the resource names last requested, by type (present: requested)
	nonces := map[string]string{}
	send := func(url string, names []string, nack error) error {
		if err := c.lim.wait(ctx); err != nil {
			return err
		}
		c.mu.Lock()
		version := c.st.types[url].version
		c.mu.Unlock()
		return stream.Send(&discoveryv3.DiscoveryRequest{VersionInfo: version, Node: c.node, ResourceNames: names,
			TypeUrl: url, ResponseNonce: nonces[url], ErrorDetail: errorDetail(nack)})
	}
	subscribe := func() error {
		for _, url := range typeOrder {
			c.mu.Lock()
			names, on := c.st.wanted(url)
			c.mu.Unlock()
			prev, was := sent[url]
			// An empty list would be a wildcard: a type whose names all went keeps its last request.
			if !on || was && slices.Equal(prev, names) {
				continue
			}
			sent[url] = names
			if err := send(url, names, nil); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, err
		}
		received = true
		url := resp.GetTypeUrl()
		if _, requested := sent[url]; !requested {
			// A type never requested: Envoy ignores it ("unwatched type URL"); an answer would subscribe
			// to it (an empty resource_names is a wildcard).
			continue
		}
		nonces[url] = resp.GetNonce()
		rs := make([]resource, len(resp.GetResources()))
		for i, a := range resp.GetResources() {
			rs[i] = resource{value: a}
		}
		// A state-of-the-world LDS or CDS response lists every resource: the others are removed.
		full := url == TypeCluster || url == TypeListener
		c.mu.Lock()
		uerr := c.st.update(url, resp.GetVersionInfo(), rs, nil, full)
		c.mu.Unlock()
		c.ackEvent(url, resp.GetVersionInfo(), uerr)
		if err := send(url, sent[url], uerr); err != nil {
			return received, err
		}
		if err := subscribe(); err != nil {
			return received, err
		}
	}
}

// runDelta runs one incremental (delta) ADS stream until it fails or ctx ends; received says whether a
// response arrived on it.
//
// Each type is subscribed once on a new stream, with initial_resource_versions naming the resources
// held (so only what changed is sent again): CDS and LDS as wildcards (no names), RDS and EDS by the
// names the listeners and clusters accepted want; later changes subscribe and unsubscribe names.
// Every response is answered with its nonce, a NACK with error_detail. The node is sent on the
// stream's first request only, as the delta protocol asks.
func (c *Client) runDelta(ctx context.Context, conn grpc.ClientConnInterface) (received bool, err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).DeltaAggregatedResources(ctx)
	if err != nil {
		return false, err
	}
	c.event(Event{Kind: EventStreamOpened})
	c.connected(true)
	first := true
	send := func(req *discoveryv3.DeltaDiscoveryRequest) error {
		if err := c.lim.wait(ctx); err != nil {
			return err
		}
		if first {
			req.Node, first = c.node, false
		}
		return stream.Send(req)
	}
	subs := map[string]map[string]bool{} // the names subscribed, by type (present: subscribed)
	subscribe := func() error {
		for _, url := range typeOrder {
			c.mu.Lock()
			names, on := c.st.wanted(url)
			c.mu.Unlock()
			have, was := subs[url]
			switch {
			case !was && !on:
				continue
			case !was:
				c.mu.Lock()
				versions := c.st.held(url, names)
				c.mu.Unlock()
				subs[url] = setOf(names)
				if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url, ResourceNamesSubscribe: names,
					InitialResourceVersions: versions}); err != nil {
					return err
				}
				continue
			}
			if names == nil && on {
				continue // a wildcard stays one
			}
			want := setOf(names)
			var add, drop []string
			for n := range want {
				if !have[n] {
					add = append(add, n)
				}
			}
			for n := range have {
				if !want[n] {
					drop = append(drop, n)
				}
			}
			if len(add) == 0 && len(drop) == 0 {
				continue
			}
			slices.Sort(add)
			slices.Sort(drop)
			subs[url] = want
			if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url, ResourceNamesSubscribe: add,
				ResourceNamesUnsubscribe: drop}); err != nil {
				return err
			}
		}
		return nil
	}
	if err := subscribe(); err != nil {
		return false, err
	}
	for {
		resp, err := stream.Recv()
		if err != nil {
			return received, err
		}
		received = true
		url := resp.GetTypeUrl()
		var uerr error
		if _, known := c.st.types[url]; !known {
			uerr = errUnknownType(url)
		} else {
			rs := make([]resource, 0, len(resp.GetResources()))
			for _, r := range resp.GetResources() {
				rs = append(rs, resource{name: r.GetName(), version: r.GetVersion(), value: r.GetResource()})
			}
			c.mu.Lock()
			uerr = c.st.update(url, resp.GetSystemVersionInfo(), rs, resp.GetRemovedResources(), false)
			c.mu.Unlock()
		}
		c.ackEvent(url, resp.GetSystemVersionInfo(), uerr)
		if err := send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: url, ResponseNonce: resp.GetNonce(),
			ErrorDetail: errorDetail(uerr)}); err != nil {
			return received, err
		}
		if err := subscribe(); err != nil {
			return received, err
		}
	}
}

// held are the versions of the resources of url the client holds, for a delta stream's
// initial_resource_versions: all of a wildcard type's (names nil), else those among names.
func (s *state) held(url string, names []string) map[string]string {
	ts := s.types[url]
	out := map[string]string{}
	for name, e := range ts.entries {
		if names == nil || slices.Contains(names, name) {
			out[name] = e.version
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}

func setOf(names []string) map[string]bool {
	out := make(map[string]bool, len(names))
	for _, n := range names {
		out[n] = true
	}
	return out
}

type errUnknownType string

func (e errUnknownType) Error() string { return "unsupported resource type " + string(e) }
