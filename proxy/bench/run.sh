#!/usr/bin/env bash
# proxy/bench/run.sh — `make bench-proxy`: meshproof's proxy side by side with HAProxy and nginx on one
# core each, against one nginx backend (keep-alive, `return 200` with a 1 KiB body), all on 127.0.0.1.
#
# The proxy under test is pinned to CPU 1 (meshproof GOMAXPROCS=1, HAProxy nbthread 1, nginx
# worker_processes 1); wrk, `meshproof load` and the backend run on CPU 0. Rounds are interleaved
# (haproxy nginx meshproof, haproxy …), ROUNDS of them, and every figure is reported as the median and
# the spread (min–max) of the rounds, with meshproof's ratio to each peer. The phases (PHASES selects):
#
#   start  a fresh process per round: time from exec to ready (meshproof: admin /ready answers 200; the
#          peers: the first proxied 200), idle RSS 1 s after, RSS after 10,000 requests (1,000 req/s for
#          10 s), and the RSS 1,000 idle keep-alive connections add (one GET answered on each, then held).
#          RSS counts every process of the proxy (nginx: master and worker).
#   cpu    CPU time per request at fixed open-loop rates (CPU_RATES, default 1000 and 8000 req/s; one
#          generator for all: `meshproof load --connections 64`, CPU_DURATION each): the nanoseconds of
#          CPU the proxy's processes used (/proc/<pid>/task/*/schedstat, all threads) ÷ requests answered.
#   closed closed loop `wrk -t1 -c64 -d$DURATION` with a direct-to-backend baseline → max throughput.
#          During meshproof's rounds the bench reads the admin's /debug/runtime and /stats before and
#          after: allocations and heap bytes per proxied request.
#   open   open loop at 30% of the lowest saturation rate of `closed` (or OPEN_RATE): added p50/p99/p99.9
#          over the direct baseline, coordinated-omission corrected.
#   tls    TLS termination (`make bench-proxy-h2tls`): each proxy terminates TLS 1.3 (an ECDSA P-256
#          certificate made with openssl per run; ALPN http/1.1) and forwards plain HTTP/1.1 to the
#          backend. Two rows, closed loop: `wrk -t1 -c64` over https with keep-alive (the per-request
#          cost of TLS records), and the same with `Connection: close` (a full handshake per request).
#   h2     HTTP/2 in front (`make bench-proxy-h2tls`): `h2load -t1 -c64 -m10` against each proxy's h2
#          listener, forwarding HTTP/1.1 to the backend: h2c with prior knowledge, and h2 over TLS 1.3
#          negotiated by ALPN. meshproof's rows run only when it speaks HTTP/2 (its listener answers
#          h2load, and its config takes ALPN h2); else they are skipped with a message.
#          Each row of tls and h2 reports throughput and the CPU the proxy used per request (the
#          latter holds better on a busy machine), and meshproof's allocations per request.
#   Then meshproof's peak RSS (VmHWM) over the long-lived phases.
#
# meshproof runs with realistic features on: a retry policy (5xx,reset,connect-failure; 2 retries),
# outlier detection, circuit breakers, stats (always on) and OpenTelemetry tracing sampled at 1%
# (HCM tracing.random_sampling), exporting OTLP/HTTP to a discarding sink (an nginx `return 200` on CPU 0).
# It is the proxy-only binary (cmd/meshproof-proxy) when that builds, else `meshproof proxy`.
#
# Installs haproxy, nginx, wrk (and, for tls and h2, openssl and nghttp2-client's h2load) with apt-get
# when absent. About 20 minutes with the defaults; stops everything it started. The tls and h2 phases
# add listeners to the long-lived proxies only when selected (by default the configs are unchanged).
# Environment: ROUNDS (5), DURATION (10s), PHASES ("start cpu closed open"; also "tls h2"),
# CPU_RATES ("1000 8000"), CPU_DURATION (8s), OPEN_RATE (default: 30% of the lowest saturation),
# MESHPROOF_BIN (a prebuilt `meshproof` to measure, e.g. to compare two commits; its `proxy` subcommand is
# then the proxy), RESULTS (a file to also write the raw per-round results to, tab-separated),
# PROFILE (a directory: meshproof runs with --enable-pprof and, in the last round of each tls/h2 row, a
# CPU profile of its load is saved there as <row>.pprof (DURATION of 5s or more, in seconds);
# `go tool pprof -top` reads it), SYSCALLS (non-empty: in the last round of each tls/h2 row, count
# each proxy's system calls per request with `perf stat -e raw_syscalls:sys_enter`; perf needed).
# KEEP_OUTPUT (a file to append every tls/h2 run's raw wrk or h2load output to).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshproof-bench-proxy.XXXXXX")
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
PHASES=${PHASES:-start cpu closed open}
CPU_RATES=${CPU_RATES:-1000 8000}
CPU_DURATION=${CPU_DURATION:-8s}
PROBE="python3 $ROOT/proxy/bench/probe.py"
phase() { [[ " $PHASES " == *" $1 "* ]]; }
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
if phase tls || phase h2; then
	command -v openssl >/dev/null || need+=(openssl)
	command -v h2load >/dev/null || ! phase h2 || need+=(nghttp2-client)
