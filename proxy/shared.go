package proxy

import (
	"math/rand/v2"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// The decisions the live router makes that the virtual-time simulator (mesh/sim) must make alike, as
// exported functions both call, so that the two cannot drift apart: route matching (MatchVirtualHost,
// PathMatches, HeaderMatches), the weighted cluster draw (PickWeightedCluster), the load balancer
// (NewPicker), the expected-timeout header (ExpectedTimeoutMs), the local reply to a failed attempt
// (FailureReply), the reason of a retry event (OutcomeReason) and the random streams (Seeds).

// Seeds are the proxy's random streams, derived from its Options.Rand as the live proxy derives them:
// one per request (from its x-request-id) for the router's draws and one for the route's, one per
// cluster for its outlier detector, one per host for its health checks.
type Seeds struct{ s seeds }

// NewSeeds draws the key from src as New does from Options.Rand (nil: a random key).
func NewSeeds(src rand.Source) Seeds { return Seeds{newSeeds(src)} }

// Router resets p to the router's stream of the request with this x-request-id: its hash-less hash,
// picks and back-off jitter, drawn in the live router's order.
func (s Seeds) Router(p *rand.PCG, requestID string) { s.s.request(p, requestID, saltRouter) }

// Route resets p to the route's stream of the request: its weighted cluster draw.
func (s Seeds) Route(p *rand.PCG, requestID string) { s.s.request(p, requestID, saltRoute) }

// Outlier is the stream of the cluster's outlier detector (enforcing draws, ejection jitter).
func (s Seeds) Outlier(cluster string) *rand.PCG { return s.s.stream(cluster, saltOutlier) }

// Health is the stream of the health checks of the host at addr in the cluster (interval jitter).
func (s Seeds) Health(cluster, addr string) *rand.PCG {
	return s.s.stream(cluster+"/"+addr, saltHealth)
}

// NewPicker is the load balancer the live cluster builds for cfg's endpoints (its lb_policy, weights
// and hash keys).
func NewPicker(cfg config.Cluster) (policy.Picker, error) {
	weights := make([]uint32, len(cfg.Endpoints))
	keys := make([]string, len(cfg.Endpoints))
	for i, ep := range cfg.Endpoints {
		weights[i], keys[i] = ep.Weight, ep.Address
	}
	return newPicker(cfg, weights, keys)
}

// FailureReply is the router's local reply to a final attempt that ended without a response: its
// status and Envoy's response flag (see failureReply). h2ResetReason is the reset reason of an HTTP/2
// stream the upstream reset ("" for HTTP/1.1).
func FailureReply(kind policy.OutcomeKind, h2ResetReason string) (status int, flag string) {
	code, f := failureReply(kind, h2ResetReason)
	var l flagList
	l.add(f)
	return code, l.String()
}
