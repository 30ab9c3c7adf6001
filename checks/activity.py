"""`activity.7d`: what this host sent in the seed's 7-day risk window, per source.

Outbound messages, form messages, holds and rate-limit hits from the store. No
store (or a failing one) is `unknown`: we cannot say nothing was sent.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

from postwarden.checks.report import CheckResult
from postwarden.findings import Finding

WINDOW = 7 * 86400


class ActivitySource(Protocol):
    def activity(self, since: float) -> Mapping[str, Any]: ...


def _counts(a: Any) -> dict[str, int]:
    keys = ("messages", "form_messages", "holds", "ratelimit_hits")
    if isinstance(a, Mapping):
        return {k: int(a.get(k, 0)) for k in keys}
    return {k: int(getattr(a, k, 0)) for k in keys}


def per_source(store: ActivitySource, since: float) -> dict[str, dict[str, int]]:
    return {str(src): _counts(a) for src, a in store.activity(since).items()}


def check(store: ActivitySource | None, now: float) -> Finding:
    if store is None:
        return CheckResult("activity.7d", "", "unknown",
                           "no store: cannot tell what was sent in the last 7 days",
                           ("Check [store] in the config; the milter records every message",),
                           {})
    try:
        sources = per_source(store, now - WINDOW)
    except Exception as e:  # any backend failure is a state here
        return CheckResult("activity.7d", "", "unknown", f"store failed: {e}", (), {})
    totals = {k: sum(s[k] for s in sources.values())
              for k in ("messages", "form_messages", "holds", "ratelimit_hits")}
    details: dict[str, Any] = {"window_days": 7, "sources": sources, **totals}
    summary = (f"{totals['messages']} outbound messages, {totals['form_messages']} from web "
               f"forms, {totals['holds']} held, {totals['ratelimit_hits']} rate-limit hits "
               f"in 7 days")
    if totals["holds"] or totals["ratelimit_hits"]:
        top = sorted(sources.items(), key=lambda kv: -(kv[1]["holds"] + kv[1]["ratelimit_hits"]))
        return CheckResult("activity.7d", "", "info", summary + f" (most: {top[0][0]})",
                           ("Review held mail: mailq (entries marked !), "
                            "postwarden status; release with postsuper -H QUEUEID",), details)
    return CheckResult("activity.7d", "", "ok", summary, (), details)


def form_messages(store: ActivitySource | None, since: float) -> int | None:
    if store is None:
        return None
    try:
        return sum(s["form_messages"] for s in per_source(store, since).values())
    except Exception:
        return None
