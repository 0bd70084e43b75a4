#!/usr/bin/env bash
# proxy/bench/run.sh — `make bench-proxy`: meshproof's proxy side by side with HAProxy and nginx on one
# core each, against one nginx backend (keep-alive, `return 200` with a 1 KiB body), all on 127.0.0.1.
#
# The proxy under test is pinned to CPU 1 (meshproof GOMAXPROCS=1, HAProxy nbthread 1, nginx
# worker_processes 1); wrk, `meshproof load` and the backend run on CPU 0. A direct-to-backend baseline
# runs in the same rounds, and rounds are interleaved (direct haproxy nginx meshproof, direct … ).
#
#   1. closed loop, ROUNDS rounds: `wrk -t1 -c64 -d10s` → max throughput (mean of the rounds) and the
#      ratios meshproof/HAProxy, meshproof/nginx. During meshproof's rounds the bench reads the admin's
#      /debug/runtime (Go runtime/metrics) and /stats before and after: allocations and heap bytes per
#      proxied request.
#   2. open loop, ROUNDS rounds, ONE generator for every target (`meshproof load --rate R --duration 10s
#      --connections 64 --json`, coordinated-omission corrected) at R = 30% of the lowest saturation rate
#      measured in 1: added p50/p99/p99.9 over the direct baseline (mean of the rounds) for each proxy.
#   3. meshproof's peak RSS (VmHWM of /proc/<pid>/status).
#
# meshproof runs with realistic features on: a retry policy (5xx,reset,connect-failure; 2 retries),
# outlier detection, circuit breakers, stats (always on) and OpenTelemetry tracing sampled at 1%
# (HCM tracing.random_sampling), exporting OTLP/HTTP to a discarding sink (an nginx `return 200` on CPU 0).
#
# Installs haproxy, nginx and wrk with apt-get when absent. About 3 minutes with the defaults; stops
# everything it started. Environment: ROUNDS (2), DURATION (10s), MESHPROOF_BIN (a prebuilt binary to
# measure instead of building ./cmd/meshproof, e.g. to compare two commits), RESULTS (a file to also
# write the raw per-round results to, tab-separated).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshproof-bench-proxy.XXXXXX")
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-10s}
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	for p in "${PIDS[@]}"; do wait "$p" 2>/dev/null || true; done
	rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM
log() { printf '%s\n' "$*" >&2; }

if [ "$(nproc)" -lt 2 ]; then
	log "bench-proxy needs 2 CPUs (load on CPU 0, the proxy under test on CPU 1)"
	exit 2
fi
need=()
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || need+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
	log "installing: ${need[*]}"
	apt-get update >/dev/null
	DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
	# The packages start system services on their default ports: stop them, we run our own.
	for svc in haproxy nginx; do service "$svc" stop >/dev/null 2>&1 || true; done
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

MP_BIN=${MESHPROOF_BIN:-}
if [ -z "$MP_BIN" ]; then
	MP_BIN=$WORK/meshproof
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$MP_BIN" ./cmd/meshproof)
fi

BACKEND=127.0.0.1:18180 HAP=127.0.0.1:18181 NGX=127.0.0.1:18182 MP=127.0.0.1:18183 MPADMIN=127.0.0.1:18184 OTLP=127.0.0.1:18185
for addr in $BACKEND $HAP $NGX $MP $MPADMIN $OTLP; do
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		log "port ${addr##*:} is in use: is another bench running?"
		exit 1
	fi
done
BODY=$(head -c 1024 /dev/zero | tr '\0' x)
mkdir -p "$WORK/nginx-backend" "$WORK/nginx-proxy"
cat > "$WORK/nginx-backend/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx-backend/pid; error_log /dev/null crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  server { listen $BACKEND; location / { return 200 '$BODY'; } }
  # The OTLP/HTTP sink for meshproof's sampled spans: accepts and discards.
  server { listen $OTLP; client_max_body_size 64m; location / { return 200; } } }
CONF
cat > "$WORK/nginx-proxy/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx-proxy/pid; error_log /dev/null crit;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000; keepalive_timeout 300s;
  upstream be { server $BACKEND; keepalive 128; keepalive_requests 1000000; }
  server { listen $NGX; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } } }
