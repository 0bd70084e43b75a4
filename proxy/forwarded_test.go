package proxy_test

import (
	"net/http"
	"net/netip"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// The connection manager's request header mutations, as Envoy's
// ConnectionManagerUtility::mutateRequestHeaders (source/common/http/conn_manager_utility.cc) and the
// docs' "HTTP header manipulation" (config_http_conn_man_headers: x-forwarded-for, x-envoy-internal,
// x-envoy-external-address). The specs' client is on 127.0.0.1.
var _ = Describe("x-forwarded-for and the trusted client address", func() {
	// seen is what the upstream received of the headers that say where a request comes from.
	type seen struct{ xff, xfp, internal, external, requestID string }
	var (
		got chan seen
		u   *upstream
	)
	BeforeEach(func() {
		got = make(chan seen, 8)
		u = newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
			got <- seen{r.Header.Get("x-forwarded-for"), r.Header.Get("x-forwarded-proto"), r.Header.Get("x-envoy-internal"),
				r.Header.Get("x-envoy-external-address"), r.Header.Get("x-request-id")}
			w.WriteHeader(503) // retried only when x-envoy-retry-on survived
		})
	})
	run := func(tune func(*config.Listener), hdr map[string]string) (seen, int64) {
		GinkgoHelper()
		_, url := start(setup{routes: []config.Route{prefixRoute("/", "backend", nil)}, clusters: []config.Cluster{cluster("backend", u.addr())},
			listener: tune})
		req, _ := http.NewRequest("GET", url+"/", nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		req.Header.Set("x-envoy-retry-on", "5xx")
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		resp.Body.Close()
		return <-got, u.requests.Load()
	}
	internalRFC1918 := func(l *config.Listener) {
		// internal_address_config without cidr_ranges: Envoy's RFC 1918 list.
		l.InternalAddresses = config.RFC1918Internal()
	}

	Context("without use_remote_address (Envoy's default)", func() {
		// Without x-forwarded-for a request is external, whatever its peer; nothing is appended.
		It("forwards no x-forwarded-for, sets x-forwarded-proto and drops the router headers of an external request", func() {
			s, tries := run(nil, nil)
			Expect(s).To(Equal(seen{xfp: "http", requestID: s.requestID}))
			Expect(tries).To(BeEquivalentTo(1), "x-envoy-retry-on was removed")
		})

		It("keeps the client's x-forwarded-proto and x-forwarded-for", func() {
			s, _ := run(nil, map[string]string{"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.7, 10.0.0.1"})
			Expect(s.xff).To(Equal("203.0.113.7, 10.0.0.1"))
			Expect(s.xfp).To(Equal("https"))
		})

		// Envoy 1.33 stopped trusting RFC 1918 addresses by default: without internal_address_config no
		// address is internal (the HCM proto's warning on internal_address_config).
		It("takes no address for internal without internal_address_config", func() {
			s, tries := run(nil, map[string]string{"x-forwarded-for": "10.0.0.1", "x-envoy-internal": "true"})
			Expect(s.internal).To(BeEmpty(), "a client's x-envoy-internal is removed")
			Expect(tries).To(BeEquivalentTo(1))
		})

		It("takes a single internal x-forwarded-for address for internal: x-envoy-internal, router headers honoured", func() {
			s, tries := run(internalRFC1918, map[string]string{"x-forwarded-for": "10.0.0.1"})
			Expect(s.internal).To(Equal("true"))
			Expect(s.external).To(BeEmpty())
			Expect(tries).To(BeEquivalentTo(2), "x-envoy-retry-on: 5xx retried once (num_retries default 1)")
		})

		It("takes a request whose x-forwarded-for has several addresses for external", func() {
			s, tries := run(internalRFC1918, map[string]string{"x-forwarded-for": "10.0.0.2,10.0.0.1"})
			Expect(s.internal).To(BeEmpty())
			Expect(tries).To(BeEquivalentTo(1))
		})

		It("with xff_num_trusted_hops, reads the client that many hops from the right, then external", func() {
			s, tries := run(func(l *config.Listener) { internalRFC1918(l); l.XffNumTrustedHops = 1 },
				map[string]string{"x-forwarded-for": "10.0.0.2, 203.0.113.9"})
			Expect(s.internal).To(BeEmpty(), "the address is internal but x-forwarded-for holds more than one")
			Expect(tries).To(BeEquivalentTo(1))
		})
	})

	Context("with use_remote_address", func() {
		useRemote := func(l *config.Listener) { l.UseRemoteAddress = true }

		// A loopback peer is appended as the host's own address (Envoy's local address).
		It("appends the peer to x-forwarded-for and marks an external request with x-envoy-external-address and a new x-request-id", func() {
			s, tries := run(useRemote, map[string]string{"x-request-id": "from-the-client", "x-forwarded-proto": "https"})
			Expect(s.xff).To(Equal(proxy.HostAddress()))
			Expect(s.xfp).To(Equal("http"), "overwritten: the listener is plaintext")
			Expect(s.external).To(Equal("127.0.0.1"))
			Expect(s.internal).To(BeEmpty())
			Expect(s.requestID).NotTo(Or(BeEmpty(), Equal("from-the-client")))
			Expect(tries).To(BeEquivalentTo(1))
		})

		It("appends after the client's x-forwarded-for, with a comma and no space", func() {
			s, _ := run(useRemote, map[string]string{"x-forwarded-for": "203.0.113.7"})
			Expect(s.xff).To(Equal("203.0.113.7," + proxy.HostAddress()))
			Expect(s.external).To(Equal("127.0.0.1"))
		})

		It("takes an internal peer for internal: x-envoy-internal, its x-request-id kept, router headers honoured", func() {
			s, tries := run(func(l *config.Listener) {
				l.UseRemoteAddress, l.InternalAddresses = true, []netip.Prefix{netip.MustParsePrefix("127.0.0.1/32")}
			}, map[string]string{"x-request-id": "from-the-client"})
			Expect(s).To(Equal(seen{xff: proxy.HostAddress(), xfp: "http", internal: "true", requestID: "from-the-client"}))
			Expect(tries).To(BeEquivalentTo(2))
		})

		It("with xff_num_trusted_hops 1, trusts the address the proxy in front appended", func() {
			s, _ := run(func(l *config.Listener) { l.UseRemoteAddress, l.XffNumTrustedHops = true, 1 },
				map[string]string{"x-forwarded-for": "198.51.100.1, 203.0.113.7"})
			Expect(s.external).To(Equal("203.0.113.7"))
			Expect(s.xff).To(Equal("198.51.100.1, 203.0.113.7," + proxy.HostAddress()))
		})

		It("with skip_xff_append, leaves x-forwarded-for as it came", func() {
			s, _ := run(func(l *config.Listener) { l.UseRemoteAddress, l.SkipXffAppend = true, true },
				map[string]string{"x-forwarded-for": "203.0.113.7"})
			Expect(s.xff).To(Equal("203.0.113.7"))
			Expect(s.external).To(Equal("127.0.0.1"))
		})
	})
})
