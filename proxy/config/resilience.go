package config

import (
	"errors"
	"strings"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/meshproof/meshproof/proxy/policy"
)

// Envoy's defaults for the cluster's resilience settings, as api/envoy/config/cluster/v3/cluster.proto
// documents them: CommonLbConfig.healthy_panic_threshold (50%) and MaglevLbConfig.table_size (65537).
const (
	defaultPanicThreshold  = 50
	defaultMaglevTableSize = 65537
)

// resilience converts a cluster's outlier detection, circuit breakers, health checks and load
// balancer settings.
func (c *converter) resilience(cl *clusterv3.Cluster, out *Cluster, path string) {
	if od := cl.GetOutlierDetection(); od != nil {
		out.Outlier = c.outlier(od, joinPath(path, "outlier_detection"))
	}
	out.Breakers = c.breakers(cl.GetCircuitBreakers(), joinPath(path, "circuit_breakers"))
	for i, hc := range cl.GetHealthChecks() {
		if cfg, ok := c.healthCheck(hc, indexPath(joinPath(path, "health_checks"), i)); ok {
			out.HealthChecks = append(out.HealthChecks, cfg)
		}
	}
	if len(out.HealthChecks) > 1 {
		c.fail(joinPath(path, "health_checks"), "at most one health check is supported, got %d", len(out.HealthChecks))
	}
	out.IgnoreHealthOnHostRemoval = cl.GetIgnoreHealthOnHostRemoval()
	out.HealthyPanicThreshold = defaultPanicThreshold
	if p := cl.GetCommonLbConfig().GetHealthyPanicThreshold(); p != nil {
		out.HealthyPanicThreshold = p.GetValue()
	}
	out.LeastRequest = policy.DefaultLeastRequestConfig()
	if lr := cl.GetLeastRequestLbConfig(); lr != nil {
		if n := lr.GetChoiceCount(); n != nil {
			out.LeastRequest.ChoiceCount = n.GetValue()
		}
		if b := lr.GetActiveRequestBias(); b != nil {
			out.LeastRequest.ActiveRequestBias = b.GetDefaultValue()
		}
	}
	if ss := cl.GetRoundRobinLbConfig().GetSlowStartConfig(); ss != nil {
		out.SlowStart = c.slowStart(ss, out.LbPolicy, "ROUND_ROBIN", joinPath(path, "round_robin_lb_config.slow_start_config"))
	}
	if ss := cl.GetLeastRequestLbConfig().GetSlowStartConfig(); ss != nil {
		out.SlowStart = c.slowStart(ss, out.LbPolicy, "LEAST_REQUEST", joinPath(path, "least_request_lb_config.slow_start_config"))
	}
	out.RingHash = policy.DefaultRingHashConfig()
	if rh := cl.GetRingHashLbConfig(); rh != nil {
		if v := rh.GetMinimumRingSize(); v != nil {
			out.RingHash.MinimumRingSize = v.GetValue()
		}
		if v := rh.GetMaximumRingSize(); v != nil {
			out.RingHash.MaximumRingSize = v.GetValue()
		}
		if out.RingHash.MinimumRingSize > out.RingHash.MaximumRingSize {
			c.fail(joinPath(path, "ring_hash_lb_config.minimum_ring_size"), "%d is above maximum_ring_size %d",
				out.RingHash.MinimumRingSize, out.RingHash.MaximumRingSize)
		}
	}
	out.MaglevTableSize = defaultMaglevTableSize
	if v := cl.GetMaglevLbConfig().GetTableSize(); v != nil {
		out.MaglevTableSize = v.GetValue()
	}
}

// slowStart converts a slow_start_config (Envoy's defaults: aggression 1.0, min_weight_percent 10%),
// which applies only under the load balancer whose config holds it (want).
func (c *converter) slowStart(ss *clusterv3.Cluster_SlowStartConfig, lbPolicy, want, path string) *policy.SlowStartConfig {
	if lbPolicy != want {
		c.fail(path, "applies only with lb_policy %s, got %s", want, lbPolicy)
		return nil
	}
	out := policy.DefaultSlowStartConfig(c.duration(ss.GetSlowStartWindow(), 0, joinPath(path, "slow_start_window")))
	if a := ss.GetAggression(); a != nil {
		out.Aggression = a.GetDefaultValue()
	}
	if p := ss.GetMinWeightPercent(); p != nil {
		out.MinWeightPercent = p.GetValue()
	}
	if err := out.Validate(); err != nil {
		c.failPolicy(path, "", err)
		return nil
	}
	return &out
}

// failPolicy reports a policy validation error at the full path of the field it names: a
// *policy.FieldError's Field (e.g. "outlier_detection.max_ejection_time", prefix trimmed) joined to path.
func (c *converter) failPolicy(path, prefix string, err error) {
	var fe *policy.FieldError
	if errors.As(err, &fe) {
		c.fail(joinPath(path, strings.TrimPrefix(fe.Field, prefix)), "%s", fe.Reason)
		return
	}
	c.fail(path, "%s", err.Error())
}

