package policy

import (
	"fmt"
	"math"
	"time"
)

// SlowStartConfig is envoy.config.cluster.v3.Cluster.SlowStartConfig (of round_robin_lb_config or
// least_request_lb_config): a host that has just become healthy — added to the cluster, or passing
// active health checks again — gets a share of its weight that grows over Window.
type SlowStartConfig struct {
	// Window is slow_start_window; 0 disables slow start.
	Window time.Duration
	// Aggression is aggression's default_value (default 1.0: a linear ramp); more than 1 ramps faster.
	Aggression float64
	// MinWeightPercent is min_weight_percent (default 10): the least share of its weight a host gets.
	MinWeightPercent float64
}

// DefaultSlowStartConfig returns Envoy's defaults with the given window: aggression 1.0, 10%.
func DefaultSlowStartConfig(window time.Duration) SlowStartConfig {
	return SlowStartConfig{Window: window, Aggression: 1, MinWeightPercent: 10}
}

// Validate reports a value Envoy's schema or its load balancer would not take as it is: a negative
// window, an aggression that is not more than 0 (Envoy logs it and uses 1.0), a min_weight_percent
// outside [0, 100].
func (c SlowStartConfig) Validate() error {
	switch {
	case c.Window < 0:
		return &FieldError{Field: "slow_start_window", Reason: fmt.Sprintf("must not be negative, got %v", c.Window)}
	case !(c.Aggression > 0) || math.IsInf(c.Aggression, 0):
		return &FieldError{Field: "aggression.default_value", Reason: fmt.Sprintf("must be a finite number > 0, got %v", c.Aggression)}
	case !(c.MinWeightPercent >= 0 && c.MinWeightPercent <= 100):
		return &FieldError{Field: "min_weight_percent.value", Reason: fmt.Sprintf("must be in [0, 100], got %v", c.MinWeightPercent)}
	}
	return nil
}

// Enabled reports whether slow start applies (a window more than 0: Envoy's isSlowStartEnabled).
func (c SlowStartConfig) Enabled() bool { return c.Window > 0 }

// Factor is the share of its weight a healthy host gets `since` after it entered slow start, as
// Envoy's EdfLoadBalancerBase::applySlowStartFactor (source/common/upstream/load_balancer_impl.cc)
// computes it on whole milliseconds: max(min_weight_percent, time_factor^(1/aggression)) with
// time_factor = max(since, 1 ms) / window, and 1 once the window has passed.
func (c SlowStartConfig) Factor(since time.Duration) float64 {
	window := c.Window.Milliseconds()
	if window <= 0 || since.Milliseconds() >= window {
		return 1
	}
	tf := float64(max(since.Milliseconds(), 1)) / float64(window)
	if c.Aggression != 1 && tf != 1 {
		tf = math.Pow(tf, 1/c.Aggression)
	}
	return max(tf, c.MinWeightPercent/100)
}
