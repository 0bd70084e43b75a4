package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// Cluster.SlowStartConfig (api/envoy/config/cluster/v3/cluster.proto), under round_robin_lb_config or
// least_request_lb_config; its defaults are EdfLoadBalancerBase's (load_balancer_impl.cc): aggression
// 1.0, min_weight_percent 10.
var _ = Describe("slow_start_config", func() {
	// lb adds the given lines (fields of minimal's cluster) before its load_assignment.
	lb := func(lines string) string {
		return edit("    load_assignment:\n", lines+"    load_assignment:\n")
	}
	// named matches an error by its path and message.
	named := func(path, msg string) types.GomegaMatcher {
		return SatisfyAll(HaveField("Path", path), HaveField("Msg", ContainSubstring(msg)))
	}
	cluster := func(b *config.Bootstrap) config.Cluster { return b.Clusters[0] }

	DescribeTable("converts",
		func(lbConfig string, want *policy.SlowStartConfig) {
			got, _, err := config.ParseBootstrap([]byte(lb(lbConfig)), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(cluster(got).SlowStart).To(Equal(want))
		},
		Entry("round robin: the window, with Envoy's defaults",
			"    round_robin_lb_config: {slow_start_config: {slow_start_window: 60s}}\n",
			&policy.SlowStartConfig{Window: time.Minute, Aggression: 1, MinWeightPercent: 10}),
		Entry("least request: aggression's default_value and min_weight_percent",
			"    lb_policy: LEAST_REQUEST\n    least_request_lb_config: {slow_start_config: {slow_start_window: 10s, aggression: {default_value: 2, runtime_key: lb.aggression}, min_weight_percent: {value: 25}}}\n",
			&policy.SlowStartConfig{Window: 10 * time.Second, Aggression: 2, MinWeightPercent: 25}),
		Entry("no window: disabled, as Envoy's isSlowStartEnabled",
			"    round_robin_lb_config: {slow_start_config: {}}\n",
			&policy.SlowStartConfig{Aggression: 1, MinWeightPercent: 10}),
		Entry("none",
			"    lb_policy: ROUND_ROBIN\n",
			nil),
	)

	DescribeTable("rejects",
		func(lbConfig string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(lb(lbConfig)), file)
			Expect(config.Errors(err)).To(ContainElement(want))
		},
		Entry("a negative window",
			"    round_robin_lb_config: {slow_start_config: {slow_start_window: -1s}}\n",
			named(clusterPath+".round_robin_lb_config.slow_start_config.slow_start_window", "is negative")),
		Entry("an aggression of 0",
			"    round_robin_lb_config: {slow_start_config: {slow_start_window: 1s, aggression: {default_value: 0, runtime_key: k}}}\n",
			named(clusterPath+".round_robin_lb_config.slow_start_config.aggression.default_value", "must be a finite number > 0, got 0")),
		Entry("a min_weight_percent over 100",
			"    round_robin_lb_config: {slow_start_config: {slow_start_window: 1s, min_weight_percent: {value: 150}}}\n",
			named(clusterPath+".round_robin_lb_config.slow_start_config.min_weight_percent.value", "value must be inside range [0, 100]")),
		Entry("round robin's slow start under another load balancer",
			"    lb_policy: RANDOM\n    round_robin_lb_config: {slow_start_config: {slow_start_window: 1s}}\n",
			named(clusterPath+".round_robin_lb_config.slow_start_config", "applies only with lb_policy ROUND_ROBIN, got RANDOM")),
		Entry("least request's slow start under round robin",
			"    least_request_lb_config: {slow_start_config: {slow_start_window: 1s}}\n",
			named(clusterPath+".least_request_lb_config.slow_start_config", "applies only with lb_policy LEAST_REQUEST, got ROUND_ROBIN")),
		Entry("an unknown field of round_robin_lb_config",
			"    round_robin_lb_config: {locality_lb_config: {}}\n",
			named(clusterPath+".round_robin_lb_config.locality_lb_config", "supported: slow_start_config")),
	)
})