func u32(v *wrapperspb.UInt32Value, def uint32) uint32 {
	if v == nil {
		return def
	}
	return v.GetValue()
}

func (c *converter) outlier(od *clusterv3.OutlierDetection, path string) *policy.OutlierConfig {
	d := policy.DefaultOutlierConfig()
	cfg := policy.OutlierConfig{
		Interval:                               c.duration(od.GetInterval(), d.Interval, joinPath(path, "interval")),
		BaseEjectionTime:                       c.duration(od.GetBaseEjectionTime(), d.BaseEjectionTime, joinPath(path, "base_ejection_time")),
		MaxEjectionTime:                        c.duration(od.GetMaxEjectionTime(), 0, joinPath(path, "max_ejection_time")),
		MaxEjectionTimeJitter:                  c.duration(od.GetMaxEjectionTimeJitter(), d.MaxEjectionTimeJitter, joinPath(path, "max_ejection_time_jitter")),
		MaxEjectionPercent:                     u32(od.GetMaxEjectionPercent(), d.MaxEjectionPercent),
		AlwaysEjectOneHost:                     od.GetAlwaysEjectOneHost().GetValue(),
		Consecutive5xx:                         u32(od.GetConsecutive_5Xx(), d.Consecutive5xx),
		EnforcingConsecutive5xx:                u32(od.GetEnforcingConsecutive_5Xx(), d.EnforcingConsecutive5xx),
		ConsecutiveGatewayFailure:              u32(od.GetConsecutiveGatewayFailure(), d.ConsecutiveGatewayFailure),
		EnforcingConsecutiveGatewayFailure:     u32(od.GetEnforcingConsecutiveGatewayFailure(), d.EnforcingConsecutiveGatewayFailure),
		SplitExternalLocalOriginErrors:         od.GetSplitExternalLocalOriginErrors(),
		ConsecutiveLocalOriginFailure:          u32(od.GetConsecutiveLocalOriginFailure(), d.ConsecutiveLocalOriginFailure),
		EnforcingConsecutiveLocalOriginFailure: u32(od.GetEnforcingConsecutiveLocalOriginFailure(), d.EnforcingConsecutiveLocalOriginFailure),
		EnforcingLocalOriginSuccessRate:        u32(od.GetEnforcingLocalOriginSuccessRate(), d.EnforcingLocalOriginSuccessRate),
		EnforcingSuccessRate:                   u32(od.GetEnforcingSuccessRate(), d.EnforcingSuccessRate),
		SuccessRateMinimumHosts:                u32(od.GetSuccessRateMinimumHosts(), d.SuccessRateMinimumHosts),
		SuccessRateRequestVolume:               u32(od.GetSuccessRateRequestVolume(), d.SuccessRateRequestVolume),
		SuccessRateStdevFactor:                 u32(od.GetSuccessRateStdevFactor(), d.SuccessRateStdevFactor),
		FailurePercentageThreshold:             u32(od.GetFailurePercentageThreshold(), d.FailurePercentageThreshold),
		EnforcingFailurePercentage:             u32(od.GetEnforcingFailurePercentage(), d.EnforcingFailurePercentage),
		EnforcingFailurePercentageLocalOrigin:  u32(od.GetEnforcingFailurePercentageLocalOrigin(), d.EnforcingFailurePercentageLocalOrigin),
		FailurePercentageMinimumHosts:          u32(od.GetFailurePercentageMinimumHosts(), d.FailurePercentageMinimumHosts),
		FailurePercentageRequestVolume:         u32(od.GetFailurePercentageRequestVolume(), d.FailurePercentageRequestVolume),
		SuccessfulActiveHealthCheckUnejectHost: d.SuccessfulActiveHealthCheckUnejectHost,
	}
	if v := od.GetSuccessfulActiveHealthCheckUnejectHost(); v != nil {
		cfg.SuccessfulActiveHealthCheckUnejectHost = v.GetValue()
	}
	if err := cfg.Validate(); err != nil {
		c.failPolicy(path, "outlier_detection.", err)
	}
	return &cfg
}

