#!/usr/bin/python3
"""Prints the table of `make bench-sim` from the JSON files run.sh wrote: table.py OUT ROUNDS."""

import json
import statistics
import sys


def load(out, name, rounds):
    return [json.load(open(f"{out}/{name}-{r}.json", encoding="utf-8")) for r in range(1, rounds + 1)]


def spread(values, fmt):
    return f"{fmt(statistics.median(values))} ({fmt(min(values))}–{fmt(max(values))})"


def rate(v):
    return f"{v / 1e6:.2f}M/s" if v >= 1e5 else f"{v / 1e3:.1f}k/s"


def main():
    out, rounds = sys.argv[1], int(sys.argv[2])
    summary = json.load(open(f"{out}/realistic.summary.json", encoding="utf-8"))
    onem_summary = json.load(open(f"{out}/onem.summary.json", encoding="utf-8"))
    sim, onem, ref = load(out, "sim-realistic", rounds), load(out, "sim-onem", rounds), load(out, "simpy", rounds)
    a = lambda rs, k: [r[k] for r in rs]  # noqa: E731

    print(f"\nmesh: {summary['services']} services × {summary['instances'] // summary['services']} instances "
          f"({summary['sidecars']} sidecars, {summary['edges']} edges), fan-out {summary['fanout']}, depth {summary['depth']}: "
          f"{summary['attempts_per_request']} upstream attempts per client request before retries")
    print(f"runner: {sim[0]['runner']}, GOMAXPROCS {sim[0]['gomaxprocs']}, {rounds} rounds; median (min–max)\n")
    w = 26
    print(f"{'':{w}} {'sim (' + sim[0]['runner'] + ')':>34} {'SimPy ' + ref[0]['simpy']:>34}")
    print(f"{'simulated seconds':{w}} {spread(a(sim, 'simulated_seconds'), lambda v: f'{v:.1f}'):>34} {spread(a(ref, 'simulated_seconds'), lambda v: f'{v:.1f}'):>34}")
    print(f"{'client requests':{w}} {spread(a(sim, 'client_requests'), lambda v: f'{v:.0f}'):>34} {spread(a(ref, 'client_requests'), lambda v: f'{v:.0f}'):>34}")
    print(f"{'upstream attempts':{w}} {spread(a(sim, 'upstream_attempts'), lambda v: f'{v:.0f}'):>34} {spread(a(ref, 'upstream_attempts'), lambda v: f'{v:.0f}'):>34}")
    print(f"{'attempts / client request':{w}} {spread(a(sim, 'attempts_per_client_request'), lambda v: f'{v:.2f}'):>34} {spread(a(ref, 'attempts_per_client_request'), lambda v: f'{v:.2f}'):>34}")
    print(f"{'success rate':{w}} {spread(a(sim, 'success_rate'), lambda v: f'{100 * v:.2f}%'):>34} {spread(a(ref, 'success_rate'), lambda v: f'{100 * v:.2f}%'):>34}")
    print(f"{'wall seconds (run)':{w}} {spread(a(sim, 'wall_seconds'), lambda v: f'{v:.2f}'):>34} {spread(a(ref, 'wall_seconds'), lambda v: f'{v:.2f}'):>34}")
    print(f"{'attempts / wall second':{w}} {spread(a(sim, 'attempts_per_wall_second'), rate):>34} {spread(a(ref, 'attempts_per_wall_second'), rate):>34}")
    print(f"{'speed-up over real time':{w}} {spread(a(sim, 'speedup'), lambda v: f'{v:.1f}×'):>34} {spread(a(ref, 'speedup'), lambda v: f'{v:.2f}×'):>34}")
    print(f"{'peak RSS':{w}} {spread(a(sim, 'peak_rss_mib'), lambda v: f'{v:.0f} MiB'):>34} {spread(a(ref, 'peak_rss_mib'), lambda v: f'{v:.0f} MiB'):>34}")
    if all("events" in r for r in sim):
        print(f"{'events / wall second':{w}} {spread([r['events'] / r['wall_seconds'] for r in sim], rate):>34}")

    ratios = [s["attempts_per_wall_second"] / p["attempts_per_wall_second"] for s, p in zip(sim, ref)]
    print(f"\nsim ÷ SimPy, attempts per wall second (paired by round): {spread(ratios, lambda v: f'{v:.3g}×')}")

    print(f"\n1M run: a load of {onem_summary['client_requests']} client requests, {onem_summary['planned_attempts']} planned upstream attempts "
          f"({onem_summary['duration_seconds']:.2f} simulated seconds)")
    print(f"  upstream attempts  {spread(a(onem, 'upstream_attempts'), lambda v: f'{v:.0f}')}")
    print(f"  wall seconds: run  {spread(a(onem, 'wall_seconds'), lambda v: f'{v:.2f}')}")
    print(f"  wall seconds: read + plan + run  {spread(a(onem, 'total_seconds'), lambda v: f'{v:.2f}')}")
    print(f"  attempts / wall second  {spread(a(onem, 'attempts_per_wall_second'), rate)}")
    print(f"  peak RSS  {spread(a(onem, 'peak_rss_mib'), lambda v: f'{v:.0f} MiB')}")

    best = statistics.median(a(sim, "attempts_per_wall_second"))
    onem_total = statistics.median(a(onem, "total_seconds"))
    print("\ntargets (#20): ≥ 1,000,000 simulated upstream attempts per wall second on one core: "
          f"{'met' if best >= 1e6 else 'NOT met'} ({rate(best)} median); "
          f"the 1M run under 10 s: {'met' if onem_total < 10 else 'NOT met'} ({onem_total:.2f} s median, read + plan + run)")


if __name__ == "__main__":
    main()
