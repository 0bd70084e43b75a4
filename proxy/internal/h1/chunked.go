package h1

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
)

// A FramingError is a message body that breaks its framing: where the body ends, and so where the
// next message starts, cannot be known, and the connection must end. A server that has not answered
// yet answers Status with Connection: close, as Envoy's HTTP/1 codec does on a codec protocol error
// (ServerConnectionImpl::sendProtocolError in source/common/http/http1/codec_impl.cc sends a local
// reply, then ConnectionManagerImpl::handleCodecError in source/common/http/conn_manager_impl.cc
// closes the connection with the DownstreamProtocolError (DPE) response flag). Compare with the
// errors of a peer gone mid-body (io.ErrUnexpectedEOF, a reset), to which nobody can be answered.
type FramingError struct {
	Status int    // 400 Bad Request; 431 for a trailer section over the head limit
	Reason string // what was wrong, for logs and tests
}

func (e *FramingError) Error() string { return "h1: malformed chunked body: " + e.Reason }

// The chunked framing errors. Go's own decoder (net/http/internal) rejects the same encodings but with
// unexported, untyped errors that cannot be told from I/O errors; it also accepts control bytes in a
// chunk extension and waits for the LF of a line that a bare CR already made invalid.
var (
	errChunkSize         = &FramingError{http.StatusBadRequest, "chunk size is not hexadecimal"}
	errChunkSizeOverflow = &FramingError{http.StatusBadRequest, "chunk size does not fit in 63 bits"}
	errChunkBareLF       = &FramingError{http.StatusBadRequest, "chunk line ends with a bare LF"}
	errChunkBareCR       = &FramingError{http.StatusBadRequest, "CR not followed by LF in a chunk line"}
	errChunkExt          = &FramingError{http.StatusBadRequest, "control byte in a chunk extension"}
	errChunkLineTooLong  = &FramingError{http.StatusBadRequest, "chunk line too long"}
	errChunkData         = &FramingError{http.StatusBadRequest, "chunk data not followed by CRLF (longer than its size)"}
	errChunkOverhead     = &FramingError{http.StatusBadRequest, "too much non-data in chunked encoding"}
	errTrailerBareCR     = &FramingError{http.StatusBadRequest, "CR not followed by LF in the trailer section"}
	errTrailerTooLarge   = &FramingError{http.StatusRequestHeaderFieldsTooLarge, "trailer section too large"}
	errTrailerField      = &FramingError{http.StatusBadRequest, "trailer line is not a field (NAME: value)"}
	errTrailerBareLF     = &FramingError{http.StatusBadRequest, "LF not preceded by CR in the trailer section"}
)

const (
	maxChunkSize = 1<<63 - 1
	// maxChunkOverhead bounds the bytes of chunk lines beyond 16 a chunk and twice its data: a sender
	// of one-byte chunks with long extensions cannot make the server parse far more than it forwards
	// (the allowance of Go's decoder).
	maxChunkOverhead = 16 << 10
)

// chunkedReader decodes a chunked body (RFC 9112 §7.1) straight from a connection's reader, then
// reads its trailer section, as strictly as Envoy's HTTP/1 codec: a chunk size is hexadecimal digits
// only (no sign, no 0x, no overflow), optionally followed by whitespace and extensions; every chunk
// line ends with CRLF (a bare LF is not accepted in chunked framing, RFC 9112 errata 7633), and chunk
// data is followed by CRLF exactly. Each error is a *FramingError, found as soon as the offending byte
// arrives, never by waiting for an LF that cannot make the line valid.
type chunkedReader struct {
	br       *bufio.Reader
	n        int64 // bytes left of the current chunk's data
	dataEnd  bool  // the CRLF after the current chunk's data is still to be read
	overhead int64
	err      error // sticky: io.EOF after the trailer section
}

func (cr *chunkedReader) reset(br *bufio.Reader) { *cr = chunkedReader{br: br} }

func (cr *chunkedReader) Read(p []byte) (int, error) {
	n := 0
	for cr.err == nil {
		if cr.dataEnd {
			if n > 0 && cr.br.Buffered() < 2 {
				break // return the data read rather than wait for the CRLF
			}
			if cr.err = cr.readDataEnd(); cr.err != nil {
				break
			}
			cr.dataEnd = false
		}
		if cr.n == 0 {
			if n > 0 && !lineBuffered(cr.br) {
				break // return the data read rather than wait for the next chunk line
			}
			cr.err = cr.beginChunk()
			continue
		}
		if len(p) == 0 {
			break
		}
		q := p
		if int64(len(q)) > cr.n {
			q = q[:cr.n]
		}
		m, err := cr.br.Read(q)
		n += m
		p = p[m:]
		cr.n -= int64(m)
		if err != nil {
			cr.err = unexpected(err)
		} else if cr.n == 0 {
			cr.dataEnd = true
		}
	}
	return n, cr.err
}

// unexpected is err with io.EOF turned into io.ErrUnexpectedEOF: the peer ended the stream mid-body.
func unexpected(err error) error {
	if err == io.EOF {
		return io.ErrUnexpectedEOF
	}
	return err
}

// readDataEnd reads the CRLF after a chunk's data. Anything else means that the data is longer than
// the size said (or that its line ends with a bare LF): the first byte is checked on its own so that
// a wrong one is rejected without waiting for the second.
func (cr *chunkedReader) readDataEnd() error {
	b, err := cr.br.Peek(1)
	if err != nil {
		return unexpected(err)
	}
	if b[0] != '\r' {
		return errChunkData
	}
	if b, err = cr.br.Peek(2); err != nil {
		return unexpected(err)
	}
	if b[1] != '\n' {
		return errChunkData
	}
	_, _ = cr.br.Discard(2)
	return nil
}

