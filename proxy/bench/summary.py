#!/usr/bin/env python3
"""summary.py RESULTS.tsv — the report of `make bench-proxy` (see run.sh): every figure as the median and
the spread [min–max] of the rounds, and meshproof's ratio to each peer, taken round by round (the rounds
are interleaved, so round r of each proxy ran side by side) and summarised the same way."""
import collections
import statistics
import sys

PEERS = ["haproxy", "nginx", "meshproof"]
ROWS = {
    "tls-keepalive": "TLS 1.3 termination, wrk -t1 -c64 over https, keep-alive",
    "tls-handshake": "TLS 1.3 termination, wrk -t1 -c64 over https, Connection: close (a handshake per request)",
    "h2c": "HTTP/2 with prior knowledge, h2load -t1 -c64 -m10",
    "h2-tls": "HTTP/2 over TLS 1.3 (ALPN h2), h2load -t1 -c64 -m10",
}


def stat(xs, fmt):
    if not xs:
        return "n/a"
    return f"{fmt(statistics.median(xs))} [{fmt(min(xs))}–{fmt(max(xs))}]"


def ratios(per):
    out = []
    for peer in ["haproxy", "nginx"]:
        rs = [m / p for m, p in zip(per.get("meshproof", []), per.get(peer, [])) if p > 0]
        if rs:
            out.append(f"meshproof/{peer} {stat(rs, lambda v: f'{v:.2f}')}")
    return "   ".join(out)


def table(title, per, fmt):
    print(title)
    for t in PEERS:
        if per.get(t):
            print(f"  {t:9s}  {stat(per[t], fmt)}")
    if per.get("meshproof"):
        print("  " + ratios(per))


def main(path):
    rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip()]
    start = collections.defaultdict(lambda: collections.defaultdict(list))
    cpu = collections.defaultdict(lambda: collections.defaultdict(list))
    rps = collections.defaultdict(list)
    lat = collections.defaultdict(list)
    alloc = [0, 0, 0]
    rss_kb = None
    # the tls and h2 phases' rows: name -> target -> [(req/s, errors, CPU ns, requests answered)]
    named = collections.defaultdict(lambda: collections.defaultdict(list))
    named_alloc = collections.defaultdict(lambda: [0, 0, 0])
    skipped = {}
    named_sys = collections.defaultdict(dict)  # name -> target -> system calls per request (last round)
    for r in rows:
        if r[0] == "start":
            t = r[1]
            start["ready"][t].append(float(r[3]))
            start["idle"][t].append(int(r[4]) / 1024)
            start["after"][t].append(int(r[5]) / 1024)
            start["conns"][t].append(int(r[6]) / 1024)
        elif r[0] == "cpu":
            cpu[int(r[3])][r[1]].append(int(r[4]) / 1000 / max(int(r[5]), 1))
        elif r[0] == "rps":
            rps[r[1]].append(float(r[3]))
        elif r[0] == "lat":
            lat[r[1]].append([float(x) for x in r[3:6]])
        elif r[0] == "alloc":
            alloc = [a + int(x) for a, x in zip(alloc, r[3:6])]
        elif r[0] == "rss":
            rss_kb = int(r[3])
        elif r[0] == "row":
            named[r[1]][r[2]].append((float(r[4]), int(r[5]), int(r[6]), int(r[7])))
        elif r[0] == "rowalloc":
            named_alloc[r[1]] = [a + int(x) for a, x in zip(named_alloc[r[1]], r[4:7])]
        elif r[0] == "rowsys" and len(r) > 4 and r[4]:
            named_sys[r[1]][r[2]] = float(r[4])
        elif r[0] == "skip":
            skipped[r[1]] = r[3]
    mib = lambda v: f"{v:.1f} MiB"
    if start:
        table("start to ready (ms; meshproof: admin /ready answers 200, peers: the first proxied 200)",
              start["ready"], lambda v: f"{v:.0f}")
        table("idle RSS 1 s after start", start["idle"], mib)
        table("RSS after 10,000 requests", start["after"], mib)
        table("RSS added by 1,000 idle keep-alive connections", start["conns"], mib)
    for rate in sorted(cpu):
        table(f"CPU per request at {rate} req/s (µs)", cpu[rate], lambda v: f"{v:.1f}")
    if rps:
        print("throughput, closed loop wrk -t1 -c64 (req/s); direct to the backend " +
              stat(rps.get("direct", []), lambda v: f"{v:.0f}"))
        table("", {t: rps[t] for t in PEERS if t in rps}, lambda v: f"{v:.0f}")
    if lat and "direct" in lat:
        med = lambda t, i: statistics.median(x[i] for x in lat[t])
        print("added latency over direct, open loop (ms, differences of the rounds' medians):")
        for t in PEERS:
            if t in lat:
                print(f"  {t:9s}  p50 {med(t, 0) - med('direct', 0):7.3f}  p99 {med(t, 1) - med('direct', 1):7.3f}"
                      f"  p99.9 {med(t, 2) - med('direct', 2):7.3f}")
    objs, byts, n = alloc
    if n:
        print(f"meshproof allocations per request {objs / n:.1f}, heap bytes per request {byts / n:.0f} (over {n} requests)")
    for name in ROWS:
        if name not in named:
            continue
        per = named[name]
        table(f"{name}: {ROWS[name]} (req/s)", {t: [x[0] for x in per[t]] for t in per}, lambda v: f"{v:.0f}")
        table(f"{name}: CPU of the proxy per request answered (µs)",
              {t: [x[2] / 1000 / max(x[3], 1) for x in per[t]] for t in per}, lambda v: f"{v:.1f}")
        errs = {t: sum(x[1] for x in per[t]) for t in per if any(x[1] for x in per[t])}
        if errs:
            print("  errors (all rounds): " + ", ".join(f"{t} {n}" for t, n in errs.items()))
        if named_sys[name]:
            print("  system calls per request (last round, perf): " +
                  ", ".join(f"{t} {v:.1f}" for t, v in named_sys[name].items()))
        objs, byts, n = named_alloc[name]
        if n:
            print(f"  meshproof allocations per request {objs / n:.1f}, heap bytes per request {byts / n:.0f}")
        if name in skipped:
            print(f"  meshproof skipped: {skipped[name]}")
    for name in skipped:
        if name not in named:
            print(f"{name}: meshproof skipped: {skipped[name]}")
    if rss_kb:
        print(f"meshproof peak RSS (VmHWM) over the long-lived phases {rss_kb / 1024:.1f} MiB")


if __name__ == "__main__":
    main(sys.argv[1])
