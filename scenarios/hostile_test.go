package scenarios_test

import (
	"strings"

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
