package proxy_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// routedTo sends a GET for path (with headers, name/value pairs) and returns the cluster that answered,
// by the x-upstream header of the upstreams in byAddr, or "404" when no route matched.
func routedTo(url, path string, byAddr map[string]string, headers ...string) string {
	GinkgoHelper()
	req, err := http.NewRequest("GET", url+path, nil)
	Expect(err).NotTo(HaveOccurred())
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	resp, err := client.Do(req)
	Expect(err).NotTo(HaveOccurred())
	resp.Body.Close()
	if resp.StatusCode == http.StatusNotFound {
		return "404"
	}
	return byAddr[resp.Header.Get("x-upstream")]
}

// routeTo is a route with match m to the cluster.
func routeTo(m config.RouteMatch, cluster string) config.Route {
	return config.Route{Match: m, Action: config.RouteAction{Cluster: cluster, Timeout: 5 * time.Second}}
}

var _ = Describe("route matching, as Envoy's RouteMatch (route_components.proto; config_impl.cc)", func() {
	var (
		url    string
		byAddr map[string]string
	)
	str := func(s string) *string { return &s }
	present := func(b bool) *bool { return &b }
	anchored := func(re string) *regexp.Regexp { return regexp.MustCompile(`^(?:` + re + `)$`) }

	BeforeEach(func() {
		byAddr = map[string]string{}
		var clusters []config.Cluster
		for _, name := range []string{"a", "b", "c", "d"} {
			u := newUpstream(ok)
			byAddr[u.addr()] = name
			clusters = append(clusters, cluster(name, u.addr()))
		}
		_, url = start(setup{clusters: clusters, routes: []config.Route{
			// The first route that matches wins, in order.
			routeTo(config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-canary", Exact: str("1")},
				{Name: "x-user", Regex: anchored(`u[0-9]+`)},
			}}, "d"),
			routeTo(config.RouteMatch{Prefix: "/", QueryParameters: []config.HeaderMatcher{
				{Name: "debug", Present: present(true)},
				{Name: "lang", Prefix: str("en"), IgnoreCase: true},
			}}, "c"),
			routeTo(config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-shard", Range: &config.Int64Range{Start: 0, End: 10}},
			}}, "c"),
			routeTo(config.RouteMatch{Regex: anchored(`/b[io]t`)}, "a"),
			routeTo(config.RouteMatch{Prefix: "/api", Separated: true}, "b"),
			routeTo(config.RouteMatch{Path: "/Exact", IsPath: true, IgnoreCase: true}, "c"),
			routeTo(config.RouteMatch{Prefix: "/CI/", IgnoreCase: true}, "d"),
			routeTo(config.RouteMatch{Prefix: "/cs/"}, "a"),
			// treat_missing_header_as_empty: an absent x-tier is the empty value, which is not "gold".
			routeTo(config.RouteMatch{Prefix: "/missing", Headers: []config.HeaderMatcher{
				{Name: "x-tier", Exact: str("gold"), Invert: true, MissingAsEmpty: true},
			}}, "d"),
			routeTo(config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: "x-env", Exact: str("prod"), Invert: true},
			}}, "b"),
		}})
	})

	It("matches safe_regex against the whole path without the query string (Envoy's full match)", func() {
		Expect(routedTo(url, "/bit", byAddr)).To(Equal("a"))
		Expect(routedTo(url, "/bot?q=1", byAddr)).To(Equal("a"))
		Expect(routedTo(url, "/bits", byAddr, "x-env", "prod")).To(Equal("404"), "a regex is not a prefix")
		Expect(routedTo(url, "/abit", byAddr, "x-env", "prod")).To(Equal("404"))
	})

	It("matches path_separated_prefix on the whole path or the prefix followed by /", func() {
		Expect(routedTo(url, "/api", byAddr)).To(Equal("b"))
		Expect(routedTo(url, "/api/v1", byAddr)).To(Equal("b"))
		Expect(routedTo(url, "/api?x=y", byAddr)).To(Equal("b"))
		Expect(routedTo(url, "/apis", byAddr, "x-env", "prod")).To(Equal("404"))
	})

	It("compares path and prefix without case when case_sensitive is false, and with it by default", func() {
		Expect(routedTo(url, "/exact", byAddr)).To(Equal("c"))
		Expect(routedTo(url, "/EXACT", byAddr)).To(Equal("c"))
		Expect(routedTo(url, "/ci/x", byAddr)).To(Equal("d"))
		Expect(routedTo(url, "/cs/x", byAddr)).To(Equal("a"))
		Expect(routedTo(url, "/CS/x", byAddr, "x-env", "prod")).To(Equal("404"))
	})

	It("requires every header matcher to match (string_match exact and safe_regex)", func() {
		Expect(routedTo(url, "/bit", byAddr, "x-canary", "1", "x-user", "u42")).To(Equal("d"))
		Expect(routedTo(url, "/bit", byAddr, "x-canary", "1", "x-user", "u42x")).To(Equal("a"), "safe_regex is a full match")
		Expect(routedTo(url, "/bit", byAddr, "x-canary", "1")).To(Equal("a"))
	})

	It("matches range_match on [start, end) of a base-10 integer value", func() {
		Expect(routedTo(url, "/z", byAddr, "x-shard", "0")).To(Equal("c"))
		Expect(routedTo(url, "/z", byAddr, "x-shard", "9")).To(Equal("c"))
		Expect(routedTo(url, "/z", byAddr, "x-shard", "10", "x-env", "prod")).To(Equal("404"))
		Expect(routedTo(url, "/z", byAddr, "x-shard", "five", "x-env", "prod")).To(Equal("404"))
	})

	It("inverts a match on a present header, but an inverted value match never matches an absent header", func() {
		Expect(routedTo(url, "/z", byAddr, "x-env", "staging")).To(Equal("b"))
		Expect(routedTo(url, "/z", byAddr, "x-env", "prod")).To(Equal("404"))
		Expect(routedTo(url, "/z", byAddr)).To(Equal("404"), "Envoy: absent, and no treat_missing_header_as_empty")
	})

	It("matches an absent header as the empty value under treat_missing_header_as_empty (header_utility.cc, matchHeaders)", func() {
		Expect(routedTo(url, "/missing", byAddr)).To(Equal("d"), `absent: "" is not "gold", inverted`)
		Expect(routedTo(url, "/missing", byAddr, "x-tier", "silver")).To(Equal("d"))
		Expect(routedTo(url, "/missing", byAddr, "x-tier", "gold", "x-env", "prod")).To(Equal("404"))
	})

	It("requires every query parameter matcher to match the parameter's first value, decoded", func() {
		Expect(routedTo(url, "/z?debug&lang=EN-gb", byAddr)).To(Equal("c"))
		Expect(routedTo(url, "/z?debug=0&lang=%65n", byAddr)).To(Equal("c"))
		Expect(routedTo(url, "/z?debug=1&lang=fr&lang=en", byAddr, "x-env", "prod")).To(Equal("404"), "the first value decides")
		Expect(routedTo(url, "/z?lang=en", byAddr, "x-env", "prod")).To(Equal("404"))
	})
})

