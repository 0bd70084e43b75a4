// Package faults holds the fault models of meshproof and the HTTP upstream that applies them.
//
// The models (Decide, DecideRequest, RequestRand, Refusing, Fault.NextChange, Validate) are pure
// functions of their arguments: time and randomness are passed in, so the live upstream and a
// virtual-time simulator reach the same decision for the same seed. The package imports nothing
// else of meshproof.
//
// The Go types map 1:1 onto the scenario YAML (see README.md): every field carries the snake_case
// key it is written under. Percent fields are plain numbers here, where 0 never fires; the scenario
// loader supplies the YAML default of 100.
package faults

import (
	"encoding/binary"
	"errors"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"time"

	"github.com/meshproof/meshproof/faults/field"
)

// Kinds of fault, as reported in Applied.Kind, Event.Kind and the "fault/kind" keys of
// UpstreamStats.Applied.
const (
	KindLatency    = "latency"     // Detail: the delay drawn, e.g. "50ms"
	KindAbort      = "abort"       // Detail: the status, e.g. "503", or "grpc 14"
	KindReset      = "reset"       // Detail: "rst" (before headers) or "rst after 100 bytes" (mid-body)
	KindHang       = "hang"        // Detail: "hang"
	KindSlowBody   = "slow_body"   // Detail: "100 B/s"
	KindCloseAfter = "close_after" // Detail: "fin after 100 bytes"
	KindSize       = "size"        // Detail: "4096 bytes"
	KindRSTStream  = "rst_stream"  // Detail: the HTTP/2 error code, e.g. "REFUSED_STREAM"
	KindGoAway     = "goaway"      // Detail: the HTTP/2 error code, e.g. "NO_ERROR"
	KindRefuse     = "refuse"      // connection level, Seq 0; Detail: RefuseClosed | RefuseReopened
)

// Details of a KindRefuse event. The reopen is stamped once the listener accepts again.
const (
	RefuseClosed   = "listener closed"
	RefuseReopened = "listener reopened"
)

// DefaultStatus is the status of a Response whose Status is zero.
const DefaultStatus = 200

// Response is an instance's normal behaviour.
type Response struct {
	Status  int           `yaml:"status"`  // default 200
	Size    int           `yaml:"size"`    // body bytes (filled with a repeating pattern), default 0
	Latency time.Duration `yaml:"latency"` // fixed service time before headers
}

// Abort answers Percent% of requests with an HTTP Status, or with a gRPC status: when GRPCStatus is
// set (1..16) the answer is HTTP 200, content-type application/grpc, with grpc-status GRPCStatus
// and a grpc-message in a trailers-only response. Set exactly one of Status and GRPCStatus.
type Abort struct {
	Status     int     `yaml:"status"`      // any status 200..599
	GRPCStatus int     `yaml:"grpc_status"` // 1..16, e.g. 14 UNAVAILABLE
	Percent    float64 `yaml:"percent"`
}

// Reset resets the connection (TCP RST, seen by clients as ECONNRESET) of Percent% of requests:
// before any response byte when AfterBytes is nil, otherwise after the headers and AfterBytes body
// bytes (capped at the body size).
type Reset struct {
	Percent    float64 `yaml:"percent"`
	AfterBytes *int    `yaml:"after_bytes"`
}

// Hang never answers Percent% of requests: the upstream holds them until the client goes away
// (or the upstream closes).
type Hang struct {
	Percent float64 `yaml:"percent"`
}

// SlowBody paces the body of Percent% of responses at BytesPerSecond: the k-th body byte is sent
// no sooner than k/BytesPerSecond after the headers.
type SlowBody struct {
	BytesPerSecond int     `yaml:"bytes_per_second"`
	Percent        float64 `yaml:"percent"`
}

// CloseAfter closes the connection cleanly (FIN) after the headers and Bytes body bytes of
// Percent% of responses, so a client expecting the full Content-Length sees an unexpected EOF.
type CloseAfter struct {
	Bytes   int     `yaml:"bytes"`
	Percent float64 `yaml:"percent"`
}

// Size overrides the body size of Percent% of responses.
type Size struct {
	Bytes   int     `yaml:"bytes"`
	Percent float64 `yaml:"percent"`
}

