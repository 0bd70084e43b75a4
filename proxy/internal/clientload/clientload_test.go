package clientload_test

import (
	"testing"

	"github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/internal/clientload"
)

// Regression (#17 review): the message dropped the numeric code ("status Service Unavailable"; "status "
// for a code without a text).
func TestStatusErrorNamesTheCode(t *testing.T) {
	tests := []struct {
		name string
		give int
		want string
	}{
		{name: "known code", give: 503, want: "status 503"},
		{name: "code without a text", give: 599, want: "status 599"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := gomega.NewWithT(t)
			g.Expect((&clientload.StatusError{Code: tt.give}).Error()).To(gomega.Equal(tt.want))
		})
	}
}