var _ = Describe("virtual hosts, as Envoy's VirtualHost.domains (route_components.proto)", func() {
	It("picks exact, then the longest suffix wildcard, then the longest prefix wildcard, then *; routes in order", func() {
		byAddr := map[string]string{}
		var clusters []config.Cluster
		for _, name := range []string{"exact", "suffix", "longer-suffix", "prefix", "any", "health"} {
			u := newUpstream(ok)
			byAddr[u.addr()] = name
			clusters = append(clusters, cluster(name, u.addr()))
		}
		vhost := func(name string, domains ...string) config.VirtualHost {
			return config.VirtualHost{Name: name, Domains: domains, Routes: []config.Route{
				routeTo(config.RouteMatch{Path: "/healthz", IsPath: true}, "health"),
				routeTo(config.RouteMatch{Prefix: "/"}, name),
			}}
		}
		_, url := start(setup{clusters: clusters, vhosts: []config.VirtualHost{
			vhost("any", "*"),
			vhost("prefix", "api.*"),
			vhost("suffix", "*.example.com"),
			vhost("longer-suffix", "*.eu.example.com"),
			vhost("exact", "api.example.com", "www.example.com:8443"),
		}})
		host := func(h, path string) string {
			GinkgoHelper()
			req, err := http.NewRequest("GET", url+path, nil)
			Expect(err).NotTo(HaveOccurred())
			req.Host = h
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return byAddr[resp.Header.Get("x-upstream")]
		}
		Expect(host("api.example.com", "/")).To(Equal("exact"))
		Expect(host("API.Example.com", "/")).To(Equal("exact"), "domains match without case")
		Expect(host("api.example.com:8080", "/")).To(Equal("prefix"), "Envoy matches the port too: not api.example.com, but api.*")
		Expect(host("shop.example.com:8080", "/")).To(Equal("any"), "nor *.example.com")
		Expect(host("www.example.com:8443", "/")).To(Equal("exact"))
		Expect(host("shop.example.com", "/")).To(Equal("suffix"))
		Expect(host("shop.eu.example.com", "/")).To(Equal("longer-suffix"))
		Expect(host(".example.com", "/")).To(Equal("any"), "a wildcard never matches the empty string")
		Expect(host("api.internal", "/")).To(Equal("prefix"))
		Expect(host("api.", "/")).To(Equal("any"))
		Expect(host("other", "/")).To(Equal("any"))
		Expect(host("shop.example.com", "/healthz")).To(Equal("health"), "the first route that matches wins")
	})

	Context("with the port left out of the match", func() {
		var (
			byAddr   map[string]string
			clusters []config.Cluster
			seen     chan string
		)
		BeforeEach(func() {
			byAddr, clusters, seen = map[string]string{}, nil, make(chan string, 4)
			for _, name := range []string{"exact", "any"} {
				u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
					seen <- r.Host
					ok(0, w, r)
				})
				byAddr[u.addr()] = name
				clusters = append(clusters, cluster(name, u.addr()))
			}
		})
		vhosts := func() []config.VirtualHost {
			return []config.VirtualHost{
				{Name: "any", Domains: []string{"*"}, Routes: []config.Route{routeTo(config.RouteMatch{Prefix: "/"}, "any")}},
				{Name: "exact", Domains: []string{"api.example.com"}, Routes: []config.Route{routeTo(config.RouteMatch{Prefix: "/"}, "exact")}},
			}
		}
		send := func(url, host string) string {
			GinkgoHelper()
			req, err := http.NewRequest("GET", url+"/", nil)
			Expect(err).NotTo(HaveOccurred())
			req.Host = host
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return byAddr[resp.Header.Get("x-upstream")]
		}

		It("matches without the port under the route configuration's ignore_port_in_host_matching, forwarding the Host as is", func() {
			_, url := start(setup{clusters: clusters, vhosts: vhosts(), ignorePort: true})
			Expect(send(url, "api.example.com:8080")).To(Equal("exact"))
			Expect(<-seen).To(Equal("api.example.com:8080"))
		})

		It("strips any port from the Host under the HCM's strip_any_host_port, upstream too (stripPortFromHost, header_utility.cc)", func() {
			_, url := start(setup{clusters: clusters, vhosts: vhosts(), stripPort: config.StripAnyPort})
			Expect(send(url, "api.example.com:8080")).To(Equal("exact"))
			Expect(<-seen).To(Equal("api.example.com"))
		})

		It("strips only the listener's own port under strip_matching_host_port", func() {
			_, url := start(setup{clusters: clusters, vhosts: vhosts(), stripPort: config.StripMatchingPort})
			_, port, err := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			Expect(send(url, "api.example.com:"+port)).To(Equal("exact"))
			Expect(<-seen).To(Equal("api.example.com"))
			Expect(send(url, "api.example.com:1")).To(Equal("any"))
			Expect(<-seen).To(Equal("api.example.com:1"))
		})
	})
})

