package proxy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// Envoy's file flushing (AccessLogFileImpl, source/common/access_log/access_log_manager_impl.cc): the
// writer is woken once 64 KiB are buffered (MIN_FLUSH_SIZE) and every file_flush_interval_msec
// (default 1 s) otherwise, so that lines are written in batches, not one write per request.
const (
	logFlushSize     = 64 << 10
	logFlushInterval = time.Second
)

// defaultAccessLogBuffer is how many bytes of formatted lines a log file holds while its writer is
// behind (Options.AccessLogBufferBytes); a line that does not fit is dropped and counted.
const defaultAccessLogBuffer = 4 << 20

// accessLogHandler is the outermost layer of a listener with access logs: it gives each request a
// streamInfo that the layers below fill in, and once the request ended (its response sent, or the
// stream reset) writes one line to each log whose filter matches (Envoy's ActiveStream logs at
// its end, ConnectionManagerImpl::doDeferredStreamDestroy → log(AccessLogType::DownstreamEnd)).
type accessLogHandler struct {
	next     http.Handler
	logs     []accessLog
	clk      clock.Clock
	hostname string
}

var _ http.Handler = (*accessLogHandler)(nil)

// accessLog is one HCM access_log entry: its filter, its format and the file it writes to.
type accessLog struct {
	filter *config.AccessLogFilter
	format *config.BodyFormat
	file   *logFile
}

func (h *accessLogHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	si := &streamInfo{start: h.clk.Now()}
	r = withStreamInfo(r, si)
	defer h.log(w, r, si) // also when a started response is reset (the router's panic)
	h.next.ServeHTTP(w, r)
}

// log formats the request's line for each log (on the request's goroutine, as Envoy formats on its
// worker) and hands it to the log's file, which never blocks.
func (h *accessLogHandler) log(w http.ResponseWriter, r *http.Request, si *streamInfo) {
	resp := si.respHeader
	if resp == nil {
		resp = w.Header()
	}
	fc := formatContext{r: r, req: r.Header, resp: resp, status: si.code, start: si.start, route: si.route,
		cluster: si.cluster, upstream: si.upstream, hostname: h.hostname, si: si, end: h.clk.Now()}
	rc := replyContext{h: resp, code: si.code, fc: &fc}
	for i := range h.logs {
		l := &h.logs[i]
		if !logFilterMatches(l.filter, r, si.code) {
			continue
		}
		l.file.write(formatLine(&rc, l.format))
	}
}

// logFilterMatches applies an access log's filter (Envoy's StatusCodeFilter and HeaderFilter,
// source/common/access_log/access_log_impl.cc): the status sent, the request's headers.
func logFilterMatches(f *config.AccessLogFilter, r *http.Request, code int) bool {
	switch {
	case f == nil:
		return true
	case f.StatusCode != nil:
		return statusCompare(f.StatusCode, code)
	case f.Header != nil:
		return HeaderMatches(*f.Header, r.Header)
	}
	return true
}

// defaultLogFormat is Envoy's default format, parsed once.
var defaultLogFormat = func() *config.BodyFormat {
	f, _, err := config.ParseAccessLogFormat(config.DefaultAccessLogFormat)
	if err != nil {
		panic(err)
	}
	return &config.BodyFormat{Text: f}
}()

// formatLine formats one line: a text format as it is (a value not available is "-"), a json_format
// object on one line ending in a newline.
func formatLine(rc *replyContext, f *config.BodyFormat) []byte {
	if f == nil {
		f = defaultLogFormat
	}
	if f.JSON != nil {
		b, _ := json.Marshal(rc.object(f.JSON)) // maps, strings and numbers only: no error
		return append(b, '\n')
	}
	return []byte(rc.text(f.Text))
}

// logFile is one access log destination shared by every access log that names its path (Envoy's
// AccessLogManagerImpl keeps one AccessLogFileImpl per path): lines are appended to a bounded buffer,
// on the request path, and written by the file's own goroutine. A line that does not fit is dropped
// and counted: a slow disk never holds a request (Envoy's buffer has no bound; a proxy that must not
// block has to drop instead).
type logFile struct {
	path  string
	open  func() (io.WriteCloser, error)
	limit int
	tick  clock.Ticker // the flush interval, on the proxy's clock

	mu       sync.Mutex
	buf      []byte
	reopen   bool
	closed   bool
	wake     chan struct{} // cap 1: there is something to do
	done     chan struct{} // closed when the writer goroutine returned
	out      io.WriteCloser
	st       logFileStats
	flushReq []chan struct{} // flush waiters, answered once what was buffered before is written
}

// logFileStats are Envoy's file stats (FILESYSTEM_STATS, envoy/filesystem/filesystem.h), shared by
// every file as in Envoy, and meshproof's write_dropped.
type logFileStats struct {
	writeBuffered, writeCompleted, writeFailed, reopenFailed, writeDropped, flushedByTimer *stats.Counter
	totalBuffered                                                                          *stats.Gauge
}

