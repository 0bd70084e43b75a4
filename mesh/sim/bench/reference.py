#!/usr/bin/python3
"""The reference of `make bench-sim`: the generated mesh (treemesh) run by a plain SimPy discrete-event
loop, to compare simulated upstream attempts per wall second with meshproof's simulator on the same
model.

It reads the same scenario file and models what the generator writes, and nothing else (anything else
is refused, naming the file, line and field):

- services in tiers; an instance serves a request after its service time (response.latency plus the
  latency fault rules that apply: lognormal {median, sigma} or fixed), then makes its calls (steps of
  parallel calls through its own sidecar), then answers: an abort rule's status (drawn per request,
  percent, no calls made), on_failure (503) when a required call failed, else response.status;
- one network hop (--hop, default 50 µs) each way between a client and the ingress, a proxy and an
  instance, an instance and its sidecar;
- the ingress proxy: one route, weighted_clusters (or routes_to), its timeout and retry_policy;
- every sidecar: one cluster per callee, round robin (Envoy's default lb_policy) from a random start,
  the mesh-wide route (timeout, retry_policy: retry_on 5xx/reset/connect-failure, num_retries,
  per_try_timeout, retry_back_off) and outlier_detection's consecutive_5xx (a host is ejected on its
  N-th consecutive 5xx or per-try timeout while 100·(ejected+1) ≤ max_ejection_percent·hosts, for
  base_ejection_time × its ejection count, back at the first interval sweep after that);
- Envoy's jittered back-off (source/common/common/backoff_strategy.cc,
  JitteredExponentialBackOffStrategy::nextBackOffMs): each delay uniform in whole ms in [0, cur), cur
  starting at base_interval and doubling up to max_interval, as proxy/policy/backoff.go;
- a request whose attempt timed out is abandoned, not cancelled: the instance finishes its work, as a
  meshproof service with calls does.

Not modelled: Envoy's retry circuit breaker (max_retries 3 by default: the generated rates never reach
it), connection pools, body transfer times, health checks. It prints one JSON object.
"""

import argparse
import json
import random
import re
import resource
import sys
import time

import simpy
import yaml

HOP = 50e-6


class Refused(Exception):
    pass


class Loader(yaml.SafeLoader):
    """A YAML loader whose mappings remember their line."""


class Mapping(dict):
    line = 0
    key_lines = {}


def _construct_mapping(loader, node):
    loader.flatten_mapping(node)
    m = Mapping(loader.construct_pairs(node))
    m.line = node.start_mark.line + 1
    m.key_lines = {loader.construct_object(k): k.start_mark.line + 1 for k, _ in node.value}
    return m


Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


