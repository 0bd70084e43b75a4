package scenarios_test

import (
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/scenarios"
)

// The fault models' Validate errors carry their field; the scenario places each at the line and
// column of that field in the file, without reading the message (issue #12).
var _ = Describe("fault model errors, placed by their field", func() {
	const base = `name: fields
services: {backend: {instances: 2}}
proxies: {edge: {routes_to: backend}}
load: {target: edge, rate: 10/s, duration: 5s}
faults:
  - service: backend
    latency:
      fixed: 10ms
      pareto:
        scale: 1ms
        shape: 2
  - service: backend
    match:
      path_regex: "("
    hang: {}
  - service: backend
    at: -1s
    tcp:
      toxics:
        - type: latency
        - type: bandwidth
          rate: 0
`
	type want struct {
		line, column int
		path, msg    string
	}
	DescribeTable("at file:line:col of the field",
		func(old, new string, w want) {
			doc := base
			if old != "" {
				Expect(doc).To(ContainSubstring(old))
				doc = strings.Replace(doc, old, new, 1)
			}
			_, err := scenarios.Parse([]byte(doc), "f.yaml")
			Expect(err).To(HaveOccurred())
			Expect(errorsOf(err)).To(ContainElement(And(
				HaveField("File", "f.yaml"), HaveField("Line", w.line), HaveField("Column", w.column),
				HaveField("Path", w.path), HaveField("Msg", w.msg))), err.Error())
		},
		Entry("several latency distributions: at the latency, naming them", "", "",
			want{7, 5, "faults[0].latency", "{fixed,uniform,normal,lognormal,pareto}: several set, want at most one"}),
		Entry("a regex that does not compile: at match.path_regex", "", "",
			want{14, 19, "faults[1].match.path_regex", "\"(\" does not compile: error parsing regexp: missing closing ): `^(?:()$`"}),
		Entry("a negative start: at the key the file uses, at", "", "",
			want{17, 9, "faults[2].at", "-1s is negative, want >= 0"}),
		Entry("a toxic's field: at tcp.toxics[i].rate", "", "",
			want{22, 17, "faults[2].tcp.toxics[1].rate", "0 is not positive, want > 0 KB/s"}),
		Entry("a kind's field: at abort.grpc_status", "    hang: {}\n", "    abort:\n      grpc_status: 20\n",
			want{16, 20, "faults[1].abort.grpc_status", "20 is out of range, want 1..16"}),
		Entry("a rule without a kind: at the rule, naming the kinds", "    match:\n      path_regex: \"(\"\n    hang: {}\n", "",
			want{12, 5, "faults[1]", "{latency,abort,reset,hang,slow_body,close_after,size,h2,refuse}: none set, want at least one"}),
	)
})

var _ = Describe("an error about a block mapping", func() {
	It("points at its key, not at the colon after its first key", func() {
		_, err := scenarios.Parse([]byte(`name: m
services: {backend: {}}
proxies: {edge: {routes_to: backend}}
load: {target: edge, rate: 10/s, duration: 5s}
faults:
  - service: backend
    h2:
      percent: 10
`), "m.yaml")
		Expect(err).To(MatchError("m.yaml:7:5: faults[0].h2: want exactly one of rst_stream and goaway"))
	})
})
