"""Escalation watch: compare this run's UCEPROTECT data with the history.

Transitions (new L3, L3 -> L2, L2 -> L1, delisted), a rising L2 abuser count or
L3 spam score, how long the current L1 listing has lasted, and an L1 listing
while form mail still flows. Compares report data, never printed text. An
`unknown` answer is no evidence: it neither lists nor delists; the last known
state stands.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from postwarden.blocklists import UCEPROTECT_LOOKUP
from postwarden.checks.report import CheckResult, Report
from postwarden.findings import Finding

LEVELS = ("l3", "l2", "l1")  # rising severity
_NAMES = {"l1": "L1", "l2": "L2", "l3": "L3", "": "none"}


class History(Protocol):
    """What escalation needs from the store (postwarden.store.Store provides it)."""

    def record_selfcheck(self, when: float, report_json: str) -> None: ...

    def selfcheck_history(self, limit: int = 10) -> Sequence[Any]: ...


def load_history(store: History, limit: int) -> list[Report]:
    """Past reports, newest first; unreadable entries are skipped."""
    out = []
    for run in store.selfcheck_history(limit):
        text = getattr(run, "report_json", None)
        if text is None and isinstance(run, tuple):
            text = run[1]
        try:
            rep = Report.from_json(str(text))
        except (ValueError, KeyError, TypeError):
            continue
        if not rep.generated:
            rep.generated = float(getattr(run, "when", 0.0))
        out.append(rep)
    return out


def _state(report: Report, ip: str, level: str) -> tuple[bool | None, Mapping[str, Any]]:
    for c in report.find(f"uceprotect.{level}", ip):
        return c.details.get("listed"), c.details
    return None, {}


def _last_known(history: list[Report], ip: str, level: str
                ) -> tuple[bool | None, Mapping[str, Any]]:
    for rep in history:
        listed, details = _state(rep, ip, level)
        if listed is not None:
            return listed, details
    return None, {}


def _highest(listed: Mapping[str, bool | None]) -> str:
    top = ""
    for lv in LEVELS:
        if listed.get(lv):
            top = lv
    return top


def compare(now: Report, history: list[Report], ips: list[str], clock_now: float
            ) -> list[dict[str, Any]]:
    """Transitions of this run against the last known state of each level."""
    events: list[dict[str, Any]] = []
    for ip in ips:
        cur: dict[str, bool | None] = {}
        prev: dict[str, bool | None] = {}
        cur_d: dict[str, Mapping[str, Any]] = {}
        prev_d: dict[str, Mapping[str, Any]] = {}
        for lv in LEVELS:
            cur[lv], cur_d[lv] = _state(now, ip, lv)
            prev[lv], prev_d[lv] = _last_known(history, ip, lv)
        # unknown now: carry the last known state (no evidence of change)
        known_now = {lv: (cur[lv] if cur[lv] is not None else prev[lv]) for lv in LEVELS}
        new = [lv for lv in LEVELS if cur[lv] is True and prev[lv] is not True]
        gone = [lv for lv in LEVELS if cur[lv] is False and prev[lv] is True]
        if new:
            before, after = _highest(prev), _highest(known_now)
            if before and after != before:
                text = f"UCEPROTECT {_NAMES[before]} -> {_NAMES[after]} for {ip}"
            else:
                text = (f"new UCEPROTECT {', '.join(_NAMES[lv] for lv in reversed(new))} "
                        f"listing for {ip}")
            events.append({"kind": "listed", "ip": ip, "levels": new, "from": before,
                           "to": after, "severity": "critical" if "l1" in new else
                           "warning" if "l2" in new else "info",
                           "text": text + f" (see {UCEPROTECT_LOOKUP.format(ip=ip)})"})
        if gone:
            still = _highest({lv: known_now[lv] for lv in LEVELS})
            rest = f"; still {_NAMES[still]}" if still else ""
            events.append({"kind": "delisted", "ip": ip, "levels": gone, "severity": "info",
                           "text": f"delisted from UCEPROTECT "
                                   f"{', '.join(_NAMES[lv] for lv in reversed(gone))} "
                                   f"for {ip}{rest}"})
        for lv, key, what in (("l2", "abusers", "abusers in the allocation"),
                              ("l3", "spamscore", "spam score of the ASN")):
            a, b = prev_d[lv].get(key), cur_d[lv].get(key)
            if (cur[lv] and prev[lv] and isinstance(a, int) and isinstance(b, int)
                    and b > a):
                events.append({"kind": "rising", "ip": ip, "level": lv, "key": key,
                               "from": a, "to": b, "severity": "warning",
                               "text": f"UCEPROTECT {_NAMES[lv]} {what} rising for {ip}: "
                                       f"{a} -> {b}"})
    return events


def l1_since(now: Report, history: list[Report], ip: str) -> float | None:
    """When the current unbroken L1 listing started (unknown runs do not break it)."""
    listed, _ = _state(now, ip, "l1")
    if listed is False:
        return None
    since = now.generated if listed else None
    for rep in history:
        was, _ = _state(rep, ip, "l1")
        if was is False:
            break
        if was:
            since = rep.generated
    return since


def watch(now: Report, history: list[Report], ips: list[str], form_messages_24h: int | None
          ) -> list[Finding]:
    """`escalation.uceprotect` per IP: L1 duration, form mail still flowing."""
    out = []
    for ip in ips:
        listed, _ = _state(now, ip, "l1")
        since = l1_since(now, history, ip)
        details: dict[str, Any] = {"l1_since": since, "form_messages_24h": form_messages_24h}
        if listed and since is not None:
            days = (now.generated - since) / 86400
            details["l1_days"] = round(days, 2)
            summary = f"L1-listed for {days:.1f} days (since the first run that saw it)"
            advice = ["L1 expires 7 days after the last spamtrap hit; every new hit "
                      "extends it. Do not pay for delisting."]
            if form_messages_24h:
                summary += f"; {form_messages_24h} form messages in the last 24 h"
                advice.insert(0, "Web-form mail is still flowing while L1-listed: stop the "
                                 "form (or set [selfcheck] hold_forms_when_listed = true) "
                                 "and check what it sent (postqueue -p, mail log)")
            out.append(CheckResult("escalation.uceprotect", ip, "critical", summary,
                                   tuple(advice), details))
        elif listed is None:
            last = "listed" if since is not None else "not listed" if _last_known(
                history, ip, "l1")[0] is False else "never known"
            out.append(CheckResult("escalation.uceprotect", ip, "unknown",
                                   f"L1 state unknown this run; last known: {last}", (),
                                   details))
        else:
            out.append(CheckResult("escalation.uceprotect", ip, "ok", "not L1-listed", (),
                                   details))
    return out