class Spec:
    """Reads the scenario, refusing what the reference does not model."""

    def __init__(self, file):
        self.file = file

    def fail(self, node, path, msg, key=None):
        line = getattr(node, "key_lines", {}).get(key, getattr(node, "line", 0))
        raise Refused(f"{self.file}:{line}: {path}: {msg}")

    def keys(self, node, path, accepted):
        if not isinstance(node, dict):
            self.fail(node, path, f"expected a mapping with {', '.join(accepted)}")
        for k in node:
            if k not in accepted:
                self.fail(node, f"{path}.{k}", f"not modelled by the reference; accepted here: {', '.join(accepted)}", key=k)

    def duration(self, node, path, v):
        if isinstance(v, (int, float)) and v == 0:
            return 0.0
        units = {"h": 3600, "m": 60, "s": 1, "ms": 1e-3, "us": 1e-6, "µs": 1e-6, "ns": 1e-9}
        parts = re.findall(r"([0-9]*\.?[0-9]+)(h|ms|m|s|us|µs|ns)", str(v))
        if not parts or "".join(n + u for n, u in parts) != str(v):
            self.fail(node, path, f"{v!r} is not a duration such as 250ms, 0.025s or 1m30s")
        return sum(float(n) * units[u] for n, u in parts)

    def rate(self, node, path, v):
        if isinstance(v, (int, float)):
            return float(v)
        m = re.fullmatch(r"([0-9]*\.?[0-9]+)/(s|m)", str(v))
        if not m:
            self.fail(node, path, f"{v!r} is not a rate such as 100/s or 6000/m")
        return float(m.group(1)) / (60 if m.group(2) == "m" else 1)

    def policy(self, node, path):
        """A RouteAction's timeout and retry_policy."""
        self.keys(node, path, ["timeout", "retry_policy", "weighted_clusters", "cluster"])
        pol = {"timeout": 15.0, "retries": 0, "per_try": 0.0, "base": 0.025, "max": 0.25}
        if "timeout" in node:
            pol["timeout"] = self.duration(node, path + ".timeout", node["timeout"])
        rp = node.get("retry_policy")
        if rp is not None:
            p = path + ".retry_policy"
            self.keys(rp, p, ["retry_on", "num_retries", "per_try_timeout", "retry_back_off"])
            on = set(str(rp.get("retry_on", "")).split(","))
            if not on <= {"5xx", "reset", "connect-failure"}:
                self.fail(rp, p + ".retry_on", f"{rp.get('retry_on')!r}: the reference models 5xx, reset and connect-failure")
            if "5xx" not in on:
                self.fail(rp, p + ".retry_on", "want 5xx among the conditions (the reference retries 5xx and per-try timeouts)")
            pol["retries"] = int(rp.get("num_retries", 1))
            if "per_try_timeout" in rp:
                pol["per_try"] = self.duration(rp, p + ".per_try_timeout", rp["per_try_timeout"])
            bo = rp.get("retry_back_off")
            if bo is not None:
                self.keys(bo, p + ".retry_back_off", ["base_interval", "max_interval"])
                pol["base"] = self.duration(bo, p + ".retry_back_off.base_interval", bo["base_interval"])
                pol["max"] = self.duration(bo, p + ".retry_back_off.max_interval", bo.get("max_interval", 10 * bo["base_interval"]))
        return pol

    def outlier(self, node, path):
        self.keys(node, path, ["connect_timeout", "outlier_detection"])
        od = node.get("outlier_detection")
        if od is None:
            return None
        p = path + ".outlier_detection"
        self.keys(od, p, ["consecutive_5xx", "interval", "base_ejection_time", "max_ejection_percent"])
        return {
            "consecutive": int(od.get("consecutive_5xx", 5)),
            "interval": self.duration(od, p + ".interval", od.get("interval", "10s")),
            "base": self.duration(od, p + ".base_ejection_time", od.get("base_ejection_time", "30s")),
            "max_pct": int(od.get("max_ejection_percent", 10)),
        }


