package proxy_test

import (
	"io"
	"net/http"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

// The HCM local_reply_config (LocalReplyImpl::rewrite, source/common/local_reply/local_reply.cc; docs
// "Local reply modification"): the first mapper whose filter matches rewrites the status, body and
// headers of a local reply, then body_format (or the mapper's body_format_override) formats the body.
var _ = Describe("local_reply_config", func() {
	str := func(s string) *string { return &s }
	text := func(s string) *config.BodyFormat {
		GinkgoHelper()
		return &config.BodyFormat{Text: mustFormat(s)}
	}
	run := func(lr *config.LocalReplyConfig, routes []config.Route, clusters []config.Cluster) (string, func() (uint64, uint64)) {
		srv, url := start(setup{routes: routes, clusters: clusters, listener: func(l *config.Listener) { l.LocalReply = lr }})
		return url, func() (uint64, uint64) {
			return stat(srv, "http.ingress.downstream_rq_4xx"), stat(srv, "http.ingress.downstream_rq_5xx")
		}
	}
	send := func(url string, hdr map[string]string) (int, http.Header, string) {
		GinkgoHelper()
		req, _ := http.NewRequest("GET", url, nil)
		for k, v := range hdr {
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		Expect(err).NotTo(HaveOccurred())
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		Expect(err).NotTo(HaveOccurred())
		return resp.StatusCode, resp.Header, string(b)
	}

	It("rewrites a matching reply's status, body and headers, and formats every body with body_format", func() {
		lr := &config.LocalReplyConfig{
			Mappers: []config.ResponseMapper{{
				StatusCode: &config.StatusCodeFilter{Op: "EQ", Value: 404}, Status: 401, Body: str("not allowed"),
				Headers: config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "Foo", Value: "bar", Action: config.OverwriteIfExistsOrAdd}}},
			}},
			BodyFormat: text("%LOCAL_REPLY_BODY% %RESPONSE_CODE% %REQ(x-tag)%"),
		}
		url, classes := run(lr, nil, nil) // no route: 404
		code, hdr, body := send(url+"/", map[string]string{"x-tag": "t1"})
		Expect(code).To(Equal(401))
		Expect(body).To(Equal("not allowed 401 t1"))
		Expect(hdr.Get("foo")).To(Equal("bar"))
		Expect(hdr.Get("content-type")).To(Equal("text/plain"))
		_, _, body = send(url+"/", nil)
		Expect(body).To(Equal("not allowed 401 -"), "a missing header is -")
		c4, _ := classes()
		Expect(c4).To(BeEquivalentTo(2), "counted by the status sent")
	})

	It("formats with the matching mapper's body_format_override, json_format keeping the status a number", func() {
		u := newUpstream(resetConn)
		lr := &config.LocalReplyConfig{
			Mappers: []config.ResponseMapper{
				{Header: &config.HeaderMatcher{Name: "x-json", Present: new(bool)}}, // without x-json: matches, changes nothing
				{Header: &config.HeaderMatcher{Name: "x-json", Exact: str("yes")}, BodyFormat: &config.BodyFormat{JSON: &config.JSONTemplate{
					Keys: []string{"code", "message", "tag"},
					Values: map[string]config.JSONValue{
						"code":    {Format: mustFormat("%RESPONSE_CODE%")},
						"message": {Format: mustFormat("oops: %LOCAL_REPLY_BODY%")},
						"tag":     {Format: mustFormat("%REQ(x-tag)%")},
					}}}},
			},
			BodyFormat: text("plain: %LOCAL_REPLY_BODY%"),
		}
		url, _ := run(lr, []config.Route{prefixRoute("/", "backend", nil)}, []config.Cluster{cluster("backend", u.addr())})
		code, hdr, body := send(url+"/", map[string]string{"x-json": "yes"})
		Expect(code).To(Equal(503))
		Expect(hdr.Get("content-type")).To(Equal("application/json"))
		Expect(body).To(Equal(`{"code":503,"message":"oops: upstream connect error or disconnect/reset before headers. reset reason: connection termination","tag":null}` + "\n"))

		_, _, body = send(url+"/", nil)
		Expect(body).To(Equal("plain: upstream connect error or disconnect/reset before headers. reset reason: connection termination"))
	})

	// Envoy has one substitution formatter for header values and body formats: every command a header
	// value takes, a body format takes too, and mappers' headers_to_add format like any headers_to_add.
	It("formats the header values' commands in bodies and a mapper's headers_to_add", func() {
		f, _, err := config.ParseFormat("%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% %REQ(:method)% %RESPONSE_CODE%")
		Expect(err).NotTo(HaveOccurred())
		lr := &config.LocalReplyConfig{
			Mappers: []config.ResponseMapper{{
				StatusCode: &config.StatusCodeFilter{Op: "EQ", Value: 404},
				Headers:    config.HeaderMutation{Add: []config.HeaderValueOption{{Key: "X-Seen", Format: f, Action: config.OverwriteIfExistsOrAdd}}},
			}},
			BodyFormat: text("%LOCAL_REPLY_BODY%|%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT%|%REQ(:path)%|%UPSTREAM_HOST%"),
		}
		url, _ := run(lr, nil, nil) // no route: 404
		code, hdr, body := send(url+"/x?y=1", nil)
		Expect(code).To(Equal(404))
		Expect(body).To(Equal("|127.0.0.1|/x?y=1|-"), "no upstream host: the placeholder")
		Expect(hdr.Get("x-seen")).To(Equal("127.0.0.1 GET 404"))
	})

	It("applies only the first matching mapper", func() {
		lr := &config.LocalReplyConfig{Mappers: []config.ResponseMapper{
			{StatusCode: &config.StatusCodeFilter{Op: "GE", Value: 400}, Status: 418},
			{StatusCode: &config.StatusCodeFilter{Op: "LE", Value: 404}, Status: 500, Body: str("second")},
		}}
		url, _ := run(lr, nil, nil)
		code, _, body := send(url+"/", nil)
		Expect(code).To(Equal(418))
		Expect(body).To(BeEmpty())
	})
})

// mustFormat parses a format string as the configuration does (literal text too).
func mustFormat(s string) config.Format {
	GinkgoHelper()
	f, plain, err := config.ParseFormat(s)
	Expect(err).NotTo(HaveOccurred())
	if f == nil {
		return config.Format{{Literal: plain}}
	}
	return f
}