fi
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
MP_PROXY=() # the command that runs meshproof's proxy
if [ -z "$MP_BIN" ]; then
	MP_BIN=$WORK/meshproof
	log "building meshproof"
	(cd "$ROOT" && CGO_ENABLED=0 go build -o "$MP_BIN" ./cmd/meshproof)
	if [ -d "$ROOT/cmd/meshproof-proxy" ]; then
		(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/meshproof-proxy" ./cmd/meshproof-proxy)
		MP_PROXY=("$WORK/meshproof-proxy")
	fi
fi
[ ${#MP_PROXY[@]} -gt 0 ] || MP_PROXY=("$MP_BIN" proxy)
if [ -n "${PROFILE:-}" ]; then
	mkdir -p "$PROFILE"
	MP_PROXY+=(--enable-pprof)
fi
[ "$(ulimit -n)" -ge 20000 ] || ulimit -n "$(ulimit -Hn)" # HAProxy's maxconn 8000 needs 16k descriptors; 1,000 idle connections

BACKEND=127.0.0.1:18180 HAP=127.0.0.1:18181 NGX=127.0.0.1:18182 MP=127.0.0.1:18183 MPADMIN=127.0.0.1:18184 OTLP=127.0.0.1:18185
# The tls and h2 phases' listeners: TLS with ALPN http/1.1, h2c (prior knowledge), TLS with ALPN h2.
HAP_TLS=127.0.0.1:18186 NGX_TLS=127.0.0.1:18187 MP_TLS=127.0.0.1:18188
HAP_H2C=127.0.0.1:18189 NGX_H2C=127.0.0.1:18190 MP_H2C=$MP # meshproof's HCM is codec AUTO: its one listener
HAP_H2S=127.0.0.1:18191 NGX_H2S=127.0.0.1:18192 MP_H2S=127.0.0.1:18193
EXTRA=()
! phase tls || EXTRA+=($HAP_TLS $NGX_TLS $MP_TLS)
! phase h2 || EXTRA+=($HAP_H2C $NGX_H2C $HAP_H2S $NGX_H2S $MP_H2S)
for addr in $BACKEND $HAP $NGX $MP $MPADMIN $OTLP "${EXTRA[@]}"; do
	if (exec 3<>"/dev/tcp/${addr%:*}/${addr##*:}") 2>/dev/null; then
		log "port ${addr##*:} is in use: is another bench running?"
		exit 1
	fi
done
BODY=$(head -c 1024 /dev/zero | tr '\0' x)
mkdir -p "$WORK/nginx-backend" "$WORK/nginx-proxy"

# The tls and h2 phases: one ECDSA P-256 certificate per run (CN and SAN 127.0.0.1), and each proxy's
# extra listeners, TLS 1.3 only, all forwarding HTTP/1.1 to the backend.
NGX_EXTRA="" HAP_EXTRA="" MP_EXTRA="" MP_EXTRA_H2S=""
tls_ctx() { # meshproof's DownstreamTlsContext with ALPN $1, indented for a filter chain
	cat <<CONF
          transport_socket:
            name: envoy.transport_sockets.tls
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
              common_tls_context:
                tls_params: {tls_minimum_protocol_version: TLSv1_3}
                alpn_protocols: [$1]
                tls_certificates: [{certificate_chain: {filename: $WORK/tls/cert.pem}, private_key: {filename: $WORK/tls/key.pem}}]
CONF
}
mp_listener() { # name, address, stat prefix, ALPN (empty: clear text): a listener as the ingress one
	cat <<CONF
    - name: $1
      address: {socket_address: {address: 127.0.0.1, port_value: ${2##*:}}}
      filter_chains:
        - filters:
            - name: envoy.filters.network.http_connection_manager
              typed_config:
                "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
                stat_prefix: $3
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
CONF
	[ -z "$4" ] || tls_ctx "$4"
}
if phase tls || phase h2; then
	mkdir -p "$WORK/tls"
	openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 -subj /CN=127.0.0.1 \
		-addext subjectAltName=IP:127.0.0.1 -keyout "$WORK/tls/key.pem" -out "$WORK/tls/cert.pem" 2>/dev/null
	cat "$WORK/tls/cert.pem" "$WORK/tls/key.pem" > "$WORK/tls/haproxy.pem"
	NGX_SSL="ssl_certificate $WORK/tls/cert.pem; ssl_certificate_key $WORK/tls/key.pem; ssl_protocols TLSv1.3;"
	NGX_LOC="location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection \"\"; }"
	HAP_SSL="ssl crt $WORK/tls/haproxy.pem ssl-min-ver TLSv1.3"
fi
if phase tls; then
	NGX_EXTRA+="  server { listen $NGX_TLS ssl; $NGX_SSL $NGX_LOC }"$'\n'
	HAP_EXTRA+="frontend fe_tls"$'\n'"  bind $HAP_TLS $HAP_SSL alpn http/1.1"$'\n'"  default_backend be"$'\n'
	MP_EXTRA+=$(mp_listener ingress_tls "$MP_TLS" ingress_tls http/1.1)$'\n'
fi
if phase h2; then
	# nginx 1.22 (Debian 12): `listen … http2` (1.25's `http2 on` is not there yet).
	NGX_EXTRA+="  server { listen $NGX_H2C http2; $NGX_LOC }"$'\n'
	NGX_EXTRA+="  server { listen $NGX_H2S ssl http2; $NGX_SSL $NGX_LOC }"$'\n'
	HAP_EXTRA+="frontend fe_h2c"$'\n'"  bind $HAP_H2C proto h2"$'\n'"  default_backend be"$'\n'
	HAP_EXTRA+="frontend fe_h2s"$'\n'"  bind $HAP_H2S $HAP_SSL alpn h2"$'\n'"  default_backend be"$'\n'
	# Kept apart: until meshproof speaks HTTP/2 its config refuses ALPN h2 (see the long-lived start).
	MP_EXTRA_H2S=$(mp_listener ingress_h2s "$MP_H2S" ingress_h2s h2)$'\n'
fi
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
  server { listen $NGX; location / { proxy_pass http://be; proxy_http_version 1.1; proxy_set_header Connection ""; } }
$NGX_EXTRA}
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
${HAP_EXTRA}backend be
  server s1 $BACKEND
CONF
# bootstrap.yaml; with phase h2, bootstrap-h2s.yaml adds the TLS h2 listener.
mp_bootstrap() {
	cat <<CONF
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
${MP_EXTRA}${MP_EXTRA_H2S}  clusters:
    - name: backend
      type: STATIC
      connect_timeout: 1s
      outlier_detection: {consecutive_5xx: 5, interval: 1s, base_ejection_time: 30s}
      circuit_breakers: {thresholds: [{max_connections: 4096, max_pending_requests: 4096, max_requests: 4096, max_retries: 16}]}
      load_assignment:
        cluster_name: backend
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${BACKEND##*:}}}}}]}]
CONF
}
MP_EXTRA_H2S="" mp_bootstrap > "$WORK/bootstrap.yaml"
[ -z "$MP_EXTRA_H2S" ] || mp_bootstrap > "$WORK/bootstrap-h2s.yaml"

declare -A ADDR=([direct]=$BACKEND [haproxy]=$HAP [nginx]=$NGX [meshproof]=$MP)
PEERS=(haproxy nginx meshproof)
R=$WORK/results.tsv # kind target round values…
: > "$R"
# start_proxy T: start target T pinned to CPU 1; prints "<pid> <ms from exec to ready>".
start_proxy() {
	case $1 in
	haproxy) $PROBE start "http://$HAP/" -- taskset -c 1 "$HAPROXY" -f "$WORK/haproxy.cfg" -db ;;
	nginx) $PROBE start "http://$NGX/" -- taskset -c 1 "$NGINX" -c "$WORK/nginx-proxy/nginx.conf" -p "$WORK/nginx-proxy" ;;
	meshproof) $PROBE start "http://$MPADMIN/ready" -- env GOMAXPROCS=1 taskset -c 1 "${MP_PROXY[@]}" -c "$WORK/bootstrap.yaml" ;;
	esac
}
stop_proxy() { kill "$1" 2>/dev/null || true; while kill -0 "$1" 2>/dev/null; do sleep 0.05; done; }
load() { taskset -c 0 "$MP_BIN" load "http://${ADDR[$1]}/" --rate "$2" --duration "$3" --connections 64 --json; }
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }

# The backend and the tracing sink serve every phase. taskset execs its command, so each $! is the
# process itself (nginx's master stops its worker on TERM).
taskset -c 0 "$NGINX" -c "$WORK/nginx-backend/nginx.conf" -p "$WORK/nginx-backend" & PIDS+=($!)
for i in $(seq 1 100); do
	curl -fsS -o /dev/null "http://$BACKEND/" 2>/dev/null && break
	[ "$i" -lt 100 ] || { log "the backend does not answer on $BACKEND"; exit 1; }
	sleep 0.1
done

if phase start; then
	log "== start, idle RSS, RSS after 10,000 requests, RSS of 1,000 idle connections: a fresh process per round, $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${PEERS[@]}"; do
			read -r pid ms < <(start_proxy "$t")
			sleep 1
			idle=$($PROBE rss "$pid")
			ok=$(load "$t" 1000 10s | field successes)
			after=$($PROBE rss "$pid")
			read -r before held < <($PROBE idle "${ADDR[$t]}" 1000 "$pid")
			stop_proxy "$pid"
			printf 'start\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$ms" "$idle" "$after" "$((held - before))" "$ok" >> "$R"
			log "  round $r  $t  ready in ${ms} ms  idle RSS $((idle / 1024)) MiB  after $ok requests $((after / 1024)) MiB  +1,000 idle connections $(((held - before) / 1024)) MiB"
		done
	done
fi

# The long-lived proxies of the other phases.
taskset -c 1 "$HAPROXY" -f "$WORK/haproxy.cfg" -db & PIDS+=($!); HAPPID=$!
taskset -c 1 "$NGINX" -c "$WORK/nginx-proxy/nginx.conf" -p "$WORK/nginx-proxy" & PIDS+=($!); NGXPID=$!
# ready URL: wait until it answers 200 (https: any certificate); 0 when it does within 10 s.
ready() {
	for i in $(seq 1 100); do
		curl -kfsS -o /dev/null "$1" 2>/dev/null && return 0
		sleep 0.1
	done
	return 1
}
MP_H2S_OK=0
if [ -f "$WORK/bootstrap-h2s.yaml" ]; then
	# A meshproof without HTTP/2 refuses alpn_protocols h2 by its path and exits: then it runs without.
	GOMAXPROCS=1 taskset -c 1 "${MP_PROXY[@]}" -c "$WORK/bootstrap-h2s.yaml" >"$WORK/meshproof.log" 2>&1 & MPPID=$!
	if ready "http://$MPADMIN/ready" && kill -0 "$MPPID" 2>/dev/null; then
		MP_H2S_OK=1
	else
		log "meshproof does not take a TLS listener with ALPN h2 (its h2 over TLS row is skipped): $(grep -m1 -i alpn "$WORK/meshproof.log" || head -1 "$WORK/meshproof.log")"
		stop_proxy "$MPPID"
	fi
fi
if [ "$MP_H2S_OK" = 0 ]; then
	GOMAXPROCS=1 taskset -c 1 "${MP_PROXY[@]}" -c "$WORK/bootstrap.yaml" >"$WORK/meshproof.log" 2>&1 & MPPID=$!
fi
PIDS+=($MPPID)
declare -A PID=([haproxy]=$HAPPID [nginx]=$NGXPID [meshproof]=$MPPID)
urls=("http://$HAP/" "http://$NGX/" "http://$MP/")
! phase tls || urls+=("https://$HAP_TLS/" "https://$NGX_TLS/" "https://$MP_TLS/")
! phase h2 || urls+=("https://$HAP_H2S/" "https://$NGX_H2S/")
[ "$MP_H2S_OK" = 0 ] || urls+=("https://$MP_H2S/")
for u in "${urls[@]}"; do
	ready "$u" || { log "nothing answers on $u"; cat "$WORK/meshproof.log" >&2; exit 1; }
done

if phase cpu; then
	for rate in $CPU_RATES; do
		log "== CPU per request at $rate req/s (open loop, 64 connections, $CPU_DURATION), $ROUNDS interleaved rounds"
		for r in $(seq 1 "$ROUNDS"); do
			for t in "${PEERS[@]}"; do
				c0=$($PROBE cpu "${PID[$t]}")
				j=$(load "$t" "$rate" "$CPU_DURATION")
				c1=$($PROBE cpu "${PID[$t]}")
				read -r ok errs held < <(python3 -c 'import json,sys; j=json.load(sys.stdin); print(j["successes"], j["errors"], j["rate_held"])' <<<"$j")
				printf 'cpu\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$rate" "$((c1 - c0))" "$ok" >> "$R"
				log "  round $r  $t  $(python3 -c "print(f'{($c1 - $c0) / 1000 / max($ok, 1):.1f}')") µs of CPU per request over $ok requests (errors $errs, rate held $held)"
			done
		done
	done
fi

runtime_metric() { curl -fsS "http://$MPADMIN/debug/runtime" | python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
rq_total() { # the downstream_rq_total of the HCM with stat_prefix $1 (default ingress)
	curl -fsS "http://$MPADMIN/stats?filter=downstream_rq_total" | awk -v k="http.${1:-ingress}.downstream_rq_total:" '$1 == k {print $2}'
}
ORDER=(direct haproxy nginx meshproof)
if phase closed; then
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
fi
if phase open; then
	rate=${OPEN_RATE:-}
	if [ -z "$rate" ]; then
		lowest=$(awk -F'\t' '$1=="rps" && $2!="direct" {s[$2]+=$4; n[$2]++} END {m=-1; for (t in s) {v=s[t]/n[t]; if (m<0||v<m) m=v}; print int(m)}' "$R")
		[ "$lowest" -gt 0 ] 2>/dev/null || { log "phase open needs OPEN_RATE without phase closed"; exit 2; }
		rate=$((lowest * 30 / 100))
	fi
	log "== open loop at $rate req/s for $DURATION, meshproof load, 64 connections, $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${ORDER[@]}"; do
			j=$(load "$t" "$rate" "$DURATION")
			read -r p50 p99 p999 errs held < <(python3 -c 'import json,sys; j=json.load(sys.stdin); l=j["latency_ms"]; print(l["p50"], l["p99"], l["p999"], j["errors"], j["rate_held"])' <<<"$j")
			printf 'lat\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$t" "$r" "$p50" "$p99" "$p999" "$errs" "$held" >> "$R"
			log "  round $r  $t  p50 ${p50}ms  p99 ${p99}ms  p99.9 ${p999}ms  errors $errs  rate held $held"
		done
	done
fi
# row NAME TARGET ROUND STAT_PREFIX CMD…: one closed-loop run of CMD (wrk or h2load, on CPU 0) against
# TARGET, recorded as "row NAME TARGET ROUND req/s errors proxy-CPU-ns requests-answered" (meshproof also:
# "rowalloc NAME meshproof ROUND objects bytes requests", its requests counted by STAT_PREFIX's
# downstream_rq_total). Errors: wrk's socket errors and non-2xx; h2load's non-2xx and timeouts.
row() {
	local name=$1 t=$2 r=$3 prefix=$4 o0 b0 n0 o1 b1 n1 c0 c1 out rps n errs proto prof=""
	shift 4
	if [ "$t" = meshproof ]; then
		o0=$(runtime_metric /gc/heap/allocs:objects) b0=$(runtime_metric /gc/heap/allocs:bytes) n0=$(rq_total "$prefix")
		if [ -n "${PROFILE:-}" ] && [ "$r" = "$ROUNDS" ] && [ "${DURATION%s}" -ge 5 ]; then
			# From 1 s into the load to 2 s before its end.
			(sleep 1; curl -fsS -o "$PROFILE/$name.pprof" "http://$MPADMIN/debug/pprof/profile?seconds=$((${DURATION%s} - 3))") & prof=$!
		fi
	fi
	local sc="" sys=""
	if [ -n "${SYSCALLS:-}" ] && [ "$r" = "$ROUNDS" ] && [ "${DURATION%s}" -ge 5 ]; then
		# The system calls of the proxy's processes from 1 s into the load to 2 s before its end.
		(sleep 1; perf stat -x, -e raw_syscalls:sys_enter -p "$(family "${PID[$t]}")" -o "$WORK/sys.$t" -- sleep $((${DURATION%s} - 3))) & sc=$!
	fi
	c0=$($PROBE cpu "${PID[$t]}")
	out=$(taskset -c 0 timeout $((${DURATION%s} + 30)) "$@" 2>&1) || true
	c1=$($PROBE cpu "${PID[$t]}")
	[ -z "$prof" ] || wait "$prof" || log "  (no profile: is --enable-pprof taken?)"
	[ -z "$sc" ] || wait "$sc" || log "  (no system call count: perf stat -e raw_syscalls:sys_enter failed)"
	if [ "$1" = wrk ]; then
		rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
		n=$(awk '/requests in/ {print $1}' <<<"$out")
		errs=$(awk '/Socket errors/ {gsub(/[^0-9 ]/, ""); for (i = 1; i <= NF; i++) s += $i} /Non-2xx/ {s += $NF} END {print s + 0}' <<<"$out")
		n=$((n - errs)) proto=http/1.1
	else
		rps=$(awk '/^finished in/ {print $4}' <<<"$out")
		# Answered: "succeeded" (status codes count a response at its headers, so a few more than that
		# when time is up). Errors: non-2xx and timeouts (not the streams cut when -D's time is up).
		read -r n errs < <(awk '/^requests:/ {ok = $8; to = $14} /^status codes:/ {bad = $5 + $7 + $9} END {print ok + 0, bad + to}' <<<"$out")
		proto=$(awk '/Application protocol:/ {print $3}' <<<"$out")
	fi
	[ -z "${KEEP_OUTPUT:-}" ] || printf '== %s %s round %s: %s\n%s\n' "$name" "$t" "$r" "$*" "$out" >> "$KEEP_OUTPUT"
	if [ -z "$rps" ]; then
		log "  round $r  $t  $name: no result from $1:"; log "$out"; rps=0 n=0 errs=0
	fi
	printf 'row\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t" "$r" "$rps" "$errs" "$((c1 - c0))" "$n" >> "$R"
	if [ -n "$sc" ] && [ -s "$WORK/sys.$t" ]; then # per request: over the window's share of the requests
		sys=$(awk -F, -v rps="$rps" -v w=$((${DURATION%s} - 3)) '/raw_syscalls/ && rps > 0 {printf "%.1f", $1 / (rps * w)}' "$WORK/sys.$t")
		printf 'rowsys\t%s\t%s\t%s\t%s\n' "$name" "$t" "$r" "$sys" >> "$R"
	fi
	if [ "$t" = meshproof ]; then
		o1=$(runtime_metric /gc/heap/allocs:objects) b1=$(runtime_metric /gc/heap/allocs:bytes) n1=$(rq_total "$prefix")
		printf 'rowalloc\t%s\t%s\t%s\t%s\t%s\t%s\n' "$name" "$t" "$r" $((o1 - o0)) $((b1 - b0)) $((n1 - n0)) >> "$R"
	fi
	log "  round $r  $t  $rps req/s  $(python3 -c "print(f'{($c1 - $c0) / 1000 / max($n, 1):.1f}')") µs of CPU per request${sys:+  $sys system calls per request}  ($proto, errors $errs)"
}
family() { # PID and its children, comma-separated (nginx: its master and worker)
	local c
	c=$(cat /proc/"$1"/task/*/children 2>/dev/null | tr -s ' \n' ',' | sed 's/,$//')
	echo "$1${c:+,$c}"
}
tls_info() { # the TLS version and cipher suite each proxy negotiates with OpenSSL's client
	for t in "${PEERS[@]}"; do
		log "  $t: $(openssl s_client -connect "$1" -alpn "$2" -brief </dev/null 2>&1 |
			awk -F': ' '/Protocol version|Ciphersuite/ {printf "%s %s; ", $1, $2}')"
		shift 2
	done
}
declare -A TLSADDR=([haproxy]=$HAP_TLS [nginx]=$NGX_TLS [meshproof]=$MP_TLS)
declare -A H2C=([haproxy]=$HAP_H2C [nginx]=$NGX_H2C [meshproof]=$MP_H2C)
declare -A H2S=([haproxy]=$HAP_H2S [nginx]=$NGX_H2S [meshproof]=$MP_H2S)
if phase tls; then
	log "== TLS 1.3 termination (ECDSA P-256), HTTP/1.1 to the backend; what each negotiates with openssl s_client:"
	tls_info "$HAP_TLS" http/1.1 "$NGX_TLS" http/1.1 "$MP_TLS" http/1.1
	log "== tls-keepalive: wrk -t1 -c64 -d$DURATION over https, keep-alive, $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${PEERS[@]}"; do row tls-keepalive "$t" "$r" ingress_tls wrk -t1 -c64 -d"$DURATION" "https://${TLSADDR[$t]}/"; done
	done
	log "== tls-handshake: the same with Connection: close (a full TLS 1.3 handshake per request), $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${PEERS[@]}"; do
			row tls-handshake "$t" "$r" ingress_tls wrk -t1 -c64 -d"$DURATION" -H "Connection: close" "https://${TLSADDR[$t]}/"
		done
	done
fi
if phase h2; then
	H2PEERS=(haproxy nginx)
	# meshproof's HCM is codec AUTO on its clear-text listener (the default): as Envoy's
	# ConnectionManagerUtility::autoCreateCodec (source/common/http/conn_manager_utility.cc), with no ALPN
	# result the HTTP/2 preface picks the HTTP/2 codec — once meshproof has one.
	if taskset -c 0 timeout 10 h2load -n4 -c1 "http://$MP_H2C/" 2>&1 | grep -q '^status codes: 4 2xx'; then
		H2PEERS+=(meshproof)
	else
		log "meshproof does not answer h2c with prior knowledge on $MP_H2C: its h2c row is skipped"
		printf 'skip\th2c\tmeshproof\tno HTTP/2 (h2c prior knowledge not answered)\n' >> "$R"
	fi
	log "== h2c: h2load -t1 -c64 -m10 -D $DURATION, prior knowledge, HTTP/1.1 to the backend, $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${H2PEERS[@]}"; do row h2c "$t" "$r" ingress h2load -t1 -c64 -m10 -D "${DURATION%s}" "http://${H2C[$t]}/"; done
	done
	H2PEERS=(haproxy nginx)
	if [ "$MP_H2S_OK" = 1 ]; then
		H2PEERS+=(meshproof)
		log "== h2 over TLS 1.3; what each negotiates with openssl s_client:"
		tls_info "$HAP_H2S" h2 "$NGX_H2S" h2 "$MP_H2S" h2
	else
		printf 'skip\th2-tls\tmeshproof\tno HTTP/2 (its config refuses ALPN h2)\n' >> "$R"
	fi
	log "== h2-tls: h2load -t1 -c64 -m10 -D $DURATION over TLS 1.3, ALPN h2, HTTP/1.1 to the backend, $ROUNDS interleaved rounds"
	for r in $(seq 1 "$ROUNDS"); do
		for t in "${H2PEERS[@]}"; do row h2-tls "$t" "$r" ingress_h2s h2load -t1 -c64 -m10 -D "${DURATION%s}" "https://${H2S[$t]}/"; done
	done
fi
rss_kb=$(awk '/VmHWM/ {print $2}' "/proc/$MPPID/status")
printf 'rss\tmeshproof\t0\t%s\n' "$rss_kb" >> "$R"
[ -z "${RESULTS:-}" ] || cp "$R" "$RESULTS"

echo "== results: median [min–max] of $ROUNDS rounds; meshproof with retries, outlier detection, breakers, stats, tracing at 1%"
python3 "$ROOT/proxy/bench/summary.py" "$R"
