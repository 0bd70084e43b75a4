package sim

import "time"

// The seam between the two halves of the simulator: the world (instances, load, record: runner.go and
// its files) and the proxy model (proxy*.go), which runs a proxy's or sidecar's Envoy configuration —
// the same proxy/config.Config the embedded runner's proxy runs — on the engine.

// Request is one HTTP request in the simulated mesh: a client's request to a proxy, an attempt from a
// proxy to an instance, or an instance's call to its sidecar.
type Request struct {
	// ID identifies the request end to end (the load's "mp-<seq>" request id, or a call's); attempts of
	// the same request share it. Per-request randomness derives from it, as the live proxy's from
	// x-request-id.
	ID     string
	Method string // upper case
	Path   string // origin form, query included
	// Authority is the Host header.
	Authority string
	// Header holds the other request headers by lower-case name (one value each): those the scenario's
	// load or calls send, and those a proxy adds (x-envoy-expected-rq-timeout-ms, x-envoy-attempt-count,
	// …). Never shared between attempts: a proxy copies it before changing it.
	Header map[string]string
	// HealthCheck marks a proxy's active health check request.
	HealthCheck bool
	// BodySize is the request body's length in bytes (the load's body; 0: none). A proxy holds a body
	// up to its buffer limit for a retry; a larger one cannot be retried.
	BodySize int
}

// ErrKind is why an exchange ended without a complete response, as the side that sent it sees it.
type ErrKind uint8

const (
	ErrNone ErrKind = iota
	// ErrRefused: the connection could not be made (the instance is down: refuse fault).
	ErrRefused
	// ErrReset: the connection was reset before the response ended (reset fault; before headers when
	// Status is 0, after them when Status is set).
	ErrReset
	// ErrEOF: the connection closed cleanly before the body ended (close_after).
	ErrEOF
	// ErrTimeout: the sender gave up waiting (a client's timeout). Not returned by an Upstream: the
	// proxy ends an attempt by its own timers and cancels it.
	ErrTimeout
)

// Result is how an exchange ended, delivered once to the sender's done function at the virtual instant
// the response (or the error) reached the sender.
type Result struct {
	Status int // HTTP status of the response; 0: none (Err says why)
	Err    ErrKind
	// Header are the response headers that change what a proxy or client does (x-envoy-overloaded,
	// retry-after, x-envoy-ratelimited, grpc-status, x-meshproof-*), lower-case names.
	Header map[string]string
	// Attempts is how many upstream attempts a proxy made for the request (a proxy's answer only);
	// ZeroAttempts: the proxy made none (overflow, no healthy host) — as record.Sample.
	Attempts     int
	ZeroAttempts bool
	// Flags are Envoy's response flags of a proxy's answer ("UF", "URX", "UO", …), "" for none.
	Flags string
	// Body is how long the response body takes after its headers (an instance's answer): the Result is
	// delivered at the headers, and the response ends (or its cut comes) Body later. A proxy's answer
	// is delivered at its end (Body 0).
	Body time.Duration
}

// Upstream is one instance as a proxy reaches it.
type Upstream interface {
	// Name is "service/index".
	Name() string
	// Addr is its address in the proxies' bootstraps (host:port).
	Addr() string
	// Serve starts an exchange that reaches the instance at Now (the proxy applied the network delay);
	// done is called once, at the instant the instance ended it (the proxy adds the way back), unless
	// cancel was called first. cancel is the proxy giving up (a timeout, a reset): the instance stops
	// working on it, as a live server sees its connection closed.
	Serve(req *Request, done func(Result)) (cancel func())
	// Refusing reports whether new connections to the instance are refused at Now (refuse fault).
	Refusing() bool
}

// ProxyEvent is a proxy's decision (ejection, un-ejection, health transition, …), as the embedded
// runner records proxy.Event: Kind, Cluster, Host (the Upstream's Name) and Reason with the live
// proxy's values.
type ProxyEvent struct {
	At      time.Duration
	Kind    string
	Cluster string
	Host    string
	Reason  string
}
