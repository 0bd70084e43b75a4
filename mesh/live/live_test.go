package live_test

import (
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/meshproof/meshproof/reports/record"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"

	"github.com/meshproof/meshproof/mesh/live"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/scenarios"
)

const scenario = `name: live-spec
seed: 11
services:
  backend:
    instances: 2
    response: {size: 32}
proxies:
  edge:
    routes_to: backend
    route: {retry_policy: {retry_on: 5xx, num_retries: 2}}
load: {target: edge, rate: 200/s, duration: 500ms}
faults:
  - {service: backend, instances: [1], abort: {status: 503, percent: 40}}
`

func parse(doc string) *scenarios.Scenario {
	GinkgoHelper()
	sc, err := scenarios.Parse([]byte(doc), "live-spec.yaml")
	Expect(err).NotTo(HaveOccurred())
	return sc
}

var _ = Describe("Run", func() {
	It("runs the topology and records the client, proxy and upstream views, then stops everything", func() {
		before := gleak.Goroutines()
		rec, err := live.Run(context.Background(), parse(scenario), nil, plan.Options{})
		Expect(err).NotTo(HaveOccurred())

		Expect(rec.Scenario).To(Equal("live-spec"))
		Expect(rec.Seed).To(BeEquivalentTo(11))
		Expect(rec.Samples).To(HaveLen(100))
		Expect(rec.Upstreams).To(HaveLen(2))
		Expect(rec.Upstreams[0].Service + "/0").To(Equal("backend/0"))
		Expect(rec.Upstreams[1].Instance).To(Equal(1))

		// The fault on backend/1 is seen upstream, retried by the proxy, and hidden from clients.
		aborts := rec.Upstreams[1].Statuses[503]
		Expect(aborts).To(BeNumerically(">", 0))
		Expect(rec.Upstreams[0].Statuses[503]).To(BeZero())
		st := rec.ProxyStats
		Expect(st["cluster.backend.upstream_rq_retry"]+st["cluster.backend.upstream_rq_retry_limit_exceeded"]+
			st["cluster.backend.upstream_rq_retry_overflow"]).To(Equal(aborts), "every 503 is retried, or is out of retries or of retry budget")
		var events uint64
		for _, e := range rec.Events {
			Expect(e.Service).To(Equal("backend"))
			Expect(e.Instance).To(Equal(1))
			Expect(e.Fault).To(Equal("faults[0]"))
			Expect(e.RequestID).To(HavePrefix("mp-"), "the load generator's request id reaches the upstream through the proxy")
			events++
		}
		Expect(events).To(Equal(aborts))
		s := reports.Summarize(rec)
		Expect(s.UpstreamReceived).To(Equal(s.Requests+s.Retries), "every attempt reaches an instance: the first try plus each retry")
		Expect(s.UpstreamAttempts).To(Equal(s.UpstreamReceived), "no attempt was lost before an instance")

		var attempts uint64
		for _, smp := range rec.Samples {
			Expect(smp.Attempts).To(BeNumerically(">=", 1), "the proxy reports the attempts of request %d", smp.Seq)
			attempts += uint64(smp.Attempts)
		}
		Expect(attempts).To(Equal(s.Requests + s.Retries))
		Expect(rec.Windows).To(Equal([]record.FaultWindow{{Name: "faults[0]", Service: "backend", Instances: []int{1}, Kind: "abort"}}))
		var retryEvents uint64
		for _, e := range rec.ProxyEvents {
			if e.Kind == record.ProxyRetry {
				Expect(e.Host).To(Equal("backend/1"), "only the faulty instance's answers are retried")
				Expect(e.Reason).To(Equal("503"))
				retryEvents++
			}
		}
		Expect(retryEvents).To(Equal(s.Retries))

		Eventually(gleak.Goroutines).ShouldNot(gleak.HaveLeaked(before), "every server and connection is closed")
	})

	It("keeps each proxy's access log, in Envoy's default format, in the access log directory", func() {
		dir := filepath.Join(GinkgoT().TempDir(), "access")
		rec, err := live.Run(context.Background(), parse(scenario), nil, plan.Options{AccessLogDir: dir})
		Expect(err).NotTo(HaveOccurred())
		b, err := os.ReadFile(filepath.Join(dir, "edge.log"))
		Expect(err).NotTo(HaveOccurred())
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		Expect(lines).To(HaveLen(len(rec.Samples)), "one line per request, written before the run returned")
		line := regexp.MustCompile(`^\[\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z\] "GET /\S* HTTP/1\.1" (200|503) (-|URX) 0 \d+ \d+ \d+ "-" "[^"]*" "mp-\d+" "127\.0\.0\.1:\d+" "127\.0\.0\.1:\d+"$`)
		var urx uint64
		for _, l := range lines {
			Expect(l).To(MatchRegexp(line.String()))
			if strings.Contains(l, " URX ") {
				urx++
			}
		}
		Expect(urx).To(Equal(rec.ProxyStats["cluster.backend.upstream_rq_retry_limit_exceeded"]), "URX on each request out of retries")
	})

	It("makes the same fault decisions for the same seed, and others for another seed", func() {
		decisions := func(seed *uint64) string {
			rec, err := live.Run(context.Background(), parse(scenario), seed, plan.Options{})
			Expect(err).NotTo(HaveOccurred())
			// The n-th request at backend/1 is aborted or not by (seed, instance, n) alone.
			aborted := map[uint64]bool{}
			for _, e := range rec.Events {
				aborted[e.Seq] = true
			}
			var fp strings.Builder
			for n := uint64(1); n <= 40; n++ {
				if aborted[n] {
					fp.WriteByte('x')
				} else {
					fp.WriteByte('.')
				}
			}
			return fp.String()
		}
		other := uint64(12345)
		first, second, third := decisions(nil), decisions(nil), decisions(&other)
		Expect(first).To(Equal(second))
		Expect(first).NotTo(Equal(third))
	})

	It("refuses container faults, which need the docker runner", func() {
		doc := scenario + "  - {service: backend, instances: [0], container: kill}\n"
		_, err := live.Run(context.Background(), parse(doc), nil, plan.Options{})
		Expect(err).To(MatchError(plan.ErrUnsupported))
		Expect(err).To(MatchError(`the embedded runner cannot do faults[1]: container fault "kill": container faults need the docker runner: meshproof run --runner docker`))
	})

	It("stops early and still returns the record when the context ends", func() {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		rec, err := live.Run(ctx, parse(scenario), nil, plan.Options{})
		Expect(err).To(MatchError(context.Canceled))
		Expect(rec).NotTo(BeNil())
	})
})

