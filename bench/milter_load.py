"""Milter-protocol load driver: no MTA, N messages over C connections to a milter.

Starts fixture DNS and the milter under test (postwarden by default, with the same
settings as bench/run.py), then C worker processes each open one milter session per
message (like Postfix with one message per SMTP session: connect, macros, envelope,
headers, body, end-of-message) through the test harness's MilterClient. Prints
msgs/s, per-message latency p50/p99 (first byte sent -> end-of-message reply) and
the milter's RSS after warm-up and at the end.

    .venv/bin/python bench/milter_load.py -n 20000 -c 10             # as fast as it goes
    .venv/bin/python bench/milter_load.py -n 12000 -c 4 --rate 200   # paced: latency
    .venv/bin/python bench/milter_load.py -n 100000 -c 10            # RSS over 100k
    .venv/bin/python bench/milter_load.py -n 100000 -c 10 --new-from-domain
                              # a From domain never seen before on every message: the
                              # per-domain state (warning flood limits, DNS cache) must
                              # stay bounded and O(1); compare with the run above
"""

from __future__ import annotations

import argparse
import multiprocessing
import random
import shutil
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import serve_zones, workdir  # noqa: E402
from fixtures import RCPT, SENDER, message, postwarden_settings, selfcheck_always  # noqa: E402
from peers import DOMAIN, CollectPeer, NoopPeer, Peer, PostwardenPeer  # noqa: E402
from procstat import cpu_seconds, rss_kib  # noqa: E402

from harness.knot import DnsServer  # noqa: E402
from harness.milter_client import MilterClient  # noqa: E402

TARGETS = ("postwarden", "postwarden-unpinned", "postwarden-sign", "postwarden-selfcheck",
           "noop", "noop-collect")


def split_message(data: bytes) -> tuple[list[tuple[str, str]], bytes]:
    """Headers as Postfix sends them with leading space (name, " value"), and the body."""
    head, _, body = data.partition(b"\r\n\r\n")
    headers = []
    for line in head.decode().split("\r\n"):
        name, _, value = line.partition(":")
        headers.append((name, value))
    return headers, body


def arrival_times(count: int, rate: float, phase: float, poisson: bool, seed: int) -> list[float]:
    """Offsets (s) at which one worker starts its messages.

    Even pacing is shifted by `phase` of one interval so C workers interleave instead
    of firing together (C messages at once every C/rate seconds is a burst, not
    `rate`/s). Poisson arrivals are the harsher, realistic case: random gaps, bursts
    included.
    """
    if rate <= 0:
        return [0.0] * count
    if not poisson:
        return [(i + phase) / rate for i in range(count)]
    rnd = random.Random(seed)
    t, out = 0.0, []
    for _ in range(count):
        t += rnd.expovariate(rate)
        out.append(t)
    return out


def from_domain_headers(headers: list[tuple[str, str]], wid: int, i: int
                       ) -> list[tuple[str, str]]:
    """The same headers with a From domain no earlier message had (a subdomain of the
    fixture domain, so DMARC finds the org domain's record and nothing else changes)."""
    domain = f"n{wid}x{i}.{DOMAIN}"
    return [(n, f" Bench <bench@{domain}>") if n.lower() == "from" else (n, v)
            for n, v in headers]


def worker(socket: str, count: int, rate: float, size: int, start_at: float, wid: int,
           phase: float, poisson: bool, new_from: bool, out: Any) -> None:
    """One connection per message, `count` messages, paced to `rate`/s if rate > 0.

    Latency runs from the due time (or the start, unpaced) to the end-of-message
    reply, so a message that had to wait for the worker's previous one counts its wait.
    """
    headers, body = split_message(message(size))
    lat: list[float] = []
    done: list[float] = []  # perf_counter at each end-of-message reply (one clock for all)
    errors = 0
    due_at = arrival_times(count, rate, phase, poisson, seed=wid)
    while time.time() < start_at:
        time.sleep(0.001)
    t0 = time.perf_counter()
    for i in range(count):
        if rate > 0:
            due = t0 + due_at[i]
            delay = due - time.perf_counter()
            if delay > 0:
                time.sleep(delay)
        s = min(time.perf_counter(), t0 + due_at[i]) if rate > 0 else time.perf_counter()
        qid = f"{wid:02X}{i:08X}"
        try:
            with MilterClient(socket, timeout=30) as c:
                c.negotiate()
                reply = c.message(
                    ("127.0.0.1", 40000 + wid), "client.example.net", SENDER, [RCPT],
                    from_domain_headers(headers, wid, i) if new_from else headers, body,
                    macros={"C": {"j": "mail.example.com", "{daemon_name}": "smtpd",
                                  "{daemon_port}": "25"},
                            "M": {"i": qid, "{mail_addr}": SENDER}})
            if reply.code not in (b"a", b"c"):
                errors += 1
        except OSError:
            errors += 1
        now = time.perf_counter()
        lat.append(now - s)
        done.append(now)
    out.put((lat, errors, done))


