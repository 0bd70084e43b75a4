package faults

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/meshproof/meshproof/faults/field"
)

// The "app" of a calling service: for each request it serves, an instance calls other services
// through its own outbound sidecar (an HTTP/1.1 proxy on loopback that routes by the Host header),
// step after step, the calls of a step in parallel, and answers once they ended.

// Headers of the calls and of the answers of a calling service.
const (
	// HeaderFailedCall names the callee of the required call that failed, on the OnFailure answer.
	HeaderFailedCall = "x-meshproof-failed-call"
	// HeaderExpectedTimeout is the deadline's budget of an incoming request, in ms (as Envoy sets it
	// on the requests it sends upstream).
	HeaderExpectedTimeout = "x-envoy-expected-rq-timeout-ms"
	// HeaderUpstreamTimeout asks the sidecar for the call's timeout, in ms (as Envoy honours it).
	HeaderUpstreamTimeout = "x-envoy-upstream-rq-timeout-ms"
)

// DefaultOnFailure is the status a calling service answers when a required call failed and
// App.OnFailure is zero.
const DefaultOnFailure = http.StatusServiceUnavailable

// Error kinds of a CallResult: why a call got no complete HTTP response. They are the load
// generator's kinds (mesh/load), plus CallErrDeadline.
const (
	CallErrReset    = "reset"    // the connection was reset (ECONNRESET, EPIPE, ECONNABORTED)
	CallErrTimeout  = "timeout"  // the call's remaining deadline expired while it was in flight
	CallErrRefused  = "refused"  // the connection was refused (ECONNREFUSED)
	CallErrEOF      = "eof"      // the connection closed before a complete response
	CallErrCanceled = "canceled" // the caller's own request ended (its client went away, or Close)
	CallErrOther    = "other"    // anything else
	CallErrDeadline = "deadline" // not sent: the propagated deadline had already passed
)

// Span attributes of a calling service's spans.
const (
	AttrCallee       = attribute.Key("meshproof.callee")        // CLIENT span: the called service
	AttrCallOptional = attribute.Key("meshproof.call.optional") // CLIENT span: an optional call
	AttrFailedCall   = attribute.Key("meshproof.failed_call")   // SERVER span: the callee whose failure failed the request
	AttrOverload     = attribute.Key("meshproof.overload")      // SERVER span: OverloadQueueFull | OverloadQueueTimeout
)

// Call is one call a service makes to another for each request it serves.
type Call struct {
	Service  string `yaml:"service"`  // the callee (sent as the Host header to the sidecar)
	Path     string `yaml:"path"`     // default "/"; may hold a query string
	Method   string `yaml:"method"`   // default GET
	Optional bool   `yaml:"optional"` // its failure does not fail the caller
}

// Step is a set of calls made in parallel; a service's steps run one after another.
type Step struct {
	Calls []Call `yaml:"calls"`
}

// App is what a calling service does with each request beyond answering: its calls.
//
// After the request's delay (its service time: response latency and latency faults), and only when
// the decision is an answer (not a reset, hang, RST_STREAM or GOAWAY), the instance runs Steps in
// order. A call fails unless it got a 2xx or 3xx response in full (see CallResult.OK). When a
// required call of a step failed, later steps are not run and the instance answers OnFailure with
// an empty body and HeaderFailedCall; otherwise it answers what the fault decision says.
type App struct {
	Steps     []Step `yaml:"steps"`
	OnFailure int    `yaml:"on_failure"` // status answered when a required call failed; default 503
	// Sidecar is the host:port of the instance's outbound sidecar listener: a call goes to
	// http://<Sidecar><Path> with Host: <Service>. Required when there is a call.
	Sidecar string `yaml:"-"`
	// PropagateDeadline: an incoming request's budget is its HeaderExpectedTimeout (ms, counted from
	// its arrival; absent, unparsable or <= 0 = none). Each call is sent with HeaderUpstreamTimeout
	// set to what remains (at least 1 ms) and is bounded by it; a call whose budget is already spent
	// is not sent and fails with CallErrDeadline.
	PropagateDeadline bool `yaml:"propagate_deadline"`
	// OnCall, when set, receives every call's result (called concurrently; must be cheap).
	OnCall func(CallResult) `yaml:"-"`
	// Client sends the calls; nil = a keep-alive HTTP/1.1 client of the Upstream's own (no timeout,
	// no proxy from the environment, no compression, redirects not followed), closed by Close.
	Client *http.Client `yaml:"-"`
}

// CallResult is one call as the calling instance saw it.
type CallResult struct {
	Start    time.Time     // when it was sent (or found out of budget)
	Latency  time.Duration // until its whole response body was read, or it failed
	Callee   string
	Path     string
	Status   int    // 0 = no response
	Error    string // "" or one of the CallErr kinds
	Optional bool
	// RequestID is the x-request-id the call was sent with:
	// "<the caller request's x-request-id, or req>/<service>.<instance>.<k>", k counting the
	// instance's calls from 1.
	RequestID string
}

