"""Escalation watch: transitions against the history, L1 duration, rising counts."""

from __future__ import annotations

from typing import Any

from postwarden.checks import escalation
from postwarden.checks.report import CheckResult, Report

IP = "192.0.2.25"


def _rep(when: float, l1: bool | None, l2: bool | None, l3: bool | None,
         extra: dict[str, dict[str, Any]] | None = None) -> Report:
    extra = extra or {}
    checks = []
    for lv, listed in (("l1", l1), ("l2", l2), ("l3", l3)):
        status = "unknown" if listed is None else ("critical" if listed else "ok")
        checks.append(CheckResult(f"uceprotect.{lv}", IP, status, "", (),  # type: ignore[arg-type]
                                  {"listed": listed, **extra.get(lv, {})}))
    return Report(generated=when, checks=checks)


def _kinds(events: list[dict[str, Any]]) -> list[str]:
    return [e["text"].split(" (see")[0] for e in events]


def test_l3_l2_l1_delisted_each_reported_once() -> None:
    runs = [_rep(1, False, False, True), _rep(2, False, True, True), _rep(3, True, True, True),
            _rep(4, False, False, False)]
    seen = []
    history: list[Report] = []
    for r in runs:
        seen.append(_kinds(escalation.compare(r, history, [IP], r.generated)))
        history.insert(0, r)
    assert seen == [
        [f"new UCEPROTECT L3 listing for {IP}"],
        [f"UCEPROTECT L3 -> L2 for {IP}"],
        [f"UCEPROTECT L2 -> L1 for {IP}"],
        [f"delisted from UCEPROTECT L1, L2, L3 for {IP}"],
    ]
    # the same state again: nothing to report
    assert escalation.compare(_rep(5, False, False, False), history, [IP], 5) == []


def test_unknown_is_no_evidence() -> None:
    history = [_rep(1, True, False, False)]
    assert escalation.compare(_rep(2, None, None, None), history, [IP], 2) == []
    # back to listed after an unknown run: not a new listing
    history.insert(0, _rep(2, None, None, None))
    assert escalation.compare(_rep(3, True, False, False), history, [IP], 3) == []


def test_rising_abusers_and_spamscore() -> None:
    old = _rep(1, False, True, True, {"l2": {"abusers": 4}, "l3": {"spamscore": 50}})
    new = _rep(2, False, True, True, {"l2": {"abusers": 9}, "l3": {"spamscore": 61}})
    events = escalation.compare(new, [old], [IP], 2)
    assert {(e["kind"], e["level"], e["from"], e["to"]) for e in events} == {
        ("rising", "l2", 4, 9), ("rising", "l3", 50, 61)}


def test_l1_duration_and_form_mail_still_flowing() -> None:
    day = 86400.0
    history = [_rep(3 * day, None, True, True), _rep(2 * day, True, True, True),
               _rep(1 * day, False, True, True)]
    now = _rep(4.5 * day, True, True, True)
    assert escalation.l1_since(now, history, IP) == 2 * day
    (r,) = escalation.watch(now, history, [IP], form_messages_24h=12)
    assert r.status == "critical" and r.details["l1_days"] == 2.5
    assert "12 form messages" in r.summary and "hold_forms_when_listed" in r.advice[0]
    (clean,) = escalation.watch(_rep(5 * day, False, True, True), history, [IP], 0)
    assert clean.status == "ok"