func newLogFileStats(store *stats.Store) logFileStats {
	return logFileStats{writeBuffered: store.Counter("filesystem.write_buffered"),
		writeCompleted: store.Counter("filesystem.write_completed"), writeFailed: store.Counter("filesystem.write_failed"),
		reopenFailed: store.Counter("filesystem.reopen_failed"), writeDropped: store.Counter("filesystem.write_dropped"),
		flushedByTimer: store.Counter("filesystem.flushed_by_timer"),
		totalBuffered:  store.Gauge("filesystem.write_total_buffered")}
}

// openLogFile opens path for appending (created 0644 when missing), or the process's stdout / stderr.
func openLogFile(path string) (io.WriteCloser, error) {
	switch path {
	case config.AccessLogStdout:
		return nopCloser{os.Stdout}, nil
	case config.AccessLogStderr:
		return nopCloser{os.Stderr}, nil
	}
	return os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o644)
}

type nopCloser struct{ io.Writer }

func (nopCloser) Close() error { return nil }

// newLogFile opens the file and starts its writer, which flushes on clk's ticks.
func newLogFile(path string, open func(string) (io.WriteCloser, error), limit int, st logFileStats, clk clock.Clock) (*logFile, error) {
	if open == nil {
		open = openLogFile
	}
	if limit <= 0 {
		limit = defaultAccessLogBuffer
	}
	f := &logFile{path: path, open: func() (io.WriteCloser, error) { return open(path) }, limit: limit,
		wake: make(chan struct{}, 1), done: make(chan struct{}), st: st}
	out, err := f.open()
	if err != nil {
		return nil, fmt.Errorf("access log %q: %w", path, err)
	}
	f.out = out
	f.tick = clk.NewTicker(logFlushInterval)
	go f.run()
	return f, nil
}

// write buffers a line, or drops it when the buffer is full; it never waits for the writer.
func (f *logFile) write(line []byte) {
	f.mu.Lock()
	if f.closed || len(f.buf)+len(line) > f.limit {
		f.mu.Unlock()
		f.st.writeDropped.Inc()
		return
	}
	f.buf = append(f.buf, line...)
	full := len(f.buf) >= logFlushSize
	f.mu.Unlock()
	f.st.writeBuffered.Inc()
	f.st.totalBuffered.Add(int64(len(line)))
	if full {
		f.signal()
	}
}

func (f *logFile) signal() {
	select {
	case f.wake <- struct{}{}:
	default:
	}
}

// run is the writer goroutine: it takes what is buffered and writes it, reopening the file first when
// asked (admin POST /reopen_logs), until the file is closed and drained.
func (f *logFile) run() {
	defer close(f.done)
	defer f.tick.Stop()
	var spare []byte
	for {
		byTimer := false
		select {
		case <-f.wake:
		case <-f.tick.C():
			byTimer = true
		}
		f.mu.Lock()
		batch, reopen, closed, waiters := f.buf, f.reopen, f.closed, f.flushReq
		f.buf, f.reopen, f.flushReq = spare[:0], false, nil
		f.mu.Unlock()
		if reopen {
			f.reopenFile()
		}
		if len(batch) > 0 {
			if byTimer {
				f.st.flushedByTimer.Inc()
			}
			if _, err := f.out.Write(batch); err != nil {
				f.st.writeFailed.Inc()
			} else {
				f.st.writeCompleted.Inc()
			}
			f.st.totalBuffered.Add(-int64(len(batch)))
		}
		spare = batch
		for _, w := range waiters {
			close(w)
		}
		if closed {
			_ = f.out.Close()
			return
		}
	}
}

// reopenFile closes and opens the file again, as Envoy's AccessLogFileImpl::reopen (a rotated file is
// replaced by a new one at the path); if it cannot be opened, the old one is kept.
func (f *logFile) reopenFile() {
	out, err := f.open()
	if err != nil {
		f.st.reopenFailed.Inc()
		return
	}
	_ = f.out.Close()
	f.out = out
}

// requestReopen has the writer reopen the file before its next write.
func (f *logFile) requestReopen() {
	f.mu.Lock()
	f.reopen = true
	f.mu.Unlock()
	f.signal()
}

// flush waits until every line buffered before it is written, or ctx ends.
func (f *logFile) flush(ctx context.Context) error {
	ch := make(chan struct{})
	f.mu.Lock()
	if f.closed {
		f.mu.Unlock()
		return nil
	}
	f.flushReq = append(f.flushReq, ch)
	f.mu.Unlock()
	f.signal()
	select {
	case <-ch:
		return nil
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// close stops taking lines, writes what is buffered and closes the file; it waits for that until ctx
// ends.
func (f *logFile) close(ctx context.Context) error {
	f.mu.Lock()
	f.closed = true
	f.mu.Unlock()
	f.signal()
	select {
	case <-f.done:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

// statusCompare is an access log ComparisonFilter on a status (ComparisonFilter::compareAgainstValue,
// source/common/access_log/access_log_impl.cc).
func statusCompare(f *config.StatusCodeFilter, code int) bool {
	v := int(f.Value)
	switch f.Op {
	case "GE":
		return code >= v
	case "LE":
		return code <= v
	default:
		return code == v
	}
}

// itoa64 formats a count.
func itoa64(n int64) string { return strconv.FormatInt(n, 10) }