class Cluster:
    """One proxy's cluster of a service: round robin and consecutive-5xx outlier detection."""

    def __init__(self, env, rng, hosts, od):
        self.env, self.rng, self.hosts, self.od = env, rng, hosts, od
        self.rr = rng.randrange(len(hosts))
        self.cons = [0] * len(hosts)
        self.until = [0.0] * len(hosts)  # ejected until (an interval sweep), 0: not ejected
        self.times = [0] * len(hosts)
        self.ejections = 0

    def pick(self):
        now = self.env.now
        n = len(self.hosts)
        for _ in range(n):
            i = self.rr % n
            self.rr += 1
            if self.until[i] <= now:
                return i
        i = self.rr % n  # every host ejected: Envoy's panic mode uses them all
        self.rr += 1
        return i

    def record(self, i, failed):
        if self.od is None:
            return
        if not failed:
            self.cons[i] = 0
            return
        self.cons[i] += 1
        if self.cons[i] < self.od["consecutive"] or self.until[i] > self.env.now:
            return
        self.cons[i] = 0
        now = self.env.now
        ejected = sum(1 for u in self.until if u > now)
        if 100 * (ejected + 1) > self.od["max_pct"] * len(self.hosts):
            return
        self.times[i] += 1
        back = now + min(self.od["base"] * self.times[i], max(300.0, self.od["base"]))
        iv = self.od["interval"]
        self.until[i] = -(-back // iv) * iv  # the first sweep at or after the ejection's end
        self.ejections += 1


class Instance:
    def __init__(self, service, index):
        self.service, self.index = service, index
        self.requests = 0
        self.rules = []  # (start, end, kind, value) in file order
        self.sidecar = {}  # callee -> Cluster


class Mesh:
    def __init__(self, file, seconds, seed, hop):
        with open(file, encoding="utf-8") as f:
            doc = yaml.load(f, Loader=Loader)
        s = Spec(file)
        s.keys(doc, "$", ["name", "description", "seed", "services", "proxies", "sidecars", "load", "faults"])
        self.name = doc.get("name", "")
        self.env = simpy.Environment()
        self.rng = random.Random(doc.get("seed", 0) if seed is None else seed)
        self.hop = hop
        self.services, self.instances = {}, []
        for name, sv in doc["services"].items():
            p = f"services.{name}"
            s.keys(sv, p, ["instances", "response", "calls", "on_failure"])
            resp = sv.get("response") or {}
            s.keys(resp, p + ".response", ["status", "size", "latency"])
            steps = []
            for k, step in enumerate(sv.get("calls") or []):
                calls = step["parallel"] if isinstance(step, dict) and "parallel" in step else [step]
                parsed = []
                for c in calls:
                    if isinstance(c, str):
                        c = {"service": c}
                    s.keys(c, f"{p}.calls[{k}]", ["service", "path", "method", "optional"])
                    parsed.append((c["service"], bool(c.get("optional", False))))
                steps.append(parsed)
            insts = [Instance(name, i) for i in range(int(sv.get("instances", 1)))]
            self.instances += insts
            self.services[name] = {
                "instances": insts,
                "latency": s.duration(resp, p + ".response.latency", resp.get("latency", 0)),
                "status": int(resp.get("status", 200)),
                "steps": steps,
                "on_failure": int(sv.get("on_failure", 503)),
            }
        load = doc["load"]
        s.keys(load, "load", ["target", "rate", "duration", "timeout"])
        self.rate = s.rate(load, "load.rate", load["rate"])
        self.duration = s.duration(load, "load.duration", load["duration"])
        if seconds:
            self.duration = min(self.duration, seconds)
        if len(doc["proxies"]) != 1 or load["target"] not in doc["proxies"]:
            s.fail(doc["proxies"], "proxies", "the reference models one ingress proxy, the load's target")
        px = doc["proxies"][load["target"]]
        pp = f"proxies.{load['target']}"
        s.keys(px, pp, ["routes_to", "routes", "route", "cluster"])
        if "routes" in px:
            if len(px["routes"]) != 1:
                s.fail(px, pp + ".routes", "the reference models one route")
            r = px["routes"][0]
            s.keys(r, pp + ".routes[0]", ["match", "route"])
            route = r["route"]
            self.ingress = s.policy(route, pp + ".routes[0].route")
            wc = route.get("weighted_clusters")
            if wc is None:
                entries = [(route["cluster"], 1)]
            else:
                entries = [(c["name"], int(c.get("weight", 1))) for c in wc["clusters"]]
        else:
            self.ingress = s.policy(px.get("route") or Mapping(), pp + ".route")
            entries = [(px["routes_to"], 1)]
        ingress_od = s.outlier(px.get("cluster") or Mapping(), pp + ".cluster")
        self.entries = [self.cluster(n, ingress_od) for n, _ in entries]
        self.weights = [w for _, w in entries]

        sc = doc.get("sidecars") or Mapping()
        s.keys(sc, "sidecars", ["route", "cluster"])
        self.sidecar = s.policy(sc.get("route") or Mapping(), "sidecars.route")
        od = s.outlier(sc.get("cluster") or Mapping(), "sidecars.cluster")
        for name, sv in self.services.items():
            for inst in sv["instances"]:
                for step in sv["steps"]:
                    for callee, _ in step:
                        inst.sidecar[callee] = self.cluster(callee, od)

        for k, f in enumerate(doc.get("faults") or []):
            p = f"faults[{k}]"
            s.keys(f, p, ["service", "instances", "at", "for", "latency", "abort"])
            start = s.duration(f, p + ".at", f.get("at", 0))
            span = s.duration(f, p + ".for", f.get("for", 0))
            end = start + span if span else float("inf")
            kinds = []
            if "latency" in f:
                lat = f["latency"]
                s.keys(lat, p + ".latency", ["lognormal", "fixed"])
                if "fixed" in lat:
                    kinds.append(("fixed", s.duration(lat, p + ".latency.fixed", lat["fixed"])))
                else:
                    ln = lat["lognormal"]
                    s.keys(ln, p + ".latency.lognormal", ["median", "sigma"])
                    kinds.append(("lognormal", (s.duration(ln, p + ".latency.lognormal.median", ln["median"]), float(ln["sigma"]))))
            if "abort" in f:
                ab = f["abort"]
                s.keys(ab, p + ".abort", ["status", "percent"])
                kinds.append(("abort", (int(ab["status"]), float(ab.get("percent", 100)) / 100)))
            insts = self.services[f["service"]]["instances"]
            chosen = [insts[i] for i in f["instances"]] if "instances" in f else insts
            for inst in chosen:
                for kind, v in kinds:
                    inst.rules.append((start, end, kind, v))

    def cluster(self, service, od):
        return Cluster(self.env, self.rng, self.services[service]["instances"], od)

    # --- processes -------------------------------------------------------------------------------

    def load(self, results):
        env, n = self.env, 0
        while n / self.rate < self.duration:
            at = n / self.rate
            if at > env.now:
                yield env.timeout(at - env.now)
            env.process(self.client(results))
            n += 1

    def client(self, results):
        yield self.env.timeout(self.hop)
        cl = self.rng.choices(self.entries, self.weights)[0] if len(self.entries) > 1 else self.entries[0]
        status = yield from self.route(cl, self.ingress)
        yield self.env.timeout(self.hop)
        results.append((status, self.env.now))

    def route(self, cl, pol):
        """A proxy's answer for one request: its attempts raced against the route timeout."""
        done, gone = self.env.event(), [False]
        self.env.process(self.attempts(cl, pol, done, gone))
        yield done | self.env.timeout(pol["timeout"])
        if done.triggered:
            return done.value
        gone[0] = True  # the route timed out: no further attempt (the one in flight is abandoned)
        return 504

    def attempts(self, cl, pol, done, gone):
        env, cur, status = self.env, pol["base"], 503
        for n in range(pol["retries"] + 1):
            i = cl.pick()
            att = env.process(self.serve(cl.hosts[i]))
            if pol["per_try"]:
                yield att | env.timeout(pol["per_try"])
                status = att.value if att.triggered else 504
            else:
                status = yield att
            cl.record(i, status >= 500)
            if status < 500 or n == pol["retries"] or gone[0]:
                break
            ms = int(cur * 1000)
            cur = pol["max"] if cur > pol["max"] / 2 else cur * 2
            if ms > 0:
                yield env.timeout(min(self.rng.randrange(ms) / 1000, pol["max"]))
        if not done.triggered:
            done.succeed(status)

    def serve(self, inst):
        env = self.env
        yield env.timeout(self.hop)
        inst.requests += 1
        sv = self.services[inst.service]
        delay, abort, now = sv["latency"], 0, env.now
        for start, end, kind, v in inst.rules:
            if not start <= now < end:
                continue
            if kind == "lognormal":
                delay += self.rng.lognormvariate(0, v[1]) * v[0]
            elif kind == "fixed":
                delay += v
            elif not abort and self.rng.random() < v[1]:
                abort = v[0]
        if delay > 0:
            yield env.timeout(delay)
        status = abort or sv["status"]
        if not abort:
            for step in sv["steps"]:
                calls = [(env.process(self.call(inst, callee)), optional) for callee, optional in step]
                yield env.all_of([c for c, _ in calls])
                if any(c.value >= 400 and not optional for c, optional in calls):
                    status = sv["on_failure"]
                    break
        yield env.timeout(self.hop)
        return status

    def call(self, inst, callee):
        yield self.env.timeout(self.hop)
        status = yield from self.route(inst.sidecar[callee], self.sidecar)
        yield self.env.timeout(self.hop)
        return status


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("scenario")
    ap.add_argument("--seconds", type=float, default=0, help="simulate only the load's first SECONDS (default: all of it)")
    ap.add_argument("--hop", type=float, default=HOP * 1e6, help="one-way network delay per hop, in µs (default 50)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: the scenario's)")
    a = ap.parse_args()
    try:
        t0 = time.perf_counter()
        mesh = Mesh(a.scenario, a.seconds, a.seed, a.hop * 1e-6)
        t1 = time.perf_counter()
        results = []
        mesh.env.process(mesh.load(results))
        mesh.env.run()
        t2 = time.perf_counter()
    except Refused as e:
        print(f"reference.py: {e}", file=sys.stderr)
        return 2
    except (KeyError, TypeError, ValueError, yaml.YAMLError) as e:
        print(f"reference.py: {a.scenario}: cannot read the scenario: {e!r}", file=sys.stderr)
        return 2
    attempts = sum(i.requests for i in mesh.instances)
    wall = t2 - t1
    ok = sum(1 for s, _ in results if s < 400)
    simulated = max([mesh.duration] + [end for _, end in results])
    out = {
        "runner": "simpy",
        "simpy": simpy.__version__,
        "scenario": mesh.name,
        "file": a.scenario,
        "client_requests": len(results),
        "successes": ok,
        "success_rate": ok / len(results) if results else 0,
        "upstream_attempts": attempts,
        "attempts_per_client_request": attempts / len(results) if results else 0,
        "simulated_seconds": simulated,
        "load_seconds": t1 - t0,
        "wall_seconds": wall,
        "total_seconds": t2 - t0,
        "attempts_per_wall_second": attempts / wall if wall > 0 else 0,
        "speedup": simulated / wall if wall > 0 else 0,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "ejections": sum(c.ejections for i in mesh.instances for c in i.sidecar.values()),
    }
    json.dump(out, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
