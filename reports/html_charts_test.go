package reports_test

// Issue #13, "What a reader needs", the HTML items: expected values worked out by hand.

import (
	"bytes"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("report.html charts (#13)", func() {
	DescribeTable("log axes label every decade and values between",
		func(lo, hi float64, labels []string, ticks int) {
			var got []string
			all := reports.LogTicksForTest.Ticks(lo, hi)
			for _, t := range all {
				if t.Label != "" {
					got = append(got, t.Label)
				}
			}
			Expect(got).To(Equal(labels))
			Expect(all).To(HaveLen(ticks))
		},
		// 1.5…65 ms, 1.6 decades: 1, 2, 5 of each decade; ticks at 2…9 and 10…60: 8 + 6.
		Entry("under two decades", 1.5, 65.0, []string{"2", "5", "10", "20", "50"}, 14),
		// 3.2…8.7, under a decade: every multiple, 4…8.
		Entry("under a decade", 3.2, 8.7, []string{"4", "5", "6", "7", "8"}, 5),
		// 0.05…20000, 5.6 decades: 1 and 3 of each; ticks 0.05…0.09 (5), then 9 per decade for 0.1…9000
		// (5 decades: 45), then 10000 and 20000: 52.
		Entry("over three decades", 0.05, 20000.0, []string{"0.1", "0.3", "1", "3", "10", "30", "100", "300", "1000", "3000", "10000"}, 52),
		// 1…1e8, 8 decades: the decades only; 9 per decade for 1…9e7 (72) and 1e8: 73.
		Entry("over six decades", 1.0, 1e8, []string{"1", "10", "100", "1000", "10000", "100000", "1000000", "10000000", "100000000"}, 73),
		// 3.2…3.9 holds no multiple: its ends.
		Entry("between two multiples", 3.2, 3.9, []string{"3.2", "3.9"}, 2),
	)

	// 4s at 10/s in two load phases, warm [0, 1s) and steady [1s, 4s): every 4th request a fast 503
	// (1ms, a breaker overflow), the others 200 in 20ms. b/1 ejected at 1.5s and never un-ejected.
	rec := func() *record.Record {
		r := &record.Record{Scenario: "html", TargetRate: 10, Duration: 4 * time.Second,
			Phases: []record.LoadPhase{{Name: "warm", End: time.Second}, {Name: "steady", Start: time.Second, End: 4 * time.Second}}}
		r.Samples = steady(40, 10, func(i int) time.Duration {
			if i%4 == 3 {
				return ms
			}
			return 20 * ms
		})
		for i := 3; i < 40; i += 4 {
			r.Samples[i].Status = 503
		}
		r.Windows = []record.FaultWindow{{Name: "faults[0]", Service: "b", Instances: []int{1}, Start: time.Second, End: 2 * time.Second, Kind: "abort"}}
		r.ProxyEvents = []record.ProxyEvent{{At: 1200 * ms, Kind: record.ProxyRetry, Cluster: "b"},
			{At: 1500 * ms, Kind: record.ProxyEjected, Cluster: "b", Host: "b/1", Reason: "consecutive_5xx"}}
		return r
	}
	html := func(r *record.Record) string {
		var b bytes.Buffer
		Expect(reports.WriteHTML(&b, reports.NewReport(r, nil), r)).To(Succeed())
		return b.String()
	}

	It("draws intended vs sent with the load phases, latency by outcome, and retries titled in their unit", func() {
		page := html(rec())
		Expect(page).To(ContainSubstring(`id="chart-rate"`))
		Expect(page).To(ContainSubstring("Requests intended and sent per second (100ms buckets), target 10/s"))
		Expect(page).To(ContainSubstring("load phase start"))
		Expect(page).To(ContainSubstring(">steady<"))
		// 10 requests of 40 are 503 (every 4th), 30 succeed: the histogram's legend and the table.
		Expect(page).To(ContainSubstring("success (2xx, 3xx): 30"))
		Expect(page).To(ContainSubstring("5xx: 10"))
		Expect(page).To(ContainSubstring(`<tr><td>5xx</td><td class="num">10</td><td class="num">1ms</td>`))
		Expect(page).To(ContainSubstring(`<tr><td>success (2xx, 3xx)</td><td class="num">30</td><td class="num">20ms</td>`))
		// The bars are retries/s (a count over a 100ms bucket ÷ 0.1s): the title says per second.
		Expect(page).To(ContainSubstring("Retries per second (100ms buckets), from the proxy&#39;s retry events"))
		Expect(page).To(ContainSubstring(`id="chart-masked"`))
	})

	It("shows an open ejection's colour in the legend, only when there is one", func() {
		Expect(html(rec())).To(ContainSubstring("ejected until the run ended (never un-ejected)"))
		r := rec()
		r.ProxyEvents = append(r.ProxyEvents, record.ProxyEvent{At: 2500 * ms, Kind: record.ProxyUnejected, Cluster: "b", Host: "b/1"})
		Expect(html(r)).NotTo(ContainSubstring("never un-ejected"))
	})

	It("says 'no ejection' wherever no host was ejected", func() {
		r := rec()
		r.ProxyEvents = r.ProxyEvents[:1] // the retry only
		page := html(r)
		Expect(page).To(ContainSubstring("<tr><th>time to first ejection</th><td>no ejection</td></tr>"))
		// The key numbers' time to first ejection and faults[0]'s first ejection.
		Expect(strings.Count(page, "<td>no ejection</td>")).To(Equal(2))
		Expect(page).To(ContainSubstring("no ejection: the proxy ejected no host."))
		Expect(page).NotTo(ContainSubstring("No host was ejected"))
	})
})
