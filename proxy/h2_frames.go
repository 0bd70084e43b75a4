package proxy

import (
	"errors"
	"time"
)

// HTTP/2 frame types and flags (RFC 9113 §6) the scanner looks at.
const (
	frameData         = 0x0
	frameHeaders      = 0x1
	framePriority     = 0x2
	frameRSTStream    = 0x3
	frameWindowUpdate = 0x8
	frameContinuation = 0x9

	flagEndStream = 0x1
	flagPadded    = 0x8
	flagPriority  = 0x20
)

// frameScanner follows the frame boundaries of one direction of a connection, the bytes passing
// through it in any slices: it reads each 9-byte frame header (and a padded frame's pad length) and
// skips the payload, copying nothing.
type frameScanner struct {
	hdr  [9]byte
	n    int // header bytes held
	skip int // payload bytes still to pass over
	// A padded DATA or HEADERS frame waits for its pad length, its payload's first byte.
	padWait    bool
	typ, flags byte
	id, length uint32
}

// scan passes p through, calling c.frame for each frame whose header (and pad length) is whole.
func (f *frameScanner) scan(p []byte, c *h2Conn, in bool) error {
	for len(p) > 0 {
		if f.padWait {
			f.padWait = false
			pad := uint32(p[0])
			empty := f.length <= 1+pad
			if f.typ == frameHeaders && f.flags&flagPriority != 0 {
				empty = f.length <= 1+pad+5
			}
			if err := c.frame(in, f.typ, f.flags, f.id, empty); err != nil {
				return err
			}
			continue // the pad length byte is part of the payload skip counts
		}
		if f.skip > 0 {
			k := min(f.skip, len(p))
			f.skip -= k
			p = p[k:]
			continue
		}
		k := copy(f.hdr[f.n:], p)
		f.n += k
		p = p[k:]
		if f.n < len(f.hdr) {
			return nil
		}
		f.n = 0
		h := f.hdr
		f.length = uint32(h[0])<<16 | uint32(h[1])<<8 | uint32(h[2])
		f.typ, f.flags = h[3], h[4]
		f.id = (uint32(h[5])<<24 | uint32(h[6])<<16 | uint32(h[7])<<8 | uint32(h[8])) & 0x7fffffff
		f.skip = int(f.length)
		if (f.typ == frameData || f.typ == frameHeaders) && f.flags&flagPadded != 0 && f.length > 0 {
			f.padWait = true
			continue
		}
		empty := f.length == 0
		if f.typ == frameHeaders && f.flags&flagPriority != 0 {
			empty = f.length <= 5
		}
		if err := c.frame(in, f.typ, f.flags, f.id, empty); err != nil {
			return err
		}
	}
	return nil
}

var (
	errEmptyFramesFlood    = errors.New("h2: too many consecutive frames with an empty payload")
	errPriorityFlood       = errors.New("h2: too many PRIORITY frames")
	errWindowUpdateFlood   = errors.New("h2: too many WINDOW_UPDATE frames")
	errTooManyPrematureRst = errors.New("h2: too many premature resets")
)

// frame accounts for one frame (c.mu held): in, from the client; empty, its payload (padding and
// priority fields aside) is empty. A non-nil error closes the connection.
func (c *h2Conn) frame(in bool, typ, flags byte, id uint32, empty bool) error {
	if c.failed != nil {
		return c.failed
	}
	end := flags&flagEndStream != 0
	if !in {
		switch typ {
		case frameHeaders:
			if st := c.streams[id]; st != nil {
				st.responded = true
				if end {
					st.localDone = true
					return c.maybeClose(id, st)
				}
			}
		case frameData:
			c.dataOut++
			if st := c.streams[id]; st != nil && end {
				st.localDone = true
				return c.maybeClose(id, st)
			}
		case frameRSTStream:
			c.srv.st.txReset.Inc()
			return c.closeStream(id)
		}
		return nil
	}
	// Inbound: the stream bookkeeping, then Envoy's inbound frame counts (ProtocolConstraints::
	// trackInboundFrame, source/common/http/http2/protocol_constraints.cc).
	switch typ {
	case frameHeaders, frameContinuation, frameData:
		if typ == frameHeaders && id%2 == 1 && id > c.lastID {
			c.lastID = id
			// A stream the codec will not serve gets no record: past max_concurrent_streams it is
			// refused (RST_STREAM REFUSED_STREAM), after our GOAWAY ignored without a frame — as
			// Envoy's codec refuses or ignores such streams before its connection manager counts them.
			// Recorded, they would let a client grow the map without bound after a GOAWAY, and raise
			// the flood limits' thresholds, which count the streams opened.
			if !c.goingAway && uint32(len(c.streams)) < c.srv.opts.MaxConcurrentStreams {
				c.opened++
				c.streams[id] = c.newStream()
			}
		}
		if end && typ != frameContinuation {
			if st := c.streams[id]; st != nil {
				st.remoteDone = true
				if err := c.maybeClose(id, st); err != nil {
					return err
				}
			}
		}
		if empty && !end {
			c.emptyRun++
		} else {
			c.emptyRun = 0
		}
	case framePriority:
		c.priority++
	case frameWindowUpdate:
		c.windowUpd++
	case frameRSTStream:
		c.srv.st.rxReset.Inc()
		if err := c.closeStream(id); err != nil {
			return err
		}
	}
	return c.checkInbound()
}

