package proxy

import (
	"errors"
	"io"
	"net/http"
	"sync"
	"time"
)

// A gRPC request's body streams upstream from the first attempt on, as Envoy's router streams every
// body (Filter::decodeHeaders starts the upstream request; decodeData passes each piece on and keeps a
// copy for a retry or a shadow, router.cc): a streaming call — a bidirectional one above all, whose
// client waits for an answer before it sends more — cannot wait for its body to end before the
// upstream sees it. Other requests' bodies are still read up to the buffer limit first (readBody).

// errBodyNotReplayable ends an attempt whose body is longer than what was kept for a retry.
var errBodyNotReplayable = errors.New("request body beyond the buffer limit: cannot be sent again")

// replayBody is a downstream request body read as the upstream request is written, keeping its first
// limit bytes so that a retry can send them again and go on with what is still to come. Once more
// than limit bytes came, it keeps none (over): the request cannot be retried (Envoy: the buffer limit
// exceeded, retry_or_shadow_abandoned). Each attempt reads it through its own reader, from the bytes
// kept and then from the downstream (hedged attempts side by side; an attempt given up may still read
// a little until its stream is reset, and what it reads is kept for the others).
type replayBody struct {
	pull  sync.Mutex // one reader at a time pulls from the downstream (held across its blocking read)
	mu    sync.Mutex // the state below
	src   *bodyRest
	limit int
	buf   []byte
	read  int  // bytes read from the downstream
	over  bool // more than limit bytes were read: buf is dropped
	eof   bool
	err   error
}

func newReplayBody(src *bodyRest, limit int) *replayBody {
	return &replayBody{src: src, limit: limit}
}

// reader is a new attempt's view of the body, from its start.
func (b *replayBody) reader() io.Reader {
	return &replayReader{b: b}
}

// state is what the router asks of the body: its downstream read error, and whether it was read to
// its end; overflowed: a retry could not send it again.
func (b *replayBody) state() (complete, overflowed bool, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.eof, b.over, b.err
}

type replayReader struct {
	b   *replayBody
	off int // bytes this reader returned
}

func (r *replayReader) Read(p []byte) (int, error) {
	b := r.b
	for {
		b.mu.Lock()
		switch {
		case r.off < b.read && b.over:
			b.mu.Unlock()
			return 0, errBodyNotReplayable
		case r.off < b.read:
			n := copy(p, b.buf[r.off:])
			r.off += n
			b.mu.Unlock()
			return n, nil
		case b.eof:
			b.mu.Unlock()
			return 0, io.EOF
		case b.err != nil:
			err := b.err
			b.mu.Unlock()
			return 0, err
		}
		b.mu.Unlock()
		if n, pulled, err := r.pull(p); pulled {
			if n > 0 {
				return n, nil
			}
			if err != nil {
				return 0, err
			}
		}
	}
}

// pull reads more of the body from the downstream into p, keeping it while within the limit; pulled
// is false when another reader pulled meanwhile (the bytes are then in buf, or the state changed).
func (r *replayReader) pull(p []byte) (n int, pulled bool, err error) {
	b := r.b
	b.pull.Lock()
	defer b.pull.Unlock()
	b.mu.Lock()
	caughtUp := r.off == b.read && !b.eof && b.err == nil
	b.mu.Unlock()
	if !caughtUp {
		return 0, false, nil
	}
	n, err = b.src.Read(p)
	b.mu.Lock()
	defer b.mu.Unlock()
	b.read += n
	r.off += n
	if !b.over {
		if len(b.buf)+n > b.limit {
			b.over, b.buf = true, nil
		} else {
			b.buf = append(b.buf, p[:n]...)
		}
	}
	switch {
	case err == io.EOF:
		b.eof = true
	case err != nil:
		b.err = err
	}
	return n, true, err
}

// streamBody starts a gRPC request's body on its way: the first attempt is sent at once and reads it
// as it arrives, under the HCM request_timeout (a socket deadline, as readBody's) and the stream idle
// timer.
func (cm *connManager) streamBody(w http.ResponseWriter, r *http.Request, limit int, idle *streamIdle) requestBody {
	rc := http.NewResponseController(w)
	var src io.Reader = r.Body
	if idle != nil {
		src = activeReader{r.Body, idle}
		idle.reading(rc)
	}
	if cm.requestTimeout > 0 {
		_ = rc.SetReadDeadline(time.Now().Add(cm.requestTimeout))
	}
	rest := &bodyRest{r: src, done: func() {
		idle.reading(nil)
		if cm.requestTimeout > 0 {
			_ = rc.SetReadDeadline(time.Time{})
		}
	}, rc: rc}
	if si := infoOf(r); si != nil {
		rest.count = &si.bytesIn
	}
	return requestBody{rest: rest, length: r.ContentLength, replay: newReplayBody(rest, limit)}
}

// readErr is the downstream's error reading the body as it streamed upstream (nil: none yet).
func (b *requestBody) readErr() error {
	switch {
	case b.replay != nil:
		_, _, err := b.replay.state()
		return err
	case b.rest != nil:
		return b.rest.err
	}
	return nil
}

// complete reports whether the whole body was read from the downstream.
func (b *requestBody) complete() bool {
	switch {
	case b.replay != nil:
		eof, _, _ := b.replay.state()
		return eof
	case b.rest != nil:
		return b.rest.eof
	}
	return true
}
