package proxy

import (
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/pprof"
	"regexp"
	"runtime/metrics"
	"sort"
	"strconv"
	"strings"

	"google.golang.org/protobuf/encoding/protojson"

	"github.com/meshproof/meshproof/proxy/policy"
	"github.com/meshproof/meshproof/proxy/stats"
)

var discardLog = log.New(io.Discard, "", 0)

// adminHandler serves Envoy's admin endpoints (the subset documented in proxy/README.md).
func (s *Server) adminHandler() http.Handler {
	mux := http.NewServeMux()
	get := func(path string, h http.HandlerFunc) { mux.HandleFunc(path, h) }
	post := func(path string, h http.HandlerFunc) {
		mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
			if r.Method != http.MethodPost {
				w.Header().Set("content-type", "text/plain")
				w.WriteHeader(http.StatusMethodNotAllowed)
				fmt.Fprintf(w, "Method %s not allowed, POST required.\n", r.Method)
				return
			}
			h(w, r)
		})
	}
	get("/ready", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "text/plain")
		st := s.state()
		if st != "LIVE" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		io.WriteString(w, st+"\n")
	})
	get("/stats", s.serveStats)
	get("/stats/prometheus", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "text/plain; version=0.0.4")
		_ = stats.WritePrometheus(w, s.store.Snapshot(), s.store.Histograms())
	})
	get("/clusters", func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Query().Get("format") == "json" {
			s.serveClustersJSON(w)
			return
		}
		s.serveClusters(w, r)
	})
	get("/listeners", s.serveListeners)
	get("/server_info", func(w http.ResponseWriter, _ *http.Request) { s.serveServerInfo(w) })
	get("/runtime", func(w http.ResponseWriter, _ *http.Request) { serveRuntimeLayers(w) })
	get("/config_dump", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "application/json")
		raw := s.gen.Load().raw
		if raw == nil {
			io.WriteString(w, "{}\n")
			return
		}
		b, err := protojson.MarshalOptions{Multiline: true, UseProtoNames: true}.Marshal(raw)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Write(append(b, '\n'))
	})
	get("/debug/runtime", serveRuntime)
	if s.opts.EnablePprof {
		// Go's profiles (CPU, heap, goroutines, …), where Envoy's admin has /cpuprofiler and
		// /heapprofiler; only when enabled (Options.EnablePprof): otherwise 404.
		get("/debug/pprof/", pprof.Index)
		get("/debug/pprof/profile", pprof.Profile)
		get("/debug/pprof/trace", pprof.Trace)
	}
	post("/healthcheck/fail", func(w http.ResponseWriter, _ *http.Request) { s.setLive(false); io.WriteString(w, "OK\n") })
	post("/healthcheck/ok", func(w http.ResponseWriter, _ *http.Request) { s.setLive(true); io.WriteString(w, "OK\n") })
	// Envoy's /drain_listeners: stop accepting at once, or with ?graceful after the drain time
	// (--drain-time-s), responses saying Connection: close meanwhile. ?inboundonly drains the
	// listeners whose traffic_direction is INBOUND: meshproof does not read traffic_direction, so
	// it is refused rather than draining none or all.
	post("/drain_listeners", func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		if q.Has("inboundonly") {
			http.Error(w, "inboundonly: listeners have no traffic_direction in meshproof", http.StatusBadRequest)
			return
		}
		s.Drain(q.Has("graceful"), 0)
		io.WriteString(w, "OK\n")
	})
	// Envoy's /reopen_logs: every access log file is closed and opened again (after a rotation).
	post("/reopen_logs", func(w http.ResponseWriter, _ *http.Request) { s.reopenLogs(); io.WriteString(w, "OK\n") })
	post("/reset_counters", func(w http.ResponseWriter, _ *http.Request) { s.store.ResetCounters(); io.WriteString(w, "OK\n") })
	post("/quitquitquit", func(w http.ResponseWriter, _ *http.Request) {
		io.WriteString(w, "OK\n")
		s.quitOnce.Do(func() { close(s.quit) })
	})
	return mux
}