var _ = Describe("weighted_clusters, as Envoy's WeightedCluster (route_components.proto; pickClusterIndex in weighted_cluster_specifier.cc)", func() {
	var (
		srv                    *proxy.Server
		url                    string
		stable, canary, unused *upstream
	)
	BeforeEach(func() {
		stable, canary, unused = newUpstream(ok), newUpstream(ok), newUpstream(ok)
		srv, url = start(setup{
			opts: proxy.Options{Rand: proxy.SeededRand(15, "canary")},
			clusters: []config.Cluster{cluster("stable", stable.addr()), cluster("canary", canary.addr()),
				cluster("unused", unused.addr())},
			routes: []config.Route{{Match: config.RouteMatch{Prefix: "/"}, Action: config.RouteAction{Timeout: 5 * time.Second,
				WeightedClusters: &config.WeightedClusters{HeaderName: "x-split", TotalWeight: 100, Clusters: []config.ClusterWeight{
					{Name: "stable", Weight: 90}, {Name: "canary", Weight: 10}, {Name: "unused", Weight: 0},
				}}}}},
		})
	})

	send := func(headers ...string) {
		GinkgoHelper()
		req, err := http.NewRequest("GET", url+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Add(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		Expect(resp.StatusCode).To(Equal(200))
	}

	It("sends each request to one cluster drawn by weight, never to a cluster of weight 0, with each cluster's stats", func() {
		const n = 400
		for i := range n {
			send("x-request-id", fmt.Sprintf("req-%d", i))
		}
		Expect(canary.requests.Load()).To(BeNumerically("~", n/10, n/20), "about 10%")
		Expect(stable.requests.Load() + canary.requests.Load()).To(BeEquivalentTo(n))
		Expect(unused.requests.Load()).To(BeZero())
		Expect(stat(srv, "cluster.canary.upstream_rq_200")).To(BeEquivalentTo(canary.requests.Load()))
		Expect(stat(srv, "cluster.stable.upstream_rq_200")).To(BeEquivalentTo(stable.requests.Load()))
	})

	It("draws the same cluster for the same x-request-id under the same seed", func() {
		for range 5 {
			send("x-request-id", "sticky")
		}
		Expect([]int64{stable.requests.Load(), canary.requests.Load()}).To(ContainElement(BeEquivalentTo(5)))
	})

	It("uses header_name's single uint64 value as the random value, modulo the total weight", func() {
		send("x-split", "95")  // 95 % 100 = 95: in canary's [90, 100)
		send("x-split", "189") // 189 % 100 = 89: in stable's [0, 90)
		send("x-split", "90")
		Expect(canary.requests.Load()).To(BeEquivalentTo(2))
		Expect(stable.requests.Load()).To(BeEquivalentTo(1))
	})
})

var _ = Describe("cluster_header, as Envoy's RouteAction and ClusterWeight cluster_header (clusterEntry in config_impl.cc; decodeHeaders in router.cc)", func() {
	var (
		srv         *proxy.Server
		url         string
		blue, green *upstream
	)
	BeforeEach(func() {
		blue, green = newUpstream(ok), newUpstream(ok)
		srv, url = start(setup{
			clusters: []config.Cluster{cluster("blue", blue.addr()), cluster("green", green.addr())},
			routes: []config.Route{
				{Match: config.RouteMatch{Prefix: "/weighted"}, Action: config.RouteAction{Timeout: 5 * time.Second,
					WeightedClusters: &config.WeightedClusters{HeaderName: "x-split", TotalWeight: 100, Clusters: []config.ClusterWeight{
						{Name: "blue", Weight: 50}, {ClusterHeader: "X-Cluster", Weight: 50},
					}}}},
				{Match: config.RouteMatch{Prefix: "/404"}, Action: config.RouteAction{Timeout: 5 * time.Second,
					ClusterHeader: "X-Cluster", ClusterNotFoundCode: http.StatusNotFound}},
				{Match: config.RouteMatch{Prefix: "/"}, Action: config.RouteAction{Timeout: 5 * time.Second, ClusterHeader: "X-Cluster"},
					ResponseHeaders: config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "X-Route", Value: "by-header"}}}},
			},
		})
	})

	send := func(path string, headers ...string) *http.Response {
		GinkgoHelper()
		req, err := http.NewRequest("GET", url+path, nil)
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Add(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp
	}

	It("routes to the cluster named by the header's first value", func() {
		Expect(send("/", "x-cluster", "green", "x-cluster", "blue").StatusCode).To(Equal(200))
		Expect(green.requests.Load()).To(BeEquivalentTo(1))
		Expect(blue.requests.Load()).To(BeZero())
		Expect(stat(srv, "cluster.green.upstream_rq_200")).To(BeEquivalentTo(1))
	})

	It("answers 503 without a body and counts no_cluster when the header is absent or names no cluster", func() {
		for _, h := range [][]string{nil, {"x-cluster", "purple"}} {
			resp := send("/", h...)
			Expect(resp.StatusCode).To(Equal(http.StatusServiceUnavailable))
			Expect(resp.ContentLength).To(BeZero())
			Expect(resp.Header.Get("x-route")).To(Equal("by-header"), "the route's response headers apply to the local reply")
		}
		Expect(stat(srv, "http.ingress.no_cluster")).To(BeEquivalentTo(2))
		Expect(stat(srv, "http.ingress.downstream_rq_5xx")).To(BeEquivalentTo(2))
		Expect(blue.requests.Load() + green.requests.Load()).To(BeZero())
	})

	It("answers cluster_not_found_response_code when the route sets it", func() {
		Expect(send("/404", "x-cluster", "purple").StatusCode).To(Equal(http.StatusNotFound))
		Expect(stat(srv, "http.ingress.no_cluster")).To(BeEquivalentTo(1))
	})

	It("sends a weighted cluster_header pick to the cluster the request names", func() {
		Expect(send("/weighted", "x-split", "10", "x-cluster", "green").StatusCode).To(Equal(200)) // [0, 50): blue
		Expect(send("/weighted", "x-split", "60", "x-cluster", "green").StatusCode).To(Equal(200)) // [50, 100): the header's
		Expect(send("/weighted", "x-split", "60").StatusCode).To(Equal(http.StatusServiceUnavailable))
		Expect(blue.requests.Load()).To(BeEquivalentTo(1))
		Expect(green.requests.Load()).To(BeEquivalentTo(1))
		Expect(stat(srv, "http.ingress.no_cluster")).To(BeEquivalentTo(1))
	})
})