CONF
cat > "$WORK/haproxy.cfg" <<CONF
global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  http-reuse always
frontend fe
  bind $HAP
  default_backend be
backend be
  server s1 $BACKEND
CONF
cat > "$WORK/bootstrap.yaml" <<CONF
admin: {address: {socket_address: {address: 127.0.0.1, port_value: ${MPADMIN##*:}}}}
tracing:
  http:
    name: envoy.tracers.opentelemetry
    typed_config:
      "@type": type.googleapis.com/envoy.config.trace.v3.OpenTelemetryConfig
      http_service: {http_uri: {uri: "http://$OTLP/v1/traces", cluster: otel, timeout: 1s}}
      service_name: bench
static_resources:
  listeners:
    - name: ingress
      address: {socket_address: {address: 127.0.0.1, port_value: ${MP##*:}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: ingress
                tracing: {random_sampling: {value: 1}}
                route_config:
                  virtual_hosts:
                    - name: all
                      domains: ["*"]
                      routes:
                        - match: {prefix: /}
                          route: {cluster: backend, timeout: 5s, retry_policy: {retry_on: "5xx,reset,connect-failure", num_retries: 2}}
                http_filters:
                  - {name: envoy.filters.http.router, typed_config: {"@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router}}
  clusters:
    - name: backend
      type: STATIC
      connect_timeout: 1s
      outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s}
      circuit_breakers: {thresholds: [{max_connections: 4096, max_pending_requests: 4096, max_requests: 4096, max_retries: 16}]}
      load_assignment:
        cluster_name: backend
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${BACKEND##*:}}}}}]}]
CONF

# taskset execs its command, so each $! is the process itself (nginx's master stops its worker on TERM).
taskset -c 0 "$NGINX" -c "$WORK/nginx-backend/nginx.conf" -p "$WORK/nginx-backend" & PIDS+=($!)
taskset -c 1 "$HAPROXY" -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
taskset -c 1 "$NGINX" -c "$WORK/nginx-proxy/nginx.conf" -p "$WORK/nginx-proxy" & PIDS+=($!)
GOMAXPROCS=1 taskset -c 1 "$MP_BIN" proxy -c "$WORK/bootstrap.yaml" >"$WORK/meshproof.log" 2>&1 & MPPID=$!; PIDS+=($MPPID)
for addr in $BACKEND $HAP $NGX $MP; do
	for i in $(seq 1 100); do
		curl -fsS -o /dev/null "http://$addr/" 2>/dev/null && break
		[ "$i" -lt 100 ] || { log "nothing answers on $addr"; cat "$WORK/meshproof.log" >&2; exit 1; }
		sleep 0.1
	done
done

declare -A ADDR=([direct]=$BACKEND [haproxy]=$HAP [nginx]=$NGX [meshproof]=$MP)
ORDER=(direct haproxy nginx meshproof)
R=$WORK/results.tsv # kind target round values…
: > "$R"
runtime_metric() { curl -fsS "http://$MPADMIN/debug/runtime" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
rq_total() { curl -fsS "http://$MPADMIN/stats?filter=downstream_rq_total" | awk '$1 == "http.ingress.downstream_rq_total:" {print $2}'; }

log "== closed loop: wrk -t1 -c64 -d$DURATION, $ROUNDS interleaved rounds (load and backend on CPU 0, proxies on CPU 1)"
for r in $(seq 1 "$ROUNDS"); do
	for t in "${ORDER[@]}"; do
		if [ "$t" = meshproof ]; then
			o0=$(runtime_metric /gc/heap/allocs:objects) b0=$(runtime_metric /gc/heap/allocs:bytes) n0=$(rq_total)
		fi
		out=$(taskset -c 0 wrk -t1 -c64 -d"$DURATION" "http://${ADDR[$t]}/")
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		bad=$(awk '/Non-2xx|Socket errors/ {print}' <<<"$out")
		printf 'rps\t%s\t%s\t%s\n' "$t" "$r" "$rps" >> "$R"
		if [ "$t" = meshproof ]; then
			o1=$(runtime_metric /gc/heap/allocs:objects) b1=$(runtime_metric /gc/heap/allocs:bytes) n1=$(rq_total)
			printf 'alloc\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" $((o1 - o0)) $((b1 - b0)) $((n1 - n0)) >> "$R"
		fi
		log "  round $r  $t  $rps req/s ${bad:+ ($bad)}"
	done
done
lowest=$(awk -F'\t' '$1=="rps" && $2!="direct" {s[$2]+=$4; n[$2]++} END {m=-1; for (t in s) {v=s[t]/n[t]; if (m<0||v<m) m=v}; print int(m)}' "$R")
rate=$((lowest * 30 / 100))
log "== open loop at 30% of the lowest saturation ($lowest req/s): $rate req/s for $DURATION, meshproof load, 64 connections, $ROUNDS interleaved rounds"
for r in $(seq 1 "$ROUNDS"); do
	for t in "${ORDER[@]}"; do
		j=$(taskset -c 0 "$MP_BIN" load "http://${ADDR[$t]}/" --rate "$rate" --duration "$DURATION" --connections 64 --json)
		read -r p50 p99 p999 errs held < <(python3 -c 'import json,sys; j=json.load(sys.stdin); l=j["latency_ms"]; print(l["p50"], l["p99"], l["p999"], j["errors"], j["rate_held"])' <<<"$j")
		printf 'lat\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$p50" "$p99" "$p999" "$errs" "$held" >> "$R"
		log "  round $r  $t  p50 ${p50}ms  p99 ${p99}ms  p99.9 ${p999}ms  errors $errs  rate held $held"
	done
done
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$MPPID/status")
printf 'rss\tmeshproof\t0\t%s\n' "$rss_kb" >> "$R"
[ -z "${RESULTS:-}" ] || cp "$R" "$RESULTS"

echo "== results (mean of $ROUNDS rounds; meshproof: retries, outlier detection, breakers, stats, tracing at 1%)"
python3 - "$R" "$rate" <<'PY'
import sys, collections
rows = [l.rstrip("\n").split("\t") for l in open(sys.argv[1])]
rate = sys.argv[2]
mean = lambda xs: sum(xs) / len(xs)
rps = collections.defaultdict(list); lat = collections.defaultdict(list); alloc = [0, 0, 0]
for r in rows:
    if r[0] == "rps": rps[r[1]].append(float(r[3]))
    if r[0] == "lat": lat[r[1]].append([float(x) for x in r[3:6]])
    if r[0] == "alloc": alloc = [a + int(x) for a, x in zip(alloc, r[3:6])]
    if r[0] == "rss": rss_kb = int(r[3])
tp = {t: mean(v) for t, v in rps.items()}
lm = {t: [mean(col) for col in zip(*v)] for t, v in lat.items()}
print("throughput, closed loop wrk -t1 -c64 (req/s): " + ", ".join(f"{t} {tp[t]:.0f}" for t in ["direct", "haproxy", "nginx", "meshproof"]))
print(f"  meshproof/haproxy {tp['meshproof']/tp['haproxy']:.2f}   meshproof/nginx {tp['meshproof']/tp['nginx']:.2f}")
added = {t: [x - d for x, d in zip(lm[t], lm["direct"])] for t in ["haproxy", "nginx", "meshproof"]}
print(f"added latency over direct, open loop at {rate} req/s (ms):")
for t in ["haproxy", "nginx", "meshproof"]:
    a = added[t]
    print(f"  {t:9s}  p50 {a[0]:7.3f}  p99 {a[1]:7.3f}  p99.9 {a[2]:7.3f}")
def ratio(x, y): return f"{x/y:.2f}" if y > 0.001 else "n/a"
for other in ["haproxy", "nginx"]:
    m, o = added["meshproof"], added[other]
    print(f"  meshproof/{other:7s} added p50 {ratio(m[0], o[0])}  p99 {ratio(m[1], o[1])}  p99.9 {ratio(m[2], o[2])}")
objs, byts, n = alloc
if n:
    print(f"meshproof allocations per request {objs/n:.1f}, heap bytes per request {byts/n:.0f} (over {n} requests)")
print(f"meshproof peak RSS (VmHWM) {rss_kb/1024:.1f} MiB")
PY
