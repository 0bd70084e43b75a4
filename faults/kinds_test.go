package faults_test

import (
	"os"
	"reflect"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults"
)

// everyKind is a rule with every kind set, each percent 0 (refuse alone would be valid; this rule is
// for copying and listing, not for serving).
func everyKind() faults.Fault {
	after := 10
	return faults.Fault{
		Latency:    &faults.Latency{Uniform: &faults.Uniform{Min: 1, Max: 2}, Normal: &faults.Normal{}, LogNormal: &faults.LogNormal{}, Pareto: &faults.Pareto{}},
		Abort:      &faults.Abort{Status: 503},
		Reset:      &faults.Reset{AfterBytes: &after},
		Hang:       &faults.Hang{},
		SlowBody:   &faults.SlowBody{BytesPerSecond: 1},
		CloseAfter: &faults.CloseAfter{Bytes: 1},
		Size:       &faults.Size{Bytes: 1},
		H2:         &faults.H2{GoAway: "NO_ERROR"},
		Refuse:     &faults.Refuse{},
	}
}

var _ = Describe("the fault kinds", func() {
	It("are every kind field of Fault, in field order: a kind field without a descriptor fails here", func() {
		notKinds := map[string]bool{"-": true, "at": true, "for": true, "match": true, "first": true, "every": true, "flap": true}
		var fields []string
		t := reflect.TypeFor[faults.Fault]()
		for i := range t.NumField() {
			if tag := t.Field(i).Tag.Get("yaml"); !notKinds[tag] {
				fields = append(fields, tag)
			}
		}
		Expect(faults.KindNames()).To(Equal(fields))
		for _, k := range faults.Kinds() {
			Expect(k.Requests).To(Equal(k.Name != "refuse"), k.Name)
		}
	})

	It("say which a rule sets", func() {
		f := faults.Fault{Abort: &faults.Abort{}, Refuse: &faults.Refuse{}}
		var set []string
		for _, k := range faults.Kinds() {
			if k.In(&f) {
				set = append(set, k.Name)
			}
		}
		Expect(set).To(Equal([]string{"abort", "refuse"}))
	})

	It("give each kind's percent to default, and none for refuse or an unset kind", func() {
		f := everyKind()
		for _, k := range faults.Kinds() {
			if p := k.Percent(&f); p != nil {
				*p = faults.DefaultPercent
			}
		}
		Expect(f.Latency.Percent).To(BeEquivalentTo(100))
		Expect(f.Abort.Percent).To(BeEquivalentTo(100))
		Expect(f.Reset.Percent).To(BeEquivalentTo(100))
		Expect(f.Hang.Percent).To(BeEquivalentTo(100))
		Expect(f.SlowBody.Percent).To(BeEquivalentTo(100))
		Expect(f.CloseAfter.Percent).To(BeEquivalentTo(100))
		Expect(f.Size.Percent).To(BeEquivalentTo(100))
		Expect(f.H2.Percent).To(BeEquivalentTo(100))
		refuse := faults.Kinds()[len(faults.Kinds())-1]
		Expect(refuse.Percent(&f)).To(BeNil())
		Expect(faults.Kinds()[0].Percent(&faults.Fault{})).To(BeNil())
	})

	It("are copied deeply by the upstream: the caller's pointers cannot change a served rule", func() {
		orig := everyKind()
		c := faults.Clone(orig)
		Expect(c).To(Equal(orig))
		ov, cv := reflect.ValueOf(orig), reflect.ValueOf(c)
		// Refuse has no fields: every pointer to a zero-size value may be the same address.
		for _, name := range []string{"Latency", "Abort", "Reset", "Hang", "SlowBody", "CloseAfter", "Size", "H2"} {
			Expect(cv.FieldByName(name).Pointer()).NotTo(Equal(ov.FieldByName(name).Pointer()), name)
		}
		Expect(c.Latency.Uniform).NotTo(BeIdenticalTo(orig.Latency.Uniform))
		Expect(c.Latency.Pareto).NotTo(BeIdenticalTo(orig.Latency.Pareto))
		Expect(c.Reset.AfterBytes).NotTo(BeIdenticalTo(orig.Reset.AfterBytes))
		*orig.Reset.AfterBytes = 99
		Expect(*c.Reset.AfterBytes).To(Equal(10))
	})

	It("are each documented in README.md's table of fault kinds", func() {
		readme, err := os.ReadFile("README.md")
		Expect(err).NotTo(HaveOccurred())
		for _, name := range faults.KindNames() {
			Expect(string(readme)).To(ContainSubstring("| `"+name+": "), "a row for %s", name)
		}
		Expect(strings.Count(string(readme), "| `h2: ")).To(Equal(2), "rst_stream and goaway")
	})
})
