package proxy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
)

// memLog is an access log destination in memory (proxy.Options.AccessLogOpen); a write waits while
// gate is open-ended (a slow disk).
type memLog struct {
	mu   sync.Mutex
	b    bytes.Buffer
	gate chan struct{} // nil: writes go through; else each write waits for it to be closed
	// writing receives a value as a write starts (cap 1, never blocking the writer); nil: none.
	writing chan struct{}
}

func (m *memLog) Write(p []byte) (int, error) {
	if m.writing != nil {
		select {
		case m.writing <- struct{}{}:
		default:
		}
	}
	if m.gate != nil {
		<-m.gate
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.b.Write(p)
}

func (m *memLog) Close() error { return nil }

func (m *memLog) lines() []string {
	m.mu.Lock()
	defer m.mu.Unlock()
	s := strings.TrimSuffix(m.b.String(), "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// logged runs a proxy like start, with access logs writing to one memLog.
func logged(s setup, logs ...config.AccessLog) (*proxy.Server, string, *memLog) {
	GinkgoHelper()
	m := &memLog{}
	s.opts.AccessLogOpen = func(string) (io.WriteCloser, error) { return m, nil }
	adjust := s.listener
	s.listener = func(l *config.Listener) {
		if adjust != nil {
			adjust(l)
		}
		l.AccessLogs = logs
	}
	srv, url := start(s)
	return srv, url, m
}

// flushed is what the access log holds once the proxy wrote every line buffered so far.
func flushed(srv *proxy.Server, m *memLog) []string {
	GinkgoHelper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	Expect(srv.FlushAccessLogs(ctx)).To(Succeed())
	return m.lines()
}

func textLog(format string) config.AccessLog {
	GinkgoHelper()
	f, _, err := config.ParseAccessLogFormat(format)
	Expect(err).NotTo(HaveOccurred())
	return config.AccessLog{Path: "mem", Format: &config.BodyFormat{Text: f}}
}

// Envoy's access logs (docs: configuration/observability/access_log/usage; the formatters of
// source/common/formatter/stream_info_formatter.cc and the response flags of
// source/common/stream_info/utility.h): one line per downstream request once it ended.
var _ = Describe("access logs", func() {
	// flags is the line of each spec below: the code, the response flags, the details.
	const flags = "%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS%\n"
	backend := func(addr string) []config.Cluster { return []config.Cluster{cluster("backend", addr)} }
	route := func(rp *config.RetryPolicy) []config.Route { return []config.Route{prefixRoute("/", "backend", rp)} }

	Describe("the default format", func() {
		It("is Envoy's, a value not available written -", func() {
			clk := fakeClock()
			u := newUpstream(ok)
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}},
				config.AccessLog{Path: "mem"})
			req, _ := http.NewRequest("POST", url+"/a/b?q=1", strings.NewReader("12345"))
			req.Header.Set("User-Agent", "spec")
			req.Header.Set("X-Request-Id", "rid-1")
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			host := strings.TrimPrefix(url, "http://")
			Expect(flushed(srv, m)).To(Equal([]string{
				`[2025-01-01T00:00:00.000Z] "POST /a/b?q=1 HTTP/1.1" 200 - 5 5 0 0 "-" "spec" "rid-1" "` + host + `" "` + u.addr() + `"`,
			}))
		})
	})

	Describe("the format commands", func() {
		It("formats the request, response, route, upstream, byte counts and durations on the proxy's clock", func() {
			clk := fakeClock()
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Answer", "42")
				io.WriteString(w, "hello world")
			})
			r := prefixRoute("/", "backend", nil)
			r.Name = "main"
			srv, url, m := logged(setup{routes: []config.Route{r}, clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}},
				textLog("%START_TIME(%Y/%m/%d %H:%M:%S)% %REQ(:METHOD)% %REQ_WITHOUT_QUERY(:PATH)% %REQ(X-MISSING?USER-AGENT):3% "+
					"%RESP(X-ANSWER)% %RESP(X-NONE)% %ROUTE_NAME% %UPSTREAM_CLUSTER% %UPSTREAM_HOST% %UPSTREAM_REQUEST_ATTEMPT_COUNT% "+
					"%BYTES_RECEIVED% %BYTES_SENT% %DURATION% %RESPONSE_DURATION% %PROTOCOL% %DOWNSTREAM_LOCAL_ADDRESS% "+
					"%DOWNSTREAM_REMOTE_ADDRESS_WITHOUT_PORT% 100%%\n"))
			req, _ := http.NewRequest("GET", url+"/x/y?z=1", nil)
			req.Header.Set("User-Agent", "spec-agent")
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(flushed(srv, m)).To(Equal([]string{
				"2025/01/01 00:00:00 GET /x/y spe 42 - main backend " + u.addr() + " 1 0 11 0 0 HTTP/1.1 " +
					strings.TrimPrefix(url, "http://") + " 127.0.0.1 100%",
			}))
		})

		It("reads Envoy's newer names REQUEST_HEADER and RESPONSE_HEADER as REQ and RESP", func() {
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("X-Answer", "42")
			})
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr())},
				textLog("%REQUEST_HEADER(:METHOD)% %REQUEST_HEADER(X-MISSING?USER-AGENT):4% %RESPONSE_HEADER(X-ANSWER)%\n"))
			req, _ := http.NewRequest("GET", url+"/", nil)
			req.Header.Set("User-Agent", "spec-agent")
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(flushed(srv, m)).To(Equal([]string{"GET spec 42"}))
		})

		It("writes json_format on one line, the counts and durations as numbers and a missing value null", func() {
			u := newUpstream(ok)
			tmpl := &config.JSONTemplate{Keys: []string{"code", "flags", "host", "missing", "path", "sent", "nested"},
				Values: map[string]config.JSONValue{}}
			for k, v := range map[string]string{"code": "%RESPONSE_CODE%", "flags": "%RESPONSE_FLAGS%", "host": "%UPSTREAM_HOST%",
				"missing": "%REQ(X-NONE)%", "path": "path=%REQ(:PATH)%", "sent": "%BYTES_SENT%"} {
				f, _, err := config.ParseAccessLogFormat(v)
				Expect(err).NotTo(HaveOccurred())
				tmpl.Values[k] = config.JSONValue{Format: f}
			}
			inner, _, _ := config.ParseAccessLogFormat("%UPSTREAM_REQUEST_ATTEMPT_COUNT%")
			tmpl.Values["nested"] = config.JSONValue{Object: &config.JSONTemplate{Keys: []string{"attempts"},
				Values: map[string]config.JSONValue{"attempts": {Format: inner}}}}
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr())},
				config.AccessLog{Path: "mem", Format: &config.BodyFormat{JSON: tmpl}})
			get(url + "/j")
			lines := flushed(srv, m)
			Expect(lines).To(HaveLen(1))
			var got map[string]any
			Expect(json.Unmarshal([]byte(lines[0]), &got)).To(Succeed())
			Expect(got).To(Equal(map[string]any{"code": 200.0, "flags": "-", "host": u.addr(), "missing": nil,
				"path": "path=/j", "sent": 5.0, "nested": map[string]any{"attempts": 1.0}}))
		})

		It("writes only the lines its filter takes (status_code_filter, header_filter)", func() {
			srv, url, m := logged(setup{},
				config.AccessLog{Path: "mem", Format: textLog("status %RESPONSE_CODE%\n").Format,
					Filter: &config.AccessLogFilter{StatusCode: &config.StatusCodeFilter{Op: "GE", Value: 500}}},
				config.AccessLog{Path: "mem", Format: textLog("tagged %REQ(X-TAG)%\n").Format,
					Filter: &config.AccessLogFilter{Header: &config.HeaderMatcher{Name: "x-tag", Present: ptr(true)}}})
			req, _ := http.NewRequest("GET", url+"/", nil)
			req.Header.Set("X-Tag", "t")
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(flushed(srv, m)).To(Equal([]string{"tagged t"}), "a 404 is below 500")
		})
	})

	// Each response flag the proxy sets, where Envoy sets it.
	Describe("%RESPONSE_FLAGS%", func() {
		It("is NR for a request no route matches", func() {
			srv, url, m := logged(setup{}, textLog(flags))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"404 NR route_not_found"}))
		})

		It("is - for a direct response, whose details say so, and its bytes sent are its body's", func() {
			r := config.Route{Match: config.RouteMatch{Prefix: "/"}, DirectResponse: &config.DirectResponse{Status: 200, Body: "hello"}}
			srv, url, m := logged(setup{routes: []config.Route{r}}, textLog(flags+"%BYTES_SENT% %UPSTREAM_HOST% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"200 - direct_response", "5 - 0"}))
		})

		It("is NC for a route whose cluster does not exist", func() {
			r := prefixRoute("/", "", nil)
			r.Action.ClusterHeader = "x-cluster"
			srv, url, m := logged(setup{routes: []config.Route{r}, clusters: backend(closedAddr())}, textLog(flags))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"503 NC cluster_not_found"}))
		})

		It("is UH when the cluster has no healthy host", func() {
			c := cluster("backend")
			srv, url, m := logged(setup{routes: route(nil), clusters: []config.Cluster{c}}, textLog(flags))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"503 UH no_healthy_upstream"}))
		})

		It("is UF for a connection failure, after URX once the retries are used up (the order they were set in)", func() {
			addr := closedAddr()
			srv, url, m := logged(setup{routes: route(retries(1, "connect-failure")), clusters: backend(addr)},
				textLog(flags+"%UPSTREAM_HOST% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{
				"503 URX,UF upstream_reset_before_response_started{remote_connection_failure|delayed_connect_error:_Connection_refused}",
				addr + " 2",
			}))
		})

		It("is UC for a connection the upstream closed before its response", func() {
			u := newUpstream(resetConn)
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr())}, textLog(flags))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"503 UC upstream_reset_before_response_started{connection_termination}"}))
		})

		It("is URX on a response the retries could not replace, which is relayed via_upstream", func() {
			u := newUpstream(status(503))
			srv, url, m := logged(setup{routes: route(retries(2, "5xx")), clusters: backend(u.addr())},
				textLog("%RESPONSE_CODE% %RESPONSE_FLAGS% %RESPONSE_CODE_DETAILS% %UPSTREAM_REQUEST_ATTEMPT_COUNT%\n"))
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"503 URX via_upstream 3"}))
		})

		It("is UO for a circuit-breaker overflow", func() {
			open := make(chan struct{})
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) { <-open })
			c := cluster("backend", u.addr())
			c.Breakers.Default.MaxRequests = 1
			srv, url, m := logged(setup{routes: route(nil), clusters: []config.Cluster{c}}, textLog(flags))
			first := make(chan int, 1)
			go func() { defer GinkgoRecover(); code, _, _ := get(url + "/"); first <- code }()
			Eventually(u.requests.Load).WithTimeout(5*time.Second).Should(BeEquivalentTo(1), "the first request holds the one slot")
			get(url + "/")
			close(open)
			Expect(<-first).To(Equal(200))
			Expect(flushed(srv, m)).To(Equal([]string{
				"503 UO upstream_reset_before_response_started{overflow}",
				"200 - via_upstream",
			}))
		})

		It("is UT for the route timeout", func() {
			clk := fakeClock()
			u := newUpstream(hang)
			r := prefixRoute("/", "backend", nil)
			r.Action.Timeout = time.Second
			srv, url, m := logged(setup{routes: []config.Route{r}, clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}},
				textLog(flags+"%DURATION%\n"))
			sendGET(clk, 100*time.Millisecond, url+"/")
			lines := flushed(srv, m)
			Expect(lines).To(HaveLen(2))
			Expect(lines[0]).To(Equal("504 UT upstream_response_timeout"))
			Expect(lines[1]).To(MatchRegexp(`^1[0-9]{3}$`), "the duration in ms, at least the timeout")
		})

		It("is UT for a per-try timeout, after URX once no retry is left", func() {
			clk := fakeClock()
			u := newUpstream(hang)
			rp := retries(1, "5xx")
			rp.PerTryTimeout = time.Second
			srv, url, m := logged(setup{routes: route(rp), clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}}, textLog(flags))
			sendGET(clk, 100*time.Millisecond, url+"/")
			Expect(flushed(srv, m)).To(Equal([]string{"504 URX,UT upstream_per_try_timeout"}))
		})

		It("is DI for a fault delay and FI for a fault abort", func() {
			clk := fakeClock()
			u := newUpstream(ok)
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr()), opts: proxy.Options{Clock: clk},
				fault: &config.FaultFilter{Delay: &config.FaultDelay{Fixed: time.Second, Percent: all},
					Abort: &config.FaultAbort{HTTPStatus: 418, Percent: all, FromHeader: true}}}, textLog(flags))
			code, _ := sendGET(clk, 100*time.Millisecond, url+"/")
			Expect(code).To(Equal(200))
			code, _ = sendGET(clk, 100*time.Millisecond, url+"/", "x-envoy-fault-abort-request", "429")
			Expect(code).To(Equal(429))
			Expect(flushed(srv, m)).To(Equal([]string{"200 DI via_upstream", "429 DI,FI fault_filter_abort"}))
		})

		It("is RL for a request the local rate limit filter refused", func() {
			u := newUpstream(ok)
			lr := &config.LocalRateLimit{StatPrefix: "rl", Status: 429, MaxTokens: 1, TokensPerFill: 1,
				FillInterval: time.Hour, Enabled: all, Enforced: all}
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr()), opts: proxy.Options{Clock: fakeClock()},
				listener: func(l *config.Listener) { l.HTTPFilters = []config.HTTPFilter{{LocalRateLimit: lr}} }}, textLog(flags))
			get(url + "/")
			get(url + "/")
			Expect(flushed(srv, m)).To(Equal([]string{"200 - via_upstream", "429 RL local_rate_limited"}))
		})

		It("is SI for the stream idle timeout", func() {
			clk := fakeClock()
			u := newUpstream(hang)
			r := prefixRoute("/", "backend", nil)
			r.Action.Timeout = 0
			srv, url, m := logged(setup{routes: []config.Route{r}, clusters: backend(u.addr()), opts: proxy.Options{Clock: clk},
				listener: func(l *config.Listener) { l.StreamIdleTimeout = time.Second }}, textLog(flags))
			sendGET(clk, 100*time.Millisecond, url+"/")
			Expect(flushed(srv, m)).To(Equal([]string{"504 SI stream_idle_timeout"}))
		})

		// Regression: DT was set here; Envoy's ActiveStream::onStreamMaxDurationReached sets only the details.
		It("has no flag for the route's max_stream_duration, only its details", func() {
			clk := fakeClock()
			u := newUpstream(hang)
			r := prefixRoute("/", "backend", nil)
			d := time.Second
			r.Action.Timeout, r.Action.MaxStreamDuration, r.Action.NewTimeouts = 0, &d, true
			srv, url, m := logged(setup{routes: []config.Route{r}, clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}}, textLog(flags))
			sendGET(clk, 100*time.Millisecond, url+"/")
			Expect(flushed(srv, m)).To(Equal([]string{"504 - max_duration_timeout"}))
		})

		It("is DPE for a request the codec rejects as the connection manager reads it", func() {
			srv, url, m := logged(setup{listener: func(l *config.Listener) { l.UnderscoresAction = config.UnderscoresRejectRequest }},
				textLog(flags))
			req, _ := http.NewRequest("GET", url+"/", nil)
			req.Header["X_Bad"] = []string{"1"}
			resp, err := client.Do(req)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(flushed(srv, m)).To(Equal([]string{"400 DPE http1.unexpected_underscore"}))
		})

		// Regression: a response cut short after it started was logged with no flag and via_upstream.
		It("is UC for an upstream gone mid-body, with Envoy's after-the-response-started details", func() {
			u := newUpstream(func(_ int64, w http.ResponseWriter, _ *http.Request) {
				w.Header().Set("Content-Length", "100")
				io.WriteString(w, "0123456789")
				w.(http.Flusher).Flush()
				panic(http.ErrAbortHandler) // net/http closes the connection mid-body
			})
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr())}, textLog(flags))
			resp, err := client.Get(url + "/")
			Expect(err).NotTo(HaveOccurred())
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
			Expect(err).To(HaveOccurred()) // the downstream is reset too
			Eventually(func() []string { return flushed(srv, m) }).WithTimeout(5 * time.Second).
				Should(Equal([]string{"200 UC upstream_reset_after_response_started{connection_termination}"}))
		})

		It("is DC, with response code 0, for a client gone before its response", func() {
			u := newUpstream(hang)
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr())}, textLog(flags))
			conn, err := net.Dial("tcp", strings.TrimPrefix(url, "http://"))
			Expect(err).NotTo(HaveOccurred())
			_, err = io.WriteString(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
			Expect(err).NotTo(HaveOccurred())
			Eventually(u.requests.Load).WithTimeout(5 * time.Second).Should(BeEquivalentTo(1))
			conn.Close()
			// The proxy notices the close on its own goroutine: poll its log.
			Eventually(func() []string { return flushed(srv, m) }).WithTimeout(5 * time.Second).
				Should(Equal([]string{"0 DC downstream_remote_disconnect"}))
		})
	})

	Describe("the writer", func() {
		It("never blocks a request: lines beyond the buffer are dropped and counted while the file is slow", func() {
			u := newUpstream(ok)
			m := &memLog{gate: make(chan struct{}), writing: make(chan struct{}, 1)}
			s := setup{routes: route(nil), clusters: backend(u.addr()),
				opts:     proxy.Options{AccessLogBufferBytes: 64, AccessLogOpen: func(string) (io.WriteCloser, error) { return m, nil }},
				listener: func(l *config.Listener) { l.AccessLogs = []config.AccessLog{textLog("%RESPONSE_CODE% %REQ(:PATH)%\n")} }}
			srv, url := start(s)
			get(url + "/ppa")
			// The writer takes that line and is stuck writing it (a slow disk) until the gate opens.
			go func() { _ = srv.FlushAccessLogs(context.Background()) }()
			Eventually(m.writing).WithTimeout(5 * time.Second).Should(Receive())
			for i := range 29 { // 9 bytes a line: 7 fit in the 64 bytes, the others are dropped
				code, _, _ := get(url + "/pp" + string(rune('b'+i%25)))
				Expect(code).To(Equal(200), "answered while the log's file is stuck")
			}
			dropped := stat(srv, "filesystem.write_dropped")
			Expect(dropped).To(BeEquivalentTo(22))
			close(m.gate)
			lines := flushed(srv, m)
			Expect(lines).To(HaveLen(8))
			Expect(lines[:2]).To(Equal([]string{"200 /ppa", "200 /ppb"}))
			Expect(stat(srv, "filesystem.write_buffered")).To(BeEquivalentTo(len(lines)))
			Expect(stat(srv, "filesystem.write_total_buffered")).To(BeZero())
		})

		It("writes what it buffered every second of the proxy's clock (Envoy's file_flush_interval_msec default)", func() {
			clk := fakeClock()
			u := newUpstream(ok)
			srv, url, m := logged(setup{routes: route(nil), clusters: backend(u.addr()), opts: proxy.Options{Clock: clk}},
				textLog("%REQ(:PATH)%\n"))
			get(url + "/a")
			get(url + "/b")
			Expect(m.lines()).To(BeEmpty(), "less than 64 KiB waits for the interval")
			until(clk, 200*time.Millisecond, func() bool { return len(m.lines()) == 2 })
			Expect(m.lines()).To(Equal([]string{"/a", "/b"}))
			Expect(stat(srv, "filesystem.flushed_by_timer")).To(BeEquivalentTo(1))
			Expect(stat(srv, "filesystem.write_completed")).To(BeEquivalentTo(1), "one write for both lines")
		})

		It("writes a file, flushed on Shutdown, and reopens it on POST /reopen_logs", func() {
			dir := GinkgoT().TempDir()
			path := filepath.Join(dir, "access.log")
			u := newUpstream(ok)
			srv, url := start(setup{routes: route(nil), clusters: backend(u.addr()), listener: func(l *config.Listener) {
				l.AccessLogs = []config.AccessLog{{Path: path, Format: textLog("%REQ(:PATH)%\n").Format}}
			}})
			get(url + "/one")
			Expect(srv.FlushAccessLogs(context.Background())).To(Succeed())
			Expect(os.Rename(path, path+".1")).To(Succeed()) // a log rotation
			resp, err := client.Post("http://"+srv.AdminAddr()+"/reopen_logs", "", nil)
			Expect(err).NotTo(HaveOccurred())
			resp.Body.Close()
			Expect(resp.StatusCode).To(Equal(200))
			get(url + "/two")
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			Expect(srv.Shutdown(ctx)).To(Succeed())
			Expect(os.ReadFile(path + ".1")).To(BeEquivalentTo("/one\n"))
			Expect(os.ReadFile(path)).To(BeEquivalentTo("/two\n"))
		})
	})
})
