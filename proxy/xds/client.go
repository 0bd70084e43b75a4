// Package xds is the proxy's xDS client: one ADS stream over gRPC (state of the world or delta) to the
// control plane named by the bootstrap's dynamic_resources, carrying LDS, RDS, CDS and EDS with Envoy's
// semantics. Every resource received is checked by proxy/config with the same rules as a static
// bootstrap: an invalid one is NACKed with its field path in error_detail and the last good version is
// kept. A cluster is used once its endpoints arrived (warming), a listener once its routes did, each
// bounded by its initial_fetch_timeout; the stream is reopened with a jittered exponential back-off.
// Each complete configuration (static and dynamic resources together, validated) goes to an Applier.
package xds

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"time"

	bootstrapv3 "github.com/envoyproxy/go-control-plane/envoy/config/bootstrap/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/proto"

	"github.com/meshproof/meshproof/proxy/clock"
	"github.com/meshproof/meshproof/proxy/config"
	"github.com/meshproof/meshproof/proxy/stats"
)

// Applier takes each complete configuration the client builds: the validated internal form, and raw,
// an Envoy admin ConfigDump of the bootstrap and the dynamic resources with their versions (what
// /config_dump shows). Apply is called from one goroutine at a time; an error is reported to the
// control plane as a NACK of the update that led to it. cfg shares its routes and endpoints with
// the configurations before and after it: the Applier must not modify it. A future proxy
// Server.Update(cfg, raw) satisfies it.
type Applier interface {
	Apply(cfg *config.Bootstrap, raw proto.Message) error
}

// ApplierFunc is a function that is an Applier.
type ApplierFunc func(cfg *config.Bootstrap, raw proto.Message) error

// Apply calls f.
func (f ApplierFunc) Apply(cfg *config.Bootstrap, raw proto.Message) error { return f(cfg, raw) }

// Event is something the client did, with its reason: for logs and tests.
type Event struct {
	Kind    EventKind
	TypeURL string // the resource type, when the event is about one
	Version string // the version accepted or rejected, when there is one
	Detail  string // the error (NACK, stream closed, apply failed), or what was applied
}

// EventKind names an Event.
type EventKind string

// The events.
const (
	EventACK            EventKind = "ack"             // an update accepted
	EventNACK           EventKind = "nack"            // an update rejected (Detail: error_detail's message)
	EventApplied        EventKind = "applied"         // a configuration handed to the Applier
	EventApplyFailed    EventKind = "apply_failed"    // the Applier refused it
	EventStreamClosed   EventKind = "stream_closed"   // the ADS stream ended (Detail: why)
	EventFetchTimeout   EventKind = "fetch_timeout"   // an initial_fetch_timeout passed (Detail: the resource)
	EventStreamOpened   EventKind = "stream_opened"   // an ADS stream was opened
	EventBackoffStarted EventKind = "backoff_started" // waiting before the next stream (Detail: the delay)
)

// Options configure a Client.
type Options struct {
	// Bootstrap is the bootstrap as read (config.LoadBootstrap's proto) and Config its validated form;
	// Config.Dynamic must be set.
	Bootstrap *bootstrapv3.Bootstrap
	Config    *config.Bootstrap
	// Applier receives each complete configuration. Required.
	Applier Applier
	// Clock times the back-off and the initial fetch timeouts (nil: clock.Real).
	Clock clock.Clock
	// Rand jitters the back-off (nil: a random source).
	Rand rand.Source
	// OnEvent receives every Event; cheap and safe for concurrent use. nil: none.
	OnEvent func(Event)
	// Stats receives Envoy's xDS stats (see stats.go); pass the proxy's store to serve them with its
	// own. nil: none.
	Stats *stats.Store
	// Node, when set, replaces the bootstrap's node (id and cluster given by flags).
	Node *config.Node
	// DialOptions are added to the gRPC client's (plaintext transport by default).
	DialOptions []grpc.DialOption
}

// Envoy's ADS stream retry back-off (RetryInitialDelayMs, RetryMaxDelayMs in
// source/common/config/grpc_stream.h, with a JitteredExponentialBackOffStrategy).
const (
	backoffBase = 500 * time.Millisecond
	backoffMax  = 30 * time.Second
)

