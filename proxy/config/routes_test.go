package config_test

import (
	"regexp"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/types"

	"github.com/meshproof/meshproof/proxy/config"
)

// matchPath is the path of minimal's one route match.
const matchPath = hcmPath + ".route_config.virtual_hosts[0].routes[0].match"

var _ = Describe("route matching (Envoy's RouteMatch, api/envoy/config/route/v3/route_components.proto)", func() {
	str := func(s string) *string { return &s }
	yes := func() *bool { b := true; return &b }

	DescribeTable("converts",
		func(match string, want config.RouteMatch) {
			got, _, err := config.ParseBootstrap([]byte(edit("match: {prefix: /}", "match: "+match)), file)
			Expect(err).NotTo(HaveOccurred())
			Expect(route(got).Match).To(Equal(want))
		},
		Entry("safe_regex, anchored for Envoy's full match (google_re2 accepted empty)",
			`{safe_regex: {google_re2: {}, regex: "/b[io]t"}}`,
			config.RouteMatch{Regex: regexp.MustCompile(`^(?:/b[io]t)$`)}),
		Entry("path_separated_prefix",
			`{path_separated_prefix: /api}`,
			config.RouteMatch{Prefix: "/api", Separated: true}),
		Entry("case_sensitive: false",
			`{prefix: /API, case_sensitive: false}`,
			config.RouteMatch{Prefix: "/API", IgnoreCase: true}),
		Entry("headers: string_match (with safe_regex), present_match, range_match, invert_match",
			`{prefix: /, headers: [{name: x-canary, string_match: {exact: "1"}}, {name: x-user, string_match: {safe_regex: {regex: "u[0-9]+"}}}, {name: x-debug}, {name: x-shard, range_match: {start: 0, end: 10}, invert_match: true}]}`,
			config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-canary", Exact: str("1")},
				{Name: "x-user", Regex: regexp.MustCompile(`^(?:u[0-9]+)$`)},
				{Name: "x-debug", Present: yes()},
				{Name: "x-shard", Range: &config.Int64Range{Start: 0, End: 10}, Invert: true},
			}}),
		Entry("headers: treat_missing_header_as_empty",
			`{prefix: /, headers: [{name: x-tier, string_match: {exact: gold}, invert_match: true, treat_missing_header_as_empty: true}]}`,
			config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-tier", Exact: str("gold"), Invert: true, MissingAsEmpty: true},
			}}),
		Entry("query_parameters: string_match and present_match",
			`{prefix: /, query_parameters: [{name: debug, present_match: true}, {name: lang, string_match: {prefix: en, ignore_case: true}}]}`,
			config.RouteMatch{Prefix: "/", QueryParameters: []config.HeaderMatcher{
				{Name: "debug", Present: yes()},
				{Name: "lang", Prefix: str("en"), IgnoreCase: true},
			}}),
	)

	DescribeTable("rejects",
		func(match string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(edit("match: {prefix: /}", "match: "+match)), file)
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("a safe_regex RE2 does not compile",
			`{safe_regex: {regex: "/(unclosed"}}`,
			at(19, 45, matchPath+".safe_regex.regex", `invalid RE2 regex "/(unclosed": error parsing regexp: missing closing ): `+"`/(unclosed`")),
		Entry("a header's safe_regex RE2 does not compile",
			`{prefix: /, headers: [{name: x, string_match: {safe_regex: {regex: "a**"}}}]}`,
			at(19, 91, matchPath+".headers[0].string_match.safe_regex.regex", `invalid RE2 regex "a**"`)),
		Entry("a path_separated_prefix ending in / (Envoy's PGV rule)",
			`{path_separated_prefix: /api/}`,
			at(19, 48, matchPath+".path_separated_prefix", "value does not match regex pattern")),
		Entry("grpc, not supported",
			`{prefix: /, grpc: {}}`,
			at(19, 36, matchPath+".grpc", "field not supported by meshproof (supported in envoy.config.route.v3.RouteMatch: case_sensitive, headers, path, path_separated_prefix, prefix, query_parameters, safe_regex)")),
	)
})

// withCanary is minimal with the route action replaced by action and a second cluster, canary, added
// after the first (the lines of minimal keep their numbers).
func withCanary(action string) string {
	return strings.Replace(edit("route: {cluster: backend}", "route: "+action), "port_value: 8080}}}\n",
		"port_value: 8080}}}\n  - name: canary\n    load_assignment:\n      cluster_name: canary\n      endpoints:\n      - lb_endpoints:\n        - endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: 8081}}}\n", 1)
}

