package config_test

import (
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("RouteAction retry and mirror fields (api/envoy/config/route/v3/route_components.proto)", func() {
	const twoClusters = `
  - name: shadow
    load_assignment:
      cluster_name: shadow
      endpoints:
      - lb_endpoints:
        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8081}}}
`
	parse := func(action string) (*config.Route, error) {
		got, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}", "route: "+action)+twoClusters), file)
		if err != nil {
			return nil, err
		}
		return route(got), nil
	}
	get, yes := "GET", true

	DescribeTable("converts",
		func(action string, check func(*config.Route)) {
			r, err := parse(action)
			Expect(err).NotTo(HaveOccurred())
			check(r)
		},
		Entry("retry_policy.per_try_idle_timeout",
			`{cluster: backend, retry_policy: {retry_on: 5xx, per_try_idle_timeout: 0.25s}}`,
			func(r *config.Route) {
				Expect(r.Action.RetryPolicy.PerTryIdleTimeout).To(Equal(250 * time.Millisecond))
			}),
		Entry("retry_policy.retriable_request_headers, pseudo-headers included",
			`{cluster: backend, retry_policy: {retry_on: 5xx, retriable_request_headers: [{name: ":method", string_match: {exact: GET}}, {name: x-idempotent}]}}`,
			func(r *config.Route) {
				Expect(r.Action.RetryPolicy.RetriableRequestHeaders).To(Equal([]config.HeaderMatcher{
					{Name: ":method", Exact: &get}, {Name: "x-idempotent", Present: &yes}}))
			}),
		Entry("request_mirror_policies: 100% and sampled by default",
			`{cluster: backend, request_mirror_policies: [{cluster: shadow}]}`,
			func(r *config.Route) {
				Expect(r.Action.MirrorPolicies).To(Equal([]config.MirrorPolicy{
					{Cluster: "shadow", Fraction: config.Fraction{Numerator: 100, Denominator: 100}, TraceSampled: true}}))
			}),
		Entry("request_mirror_policies: runtime_fraction's default_value (no runtime: its key never overrides it), trace_sampled",
			`{cluster: backend, request_mirror_policies: [{cluster: shadow, runtime_fraction: {runtime_key: mirror.pct, default_value: {numerator: 25, denominator: TEN_THOUSAND}}, trace_sampled: false}]}`,
			func(r *config.Route) {
				Expect(r.Action.MirrorPolicies).To(Equal([]config.MirrorPolicy{
					{Cluster: "shadow", Fraction: config.Fraction{Numerator: 25, Denominator: 10_000}, TraceSampled: false}}))
			}),
		Entry("max_stream_duration: the route timeout no longer applies (Envoy's usingNewTimeouts)",
			`{cluster: backend, timeout: 3s, max_stream_duration: {max_stream_duration: 2s}}`,
			func(r *config.Route) {
				Expect(r.Action.Timeout).To(BeZero())
				Expect(r.Action.NewTimeouts).To(BeTrue())
				Expect(r.Action.MaxStreamDuration).To(HaveValue(Equal(2 * time.Second)))
			}),
		Entry("max_stream_duration: grpc_timeout_header_max and grpc_timeout_header_offset",
			`{cluster: backend, max_stream_duration: {grpc_timeout_header_max: 30s, grpc_timeout_header_offset: 0.1s}}`,
			func(r *config.Route) {
				Expect(r.Action.MaxStreamDuration).To(BeNil(), "unset: the HCM's applies")
				Expect(r.Action.NewTimeouts).To(BeTrue())
				Expect(r.Action.GrpcTimeoutHeaderMax).To(HaveValue(Equal(30 * time.Second)))
				Expect(r.Action.GrpcTimeoutHeaderOffset).To(HaveValue(Equal(100 * time.Millisecond)))
			}),
		Entry("idle_timeout: the route's stream idle timeout, in place of the HCM's",
			`{cluster: backend, idle_timeout: 2s}`,
			func(r *config.Route) { Expect(r.Action.IdleTimeout).To(HaveValue(Equal(2 * time.Second))) }),
		Entry("idle_timeout: 0s disables it; unset, the HCM's applies",
			`{cluster: backend, idle_timeout: 0s}`,
			func(r *config.Route) { Expect(r.Action.IdleTimeout).To(HaveValue(BeZero())) }),
		Entry("idle_timeout unset",
			`{cluster: backend}`,
			func(r *config.Route) { Expect(r.Action.IdleTimeout).To(BeNil()) }),
		Entry("max_stream_duration: 0s disables it; an empty message leaves it unset",
			`{cluster: backend, max_stream_duration: {max_stream_duration: 0s}}`,
			func(r *config.Route) { Expect(r.Action.MaxStreamDuration).To(HaveValue(BeZero())) }),
		Entry("hedge_policy.hedge_on_per_try_timeout, with initial_requests and additional_request_chance at their defaults",
			`{cluster: backend, hedge_policy: {hedge_on_per_try_timeout: true, initial_requests: 1, additional_request_chance: {numerator: 0}}}`,
			func(r *config.Route) {
				Expect(r.Action.HedgePolicy).To(Equal(&config.HedgePolicy{OnPerTryTimeout: true}))
			}),
	)

	It("converts a virtual host's hedge_policy", func() {
		got, _, err := config.ParseBootstrap([]byte(edit(`domains: ["*"]`, "domains: [\"*\"]\n              hedge_policy: {hedge_on_per_try_timeout: true}")), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(got.Listeners[0].Routes.VirtualHosts[0].HedgePolicy).To(Equal(&config.HedgePolicy{OnPerTryTimeout: true}))
	})

	DescribeTable("rejects",
		func(action string, want types.GomegaMatcher) {
			_, err := parse(action)
			Expect(config.Errors(err)).To(ContainElement(want))
		},
		Entry("hedge_policy.initial_requests other than 1 (not implemented by Envoy)",
			`{cluster: backend, hedge_policy: {initial_requests: 2}}`,
			pathMsg(routePath+".hedge_policy.initial_requests", "2 is not supported: only 1, the default")),
		Entry("hedge_policy.additional_request_chance other than 0 (not implemented by Envoy)",
			`{cluster: backend, hedge_policy: {additional_request_chance: {numerator: 10}}}`,
			pathMsg(routePath+".hedge_policy.additional_request_chance", "a numerator of 10 is not supported: only 0")),
		Entry("a negative max_stream_duration.grpc_timeout_header_offset",
			`{cluster: backend, max_stream_duration: {grpc_timeout_header_max: 1s, grpc_timeout_header_offset: -1s}}`,
			pathMsg(routePath+".max_stream_duration.grpc_timeout_header_offset", "")),
		Entry("a negative max_stream_duration",
			`{cluster: backend, max_stream_duration: {max_stream_duration: -1s}}`,
			pathMsg(routePath+".max_stream_duration.max_stream_duration", "")),
		Entry("a negative idle_timeout",
			`{cluster: backend, idle_timeout: -1s}`,
			pathMsg(routePath+".idle_timeout", "")),
		Entry("a negative per_try_idle_timeout",
			`{cluster: backend, retry_policy: {per_try_idle_timeout: -1s}}`,
			pathMsg(routePath+".retry_policy.per_try_idle_timeout", "")),
		Entry("a mirror cluster that is not in the bootstrap",
			`{cluster: backend, request_mirror_policies: [{cluster: nowhere}]}`,
			pathMsg(routePath+".request_mirror_policies[0].cluster", `unknown cluster "nowhere" (clusters: backend, shadow)`)),
		Entry("a mirror policy without a cluster",
			`{cluster: backend, request_mirror_policies: [{trace_sampled: true}]}`,
			pathMsg(routePath+".request_mirror_policies[0].cluster", "required")),
		Entry("cluster_header, not supported",
			`{cluster: backend, request_mirror_policies: [{cluster_header: x-mirror}]}`,
			pathMsg(routePath+".request_mirror_policies[0].cluster_header", "field not supported by meshproof")),
		Entry("disable_shadow_host_suffix_append, not supported",
			`{cluster: backend, request_mirror_policies: [{cluster: shadow, disable_shadow_host_suffix_append: true}]}`,
			pathMsg(routePath+".request_mirror_policies[0].disable_shadow_host_suffix_append", "field not supported by meshproof")),
	)
})