def drive(socket: str, n: int, conns: int, rate: float, size: int,
          poisson: bool = False, new_from: bool = False
          ) -> tuple[float, list[float], int, list[float]]:
    """Run n messages over `conns` processes; (seconds, latencies, errors, completion
    times)."""
    q: multiprocessing.Queue[Any] = multiprocessing.Queue()
    start_at = time.time() + 0.3
    per = [n // conns + (1 if i < n % conns else 0) for i in range(conns)]
    procs = [multiprocessing.Process(target=worker, args=(socket, per[i], rate / conns, size,
                                                          start_at, i, i / conns, poisson,
                                                          new_from, q))
             for i in range(conns)]
    for p in procs:
        p.start()
    results = [q.get() for _ in procs]
    seconds = time.time() - start_at
    for p in procs:
        p.join()
    lat = [x for r in results for x in r[0]]
    return seconds, lat, sum(r[1] for r in results), sorted(x for r in results for x in r[2])


def rate_by_tenth(done: list[float]) -> list[float]:
    """msgs/s in each tenth of the messages, in completion order: a table that grows
    with every new key shows up as a falling row."""
    if len(done) < 20:
        return []
    out, step = [], len(done) // 10
    for k in range(10):
        a, b = done[k * step], done[min((k + 1) * step, len(done) - 1)]
        out.append(step / (b - a) if b > a else 0.0)
    return out


def sample_rss(pid: int, out: list[tuple[float, int]], stop: threading.Event) -> None:
    """RSS every half second: a leak climbs steadily, a cache filling up levels off."""
    t0 = time.monotonic()
    while not stop.wait(0.5):
        out.append((time.monotonic() - t0, rss_kib(pid)))


def by_tenth(samples: list[tuple[float, int]]) -> list[int]:
    """The last RSS sample at or before each tenth of the run's duration."""
    if not samples:
        return []
    end = samples[-1][0]
    picks = []
    for k in range(1, 11):
        upto = [r for t, r in samples if t <= end * k / 10]
        picks.append(upto[-1] if upto else samples[0][1])
    return picks


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", "--messages", type=int, default=20000)
    ap.add_argument("-c", "--connections", type=int, default=10)
    ap.add_argument("--rate", type=float, default=0, help="total msgs/s (0: unpaced)")
    ap.add_argument("--poisson", action="store_true",
                    help="with --rate: random (Poisson) arrivals instead of even pacing")
    ap.add_argument("--size", type=int, default=4, help="message size in KB")
    ap.add_argument("--warmup", type=int, default=1000, help="messages before measuring")
    ap.add_argument("--target", choices=TARGETS, default="postwarden")
    ap.add_argument("--socket", help="drive an already running milter here instead")
    ap.add_argument("--pid", type=int, help="with --socket: its PID, for RSS and CPU")
    ap.add_argument("--new-from-domain", action="store_true",
                    help="a From domain never seen before on every message")
    args = ap.parse_args(argv)

    base = workdir("postwarden-load-")
    dns = DnsServer(base / "knot")
    peer: Peer | None = None
    try:
        if args.socket:
            socket, pid = args.socket, args.pid
        else:
            key = serve_zones(dns, base)
            peer = make_target(args.target, base / args.target, dns.port, key)
            peer.start()
            socket, pid = f"unix:{peer.socket_path}", peer.pids()[0]
        size = args.size * 1024
        drive(socket, args.warmup, args.connections, 0, size)
        rss0 = rss_kib(pid) if pid else 0
        cpu0 = cpu_seconds([pid]) if pid else 0.0
        samples: list[tuple[float, int]] = []
        stop = threading.Event()
        sampler = threading.Thread(target=sample_rss, args=(pid, samples, stop), daemon=True)
        if pid:
            sampler.start()
        seconds, lat, errors, done = drive(socket, args.messages, args.connections,
                                             args.rate, size, args.poisson,
                                             args.new_from_domain)
        stop.set()
        if pid:
            sampler.join()
        cpu1 = cpu_seconds([pid]) if pid else 0.0
        rss1 = rss_kib(pid) if pid else 0
        n = args.messages
        print(f"target={args.target if not args.socket else args.socket} messages={n} "
              f"connections={args.connections} size={args.size}KB "
              f"rate={'unpaced' if not args.rate else f'{args.rate:g}/s'}"
              f"{' poisson' if args.rate and args.poisson else ''}"
              f"{' new-from-domain' if args.new_from_domain else ''}")
        print(f"throughput {n / seconds:.0f} msgs/s  errors {errors}")
        print("throughput by tenth of the messages (msgs/s): "
              + " ".join(f"{r:.0f}" for r in rate_by_tenth(done)))
        print(f"latency p50 {1000 * statistics.median(lat):.2f} ms  "
              f"p99 {1000 * pct(lat, 99):.2f} ms  max {1000 * max(lat):.2f} ms")
        if pid:
            growth = 100 * (rss1 - rss0) / rss0 if rss0 else 0.0
            print(f"milter CPU {1000 * (cpu1 - cpu0) / n:.2f} ms/msg  "
                  f"RSS {rss0 / 1024:.1f} MiB after warm-up -> {rss1 / 1024:.1f} MiB "
                  f"after {n} messages ({growth:+.1f} %)")
            print("RSS by tenth of the run (MiB): "
                  + " ".join(f"{r / 1024:.1f}" for r in by_tenth(samples)))
        return 1 if errors else 0
    finally:
        if peer is not None:
            peer.stop()
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


def make_target(target: str, directory: Path, dns_port: int, key: Path) -> Peer:
    if target == "noop":
        return NoopPeer(directory)
    if target == "noop-collect":
        return CollectPeer(directory)
    extra: dict[str, Any] = {"outbound": {"internal_networks": ["127.0.0.0/8"]}}
    if target == "postwarden-sign":
        extra["dkim"] = {"sign": True, "keys": [{"domain": "example.com", "selector": "bench",
                                                  "key_file": str(key)}]}
    if target == "postwarden-selfcheck":
        extra["selfcheck"] = selfcheck_always(Path("/etc/postfix"))
    if target == "postwarden-unpinned":
        extra["pin_cpu"] = False
    directory.mkdir(parents=True, exist_ok=True)
    return PostwardenPeer(directory, target, postwarden_settings(dns_port, directory, extra))


if __name__ == "__main__":
    sys.exit(main())