// breakers converts the circuit breaker thresholds; a priority without an entry keeps Envoy's defaults.
func (c *converter) breakers(cb *clusterv3.CircuitBreakers, path string) Breakers {
	out := Breakers{Default: policy.DefaultCircuitBreakerThresholds(), High: policy.DefaultCircuitBreakerThresholds()}
	seen := map[corev3.RoutingPriority]bool{}
	for i, t := range cb.GetThresholds() {
		tpath := indexPath(joinPath(path, "thresholds"), i)
		if seen[t.GetPriority()] {
			c.fail(joinPath(tpath, "priority"), "a second entry for priority %s", t.GetPriority())
			continue
		}
		seen[t.GetPriority()] = true
		th := policy.DefaultCircuitBreakerThresholds()
		th.MaxConnections = uint64(u32(t.GetMaxConnections(), uint32(th.MaxConnections)))
		th.MaxPendingRequests = uint64(u32(t.GetMaxPendingRequests(), uint32(th.MaxPendingRequests)))
		th.MaxRequests = uint64(u32(t.GetMaxRequests(), uint32(th.MaxRequests)))
		th.MaxRetries = uint64(u32(t.GetMaxRetries(), uint32(th.MaxRetries)))
		if rb := t.GetRetryBudget(); rb != nil {
			b := policy.DefaultRetryBudget()
			if p := rb.GetBudgetPercent(); p != nil {
				b.BudgetPercent = p.GetValue()
			}
			if m := rb.GetMinRetryConcurrency(); m != nil {
				b.MinRetryConcurrency = uint64(m.GetValue())
			}
			th.RetryBudget = &b
		}
		if err := th.Validate(); err != nil {
			c.fail(tpath, "%v", err)
		}
		out.TrackRemaining = out.TrackRemaining || t.GetTrackRemaining()
		if t.GetPriority() == corev3.RoutingPriority_HIGH {
			out.High = th
		} else {
			out.Default = th
		}
	}
	return out
}

func (c *converter) healthCheck(hc *corev3.HealthCheck, path string) (policy.HealthCheckConfig, bool) {
	h := hc.GetHttpHealthCheck()
	if h == nil {
		c.fail(path, "required: http_health_check (the only health checker supported)")
		return policy.HealthCheckConfig{}, false
	}
	cfg := policy.HealthCheckConfig{
		Timeout:                  c.duration(hc.GetTimeout(), 0, joinPath(path, "timeout")),
		Interval:                 c.duration(hc.GetInterval(), 0, joinPath(path, "interval")),
		InitialJitter:            c.duration(hc.GetInitialJitter(), 0, joinPath(path, "initial_jitter")),
		IntervalJitter:           c.duration(hc.GetIntervalJitter(), 0, joinPath(path, "interval_jitter")),
		IntervalJitterPercent:    hc.GetIntervalJitterPercent(),
		UnhealthyThreshold:       u32(hc.GetUnhealthyThreshold(), 0),
		HealthyThreshold:         u32(hc.GetHealthyThreshold(), 0),
		UnhealthyInterval:        c.duration(hc.GetUnhealthyInterval(), 0, joinPath(path, "unhealthy_interval")),
		UnhealthyEdgeInterval:    c.duration(hc.GetUnhealthyEdgeInterval(), 0, joinPath(path, "unhealthy_edge_interval")),
		HealthyEdgeInterval:      c.duration(hc.GetHealthyEdgeInterval(), 0, joinPath(path, "healthy_edge_interval")),
		NoTrafficInterval:        c.duration(hc.GetNoTrafficInterval(), 0, joinPath(path, "no_traffic_interval")),
		NoTrafficHealthyInterval: c.duration(hc.GetNoTrafficHealthyInterval(), 0, joinPath(path, "no_traffic_healthy_interval")),
		Path:                     h.GetPath(),
		Host:                     h.GetHost(),
		ExpectedStatuses:         statusRanges(h.GetExpectedStatuses()),
		RetriableStatuses:        statusRanges(h.GetRetriableStatuses()),
	}
	if err := cfg.Validate(); err != nil {
		c.failPolicy(path, "health_checks.", err)
		return cfg, false
	}
	return cfg, true
}

func statusRanges(rs []*typev3.Int64Range) []policy.StatusRange {
	var out []policy.StatusRange
	for _, r := range rs {
		out = append(out, policy.StatusRange{Start: int(r.GetStart()), End: int(r.GetEnd())})
	}
	return out
}

