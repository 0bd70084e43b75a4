package tracing

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	"google.golang.org/protobuf/proto"
)

// maxExportBytes bounds one export request's body (the SDK's batches are far smaller).
const maxExportBytes = 32 << 20

// Receiver is an OTLP/HTTP trace receiver (POST /v1/traces, protobuf or JSON), for the spans of
// components running in other processes (the docker runner's containers): it keeps what they export,
// up to a span limit, for traces.otlp.json.
type Receiver struct {
	max     int
	forward string // also POST every export here ("": no)
	client  *http.Client

	mu       sync.Mutex
	requests []*coltracepb.ExportTraceServiceRequest
	spans    int
	dropped  int

	srv  *http.Server
	ln   net.Listener
	done chan struct{}
}

// NewReceiver returns a receiver that keeps at most maxSpans spans (0: DefaultMaxSpans) and, when forward
// is an OTLP/HTTP traces URL, passes every export on to it as received (best effort, as an exporter
// would: a failure there is not the sender's).
func NewReceiver(maxSpans int, forward string) *Receiver {
	if maxSpans <= 0 {
		maxSpans = DefaultMaxSpans
	}
	return &Receiver{max: maxSpans, forward: forward, client: &http.Client{Timeout: 10 * time.Second}}
}

// Start listens on addr (e.g. the run network's gateway address, "10.1.2.1:0") and serves in the
// background until Close.
func (r *Receiver) Start(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("tracing: OTLP receiver: %w", err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/traces", r.export)
	r.ln, r.done = ln, make(chan struct{})
	r.srv = &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		defer close(r.done)
		_ = r.srv.Serve(ln) // ends with Close
	}()
	return nil
}

// URL is the receiver's traces endpoint, "http://host:port/v1/traces".
func (r *Receiver) URL() string { return "http://" + r.ln.Addr().String() + "/v1/traces" }

// Close stops the receiver; what it received stays readable.
func (r *Receiver) Close() error {
	if r.srv == nil {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := r.srv.Shutdown(ctx) // lets an export in progress finish
	<-r.done
	return err
}

// Requests returns what was received, in arrival order.
func (r *Receiver) Requests() []*coltracepb.ExportTraceServiceRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]*coltracepb.ExportTraceServiceRequest(nil), r.requests...)
}

// Spans is how many spans were kept; Dropped how many arrived past the limit.
func (r *Receiver) Spans() (kept, dropped int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.spans, r.dropped
}

// export serves one OTLP/HTTP export (https://opentelemetry.io/docs/specs/otlp/#otlphttp): a binary
// protobuf or JSON ExportTraceServiceRequest, answered with an empty ExportTraceServiceResponse in the
// same encoding.
func (r *Receiver) export(w http.ResponseWriter, req *http.Request) {
	body, err := io.ReadAll(io.LimitReader(req.Body, maxExportBytes+1))
	if err != nil || len(body) > maxExportBytes {
		http.Error(w, "request body unreadable or larger than 32 MiB", http.StatusRequestEntityTooLarge)
		return
	}
	msg := &coltracepb.ExportTraceServiceRequest{}
	isJSON := strings.HasPrefix(req.Header.Get("Content-Type"), "application/json")
	if isJSON {
		msg, err = UnmarshalOTLPJSON(body)
	} else {
		err = proto.Unmarshal(body, msg)
	}
	if err != nil {
		http.Error(w, "not an OTLP ExportTraceServiceRequest: "+err.Error(), http.StatusBadRequest)
		return
	}
	r.keep(msg)
	if r.forward != "" {
		if fwd, err := http.NewRequestWithContext(req.Context(), http.MethodPost, r.forward, bytes.NewReader(body)); err == nil {
			fwd.Header.Set("Content-Type", req.Header.Get("Content-Type"))
			if resp, err := r.client.Do(fwd); err == nil {
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}
	}
	if isJSON {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte("{}"))
		return
	}
	w.Header().Set("Content-Type", "application/x-protobuf")
	out, _ := proto.Marshal(&coltracepb.ExportTraceServiceResponse{})
	_, _ = w.Write(out)
}

// keep stores msg if its spans fit under the limit, else counts them as dropped.
func (r *Receiver) keep(msg *coltracepb.ExportTraceServiceRequest) {
	n := 0
	for _, rs := range msg.GetResourceSpans() {
		for _, ss := range rs.GetScopeSpans() {
			n += len(ss.GetSpans())
		}
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.spans+n > r.max {
		r.dropped += n
		return
	}
	r.spans += n
	r.requests = append(r.requests, msg)
}