var _ = Describe("rewrites, as Envoy's RouteAction prefix_rewrite, regex_rewrite and host_rewrite_literal (finalizePathHeader in config_impl.cc)", func() {
	var url string
	BeforeEach(func() {
		echo := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "%s host=%s original=%s", r.RequestURI, r.Host, r.Header.Get("x-envoy-original-path"))
		})
		rewrite := func(m config.RouteMatch, a config.RouteAction) config.Route {
			a.Cluster, a.Timeout = "echo", 5*time.Second
			return config.Route{Match: m, Action: a}
		}
		sub := func(pattern, substitution string) *config.RegexRewrite {
			return &config.RegexRewrite{Pattern: regexp.MustCompile(pattern), Substitution: substitution}
		}
		_, url = start(setup{clusters: []config.Cluster{cluster("echo", echo.addr())}, routes: []config.Route{
			rewrite(config.RouteMatch{Prefix: "/api/"}, config.RouteAction{PrefixRewrite: "/"}),
			rewrite(config.RouteMatch{Path: "/old", IsPath: true}, config.RouteAction{PrefixRewrite: "/new"}),
			rewrite(config.RouteMatch{Prefix: "/service/"}, config.RouteAction{RegexRewrite: sub(`^/service/([^/]+)(/.*)$`, `${2}/instance/${1}`)}),
			rewrite(config.RouteMatch{Prefix: "/xxx/"}, config.RouteAction{RegexRewrite: sub(`one`, `two`)}),
			rewrite(config.RouteMatch{Prefix: "/host/"}, config.RouteAction{HostRewrite: "backend.internal"}),
			rewrite(config.RouteMatch{Prefix: "/"}, config.RouteAction{}),
		}})
	})

	It("swaps the matched prefix for prefix_rewrite, keeping the rest and the query, and sends the original in x-envoy-original-path", func() {
		_, _, body := get(url + "/api/v1/users?page=2")
		Expect(body).To(HavePrefix("/v1/users?page=2 "))
		Expect(body).To(HaveSuffix("original=/api/v1/users?page=2"))
	})

	It("swaps the whole path of a path match", func() {
		_, _, body := get(url + "/old?q=1")
		Expect(body).To(HavePrefix("/new?q=1 "))
	})

	It("rewrites with capture groups: ^/service/([^/]+)(/.*)$ → \\2/instance/\\1 (the route_components.proto example)", func() {
		_, _, body := get(url + "/service/foo/v1/api?x=y")
		Expect(body).To(HavePrefix("/v1/api/instance/foo?x=y "))
		Expect(body).To(HaveSuffix("original=/service/foo/v1/api?x=y"))
	})

	It("replaces every match of an unanchored pattern: one → two", func() {
		_, _, body := get(url + "/xxx/one/yyy/one/zzz")
		Expect(body).To(HavePrefix("/xxx/two/yyy/two/zzz "))
	})

	It("sends host_rewrite_literal as the Host, and no x-envoy-original-path when the path is kept", func() {
		_, _, body := get(url + "/host/x")
		Expect(body).To(Equal("/host/x host=backend.internal original="))
		_, _, body = get(url + "/plain")
		Expect(body).To(HavePrefix("/plain host=127.0.0.1:"))
		Expect(body).To(HaveSuffix(" original="))
	})
})

