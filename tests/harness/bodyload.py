"""Concurrent big messages through the milter protocol, with the daemon's RSS sampled.

Used by bench/body_memory.py (the numbers) and a test (the bound, by behaviour).
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from pathlib import Path

from harness.milter_client import MilterClient


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class BodyRun:
    before_kib: int
    peak_kib: int
    after_kib: int
    answered: int


def big_messages(address: str, pid: int, sessions: int, size: int,
                 settle: float = 2.0) -> BodyRun:
    """`sessions` concurrent messages of `size` body bytes each; RSS before, at peak
    and `settle` seconds after the last answer."""
    line = b"x" * 998 + b"\r\n"
    body = line * (size // len(line))
    before = rss_kib(pid)
    peak = [before]
    answered: list[bytes] = []
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], rss_kib(pid))
            time.sleep(0.02)

    def one(i: int) -> None:
        with MilterClient(address, timeout=120) as c:
            c.negotiate()
            r = c.message(("192.0.2.80", 41000 + i), "client.example.net", "alice@example.com",
                          ["bob@example.net"], [("From", " alice@example.com"),
                                                ("Subject", f" big {i}")], body,
                          {"C": {"{daemon_name}": "ORIGINATING"}, "M": {"{auth_authen}": "a"},
                           "E": {"i": f"BIG{i:06d}"}})
            answered.append(r.code)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    workers = [threading.Thread(target=one, args=(i,)) for i in range(sessions)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()
    time.sleep(settle)
    done.set()
    sampler.join()
    return BodyRun(before, peak[0], rss_kib(pid), sum(1 for a in answered if a in (b"a", b"c")))
