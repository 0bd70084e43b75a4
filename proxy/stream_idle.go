package proxy

import (
	"context"
	"errors"
	"io"
	"net/http"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/internal/h1"
)

// errStreamIdle ends a request's context when its stream idle timeout fires.
var errStreamIdle = errors.New("stream idle timeout")

// streamIdleTimeout is the idle timeout of a request on route: the route's idle_timeout when set (0:
// none), else the HCM's stream_idle_timeout (0: none), as Envoy's ActiveStream::refreshIdleTimeout
// (source/common/http/conn_manager_impl.cc).
func streamIdleTimeout(a *config.RouteAction, hcm time.Duration) time.Duration {
	if a.IdleTimeout != nil {
		return *a.IdleTimeout
	}
	return hcm
}

// streamIdle is a request's stream idle timer, as Envoy's ActiveStream stream_idle_timer_
// (source/common/http/conn_manager_impl.cc): armed when the stream starts and re-armed by its activity
// in either direction — each piece of the request body read, the response headers, each piece of the
// response body (resetIdleTimer). When it fires (onIdleTimeout) the request's context ends with
// errStreamIdle and the upstream exchange under way is interrupted; the router then answers "stream
// timeout" or, once the response has started, resets the downstream. Like idleTimer, activity only
// moves its deadline: the one timer, when it fires early, waits again for what is left.
type streamIdle struct {
	idleClock
	// rc, while the request body is read, is the downstream's response controller: firing then ends
	// the read under way by its read deadline (set by reading under the clock's lock).
	rc *http.ResponseController
}

func newStreamIdle(clk clock.Clock, d time.Duration, cancel context.CancelCauseFunc, ab *h1.Aborter) *streamIdle {
	s := &streamIdle{}
	s.start(clk, d, func() {
		cancel(errStreamIdle) // first: the router reads what ended the request from its context
		if s.rc != nil {
			_ = s.rc.SetReadDeadline(time.Now()) // a socket deadline: the real clock's
		}
		if ab != nil {
			ab.Interrupt()
		}
	})
	return s
}

// touch re-arms the timer: the stream moved. Nil-safe: a stream without idle timeout has none.
func (s *streamIdle) touch() {
	if s != nil {
		s.idleClock.touch()
	}
}

// fired reports whether the timer ended the stream.
func (s *streamIdle) fired() bool {
	return s != nil && s.hasFired()
}

// reading sets (nil: clears) the response controller of the request body read under way.
func (s *streamIdle) reading(rc *http.ResponseController) {
	if s == nil {
		return
	}
	s.mu.Lock()
	s.rc = rc
	s.mu.Unlock()
}

// stop disarms the timer for good.
func (s *streamIdle) stop() {
	if s != nil {
		s.idleClock.stop()
	}
}

// activeReader re-arms a stream's idle timer at each read that brings bytes: the request body as it is
// read, or the response body as it is relayed.
type activeReader struct {
	r io.Reader
	s *streamIdle
}

func (a activeReader) Read(p []byte) (int, error) {
	n, err := a.r.Read(p)
	if n > 0 {
		a.s.touch()
	}
	return n, err
}

// streamIdleTimedOut answers a request whose stream idle timeout fired, as Envoy's
// ActiveStream::onIdleTimeout (source/common/http/conn_manager_impl.cc): downstream_rq_idle_timeout,
// and a local reply "stream timeout", 504 once the whole request was received and 408 before
// (Utility::maybeRequestTimeoutCode). w nil: the response has started, and the caller resets the stream.
func (cm *connManager) streamIdleTimedOut(w http.ResponseWriter, r *http.Request, complete bool) {
	cm.st.rqIdleTimeout.Inc()
	infoOf(r).fail(flagStreamIdleTimeout, "stream_idle_timeout")
	if w == nil {
		return
	}
	code := http.StatusRequestTimeout
	if complete {
		code = http.StatusGatewayTimeout
	}
	cm.localReply(w, r, nil, code, "stream timeout")
}
