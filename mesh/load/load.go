// Package load generates open-loop HTTP load: requests go out at their intended times whatever the
// system under test does, and latency counts from the intended time (the coordinated-omission
// correction of wrk2 and Nighthawk's open loop), with the time from the actual send kept alongside.
package load

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/meshproof/meshproof/reports"
)

// Defaults and limits of a Config.
const (
	DefaultMethod      = http.MethodGet
	DefaultTimeout     = 30 * time.Second
	DefaultMaxInFlight = 10000
	MaxRequests        = 100_000_000 // Rate × Duration above this is refused (the samples alone would not fit)
)

// HeaderRequestID carries "mp-<seq>" on every request, so that proxies and upstreams can name it.
const HeaderRequestID = "x-request-id"

// Config describes one open-loop run.
type Config struct {
	URL      string      // absolute http:// or https:// URL
	Method   string      // default GET
	Header   http.Header // sent on every request; a "Host" entry sets the request's Host
	Body     []byte      // sent on every request
	Rate     float64     // requests per second, > 0
	Duration time.Duration
	Timeout  time.Duration // per request, from the actual send to the end of the body; default 30s
	// MaxInFlight caps concurrent requests; default 10000. When the cap is reached the generator waits
	// for a slot: nothing is dropped, and the intended times keep running, so the wait shows as send lag
	// and in the corrected latency of every delayed request (and as reports.Summary.RateHeld = false
	// when it grows).
	MaxInFlight int
}

// check validates the config and fills in the defaults.
func (c Config) check() (Config, error) {
	if c.Method == "" {
		c.Method = DefaultMethod
	}
	if c.Timeout == 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MaxInFlight == 0 {
		c.MaxInFlight = DefaultMaxInFlight
	}
	u, err := url.Parse(c.URL)
	switch {
	case err != nil || u.Scheme != "http" && u.Scheme != "https" || u.Host == "":
		return c, fmt.Errorf("load: URL %q: want an absolute http:// or https:// URL", c.URL)
	case !(c.Rate > 0) || math.IsInf(c.Rate, 0):
		return c, fmt.Errorf("load: rate %g: want a finite number of requests/s > 0", c.Rate)
	case c.Duration <= 0:
		return c, fmt.Errorf("load: duration %s: want > 0", c.Duration)
	case c.Timeout < 0:
		return c, fmt.Errorf("load: timeout %s: want > 0 (or 0 for the default %s)", c.Timeout, DefaultTimeout)
	case c.MaxInFlight < 0:
		return c, fmt.Errorf("load: max in flight %d: want > 0 (or 0 for the default %d)", c.MaxInFlight, DefaultMaxInFlight)
	case c.Rate*c.Duration.Seconds() > MaxRequests:
		return c, fmt.Errorf("load: %g/s for %s is more than %d requests", c.Rate, c.Duration, MaxRequests)
	}
	if _, err := http.NewRequest(c.Method, c.URL, nil); err != nil {
		return c, fmt.Errorf("load: %w", err)
	}
	return c, nil
}

// Run drives open-loop load and returns one sample per request in Seq order (Seq 1, 2, …) and the run's
// start, from which all sample offsets count. Request Seq i+1 is intended at start + i/Rate for every
// i/Rate < Duration; each is sent by its own goroutine at its intended time (later only when MaxInFlight
// requests are in flight) with the header x-request-id "mp-<seq>", over keep-alive connections. The full
// response body is read and discarded before the response's end time is taken. Redirects are not
// followed: a 3xx is the response.
//
// Run returns when every request has finished. When ctx is cancelled it stops sending; requests in
// flight end at once with Error "canceled" (as does a due request still waiting for a slot, its Sent
// being the time it gave up), requests not yet due are left out, and Run returns the samples so far with
// a nil error: the caller learns of the cancellation from ctx. The error is non-nil only for an invalid
// Config.
func Run(ctx context.Context, cfg Config) ([]reports.Sample, time.Time, error) {
	cfg, err := cfg.check()
	if err != nil {
		return nil, time.Time{}, err
	}
	tr := &http.Transport{
		Proxy:               nil, // never an environment proxy: the URL is the system under test
		DialContext:         (&net.Dialer{Timeout: cfg.Timeout, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        cfg.MaxInFlight,
		MaxIdleConnsPerHost: cfg.MaxInFlight,
		IdleConnTimeout:     90 * time.Second,
		TLSHandshakeTimeout: cfg.Timeout,
		DisableCompression:  true, // measure the bytes as served
	}
	defer tr.CloseIdleConnections()
	client := &http.Client{
		Transport:     tr,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}

	samples := make([]reports.Sample, count(cfg.Rate, cfg.Duration))
	slots := make(chan struct{}, cfg.MaxInFlight)
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	var wg sync.WaitGroup
	start := time.Now()
	n := 0 // samples taken
schedule:
	for i := range samples {
		s := &samples[i]
		s.Seq, s.Intended = uint64(i+1), offset(i, cfg.Rate)
		if wait := s.Intended - time.Since(start); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				break schedule
			}
		}
		if ctx.Err() != nil {
			break
		}
		n++
		select {
		case slots <- struct{}{}:
		case <-ctx.Done():
			s.Sent = time.Since(start)
			s.Latency, s.Error = s.Sent-s.Intended, reports.ErrCanceled
			break schedule
		}
		wg.Go(func() {
			defer func() { <-slots }()
			send(ctx, client, cfg, start, s)
		})
	}
	wg.Wait()
	return samples[:n], start, nil
}

// send makes one request and fills in its sample.
func send(ctx context.Context, client *http.Client, cfg Config, start time.Time, s *reports.Sample) {
	rctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	var body io.Reader
	if cfg.Body != nil {
		body = bytes.NewReader(cfg.Body)
	}
	req, err := http.NewRequestWithContext(rctx, cfg.Method, cfg.URL, body)
	if err != nil { // checked by Config.check
		panic(err)
	}
	if cfg.Header != nil {
		req.Header = cfg.Header.Clone()
	}
	req.Header.Set(HeaderRequestID, "mp-"+strconv.FormatUint(s.Seq, 10))
	if h := req.Header.Get("Host"); h != "" {
		req.Host = h
	}

	s.Sent = time.Since(start)
	resp, err := client.Do(req)
	if err == nil {
		s.Status = resp.StatusCode
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	s.Latency = time.Since(start) - s.Intended
	if err != nil {
		s.Error = classify(ctx, rctx, err)
	}
}

// classify names the kind of a request's error. Once the run is cancelled every failure counts as
// "canceled": it is the harness's doing.
func classify(ctx, rctx context.Context, err error) string {
	var ne net.Error
	switch {
	case ctx.Err() != nil:
		return reports.ErrCanceled
	case rctx.Err() != nil || errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return reports.ErrTimeout
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE):
		return reports.ErrReset
	case errors.Is(err, syscall.ECONNREFUSED):
		return reports.ErrRefused
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return reports.ErrEOF
	}
	return reports.ErrOther
}

// offset is the intended send time of request i (from 0), rounded to the nanosecond.
func offset(i int, rate float64) time.Duration {
	return time.Duration(math.Round(float64(i) * float64(time.Second) / rate))
}

// count is the number of requests intended before d: the i with offset(i) < d.
func count(rate float64, d time.Duration) int {
	n := int(math.Ceil(rate * d.Seconds()))
	for n > 0 && offset(n-1, rate) >= d {
		n--
	}
	for offset(n, rate) < d {
		n++
	}
	return n
}
