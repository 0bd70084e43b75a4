package field_test

import (
	"errors"
	"io"
	"testing"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/faults/field"
)

func TestError(t *testing.T) {
	tests := []struct {
		name        string
		give        *field.Error
		wantField   string
		wantReason  string
		wantAmong   []string
		wantMessage string
	}{
		{"a field", field.Errorf("abort.status", "%d is out of range, want 200..599", 700),
			"abort.status", "700 is out of range, want 200..599", nil, "abort.status: 700 is out of range, want 200..599"},
		{"the value itself", field.Errorf("", "want exactly one"), "", "want exactly one", nil, "want exactly one"},
		{"among fields", field.Among("latency", []string{"fixed", "uniform"}, "several set, want at most one"),
			"latency", "several set, want at most one", []string{"fixed", "uniform"}, "latency.{fixed,uniform}: several set, want at most one"},
		{"among fields of the value itself", field.Among("", []string{"a", "b"}, "none set"), "", "none set", []string{"a", "b"}, "{a,b}: none set"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gomega.NewWithT(t)
			g.Expect(tt.give.Field()).To(gomega.Equal(tt.wantField))
			g.Expect(tt.give.Reason()).To(gomega.Equal(tt.wantReason))
			g.Expect(tt.give.Among()).To(gomega.Equal(tt.wantAmong))
			g.Expect(tt.give.Error()).To(gomega.Equal(tt.wantMessage))
		})
	}
}

func TestErrorfWrapsItsCause(t *testing.T) {
	g := gomega.NewWithT(t)
	err := field.Errorf("path_regex", "%q does not compile: %w", "(", io.ErrUnexpectedEOF)
	g.Expect(err.Reason()).To(gomega.Equal(`"(" does not compile: unexpected EOF`))
	g.Expect(errors.Is(err, io.ErrUnexpectedEOF)).To(gomega.BeTrue())
}

func TestWithin(t *testing.T) {
	tests := []struct {
		name string
		path string
		give error
		want []string // Field() of each, then Error()
	}{
		{"nil", "faults[0]", nil, nil},
		{"one", "faults[0]", field.Errorf("abort.status", "bad"), []string{"faults[0].abort.status", "faults[0].abort.status: bad"}},
		{"the value itself", "faults[0]", field.Errorf("", "bad"), []string{"faults[0]", "faults[0]: bad"}},
		{"an index", "toxics", field.Errorf("[1].rate", "bad"), []string{"toxics[1].rate", "toxics[1].rate: bad"}},
		{"joined, nested", "faults[1]", errors.Join(field.Errorf("start", "a"), errors.Join(nil, field.Among("latency", []string{"x", "y"}, "b"))),
			[]string{"faults[1].start", "faults[1].start: a", "faults[1].latency", "faults[1].latency.{x,y}: b"}},
		{"a plain error is the value's own", "faults[2]", errors.New("broken"), []string{"faults[2]", "faults[2]: broken"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gomega.NewWithT(t)
			var got []string
			for _, e := range field.Within(tt.path, tt.give) {
				var fe *field.Error
				g.Expect(errors.As(e, &fe)).To(gomega.BeTrue())
				got = append(got, fe.Field(), fe.Error())
			}
			g.Expect(got).To(gomega.Equal(tt.want))
		})
	}
}

func TestWithinLeavesTheOriginalAlone(t *testing.T) {
	g := gomega.NewWithT(t)
	inner := field.Errorf("status", "bad")
	_ = field.Within("abort", inner)
	g.Expect(inner.Field()).To(gomega.Equal("status"))
}

func TestAll(t *testing.T) {
	g := gomega.NewWithT(t)
	a, b := field.Errorf("a", "x"), field.Errorf("b", "y")
	g.Expect(field.All(nil)).To(gomega.BeEmpty())
	g.Expect(field.All(errors.Join(a, errors.Join(b)))).To(gomega.Equal([]*field.Error{a, b}))
	plain := field.All(errors.New("z"))
	g.Expect(plain).To(gomega.HaveLen(1))
	g.Expect(plain[0].Field()).To(gomega.Equal(""))
	g.Expect(plain[0].Reason()).To(gomega.Equal("z"))
}

func TestJoin(t *testing.T) {
	tests := []struct{ parent, child, want string }{
		{"", "a", "a"}, {"a", "", "a"}, {"a", "b.c", "a.b.c"}, {"toxics", "[0]", "toxics[0]"}, {"", "", ""},
	}
	for _, tt := range tests {
		gomega.NewWithT(t).Expect(field.Join(tt.parent, tt.child)).To(gomega.Equal(tt.want), "%q + %q", tt.parent, tt.child)
	}
}
