package sim

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/meshproof/meshproof/faults/tcp"
	"github.com/meshproof/meshproof/mesh/plan"
	"github.com/meshproof/meshproof/reports/record"
	"github.com/meshproof/meshproof/scenarios"
)

// tcpFront is the TCP fault proxy in front of an instance with TCP fault rules (plan.Instance.TCP), on
// virtual time: what mesh/plan Host does with faults/tcp.Proxy. The proxies reach the instance through
// it; it switches the toxics at their windows' edges (plan.ToxicsAt, the live schedule's function) and
// applies those in force to each exchange:
//
//   - latency (stream upstream): the request reaches the instance Latency later — unless the proxy gave
//     up first, and then the instance never sees it (the live link's pump sleeps, then its connection is
//     closed);
//   - latency (stream downstream): the response reaches the proxy Latency after the instance sent it.
//     Toxiproxy delays each chunk read (faults/tcp latency.chunk, stage.Write); a response of at most
//     maxOneChunk bytes is written at once by the instance, one chunk;
//   - timeout with timeout 0 (either stream): the data never arrives, the exchange hangs until the proxy
//     gives up (upstream: the instance never sees the request; downstream: it answers, nobody reads it);
//   - down: the listener closes (new connections refused: Refusing) and the open connections close,
//     every exchange in flight ending with a clean close (ErrEOF) and the instance's work on it canceled;
//     the listener reopens when the toxic leaves — with the live "listener closed"/"listener reopened"
//     events.
//
// Which toxics of a direction apply is decided per chunk by those in force when the chunk passes: the
// request's at its send, the response's when the instance sent it, as the live link looks them up at
// each chunk (link.active).
//
// Refused by name (tcpRefusals): a toxicity other than 0 or 100 (the live proxy draws it per connection,
// ToxicRand(seed, toxic, connection); the proxy model's pools have no connection identity to give each
// exchange its connection), a latency jitter (drawn per chunk from the connection's source), and the
// toxics acting on a connection's bytes or lifetime: bandwidth, slicer, limit_data, slow_close,
// reset_peer, and timeout with a timeout.
//
// The events: the live proxy records "applies" for each (connection, toxic) the first time the toxic
// is seen on the connection; the simulator records it for each connection the instance accepts while the
// toxic is in force (Seq: the front's connection count, as the live proxy numbers its links), not for the
// connections already open when the toxic comes in force.
type tcpFront struct {
	*instance
	windows []scenarios.TCPWindow
	active  []tcp.Toxic
	conns   uint64        // connections accepted, the live link numbers (from 1)
	down    bool          // a down toxic holds the listener closed
	downs   uint64        // down toxics begun
	flight  []*tcpFlight  // exchanges in flight through the front (unordered)
	nextAt  time.Duration // the next edge scheduled; -1 none
}

// tcpFlight is one exchange through the front.
type tcpFlight struct {
	f       *tcpFront
	at      int // index in f.flight; -1 once out
	done    func(Result)
	inner   func() // cancels the instance's exchange; nil until it reached the instance
	served  bool   // the instance ended its exchange
	ended   bool   // the proxy was answered or gave up
	pending Timer  // a delivery on its way (latency)
	timed   bool   // pending is armed
}

var _ Upstream = (*tcpFront)(nil)

// maxOneChunk is the largest response (head and body) the live instance writes in one chunk: Go's
// http.Server buffers a response in a 4 KiB bufio.Writer; the head takes a few hundred bytes of it.
const maxOneChunk = 4096 - 512

// tcpRefusals names what of the scenario's TCP fault rules the simulator cannot model faithfully (see
// tcpFront), per rule and toxic.
func tcpRefusals(p *plan.Plan) []string {
	var parts []string
	for i, f := range p.Scenario.Faults {
		if f.TCP == nil {
			continue
		}
		for j, tx := range f.TCP.Toxics {
			name := fmt.Sprintf("faults[%d].tcp.toxics[%d]", i, j)
			if why := tcpRefusal(p, f.Service, tx); why != "" {
				parts = append(parts, name+": "+why)
			}
		}
	}
	return parts
}

