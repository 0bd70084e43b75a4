package config_test

import (
	"regexp"

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