func (s *Server) serveStats(w http.ResponseWriter, r *http.Request) {
	var filter *regexp.Regexp
	var keep func(string) bool // the histograms computed: those the filter shows (all for Prometheus)
	if f := r.URL.Query().Get("filter"); f != "" {
		re, err := regexp.Compile(f)
		if err != nil {
			http.Error(w, fmt.Sprintf("Invalid regex: %v", err), http.StatusBadRequest)
			return
		}
		filter = re
		if r.URL.Query().Get("format") != "prometheus" {
			keep = re.MatchString
		}
	}
	snap, hists := s.store.Snapshot(), s.store.HistogramsMatching(keep)
	switch format := r.URL.Query().Get("format"); format {
	case "json":
		w.Header().Set("content-type", "application/json")
		_ = stats.WriteJSON(w, snap, hists, filter)
	case "prometheus":
		w.Header().Set("content-type", "text/plain; version=0.0.4")
		_ = stats.WritePrometheus(w, snap, hists)
	case "", "text":
		w.Header().Set("content-type", "text/plain")
		_ = stats.WriteText(w, snap, hists, filter)
	default:
		http.Error(w, fmt.Sprintf("usage: /stats?format=(json|prometheus|text): unknown format %q", format), http.StatusBadRequest)
	}
}

// serveClusters writes Envoy's /clusters text format: cluster-level settings, then one line per host and
// counter ("<cluster>::<host>::<stat>::<value>").
func (s *Server) serveClusters(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("content-type", "text/plain")
	g := s.current()
	defer g.release()
	names := make([]string, 0, len(g.clusters))
	for n := range g.clusters {
		names = append(names, n)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, n := range names {
		c := g.clusters[n]
		fmt.Fprintf(&b, "%s::observability_name::%s\n", n, n)
		for _, prio := range []struct {
			name string
			t    policy.CircuitBreakerThresholds
		}{{"default_priority", c.cfg.Breakers.Default}, {"high_priority", c.cfg.Breakers.High}} {
			fmt.Fprintf(&b, "%s::%s::max_connections::%d\n%s::%s::max_pending_requests::%d\n%s::%s::max_requests::%d\n%s::%s::max_retries::%d\n",
				n, prio.name, prio.t.MaxConnections, n, prio.name, prio.t.MaxPendingRequests, n, prio.name, prio.t.MaxRequests, n, prio.name, prio.t.MaxRetries)
		}
		for i, h := range c.hosts {
			if h.removed.Load() {
				continue // a host pending removal that failed its checks: gone
			}
			p := n + "::" + h.addr + "::"
			for _, kv := range []struct {
				k string
				v any
			}{
				{"cx_active", h.cxActive.Load()}, {"cx_connect_fail", h.cxConnectFail.Load()}, {"cx_total", h.cxTotal.Load()},
				{"rq_active", h.rqActive.Load()}, {"rq_error", h.rqError.Load()}, {"rq_success", h.rqSuccess.Load()},
				{"rq_timeout", h.rqTimeout.Load()}, {"rq_total", h.rqTotal.Load()},
				{"hostname", ""}, {"health_flags", c.healthFlags(i)}, {"weight", h.weight.Load()},
			} {
				fmt.Fprintf(&b, "%s%s::%v\n", p, kv.k, kv.v)
			}
		}
	}
	io.WriteString(w, b.String())
}

// runtimeMetrics are the Go runtime's metrics that /debug/runtime reports: with the downstream request
// counters of /stats they give allocations and bytes per proxied request (see proxy/bench/run.sh).
var runtimeMetrics = []string{
	"/gc/heap/allocs:objects", "/gc/heap/allocs:bytes", "/gc/cycles/total:gc-cycles",
	"/memory/classes/total:bytes", "/memory/classes/heap/objects:bytes", "/sched/goroutines:goroutines",
}

// serveRuntime answers /debug/runtime: the process's runtime/metrics values above as one flat JSON
// object, e.g. {"/gc/heap/allocs:objects":123,…}. Cumulative ones only grow, so a client takes
// differences over a run.
func serveRuntime(w http.ResponseWriter, _ *http.Request) {
	samples := make([]metrics.Sample, len(runtimeMetrics))
	for i, n := range runtimeMetrics {
		samples[i].Name = n
	}
	metrics.Read(samples)
	var b strings.Builder
	b.WriteByte('{')
	for i, s := range samples {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(strconv.Quote(s.Name))
		b.WriteByte(':')
		if s.Value.Kind() == metrics.KindUint64 {
			b.WriteString(strconv.FormatUint(s.Value.Uint64(), 10))
		} else {
			b.WriteString("null")
		}
	}
	b.WriteString("}\n")
	w.Header().Set("content-type", "application/json")
	io.WriteString(w, b.String())
}