func tcpRefusal(p *plan.Plan, service string, tx tcp.Toxic) string {
	switch {
	case tx.Toxicity != 0 && tx.Toxicity != 100 && tx.Type != tcp.TypeDown:
		return fmt.Sprintf("toxicity %v (drawn per connection; the simulator models 0 or 100)", tx.Toxicity)
	case tx.Type == tcp.TypeLatency && tx.Jitter > 0:
		return "latency jitter (drawn per chunk of a connection)"
	case tx.Type == tcp.TypeTimeout && tx.Timeout > 0:
		return "timeout with a timeout (closes a connection after its own start)"
	case tx.Type == tcp.TypeLatency:
		// Each chunk is delayed in turn: a response of several chunks takes a multiple of the latency,
		// by how the instance's writes fall into the TCP proxy's reads.
		if tx.Stream != tcp.Upstream && !oneChunk(p, service) {
			return fmt.Sprintf("latency on the responses of %s: a response over %d bytes or a slow_body is more than one chunk", service, maxOneChunk)
		}
		return ""
	case tx.Type == tcp.TypeTimeout, tx.Type == tcp.TypeDown: // timeout drops every chunk alike
		return ""
	}
	return fmt.Sprintf("toxic %s (acts on a connection's bytes or lifetime; the simulator models latency, timeout with timeout 0, and down)", tx.Type)
}

// oneChunk reports whether every response of service's instances is written in one chunk.
func oneChunk(p *plan.Plan, service string) bool {
	for _, in := range p.Instances {
		if in.Service != service {
			continue
		}
		if in.Upstream.Response.Size > maxOneChunk {
			return false
		}
		for _, f := range in.Upstream.Faults {
			if f.SlowBody != nil || f.Size != nil && f.Size.Bytes > maxOneChunk {
				return false
			}
		}
	}
	return true
}

// upstream is how the proxies reach the instance: through its TCP front when it has TCP rules.
func (it *instance) upstream() Upstream {
	if len(it.in.TCP) == 0 {
		return it
	}
	if it.front == nil {
		it.front = &tcpFront{instance: it, windows: it.in.TCP, nextAt: -1}
	}
	return it.front
}

// start switches the toxics in force at virtual 0 and schedules the next edge.
func (f *tcpFront) start() { f.edge() }

// edge sets the toxics in force now and schedules the next edge.
func (f *tcpFront) edge() {
	en := f.w.en
	active, next := plan.ToxicsAt(f.windows, en.Now())
	f.active = active
	i := slices.IndexFunc(active, func(t tcp.Toxic) bool { return t.Type == tcp.TypeDown })
	switch {
	case i >= 0 && !f.down:
		f.down = true
		f.downs++
		f.event(0, active[i], "listener closed")
		flight := f.flight
		f.flight = nil
		for _, fl := range flight {
			fl.at = -1
			fl.close()
		}
	case i < 0 && f.down:
		f.down = false
		f.event(0, tcp.Toxic{Type: tcp.TypeDown}, "listener reopened")
	}
	if next >= 0 {
		en.At(next, f.edge)
	}
}

// event records a TCP proxy event as the live Host does (mesh/plan tcpEvents): the rule's name, kind
// "tcp_<type>", the connection as Seq.
func (f *tcpFront) event(conn uint64, t tcp.Toxic, detail string) {
	rule, _, _ := strings.Cut(t.Name, ".tcp.")
	f.w.events.add(record.FaultEvent{At: f.w.en.Now(), Service: f.in.Service, Instance: f.in.Index,
		Seq: conn, Fault: rule, Kind: "tcp_" + t.Type, Detail: detail})
}

// Refusing: the instance's own refuse, or a down toxic.
func (f *tcpFront) Refusing() bool { return f.down || f.instance.Refusing() }

// Closes counts the instance's closes and the front's: either closes the proxy's connections.
func (f *tcpFront) Closes() uint64 { return f.downs + f.instance.Closes() }

// accepted counts a connection the front accepted now, with the "applies" event of each toxic in force
// that applies to it (toxicity 100; a down toxic applies to no connection).
func (f *tcpFront) accepted() {
	f.conns++
	for _, t := range f.active {
		if t.Type != tcp.TypeDown && t.Toxicity == 100 {
			f.event(f.conns, t, "applies")
		}
	}
}

