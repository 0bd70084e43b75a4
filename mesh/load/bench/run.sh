#!/usr/bin/env bash
# mesh/load/bench/run.sh — `make bench-load`: meshproof's load generator against its peers, side by side in
# one run, on loopback only (see mesh/load/bench/loadbench for what is measured and how).
#
# Installs what it needs when absent: nginx and wrk (apt-get), vegeta and fortio (go install, pinned;
# fortio is not in Debian, and releases after v1.63 need a module the module proxy refuses: when the
# install fails anyway the fortio ratio is reported as skipped). nginx runs with one worker pinned to one core, every load generator
# to the other. The whole bench takes about 3–5 minutes (bounded by its trials: < 10 minutes).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/meshproof-bench.XXXXXX")
PORT=${BENCH_PORT:-18080}
GOBIN=${GOBIN:-$(go env GOPATH)/bin}

log() { printf 'bench-load: %s\n' "$*" >&2; }

# Tools.
if ! command -v nginx >/dev/null || ! command -v wrk >/dev/null; then
	log "installing nginx and wrk"
	if [ "$(id -u)" = 0 ]; then apt-get install -y nginx wrk >/dev/null || { apt-get update >/dev/null && apt-get install -y nginx wrk >/dev/null; }
	else sudo apt-get install -y nginx wrk >/dev/null; fi
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)
WRK=$(command -v wrk || true)
VEGETA=$(command -v vegeta || echo "$GOBIN/vegeta")
if [ ! -x "$VEGETA" ]; then
	log "installing vegeta v12.13.0"
	(cd "$WORK" && GOFLAGS= go install github.com/tsenart/vegeta/v12@v12.13.0) || true
fi
[ -x "$VEGETA" ] || VEGETA=""
FORTIO=$(command -v fortio || echo "$GOBIN/fortio")
if [ ! -x "$FORTIO" ]; then
	log "installing: go install fortio.org/fortio@v1.63.3 (pinned: later releases need modules the module proxy refuses)"
	if ! (cd "$WORK" && GOFLAGS= go install fortio.org/fortio@v1.63.3) >"$WORK/fortio-install.log" 2>&1; then
		log "fortio unavailable: $(grep -m1 -o '[0-9]\{3\} [A-Za-z]*' "$WORK/fortio-install.log" || tail -1 "$WORK/fortio-install.log")"
	fi
fi
[ -x "$FORTIO" ] || FORTIO=""

# Our binaries.
log "building meshproof, loadbench and stallserver"
(cd "$ROOT" && go build -o "$WORK/meshproof" ./cmd/meshproof && go build -o "$WORK/loadbench" ./mesh/load/bench/loadbench &&
	go build -o "$WORK/stallserver" ./mesh/load/bench/stallserver)

# Cores: generators on one, the target on another.
CPUS=$(nproc)
if [ "$CPUS" -ge 2 ]; then GEN_CPU=0; TARGET_CPU=1; else GEN_CPU=""; TARGET_CPU=""; log "one CPU: no pinning"; fi

# nginx on loopback.
sed "s|__DIR__|$WORK|g; s|__PORT__|$PORT|g" "$ROOT/mesh/load/bench/nginx.conf" >"$WORK/nginx.conf"
# taskset execs nginx (daemon off): $! is the nginx master itself.
if [ -n "$TARGET_CPU" ]; then
	taskset -c "$TARGET_CPU" "$NGINX" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
else
	"$NGINX" -c "$WORK/nginx.conf" -e "$WORK/error.log" &
fi
NGINX_PID=$!
cleanup() {
	kill "$NGINX_PID" 2>/dev/null || true
	wait "$NGINX_PID" 2>/dev/null || true
	rm -rf "$WORK"
}
trap cleanup EXIT
for _ in $(seq 50); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then break; fi
	sleep 0.1
done

log "tools: nginx $($NGINX -v 2>&1 | sed "s/.*\///"), wrk ${WRK:-absent}, vegeta ${VEGETA:-absent}, fortio ${FORTIO:-absent}; $CPUS CPUs"
"$WORK/loadbench" -meshproof "$WORK/meshproof" -vegeta "$VEGETA" -fortio "$FORTIO" -wrk "$WRK" \
	-stallserver "$WORK/stallserver" -target "http://127.0.0.1:$PORT/" -gen-cpu "$GEN_CPU" -target-cpu "$TARGET_CPU" "$@"