var _ = Describe("headers to add and remove, as Envoy's custom request/response headers (header_parser.cc; config_impl.cc finalizeRequestHeaders)", func() {
	add := func(key, value string, action config.AppendAction) config.HeaderValueOption {
		return config.HeaderValueOption{Key: http.CanonicalHeaderKey(key), Value: value, Action: action}
	}
	var (
		url     string
		seen    chan http.Header
		backend *upstream
	)
	BeforeEach(func() {
		seen = make(chan http.Header, 1)
		backend = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
			w.Header().Set("x-internal", "secret")
			w.Header().Set("x-served-by", "upstream")
		})
		route := prefixRoute("/", "backend", nil)
		route.RequestHeaders = config.HeaderMutation{
			Remove: []string{"X-Secret"},
			Add: []config.HeaderValueOption{
				add("x-level", "route", config.AppendIfExistsOrAdd),
				add("x-tenant", "default", config.AddIfAbsent),
				add("x-debug", "off", config.OverwriteIfExists),
				add("x-env", "prod", config.OverwriteIfExistsOrAdd),
				add("x-empty", "", config.AppendIfExistsOrAdd),
				{Key: "X-Kept-Empty", Action: config.AppendIfExistsOrAdd, KeepEmpty: true},
			}}
		route.ResponseHeaders = config.HeaderMutation{Remove: []string{"X-Internal"},
			Add: []config.HeaderValueOption{add("x-level", "route", config.AppendIfExistsOrAdd)}}
		vh := config.VirtualHost{Name: "vh", Domains: []string{"*"}, Routes: []config.Route{route},
			RequestHeaders:  config.HeaderMutation{Add: []config.HeaderValueOption{add("x-level", "vhost", config.AppendIfExistsOrAdd)}},
			ResponseHeaders: config.HeaderMutation{Add: []config.HeaderValueOption{add("x-level", "vhost", config.AppendIfExistsOrAdd), add("x-served-by", "proxy", config.OverwriteIfExistsOrAdd)}},
		}
		_, url = start(setup{clusters: []config.Cluster{cluster("backend", backend.addr())}, vhosts: []config.VirtualHost{vh},
			rcRequestHeaders:  config.HeaderMutation{Add: []config.HeaderValueOption{add("x-level", "config", config.AppendIfExistsOrAdd)}},
			rcResponseHeaders: config.HeaderMutation{Add: []config.HeaderValueOption{add("x-level", "config", config.AppendIfExistsOrAdd)}},
		})
	})

	send := func(headers ...string) *http.Response {
		GinkgoHelper()
		req, err := http.NewRequest("GET", url+"/", nil)
		Expect(err).NotTo(HaveOccurred())
		for i := 0; i+1 < len(headers); i += 2 {
			req.Header.Add(headers[i], headers[i+1])
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp
	}

	It("applies the route's, then the virtual host's, then the route configuration's, removals before additions", func() {
		resp := send("x-secret", "s3cr3t", "x-level", "client")
		var h http.Header
		Eventually(seen).Should(Receive(&h))
		Expect(h.Values("x-level")).To(Equal([]string{"client", "route", "vhost", "config"}))
		Expect(h).NotTo(HaveKey("X-Secret"))
		Expect(resp.Header.Values("x-level")).To(Equal([]string{"route", "vhost", "config"}))
		Expect(resp.Header).NotTo(HaveKey("X-Internal"))
		Expect(resp.Header.Values("x-served-by")).To(Equal([]string{"proxy"}), "OVERWRITE_IF_EXISTS_OR_ADD replaces the upstream's value")
	})

	It("follows append_action: ADD_IF_ABSENT, OVERWRITE_IF_EXISTS, OVERWRITE_IF_EXISTS_OR_ADD; an empty value only with keep_empty_value", func() {
		send()
		var h http.Header
		Eventually(seen).Should(Receive(&h))
		Expect(h.Values("x-tenant")).To(Equal([]string{"default"}))
		Expect(h).NotTo(HaveKey("X-Debug"), "OVERWRITE_IF_EXISTS adds nothing")
		Expect(h.Values("x-env")).To(Equal([]string{"prod"}))
		Expect(h).NotTo(HaveKey("X-Empty"))
		Expect(h).To(HaveKeyWithValue("X-Kept-Empty", []string{""}))

		send("x-tenant", "acme", "x-debug", "on", "x-env", "dev")
		Eventually(seen).Should(Receive(&h))
		Expect(h.Values("x-tenant")).To(Equal([]string{"acme"}))
		Expect(h.Values("x-debug")).To(Equal([]string{"off"}))
		Expect(h.Values("x-env")).To(Equal([]string{"prod"}))
	})

	It("applies the response headers to the router's local replies too", func() {
		backend.srv.Close()
		resp := send()
		Expect(resp.StatusCode).To(Equal(503))
		Expect(resp.Header.Values("x-level")).To(Equal([]string{"route", "vhost", "config"}))
	})
})

