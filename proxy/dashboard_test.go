package proxy_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/policy"
)

// selector is one vector selector of a PromQL expression: a metric name and its label matchers.
type selector struct {
	metric   string
	matchers []matcher
}

type matcher struct{ label, op, value string }

func (s selector) String() string {
	var ms []string
	for _, m := range s.matchers {
		ms = append(ms, fmt.Sprintf("%s%s%q", m.label, m.op, m.value))
	}
	return s.metric + "{" + strings.Join(ms, ",") + "}"
}

// promqlKeywords are the words of PromQL that are not metric names when not followed by "(".
var promqlKeywords = map[string]bool{"by": true, "without": true, "on": true, "ignoring": true, "group_left": true,
	"group_right": true, "bool": true, "and": true, "or": true, "unless": true, "offset": true}

// selectors finds the vector selectors of a PromQL expression: identifiers that are neither functions
// (followed by "(") nor keywords, with their {label op "value"} matchers. The label lists of by,
// without, on and ignoring, strings, numbers and [range] durations are skipped. It is a tokenizer for the
// expressions a dashboard holds, not a PromQL parser.
func selectors(expr string) ([]selector, error) {
	var out []selector
	isIdentStart := func(c byte) bool { return c == '_' || c == ':' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' }
	isIdent := func(c byte) bool { return isIdentStart(c) || c >= '0' && c <= '9' }
	skipSpace := func(i int) int {
		for i < len(expr) && (expr[i] == ' ' || expr[i] == '\t' || expr[i] == '\n') {
			i++
		}
		return i
	}
	for i := 0; i < len(expr); {
		c := expr[i]
		switch {
		case c == '[': // a range or subquery duration
			end := strings.IndexByte(expr[i:], ']')
			if end < 0 {
				return nil, fmt.Errorf("unclosed [ at %d in %q", i, expr)
			}
			i += end + 1
		case c == '"':
			end := strings.IndexByte(expr[i+1:], '"')
			if end < 0 {
				return nil, fmt.Errorf("unclosed string at %d in %q", i, expr)
			}
			i += end + 2
		case c >= '0' && c <= '9' || c == '.':
			for i < len(expr) && (expr[i] >= '0' && expr[i] <= '9' || expr[i] == '.' || expr[i] == 'e') {
				i++
			}
		case isIdentStart(c):
			j := i
			for j < len(expr) && isIdent(expr[j]) {
				j++
			}
			word := expr[i:j]
			k := skipSpace(j)
			switch {
			case promqlKeywords[word]:
				i = k
				if k < len(expr) && expr[k] == '(' && word != "bool" && word != "and" && word != "or" && word != "unless" {
					end := strings.IndexByte(expr[k:], ')')
					if end < 0 {
						return nil, fmt.Errorf("unclosed label list at %d in %q", k, expr)
					}
					i = k + end + 1
				}
			case k < len(expr) && expr[k] == '(': // a function or aggregation
				i = k + 1
			default:
				s := selector{metric: word}
				i = j
				if k < len(expr) && expr[k] == '{' {
					end := strings.IndexByte(expr[k:], '}')
					if end < 0 {
						return nil, fmt.Errorf("unclosed { at %d in %q", k, expr)
					}
					ms, err := matchers(expr[k+1 : k+end])
					if err != nil {
						return nil, fmt.Errorf("%w in %q", err, expr)
					}
					s.matchers = ms
					i = k + end + 1
				}
				out = append(out, s)
			}
		default:
			i++
		}
	}
	return out, nil
}

var matcherRE = regexp.MustCompile(`^\s*([a-zA-Z_][a-zA-Z0-9_]*)\s*(=~|!~|!=|=)\s*"([^"]*)"\s*$`)

func matchers(s string) ([]matcher, error) {
	var out []matcher
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		m := matcherRE.FindStringSubmatch(part)
		if m == nil {
			return nil, fmt.Errorf("not a label matcher: %q", part)
		}
		out = append(out, matcher{m[1], m[2], m[3]})
	}
	return out, nil
}

// series is one sample line of a Prometheus exposition.
type series struct {
	metric string
	labels map[string]string
}

