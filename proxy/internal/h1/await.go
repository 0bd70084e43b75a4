package h1

import (
	"context"
	"os"
	"slices"
	"sync"
	"time"
)

// Await is how a request waits in a pool's pending queue for what the pool hands it (a connection, a
// stream): it receives from ch until ctx ends or the deadline passes (zero: none). handed is true with
// what it received; otherwise it gave up with err (ctx.Err() or os.ErrDeadlineExceeded) and withdrew w
// from *waiters under mu — or, when the pool handed it something as it gave up, gave that back with
// giveBack so that the next request has it. Both pools (HTTP/1.1 here, HTTP/2 in the proxy) queue the
// same way, as Envoy's pending requests of ConnPoolImplBase (source/common/conn_pool/conn_pool_base.cc).
func Await[W comparable, R any](ctx context.Context, deadline time.Time, ch <-chan R, mu *sync.Mutex, waiters *[]W, w W,
	giveBack func(R)) (r R, handed bool, err error) {
	var expired <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		expired = t.C
	}
	select {
	case r = <-ch:
		return r, true, nil
	case <-ctx.Done():
		err = ctx.Err()
	case <-expired:
		err = os.ErrDeadlineExceeded
	}
	mu.Lock()
	if i := slices.Index(*waiters, w); i >= 0 {
		*waiters = slices.Delete(*waiters, i, i+1)
		mu.Unlock()
		return r, false, err
	}
	mu.Unlock()
	giveBack(<-ch) // handed as it gave up
	return r, false, err
}