// toxics returns the latency and whether the data is dropped, in dir, by the toxics in force now.
func (f *tcpFront) toxics(dir string) (delay time.Duration, drop bool) {
	for _, t := range f.active {
		if t.Toxicity != 100 || (t.Stream == "" && dir != tcp.Downstream) || (t.Stream != "" && t.Stream != dir) {
			continue
		}
		switch t.Type {
		case tcp.TypeLatency:
			delay += t.Latency
		case tcp.TypeTimeout:
			drop = true
		}
	}
	return delay, drop
}

// Serve passes the request through the toxics of the upstream stream, the instance's answer through
// those of the downstream stream.
func (f *tcpFront) Serve(req *Request, done func(Result)) (cancel func()) {
	if f.down {
		// The listener is closed and so are the connections: as a refusing instance (instance.Serve),
		// the request never arrives and its sender learns it now.
		gone := false
		f.w.en.At(f.w.en.Now(), func() {
			if !gone {
				done(Result{Err: ErrRefused})
			}
		})
		return func() { gone = true }
	}
	fl := &tcpFlight{f: f, done: done, at: len(f.flight)}
	f.flight = append(f.flight, fl)
	delay, drop := f.toxics(tcp.Upstream)
	switch {
	case drop: // hangs until the proxy gives up
	case delay > 0:
		fl.pending, fl.timed = f.w.en.After(delay, func() { fl.timed = false; fl.reach(req) }), true
	default:
		fl.reach(req)
	}
	return fl.cancel
}

// reach hands the request to the instance.
func (fl *tcpFlight) reach(req *Request) {
	fl.inner = fl.f.instance.Serve(req, fl.answered)
}

// answered is the instance's answer: through the downstream toxics in force now.
func (fl *tcpFlight) answered(r Result) {
	fl.served = true
	if fl.ended {
		return
	}
	delay, drop := fl.f.toxics(tcp.Downstream)
	switch {
	case drop:
	case delay > 0:
		fl.pending, fl.timed = fl.f.w.en.After(delay, func() { fl.timed = false; fl.deliver(r) }), true
	default:
		fl.deliver(r)
	}
}

func (fl *tcpFlight) deliver(r Result) {
	if fl.ended {
		return
	}
	fl.end()
	fl.done(r)
}

// end takes the exchange out of the front's flight.
func (fl *tcpFlight) end() {
	fl.ended = true
	if fl.timed {
		fl.f.w.en.Stop(fl.pending)
		fl.timed = false
	}
	if i := fl.at; i >= 0 {
		f := fl.f
		last := len(f.flight) - 1
		moved := f.flight[last]
		f.flight[i], moved.at = moved, i
		f.flight[last] = nil
		f.flight = f.flight[:last]
		fl.at = -1
	}
}

// cancel is the proxy giving up: the connection closes, the instance's work on it sees its client gone.
func (fl *tcpFlight) cancel() {
	if fl.ended {
		return
	}
	fl.end()
	if fl.inner != nil && !fl.served {
		fl.inner()
	}
}

// close is the down toxic closing the connection: the proxy sees a clean close before the response.
func (fl *tcpFlight) close() {
	fl.ended = true
	if fl.timed {
		fl.f.w.en.Stop(fl.pending)
		fl.timed = false
	}
	if fl.inner != nil && !fl.served {
		fl.inner()
	}
	done := fl.done
	fl.f.w.en.At(fl.f.w.en.Now(), func() { done(Result{Err: ErrEOF}) })
}

// inner is the instance behind an Upstream the proxy model reaches: itself, or behind its TCP front.
func inner(up Upstream) (*instance, bool) {
	switch u := up.(type) {
	case *instance:
		return u, true
	case *tcpFront:
		return u.instance, true
	}
	return nil, false
}

// accept is a new connection of h's pool that the instance accepted now: the TCP front counts it, and
// on a mutual-TLS mesh its handshake follows (the extra delay before it is ready).
func (h *host) accept() time.Duration {
	if f, ok := h.up.(*tcpFront); ok {
		f.accepted()
	}
	return h.tlsHandshake()
}
