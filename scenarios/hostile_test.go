package scenarios_test

import (
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/scenarios"
)

// Inputs that once crashed or exhausted the process (issue #18): each must now be refused with an
// error that names the file and the line, without panicking.
var _ = Describe("hostile scenario files", func() {
	// parseErr parses data and returns its single error, failing the spec on a panic or a success.
	parseErr := func(data string) *scenarios.Error {
		GinkgoHelper()
		var err error
		Expect(func() { _, err = scenarios.Parse([]byte(data), "hostile.yaml") }).NotTo(Panic())
		Expect(err).To(HaveOccurred())
		errs := errorsOf(err)
		Expect(errs).To(HaveLen(1), "errors: %v", err)
		Expect(errs[0].File).To(Equal("hostile.yaml"))
		return errs[0]
	}

	It("refuses a non-specific YAML tag, which panicked the YAML decoder (checks:\\n  ! 0)", func() {
		e := parseErr("checks:\n  ! 0\n")
		Expect(e.Line).To(Equal(2))
		Expect(e.Msg).To(ContainSubstring(`YAML tag "!" is not supported`))
	})

	It("names the first of several unknown fields, every time (FuzzParse: the decoder picked one from a Go map)", func() {
		for range 20 {
			e := parseErr("name: x\nzeta: 1\nalpha: {b: 2}\n")
			Expect(e.Line).To(Equal(2))
			Expect(e.Path).To(Equal("zeta"))
			Expect(e.Msg).To(HavePrefix(`unknown field "zeta"; accepted here: name, description`))
		}
	})

	It("puts a decoding error it cannot place at a value at the document's start, never at line 0 (FuzzParse)", func() {
		e := parseErr("faults:\n  - latency: {fixed:00A0}")
		Expect(e.Line).To(Equal(1))
		Expect(e.Msg).To(ContainSubstring(`unknown unit "A" in duration "00A0"`))
	})

	It("refuses every other YAML tag at its line", func() {
		e := parseErr(replace("    instances: 3", "    instances: !!int 3"))
		Expect(e.Line).To(Equal(5))
		Expect(e.Msg).To(ContainSubstring(`"!!int"`))
	})

	It("refuses flow collections nested past the depth limit before parsing them (80 KB of '[' took 2.5 GB)", func() {
		e := parseErr("checks: " + strings.Repeat("[", 80_000))
		Expect(e.Line).To(Equal(1))
		Expect(e.Msg).To(ContainSubstring("nested more than 64 levels deep"))
	})

	It("refuses block mappings nested past the depth limit, at the line where the limit is crossed", func() {
		var b strings.Builder
		b.WriteString("name: deep\nservices:\n")
		for i := range 70 {
			b.WriteString(strings.Repeat(" ", i+1) + "k:\n")
		}
		e := parseErr(b.String())
		Expect(e.Line).To(BeNumerically(">", 60))
		Expect(e.Msg).To(ContainSubstring("nested more than 64 levels deep"))
	})

	It("refuses a file larger than the size limit without parsing it", func() {
		e := parseErr("name: x\n" + strings.Repeat("#", config.MaxYAMLBytes))
		Expect(e.Msg).To(ContainSubstring("at most 8388608 (8 MiB)"))
	})

	It("refuses a binary file by the offset of its first non-text byte, without echoing it", func() {
		e := parseErr("name: x\nseed: \x00\x01\x02\xff")
		Expect(e.Line).To(Equal(2))
		Expect(e.Msg).To(ContainSubstring("not a UTF-8 text file (byte 0x00 at offset 14)"))
	})

	It("refuses more aliases than the limit, so a billion-laughs file cannot expand", func() {
		var b strings.Builder
		b.WriteString("x: &a [1]\nchecks:\n")
		for range config.MaxYAMLAliases + 1 {
			b.WriteString("  - *a\n")
		}
		e := parseErr(b.String())
		Expect(e.Msg).To(ContainSubstring("more than 1000 aliases"))
	})

	It("bounds a response size at 1 GiB (size: 100000000000 ran the process out of memory)", func() {
		e := parseErr(replace("response: {latency: 2ms, size: 64}", "response: {latency: 2ms, size: 100000000000}"))
		Expect(e.Line).To(Equal(6))
		Expect(e.Path).To(Equal("services.backend.response.size"))
		Expect(e.Msg).To(ContainSubstring("0 to 1073741824 (1 GiB)"))
	})

	It("bounds a size fault's bytes at 1 GiB", func() {
		_, err := scenarios.Parse([]byte(replace("abort: {status: 503, percent: 50}", "size: {bytes: 2000000000}")), "hostile.yaml")
		Expect(err).To(MatchError(ContainSubstring("faults[0].size.bytes")))
		Expect(err).To(MatchError(ContainSubstring("too large")))
	})

	It("accepts a response of exactly the largest size", func() {
		_, err := scenarios.Parse([]byte(replace("size: 64}", "size: 1073741824}")), "ok.yaml")
		Expect(err).NotTo(HaveOccurred())
		Expect(faults.MaxBodyBytes).To(Equal(1073741824))
	})
})