// checkInbound is Envoy's ProtocolConstraints::checkInboundFrameLimits: past a limit the connection
// is a flood, counted and closed.
func (c *h2Conn) checkInbound() error {
	o, st := &c.srv.opts, c.srv.st
	switch {
	case c.emptyRun > o.MaxConsecutiveInboundFramesWithEmptyPayload:
		st.emptyFramesFlood.Inc()
		c.failed = errEmptyFramesFlood
	case c.priority > uint64(o.MaxInboundPriorityFramesPerStream)*(1+c.opened):
		st.priorityFramesFlood.Inc()
		c.failed = errPriorityFlood
	case c.windowUpd > 5+2*(c.opened+uint64(o.MaxInboundWindowUpdateFramesPerDataFrameSent)*c.dataOut):
		st.windowUpdFlood.Inc()
		c.failed = errWindowUpdateFlood
	}
	return c.failed
}

// newStream is the record of a stream the client opens now (c.mu held), reusing one of a closed
// stream: the connection allocates none per stream once it has as many as it had open at once.
func (c *h2Conn) newStream() *h2Stream {
	var st *h2Stream
	if n := len(c.free); n > 0 {
		st, c.free = c.free[n-1], c.free[:n-1]
		*st = h2Stream{}
	} else {
		st = new(h2Stream)
	}
	st.start = c.srv.clk.Now()
	return st
}

// maybeClose closes a stream that ended both ways.
func (c *h2Conn) maybeClose(id uint32, st *h2Stream) error {
	if st.remoteDone && st.localDone {
		return c.closeStream(id)
	}
	return nil
}

// closeStream ends a stream's bookkeeping and applies Envoy's premature-reset rule
// (ConnectionManagerImpl::doDeferredStreamDestroy, isPrematureRstStream and
// maybeDrainDueToPrematureResets, source/common/http/conn_manager_impl.cc): a stream that closes
// without response headers within premature_reset_min_stream_lifetime_seconds of its start (its
// lifetime in whole seconds not above it) is premature. Once at least premature_reset_total_stream_count
// streams closed on the connection and at least half of them were premature — or, before that many
// closed, as soon as the premature ones alone are half of premature_reset_total_stream_count (the rest
// could not bring the share under half) — the connection is closed and
// downstream_rq_too_many_premature_resets counted. Envoy closes a connection still open, draining or not.
func (c *h2Conn) closeStream(id uint32) error {
	st := c.streams[id]
	if st == nil {
		return nil
	}
	delete(c.streams, id)
	c.closed++
	lifetime := c.srv.clk.Now().Sub(st.start)
	if int64(lifetime/time.Second) <= prematureResetMinStreamLifetimeSecs && !st.responded {
		c.premature++
	}
	c.free = append(c.free, st)
	if c.premature == 0 {
		return nil
	}
	if c.closed < prematureResetTotalStreamCount {
		if 2*c.premature < prematureResetTotalStreamCount {
			return nil
		}
	} else if 2*c.premature < c.closed {
		return nil
	}
	c.srv.st.tooManyPrematureResets.Inc()
	c.failed = errTooManyPrematureRst
	return c.failed
}