// Refuse takes the instance down while its rule is active (its window and flap): the upstream
// closes its listener, so connection attempts see ECONNREFUSED, and closes the open connections;
// it reopens the listener on the same port when the rule ends. It has no percent and applies to
// connections, not requests: it cannot be combined with match, first, every or request faults.
type Refuse struct{}

// H2 answers Percent% of HTTP/2 requests with an RST_STREAM of the code RSTStream, or a GOAWAY of
// the code GoAway whose last-stream-id is the highest stream below the request's (the request is
// not processed, so a client may retry it on a new connection). Set exactly one; codes are the
// RFC 9113 names (see H2Code). HTTP/1.1 requests are never matched by an h2 fault.
type H2 struct {
	RSTStream string  `yaml:"rst_stream"`
	GoAway    string  `yaml:"goaway"`
	Percent   float64 `yaml:"percent"`
}

// H2Code returns the HTTP/2 error code (RFC 9113 section 7) of a name such as "REFUSED_STREAM".
func H2Code(name string) (uint32, bool) {
	code, ok := h2Codes[name]
	return code, ok
}

var h2Codes = map[string]uint32{
	"NO_ERROR": 0x0, "PROTOCOL_ERROR": 0x1, "INTERNAL_ERROR": 0x2, "FLOW_CONTROL_ERROR": 0x3,
	"SETTINGS_TIMEOUT": 0x4, "STREAM_CLOSED": 0x5, "FRAME_SIZE_ERROR": 0x6, "REFUSED_STREAM": 0x7,
	"CANCEL": 0x8, "COMPRESSION_ERROR": 0x9, "CONNECT_ERROR": 0xa, "ENHANCE_YOUR_CALM": 0xb,
	"INADEQUATE_SECURITY": 0xc, "HTTP_1_1_REQUIRED": 0xd,
}

// Fault is one fault rule on an instance. It is active in [Start, Start+Duration) of run time
// (Duration 0 = to the end) and, with Flap, only during its down periods. It applies to the
// requests that Match selects and, with First or Every, only to those sequence numbers.
type Fault struct {
	Name     string        `yaml:"-"` // stable identity for events, e.g. "faults[1]"
	Start    time.Duration `yaml:"at"`
	Duration time.Duration `yaml:"for"`

	Match *Match `yaml:"match"` // nil = every request
	First int    `yaml:"first"` // > 0: only the first First requests at the instance (Seq 1..First)
	Every int    `yaml:"every"` // > 0: only every Every-th request (Seq a multiple of Every)
	Flap  *Flap  `yaml:"flap"`  // nil = active for the whole window

	Latency    *Latency    `yaml:"latency"`
	Abort      *Abort      `yaml:"abort"`
	Reset      *Reset      `yaml:"reset"`
	Hang       *Hang       `yaml:"hang"`
	SlowBody   *SlowBody   `yaml:"slow_body"`
	CloseAfter *CloseAfter `yaml:"close_after"`
	Size       *Size       `yaml:"size"`
	H2         *H2         `yaml:"h2"`
	Refuse     *Refuse     `yaml:"refuse"`
}

// Request is what the models know of one request.
type Request struct {
	Seq     uint64        // n-th request at the instance, from 1 (0 = unknown: First and Every never hold)
	Elapsed time.Duration // run time at arrival
	Method  string
	Path    string // without the query string
	Header  http.Header
	HTTP2   bool // arrived over HTTP/2 (h2 faults apply only then)
	// Body is the request body of a gRPC call over HTTP/2 (its length-prefixed messages, up to
	// maxGRPCRequest bytes); nil for other requests, whose bodies are discarded.
	Body []byte
}

// Applies reports whether the rule applies to req: active at req.Elapsed, selected by Match, and
// within First/Every.
func (f Fault) Applies(req Request) bool {
	if !f.Active(req.Elapsed) || !f.Match.Matches(req) {
		return false
	}
	if f.First > 0 && (req.Seq == 0 || req.Seq > uint64(f.First)) {
		return false
	}
	if f.Every > 0 && (req.Seq == 0 || req.Seq%uint64(f.Every) != 0) {
		return false
	}
	return true
}