// Load sizes are bounded at validation, so validate and run agree (issue #18 defect 5).
var _ = Describe("load limits", func() {
	errs := func(data string) []*scenarios.Error {
		GinkgoHelper()
		_, err := scenarios.Parse([]byte(data), "load.yaml")
		Expect(err).To(HaveOccurred())
		return errorsOf(err)
	}

	It("refuses a rate above the largest (10000000/s overran its duration at 3 GB)", func() {
		es := errs(replace("rate: 100/s", "rate: 10000000/s"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("load.rate"))
		Expect(es[0].Msg).To(Equal("1e+07/s is above the largest rate, 200000/s"))
	})

	It("refuses 1e308/s at validation, not at run time", func() {
		es := errs(replace("rate: 100/s", "rate: 1e308/s"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("load.rate"))
		Expect(es[0].Msg).To(Equal("1e+308/s is above the largest rate, 200000/s"))
	})

	It("refuses a load longer than 24h", func() {
		es := errs(replace("duration: 2s", "duration: 100h"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Msg).To(Equal("lasts 100h0m0s, longer than the longest load, 24h0m0s"))
	})

	It("refuses phases that plan more requests than the limit", func() {
		es := errs(replace("  rate: 100/s\n  duration: 2s\n", "  phases:\n    - {name: a, duration: 20h, rate: 150/s}\n    - {name: b, duration: 1s, ramp: {from: 1/s, to: 200000/s}}\n"))
		Expect(es).To(HaveLen(1))
		// 150/s × 72,000 s + (1 + 200,000)/2 /s × 1 s = 10,800,000 + 100,000.5 = 10,900,000.5
		Expect(es[0].Msg).To(HavePrefix("plans 1.09e+07 requests, more than 10000000"))
	})

	It("refuses a ramp that ends above the largest rate", func() {
		es := errs(replace("  rate: 100/s\n  duration: 2s\n", "  phases:\n    - {name: b, duration: 2s, ramp: {from: 1/s, to: 300000/s}}\n"))
		Expect(es).To(HaveLen(1))
		Expect(es[0].Path).To(Equal("load.phases[0].ramp.to"))
	})

	It("accepts the largest rate for a load within the planned limit", func() {
		_, err := scenarios.Parse([]byte(replace("rate: 100/s", "rate: 200000/s")), "load.yaml")
		Expect(err).NotTo(HaveOccurred())
	})
})

// Regression (issue #12): the scenario floored duration/every while the generator sends a burst at
// each instant 0, every, 2·every, … before the end, so Record.TargetRate understated bursts.
var _ = Describe("planned bursts", func() {
	It("counts 4 bursts in 10s every 3s (0, 3, 6, 9 s), as the generator sends them", func() {
		p := scenarios.LoadPhase{Name: "b", Burst: &scenarios.BurstSpec{Requests: 5}}
		p.Duration.Duration, p.Burst.Every.Duration = 10*time.Second, 3*time.Second
		Expect(p.Planned()).To(Equal(20.0))
		p.Duration.Duration = 9 * time.Second // 0, 3, 6: the instant at 9 s is the end, not in the phase
		Expect(p.Planned()).To(Equal(15.0))
	})
})

// Regression (issue #18 defect 9): a wrong type printed "cannot unmarshal string into Go struct field
// Scenario.Services of type int", naming Go types and not the field.
var _ = Describe("type mismatches", func() {
	DescribeTable("name the field, what the file holds and what is expected",
		func(old, new, path, msg string) {
			_, err := scenarios.Parse([]byte(replace(old, new)), "types.yaml")
			es := errorsOf(err)
			Expect(es).To(HaveLen(1), "errors: %v", err)
			Expect(es[0].Path).To(Equal(path))
			Expect(es[0].Msg).To(Equal(msg))
			Expect(es[0].Line).To(BeNumerically(">", 0))
		},
		Entry("text for a number", "instances: 3", "instances: many", "services.backend.instances", `"many" (text) where a whole number is expected`),
		Entry("a list for a number", "size: 64}", "size: [64]}", "services.backend.response.size", "a list where a whole number is expected"),
		Entry("a mapping for text", "name: demo", "name: {a: 1}", "name", "a mapping where text is expected"),
	)
})

// Regression (found by FuzzParse in CI, testdata/fuzz/FuzzParse/eecad26fc06f5bcd): an empty phase
// ("- " under phases) panicked the load limits' duration sum.
var _ = Describe("an empty load phase", func() {
	It("is an error at its line, not a panic", func() {
		var err error
		Expect(func() { _, err = scenarios.Parse([]byte("load: \n  phases:\n    -"), "empty-phase.yaml") }).NotTo(Panic())
		Expect(err).To(MatchError(ContainSubstring("load.phases[0]: a phase needs a name, a duration and one of rate, ramp, burst")))
	})
})