// OK reports whether the call succeeded: a 2xx or 3xx response received in full.
func (r CallResult) OK() bool { return r.Error == "" && r.Status >= 200 && r.Status < 400 }

// Validate checks a call: a service name, a path starting with "/", an upper-case method.
func (c Call) Validate() error {
	var errs []error
	switch {
	case c.Service == "":
		errs = append(errs, field.Errorf("service", "empty, want the callee's service name"))
	case strings.ContainsAny(c.Service, " /\t\r\n"):
		errs = append(errs, field.Errorf("service", "%q is not a service name (sent as the Host header)", c.Service))
	}
	if c.Path != "" && (!strings.HasPrefix(c.Path, "/") || strings.ContainsAny(c.Path, " \t\r\n")) {
		errs = append(errs, field.Errorf("path", "%q is not a path, want e.g. %q", c.Path, "/items"))
	}
	switch {
	case c.Method != strings.ToUpper(c.Method):
		errs = append(errs, field.Errorf("method", "%q is not upper case, want e.g. %q", c.Method, strings.ToUpper(c.Method)))
	case strings.ContainsAny(c.Method, " \t\r\n()<>@,;:\\\"/[]?={}"):
		errs = append(errs, field.Errorf("method", "%q is not a method, want e.g. GET", c.Method))
	}
	return errors.Join(errs...)
}

// Validate checks an app: each step has calls and each call is valid; on_failure is 0 (503) or
// 200..599; a sidecar host:port when there is a call.
func (a App) Validate() error {
	var errs []error
	calls := false
	for i, s := range a.Steps {
		path := fmt.Sprintf("steps[%d]", i)
		if len(s.Calls) == 0 {
			errs = append(errs, field.Errorf(path+".calls", "empty, want at least one call"))
		}
		for j, c := range s.Calls {
			errs = append(errs, field.Within(fmt.Sprintf("%s.calls[%d]", path, j), c.Validate())...)
			calls = true
		}
	}
	if a.OnFailure != 0 {
		errs = append(errs, checkStatus("on_failure", a.OnFailure))
	}
	switch {
	case a.Sidecar == "" && calls:
		errs = append(errs, field.Errorf("sidecar", "empty, want the host:port of the instance's outbound sidecar"))
	case a.Sidecar != "":
		if _, _, err := net.SplitHostPort(a.Sidecar); err != nil {
			errs = append(errs, field.Errorf("sidecar", "%q is not host:port: %w", a.Sidecar, err))
		}
	}
	return errors.Join(errs...)
}

// withDefaults returns a copy of a valid app with its defaults filled in and its own steps; the
// Client is the given default when a has none.
func (a App) withDefaults(client *http.Client) App {
	if a.OnFailure == 0 {
		a.OnFailure = DefaultOnFailure
	}
	if a.Client == nil {
		a.Client = client
	}
	steps := make([]Step, len(a.Steps))
	for i, s := range a.Steps {
		steps[i].Calls = make([]Call, len(s.Calls))
		for j, c := range s.Calls {
			if c.Path == "" {
				c.Path = "/"
			}
			if c.Method == "" {
				c.Method = http.MethodGet
			}
			steps[i].Calls[j] = c
		}
	}
	a.Steps = steps
	return a
}

// newCallTransport is the transport of the default call client: keep-alive HTTP/1.1 to the sidecar.
func newCallTransport() *http.Transport {
	protocols := new(http.Protocols)
	protocols.SetHTTP1(true)
	return &http.Transport{
		Proxy:               nil,
		DialContext:         (&net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second}).DialContext,
		MaxIdleConns:        0, // no limit
		MaxIdleConnsPerHost: 4096,
		IdleConnTimeout:     90 * time.Second,
		DisableCompression:  true,
		Protocols:           protocols,
	}
}