var _ = Describe("live progress", func() {
	It("reports while the load runs and once at its end, with the final counts", func() {
		var mu sync.Mutex
		var got []plan.Progress
		rec, err := live.Run(context.Background(), parse(scenario), nil, plan.Options{
			ProgressInterval: 100 * time.Millisecond,
			Progress:         func(p plan.Progress) { mu.Lock(); got = append(got, p); mu.Unlock() },
		})
		Expect(err).NotTo(HaveOccurred())
		mu.Lock()
		defer mu.Unlock()
		Expect(len(got)).To(BeNumerically(">=", 2))
		last := got[len(got)-1]
		s := reports.Summarize(rec)
		Expect(last.Completed).To(Equal(s.Requests))
		Expect(last.Errors).To(Equal(s.Errors))
		Expect(last.Retries).To(Equal(s.Retries))
		Expect(last.P99).To(BeNumerically(">", 0))
		for i := 1; i < len(got); i++ {
			Expect(got[i].Completed).To(BeNumerically(">=", got[i-1].Completed), "counts only grow")
		}
		// Regression (issue #18): a tick at or after the planned end and the final report both went
		// out, so a log showed the last line twice. Only the final report is past the planned end.
		for _, p := range got[:len(got)-1] {
			Expect(p.Elapsed).To(BeNumerically("<", p.Planned))
		}
	})
})
