package load

import (
	"context"
	"errors"
	"os"
	"syscall"
	"time"
	"unsafe"
)

// waiter sleeps the open-loop dispatcher until each intended send time. On Linux it waits on a timerfd
// registered with Go's network poller: the runtime's own timers wake an idle process with millisecond
// granularity (epoll_wait takes milliseconds), which would add up to 1ms of send lag to every request
// at low rates; a timerfd wakes it within tens of microseconds. It falls back to a time.Timer if the
// timerfd cannot be made.
type waiter struct {
	f     *os.File
	fd    uintptr
	buf   [8]byte
	timer *time.Timer
	stop  func() bool
}

type timespec struct{ sec, nsec int64 }
type itimerspec struct{ interval, value timespec }

func newWaiter(ctx context.Context) *waiter {
	w := &waiter{}
	fd, _, errno := syscall.Syscall(syscall.SYS_TIMERFD_CREATE, 1 /* CLOCK_MONOTONIC */, syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
	if errno != 0 {
		w.timer = time.NewTimer(time.Hour)
		return w
	}
	w.fd, w.f = fd, os.NewFile(fd, "timerfd")
	w.stop = context.AfterFunc(ctx, func() { _ = w.f.SetReadDeadline(time.Unix(1, 0)) })
	return w
}

// until waits until t, or until ctx is done (then it returns ctx's error).
func (w *waiter) until(ctx context.Context, t time.Time) error {
	d := time.Until(t)
	if d <= 0 {
		return ctx.Err()
	}
	if w.f == nil {
		w.timer.Reset(d)
		select {
		case <-w.timer.C:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	its := itimerspec{value: timespec{int64(d / time.Second), int64(d % time.Second)}}
	if _, _, errno := syscall.Syscall6(syscall.SYS_TIMERFD_SETTIME, w.fd, 0, uintptr(unsafe.Pointer(&its)), 0, 0, 0); errno != 0 {
		time.Sleep(d)
		return ctx.Err()
	}
	for {
		_, err := w.f.Read(w.buf[:])
		if err == nil {
			return ctx.Err()
		}
		if errors.Is(err, os.ErrDeadlineExceeded) || ctx.Err() != nil {
			return ctx.Err()
		}
		if !errors.Is(err, syscall.EINTR) && !errors.Is(err, syscall.EAGAIN) {
			time.Sleep(time.Until(t))
			return ctx.Err()
		}
	}
}

func (w *waiter) close() {
	if w.f != nil {
		w.stop()
		_ = w.f.Close()
	} else {
		w.timer.Stop()
	}
}
