"""The daemon's periodic run: log lines only on change, plus a reminder; the reaction."""

from __future__ import annotations

import io

from postwarden.checks.periodic import Reaction, Watcher
from postwarden.checks.report import CheckResult, Report
from postwarden.log import Logger

IP = "192.0.2.25"


def _logger() -> tuple[Logger, io.StringIO]:
    buf = io.StringIO()
    lg = Logger()
    lg.setup("stderr", stream=buf)
    return lg, buf


def _report(*checks: CheckResult, transitions: list[dict[str, object]] | None = None
            ) -> Report:
    return Report(generated=0.0, checks=list(checks), transitions=transitions or [])


SPF_BAD = CheckResult("spf.record", "example.com", "critical", "no SPF record",
                      ("Publish: example.com. TXT \"v=spf1 ip4:192.0.2.25 -all\"",))
SPF_OK = CheckResult("spf.record", "example.com", "ok", "fine")
SPF_UNKNOWN = CheckResult("spf.record", "example.com", "unknown", "timeout")


def test_changes_logged_once_then_resolved_then_reminder() -> None:
    lg, buf = _logger()
    now = [1000.0]
    w = Watcher(lg, reminder_interval=86400, clock=lambda: now[0])
    w.observe(_report(SPF_BAD))
    w.observe(_report(SPF_BAD))
    w.observe(_report(SPF_UNKNOWN))  # no evidence: the problem is neither resolved nor re-logged
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2 and "critical: selfcheck: spf.record example.com: no SPF record" \
        in lines[0] and "fix: Publish" in lines[0]
    # ... but the unknown itself is said, once
    assert "warning: selfcheck: 1 check(s) unknown, not watched: spf.record example.com: " \
        "timeout" in lines[1]
    now[0] += 86400
    w.observe(_report(SPF_BAD))
    lines = buf.getvalue().splitlines()
    assert "every check answers again (was unknown: spf.record example.com)" in lines[-2]
    assert "critical: selfcheck: reminder: 1 problem(s) persist: spf.record example.com" \
        in lines[-1]
    w.observe(_report(SPF_OK))
    assert buf.getvalue().splitlines()[-1].endswith("selfcheck: spf.record example.com: resolved")
    assert len(buf.getvalue().splitlines()) == 5


RESOLVER_DOWN = CheckResult("resolver.reachable", "127.0.0.1:5300", "unknown",
                            "the resolver 127.0.0.1:5300 does not answer (timeout)",
                            ("Start or fix the resolver",))
L1_UNKNOWN = CheckResult("uceprotect.l1", IP, "unknown", "cannot tell (timeout)", (),
                         {"listed": None, "cause": "resolver.reachable"})


def test_unknown_logged_once_with_its_root_cause_reminded_then_recovered() -> None:
    lg, buf = _logger()
    now = [1000.0]
    w = Watcher(lg, reminder_interval=3600, clock=lambda: now[0])
    for _ in range(3):  # three hourly runs within the reminder interval: one line
        w.observe(_report(RESOLVER_DOWN, L1_UNKNOWN))
        now[0] += 1000
    lines = buf.getvalue().splitlines()
    assert len(lines) == 1
    assert "warning: selfcheck: 2 check(s) unknown, not watched: resolver.reachable " \
        "127.0.0.1:5300: the resolver 127.0.0.1:5300 does not answer" in lines[0]
    assert "and 1 more unknown: uceprotect.l1 192.0.2.25" in lines[0]
    assert lines[0].endswith("fix: Start or fix the resolver")
    now[0] += 1000  # past the reminder interval
    w.observe(_report(RESOLVER_DOWN, L1_UNKNOWN))
    assert "selfcheck: reminder: 2 check(s) unknown" in buf.getvalue().splitlines()[-1]
    w.observe(_report(CheckResult("uceprotect.l1", IP, "ok", "not listed", (),
                                  {"listed": False})))
    w.observe(_report())
    lines = buf.getvalue().splitlines()
    assert len(lines) == 3
    assert "selfcheck: every check answers again (was unknown: resolver.reachable " \
        "127.0.0.1:5300, uceprotect.l1 192.0.2.25)" in lines[2]


def test_transitions_logged_and_uceprotect_status_not_repeated() -> None:
    lg, buf = _logger()
    w = Watcher(lg, 86400)
    l1 = CheckResult("uceprotect.l1", IP, "critical", "LISTED", (), {"listed": True})
    w.observe(_report(l1, transitions=[{"kind": "listed", "severity": "critical",
                                        "text": f"UCEPROTECT L2 -> L1 for {IP}"}]))
    w.observe(_report(l1))
    w.observe(_report(transitions=[{"kind": "delisted", "severity": "info",
                                    "text": f"delisted from UCEPROTECT L1 for {IP}"}]))
    lines = buf.getvalue().splitlines()
    assert len(lines) == 2
    assert lines[0].endswith(f"critical: selfcheck: UCEPROTECT L2 -> L1 for {IP}")
    assert lines[1].endswith(f"selfcheck: delisted from UCEPROTECT L1 for {IP}")


def test_reaction_on_off_only_when_enabled() -> None:
    lg, buf = _logger()
    r = Reaction()
    listed = _report(CheckResult("uceprotect.l2", IP, "warning", "", (), {"listed": True}))
    clean = _report(CheckResult("uceprotect.l2", IP, "ok", "", (), {"listed": False}))
    unknown = _report(CheckResult("uceprotect.l2", IP, "unknown", "", (), {"listed": None}))
    r.update(False, listed, lg)
    assert not r.active and buf.getvalue() == ""
    r.update(True, listed, lg)
    r.update(True, listed, lg)
    assert r.active and buf.getvalue().count("automatic reaction ON") == 1
    r.update(True, unknown, lg)
    assert r.active
    r.update(True, clean, lg)
    assert not r.active and buf.getvalue().count("automatic reaction OFF") == 1


def test_a_flapping_unknown_is_announced_once_per_reminder_interval() -> None:
    lg, buf = _logger()
    now = [1000.0]
    w = Watcher(lg, reminder_interval=86400, clock=lambda: now[0])
    for _ in range(5):  # unknown, known, unknown, known, ... hourly
        w.observe(_report(SPF_UNKNOWN))
        now[0] += 3600
        w.observe(_report(SPF_OK))
        now[0] += 3600
    lines = buf.getvalue().splitlines()
    assert len([ln for ln in lines if "check(s) unknown" in ln]) == 1
    assert len([ln for ln in lines if "answers again" in ln]) == 1
