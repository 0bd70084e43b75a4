package h1

import (
	"bufio"
	"io"
	"net"
	"strings"
)

// IdleAlive reports, for each idle connection of p (oldest first), whether the pool's liveness check
// takes it for reusable. It does not take the connections out of the pool.
func IdleAlive(p *Pool) []bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	alive := make([]bool, len(p.idle))
	for i, cc := range p.idle {
		alive[i] = cc.alive()
	}
	return alive
}

// BuffersHeld is how many read and write buffers the connections of s hold.
func BuffersHeld(s *Server) int64 { return s.buffers.Load() }

// DecodeChunked decodes a chunked body and its trailer section from s, as the server and the pool do,
// and says what is left of s after it.
func DecodeChunked(s string) (body, rest string, err error) {
	br := bufio.NewReaderSize(strings.NewReader(s), readBufferSize)
	var cr chunkedReader
	cr.reset(br)
	b, err := io.ReadAll(&cr)
	r, _ := io.ReadAll(br)
	return string(b), string(r), err
}

// HasRawConn reports whether the codec would do raw socket I/O under nc.
func HasRawConn(nc net.Conn) bool { return rawConn(nc) != nil }