var _ = Describe("weighted_clusters (Envoy's WeightedCluster, route_components.proto; weighted_cluster_specifier.cc)", func() {
	It("converts the clusters in order with their weights and the sum as the total", func() {
		got, _, err := config.ParseBootstrap([]byte(withCanary(
			`{weighted_clusters: {header_name: x-split, clusters: [{name: backend, weight: 90}, {name: canary, weight: 10}, {name: canary}]}}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(route(got).Action.Cluster).To(BeEmpty())
		Expect(route(got).Action.WeightedClusters).To(Equal(&config.WeightedClusters{
			Clusters:    []config.ClusterWeight{{Name: "backend", Weight: 90}, {Name: "canary", Weight: 10}, {Name: "canary", Weight: 0}},
			TotalWeight: 100, HeaderName: "x-split",
		}))
	})

	It("accepts the deprecated total_weight when it equals the sum", func() {
		_, _, err := config.ParseBootstrap([]byte(withCanary(
			`{weighted_clusters: {total_weight: 100, clusters: [{name: backend, weight: 95}, {name: canary, weight: 5}]}}`)), file)
		Expect(err).NotTo(HaveOccurred())
	})

	DescribeTable("rejects",
		func(action string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(withCanary(action)), file)
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("a weighted cluster the bootstrap does not have",
			`{weighted_clusters: {clusters: [{name: backend, weight: 1}, {name: canry, weight: 1}]}}`,
			at(20, 91, routePath+".weighted_clusters.clusters[1].name", `unknown cluster "canry" (clusters: backend, canary)`)),
		Entry("weights that add up to 0",
			`{weighted_clusters: {clusters: [{name: backend, weight: 0}]}}`,
			at(20, 55, routePath+".weighted_clusters.clusters", "the sum of the weights must be more than 0")),
		Entry("a total_weight the weights do not add up to",
			`{weighted_clusters: {total_weight: 100, clusters: [{name: backend, weight: 90}, {name: canary, weight: 5}]}}`,
			at(20, 59, routePath+".weighted_clusters.total_weight", "the weights of clusters add up to 95, not total_weight 100")),
		Entry("a cluster weight with both a name and a cluster_header",
			`{weighted_clusters: {clusters: [{name: backend, cluster_header: x-cluster, weight: 1}]}}`,
			at(20, 88, routePath+".weighted_clusters.clusters[0].cluster_header", "only one of name and cluster_header may be set")),
		Entry("a cluster weight with neither",
			`{weighted_clusters: {clusters: [{weight: 1}]}}`,
			at(20, 56, routePath+".weighted_clusters.clusters[0].name", "required: a cluster name, or a cluster_header")),
		Entry("use_hash_policy (hash policies choose hosts here, never a weighted cluster)",
			`{weighted_clusters: {use_hash_policy: true, clusters: [{name: backend, weight: 1}]}}`,
			at(20, 45, routePath+".weighted_clusters.use_hash_policy", "field not supported by meshproof (supported in envoy.config.route.v3.WeightedCluster: clusters, header_name, runtime_key_prefix, total_weight)")),
	)

	It("accepts runtime_key_prefix, the configured weights applying (meshproof has no runtime), and a cluster_header weight", func() {
		got, _, err := config.ParseBootstrap([]byte(withCanary(
			`{weighted_clusters: {runtime_key_prefix: routing.traffic_split, clusters: [{name: backend, weight: 90}, {cluster_header: x-cluster, weight: 10}]}}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(route(got).Action.WeightedClusters.Clusters).To(Equal([]config.ClusterWeight{
			{Name: "backend", Weight: 90}, {ClusterHeader: "X-Cluster", Weight: 10}}))
	})
})

var _ = Describe("cluster_header (Envoy's RouteAction cluster_header; cluster_not_found_response_code)", func() {
	It("converts the header name and the not-found code", func() {
		got, _, err := config.ParseBootstrap([]byte(withCanary(`{cluster_header: x-cluster}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(route(got).Action.ClusterHeader).To(Equal("X-Cluster"))
		Expect(route(got).Action.Cluster).To(BeEmpty())
		Expect(route(got).Action.ClusterNotFoundCode).To(BeZero(), "the default, 503")
		got, _, err = config.ParseBootstrap([]byte(withCanary(`{cluster_header: x-cluster, cluster_not_found_response_code: NOT_FOUND}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(route(got).Action.ClusterNotFoundCode).To(Equal(404))
	})

	It("rejects a pseudo-header or host", func() {
		_, _, err := config.ParseBootstrap([]byte(withCanary(`{cluster_header: host}`)), file)
		Expect(config.Errors(err)).To(HaveExactElements(
			at(20, 41, routePath+".cluster_header", `"host": want a request header other than a pseudo-header or host`)))
	})
})

var _ = Describe("rewrites (RouteAction prefix_rewrite, regex_rewrite, host_rewrite_literal)", func() {
	It("converts them, the RE2 substitution's \\N written as Go's ${N} and a $ escaped", func() {
		got, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}",
			`route: {cluster: backend, host_rewrite_literal: api.internal, regex_rewrite: {pattern: {regex: "^/service/([^/]+)(/.*)$"}, substitution: "\\2/$/\\1\\\\"}}`)), file)
		Expect(err).NotTo(HaveOccurred())
		a := route(got).Action
		Expect(a.HostRewrite).To(Equal("api.internal"))
		Expect(a.RegexRewrite).To(Equal(&config.RegexRewrite{Pattern: regexp.MustCompile(`^/service/([^/]+)(/.*)$`), Substitution: `${2}/$$/${1}\`}))

		got, _, err = config.ParseBootstrap([]byte(edit("route: {cluster: backend}", `route: {cluster: backend, prefix_rewrite: /v2/}`)), file)
		Expect(err).NotTo(HaveOccurred())
		Expect(route(got).Action.PrefixRewrite).To(Equal("/v2/"))
	})

	DescribeTable("rejects",
		func(action string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}", "route: "+action)), file)
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("prefix_rewrite with regex_rewrite (one way only, as Envoy)",
			`{cluster: backend, prefix_rewrite: /, regex_rewrite: {pattern: {regex: a}, substitution: b}}`,
			at(20, 77, routePath+".regex_rewrite", "only one of prefix_rewrite and regex_rewrite may be set")),
		Entry("a substitution naming a group the pattern lacks",
			`{cluster: backend, regex_rewrite: {pattern: {regex: "(a)"}, substitution: "\\2"}}`,
			at(20, 98, routePath+".regex_rewrite.substitution", `uses group \2; the pattern has 1`)),
		Entry("a pattern that does not compile",
			`{cluster: backend, regex_rewrite: {pattern: {regex: "(a"}, substitution: ""}}`,
			at(20, 76, routePath+".regex_rewrite.pattern.regex", `invalid RE2 regex "(a"`)),
		Entry("auto_host_rewrite, not supported",
			`{cluster: backend, auto_host_rewrite: true}`,
			at(20, 43, routePath+".auto_host_rewrite", "field not supported by meshproof")),
	)
})

var _ = Describe("headers to add and remove (core.v3.HeaderValueOption at route, virtual host and route configuration)", func() {
	It("converts each level, append as its append_action, names canonical and %% as a literal %", func() {
		doc := strings.Replace(edit("                route: {cluster: backend}\n", `                route: {cluster: backend}
                request_headers_to_add: [{header: {key: x-route, value: "100%%"}, append_action: OVERWRITE_IF_EXISTS_OR_ADD}, {header: {key: x-old, value: a}, append: false}, {header: {key: x-keep}, keep_empty_value: true}]
                response_headers_to_remove: [x-internal]
`), "              domains: [\"*\"]\n", `              domains: ["*"]
              response_headers_to_add: [{header: {key: x-vh, value: v}, append: true}, {header: {key: x-once, value: o}, append_action: ADD_IF_ABSENT}]
`, 1)
		doc = strings.Replace(doc, "            virtual_hosts:\n", "            request_headers_to_remove: [x-secret]\n            virtual_hosts:\n", 1)
		got, _, err := config.ParseBootstrap([]byte(doc), file)
		Expect(err).NotTo(HaveOccurred())
		rc := got.Listeners[0].Routes
		Expect(rc.RequestHeaders).To(Equal(config.HeaderMutation{Remove: []string{"X-Secret"}}))
		Expect(rc.VirtualHosts[0].ResponseHeaders).To(Equal(config.HeaderMutation{Add: []config.HeaderValueOption{
			{Key: "X-Vh", Value: "v", Action: config.AppendIfExistsOrAdd},
			{Key: "X-Once", Value: "o", Action: config.AddIfAbsent},
		}}))
		r := rc.VirtualHosts[0].Routes[0]
		Expect(r.RequestHeaders).To(Equal(config.HeaderMutation{Add: []config.HeaderValueOption{
			{Key: "X-Route", Value: "100%", Action: config.OverwriteIfExistsOrAdd},
			{Key: "X-Old", Value: "a", Action: config.OverwriteIfExistsOrAdd},
			{Key: "X-Keep", Action: config.AppendIfExistsOrAdd, KeepEmpty: true},
		}}))
		Expect(r.ResponseHeaders).To(Equal(config.HeaderMutation{Remove: []string{"X-Internal"}}))
	})

	It("parses substitution commands as Envoy's substitution formatter (%COMMAND(arg):N%, %% a literal %)", func() {
		doc := edit("                route: {cluster: backend}\n", `                route: {cluster: backend}
                request_headers_to_add: [{header: {key: x-client, value: "ip=%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%% ua=%REQ(user-agent?:authority):8%"}}]
                response_headers_to_add: [{header: {key: x-t, value: "%START_TIME(%s.%3f)%"}}]
`)
		got, _, err := config.ParseBootstrap([]byte(doc), file)
		Expect(err).NotTo(HaveOccurred())
		r := got.Listeners[0].Routes.VirtualHosts[0].Routes[0]
		Expect(r.RequestHeaders.Add).To(Equal([]config.HeaderValueOption{{Key: "X-Client", Format: config.Format{
			{Literal: "ip="}, {Command: "DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT"}, {Literal: " 100% ua="},
			{Command: "REQ", Header: "User-Agent", Alt: ":authority", MaxLen: 8},
		}}}))
		Expect(r.ResponseHeaders.Add).To(Equal([]config.HeaderValueOption{{Key: "X-T", Format: config.Format{
			{Command: "START_TIME", Layout: "%s.%3f"},
		}}}))
	})

	const routeLevel = hcmPath + ".route_config.virtual_hosts[0].routes[0]"
	DescribeTable("rejects",
		func(field string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(edit("                route: {cluster: backend}\n",
				"                route: {cluster: backend}\n                "+field+"\n")), file)
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("an unknown substitution command, named (Envoy: Not supported field in StreamInfo)",
			`request_headers_to_add: [{header: {key: x-up, value: "%UPSTREAM_REMOTE_ADRESS%"}}]`,
			at(21, 70, routeLevel+".request_headers_to_add[0].header.value", `"%UPSTREAM_REMOTE_ADRESS%": command %UPSTREAM_REMOTE_ADRESS% is unknown or not supported by meshproof (supported: DOWNSTREAM_DIRECT_REMOTE_ADDRESS, `)),
		Entry("a lone %",
			`request_headers_to_add: [{header: {key: x-up, value: "100% sure"}}]`,
			at(21, 70, routeLevel+".request_headers_to_add[0].header.value", `"100% sure": no valid command at position 3 (write %% for a literal %)`)),
		Entry("REQ without its header",
			`request_headers_to_add: [{header: {key: x-up, value: "%REQ%"}}]`,
			at(21, 70, routeLevel+".request_headers_to_add[0].header.value", `%REQ% requires a header`)),
		Entry("a length on a command that takes none",
			`response_headers_to_add: [{header: {key: x-up, value: "%PROTOCOL:3%"}}]`,
			at(21, 71, routeLevel+".response_headers_to_add[0].header.value", `%PROTOCOL% takes no parameters or length`)),
		Entry("a START_TIME conversion not supported",
			`response_headers_to_add: [{header: {key: x-t, value: "%START_TIME(%Q)%"}}]`,
			at(21, 70, routeLevel+".response_headers_to_add[0].header.value", `time conversion "%Q" at 0 is not supported`)),
		Entry("host, as Envoy's HeaderParser",
			`request_headers_to_add: [{header: {key: host, value: h}}]`,
			at(21, 57, routeLevel+".request_headers_to_add[0].header.key", `"host" may not be modified`)),
		Entry("a pseudo-header removed",
			`response_headers_to_remove: [":status"]`,
			at(21, 46, routeLevel+".response_headers_to_remove[0]", `":status" may not be removed`)),
		Entry("append with append_action",
			`request_headers_to_add: [{header: {key: x, value: y}, append: true, append_action: ADD_IF_ABSENT}]`,
			at(21, 79, routeLevel+".request_headers_to_add[0].append", "only one of append and append_action may be set")),
		Entry("raw_value, not supported",
			`request_headers_to_add: [{header: {key: x, raw_value: eQ==}}]`,
			at(21, 60, routeLevel+".request_headers_to_add[0].header.raw_value", "field not supported by meshproof")),
	)
})

var _ = Describe("direct_response and redirect (Route's other actions)", func() {
	DescribeTable("converts",
		func(action string, check func(*config.Route)) {
			got, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}", action)), file)
			Expect(err).NotTo(HaveOccurred())
			check(route(got))
		},
		Entry("a direct_response with an inline_string body",
			`direct_response: {status: 503, body: {inline_string: "maintenance"}}`,
			func(r *config.Route) {
				Expect(r.DirectResponse).To(Equal(&config.DirectResponse{Status: 503, Body: "maintenance"}))
				Expect(r.Action).To(BeZero())
			}),
		Entry("a redirect: 301 by default, https_redirect as the scheme",
			`redirect: {https_redirect: true, strip_query: true}`,
			func(r *config.Route) {
				Expect(r.Redirect).To(Equal(&config.Redirect{Scheme: "https", Code: 301, StripQuery: true}))
			}),
		Entry("a redirect with host, path and response_code",
			`redirect: {host_redirect: example.com, path_redirect: /new, response_code: TEMPORARY_REDIRECT}`,
			func(r *config.Route) {
				Expect(r.Redirect).To(Equal(&config.Redirect{Host: "example.com", Path: "/new", Code: 307}))
			}),
		Entry("a redirect with port_redirect and regex_rewrite",
			`redirect: {port_redirect: 8443, regex_rewrite: {pattern: {regex: "^/old/(.*)$"}, substitution: "/new/\\1"}}`,
			func(r *config.Route) {
				Expect(r.Redirect).To(Equal(&config.Redirect{Port: 8443, Code: 301,
					RegexRewrite: &config.RegexRewrite{Pattern: regexp.MustCompile(`^/old/(.*)$`), Substitution: "/new/${1}"}}))
			}),
	)

	DescribeTable("rejects",
		func(action string, want types.GomegaMatcher) {
			_, _, err := config.ParseBootstrap([]byte(edit("route: {cluster: backend}", action)), file)
			Expect(config.Errors(err)).To(HaveExactElements(want))
		},
		Entry("a body from a file",
			`direct_response: {status: 200, body: {filename: /etc/motd}}`,
			at(20, 65, routePath[:len(routePath)-len(".route")]+".direct_response.body.filename", "not supported here (only for TLS certificates, keys and CAs); use inline_string or inline_bytes")),
		Entry("a body over Envoy's 4 KiB default",
			`direct_response: {status: 200, body: {inline_string: "`+strings.Repeat("x", 4097)+`"}}`,
			at(20, 54, routePath[:len(routePath)-len(".route")]+".direct_response.body", "4097 bytes exceed")),
		Entry("a port_redirect beyond 65535",
			`redirect: {port_redirect: 70000}`,
			at(20, 43, routePath[:len(routePath)-len(".route")]+".redirect.port_redirect", "70000 is out of range 1..65535")),
		Entry("a regex_rewrite using a group its pattern lacks",
			`redirect: {regex_rewrite: {pattern: {regex: "^/old"}, substitution: "/new/\\1"}}`,
			at(20, 85, routePath[:len(routePath)-len(".route")]+".redirect.regex_rewrite.substitution", "the pattern has 0")),
		Entry("both path_redirect and regex_rewrite (a oneof)",
			`redirect: {path_redirect: /a, regex_rewrite: {pattern: {regex: "^/old"}, substitution: "/new"}}`,
			at(20, 47, routePath[:len(routePath)-len(".route")]+".redirect.regex_rewrite", "only one of path_redirect, prefix_rewrite, regex_rewrite may be set")),
	)
})

var _ = Describe("virtual_clusters (Envoy's VirtualCluster, route_components.proto)", func() {
	It("converts each one's name and header matchers", func() {
		got, _, err := config.ParseBootstrap([]byte(edit("              domains: [\"*\"]\n", `              domains: ["*"]
              virtual_clusters: [{name: writes, headers: [{name: ":method", string_match: {exact: POST}}]}, {name: all}]
`)), file)
		Expect(err).NotTo(HaveOccurred())
		post := "POST"
		Expect(got.Listeners[0].Routes.VirtualHosts[0].VirtualClusters).To(Equal([]config.VirtualCluster{
			{Name: "writes", Headers: []config.HeaderMatcher{{Name: ":method", Exact: &post}}},
			{Name: "all"},
		}))
	})

	It("rejects one without a name (Envoy's PGV rule)", func() {
		_, _, err := config.ParseBootstrap([]byte(edit("              domains: [\"*\"]\n", `              domains: ["*"]
              virtual_clusters: [{headers: [{name: ":method", string_match: {exact: POST}}]}]
`)), file)
		Expect(config.Errors(err)).To(HaveExactElements(
			at(18, 34, hcmPath+".route_config.virtual_hosts[0].virtual_clusters[0].name", "value length must be at least 1")))
	})
})
