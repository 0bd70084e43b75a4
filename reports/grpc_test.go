package reports_test

import (
	"bytes"
	"os"
	"path/filepath"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/reports"
	"github.com/meshproof/meshproof/reports/checks"
	"github.com/meshproof/meshproof/reports/record"
)

var _ = Describe("gRPC statuses", func() {
	// 10 gRPC calls: 6 OK, 3 UNAVAILABLE in trailers (HTTP 200), 1 client deadline (DEADLINE_EXCEEDED).
	grpcRecord := func() *record.Record {
		rec := &record.Record{Scenario: "grpc", Duration: time.Second, TargetRate: 10}
		for i := range 10 {
			s := record.Sample{Seq: uint64(i + 1), Intended: time.Duration(i) * 100 * time.Millisecond, Status: 200, GRPC: true}
			s.Sent, s.Latency = s.Intended, time.Millisecond
			switch {
			case i < 6:
			case i < 9:
				s.GRPCStatus = 14
			default:
				s.Status, s.Error, s.GRPCStatus = 0, record.ErrTimeout, 4
			}
			rec.Samples = append(rec.Samples, s)
		}
		return rec
	}

	It("counts an HTTP 200 that ends with grpc-status ≠ 0 as a failure", func() {
		Expect(record.Sample{Status: 200, GRPC: true, GRPCStatus: 14}.OK()).To(BeFalse())
		Expect(record.Sample{Status: 200, GRPC: true}.OK()).To(BeTrue())
		Expect(record.Sample{Status: 200, GRPCStatus: 14}.OK()).To(BeTrue(), "GRPCStatus means nothing without GRPC")
		s := reports.Summarize(grpcRecord())
		Expect(s.Successes).To(BeEquivalentTo(6))
		Expect(s.GRPCStatuses).To(Equal(map[int]uint64{0: 6, 14: 3, 4: 1}))
		Expect(s.StatusCodes).To(Equal(map[int]uint64{200: 9}))
	})

	It("keeps GRPCStatuses empty without gRPC calls", func() {
		s := reports.Summarize(&record.Record{Samples: []record.Sample{{Seq: 1, Status: 200}}})
		Expect(s.GRPCStatuses).To(BeEmpty())
	})

	DescribeTable("parses grpc_status(CODE) by number or name, to one canonical name",
		func(expr, metric string) {
			c, err := checks.Parse(expr)
			Expect(err).NotTo(HaveOccurred())
			Expect(c.Metric).To(Equal(metric))
		},
		Entry(nil, "grpc_status(14) <= 3", "grpc_status(UNAVAILABLE)"),
		Entry(nil, "grpc_status(unavailable) <= 3", "grpc_status(UNAVAILABLE)"),
		Entry(nil, "GRPC_STATUS( Deadline_Exceeded ) == 0", "grpc_status(DEADLINE_EXCEEDED)"),
		Entry(nil, "during fault: grpc_status(OK) >= 1", "grpc_status(OK)"),
	)

	It("refuses an unknown gRPC status, listing the names", func() {
		_, err := checks.Parse("grpc_status(17) == 0")
		Expect(err).To(MatchError(ContainSubstring(`bad gRPC status "17" in grpc_status(17): want a code 0..16 or its name`)))
		Expect(err).To(MatchError(ContainSubstring("UNAVAILABLE")))
	})

	It("judges grpc_status checks over the whole run and a phase", func() {
		rec := grpcRecord()
		rec.Phases = []record.LoadPhase{{Name: "early", Start: 0, End: 500 * time.Millisecond}}
		var cs []checks.Check
		for _, e := range []string{"grpc_status(UNAVAILABLE) == 3", "grpc_status(DEADLINE_EXCEEDED) == 1", "grpc_status(0) >= 7",
			"during phase early: grpc_status(OK) == 5"} {
			c, err := checks.Parse(e)
			Expect(err).NotTo(HaveOccurred())
			cs = append(cs, c)
		}
		v := reports.EvaluateRun(cs, rec)
		Expect(v[0].Passed).To(BeTrue(), v[0].Observed)
		Expect(v[1].Passed).To(BeTrue(), v[1].Observed)
		Expect(v[2].Passed).To(BeFalse(), "6 OK, not 7")
		Expect(v[3].Passed).To(BeTrue(), v[3].Observed)
	})

	It("shows the breakdown in the terminal, summary.md, report.html and report.json, and reads it back", func() {
		rec := grpcRecord()
		r := reports.NewReport(rec, nil)
		var term, md, html bytes.Buffer
		Expect(reports.WriteHTML(&html, r, rec)).To(Succeed())
		Expect(html.String()).To(ContainSubstring("<tr><th>gRPC statuses</th><td>OK: 6, DEADLINE_EXCEEDED: 1, UNAVAILABLE: 3</td></tr>"))
		Expect(reports.WriteTerminal(&term, r)).To(Succeed())
		Expect(term.String()).To(ContainSubstring("OK: 6, DEADLINE_EXCEEDED: 1, UNAVAILABLE: 3"))
		Expect(reports.WriteMarkdown(&md, r)).To(Succeed())
		Expect(md.String()).To(ContainSubstring("| gRPC statuses | OK: 6, DEADLINE_EXCEEDED: 1, UNAVAILABLE: 3 |"))
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, r)).To(Succeed())
		raw, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).To(ContainSubstring(`"grpc_statuses": {`))
		back, err := reports.ReadReport(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(back.Summary.GRPCStatuses).To(Equal(map[int]uint64{0: 6, 4: 1, 14: 3}))
	})

	It("leaves grpc_statuses out of report.json for an HTTP run", func() {
		r := reports.NewReport(&record.Record{Samples: []record.Sample{{Seq: 1, Status: 200}}, Duration: time.Second}, nil)
		path := filepath.Join(GinkgoT().TempDir(), "report.json")
		Expect(reports.WriteJSON(path, r)).To(Succeed())
		raw, err := os.ReadFile(path)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(raw)).NotTo(ContainSubstring("grpc_statuses"))
	})
})