// Client is an xDS client: Run holds the ADS stream open until its context ends.
type Client struct {
	opts   Options
	target string // the control plane's host:port
	node   *corev3.Node
	delta  bool
	clk    clock.Clock
	rng    *rand.Rand

	lim *limiter // rate_limit_settings; nil: none

	mu sync.Mutex
	st *state
}

// New checks opts and returns a Client; nothing is dialed before Run.
func New(opts Options) (*Client, error) {
	if opts.Config == nil || opts.Bootstrap == nil {
		return nil, errors.New("xds: Options.Config and Options.Bootstrap are required")
	}
	dyn := opts.Config.Dynamic
	if dyn == nil || dyn.ADSCluster == "" {
		return nil, errors.New("xds: the bootstrap has no dynamic_resources.ads_config")
	}
	if opts.Applier == nil {
		return nil, errors.New("xds: Options.Applier is required")
	}
	c := &Client{opts: opts, delta: dyn.Delta, clk: opts.Clock}
	if c.clk == nil {
		c.clk = clock.Real{}
	}
	src := opts.Rand
	if src == nil {
		src = rand.NewPCG(rand.Uint64(), rand.Uint64())
	}
	c.rng = rand.New(src)
	for _, cl := range opts.Config.Clusters {
		if cl.Name == dyn.ADSCluster && len(cl.Endpoints) > 0 {
			// gRPC balances over one address here: the first endpoint's.
			c.target = cl.Endpoints[0].Address
		}
	}
	if c.target == "" {
		return nil, fmt.Errorf("xds: ADS cluster %q has no endpoint", dyn.ADSCluster)
	}
	c.node = &corev3.Node{UserAgentName: "meshproof"}
	n := opts.Config.Node
	if opts.Node != nil {
		n = opts.Node
	}
	if n != nil {
		c.node.Id, c.node.Cluster = n.ID, n.Cluster
	}
	c.st = newState(c)
	c.lim = newLimiter(dyn.RateLimit, c.clk, func() {
		if c.opts.Stats != nil {
			c.opts.Stats.Counter("control_plane.rate_limit_enforced").Inc()
		}
	})
	return c, nil
}

func (c *Client) event(e Event) {
	if c.opts.OnEvent != nil {
		c.opts.OnEvent(e)
	}
}

// Run opens the ADS stream and keeps it open, reopening it after the back-off whenever it ends, until
// ctx is done; it returns ctx's error then. The initial fetch timeouts of CDS and LDS start now.
func (c *Client) Run(ctx context.Context) error {
	dialOpts := append([]grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}, c.opts.DialOptions...)
	conn, err := grpc.NewClient("passthrough:///"+c.target, dialOpts...)
	if err != nil {
		return fmt.Errorf("xds: %w", err)
	}
	defer conn.Close()
	c.mu.Lock()
	c.st.start()
	c.mu.Unlock()
	defer func() {
		c.mu.Lock()
		c.st.stopTimers()
		c.mu.Unlock()
	}()
	attempt := 0
	for {
		var received bool
		if c.delta {
			received, err = c.runDelta(ctx, conn)
		} else {
			received, err = c.runSotW(ctx, conn)
		}
		c.connected(false)
		if ctx.Err() != nil {
			return ctx.Err()
		}
		c.event(Event{Kind: EventStreamClosed, Detail: fmt.Sprint(err)})
		c.mu.Lock()
		c.st.countFailure()
		c.mu.Unlock()
		if received {
			// As Envoy's GrpcStream, a stream that got a response resets the back-off.
			attempt = 0
		}
		d := c.backoff(attempt)
		attempt++
		c.event(Event{Kind: EventBackoffStarted, Detail: d.String()})
		t := c.clk.NewTimer(d)
		select {
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		case <-t.C():
		}
	}
}

// connected sets control_plane.connected_state.
func (c *Client) connected(up bool) {
	if c.opts.Stats == nil {
		return
	}
	v := int64(0)
	if up {
		v = 1
	}
	c.opts.Stats.Gauge("control_plane.connected_state").Set(v)
}

// backoff is the wait before stream attempt n+1 (n from 0): Envoy's JitteredExponentialBackOffStrategy,
// a uniform draw in [0, min(base·2ⁿ, max)).
func (c *Client) backoff(n int) time.Duration {
	ceiling := backoffMax
	if n < 16 {
		ceiling = min(backoffBase<<n, backoffMax)
	}
	return time.Duration(c.rng.Int64N(int64(ceiling)))
}
