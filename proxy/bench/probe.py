#!/usr/bin/env python3
"""probe.py — the measurements of `make bench-proxy` that need more than curl (stdlib only).

  probe.py start URL -- CMD...   start CMD, poll URL every millisecond until it answers 200; print
                                 "<pid> <ms from exec to the first 200>"
  probe.py cpu PID...            print the CPU time (ns) used so far by the processes and their children
                                 (/proc/<pid>/task/*/schedstat: nanoseconds, not 10 ms ticks)
  probe.py rss PID...            print the resident set (KiB) of the processes and their children
  probe.py idle ADDR N PID...    open N keep-alive connections to ADDR, one GET answered on each, hold
                                 them 2 s, print "<RSS KiB before> <RSS KiB with them open>", close
"""
import os
import socket
import subprocess
import sys
import time


def family(pids):
    out = []
    for p in pids:
        out.append(p)
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                out += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def cpu_ns(pids):
    total = 0
    for p in family(pids):
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/schedstat") as f:
                    total += int(f.read().split()[0])
        except OSError:
            pass
    return total


def rss_kib(pids):
    total = 0
    for p in family(pids):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
        except OSError:
            pass
    return total


def get(host, port, path, keep=False, timeout=2.0):
    """One GET; returns (status, socket or None). Reads the whole response (Content-Length framing)."""
    s = socket.create_connection((host, port), timeout=timeout)
    conn = "keep-alive" if keep else "close"
    s.sendall(f"GET {path} HTTP/1.1\r\nHost: bench\r\nConnection: {conn}\r\n\r\n".encode())
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the head")
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for l in lines[1:]:
        k, _, v = l.partition(b":")
        if k.strip().lower() == b"content-length":
            length = int(v.strip())
    while len(body) < length:
        chunk = s.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the body")
        body += chunk
    if keep:
        return status, s
    s.close()
    return status, None


def split_url(url):
    rest = url.split("://", 1)[1]
    hostport, _, path = rest.partition("/")
    host, _, port = hostport.rpartition(":")
    return host, int(port), "/" + path


def main():
    cmd = sys.argv[1]
    if cmd == "start":
        url, sep, argv = sys.argv[2], sys.argv[3], sys.argv[4:]
        assert sep == "--"
        host, port, path = split_url(url)
        t0 = time.monotonic_ns()
        p = subprocess.Popen(argv, stdout=subprocess.DEVNULL, start_new_session=True)
        while time.monotonic_ns() - t0 < 10e9:
            try:
                status, _ = get(host, port, path, timeout=0.5)
                if status == 200:
                    print(p.pid, f"{(time.monotonic_ns() - t0) / 1e6:.1f}")
                    return
            except OSError:
                pass
            if p.poll() is not None:
                sys.exit(f"{argv[0]} exited with {p.returncode} before {url} answered")
            time.sleep(0.001)
        p.kill()
        sys.exit(f"{url} did not answer 200 within 10 s")
    elif cmd == "cpu":
        print(cpu_ns([int(x) for x in sys.argv[2:]]))
    elif cmd == "rss":
        print(rss_kib([int(x) for x in sys.argv[2:]]))
    elif cmd == "idle":
        host, _, port = sys.argv[2].rpartition(":")
        n, pids = int(sys.argv[3]), [int(x) for x in sys.argv[4:]]
        before = rss_kib(pids)
        socks = []
        for _ in range(n):
            status, s = get(host, int(port), "/", keep=True)
            if status != 200:
                sys.exit(f"status {status} on an idle connection's request")
            socks.append(s)
        time.sleep(2)
        print(before, rss_kib(pids))
        for s in socks:
            s.close()
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main()