var _ = Describe("substitution commands in header values, as Envoy's substitution formatter (header_parser.cc; substitution_formatter.cc)", func() {
	var (
		url, backendAddr string
		seen             chan http.Header
	)
	option := func(key, value string, keepEmpty bool) config.HeaderValueOption {
		GinkgoHelper()
		f, plain, err := config.ParseFormat(value)
		Expect(err).NotTo(HaveOccurred())
		return config.HeaderValueOption{Key: http.CanonicalHeaderKey(key), Value: plain, Format: f, KeepEmpty: keepEmpty}
	}
	BeforeEach(func() {
		seen = make(chan http.Header, 1)
		backend := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			seen <- r.Header.Clone()
			w.Header().Set("x-served-by", "upstream-7")
		})
		backendAddr = backend.addr()
		route := prefixRoute("/", "backend", nil)
		route.Name = "catch-all"
		route.RequestHeaders = config.HeaderMutation{Add: []config.HeaderValueOption{
			option("x-client", "%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%", false),
			option("x-local-port", "%DOWNSTREAM_LOCAL_PORT%", false),
			option("x-user", "%REQ(x-user-id?x-anonymous-id):4%", false),
			option("x-via", "%PROTOCOL% to %UPSTREAM_CLUSTER% at 100%%", false),
			option("x-start", "%START_TIME%", false),
			option("x-absent", "%REQ(x-nothing)%", false),
			option("x-kept", "%REQ(x-nothing)%", true),
			option("x-code", "%RESPONSE_CODE%", false),
		}}
		route.ResponseHeaders = config.HeaderMutation{Add: []config.HeaderValueOption{
			option("x-code", "%RESPONSE_CODE%", false),
			option("x-up", "%UPSTREAM_REMOTE_ADDRESS%", false),
			option("x-echo", "%RESP(x-served-by)% for %REQ(:method)% %REQ(:path)% on %ROUTE_NAME%", false),
		}}
		_, url = start(setup{clusters: []config.Cluster{cluster("backend", backendAddr)}, routes: []config.Route{route},
			opts: proxy.Options{Clock: fakeClock()}})
	})

	It("formats request headers from the downstream connection, the request and the route", func() {
		req, err := http.NewRequest("GET", url+"/a?b=c", nil)
		Expect(err).NotTo(HaveOccurred())
		req.Header.Set("x-anonymous-id", "anon-12345")
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		var h http.Header
		Eventually(seen).Should(Receive(&h))
		_, port, _ := net.SplitHostPort(strings.TrimPrefix(url, "http://"))
		Expect(h.Get("x-client")).To(Equal("127.0.0.1"))
		Expect(h.Get("x-local-port")).To(Equal(port))
		Expect(h.Get("x-user")).To(Equal("anon"), "the alternative header, cut to 4 characters")
		Expect(h.Get("x-via")).To(Equal("HTTP/1.1 to backend at 100%"))
		Expect(h.Get("x-start")).To(Equal("2025-01-01T00:00:00.000Z"), "START_TIME's default format")
		Expect(h.Get("x-code")).To(Equal("0"), "no response yet")
		Expect(h).NotTo(HaveKey("X-Absent"), "an empty result adds nothing")
		Expect(h).To(HaveKeyWithValue("X-Kept", []string{""}), "unless keep_empty_value")

		Expect(resp.Header.Get("x-code")).To(Equal("200"))
		Expect(resp.Header.Get("x-up")).To(Equal(backendAddr))
		Expect(resp.Header.Get("x-echo")).To(Equal("upstream-7 for GET /a?b=c on catch-all"))
	})
})