// Cut is how a response body ends early.
type Cut int

// Cuts of a response body.
const (
	CutNone  Cut = iota // the body is sent whole
	CutReset            // TCP RST after CutAfter body bytes
	CutClose            // clean close (FIN) after CutAfter body bytes
)

// Decision is what to do with one request. Applied lists the names+kinds of the faults that fired.
//
// Exactly one outcome holds, in this precedence: Reset (before headers), RSTStream or GoAway, Hang,
// otherwise an answer with Status (or GRPCStatus) and a body of Size bytes sent at BytesPerSecond
// and ended by Cut.
type Decision struct {
	Delay   time.Duration // added before responding (base latency + injected)
	Status  int           // status to answer with (Response.Status unless aborted)
	Reset   bool          // reset the connection instead of answering (takes precedence over status)
	Applied []Applied

	GRPCStatus     int    // > 0: answer HTTP 200 application/grpc, trailers-only, with this grpc-status
	RSTStream      string // HTTP/2: answer RST_STREAM with this code instead
	GoAway         string // HTTP/2: answer GOAWAY with this code instead
	Hang           bool   // never answer
	Size           int    // body bytes
	BytesPerSecond int    // pace the body (0 = at once)
	Cut            Cut    // how the body ends
	CutAfter       int    // body bytes sent before the cut
}

// aborted reports whether an abort fault decided the answer: the service answers it without doing its
// work (no calls), as Envoy's fault filter answers an abort without forwarding.
func (d Decision) aborted() bool {
	for _, a := range d.Applied {
		if a.Kind == KindAbort {
			return true
		}
	}
	return false
}

// Applied is one fault that fired for a request.
type Applied struct {
	Fault  string
	Kind   string // one of the Kind constants
	Detail string // e.g. "503", "50ms"
}

// Decide is DecideRequest for a request of which only the arrival time is known: rules with
// First, Every, an h2 fault or a Match that needs the method, path or headers do not apply.
func Decide(resp Response, rules []Fault, elapsed time.Duration, rng *rand.Rand) Decision {
	return DecideRequest(resp, rules, Request{Elapsed: elapsed}, rng)
}

