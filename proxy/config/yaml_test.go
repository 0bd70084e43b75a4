package config_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

// Bootstraps arrive from many hands; inputs that once panicked the YAML library or took gigabytes are
// refused with a positioned error (issue #18).
var _ = Describe("ParseYAML limits on a bootstrap", func() {
	var good string

	BeforeEach(func() {
		data, err := os.ReadFile(filepath.Join("..", "testdata", "bootstrap.yaml"))
		Expect(err).NotTo(HaveOccurred())
		good = string(data)
	})

	// only returns the single *config.Error inside err.
	only := func(err error) *config.Error {
		GinkgoHelper()
		Expect(err).To(HaveOccurred())
		var joined interface{ Unwrap() []error }
		Expect(errors.As(err, &joined)).To(BeFalse(), "want one error, got %v", err)
		var e *config.Error
		Expect(errors.As(err, &e)).To(BeTrue())
		Expect(e.File).To(Equal("b.yaml"))
		return e
	}

	parse := func(data string) error {
		GinkgoHelper()
		var err error
		Expect(func() { _, _, err = config.ParseBootstrap([]byte(data), "b.yaml") }).NotTo(Panic())
		return err
	}

	It("still loads the repository's bootstrap", func() {
		Expect(parse(good)).To(Succeed())
	})

	It("refuses a YAML tag at its line instead of panicking the decoder", func() {
		e := only(parse("admin: ! 0\n"))
		Expect(e.Line).To(Equal(1))
		Expect(e.Msg).To(ContainSubstring(`YAML tag "!" is not supported`))
	})

	It("refuses deep flow nesting quickly, with a line (80 KB of '[' once took 2.5 GB and 8.8 s)", func() {
		e := only(parse("static_resources: " + strings.Repeat("[", 80_000)))
		Expect(e.Line).To(Equal(1))
		Expect(e.Column).To(Equal(18 + config.MaxYAMLDepth + 1))
		Expect(e.Msg).To(Equal("nested more than 64 levels deep"))
	})

	It("accepts nesting up to the limit and refuses one level more", func() {
		atLimit := "a: " + strings.Repeat("[", config.MaxYAMLDepth-1) + strings.Repeat("]", config.MaxYAMLDepth-1)
		_, err := config.ParseYAML([]byte(atLimit), "b.yaml")
		Expect(err).NotTo(HaveOccurred())
		over := "a: " + strings.Repeat("[", config.MaxYAMLDepth) + strings.Repeat("]", config.MaxYAMLDepth)
		_, err = config.ParseYAML([]byte(over), "b.yaml")
		Expect(err).To(MatchError(ContainSubstring("nested more than 64 levels deep")))
	})

	It("names a binary file's first non-text byte instead of echoing 9 KB of it", func() {
		bin := "\x7fELF\x02\x01\x01\x00" + strings.Repeat("\x00\xff", 4500)
		e := only(parse(bin))
		Expect(e.Error()).To(Equal("b.yaml:1:8: not a UTF-8 text file (byte 0x00 at offset 7); want YAML or JSON"))
	})

	It("refuses a file over the size limit", func() {
		e := only(parse(good + strings.Repeat("#", config.MaxYAMLBytes)))
		Expect(e.Msg).To(HavePrefix("file is "))
	})
})