// retryExtras converts the retry policy's status codes and host predicate.
func (c *converter) retryExtras(p *routev3.RetryPolicy, out *RetryPolicy, path string) {
	for _, code := range p.GetRetriableStatusCodes() {
		out.RetriableStatusCodes = append(out.RetriableStatusCodes, int(code))
	}
	out.HostSelectionMaxAttempts = 1
	if n := p.GetHostSelectionRetryMaxAttempts(); n > 0 {
		out.HostSelectionMaxAttempts = n
	}
	for i, hm := range p.GetRetriableHeaders() {
		out.RetriableHeaders = append(out.RetriableHeaders, c.headerMatcher(hm, indexPath(joinPath(path, "retriable_headers"), i)))
	}
	for i, hm := range p.GetRetriableRequestHeaders() {
		out.RetriableRequestHeaders = append(out.RetriableRequestHeaders, c.headerMatcher(hm, indexPath(joinPath(path, "retriable_request_headers"), i)))
	}
	if rl := p.GetRateLimitedRetryBackOff(); rl != nil {
		rpath := joinPath(path, "rate_limited_retry_back_off")
		out.RateLimited = &RateLimitedBackOff{MaxInterval: c.duration(rl.GetMaxInterval(), policy.DefaultRateLimitedMaxInterval, joinPath(rpath, "max_interval"))}
		for _, h := range rl.GetResetHeaders() {
			out.RateLimited.ResetHeaders = append(out.RateLimited.ResetHeaders, policy.ResetHeader{
				Name: h.GetName(), UnixTimestamp: h.GetFormat() == routev3.RetryPolicy_UNIX_TIMESTAMP})
		}
	}
	for i, pred := range p.GetRetryHostPredicate() {
		if pred.GetTypedConfig() == nil && pred.GetName() != "envoy.retry_host_predicates.previous_hosts" {
			c.fail(indexPath(joinPath(path, "retry_host_predicate"), i),
				"only envoy.retry_host_predicates.previous_hosts is supported, got %q", pred.GetName())
			continue
		}
		out.PreviousHosts = true
	}
}

// hashHeaders lists the hash_policy headers.
func (c *converter) hashHeaders(hps []*routev3.RouteAction_HashPolicy, path string) []string {
	var out []string
	for i, hp := range hps {
		h := hp.GetHeader()
		if h == nil {
			c.fail(indexPath(path, i), "only header hash policies are supported")
			continue
		}
		out = append(out, h.GetHeaderName())
	}
	return out
}

// NewCluster returns a STATIC round-robin cluster with Envoy's defaults for everything a bootstrap may
// leave unset: for configurations built in code.
func NewCluster(name string, endpoints ...Endpoint) Cluster {
	return Cluster{
		Name:                  name,
		ConnectTimeout:        defaultConnectTimeout,
		LbPolicy:              "ROUND_ROBIN",
		Endpoints:             endpoints,
		Breakers:              Breakers{Default: policy.DefaultCircuitBreakerThresholds(), High: policy.DefaultCircuitBreakerThresholds()},
		HealthyPanicThreshold: defaultPanicThreshold,
		LeastRequest:          policy.DefaultLeastRequestConfig(),
		RingHash:              policy.DefaultRingHashConfig(),
		MaglevTableSize:       defaultMaglevTableSize,
	}
}

// mirrorPolicies converts request_mirror_policies as Envoy's ShadowPolicyImpl
// (source/common/router/config_impl.cc): a cluster of the bootstrap (Envoy validates it with the route
// configuration's clusters), the fraction of requests mirrored — runtime_fraction's default_value, 100%
// when runtime_fraction is unset — and trace_sampled, default true.
func (c *converter) mirrorPolicies(ps []*routev3.RouteAction_RequestMirrorPolicy, path string, clusters map[string]bool) []MirrorPolicy {
	var out []MirrorPolicy
	for i, p := range ps {
		ppath := indexPath(path, i)
		if p.GetCluster() == "" {
			c.fail(joinPath(ppath, "cluster"), "required: the name of the cluster to mirror to (cluster_header is not supported)")
			continue
		}
		c.knownCluster(p.GetCluster(), joinPath(ppath, "cluster"), clusters)
		m := MirrorPolicy{Cluster: p.GetCluster(), Fraction: Fraction{Numerator: 100, Denominator: 100}, TraceSampled: true}
		if rf := p.GetRuntimeFraction(); rf != nil {
			m.Fraction = fraction(rf.GetDefaultValue())
		}
		if ts := p.GetTraceSampled(); ts != nil {
			m.TraceSampled = ts.GetValue()
		}
		out = append(out, m)
	}
	return out
}

// hedgePolicy converts a HedgePolicy (nil stays nil). Envoy implements only hedge_on_per_try_timeout:
// route_components.proto documents initial_requests and additional_request_chance as "not yet
// implemented", so a value other than their defaults (1 and 0%) is rejected rather than ignored.
func (c *converter) hedgePolicy(p *routev3.HedgePolicy, path string) *HedgePolicy {
	if p == nil {
		return nil
	}
	if n := p.GetInitialRequests(); n != nil && n.GetValue() != 1 {
		c.fail(joinPath(path, "initial_requests"), "%d is not supported: only 1, the default (Envoy does not implement more)", n.GetValue())
	}
	if f := p.GetAdditionalRequestChance(); f != nil && f.GetNumerator() != 0 {
		c.fail(joinPath(path, "additional_request_chance"), "a numerator of %d is not supported: only 0, the default (Envoy does not implement it)", f.GetNumerator())
	}
	return &HedgePolicy{OnPerTryTimeout: p.GetHedgeOnPerTryTimeout()}
}
