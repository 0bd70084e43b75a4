package h1_test

import (
	"errors"
	"io"
	"net/http"
	"strings"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// beFramingError matches a *h1.FramingError with the status given and a reason (a string or a matcher).
func beFramingError(status int, reason any) OmegaMatcher {
	return WithTransform(func(err error) *h1.FramingError {
		var fe *h1.FramingError
		if errors.As(err, &fe) {
			return fe
		}
		return nil
	}, And(Not(BeNil()), HaveField("Status", status), HaveField("Reason", reason)))
}

var _ = Describe("the chunked decoder", func() {
	DescribeTable("decodes a valid chunked body and its trailer section, to the byte after it",
		func(give, want string) {
			body, rest, err := h1.DecodeChunked(give + "NEXT")
			Expect(err).NotTo(HaveOccurred())
			Expect(body).To(Equal(want))
			Expect(rest).To(Equal("NEXT"))
		},
		Entry("one chunk", "5\r\nhello\r\n0\r\n\r\n", "hello"),
		Entry("no chunk", "0\r\n\r\n", ""),
		Entry("several chunks", "5\r\nhello\r\n1\r\n \r\n5\r\nworld\r\n0\r\n\r\n", "hello world"),
		Entry("upper and lower case hexadecimal", "A\r\n0123456789\r\nb\r\nabcdefghijk\r\n0\r\n\r\n", "0123456789abcdefghijk"),
		Entry("leading zeros, up to 16 digits", "0000000000000005\r\nhello\r\n000\r\n\r\n", "hello"),
		Entry("extensions", "5;name=value;flag\r\nhello\r\n0;last=\"a b\"\r\n\r\n", "hello"),
		Entry("whitespace before an extension (RFC 9112 BWS)", "5 \t;name = value\r\nhello\r\n0\r\n\r\n", "hello"),
		Entry("whitespace after the size", "5 \r\nhello\r\n0\r\n\r\n", "hello"),
		Entry("a trailer section", "5\r\nhello\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", "hello"),
		// The decoder's reader holds 4 KiB: these trailer fields are split by its end just before their
		// CRLF, and between the CR and the LF.
		Entry("a trailer field split before its CRLF", "5\r\nhello\r\n0\r\nX-T: "+strings.Repeat("t", 4091)+"\r\n\r\n", "hello"),
		Entry("a trailer field split after its CR", "5\r\nhello\r\n0\r\nX-T: "+strings.Repeat("t", 4090)+"\r\n\r\n", "hello"),
	)

	DescribeTable("rejects a body that breaks its framing with a *FramingError",
		func(give string, status int, reason string) {
			_, _, err := h1.DecodeChunked(give)
			Expect(err).To(beFramingError(status, reason))
		},
		Entry("a size that is not hexadecimal", "zz\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		// Found by FuzzRequest (testdata/fuzz/FuzzRequest/trailer-syntax): net/http refuses it.
		Entry("a trailer line that is not a field", "0\r\nnot a field\r\n\r\n", 400, "trailer line is not a field (NAME: value)"),
		// Found by FuzzRequest / FuzzChunked (testdata/fuzz/…/cddd490b7fe5a963, 6f3399da584900e9): net/http
		// refuses both.
		Entry("a control byte in a trailer value", "0\r\nX:\x05\r\n\r\n", 400, "trailer line is not a field (NAME: value)"),
		Entry("a size of 17 hexadecimal digits, even zeros", "00000000000000000\r\n\r\n", 400, "chunk size does not fit in 63 bits"),
		// Found by FuzzRequest (testdata/fuzz/FuzzRequest/61ad032013ef3eb3): net/http refuses a bare LF there.
		Entry("a trailer section ended by a bare LF", "0\r\n\n", 400, "LF not preceded by CR in the trailer section"),
		Entry("a trailer field ended by a bare LF", "0\r\nX-A: b\n\r\n", 400, "LF not preceded by CR in the trailer section"),
		Entry("a trailer field name longer than the buffer with a space", "0\r\nX "+strings.Repeat("t", 5000)+": v\r\n\r\n", 400, "trailer line is not a field (NAME: value)"),
		Entry("a negative size", "-5\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("a size with a plus sign", "+5\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("a size with 0x", "0x5\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("two sizes", "5 5\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("an empty size", "\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("whitespace before the size", " 5\r\nhello\r\n0\r\n\r\n", 400, "chunk size is not hexadecimal"),
		Entry("a size of 2^72 (overflows 64 bits)", "1000000000000000000\r\nhello\r\n0\r\n\r\n", 400, "chunk size does not fit in 63 bits"),
		Entry("a size of 2^63", "8000000000000000\r\nhello\r\n0\r\n\r\n", 400, "chunk size does not fit in 63 bits"),
		Entry("a chunk line ending with a bare LF", "5\nhello\r\n0\r\n\r\n", 400, "chunk line ends with a bare LF"),
		Entry("an extension ending with a bare LF", "5;a=b\nhello\r\n0\r\n\r\n", 400, "chunk line ends with a bare LF"),
		Entry("the last chunk line ending with a bare LF", "5\r\nhello\r\n0\n\r\n", 400, "chunk line ends with a bare LF"),
		Entry("a bare CR in a chunk line", "5\rhello\r\n0\r\n\r\n", 400, "CR not followed by LF in a chunk line"),
		Entry("a control byte in an extension", "5;a=\x00\r\nhello\r\n0\r\n\r\n", 400, "control byte in a chunk extension"),
		Entry("data longer than its size", "3\r\nhello\r\n0\r\n\r\n", 400, "chunk data not followed by CRLF (longer than its size)"),
		Entry("data followed by a bare LF", "5\r\nhello\n0\r\n\r\n", 400, "chunk data not followed by CRLF (longer than its size)"),
		Entry("data followed by CR and no LF", "5\r\nhello\rx0\r\n\r\n", 400, "chunk data not followed by CRLF (longer than its size)"),
		Entry("a chunk line longer than the read buffer", "5;"+strings.Repeat("e", 5000)+"\r\nhello\r\n0\r\n\r\n", 400, "chunk line too long"),
		Entry("one-byte chunks with long extensions",
			strings.Repeat("1;"+strings.Repeat("e", 1000)+"\r\nx\r\n", 20)+"0\r\n\r\n", 400, "too much non-data in chunked encoding"),
		Entry("a trailer field split after a bare CR", "5\r\nhello\r\n0\r\nX-T: "+strings.Repeat("t", 4090)+"\rx\r\n\r\n",
			400, "CR not followed by LF in the trailer section"),
		Entry("a bare CR in the trailer section", "5\r\nhello\r\n0\r\nX-T: a\rb\r\n\r\n", 400, "CR not followed by LF in the trailer section"),
		Entry("a trailer section over 60 KiB", "5\r\nhello\r\n0\r\n"+strings.Repeat("X-T: "+strings.Repeat("t", 1000)+"\r\n", 70)+"\r\n",
			http.StatusRequestHeaderFieldsTooLarge, "trailer section too large"),
	)

	DescribeTable("ends with io.ErrUnexpectedEOF, not a framing error, when the stream ends mid-body",
		func(give string) {
			_, _, err := h1.DecodeChunked(give)
			Expect(err).To(MatchError(io.ErrUnexpectedEOF))
		},
		Entry("in a chunk line", "5"),
		Entry("after a CR", "5\r"),
		Entry("in the data", "5\r\nhel"),
		Entry("before the CRLF after the data", "5\r\nhello"),
		Entry("between the CR and the LF after the data", "5\r\nhello\r"),
		Entry("in the trailer section", "5\r\nhello\r\n0\r\nX-T: 1\r\n"),
		Entry("in a chunk of the largest size", "7fffffffffffffff\r\nab"),
	)
})
