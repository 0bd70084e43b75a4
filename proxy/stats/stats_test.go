package stats_test

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strings"
	"sync"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/stats"
)

var _ = Describe("Store", func() {
	var s *stats.Store
	BeforeEach(func() { s = stats.NewStore() })

	text := func(filter *regexp.Regexp) string {
		var b bytes.Buffer
		Expect(stats.WriteText(&b, s.Snapshot(), s.Histograms(), filter)).To(Succeed())
		return b.String()
	}

	It("creates stats on first use and returns the same one after", func() {
		s.Counter("cluster.a.upstream_rq_total").Inc()
		s.Counter("cluster.a.upstream_rq_total").Add(2)
		s.Gauge("cluster.a.upstream_rq_active").Set(5)
		s.Gauge("cluster.a.upstream_rq_active").Dec()
		Expect(s.Values()).To(Equal(map[string]uint64{"cluster.a.upstream_rq_total": 3, "cluster.a.upstream_rq_active": 4}))
	})

	It("counts exactly under concurrent use", func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 1000 {
					s.Counter("c").Inc()
					s.Histogram("h").Record(time.Millisecond)
				}
			}()
		}
		wg.Wait()
		Expect(s.Values()["c"]).To(BeEquivalentTo(8000))
		Expect(s.Histograms()[0].Count).To(BeEquivalentTo(8000))
	})

	It("writes Envoy's text format, sorted, with filter, counters kept after a gauge reset", func() {
		s.Counter("b.x").Inc()
		s.Gauge("a.y").Set(7)
		Expect(text(nil)).To(Equal("a.y: 7\nb.x: 1\n"))
		Expect(text(regexp.MustCompile(`^b\.`))).To(Equal("b.x: 1\n"))
		s.ResetCounters()
		Expect(text(nil)).To(Equal("a.y: 7\nb.x: 0\n"))
	})

	It("prints histograms with P0…P100 as (interval,cumulative), nan before the first flush", func() {
		h := s.Histogram("cluster.a.upstream_rq_time")
		for i := 1; i <= 100; i++ {
			h.Record(time.Duration(i) * time.Millisecond)
		}
		line := strings.TrimSpace(text(nil))
		Expect(line).To(HavePrefix("cluster.a.upstream_rq_time: P0(nan,1) P25(nan,25) P50(nan,50) P75(nan,75) P90(nan,90) P95(nan,95) P99(nan,99) P99.5(nan,100) P99.9(nan,100) P100(nan,100)"))
		s.FlushHistograms()
		Expect(text(nil)).To(ContainSubstring("P50(50,50)"))
		s.FlushHistograms()
		Expect(text(nil)).To(ContainSubstring("P50(nan,50)"), "an empty interval has no values")
		Expect(text(regexp.MustCompile("nothing"))).To(BeEmpty())
	})

	// Regression (issue #17's reload bench): a snapshot computed the quantiles and buckets under the
	// histogram's lock, so every /stats call stalled the requests recording into it meanwhile.
	It("lets Record go on while a snapshot is computed, and the snapshot is of the copy it took", func() {
		h := s.Histogram("cluster.a.upstream_rq_time")
		h.Record(time.Millisecond)
		copied, release := make(chan struct{}), make(chan struct{})
		stats.OnSnapshotCopied(h, func() { close(copied); <-release })
		done := make(chan []stats.HistogramSnapshot, 1)
		go func() { done <- s.Histograms() }()
		Eventually(copied).Should(BeClosed())
		recorded := make(chan struct{})
		go func() { h.Record(2 * time.Millisecond); close(recorded) }()
		Eventually(recorded).Should(BeClosed(), "Record waited for the snapshot")
		close(release)
		var got []stats.HistogramSnapshot
		Eventually(done).Should(Receive(&got))
		Expect(got).To(HaveLen(1))
		Expect(got[0].Count).To(BeEquivalentTo(1))
		Expect(got[0].Buckets[1]).To(Equal(stats.Bucket{UpperMs: 1, Count: 1}))
		stats.OnSnapshotCopied(h, nil)
		Expect(s.Histograms()[0].Count).To(BeEquivalentTo(2))
	})

	It("computes only the histograms a filter keeps, with the same buckets and sum as all of them", func() {
		for i := 1; i <= 100; i++ {
			s.Histogram("cluster.a.upstream_rq_time").Record(time.Duration(i) * time.Millisecond)
			s.Histogram("cluster.b.upstream_rq_time").Record(time.Duration(i) * time.Second)
		}
		got := s.HistogramsMatching(regexp.MustCompile(`^cluster\.a\.`).MatchString)
		Expect(got).To(HaveLen(1))
		all := s.Histograms()
		Expect(all).To(HaveLen(2))
		Expect([]any{got[0].Name, got[0].Count, got[0].SumMs, got[0].Cumul, got[0].Buckets}).To(
			Equal([]any{all[0].Name, all[0].Count, all[0].SumMs, all[0].Cumul, all[0].Buckets}))
		// A bucket counts the values whose HDR bucket ends at or below its bound (50 ms ends just above).
		Expect(got[0].Buckets).To(ContainElements(stats.Bucket{UpperMs: 50, Count: 49}, stats.Bucket{UpperMs: 250, Count: 100},
			stats.Bucket{UpperMs: 3600000, Count: 100}))
		Expect(all[1].Buckets).To(ContainElements(stats.Bucket{UpperMs: 1000, Count: 0}, stats.Bucket{UpperMs: 60000, Count: 59}))
		Expect(got[0].SumMs).To(BeNumerically("~", 5050, 5))
		Expect(s.HistogramsMatching(func(string) bool { return false })).To(BeEmpty())
	})

	It("says so for a histogram without values", func() {
		s.Histogram("cluster.a.upstream_cx_connect_ms")
		Expect(text(nil)).To(Equal("cluster.a.upstream_cx_connect_ms: No recorded values\n"))
	})

	It("writes the JSON shape of /stats?format=json with histograms", func() {
		s.Counter("cluster.a.upstream_rq_retry").Add(3)
		s.Histogram("cluster.a.upstream_rq_time").Record(2 * time.Millisecond)
		var b bytes.Buffer
		Expect(stats.WriteJSON(&b, s.Snapshot(), s.Histograms(), nil)).To(Succeed())
		var got struct {
			Stats []struct {
				Name       string `json:"name"`
				Value      int64  `json:"value"`
				Histograms *struct {
					Supported []float64 `json:"supported_quantiles"`
					Computed  []struct {
						Name   string `json:"name"`
						Values []struct {
							Interval   *float64 `json:"interval"`
							Cumulative *float64 `json:"cumulative"`
						} `json:"values"`
					} `json:"computed_quantiles"`
				} `json:"histograms"`
			} `json:"stats"`
		}
		Expect(json.Unmarshal(b.Bytes(), &got)).To(Succeed())
		Expect(got.Stats).To(HaveLen(2))
		Expect(got.Stats[0].Name).To(Equal("cluster.a.upstream_rq_retry"))
		Expect(got.Stats[0].Value).To(BeEquivalentTo(3))
		hs := got.Stats[1].Histograms
		Expect(hs.Supported).To(Equal(stats.Quantiles))
		Expect(hs.Computed[0].Name).To(Equal("cluster.a.upstream_rq_time"))
		Expect(hs.Computed[0].Values[2].Interval).To(BeNil())
		Expect(*hs.Computed[0].Values[2].Cumulative).To(BeNumerically("==", 2))
	})

	It("writes Prometheus families with labels for cluster and connection-manager names", func() {
		s.Counter("cluster.a.upstream_rq_retry").Inc()
		s.Counter("http.ingress.downstream_rq_total").Add(2)
		s.Counter("cluster.b.upstream_rq_retry").Add(4)
		s.Gauge("server.live").Set(1)
		s.Histogram("cluster.a.upstream_rq_time").Record(3 * time.Millisecond)
		var b bytes.Buffer
		Expect(stats.WritePrometheus(&b, s.Snapshot(), s.Histograms())).To(Succeed())
		out := b.String()
		Expect(strings.Count(out, "# TYPE envoy_cluster_upstream_rq_retry counter\n")).To(Equal(1), "one TYPE line per family")
		Expect(out).To(ContainSubstring(`envoy_cluster_upstream_rq_retry{envoy_cluster_name="a"} 1`))
		Expect(out).To(ContainSubstring(`envoy_cluster_upstream_rq_retry{envoy_cluster_name="b"} 4`))
		Expect(out).To(ContainSubstring(`envoy_http_downstream_rq_total{envoy_http_conn_manager_prefix="ingress"} 2`))
		Expect(out).To(ContainSubstring("# TYPE envoy_server_live gauge\nenvoy_server_live 1\n"))
		Expect(out).To(ContainSubstring("# TYPE envoy_cluster_upstream_rq_time histogram\n"))
		Expect(out).To(ContainSubstring(`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="1"} 0`))
		Expect(out).To(ContainSubstring(`envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="a",le="5"} 1`))
		Expect(out).To(ContainSubstring(`envoy_cluster_upstream_rq_time_count{envoy_cluster_name="a"} 1`))
	})

	// Envoy's default tag extractors (TagNameValues, source/common/config/well_known_names.cc) as
	// /stats/prometheus applies them (source/server/admin/prometheus_stats.cc).
	DescribeTable("turns stat names into Envoy's Prometheus names and labels",
		func(name, metric, labels string) {
			m, l := stats.PromName(name)
			Expect(m).To(Equal(metric))
			Expect(l).To(Equal(labels))
		},
		Entry(nil, "cluster.backend.upstream_rq_503", "envoy_cluster_upstream_rq", `envoy_response_code="503",envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.upstream_rq_5xx", "envoy_cluster_upstream_rq_xx", `envoy_response_code_class="5",envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.retry.upstream_rq_503", "envoy_cluster_retry_upstream_rq", `envoy_response_code="503",envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.retry.upstream_rq_5xx", "envoy_cluster_retry_upstream_rq_xx", `envoy_response_code_class="5",envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.upstream_rq_retry", "envoy_cluster_upstream_rq_retry", `envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.upstream_rq_time", "envoy_cluster_upstream_rq_time", `envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.upstream_rq_completed", "envoy_cluster_upstream_rq_completed", `envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.outlier_detection.ejections_active", "envoy_cluster_outlier_detection_ejections_active", `envoy_cluster_name="backend"`),
		Entry(nil, "cluster.backend.circuit_breakers.default.rq_open", "envoy_cluster_circuit_breakers_default_rq_open", `envoy_cluster_name="backend"`),
		Entry(nil, "http.ingress.downstream_rq_2xx", "envoy_http_downstream_rq_xx", `envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress"`),
		Entry(nil, "http.ingress.downstream_rq_total", "envoy_http_downstream_rq_total", `envoy_http_conn_manager_prefix="ingress"`),
		Entry("http.*.fault.$.** needs a token after the downstream cluster", "http.ingress.fault.aborts_injected", "envoy_http_fault_aborts_injected", `envoy_http_conn_manager_prefix="ingress"`),
		Entry(nil, "listener.127.0.0.1_10000.downstream_cx_total", "envoy_listener_downstream_cx_total", `envoy_listener_address="127.0.0.1_10000"`),
		Entry(nil, "listener.127.0.0.1_10000.http.ingress.downstream_rq_2xx", "envoy_listener_http_downstream_rq_xx",
			`envoy_response_code_class="2",envoy_http_conn_manager_prefix="ingress",envoy_listener_address="127.0.0.1_10000"`),
		Entry("never admin as a listener address", "listener.admin.downstream_cx_total", "envoy_listener_admin_downstream_cx_total", ""),
		Entry("no extractor for connection_limit", "connection_limit.ingress.active_connections", "envoy_connection_limit_ingress_active_connections", ""),
		Entry(nil, "server.live", "envoy_server_live", ""),
		Entry(nil, "vhost.api.vcluster.writes.upstream_rq_503", "envoy_vhost_vcluster_upstream_rq",
			`envoy_response_code="503",envoy_virtual_cluster="writes",envoy_virtual_host="api"`),
		Entry(nil, "vhost.api.vcluster.other.upstream_rq_time", "envoy_vhost_vcluster_upstream_rq_time", `envoy_virtual_cluster="other",envoy_virtual_host="api"`),
		Entry("a cluster name is one token", "cluster.upstream_rq_total", "envoy_cluster_upstream_rq_total", ""),
	)
})
