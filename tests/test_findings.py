"""One record type for both halves: a self-check result is a Finding with a target.

The self-check's words (status, summary, details) are views of the Finding's fields;
its JSON is the one docs/selfcheck.schema.json describes, and reports stored by
earlier runs load into the same type.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import schemas

from postwarden.checks import escalation, rootcause
from postwarden.checks.report import CheckResult, Report, worst
from postwarden.findings import Finding, Severity
from postwarden.store.sqlite_store import SqliteStore

IP = "192.0.2.25"

# A report as the self-check wrote it before results and findings were one type
# (key order and all): stored history of that shape must keep loading.
STORED = {
    "version": 1, "generated": "2026-11-30T10:00:00Z", "generated_epoch": 1796032800.0,
    "duration": 1.5, "status": "critical", "exit_code": 2,
    "counts": {"ok": 1, "info": 0, "warning": 0, "critical": 1, "unknown": 1},
    "host": {"ips": [IP]},
    "checks": [
        {"id": "uceprotect.l1", "target": IP, "status": "critical",
         "summary": "LISTED on UCEPROTECT L1", "advice": ["stop the cause", "wait 7 days"],
         "details": {"listed": True, "zone": "dnsbl-1.uceprotect.net"}},
        {"id": "mx", "target": "example.com", "status": "ok",
         "summary": "MX 10 mail.example.com", "advice": [], "details": {}},
        {"id": "spf.record", "target": "example.com", "status": "unknown",
         "summary": "cannot tell (timeout)", "advice": [],
         "details": {"cause": "resolver.reachable"}},
    ],
    "transitions": [],
}


@pytest.mark.parametrize(("status", "severity"), [
    ("ok", Severity.OK), ("unknown", Severity.UNKNOWN), ("info", Severity.INFO),
    ("warning", Severity.WARNING), ("critical", Severity.CRITICAL)])
def test_a_result_is_a_finding_in_the_self_checks_words(status: str,
                                                         severity: Severity) -> None:
    r = CheckResult("spf.record", "example.com", status, "one line",  # type: ignore[arg-type]
                    ("fix it",), {"k": 1})
    assert type(r) is Finding
    assert r.severity is severity and r.status == status
    assert (r.id, r.target, r.text, r.data, r.advice) == (
        "spf.record", "example.com", "one line", {"k": 1}, ("fix it",))
    assert (r.summary, r.details) == (r.text, r.data)
    assert Severity.of_status(status) is severity and severity.status == status
    assert r == Finding.result("spf.record", "example.com", status,  # type: ignore[arg-type]
                               "one line", ("fix it",), {"k": 1})


def test_a_milter_finding_keeps_its_shape() -> None:
    f = Finding("dkim.missing", Severity.WARNING, "no signature", {"from_domain": "a.test"})
    assert f.target == "" and f.advice == () and f.status == "warning"
    assert f.family == "dkim"
    # The self-check has no `error`: on its scale an error needs action now.
    assert Finding("dkim.invalid", Severity.ERROR, "t").status == "critical"


def test_the_scale_orders_ok_and_unknown_below_every_problem() -> None:
    assert list(Severity) == sorted(Severity)
    assert Severity.OK < Severity.UNKNOWN < Severity.INFO < Severity.WARNING \
        < Severity.ERROR < Severity.CRITICAL
    assert max(Severity) is Severity.CRITICAL
    problems = [s for s in Severity if s >= Severity.WARNING]
    assert problems == [Severity.WARNING, Severity.ERROR, Severity.CRITICAL]
    assert str(Severity.OK) == "ok" and str(Severity.UNKNOWN) == "unknown"
    # The report ranks unknown above info on its own: an unanswered question is
    # worse news than an informational answer.
    assert worst(["info", "unknown", "ok"]) == "unknown"
    assert worst(["unknown", "warning"]) == "warning"


def test_to_dict_is_the_report_json() -> None:
    r = CheckResult("uceprotect.l1", IP, "critical", "LISTED", ("stop the cause",),
                    {"listed": True})
    d = r.to_dict()
    assert list(d) == ["id", "target", "status", "summary", "advice", "details"]
    assert d == {"id": "uceprotect.l1", "target": IP, "status": "critical",
                 "summary": "LISTED", "advice": ["stop the cause"],
                 "details": {"listed": True}}
    assert Finding.from_dict(d) == r
    # to_dict copies: the JSON does not alias the result's data.
    d["details"]["listed"] = False
    assert r.details == {"listed": True}


def test_a_stored_report_loads_and_writes_back_the_same_json() -> None:
    rep = Report.from_json(json.dumps(STORED))
    assert all(type(c) is Finding for c in rep.checks)
    l1, mx, spf = rep.checks
    assert (l1.severity, mx.severity, spf.severity) == (
        Severity.CRITICAL, Severity.OK, Severity.UNKNOWN)
    assert l1.advice == ("stop the cause", "wait 7 days")
    assert rep.status == "critical" and rep.exit_code == 2
    again = json.loads(rep.to_json())
    assert again == STORED
    schemas.selfcheck_report(again)


def test_history_in_the_store_loads(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    try:
        store.record_selfcheck(STORED["generated_epoch"], json.dumps(STORED))  # type: ignore[arg-type]
        history = escalation.load_history(store, 5)
    finally:
        store.close()
    assert len(history) == 1
    assert history[0].find("uceprotect.l1", IP)[0].details["listed"] is True


def test_root_cause_rewrites_the_one_type() -> None:
    ok = CheckResult("spf.record", "example.com", "ok", "v=spf1 -all")
    results = [CheckResult(rootcause.RESOLVER, "127.0.0.1", "unknown", "no answer"), ok]
    rootcause.propagate(results)
    spf = results[1]
    assert type(spf) is Finding and spf.severity is Severity.UNKNOWN
    assert spf.status == "unknown" and spf.details == {"cause": rootcause.RESOLVER}
    assert spf.summary == ("cannot tell: the resolver does not answer "
                           "(the run said: v=spf1 -all)")
    assert ok.status == "ok"  # the original result is not changed in place