var sampleRE = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? \S+$`)
var labelRE = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

func parseExposition(text string) []series {
	var out []series
	for _, line := range strings.Split(text, "\n") {
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		m := sampleRE.FindStringSubmatch(line)
		Expect(m).NotTo(BeNil(), "not a sample line: %q", line)
		s := series{metric: m[1], labels: map[string]string{}}
		for _, l := range labelRE.FindAllStringSubmatch(m[2], -1) {
			s.labels[l[1]] = l[2]
		}
		out = append(out, s)
	}
	return out
}

// selects reports whether the selector selects the series (regular expressions anchored, as in PromQL).
func (s selector) selects(ser series) bool {
	if ser.metric != s.metric {
		return false
	}
	for _, m := range s.matchers {
		v := ser.labels[m.label]
		var ok bool
		switch m.op {
		case "=":
			ok = v == m.value
		case "!=":
			ok = v != m.value
		case "=~", "!~":
			ok = regexp.MustCompile("^(?:" + m.value + ")$").MatchString(v)
			if m.op == "!~" {
				ok = !ok
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// dashboardExprs collects every "expr" of the dashboard's panels, and its template variables' queries.
func dashboardExprs(v any) []string {
	var out []string
	switch t := v.(type) {
	case map[string]any:
		for k, x := range t {
			if s, ok := x.(string); ok && (k == "expr" || k == "definition") {
				out = append(out, s)
				continue
			}
			out = append(out, dashboardExprs(x)...)
		}
	case []any:
		for _, x := range t {
			out = append(out, dashboardExprs(x)...)
		}
	}
	return out
}

// dashboardQueries reads the PromQL expressions of the shipped dashboard.
func dashboardQueries() []string {
	GinkgoHelper()
	raw, err := os.ReadFile("dashboards/envoy-clusters.json")
	Expect(err).NotTo(HaveOccurred())
	var dash map[string]any
	Expect(json.Unmarshal(raw, &dash)).To(Succeed())
	exprs := dashboardExprs(dash["panels"])
	Expect(len(exprs)).To(BeNumerically(">=", 10))
	return exprs
}

// dashboardProxy starts a proxy whose route retries 5xx once to a cluster "backend" with an outlier
// detector (Envoy has outlier_detection.* stats only with one, outlier_detection_impl.cc), in front of
// an upstream that answers /fail with 503 and anything else with 200.
func dashboardProxy() (*proxy.Server, string) {
	GinkgoHelper()
	u := newUpstream(func(_ int64, w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(503)
			return
		}
		w.WriteHeader(200)
	})
	c := cluster("backend", u.addr())
	o := policy.DefaultOutlierConfig()
	o.Interval = time.Hour
	c.Outlier = &o
	return start(setup{routes: []config.Route{prefixRoute("/", "backend", retries(1, "5xx"))}, clusters: []config.Cluster{c}})
}

var _ = Describe("the Grafana dashboard dashboards/envoy-clusters.json", func() {
	It("tokenizes PromQL selectors", func() {
		got, err := selectors(`histogram_quantile(0.99, sum(rate(envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"a|b"}[1m])) by (le, envoy_cluster_name)) / on (x) up`)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(HaveLen(2))
		Expect(got[0].String()).To(Equal(`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name=~"a|b"}`))
		Expect(got[1].String()).To(Equal(`up{}`))
		got, err = selectors(`label_values(envoy_cluster_upstream_rq_total, envoy_cluster_name)`)
		Expect(err).NotTo(HaveOccurred())
		Expect(got).To(HaveLen(2), "label_values' label argument reads as a selector too")
	})

	// Envoy's names for these series come from its default tag extractors (well_known_names.cc), as
	// /stats/prometheus writes them (source/server/admin/prometheus_stats.cc): a dashboard made for
	// Envoy must find every series it queries in the proxy's exposition.
	It("finds a series in the proxy's /stats/prometheus for every selector of every query", func() {
		exprs := dashboardQueries()
		srv, url := dashboardProxy()
		for range 3 {
			get(url + "/")
			get(url + "/fail")
		}
		admin := "http://" + srv.AdminAddr()

		var missing []string
		Eventually(func() []string {
			_, _, body := get(admin + "/stats/prometheus")
			all := parseExposition(body)
			missing = nil
			for _, e := range exprs {
				// A template variable stands for every value ("All": .*).
				e = strings.ReplaceAll(e, "$cluster", ".*")
				sels, err := selectors(e)
				Expect(err).NotTo(HaveOccurred())
				for _, s := range sels {
					if s.metric == "envoy_cluster_name" && strings.HasPrefix(e, "label_values(") {
						continue // label_values' second argument is a label, not a selector
					}
					found := false
					for _, ser := range all {
						if s.selects(ser) {
							found = true
							break
						}
					}
					if !found {
						missing = append(missing, s.String()+" (in "+e+")")
					}
				}
			}
			return missing
		}).WithTimeout(5 * time.Second).Should(BeEmpty())
	})
})
