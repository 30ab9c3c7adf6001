"""The brake: receivers' own answers about a source, as findings on its next message.

The feedback reader stores every delivery result tied to the source that sent it.
This check reads the current source's results over `[feedback] brake_window`; when
one reply class (unknown recipients, blocklist citations, authentication, ...)
reaches `brake_min` rejections and `brake_ratio` of the attempts, the message gets
that class's finding (feedback.unknown_recipients, ...). It decides nothing: with
`[policy.enforce] "feedback.unknown_recipients" = "hold"` the policy holds the
message (monitor mode logs would=hold), so a compromised form is braked by the
receivers' replies. On a store error it reports nothing (fail open).

A busy source's results are many rows; reading them on every message would cost
milliseconds (bench/feedback_cost.py), so a tally of BIG_HISTORY rows or more is
reused for CACHE_SECONDS: the brake on a busy source reacts within that time. A small
history is read fresh, so the first bounces count at once.
"""

from __future__ import annotations

import threading

from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.context import CheckContext
from postwarden.replies import CLASSES
from postwarden.store import StoreError
from postwarden.store.feedback import Tally

BIG_HISTORY = 200
CACHE_SECONDS = 5.0
CACHE_MAX = 1000  # sources remembered; past it the cache starts over


class FeedbackBrake:
    """The check; one per Inspector, holding the busy sources' recent tallies."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[float, Tally]] = {}
        self._lock = threading.Lock()
        self.__name__ = "feedback_brake_check"

    def __call__(self, msg: Message, ctx: CheckContext) -> list[Finding]:
        store = ctx.services.store
        if store is None:
            return []
        source = ctx.evidence(msg).source()
        if not source.key:
            return []
        fb = ctx.services.config.feedback
        now = ctx.services.clock()
        with self._lock:
            hit = self._cache.get(source.key)
        if hit is not None and 0 <= now - hit[0] < CACHE_SECONDS:
            t = hit[1]
        elif ctx.services.health.degraded:
            return []  # the shared store is away: no brake rather than a wait per message
        else:
            try:
                records = store.deliveries(now - fb.brake_window, source=source.key)
            except StoreError:
                return []
            t = Tally()
            for r in records:
                t.add(r)
            if len(records) >= BIG_HISTORY:
                with self._lock:
                    if len(self._cache) >= CACHE_MAX:
                        self._cache.clear()
                    self._cache[source.key] = (now, t)
        return findings(t, source.key, fb.brake_window, fb.brake_min, fb.brake_ratio)


def findings(t: Tally, key: str, window: int, minimum: int, ratio: float) -> list[Finding]:
    """The brake's findings for one source's tally."""
    if not t.attempts:
        return []
    out = []
    for cls, fid in CLASSES.items():
        if fid is None:
            continue
        n = t.rejected(cls)
        if n >= minimum and n / t.attempts >= ratio:
            out.append(Finding(fid, Severity.WARNING,
                               f"receivers rejected {n} of the last {t.attempts} deliveries "
                               f"from {key} as {cls} (within {window}s)",
                               {"source": key, "class": cls, "rejected": n,
                                "attempts": t.attempts},
                               ("see `postwarden status` for the replies; stop the source "
                                "if it sends to harvested addresses",)))
    return out