var _ = Describe("direct_response and redirect routes, answered by the proxy as Envoy's router does (router.cc decodeHeaders; config_impl.cc newUri)", func() {
	var (
		url     string
		backend *upstream
	)
	noFollow := &http.Client{Timeout: 10 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	BeforeEach(func() {
		backend = newUpstream(ok)
		answer := func(m config.RouteMatch, r config.Route) config.Route { r.Match = m; return r }
		_, url = start(setup{clusters: []config.Cluster{cluster("backend", backend.addr())}, routes: []config.Route{
			answer(config.RouteMatch{Path: "/healthz", IsPath: true}, config.Route{
				DirectResponse:  &config.DirectResponse{Status: 200, Body: "ok\n"},
				ResponseHeaders: config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "Cache-Control", Value: "no-store"}}}}),
			answer(config.RouteMatch{Prefix: "/gone"}, config.Route{DirectResponse: &config.DirectResponse{Status: 410}}),
			answer(config.RouteMatch{Prefix: "/secure/"}, config.Route{Redirect: &config.Redirect{Scheme: "https", Code: 301}}),
			answer(config.RouteMatch{Prefix: "/moved"}, config.Route{Redirect: &config.Redirect{Host: "new.example.com", Path: "/landing", Code: 302}}),
			answer(config.RouteMatch{Prefix: "/q"}, config.Route{Redirect: &config.Redirect{Path: "/fixed?a=b", StripQuery: true, Code: 301}}),
			answer(config.RouteMatch{Prefix: "/v1/"}, config.Route{Redirect: &config.Redirect{PrefixRewrite: "/v2/", StripQuery: true, Code: 308}}),
			answer(config.RouteMatch{Prefix: "/port/"}, config.Route{Redirect: &config.Redirect{Scheme: "https", Port: 8443, Code: 301}}),
			answer(config.RouteMatch{Prefix: "/plain/"}, config.Route{Redirect: &config.Redirect{Scheme: "http", Code: 301}}),
			answer(config.RouteMatch{Prefix: "/svc/"}, config.Route{Redirect: &config.Redirect{Code: 302, RegexRewrite: &config.RegexRewrite{
				Pattern: regexp.MustCompile(`^/svc/([^/]+)/`), Substitution: "/${1}/v2/"}}}),
		}})
	})

	do := func(host, path string) (*http.Response, string) {
		GinkgoHelper()
		req, err := http.NewRequest("GET", url+path, nil)
		Expect(err).NotTo(HaveOccurred())
		req.Host = host
		resp, err := noFollow.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		return resp, string(b)
	}

	It("answers a direct_response with its status and inline body, and the route's response headers", func() {
		resp, body := do("svc", "/healthz")
		Expect(resp.StatusCode).To(Equal(200))
		Expect(body).To(Equal("ok\n"))
		Expect(resp.Header.Get("Content-Type")).To(Equal("text/plain"))
		Expect(resp.Header.Get("Cache-Control")).To(Equal("no-store"))
		resp, body = do("svc", "/gone")
		Expect(resp.StatusCode).To(Equal(410))
		Expect(body).To(BeEmpty())
		Expect(backend.requests.Load()).To(BeZero())
	})

	It("redirects to https with 301 by default, dropping the http default port", func() {
		resp, body := do("shop.example.com:80", "/secure/cart?id=7")
		Expect(resp.StatusCode).To(Equal(301))
		Expect(resp.Header.Get("Location")).To(Equal("https://shop.example.com/secure/cart?id=7"))
		Expect(body).To(BeEmpty())
	})

	It("swaps the host and the path (path_redirect) with the response_code asked, keeping the query", func() {
		resp, _ := do("old.example.com", "/moved/x?utm=1")
		Expect(resp.StatusCode).To(Equal(302))
		Expect(resp.Header.Get("Location")).To(Equal("http://new.example.com/landing?utm=1"))
	})

	It("lets a query in path_redirect replace the request's, even under strip_query", func() {
		resp, _ := do("svc", "/q?x=1")
		Expect(resp.Header.Get("Location")).To(Equal("http://svc/fixed?a=b"))
	})

	It("replaces the port with port_redirect, dropping the request's (newUri, processRequestHost in utility.cc)", func() {
		resp, _ := do("shop.example.com:8080", "/port/a?b=c")
		Expect(resp.Header.Get("Location")).To(Equal("https://shop.example.com:8443/port/a?b=c"))
		resp, _ = do("[::1]:8080", "/port/a")
		Expect(resp.Header.Get("Location")).To(Equal("https://[::1]:8443/port/a"))
	})

	It("keeps a port that is not the request scheme's default (the request's scheme is http)", func() {
		resp, _ := do("shop.example.com:443", "/plain/x")
		Expect(resp.Header.Get("Location")).To(Equal("http://shop.example.com:443/plain/x"), "Envoy drops :443 only from an https request")
		resp, _ = do("shop.example.com:8080", "/secure/x")
		Expect(resp.Header.Get("Location")).To(Equal("https://shop.example.com:8080/secure/x"))
	})

	It("rewrites the path with regex_rewrite, keeping the query", func() {
		resp, _ := do("svc", "/svc/users/list?all=1")
		Expect(resp.StatusCode).To(Equal(302))
		Expect(resp.Header.Get("Location")).To(Equal("http://svc/users/v2/list?all=1"))
	})

	It("swaps the matched prefix for prefix_rewrite and drops the query under strip_query", func() {
		resp, _ := do("svc", "/v1/users?page=2")
		Expect(resp.StatusCode).To(Equal(308))
		Expect(resp.Header.Get("Location")).To(Equal("http://svc/v2/users"))
	})
})

