// Package clientload is the proxy's specs' client load: workers sending GETs to the proxy over
// keep-alive connections while a spec changes its configuration, counting every failure. It is a
// test helper (it uses Ginkgo's cleanups and Gomega's Eventually) shared by the proxy's packages'
// specs; the product's load generator is mesh/load.
package clientload

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/onsi/ginkgo/v2"
	"github.com/onsi/gomega"
)

// Load keeps workers sending GETs to a URL over keep-alive connections (a client that honours
// Connection: close, net/http's) until Stop is called; it counts the successes and the failures
// (a transport error or a status other than 200) and keeps the first failure.
type Load struct {
	OK, Failed atomic.Int64
	InFlight   atomic.Int64 // requests started and not yet answered
	first      atomic.Value
	// send, when it returns false, holds the workers back (a load balancer that took the proxy out).
	send func() bool
	stop func()
}

// Start starts workers sending to url; send (nil: always) is asked before each request. The spec's
// cleanup stops them.
func Start(url string, workers int, send func() bool) *Load {
	l := &Load{send: send}
	tr := &http.Transport{MaxIdleConnsPerHost: workers}
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				// Counted before the balancer is asked: once it said no, a wait for no request in
				// flight cannot miss one it let through.
				l.InFlight.Add(1)
				if l.send != nil && !l.send() {
					l.InFlight.Add(-1)
					time.Sleep(time.Millisecond) // the balancer's idle wait: no request is timed by it
					continue
				}
				resp, err := c.Get(url)
				if err == nil {
					_, err = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if err == nil && resp.StatusCode != http.StatusOK {
						err = &StatusError{Code: resp.StatusCode}
					}
				}
				l.InFlight.Add(-1)
				if err != nil {
					l.Failed.Add(1)
					l.first.CompareAndSwap(nil, err.Error())
					continue
				}
				l.OK.Add(1)
			}
		}()
	}
	var once sync.Once
	l.stop = func() {
		once.Do(func() {
			cancel()
			wg.Wait()
			tr.CloseIdleConnections()
		})
	}
	ginkgo.DeferCleanup(l.Stop)
	return l
}

// Stop stops the workers once their requests are answered and closes their connections.
func (l *Load) Stop() { l.stop() }

// FirstFailure is the first failure's message (nil: none).
func (l *Load) FirstFailure() any { return l.first.Load() }

// WaitFor waits (10 s at most) until the load has n more successes than now.
func (l *Load) WaitFor(n int64) {
	ginkgo.GinkgoHelper()
	target := l.OK.Load() + n
	gomega.Eventually(l.OK.Load).WithTimeout(10 * time.Second).WithPolling(time.Millisecond).
		Should(gomega.BeNumerically(">=", target))
}

// StatusError is a response whose status is not 200.
type StatusError struct{ Code int }

// Error names the code itself (its text alone would make 502 and an unknown 599 hard to tell apart).
func (e *StatusError) Error() string { return fmt.Sprintf("status %d", e.Code) }
