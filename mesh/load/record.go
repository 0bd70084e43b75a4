package load

import (
	"bufio"
	"io"
	"strconv"
	"sync"

	"github.com/meshproof/meshproof/reports/record"
)

// recorder takes every finished sample: into the histograms, into the samples when they are kept, and
// as one line of the raw log. Workers call record concurrently; one short critical section per request.
type recorder struct {
	mu      sync.Mutex
	hist    *record.HistSet
	phases  []Phase
	keep    bool
	samples []record.Sample // by Seq − 1

	raw    *bufio.Writer
	jsonl  bool
	grpc   bool // gRPC calls: each line ends with the call's grpc_status
	line   []byte
	rawErr error

	onSample func(record.Sample) // Config.OnSample, called outside the lock
}

func newRecorder(hist *record.HistSet, phases []Phase, raw io.Writer, format string, keep, grpc bool, capHint int) *recorder {
	r := &recorder{hist: hist, phases: phases, keep: keep, jsonl: format == RawJSONL, grpc: grpc}
	if keep {
		// Reserve for the first 65,536 samples at most: a long load grows the slice as samples arrive
		// instead of taking gigabytes before the first request (issue #18).
		r.samples = make([]record.Sample, 0, min(capHint, 1<<16))
	}
	if raw != nil {
		r.raw = bufio.NewWriterSize(raw, 64<<10)
		switch {
		case r.jsonl:
		case grpc:
			r.write([]byte("seq,phase,intended_ns,sent_ns,latency_ns,uncorrected_ns,status,error,grpc_status\n"))
		default:
			r.write([]byte("seq,phase,intended_ns,sent_ns,latency_ns,uncorrected_ns,status,error\n"))
		}
	}
	return r
}

func (r *recorder) record(s record.Sample, phase int) {
	if r.onSample != nil {
		r.onSample(s)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist.Record(s, phase)
	if r.keep {
		i := int(s.Seq - 1)
		if i >= len(r.samples) {
			if i < cap(r.samples) {
				r.samples = r.samples[:i+1]
			} else {
				r.samples = append(r.samples, make([]record.Sample, i+1-len(r.samples))...)
			}
		}
		r.samples[i] = s
	}
	if r.raw != nil && r.rawErr == nil {
		r.write(r.format(s, phase))
	}
}

func (r *recorder) write(b []byte) {
	if _, err := r.raw.Write(b); err != nil && r.rawErr == nil {
		r.rawErr = err
	}
}

// format renders one raw log line: CSV seq,phase,intended_ns,sent_ns,latency_ns,uncorrected_ns,status,error
// or the same fields as a JSON object; a gRPC run adds grpc_status (the code's number) last.
func (r *recorder) format(s record.Sample, phase int) []byte {
	b := r.line[:0]
	name := r.phases[phase].Name
	if r.jsonl {
		b = append(b, `{"seq":`...)
		b = strconv.AppendUint(b, s.Seq, 10)
		b = append(b, `,"phase":`...)
		b = strconv.AppendQuote(b, name)
		b = append(b, `,"intended_ns":`...)
		b = strconv.AppendInt(b, int64(s.Intended), 10)
		b = append(b, `,"sent_ns":`...)
		b = strconv.AppendInt(b, int64(s.Sent), 10)
		b = append(b, `,"latency_ns":`...)
		b = strconv.AppendInt(b, int64(s.Latency), 10)
		b = append(b, `,"uncorrected_ns":`...)
		b = strconv.AppendInt(b, int64(s.Uncorrected()), 10)
		b = append(b, `,"status":`...)
		b = strconv.AppendInt(b, int64(s.Status), 10)
		b = append(b, `,"error":`...)
		b = strconv.AppendQuote(b, s.Error)
		if r.grpc {
			b = append(b, `,"grpc_status":`...)
			b = strconv.AppendInt(b, int64(s.GRPCStatus), 10)
		}
		b = append(b, "}\n"...)
	} else {
		b = strconv.AppendUint(b, s.Seq, 10)
		b = append(b, ',')
		b = appendCSV(b, name)
		for _, v := range []int64{int64(s.Intended), int64(s.Sent), int64(s.Latency), int64(s.Uncorrected()), int64(s.Status)} {
			b = append(b, ',')
			b = strconv.AppendInt(b, v, 10)
		}
		b = append(b, ',')
		b = append(b, s.Error...)
		if r.grpc {
			b = append(b, ',')
			b = strconv.AppendInt(b, int64(s.GRPCStatus), 10)
		}
		b = append(b, '\n')
	}
	r.line = b
	return b
}

// appendCSV appends a CSV field, quoted when it needs to be.
func appendCSV(b []byte, s string) []byte {
	quote := false
	for _, c := range []byte(s) {
		if c == ',' || c == '"' || c == '\n' || c == '\r' {
			quote = true
		}
	}
	if !quote {
		return append(b, s...)
	}
	b = append(b, '"')
	for _, c := range []byte(s) {
		if c == '"' {
			b = append(b, '"')
		}
		b = append(b, c)
	}
	return append(b, '"')
}

// finish seals the histograms and flushes the raw log.
func (r *recorder) finish() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.hist.Finish()
	if r.raw != nil && r.rawErr == nil {
		r.rawErr = r.raw.Flush()
	}
}
