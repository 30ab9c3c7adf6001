"""A dict-backed Resolver for self-check unit tests: real cache and states, no network."""

from __future__ import annotations

import threading
import time

from postwarden.dns import Answer, Resolver

TIMEOUT = "timeout"
SERVFAIL = "servfail"


class FakeResolver(Resolver):
    """records[(name, TYPE)] = list of answers, or TIMEOUT / SERVFAIL; missing = NXDOMAIN.

    `delay` seconds are slept for names under any zone in `slow` (then temperror),
    to test the runner's concurrency and deadlines with real waiting.
    `answered_while_slow` counts the other answers given while a slow name was still
    waiting: above zero only if other checks ran alongside it.
    """

    def __init__(self, records: dict[tuple[str, str], list[str] | str] | None = None,
                 slow: tuple[str, ...] = (), delay: float = 0.0) -> None:
        super().__init__(nameservers=["127.0.0.1"], port=53, timeout=2.0)
        self.records = dict(records or {})
        self.asked: list[tuple[str, str]] = []
        self.slow, self.delay = slow, delay
        self.down = False  # the nameserver itself does not answer
        self.answered_while_slow = 0
        self._answered = 0
        self._lock = threading.Lock()

    def _ping(self, server: str, lifetime: float) -> str:
        return "no answer within 2.0s" if self.down else ""

    def add(self, name: str, rdtype: str, *values: str) -> None:
        self.records.setdefault((name.lower(), rdtype), [])
        entry = self.records[(name.lower(), rdtype)]
        assert isinstance(entry, list)
        entry.extend(values)

    def _fetch(self, name: str, rdtype: str, lifetime: float) -> Answer:
        self.asked.append((name, rdtype))
        if self.down:
            return Answer("temperror", error=f"timeout after {lifetime:.1f}s")
        if any(name.endswith("." + z) for z in self.slow):
            with self._lock:
                before = self._answered
            time.sleep(min(self.delay, lifetime))
            with self._lock:
                self.answered_while_slow += self._answered - before
            return Answer("temperror", error=f"timeout after {lifetime:.1f}s")
        with self._lock:
            self._answered += 1
        value = self.records.get((name, rdtype))
        if value == TIMEOUT:
            return Answer("temperror", error="timeout after 2.0s")
        if value == SERVFAIL:
            return Answer("temperror", error="no usable answer from 127.0.0.1: SERVFAIL")
        if value is None:
            exists = any(n == name for n, _ in self.records)
            return Answer("nodata" if exists else "nxdomain", ttl=60)
        return Answer("ok", tuple(value), 60)


def rev(ip: str, zone: str) -> str:
    from postwarden.dns import reverse_name

    return reverse_name(ip, zone)


def healthy(res: FakeResolver, zone: str) -> None:
    """Make `zone` pass the RFC 5782 test points."""
    res.add(rev("127.0.0.2", zone), "A", "127.0.0.2")
