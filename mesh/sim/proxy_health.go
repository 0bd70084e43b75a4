package sim

import (
	"math/rand/v2"

	"github.com/meshproof/meshproof/proxy/policy"
)

// hcSession is the active health checking of one host, as the live cluster.healthCheckLoop and check
// (proxy/cluster.go): a GET of the configured path on the checker's own HTTP/1.1 connection (opened
// again after a failure: one round trip), bounded by the check's timeout; the result goes to the
// policy.HealthChecker, and the next check is its NextInterval later, jittered from the host's stream.
type hcSession struct {
	h         *host
	rng       *rand.PCG
	req       *Request
	connected bool
	running   bool
	answered  bool  // the instance has answered the check under way
	waitT     Timer // the next check
	stepT     Timer // the check on the network
	timeoutT  Timer
	cancel    func()
	res       Result

	fireFn, synFn, sendFn, arriveFn, timeoutFn, refusedFn func()
	onResult                                              func(Result)
}

func newHCSession(h *host) *hcSession {
	c := h.c
	cfg := c.hc.Config()
	authority := cfg.Host
	if authority == "" {
		authority = c.name
	}
	s := &hcSession{h: h, rng: c.p.seeds.Health(c.name, h.addr),
		req: &Request{ID: "hc:" + c.name + "/" + h.addr, Method: "GET", Path: cfg.Path, Authority: authority,
			Header: map[string]string{"user-agent": "Envoy/HC"}, HealthCheck: true}}
	s.fireFn, s.synFn, s.sendFn, s.arriveFn, s.timeoutFn, s.refusedFn = s.fire, s.syn, s.send, s.arrive, s.timedOut, s.refused
	s.onResult = s.result
	return s
}

func (s *hcSession) start() {
	s.running = true
	s.waitT = s.h.c.p.en.After(s.h.c.hc.FirstDelay(s.rng), s.fireFn)
}

func (s *hcSession) stop() {
	en := s.h.c.p.en
	s.running = false
	en.Stop(s.waitT)
	en.Stop(s.timeoutT)
	s.abort()
}

// fire sends a check: over the open connection, or after connecting.
func (s *hcSession) fire() {
	p := s.h.c.p
	if t := s.h.c.hc.Config().Timeout; t > 0 {
		s.timeoutT = p.en.After(t, s.timeoutFn)
	}
	if s.connected {
		s.stepT = p.en.After(p.hop, s.sendFn)
		return
	}
	s.stepT = p.en.After(p.hop, s.synFn)
}

// syn: the connection's SYN reached the instance: refused (back one hop later), or accepted, the
// request following the answer (two hops later at the instance).
func (s *hcSession) syn() {
	p := s.h.c.p
	if up := s.h.up; up == nil || up.Refusing() {
		s.stepT = p.en.After(p.hop, s.refusedFn)
		return
	}
	s.connected = true
	s.stepT = p.en.After(2*p.hop, s.sendFn)
}

func (s *hcSession) send() {
	s.stepT = Timer{}
	s.answered = false
	cancel := s.h.up.Serve(s.req, s.onResult)
	if !s.answered { // answered within Serve: nothing to cancel
		s.cancel = cancel
	}
}

func (s *hcSession) result(r Result) {
	s.answered = true
	s.cancel = nil
	s.res = r
	s.stepT = s.h.c.p.en.After(s.h.c.p.hop, s.arriveFn)
}

func (s *hcSession) arrive() {
	s.stepT = Timer{}
	s.h.c.p.en.Stop(s.timeoutT)
	r := s.res
	if r.Err != ErrNone || r.Status == 0 {
		s.connected = false
		s.complete(policy.HealthCheckResult{Kind: policy.CheckNetworkFailure})
		return
	}
	s.complete(policy.HealthCheckResult{Kind: policy.CheckResponse, Status: r.Status,
		ImmediateFail: r.Header["x-envoy-immediate-health-check-fail"] != ""})
}

func (s *hcSession) refused() {
	s.stepT = Timer{}
	s.h.c.p.en.Stop(s.timeoutT)
	s.complete(policy.HealthCheckResult{Kind: policy.CheckNetworkFailure})
}

// timedOut: the check outlived its timeout; its connection is closed.
func (s *hcSession) timedOut() {
	s.timeoutT = Timer{}
	s.abort()
	s.complete(policy.HealthCheckResult{Kind: policy.CheckTimeout})
}

func (s *hcSession) abort() {
	s.h.c.p.en.Stop(s.stepT)
	s.stepT = Timer{}
	if s.cancel != nil {
		s.cancel()
		s.cancel = nil
	}
	s.connected = false
}

// complete applies a result as the live cluster.emitHealth, then schedules the next check.
func (s *hcSession) complete(r policy.HealthCheckResult) {
	c, i := s.h.c, s.h.idx
	now := c.p.now()
	evs := c.hc.Result(now, i, r)
	if c.outlier != nil && r.Kind == policy.CheckResponse && c.hc.Healthy(i) && c.cfg.Outlier.SuccessfulActiveHealthCheckUnejectHost {
		evs = append(evs, c.outlier.UnejectHost(now, i)...)
	}
	c.recount() // a check's result may change the host's health
	c.emit(evs)
	if s.running {
		s.waitT = c.p.en.After(c.hc.NextInterval(i, c.trafficSeen, s.rng), s.fireFn)
	}
}
