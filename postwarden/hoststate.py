"""What the periodic self-check knows about this host, for the milter to read.

The one place the two halves meet: the daemon creates one HostState, the periodic
self-check (postwarden.checks.periodic) writes it after every run, and the milter's
checks read it through Services (postwarden.milter.listed_form). Neither half
imports the other for it.

Writes take a lock and publish a new frozen Snapshot; a reader gets the current
snapshot with one attribute read (atomic in CPython), so the hot path never waits
for the self-check thread.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

L1_L2 = ("l1", "l2")  # the levels that hurt delivery (L3 is the whole ASN)


@dataclass(frozen=True)
class Listing:
    ip: str
    level: str  # UCEPROTECT level: l1 | l2 | l3
    since: float  # the first run of this process that saw it listed

    def __str__(self) -> str:
        return f"{self.ip} ({self.level.upper()})"


@dataclass(frozen=True)
class Snapshot:
    listings: tuple[Listing, ...] = ()
    last_run: float | None = None  # when the last periodic run finished; None: not yet
    dns_ok: bool | None = None  # blocklist answers reliable? None: not known (yet)
    dns_note: str = ""

    def listed(self, levels: Iterable[str] = L1_L2) -> tuple[Listing, ...]:
        want = set(levels)
        return tuple(x for x in self.listings if x.level in want)


class HostState:
    """Thread-safe: one writer (the periodic self-check), many readers (libmilter threads)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._snapshot = Snapshot()

    def snapshot(self) -> Snapshot:
        return self._snapshot

    def observe(self, now: float, listed: Mapping[tuple[str, str], bool | None],
                ips: Iterable[str] | None = None, dns_ok: bool | None = None,
                dns_note: str = "") -> Snapshot:
        """One run's answers: (ip, level) -> listed True / False / None (unknown).

        Only a clean answer ends a listing: unknown is no evidence, so the old state
        stays. With `ips` (this run's targets), listings of other IPs are dropped (an
        IP taken out of `[host] ips`).
        """
        with self._lock:
            old = self._snapshot
            keep = {(x.ip, x.level): x for x in old.listings}
            if ips is not None:
                targets = set(ips)
                keep = {k: v for k, v in keep.items() if k[0] in targets}
            for (ip, level), state in listed.items():
                if state is True:
                    keep.setdefault((ip, level), Listing(ip, level, now))
                elif state is False:
                    keep.pop((ip, level), None)
            listings = tuple(sorted(keep.values(), key=lambda x: (x.level, x.ip)))
            self._snapshot = Snapshot(listings, now, dns_ok, dns_note)
            return self._snapshot
