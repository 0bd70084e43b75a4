package plan

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	coltracepb "go.opentelemetry.io/proto/otlp/collector/trace/v1"

	"github.com/meshproof/meshproof/reports/record"
)

// Runner runs plans somewhere: in this process (mesh/live), as containers (mesh/docker), later in
// virtual time.
type Runner interface {
	// Name is the runner's name, as `meshproof run --runner NAME` takes it.
	Name() string
	// Supports returns nil when the runner can do everything the plan and the options ask for, else an
	// error wrapping ErrUnsupported that names each fault kind or option it cannot do. A runner never
	// runs a plan it does not support: a fault silently left out would let a scenario pass that fails
	// elsewhere.
	Supports(p *Plan, opts Options) error
	// Run runs the plan and returns its record. Everything it started is stopped before it returns. On
	// cancellation during the load it returns the record so far with ctx's error.
	Run(ctx context.Context, p *Plan, opts Options) (*record.Record, error)
}

// ErrUnsupported is wrapped by a Runner's Supports errors.
var ErrUnsupported = errors.New("not supported by this runner")

// Unsupported is the error Supports returns for the parts of a plan a runner cannot do.
type Unsupported struct {
	Runner string
	Parts  []string // e.g. `faults[2]: container fault "kill"`, `--trace-ratio: traces`
	Hint   string   // what to do instead, e.g. "use --runner docker"
}

func (u *Unsupported) Error() string {
	msg := fmt.Sprintf("the %s runner cannot do %s", u.Runner, strings.Join(u.Parts, "; "))
	if u.Hint != "" {
		msg += ": " + u.Hint
	}
	return msg
}

func (u *Unsupported) Unwrap() error { return ErrUnsupported }

// Options change a run without changing the scenario; every runner takes the same ones and refuses in
// Supports those it cannot honour.
type Options struct {
	// Tracing, when set, traces the run: one TracerProvider for the run (never the global one) shared
	// by the load generator, the proxies and the upstreams, W3C trace context between them. nil: no
	// tracing.
	Tracing *Tracing
	// Progress, when set, is called about every ProgressInterval while the load runs, and once at its
	// end.
	Progress         func(Progress)
	ProgressInterval time.Duration // default 1s
	// AccessLogDir, when set, is where the embedded runner keeps each proxy's access log, in Envoy's
	// default format: <AccessLogDir>/<proxy>.log, a sidecar's named <service>-<index>.log. The docker
	// runner does not write them.
	AccessLogDir string
}

// Tracing configures a run's traces.
type Tracing struct {
	// SampleRatio is the share of client requests traced, in (0, 1]; 0 = the default 1.0. Proxies and
	// upstreams follow the load generator's decision.
	SampleRatio float64
	// OTLPEndpoint, when set, also exports the spans over OTLP/HTTP to this URL.
	OTLPEndpoint string
	// Spans, when set, receives the run's spans once the run has ended (e.g. for traces.otlp.json,
	// see tracing.WriteFile). Without it the spans are not kept in memory.
	Spans func([]sdktrace.ReadOnlySpan)
	// Received, when set, receives the spans that components in other processes exported to the run
	// (the docker runner's containers), in OTLP form, once the run has ended.
	Received func([]*coltracepb.ExportTraceServiceRequest)
}

// Run checks that runner supports the plan with opts, then runs it.
func Run(ctx context.Context, r Runner, p *Plan, opts Options) (*record.Record, error) {
	if err := r.Supports(p, opts); err != nil {
		return nil, err
	}
	return r.Run(ctx, p, opts)
}
