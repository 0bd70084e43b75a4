package proxy_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// promResponse is the envelope of Prometheus' HTTP API (/api/v1/...).
type promResponse struct {
	Status string          `json:"status"`
	Error  string          `json:"error"`
	Data   json.RawMessage `json:"data"`
}

// promAPI gets path from the Prometheus at base and decodes its data into out.
func promAPI(base, path string, out any) error {
	resp, err := http.Get(base + path)
	if err != nil {
		return err
	}
	defer func() { _ = resp.Body.Close() }()
	var r promResponse
	if err := json.NewDecoder(resp.Body).Decode(&r); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if r.Status != "success" {
		return fmt.Errorf("%s: %s", path, r.Error)
	}
	return json.Unmarshal(r.Data, out)
}

// freeLoopbackPort returns a port of 127.0.0.1 that was free a moment ago.
func freeLoopbackPort() int {
	GinkgoHelper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	Expect(err).NotTo(HaveOccurred())
	port := l.Addr().(*net.TCPAddr).Port
	Expect(l.Close()).To(Succeed())
	return port
}

// The shipped dashboard against a real Prometheus (Debian's package) scraping the proxy's admin
// endpoint: the exposition must parse in Prometheus (the target is up, with no scrape error), and every
// query of the dashboard must return series, as it would in Grafana.
var _ = Describe("the Grafana dashboard against a real Prometheus", Label("slow", "prometheus"), func() {
	It("scrapes /stats/prometheus and answers every query of dashboards/envoy-clusters.json", func(ctx SpecContext) {
		bin, err := exec.LookPath("prometheus")
		if err != nil {
			if os.Getenv("MESHPROOF_REQUIRE_PROMETHEUS") != "" {
				Fail("prometheus is not installed (apt-get install prometheus), and MESHPROOF_REQUIRE_PROMETHEUS is set")
			}
			Skip("prometheus is not installed (apt-get install prometheus)")
		}
		exprs := dashboardQueries()
		// Traffic with successes, 503s and retries, kept up while Prometheus scrapes, so that every
		// rate() over the dashboard's 1m windows has two samples to work with.
		srv, base := dashboardProxy()
		trafficCtx, stopTraffic := context.WithCancel(context.Background())
		trafficDone := make(chan struct{})
		go func() {
			defer close(trafficDone)
			client := &http.Client{Timeout: 5 * time.Second}
			for trafficCtx.Err() == nil {
				// No assertion here (a goroutine): a request that fails only thins the traffic, and the
				// queries below say what they miss.
				for _, path := range []string{"/", "/fail"} {
					if resp, err := client.Get(base + path); err == nil {
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
					}
				}
				select {
				case <-trafficCtx.Done():
				case <-time.After(100 * time.Millisecond):
				}
			}
		}()
		DeferCleanup(func() { stopTraffic(); <-trafficDone })

		dir := GinkgoT().TempDir()
		cfg := fmt.Sprintf(`global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: envoy
    metrics_path: /stats/prometheus
    static_configs: [{targets: ["%s"]}]
`, srv.AdminAddr())
		Expect(os.WriteFile(filepath.Join(dir, "prometheus.yml"), []byte(cfg), 0o644)).To(Succeed())
		port := freeLoopbackPort()
		promCtx, stopProm := context.WithCancel(context.Background())
		cmd := exec.CommandContext(promCtx, bin, "--config.file="+filepath.Join(dir, "prometheus.yml"),
			"--storage.tsdb.path="+filepath.Join(dir, "data"), fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port))
		cmd.Stdout, cmd.Stderr = GinkgoWriter, GinkgoWriter
		Expect(cmd.Start()).To(Succeed())
		DeferCleanup(func() { stopProm(); _ = cmd.Wait() })
		prom := fmt.Sprintf("http://127.0.0.1:%d", port)

		By("the target is up, its exposition parsed without error")
		Eventually(func(g Gomega) {
			var targets struct {
				ActiveTargets []struct {
					Health    string `json:"health"`
					LastError string `json:"lastError"`
				} `json:"activeTargets"`
			}
			g.Expect(promAPI(prom, "/api/v1/targets", &targets)).To(Succeed())
			g.Expect(targets.ActiveTargets).To(HaveLen(1))
			g.Expect(targets.ActiveTargets[0].LastError).To(BeEmpty())
			g.Expect(targets.ActiveTargets[0].Health).To(Equal("up"))
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())

		By("every query returns series")
		Eventually(func() []string {
			var empty []string
			for _, e := range exprs {
				var n int
				if metric, label, ok := labelValues(e); ok {
					// Grafana's label_values(metric, label) is the label values API with a match[].
					var values []string
					if err := promAPI(prom, "/api/v1/label/"+label+"/values?match[]="+url.QueryEscape(metric), &values); err != nil {
						empty = append(empty, e+": "+err.Error())
						continue
					}
					n = len(values)
				} else {
					var result struct {
						Result []json.RawMessage `json:"result"`
					}
					q := strings.ReplaceAll(e, "$cluster", ".*") // the variable's "All"
					if err := promAPI(prom, "/api/v1/query?query="+url.QueryEscape(q), &result); err != nil {
						empty = append(empty, e+": "+err.Error())
						continue
					}
					n = len(result.Result)
				}
				if n == 0 {
					empty = append(empty, e)
				}
			}
			return empty
		}).WithContext(ctx).WithTimeout(60 * time.Second).WithPolling(time.Second).Should(BeEmpty())
	}, SpecTimeout(3*time.Minute))
})

// labelValues splits Grafana's label_values(metric, label) into its arguments.
func labelValues(expr string) (metric, label string, ok bool) {
	args, ok := strings.CutPrefix(strings.TrimSpace(expr), "label_values(")
	if !ok {
		return "", "", false
	}
	metric, label, ok = strings.Cut(strings.TrimSuffix(args, ")"), ",")
	return strings.TrimSpace(metric), strings.TrimSpace(label), ok
}