// The states of a chunk line: chunk-size [ BWS chunk-ext ] CRLF.
const (
	inSize = iota
	afterSize
	inExt
)

// beginChunk reads a chunk line and sets the size of its data. The last chunk (size 0) is followed by
// the trailer section, read here: the body then ends with io.EOF.
func (cr *chunkedReader) beginChunk() error {
	var size int64
	digits, state, i := 0, inSize, 0
	for {
		b, _ := cr.br.Peek(cr.br.Buffered())
		for ; i < len(b); i++ {
			c := b[i]
			if state == inSize {
				if h := unhex(c); h >= 0 {
					// More than 16 hex digits, even zeros, is refused as net/http refuses it, so that the
					// two never frame a body differently (found by FuzzChunked).
					if size > maxChunkSize>>4 || digits == 16 {
						return errChunkSizeOverflow
					}
					size = size<<4 | int64(h)
					digits++
					continue
				}
				if digits == 0 {
					return errChunkSize
				}
				state = afterSize
			}
			switch {
			case c == '\r':
				if i+1 == len(b) {
					break // the next byte must be the LF: wait for it
				}
				if b[i+1] != '\n' {
					return errChunkBareCR
				}
				_, _ = cr.br.Discard(i + 2)
				return cr.chunkStart(size, i+2)
			case c == '\n':
				return errChunkBareLF
			case state == afterSize && (c == ' ' || c == '\t'):
			case state == afterSize && c == ';':
				state = inExt
			case state == afterSize:
				return errChunkSize // "5x", "5 5", "0x5"
			case c < ' ' && c != '\t' || c == 0x7f:
				return errChunkExt
			}
			if c == '\r' {
				break
			}
		}
		if len(b) >= cr.br.Size() {
			return errChunkLineTooLong
		}
		if _, err := cr.br.Peek(len(b) + 1); err != nil {
			return unexpected(err)
		}
	}
}

// chunkStart starts a chunk of size bytes whose line was lineLen bytes long.
func (cr *chunkedReader) chunkStart(size int64, lineLen int) error {
	cr.overhead += int64(lineLen) + 2 - 16 - 2*min(size, maxChunkOverhead)
	cr.overhead = max(cr.overhead, 0)
	if cr.overhead > maxChunkOverhead {
		return errChunkOverhead
	}
	if size == 0 {
		if err := readTrailer(cr.br); err != nil {
			return err
		}
		return io.EOF
	}
	cr.n = size
	return nil
}

// lineBuffered reports whether the reader's buffer holds an LF.
func lineBuffered(br *bufio.Reader) bool {
	b, _ := br.Peek(br.Buffered())
	return bytes.IndexByte(b, '\n') >= 0
}

func unhex(c byte) int {
	switch {
	case '0' <= c && c <= '9':
		return int(c - '0')
	case 'a' <= c && c <= 'f':
		return int(c-'a') + 10
	case 'A' <= c && c <= 'F':
		return int(c-'A') + 10
	}
	return -1
}

// readTrailer reads the trailer section after a chunked body's last chunk, up to its empty line. The
// trailer fields are dropped, but a bare CR in them is rejected as in a head, and over the head limit
// the section fails as Envoy's codec fails trailers, with 431.
func readTrailer(br *bufio.Reader) error {
	total, split, afterCR := 0, false, false
	for {
		line, err := readLine(br, false, afterCR)
		total += len(line)
		if total > defaultMaxHeaderBytes {
			return errTrailerTooLarge
		}
		switch {
		case err == errBareCR:
			return errTrailerBareCR
		case err == bufio.ErrBufferFull: // a line longer than the buffer, checked so far by readLine
			if !split && !fieldLine(line) {
				return errTrailerField
			}
			split, afterCR = true, line[len(line)-1] == '\r'
			continue
		case err != nil:
			return unexpected(err)
		}
		if i := bytes.IndexByte(line, '\r'); i >= 0 && i != len(line)-2 {
			return errTrailerBareCR // readLine does not check a line it found whole
		}
		if !(len(line) >= 2 && line[len(line)-2] == '\r' || len(line) == 1 && split && afterCR) {
			// A bare LF ends no trailer line: as in chunk lines, CRLF only (RFC 9112 §7.1); net/http
			// agrees, so the two never disagree on where the message ends (found by FuzzRequest).
			return errTrailerBareLF
		}
		if !split && len(line) == 2 {
			return nil
		}
		if !split && !fieldLine(line) {
			return errTrailerField // RFC 9112 §7.1.2: a trailer section holds field lines, as a head does
		}
		split, afterCR = false, false
	}
}

// fieldLine reports whether a trailer line (or its first part) is a field line: a non-empty token,
// ':', then a value without control bytes but HTAB (the line's CRLF aside), as in a head.
func fieldLine(line []byte) bool {
	i := bytes.IndexByte(line, ':')
	if i <= 0 {
		return false
	}
	for _, c := range line[:i] {
		if !isTokenByte(c) {
			return false
		}
	}
	for _, c := range bytes.TrimRight(line[i+1:], "\r\n") {
		if c < ' ' && c != '\t' || c == 0x7f {
			return false // found by FuzzRequest: net/http refuses a control byte in a trailer value
		}
	}
	return true
}
