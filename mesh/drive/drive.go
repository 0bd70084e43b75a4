// Package drive turns a scenario's load section into the load generator's configuration, the same way
// for every runner.
package drive

import (
	"net/http"

	"github.com/meshproof/meshproof/mesh/load"
	"github.com/meshproof/meshproof/scenarios"
)

// Config is the load generator's configuration for the scenario's load, sent to baseURL (the target
// proxy's listener, "http://host:port"): constant rate for the duration, or the named phases.
func Config(l *scenarios.Load, baseURL string) load.Config {
	header := http.Header{}
	for k, v := range l.Headers {
		header.Set(k, v)
	}
	cfg := load.Config{
		URL:     baseURL + l.Path,
		Method:  l.Method,
		Header:  header,
		Body:    []byte(l.Body),
		Timeout: l.Timeout.Duration,
	}
	switch l.Protocol {
	case scenarios.ProtocolH2C:
		cfg.H2C = true
	case scenarios.ProtocolGRPC:
		// The call's own path, method and body (load.Config.GRPC): the scenario's defaults are dropped.
		cfg.URL, cfg.Method, cfg.Body = baseURL+"/", "", nil
		g := l.GRPC
		if g == nil {
			g = &scenarios.LoadGRPC{}
		}
		cfg.GRPC = &load.GRPC{Method: g.Method, Deadline: g.Deadline.Duration, Payload: g.Payload, ReplySize: g.ReplySize, Replies: g.Replies}
	}
	for _, r := range l.Mix {
		e := load.Request{Weight: r.Weight, Method: r.Method, Path: r.Path}
		if len(r.Headers) > 0 {
			e.Header = http.Header{}
			for k, v := range r.Headers {
				e.Header.Set(k, v)
			}
		}
		if r.Body != nil {
			e.Body = []byte(*r.Body)
		}
		cfg.Mix = append(cfg.Mix, e)
	}
	if len(l.Phases) == 0 {
		cfg.Rate, cfg.Duration = l.Rate.PerSecond, l.Duration.Duration
		return cfg
	}
	for _, p := range l.Phases {
		switch {
		case p.Ramp != nil:
			cfg.Phases = append(cfg.Phases, load.Ramp(p.Name, p.Duration.Duration, p.Ramp.From.PerSecond, p.Ramp.To.PerSecond))
		case p.Burst != nil:
			cfg.Phases = append(cfg.Phases, load.Bursts(p.Name, p.Duration.Duration, p.Burst.Requests, p.Burst.Every.Duration))
		default:
			cfg.Phases = append(cfg.Phases, load.Constant(p.Name, p.Duration.Duration, p.Rate.PerSecond))
		}
	}
	return cfg
}
