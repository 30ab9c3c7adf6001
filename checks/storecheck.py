"""`store.reachable`: can this host reach the store the milter counts in?

With a shared store (Redis) an unreachable one means every relay enforces its limits
alone, at a fraction of them (degraded mode); the milter keeps a notice of each
degraded period, shown here for 7 days. No store configured (or none could be
opened) is `unknown`: we cannot say it works.
"""

from __future__ import annotations

from typing import Any

from postwarden.checks.report import CheckResult
from postwarden.findings import Finding

WINDOW = 7 * 86400


def check(store: Any, now: float) -> Finding:
    if store is None:
        return CheckResult("store.reachable", "", "unknown",
                           "no store could be opened: rate limits and history unknown",
                           ("Check [store] in the config and that the store is up",), {})
    try:
        notices = store.notices()
    except Exception as e:  # any backend failure is the finding
        advice = ("Bring the store back (redis-cli -u URL ping); meanwhile each relay "
                  "enforces its limits alone at [ratelimit] degraded_fraction",)
        return CheckResult("store.reachable", "", "critical" if store.shared else "warning",
                           f"store unreachable: {e}", advice, {"shared": store.shared})
    periods = [(when, text) for when, text in notices
               if when >= now - WINDOW and text.startswith("degraded mode")]
    details = {"shared": store.shared, "degraded_periods_7d": len(periods),
               "degraded": [{"when": w, "text": t} for w, t in periods]}
    if periods:
        return CheckResult("store.reachable", "", "info",
                           f"store reachable; {len(periods)} degraded-mode periods in 7 days "
                           f"(latest: {periods[0][1]})",
                           ("See the relays' logs around those times for the cause",), details)
    return CheckResult("store.reachable", "", "ok", "store reachable", (), details)
