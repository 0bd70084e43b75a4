#!/usr/bin/env bash
# bench/proxy/run.sh — `make bench-proxy`: meshproof's proxy side by side with HAProxy and nginx on one
# core each, against one nginx backend (keep-alive, `return 200` with a 1 KiB body), all on loopback.
#
# The proxy under test is pinned to CPU 1 (meshproof GOMAXPROCS=1, HAProxy nbthread 1, nginx one worker);
# wrk, meshproof load and the backend run on CPU 0. Rounds are interleaved (A B C A B C …) and a
# direct-to-backend baseline runs in the same rounds. Printed: closed-loop max throughput (wrk -t1 -c64)
# as ratios meshproof/HAProxy and meshproof/nginx; added p50/p99/p99.9 latency over the direct baseline
# at 30% of the lowest saturation rate (open loop, the same generator for every target); meshproof's
# peak RSS. meshproof runs with a retry policy, outlier detection and circuit breakers on.
# Installs haproxy, nginx and wrk with apt-get when absent. Takes about 4 minutes.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshproof-bench-proxy.XXXXXX")
ROUNDS=${ROUNDS:-2}
DURATION=${DURATION:-8s}
PIDS=()
cleanup() {
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
	wait 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT INT TERM
log() { printf '%s\n' "$*" >&2; }

need=()
command -v haproxy >/dev/null || need+=(haproxy)
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || need+=(nginx)
command -v wrk >/dev/null || need+=(wrk)
if [ ${#need[@]} -gt 0 ]; then
	log "installing: ${need[*]}"
	apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${need[@]}" >/dev/null
	systemctl stop haproxy nginx 2>/dev/null || service haproxy stop 2>/dev/null || true
	service nginx stop 2>/dev/null || true
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
HAPROXY=$(command -v haproxy || echo /usr/sbin/haproxy)

(cd "$ROOT" && CGO_ENABLED=0 go build -o "$WORK/meshproof" ./cmd/meshproof)

BACKEND=127.0.0.1:18180 HAP=127.0.0.1:18181 NGX=127.0.0.1:18182 MP=127.0.0.1:18183 MPADMIN=127.0.0.1:18184
head -c 1024 /dev/zero | tr '\0' x > "$WORK/body"
mkdir -p "$WORK/nginx-backend" "$WORK/nginx-proxy"
cat > "$WORK/nginx-backend/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx-backend/pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  server { listen $BACKEND; location / { return 200 '$(cat "$WORK/body")'; } } }
CONF
cat > "$WORK/nginx-proxy/nginx.conf" <<CONF
worker_processes 1; daemon off; pid $WORK/nginx-proxy/pid; error_log /dev/null;
events { worker_connections 4096; }
http { access_log off; keepalive_requests 1000000;
  upstream be { server $BACKEND; keepalive 128; }
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
      circuit_breakers: {thresholds: [{max_connections: 4096, max_pending_requests: 4096, max_requests: 4096}]}
      load_assignment:
        cluster_name: backend
        endpoints: [{lb_endpoints: [{endpoint: {address: {socket_address: {address: 127.0.0.1, port_value: ${BACKEND##*:}}}}}]}]
CONF

taskset -c 0 "$NGINX" -c "$WORK/nginx-backend/nginx.conf" -p "$WORK/nginx-backend" & PIDS+=($!)
taskset -c 1 "$HAPROXY" -f "$WORK/haproxy.cfg" -db & PIDS+=($!)
taskset -c 1 "$NGINX" -c "$WORK/nginx-proxy/nginx.conf" -p "$WORK/nginx-proxy" & PIDS+=($!)
GOMAXPROCS=1 taskset -c 1 "$WORK/meshproof" proxy -c "$WORK/bootstrap.yaml" >/dev/null & MPPID=$!; PIDS+=($MPPID)
for addr in $BACKEND $HAP $NGX $MP; do
	for _ in $(seq 1 50); do curl -fsS -o /dev/null "http://$addr/" 2>/dev/null && break; sleep 0.1; done
done

declare -A NAME=([direct]=$BACKEND [haproxy]=$HAP [nginx]=$NGX [meshproof]=$MP)
ORDER=(direct haproxy nginx meshproof)
declare -A BEST
log "== closed loop: wrk -t1 -c64 -d$DURATION, $ROUNDS interleaved rounds (load on CPU 0, proxies on CPU 1)"
for r in $(seq 1 "$ROUNDS"); do
	for t in "${ORDER[@]}"; do
		rps=$(taskset -c 0 wrk -t1 -c64 -d"$DURATION" "http://${NAME[$t]}/" | awk '/Requests\/sec/ {print int($2)}')
		log "  round $r  $t  $rps req/s"
		[ "${BEST[$t]:-0}" -lt "$rps" ] && BEST[$t]=$rps
	done
done
lowest=$(printf '%s\n' "${BEST[haproxy]}" "${BEST[nginx]}" "${BEST[meshproof]}" | sort -n | head -1)
rate=$((lowest * 30 / 100))
log "== open loop at 30% of the lowest saturation ($lowest req/s): $rate req/s, meshproof load, 64 connections"
declare -A P50 P99 P999
for t in "${ORDER[@]}"; do
	j=$(taskset -c 0 "$WORK/meshproof" load "http://${NAME[$t]}/" --rate "$rate" --duration "$DURATION" --connections 64 --json)
	read -r p50 p99 p999 < <(printf '%s' "$j" | python3 -c 'import json,sys; l=json.load(sys.stdin)["latency_ms"]; print(l["p50"], l["p99"], l["p999"])')
	P50[$t]=$p50 P99[$t]=$p99 P999[$t]=$p999
	log "  $t  p50 ${p50}ms  p99 ${p99}ms  p99.9 ${p999}ms"
done
rss=$(awk '/VmHWM/ {print $2" "$3}' /proc/$MPPID/status)

echo "== results"
python3 - "${BEST[direct]}" "${BEST[haproxy]}" "${BEST[nginx]}" "${BEST[meshproof]}" \
	"${P50[direct]}" "${P99[direct]}" "${P999[direct]}" "${P50[haproxy]}" "${P99[haproxy]}" "${P999[haproxy]}" \
	"${P50[nginx]}" "${P99[nginx]}" "${P999[nginx]}" "${P50[meshproof]}" "${P99[meshproof]}" "${P999[meshproof]}" "$rss" <<'PY'
import sys
a = sys.argv[1:]
direct, hap, ngx, mp = map(float, a[0:4])
lat = {n: list(map(float, a[4 + 3*i: 7 + 3*i])) for i, n in enumerate(["direct", "haproxy", "nginx", "meshproof"])}
print(f"throughput (closed loop, req/s): direct {direct:.0f}, haproxy {hap:.0f}, nginx {ngx:.0f}, meshproof {mp:.0f}")
print(f"throughput ratio meshproof/haproxy  {mp/hap:.2f}  (target >= 0.8)")
print(f"throughput ratio meshproof/nginx    {mp/ngx:.2f}  (target >= 1.0)")
for n in ["haproxy", "nginx", "meshproof"]:
    added = [max(x - d, 0) for x, d in zip(lat[n], lat["direct"])]
    print(f"added latency {n:9s}  p50 {added[0]:.3f}ms  p99 {added[1]:.3f}ms  p99.9 {added[2]:.3f}ms")
ah = max(lat["haproxy"][1] - lat["direct"][1], 1e-9)
am = max(lat["meshproof"][1] - lat["direct"][1], 0)
print(f"added p99 ratio meshproof/haproxy  {am/ah:.2f}  (target <= 1.2)")
print(f"meshproof peak RSS {a[16]}")
PY
