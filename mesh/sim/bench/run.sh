#!/usr/bin/env bash
# make bench-sim: how fast the simulator runs the 1,000-service mesh, on one core, next to a SimPy
# reference running the same model. See mesh/sim/bench/README.md for the model and how to read the table.
#
# Each round runs, one after the other, pinned to CPU 0 (taskset -c 0) with GOMAXPROCS=1:
#   1. simbench on the realistic run: RATE client requests/s for DURATION of simulated time;
#   2. simbench on the 1M run: a load of ONEM requests (ONEM_UNIT=attempts: upstream attempts, the
#      default; client: client requests);
#   3. reference.py (SimPy) on the realistic scenario's first REF_SECONDS simulated seconds.
# Every command is bounded by a timeout; the script stops by itself, and exits non-zero when a run fails,
# times out, or simbench refuses its arguments (exit 2).
set -euo pipefail

ROUNDS=${ROUNDS:-3}
RUNNER=${RUNNER:-sim}
SERVICES=${SERVICES:-1000}
INSTANCES=${INSTANCES:-10}
FANOUT=${FANOUT:-3}
DEPTH=${DEPTH:-5}
RATE=${RATE:-100}
DURATION=${DURATION:-10m}
SEED=${SEED:-1}
ONEM=${ONEM:-1000000}
ONEM_UNIT=${ONEM_UNIT:-attempts}
REF_SECONDS=${REF_SECONDS:-10}
REF_HOP=${REF_HOP:-50} # µs, one way per hop: keep it the sim runner's network delay
SIM_TIMEOUT=${SIM_TIMEOUT:-600}
REF_TIMEOUT=${REF_TIMEOUT:-600}
PY=/usr/bin/python3 # Debian's: python3-simpy3 and python3-yaml are installed for it, not for a pyenv python
OUT=${OUT:-runs/bench-sim-$(date -u +%Y%m%d-%H%M%S)}

cd "$(dirname "$0")/../../.."
mkdir -p "$OUT/bin"
echo "bench-sim: results in $OUT"

case "$ONEM_UNIT" in
attempts) onem_flag=-upstream-requests ;;
client) onem_flag=-requests ;;
*) echo "bench-sim: ONEM_UNIT=$ONEM_UNIT: want attempts or client" >&2; exit 2 ;;
esac

if ! "$PY" -c 'import simpy, yaml; assert int(simpy.__version__.split(".")[0]) >= 3' 2>/dev/null; then
	echo "bench-sim: installing python3-simpy3 and python3-yaml for $PY (Debian packages)"
	apt-get update >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends python3-simpy3 python3-yaml >/dev/null
fi

pin=()
if command -v taskset >/dev/null; then
	pin=(taskset -c 0)
else
	echo "bench-sim: taskset not found: the runs are not pinned to one CPU (GOMAXPROCS=1 still holds)" >&2
fi

go build -o "$OUT/bin/meshgen" ./mesh/sim/bench/meshgen
go build -o "$OUT/bin/simbench" ./mesh/sim/bench/simbench

gen=(-services "$SERVICES" -instances "$INSTANCES" -fanout "$FANOUT" -depth "$DEPTH" -rate "$RATE" -seed "$SEED")
"$OUT/bin/meshgen" "${gen[@]}" -duration "$DURATION" -o "$OUT/realistic.yaml" -summary "$OUT/realistic.summary.json"
"$OUT/bin/meshgen" "${gen[@]}" "$onem_flag" "$ONEM" -o "$OUT/onem.yaml" -summary "$OUT/onem.summary.json"

# run NAME TIMEOUT CMD...: runs CMD pinned, its JSON into $OUT/NAME.json, its errors into $OUT/NAME.err.
run() {
	local name=$1 secs=$2 rc=0
	shift 2
	echo "bench-sim: $name"
	GOMAXPROCS=1 timeout --kill-after=10 "$secs" "${pin[@]}" "$@" >"$OUT/$name.json" 2>"$OUT/$name.err" || rc=$?
	case $rc in
	0) ;;
	124 | 137) echo "bench-sim: $name did not finish within ${secs}s" >&2; exit 1 ;;
	*) cat "$OUT/$name.err" >&2; echo "bench-sim: $name failed (exit $rc)" >&2; exit "$rc" ;;
	esac
}

for r in $(seq 1 "$ROUNDS"); do
	run "sim-realistic-$r" "$SIM_TIMEOUT" "$OUT/bin/simbench" -runner "$RUNNER" "$OUT/realistic.yaml"
	run "sim-onem-$r" "$SIM_TIMEOUT" "$OUT/bin/simbench" -runner "$RUNNER" "$OUT/onem.yaml"
	run "simpy-$r" "$REF_TIMEOUT" "$PY" mesh/sim/bench/reference.py --seconds "$REF_SECONDS" --hop "$REF_HOP" "$OUT/realistic.yaml"
done

"$PY" mesh/sim/bench/table.py "$OUT" "$ROUNDS" | tee "$OUT/table.txt"