// callClient is the default call client over t: it does not follow redirects (a 3xx is a success).
func callClient(t *http.Transport) *http.Client {
	return &http.Client{
		Transport:     t,
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// budget is the deadline's budget of a request: its HeaderExpectedTimeout, 0 when there is none
// (absent, unparsable, <= 0, or too large for a time.Duration).
func budget(h http.Header) time.Duration {
	ms, err := strconv.ParseInt(h.Get(HeaderExpectedTimeout), 10, 64)
	if err != nil || ms <= 0 || ms > math.MaxInt64/int64(time.Millisecond) {
		return 0
	}
	return time.Duration(ms) * time.Millisecond
}

// callSteps runs the app's steps for one request and returns the callee of the first required call
// that failed, "" when every required call succeeded. A step's calls run in parallel; the next
// step starts once they all ended, unless a required one failed.
func (u *Upstream) callSteps(in *inflight) string {
	for _, step := range u.app.Steps {
		results := make([]CallResult, len(step.Calls))
		if len(step.Calls) == 1 {
			results[0] = u.call(in, step.Calls[0])
		} else {
			var wg sync.WaitGroup
			for i, c := range step.Calls {
				wg.Go(func() { results[i] = u.call(in, c) })
			}
			wg.Wait()
		}
		for _, r := range results {
			if !r.Optional && !r.OK() {
				return r.Callee
			}
		}
	}
	return ""
}

// call makes one call through the sidecar, within the request's context and remaining deadline,
// and reports it (stats, OnCall, a CLIENT span).
func (u *Upstream) call(in *inflight, c Call) (res CallResult) {
	k := u.callSeq.Add(1)
	parent := in.reqID
	if parent == "" {
		parent = "req"
	}
	res = CallResult{
		Start:     u.cfg.Now(),
		Callee:    c.Service,
		Path:      c.Path,
		Optional:  c.Optional,
		RequestID: parent + "/" + u.cfg.Service + "." + strconv.Itoa(u.cfg.Instance) + "." + strconv.FormatUint(k, 10),
	}
	defer func() { u.called(res) }()

	ctx := in.work
	header := http.Header{}
	header.Set(HeaderRequestID, res.RequestID)
	if u.app.PropagateDeadline && in.budget > 0 {
		remaining := in.budget - res.Start.Sub(in.arrival)
		if remaining <= 0 {
			res.Error = CallErrDeadline
			return res
		}
		header.Set(HeaderUpstreamTimeout, strconv.FormatInt(max(remaining.Milliseconds(), 1), 10))
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, remaining)
		defer cancel()
	}
	var span trace.Span
	if u.cfg.Tracer != nil {
		ctx, span = u.cfg.Tracer.Start(ctx, c.Method+" "+c.Service, trace.WithSpanKind(trace.SpanKindClient),
			trace.WithAttributes(
				semconv.HTTPRequestMethodKey.String(c.Method),
				semconv.ServerAddress(c.Service),
				semconv.URLPath(c.Path),
				AttrCallee.String(c.Service),
				AttrCallOptional.Bool(c.Optional),
				AttrInstance.String(u.id),
				AttrRequestID.String(res.RequestID),
			))
		defer func() { endCallSpan(span, res) }()
	}
	u.propagator().Inject(ctx, headerCarrier(header))

	req, err := http.NewRequestWithContext(ctx, c.Method, "http://"+u.app.Sidecar+c.Path, nil)
	if err != nil {
		res.Error = CallErrOther
		return res
	}
	req.Header, req.Host = header, c.Service
	resp, err := u.app.Client.Do(req)
	if err == nil {
		res.Status = resp.StatusCode
		_, err = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	res.Latency = u.cfg.Now().Sub(res.Start)
	if err != nil {
		res.Error = classifyCall(in.work, err)
	}
	return res
}

// called counts a call and hands it to OnCall.
func (u *Upstream) called(r CallResult) {
	u.count(func(s *UpstreamStats) {
		s.Calls++
		if !r.OK() {
			s.CallFailures++
		}
	})
	if u.app.OnCall != nil {
		u.app.OnCall(r)
	}
}

// classifyCall names the kind of a call's error as the load generator does (mesh/load); parent is
// the caller request's context: once it ended, every failure is CallErrCanceled.
func classifyCall(parent context.Context, err error) string {
	var ne net.Error
	switch {
	case parent.Err() != nil:
		return CallErrCanceled
	case errors.Is(err, context.DeadlineExceeded) || errors.As(err, &ne) && ne.Timeout():
		return CallErrTimeout
	case errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.ECONNABORTED) || errors.Is(err, syscall.EPIPE):
		return CallErrReset
	case errors.Is(err, syscall.ECONNREFUSED):
		return CallErrRefused
	case errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF):
		return CallErrEOF
	}
	return CallErrOther
}

// endCallSpan records a call's outcome on its CLIENT span: a failed call is an error.
func endCallSpan(span trace.Span, r CallResult) {
	if r.Status != 0 {
		span.SetAttributes(semconv.HTTPResponseStatusCode(r.Status))
	}
	switch {
	case r.Error != "":
		span.SetAttributes(semconv.ErrorTypeKey.String(r.Error))
		span.SetStatus(codes.Error, r.Error)
	case !r.OK():
		span.SetAttributes(semconv.ErrorTypeKey.String(strconv.Itoa(r.Status)))
		span.SetStatus(codes.Error, "")
	}
	span.End()
}

// failedAnswer is the answer of a request whose required call failed: status, no body; the faults
// applied stay recorded.
func failedAnswer(d Decision, status int) Decision {
	return Decision{Delay: d.Delay, Status: status, Applied: d.Applied}
}
