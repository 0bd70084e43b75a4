package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

var _ = Describe("meshproof load", func() {
	var url string
	BeforeEach(func() {
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/missing" {
				w.WriteHeader(http.StatusNotFound)
			}
			_, _ = io.WriteString(w, r.Proto)
		}))
		srv.Config.Protocols = new(http.Protocols)
		srv.Config.Protocols.SetHTTP1(true)
		srv.Config.Protocols.SetUnencryptedHTTP2(true)
		srv.Start()
		DeferCleanup(srv.Close)
		url = srv.URL
	})

	// Regression (issue #18): load exited 0 when every request failed.
	It("exits 1 when every request failed, and says so", func() {
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.WriteHeader(http.StatusServiceUnavailable)
		}))
		DeferCleanup(srv.Close)
		code, _, stderr := run("load", srv.URL, "--rate", "50", "--duration", "200ms")
		Expect(code).To(Equal(1))
		Expect(stderr).To(ContainSubstring("EVERY REQUEST FAILED (10 of 10)"))
	})

	It("exits 1 above --max-error-rate and 0 at or below it", func() {
		// 10 requests at 50/s over 200ms, every second one to /missing (404): 50% failed.
		mix := []string{"--mix", "1:GET:/", "--mix", "1:GET:/missing", "--rate", "50", "--duration", "200ms"}
		code, _, stderr := run(append([]string{"load", url, "--max-error-rate", "10"}, mix...)...)
		Expect(code).To(Equal(1))
		Expect(stderr).To(MatchRegexp(`ERROR RATE \d+% \(\d+ of 10 requests\) is above --max-error-rate 10%`))
		code, _, stderr = run(append([]string{"load", url, "--max-error-rate", "100"}, mix...)...)
		Expect(code).To(Equal(0), stderr)
	})

	It("refuses a --max-error-rate outside 0..100", func() {
		code, _, stderr := run("load", url, "--rate", "50", "--duration", "100ms", "--max-error-rate", "150")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("want a percentage from 0 to 100"))
	})

	It("prints one JSON object with --json", func() {
		code, stdout, stderr := run("load", url, "--rate", "200", "--duration", "200ms", "--connections", "2", "--json")
		Expect(code).To(Equal(0), stderr)
		Expect(strings.Count(strings.TrimSpace(stdout), "\n")).To(BeZero(), "one line")
		var out map[string]any
		Expect(json.Unmarshal([]byte(stdout), &out)).To(Succeed())
		Expect(out).To(HaveKeyWithValue("requests", 40.0))
		Expect(out).To(HaveKeyWithValue("errors", 0.0))
		Expect(out).To(HaveKeyWithValue("mode", "open"))
		Expect(out).To(HaveKeyWithValue("connections_opened", 2.0))
		Expect(out["achieved_rate"]).To(BeNumerically("~", 200, 10))
		Expect(out["status_codes"]).To(Equal(map[string]any{"200": 40.0}))
		for _, view := range []string{"latency_ms", "uncorrected_latency_ms"} {
			Expect(out[view]).To(And(HaveKey("p50"), HaveKey("p90"), HaveKey("p99"), HaveKey("p999"), HaveKey("max")), view)
		}
	})

	It("prints a human summary with both latency views", func() {
		code, stdout, stderr := run("load", url, "--rate", "100", "--duration", "100ms", "--poisson", "--seed", "3")
		Expect(code).To(Equal(0), stderr)
		Expect(stdout).To(ContainSubstring("open loop (poisson arrivals)"))
		Expect(stdout).To(ContainSubstring("corrected (from intended send)"))
		Expect(stdout).To(MatchRegexp(`p99\.9\s`))
		Expect(stdout).To(ContainSubstring("main"))
	})

	It("runs closed loop with --concurrency and no --rate", func() {
		code, stdout, stderr := run("load", url, "--concurrency", "3", "--duration", "100ms", "--json")
		Expect(code).To(Equal(0), stderr)
		var out map[string]any
		Expect(json.Unmarshal([]byte(stdout), &out)).To(Succeed())
		Expect(out).To(HaveKeyWithValue("mode", "closed"))
		Expect(out["requests"]).To(BeNumerically(">", 3))
		Expect(out["latency_ms"]).To(Equal(out["uncorrected_latency_ms"]))
	})

	It("speaks h2c, runs phases and a request mix, and writes the raw log", func() {
		raw := filepath.Join(GinkgoT().TempDir(), "raw.csv")
		code, stdout, stderr := run("load", url, "--h2c", "--phase", "warm:100ms:100", "--phase", "ramp:100ms:100..300",
			"--phase", "spike:100ms:burst=5/50ms", "--mix", "3:GET:/", "--mix", "1:GET:/missing", "--raw", raw, "--json")
		Expect(code).To(Equal(0), stderr)
		var out struct {
			Requests    int            `json:"requests"`
			StatusCodes map[string]int `json:"status_codes"`
			Phases      []struct {
				Name     string `json:"name"`
				Requests int    `json:"requests"`
			} `json:"phases"`
		}
		Expect(json.Unmarshal([]byte(stdout), &out)).To(Succeed())
		Expect(out.Requests).To(Equal(10 + 20 + 10))
		Expect(out.Phases).To(HaveLen(3))
		Expect(out.Phases[2].Name).To(Equal("spike"))
		Expect(out.StatusCodes["404"]).To(BeNumerically(">", 0))
		data, err := os.ReadFile(raw)
		Expect(err).NotTo(HaveOccurred())
		Expect(strings.Count(string(data), "\n")).To(Equal(41))
	})

	DescribeTable("exits 2 on bad flags with a clear message",
		func(want string, args ...string) {
			code, stdout, stderr := run(append([]string{"load"}, args...)...)
			Expect(code).To(Equal(2))
			Expect(stdout).To(BeEmpty())
			Expect(stderr).To(ContainSubstring(want))
			Expect(stderr).To(ContainSubstring("usage: meshproof load URL"))
		},
		Entry("no URL", "want exactly one URL, got 0", "--rate", "10", "--duration", "1s"),
		Entry("no rate nor concurrency", "want --rate R (open loop), --phase SPEC, or --concurrency N (closed loop)", "http://127.0.0.1:1/"),
		Entry("no duration", "want --duration D", "http://127.0.0.1:1/", "--rate", "10"),
		Entry("a negative rate", "--rate -5: want requests/s > 0", "http://127.0.0.1:1/", "--rate", "-5", "--duration", "1s"),
		Entry("zero connections", "--connections 0: want > 0", "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--connections", "0"),
		Entry("an unknown flag", "flag provided but not defined: -qps", "http://127.0.0.1:1/", "--qps", "5"),
		Entry("a bad duration", `invalid value "soon" for flag -duration`, "http://127.0.0.1:1/", "--rate", "5", "--duration", "soon"),
		Entry("a bad phase", `--phase "warm:1s": want NAME:DURATION:RATE`, "http://127.0.0.1:1/", "--phase", "warm:1s"),
		Entry("phase and rate", "--phase replaces --rate and --duration", "http://127.0.0.1:1/", "--phase", "a:1s:5", "--rate", "5"),
		Entry("a bad mix", `--mix "x:GET:/": weight "x": want an integer > 0`, "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--mix", "x:GET:/"),
		Entry("a bad URL", `URL "ftp://x": want an absolute http:// or https:// URL`, "ftp://x", "--rate", "5", "--duration", "1s"),
		Entry("h2c over https", `h2c needs an http:// URL`, "https://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--h2c"),
		Entry("a bad header", `-H "nocolon": want 'Name: value'`, "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "-H", "nocolon"),
		Entry("a gRPC deadline without gRPC", "--grpc-deadline needs --grpc", "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--grpc-deadline", "1s"),
		Entry("an unknown gRPC method", `gRPC method "bidi": want "unary" or "server_stream"`, "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--grpc", "bidi"),
		Entry("a gRPC body", "a gRPC run sends its own body", "http://127.0.0.1:1/", "--rate", "5", "--duration", "1s", "--grpc", "unary", "--body", "x"),
	)

	It("calls the fault upstream's Echo over gRPC and counts its statuses: grpc-status 14 is a failure", func() {
		u, err := faults.NewUpstream(faults.UpstreamConfig{Service: "echo", Response: faults.Response{Size: 16},
			Faults: []faults.Fault{{Every: 2, Abort: &faults.Abort{GRPCStatus: 14, Percent: 100}}}})
		Expect(err).NotTo(HaveOccurred())
		Expect(u.Start("127.0.0.1:0")).To(Succeed())
		DeferCleanup(u.Close)
		code, stdout, stderr := run("load", "http://"+u.Addr(), "--grpc", "unary", "--grpc-deadline", "1s", "--rate", "100", "--duration", "100ms", "--json")
		Expect(code).To(Equal(0), stderr)
		var out struct {
			Protocol     string         `json:"protocol"`
			Successes    int            `json:"successes"`
			GRPCStatuses map[string]int `json:"grpc_statuses"`
		}
		Expect(json.Unmarshal([]byte(stdout), &out)).To(Succeed())
		Expect(out.Protocol).To(Equal("grpc"))
		Expect(out.GRPCStatuses).To(Equal(map[string]int{"OK": 5, "UNAVAILABLE": 5}))
		Expect(out.Successes).To(Equal(5))
	})
})