// DecideRequest is pure: the decision for one request, using rng for every random draw.
//
// Draws: rng first yields three numbers per rule, in rule order (latency, reset, abort percents),
// then one 64-bit seed per rule, from which the rule's other draws come (the percents of hang,
// slow_body, close_after, size and h2 on one stream, the latency's jitter and distribution on
// another). Every draw is made whether or not the rule applies, has that kind, or fires: a rule's
// outcome for the n-th request never depends on the other rules, the time window or the request,
// and rules with only latency/abort/reset decide exactly as before the other kinds existed.
//
// Each applying latency that fires adds its drawn delay. Of the other kinds, the first rule (in
// rule order) whose fault fires takes effect per kind; then the precedence of Decision picks the
// outcome: a reset before headers wins over everything; else an h2 fault; else a hang; else the
// answer, shaped by abort, size and slow_body, and cut by a mid-body reset (which wins) or a
// close_after. Applied lists the latencies in rule order, then the faults that took effect in that
// order: reset | rst_stream/goaway | hang, or abort, size, slow_body, then reset | close_after.
func DecideRequest(resp Response, rules []Fault, req Request, rng *rand.Rand) Decision {
	d := Decision{Delay: resp.Latency, Status: resp.Status, Size: resp.Size}
	if d.Status == 0 {
		d.Status = DefaultStatus
	}
	percents := make([][3]float64, len(rules))
	for i := range rules {
		percents[i] = [3]float64{rng.Float64(), rng.Float64(), rng.Float64()}
	}
	seeds := make([]uint64, len(rules))
	for i := range rules {
		seeds[i] = rng.Uint64()
	}

	type pick struct {
		rule int
		ok   bool
	}
	var reset, abort, hang, slow, closeAfter, size, h2 pick
	choose := func(p *pick, i int, f bool) {
		if f && !p.ok {
			*p = pick{rule: i, ok: true}
		}
	}
	for i, f := range rules {
		draws := rand.New(rand.NewPCG(seeds[i], streamPercents))
		hangDraw, slowDraw, closeDraw, sizeDraw, h2Draw := draws.Float64(), draws.Float64(), draws.Float64(), draws.Float64(), draws.Float64()
		if !f.Applies(req) {
			continue
		}
		latencyDraw, resetDraw, abortDraw := percents[i][0], percents[i][1], percents[i][2]
		if l := f.Latency; l != nil && fires(l.Percent, latencyDraw) {
			delay := l.Sample(rand.New(rand.NewPCG(seeds[i], streamLatency)))
			d.Delay += delay
			d.Applied = append(d.Applied, Applied{Fault: f.Name, Kind: KindLatency, Detail: delay.String()})
		}
		choose(&reset, i, f.Reset != nil && fires(f.Reset.Percent, resetDraw))
		choose(&abort, i, f.Abort != nil && fires(f.Abort.Percent, abortDraw))
		choose(&hang, i, f.Hang != nil && fires(f.Hang.Percent, hangDraw))
		choose(&slow, i, f.SlowBody != nil && fires(f.SlowBody.Percent, slowDraw))
		choose(&closeAfter, i, f.CloseAfter != nil && fires(f.CloseAfter.Percent, closeDraw))
		choose(&size, i, f.Size != nil && fires(f.Size.Percent, sizeDraw))
		choose(&h2, i, f.H2 != nil && req.HTTP2 && fires(f.H2.Percent, h2Draw))
	}
	applied := func(i int, kind, detail string) {
		d.Applied = append(d.Applied, Applied{Fault: rules[i].Name, Kind: kind, Detail: detail})
	}

	midBody := reset.ok && rules[reset.rule].Reset.AfterBytes != nil
	switch {
	case reset.ok && !midBody:
		d.Reset = true
		applied(reset.rule, KindReset, "rst")
		return d
	case h2.ok:
		f := rules[h2.rule].H2
		if f.RSTStream != "" {
			d.RSTStream = f.RSTStream
			applied(h2.rule, KindRSTStream, f.RSTStream)
		} else {
			d.GoAway = f.GoAway
			applied(h2.rule, KindGoAway, f.GoAway)
		}
		return d
	case hang.ok:
		d.Hang = true
		applied(hang.rule, KindHang, "hang")
		return d
	}
	if abort.ok {
		a := rules[abort.rule].Abort
		if a.GRPCStatus != 0 {
			d.Status, d.GRPCStatus, d.Size = http.StatusOK, a.GRPCStatus, 0
			applied(abort.rule, KindAbort, "grpc "+strconv.Itoa(a.GRPCStatus))
		} else {
			d.Status = a.Status
			applied(abort.rule, KindAbort, strconv.Itoa(a.Status))
		}
	}
	if size.ok && d.GRPCStatus == 0 {
		d.Size = rules[size.rule].Size.Bytes
		applied(size.rule, KindSize, strconv.Itoa(d.Size)+" bytes")
	}
	if slow.ok {
		d.BytesPerSecond = rules[slow.rule].SlowBody.BytesPerSecond
		applied(slow.rule, KindSlowBody, strconv.Itoa(d.BytesPerSecond)+" B/s")
	}
	switch {
	case midBody:
		d.Cut, d.CutAfter = CutReset, min(*rules[reset.rule].Reset.AfterBytes, d.Size)
		applied(reset.rule, KindReset, "rst after "+strconv.Itoa(d.CutAfter)+" bytes")
	case closeAfter.ok:
		d.Cut, d.CutAfter = CutClose, min(rules[closeAfter.rule].CloseAfter.Bytes, d.Size)
		applied(closeAfter.rule, KindCloseAfter, "fin after "+strconv.Itoa(d.CutAfter)+" bytes")
	}
	return d
}

// Streams of a rule's own random source (see DecideRequest).
const (
	streamPercents = 1
	streamLatency  = 2
)

// fires reports whether a draw in [0,1) falls within percent: 0 never fires, 100 always does.
func fires(percent, draw float64) bool { return draw*100 < percent }

