package main

import (
	"bytes"
	"flag"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/cmd/internal/cli"
	"github.com/meshproof/meshproof/cmd/internal/proxycmd"
	"github.com/meshproof/meshproof/mesh/tracing"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

var _ = Describe("meshproof run in GitHub Actions", func() {
	var out, summary string
	BeforeEach(func() {
		out = GinkgoT().TempDir()
		summary = filepath.Join(GinkgoT().TempDir(), "step_summary.md")
		Expect(os.WriteFile(summary, []byte("# an earlier step\n"), 0o644)).To(Succeed())
		GinkgoT().Setenv(envGitHubActions, "true")
		GinkgoT().Setenv(envGitHubStepSummary, summary)
	})

	It("appends summary.md to $GITHUB_STEP_SUMMARY and annotates the failed check at its line", Label("e2e"), func() {
		code, stdout, stderr := run("run", "testdata/violated.yaml", "--out", out)
		Expect(code).To(Equal(1), "stdout:\n%s\nstderr:\n%s", stdout, stderr)

		md, err := os.ReadFile(filepath.Join(out, reports.FileMarkdown))
		Expect(err).NotTo(HaveOccurred())
		Expect(os.ReadFile(summary)).To(Equal(append([]byte("# an earlier step\n"), md...)))

		// success_rate >= 99% is line 17 of the file; status(503) > 0, line 18, holds.
		Expect(stdout).To(MatchRegexp(`(?m)^::error file=testdata/violated\.yaml,line=17,title=meshproof check failed::success_rate >= 99%25: observed success_rate = [0-9.]+%25 \(\d+/100\), required >= 99%25$`))
		Expect(strings.Count(stdout, "::error ")).To(Equal(1))
		Expect(stderr).NotTo(ContainSubstring("warning"))
	})

	It("warns on stderr when $GITHUB_STEP_SUMMARY is missing, and keeps the run's exit code", Label("e2e"), func() {
		GinkgoT().Setenv(envGitHubStepSummary, filepath.Join(GinkgoT().TempDir(), "gone", "summary.md"))
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--out", out)
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(stderr).To(MatchRegexp(`meshproof: warning: job summary GITHUB_STEP_SUMMARY=\S+/gone/summary.md: .*no such file`))
		Expect(stdout).NotTo(ContainSubstring("::error"))
		Expect(filepath.Join(out, FileIncomplete)).NotTo(BeAnExistingFile())
	})

	It("annotates each error of an invalid scenario at its line, and exits 2", func() {
		code, stdout, _ := run("run", "testdata/unknown-field.yaml", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stdout).To(HavePrefix("::error file=testdata/unknown-field.yaml,line=5,title=meshproof invalid scenario::" +
			"services.backend.replicas: unknown field \"replicas\"; accepted here: instances, response"))
		Expect(strings.Count(stdout, "\n")).To(Equal(1))
		code, stdout, _ = run("run", "testdata/nope.yaml", "--out", out)
		Expect(code).To(Equal(2))
		Expect(stdout).To(HavePrefix("::error file=testdata/nope.yaml,title=meshproof invalid scenario::"))
	})

	It("annotates nothing outside GitHub Actions", Label("e2e"), func() {
		GinkgoT().Setenv(envGitHubActions, "")
		code, stdout, _ := run("run", "testdata/violated.yaml", "--out", out)
		Expect(code).To(Equal(1))
		Expect(stdout).NotTo(ContainSubstring("::"))
		Expect(os.ReadFile(summary)).To(Equal([]byte("# an earlier step\n")))
	})
})

var _ = Describe("GitHub workflow commands", func() {
	It("escape %, CR and LF in the message, and also : and , in properties", func() {
		var b bytes.Buffer
		ghAnnotation(&b, "error", "dir,x/a:b.yaml", 3, "t: 1,2", "50% of\r\nrequests")
		Expect(b.String()).To(Equal("::error file=dir%2Cx/a%3Ab.yaml,line=3,title=t%3A 1%2C2::50%25 of%0D%0Arequests\n"))
	})

	It("annotate each scenario warning at its line, without the line when it is not known", func() {
		sc := &scenarios.Scenario{Warnings: []*scenarios.Error{
			{File: "s.yaml", Line: 12, Column: 7, Path: "proxies.edge.cluster", Msg: "warning: max_ejection_percent 10 with 4 hosts never allows an ejection"},
			{Msg: "warning: something"},
		}}
		var b bytes.Buffer
		ghWarnings(&b, "s.yaml", sc)
		Expect(b.String()).To(Equal(
			"::warning file=s.yaml,line=12,title=meshproof scenario warning::proxies.edge.cluster: max_ejection_percent 10 with 4 hosts never allows an ejection\n" +
				"::warning file=s.yaml,title=meshproof scenario warning::something\n"))
	})
})

var _ = Describe("meshproof run --junit and --json", func() {
	var out, ci string
	BeforeEach(func() {
		out, ci = GinkgoT().TempDir(), GinkgoT().TempDir()
	})

	It("writes junit.xml and report.json to the paths too, identical to the run directory's", Label("e2e"), func() {
		junit, js := filepath.Join(ci, "test-results", "meshproof.xml"), filepath.Join(ci, "meshproof.json")
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--out", out, "--junit", junit, "--json", js)
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(stdout).To(ContainSubstring("also: " + junit + ", " + js + "\n"))
		Expect(os.ReadFile(junit)).To(Equal(mustRead(filepath.Join(out, reports.FileJUnit))))
		Expect(os.ReadFile(js)).To(Equal(mustRead(filepath.Join(out, reports.FileJSON))))
		Expect(filepath.Glob(filepath.Join(ci, "*", ".*tmp*"))).To(BeEmpty())
	})

	It("exits 1 naming the path when one cannot be written, after completing the run directory", Label("e2e"), func() {
		file := filepath.Join(ci, "a-file")
		Expect(os.WriteFile(file, nil, 0o644)).To(Succeed())
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--out", out, "--json", filepath.Join(file, "report.json"))
		Expect(code).To(Equal(1), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		Expect(stderr).To(ContainSubstring("meshproof: --json: mkdir " + file + ": not a directory"))
		Expect(stdout).To(ContainSubstring("PASS"))
		Expect(filepath.Join(out, reports.FileJUnit)).To(BeAnExistingFile())
		Expect(filepath.Join(out, FileIncomplete)).NotTo(BeAnExistingFile())
	})

	It("exits 2 before running when a path is a directory or both name one file", func() {
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--out", out, "--junit", ci)
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("meshproof run: --junit " + ci + " is a directory: want the path of the file to write"))
		Expect(stdout).To(BeEmpty())
		code, _, stderr = run("run", "testdata/passing.yaml", "--out", out, "--junit", "x/r", "--json", "x//r")
		Expect(code).To(Equal(2))
		Expect(stderr).To(ContainSubstring("--junit and --json both name x/r: want two files"))
		Expect(filepath.Join(out, reports.FileJSON)).NotTo(BeAnExistingFile())
	})
})

func mustRead(path string) []byte {
	GinkgoHelper()
	data, err := os.ReadFile(path)
	Expect(err).NotTo(HaveOccurred())
	return data
}

var _ = Describe("OpenTelemetry environment", func() {
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}

	DescribeTable("the OTLP traces endpoint: the flag, else the traces endpoint as is, else the generic one + /v1/traces",
		func(args []string, vars map[string]string, want string) {
			fs := flag.NewFlagSet("t", flag.ContinueOnError)
			endpoint := fs.String("otlp-endpoint", "", "")
			Expect(fs.Parse(args)).To(Succeed())
			Expect(cli.DefaultOTLPEndpoint(fs, endpoint, env(vars))).To(Succeed())
			Expect(*endpoint).To(Equal(want))
		},
		Entry("nothing", nil, nil, ""),
		Entry("the flag wins over both variables", []string{"--otlp-endpoint", "http://flag:4318/v1/traces"},
			map[string]string{cli.EnvOTLPTracesEndpoint: "http://traces:4318/t", cli.EnvOTLPEndpoint: "http://all:4318"}, "http://flag:4318/v1/traces"),
		Entry("an empty flag wins too: no export", []string{"--otlp-endpoint", ""},
			map[string]string{cli.EnvOTLPEndpoint: "http://all:4318"}, ""),
		Entry("the traces endpoint, as is, over the generic one", nil,
			map[string]string{cli.EnvOTLPTracesEndpoint: "https://traces:4318/custom", cli.EnvOTLPEndpoint: "http://all:4318"}, "https://traces:4318/custom"),
		Entry("the generic endpoint + /v1/traces", nil, map[string]string{cli.EnvOTLPEndpoint: "http://all:4318"}, "http://all:4318/v1/traces"),
		Entry("the generic endpoint's path is kept", nil, map[string]string{cli.EnvOTLPEndpoint: "http://all:4318/otlp/"}, "http://all:4318/otlp/v1/traces"),
		Entry("an empty traces endpoint is unset", nil,
			map[string]string{cli.EnvOTLPTracesEndpoint: "", cli.EnvOTLPEndpoint: "http://all:4318"}, "http://all:4318/v1/traces"),
	)

	It("names the variable of an endpoint that is no http(s) URL, and the commands exit 2", func() {
		_, err := cli.OTLPEndpointFromEnv(env(map[string]string{cli.EnvOTLPEndpoint: "collector:4318"}))
		Expect(err).To(MatchError("OTEL_EXPORTER_OTLP_ENDPOINT=collector:4318: want an http:// or https:// URL"))
		GinkgoT().Setenv(cli.EnvOTLPTracesEndpoint, "grpc://collector:4317")
		for _, args := range [][]string{
			{"run", "testdata/passing.yaml", "--out", GinkgoT().TempDir()},
			{"proxy", "-c", "../../proxy/testdata/bootstrap.yaml"},
			{"upstream", "--scenario", "testdata/passing.yaml", "--service", "backend"},
		} {
			code, _, stderr := run(args...)
			Expect(code).To(Equal(2), "%v: %s", args, stderr)
			Expect(stderr).To(ContainSubstring("meshproof " + args[0] + ": OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=grpc://collector:4317: want an http:// or https:// URL"))
		}
	})

	It("exports a run's spans to $OTEL_EXPORTER_OTLP_ENDPOINT + /v1/traces", Label("e2e"), func() {
		var (
			mu    sync.Mutex
			paths []string
		)
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			_, _ = io.Copy(io.Discard, r.Body)
			mu.Lock()
			paths = append(paths, r.Method+" "+r.URL.Path)
			mu.Unlock()
		}))
		DeferCleanup(srv.Close)
		GinkgoT().Setenv(cli.EnvOTLPEndpoint, srv.URL+"/collector")
		code, stdout, stderr := run("run", "testdata/passing.yaml", "--out", GinkgoT().TempDir())
		Expect(code).To(Equal(0), "stdout:\n%s\nstderr:\n%s", stdout, stderr)
		mu.Lock()
		defer mu.Unlock()
		Expect(paths).NotTo(BeEmpty())
		Expect(paths).To(HaveEach("POST /collector/v1/traces"))
	})

	It("names the standalone proxy's service $OTEL_SERVICE_NAME when its bootstrap names none", func() {
		named := &config.Bootstrap{Tracing: &config.Tracing{Endpoint: "http://c:4318/v1/traces", ServiceName: "edge"}}
		unnamed := &config.Bootstrap{Tracing: &config.Tracing{Endpoint: "http://c:4318/v1/traces"}}
		Expect(proxycmd.Tracing(named, "", "from-env").ServiceName).To(Equal("edge"))
		Expect(proxycmd.Tracing(unnamed, "", "from-env").ServiceName).To(Equal("from-env"))
		Expect(proxycmd.Tracing(&config.Bootstrap{}, "http://c:4318", "from-env")).To(Equal(&tracing.Config{ServiceName: "from-env", OTLPEndpoint: "http://c:4318"}))
	})
})