var _ = Describe("virtual_clusters, as Envoy's VirtualCluster (route_components.proto; VirtualClusterStats in config_impl.h, CodeStatsImpl in codes.cc)", func() {
	var (
		srv *proxy.Server
		url string
	)
	str := func(s string) *string { return &s }
	BeforeEach(func() {
		backend := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			if strings.HasPrefix(r.URL.Path, "/flaky") {
				w.WriteHeader(http.StatusServiceUnavailable)
			}
		})
		srv, url = start(setup{clusters: []config.Cluster{cluster("backend", backend.addr())}, vhosts: []config.VirtualHost{{
			Name: "api", Domains: []string{"*"},
			Routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))},
			VirtualClusters: []config.VirtualCluster{
				{Name: "writes", Headers: []config.HeaderMatcher{{Name: ":method", Exact: str("POST")}}},
				{Name: "users", Headers: []config.HeaderMatcher{{Name: ":path", Prefix: str("/users/")}}},
			},
		}}})
	})

	send := func(method, path string) int {
		GinkgoHelper()
		req, err := http.NewRequest(method, url+path, nil)
		Expect(err).NotTo(HaveOccurred())
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return resp.StatusCode
	}

	It("counts each request under the first virtual cluster whose headers match, :method and :path included, else other", func() {
		Expect(send("POST", "/users/7")).To(Equal(200))
		Expect(send("GET", "/users/7")).To(Equal(200))
		Expect(send("GET", "/users/8")).To(Equal(200))
		Expect(send("GET", "/health")).To(Equal(200))
		Expect(stat(srv, "vhost.api.vcluster.writes.upstream_rq_total")).To(BeEquivalentTo(1))
		Expect(stat(srv, "vhost.api.vcluster.users.upstream_rq_total")).To(BeEquivalentTo(2))
		Expect(stat(srv, "vhost.api.vcluster.users.upstream_rq_200")).To(BeEquivalentTo(2))
		Expect(stat(srv, "vhost.api.vcluster.users.upstream_rq_2xx")).To(BeEquivalentTo(2))
		Expect(stat(srv, "vhost.api.vcluster.users.upstream_rq_completed")).To(BeEquivalentTo(2))
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_total")).To(BeEquivalentTo(1))
		Expect(srv.Stats().Values()).To(HaveKey("vhost.api.vcluster.other.upstream_rq_timeout"), "Envoy's VirtualClusterStats exist from the start")
	})

	It("counts retries, and every response the router charged, the retried one included", func() {
		Expect(send("GET", "/flaky")).To(Equal(503))
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_total")).To(BeEquivalentTo(2), "one per attempt, as the cluster's")
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_retry")).To(BeEquivalentTo(1))
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_retry_limit_exceeded")).To(BeEquivalentTo(1))
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_503")).To(BeEquivalentTo(2), "no retry. prefix for virtual clusters")
		Expect(stat(srv, "vhost.api.vcluster.other.upstream_rq_5xx")).To(BeEquivalentTo(2))
		Expect(stat(srv, "cluster.backend.upstream_rq_503")).To(BeEquivalentTo(1))
	})

	It("names them in Prometheus with envoy_virtual_cluster and envoy_virtual_host (well_known_names.cc)", func() {
		Expect(send("POST", "/x")).To(Equal(200))
		_, _, body := get("http://" + srv.AdminAddr() + "/stats/prometheus")
		Expect(body).To(ContainSubstring(`envoy_vhost_vcluster_upstream_rq_total{envoy_virtual_cluster="writes",envoy_virtual_host="api"} 1`))
		Expect(body).To(ContainSubstring(`envoy_vhost_vcluster_upstream_rq{envoy_response_code="200",envoy_virtual_cluster="writes",envoy_virtual_host="api"} 1`))
	})
})

// Route header matchers see the pseudo-headers, as Envoy's (HeaderUtility::matchHeaders on the request
// header map): a regression — routes used to see only the regular headers, so ":method" never matched.
var _ = Describe("route matching on pseudo-headers", func() {
	It("matches :method, :path and :authority like any header", func() {
		byAddr := map[string]string{}
		var clusters []config.Cluster
		for _, name := range []string{"a", "b", "c"} {
			u := newUpstream(ok)
			byAddr[u.addr()] = name
			clusters = append(clusters, cluster(name, u.addr()))
		}
		str := func(s string) *string { return &s }
		_, url := start(setup{clusters: clusters, routes: []config.Route{
			routeTo(config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{{Name: ":method", Exact: str("POST")}}}, "a"),
			routeTo(config.RouteMatch{Prefix: "/", Headers: []config.HeaderMatcher{
				{Name: ":path", Prefix: str("/v2?")}, {Name: ":authority", Prefix: str("api.")},
			}}, "b"),
			routeTo(config.RouteMatch{Prefix: "/"}, "c"),
		}})
		send := func(method, path, host string) string {
			req, err := http.NewRequest(method, url+path, strings.NewReader(""))
			Expect(err).NotTo(HaveOccurred())
			req.Host = host
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			return byAddr[resp.Header.Get("x-upstream")]
		}
		Expect(send("POST", "/x", "h")).To(Equal("a"))
		Expect(send("GET", "/x", "h")).To(Equal("c"))
		Expect(send("GET", "/v2?q=1", "api.example")).To(Equal("b"))
		Expect(send("GET", "/v2?q=1", "www.example")).To(Equal("c"))
	})
})