// RequestRand returns the random source for the n-th request (n from 1) at an instance. It is a
// pure function of (seed, service, instance, n), so the n-th request at an instance gets the same
// decision for the same seed whatever the arrival interleaving.
func RequestRand(seed uint64, service string, instance int, n uint64) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(service))
	h.Write([]byte{0}) // separates "a"+12 from "a1"+2
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(instance)))
	return rand.New(rand.NewPCG(seed^h.Sum64(), n))
}

// MaxBodyBytes is the largest response body a rule or response may ask for (1 GiB). Bodies are
// streamed from a shared pattern, so the bound is about run time, not memory: a larger body keeps one
// connection busy for seconds even on loopback.
const MaxBodyBytes = 1 << 30

// Validate checks a response: status 0 (default 200) or 200..599, size in 0..MaxBodyBytes,
// non-negative latency.
func (r Response) Validate() error {
	var errs []error
	if r.Status != 0 {
		errs = append(errs, checkStatus("status", r.Status))
	}
	errs = append(errs, checkBytes("size", r.Size), checkDuration("latency", r.Latency))
	return errors.Join(errs...)
}

// Validate checks one fault rule: at least one kind; percents in [0,100]; abort status in
// 200..599 or grpc_status in 1..16; known h2 codes; non-negative durations, sizes and sequences;
// refuse alone. Each error is a field error (Field, Reason) below the rule, such as
// "abort.status"; the kinds' own checks are their descriptors' (see Kinds).
func (f Fault) Validate() error {
	errs := []error{checkDuration("start", f.Start), checkDuration("duration", f.Duration)}
	var set, requests bool
	for _, k := range kinds {
		set = set || k.In(&f)
		requests = requests || k.Requests && k.In(&f)
	}
	if !set {
		errs = append(errs, field.Among("", KindNames(), "none set, want at least one"))
	}
	if f.First < 0 {
		errs = append(errs, field.Errorf("first", "%d is negative, want >= 0 requests", f.First))
	}
	if f.Every < 0 {
		errs = append(errs, field.Errorf("every", "%d is negative, want >= 0 requests", f.Every))
	}
	errs = append(errs, field.Within("match", f.Match.validate())...)
	errs = append(errs, field.Within("flap", f.Flap.validate())...)
	for _, k := range kinds {
		errs = append(errs, field.Within(k.Name, k.validate(&f))...)
	}
	if f.Refuse != nil {
		if f.Match != nil || f.First != 0 || f.Every != 0 {
			errs = append(errs, field.Errorf("refuse", "acts on connections, want no match, first or every in its rule"))
		}
		if requests {
			errs = append(errs, field.Errorf("refuse", "takes the instance down, want no request fault in its rule"))
		}
	}
	return errors.Join(errs...)
}

func checkH2Code(path, code string) error {
	if _, ok := h2Codes[code]; !ok {
		return field.Errorf(path, "%q is not an HTTP/2 error code, want one of NO_ERROR, PROTOCOL_ERROR, INTERNAL_ERROR, "+
			"FLOW_CONTROL_ERROR, SETTINGS_TIMEOUT, STREAM_CLOSED, FRAME_SIZE_ERROR, REFUSED_STREAM, CANCEL, "+
			"COMPRESSION_ERROR, CONNECT_ERROR, ENHANCE_YOUR_CALM, INADEQUATE_SECURITY, HTTP_1_1_REQUIRED", code)
	}
	return nil
}

func checkStatus(path string, status int) error {
	if status < 200 || status > 599 {
		return field.Errorf(path, "%d is out of range, want 200..599", status)
	}
	return nil
}

func checkPercent(path string, p float64) error {
	if math.IsNaN(p) || p < 0 || p > 100 {
		return field.Errorf(path, "%v is out of range, want 0..100", p)
	}
	return nil
}

func checkDuration(path string, d time.Duration) error {
	if d < 0 {
		return field.Errorf(path, "%v is negative, want >= 0", d)
	}
	return nil
}

func checkBytes(path string, n int) error {
	switch {
	case n < 0:
		return field.Errorf(path, "%d is negative, want 0 to %d bytes (1 GiB)", n, MaxBodyBytes)
	case n > MaxBodyBytes:
		return field.Errorf(path, "%d is too large, want 0 to %d bytes (1 GiB)", n, MaxBodyBytes)
	}
	return nil
}
