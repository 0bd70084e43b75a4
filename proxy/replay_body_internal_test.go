package proxy

import (
	"io"
	"strings"
	"testing/iotest"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
)

// A streamed request body as the attempts of one request read it (replay_body.go).
var _ = Describe("replayBody", func() {
	// body is a replayBody over s, delivered 3 bytes per read, keeping up to limit bytes.
	body := func(s string, limit int) *replayBody {
		return newReplayBody(&bodyRest{r: iotest.HalfReader(strings.NewReader(s))}, limit)
	}

	It("gives a later attempt what was read so far, then the rest from the downstream", func() {
		b := body("0123456789", 64)
		first := b.reader()
		p := make([]byte, 4)
		n, err := first.Read(p)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(p[:n])).To(Equal("01"), "HalfReader: half of what was asked")
		all, err := io.ReadAll(b.reader())
		Expect(err).NotTo(HaveOccurred())
		Expect(string(all)).To(Equal("0123456789"))
		rest, err := io.ReadAll(first)
		Expect(err).NotTo(HaveOccurred())
		Expect(string(rest)).To(Equal("23456789"), "the first attempt goes on from the bytes kept")
		complete, over, err := b.state()
		Expect([]any{complete, over, err}).To(Equal([]any{true, false, nil}))
	})

	It("keeps nothing once past the limit: a later attempt cannot start over", func() {
		b := body("0123456789", 4)
		all, err := io.ReadAll(b.reader())
		Expect(err).NotTo(HaveOccurred())
		Expect(string(all)).To(Equal("0123456789"), "the attempt under way gets the whole body")
		_, over, _ := b.state()
		Expect(over).To(BeTrue())
		_, err = b.reader().Read(make([]byte, 8))
		Expect(err).To(MatchError(errBodyNotReplayable))
	})

	It("keeps the downstream's read error for the router and every reader", func() {
		b := newReplayBody(&bodyRest{r: iotest.TimeoutReader(strings.NewReader("0123456789"))}, 64)
		r := b.reader()
		_, err := r.Read(make([]byte, 4))
		Expect(err).NotTo(HaveOccurred())
		_, err = r.Read(make([]byte, 4))
		Expect(err).To(MatchError(iotest.ErrTimeout))
		_, _, err = b.state()
		Expect(err).To(MatchError(iotest.ErrTimeout))
		second := b.reader()
		got, err := io.ReadAll(second)
		Expect(string(got)).To(Equal("0123"), "what was read before the error is still sent")
		Expect(err).To(MatchError(iotest.ErrTimeout))
	})
})
