package config_test

import (
	"os"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/config"
)

var _ = Describe("proxy/README.md", func() {
	It("lists every supported message and field, and no other", func() {
		readme, err := os.ReadFile("../README.md")
		Expect(err).NotTo(HaveOccurred())
		rows := map[string]string{} // message → its fields cell
		for _, line := range strings.Split(string(readme), "\n") {
			cells := strings.Split(line, "|")
			if len(cells) < 4 {
				continue
			}
			msg := strings.Trim(strings.TrimSpace(cells[1]), "`")
			if strings.HasPrefix(msg, "config.") || strings.HasPrefix(msg, "extensions.") || strings.HasPrefix(msg, "type.") {
				rows["envoy."+msg] = cells[2]
			}
		}
		for msg, fields := range config.SupportedFields() {
			Expect(rows).To(HaveKey(msg), "the README's table lacks %s", msg)
			for _, f := range fields {
				Expect(rows[msg]).To(ContainSubstring("`"+f+"`"), "the README's row for %s lacks %s", msg, f)
			}
			delete(rows, msg)
		}
		Expect(rows).To(BeEmpty(), "the README lists messages the decoder does not support")
	})
})
