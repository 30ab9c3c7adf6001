"""The runner: every check concurrently, bounded, recorded; report renderers; the CLI."""

from __future__ import annotations

import json
from pathlib import Path

from postwarden import config as configmod
from postwarden.blocklists import lists_for
from postwarden.checks import report as rep
from postwarden.checks.milter_reach import Negotiation
from postwarden.checks.postfix_audit import PostfixFacts
from postwarden.checks.runner import RunInputs, Selection, Targets, run
from postwarden.store.sqlite_store import SqliteStore
from selfcheck_fakes import FakeResolver, healthy, rev

IPS = ["192.0.2.25", "192.0.2.26"]
DOMAINS = ["example.com", "example.net", "example.org"]
SLOW = "bl.slow.example.net"


def _facts(_dir: str) -> PostfixFacts:
    main = {"smtpd_milters": "{ unix:postwarden/postwarden.sock, default_action=accept }",
            "milter_default_action": "accept", "myhostname": "mail.example.com",
            "inet_protocols": "ipv4", "mynetworks": "127.0.0.0/8",
            "smtpd_relay_restrictions": "permit_mynetworks, reject_unauth_destination"}
    main["non_smtpd_milters"] = main["smtpd_milters"]
    return PostfixFacts("/etc/postfix", main, {"submission/inet": {
        "smtpd_sasl_auth_enable": "yes", "smtpd_tls_security_level": "encrypt",
        "smtpd_relay_restrictions": "permit_sasl_authenticated,reject"}},
        {"submission/inet": "smtpd"})


def _clean_world(cfg: configmod.Config, delay: float = 0.0) -> FakeResolver:
    res = FakeResolver(slow=(SLOW,), delay=delay)
    for bl in lists_for(cfg.selfcheck.lists_add, cfg.selfcheck.lists_remove):
        if bl.zone != SLOW:
            healthy(res, bl.zone)
    for ip in IPS:
        res.add(_ptr(ip), "PTR", "mail.example.com")
    res.add("mail.example.com", "A", *IPS)
    for d in DOMAINS:
        res.add(d, "TXT", "v=spf1 " + " ".join(f"ip4:{ip}" for ip in IPS) + " -all")
        res.add(f"_dmarc.{d}", "TXT", f"v=DMARC1; p=reject; rua=mailto:d@{d}")
        res.add(d, "MX", f"10 mail.{d}")
    return res


def _ptr(ip: str) -> str:
    return ".".join(reversed(ip.split("."))) + ".in-addr.arpa"


def _cfg(tmp_path: Path, **selfcheck: object) -> configmod.Config:
    return configmod.from_dict({
        "store": {"path": str(tmp_path / "state.db")},
        "selfcheck": {"lists_add": [SLOW, "bl.extra.example.net"], "query_timeout": 1.5,
                      "run_timeout": 10.0, "php_ini": [str(tmp_path / "php.ini")],
                      **selfcheck}})


def _inputs(cfg: configmod.Config, res: FakeResolver, store: object = None,
            selection: Selection | None = None) -> RunInputs:
    return RunInputs(config=cfg, resolver=res, targets=Targets(IPS, DOMAINS, "mail.example.com"),
                     store=store, selection=selection or Selection(), gather_postfix=_facts,
                     negotiate=lambda _addr: Negotiation(True, version=6),
                     postfix_running=lambda _facts: True)


def test_fifteen_lists_run_concurrently_one_not_answering(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path)
    assert len(lists_for(cfg.selfcheck.lists_add)) == 15
    res = _clean_world(cfg, delay=1.5)
    report = run(_inputs(cfg, res))
    slow = report.find(f"dnsbl.{SLOW}")
    assert [c.status for c in slow] == ["unknown", "unknown"]
    # one wait for the silent list, not one per IP: its test point did not answer,
    # so neither IP is looked up (bench/selfcheck_wait.py prints the wall time)
    assert [n for n, _t in res.asked if n.endswith(SLOW)] == [f"2.0.0.127.{SLOW}"]
    # the other lists were answered while the silent one was still waiting: the checks
    # ran side by side, not one after the other
    assert res.answered_while_slow > 0
    assert report.status == "unknown" and report.exit_code == 3
    others = [c for c in report.checks if c.id.startswith(("uceprotect.", "dnsbl."))
              and SLOW not in c.id]
    assert len(others) == 14 * 2  # 14 answering lists x 2 IPv4 addresses
    assert {c.status for c in others} == {"ok"}
    for needed in ("rdns.ptr", "rdns.fcrdns", "helo", "spf.record", "dmarc.record", "mx",
                   "dkim.record", "postfix.milters", "checklist.verdict", "resolver.public"):
        assert report.find(needed), needed


def test_clean_world_is_ok_and_never_reports_unknown_as_ok(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    (tmp_path / "php.ini").write_text("mail.add_x_header = On\n")
    report = run(_inputs(cfg, _clean_world(cfg)))
    bad = [(c.id, c.target, c.status) for c in report.checks if c.status not in ("ok", "info")]
    # no store given: no activity, no heartbeat, no receivers' replies; no DKIM selector
    # configured: the checklist cannot say DKIM is fine. All unknown, never ok.
    assert bad == [("milter.heartbeat", "", "unknown"), ("store.reachable", "", "unknown"),
                   ("activity.7d", "", "unknown"),
                   ("checklist.dkim_dmarc", "", "unknown"), ("feedback.receivers", "", "unknown")]
    assert report.exit_code == 3
    assert all(c.details.get("listed") is not None for c in report.checks
               if c.id.startswith(("uceprotect.", "dnsbl.")) and c.status == "ok")


def test_history_is_recorded_and_transitions_reported(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    store = SqliteStore(tmp_path / "state.db")
    res = _clean_world(cfg)
    sel = Selection(only=("uceprotect", "escalation"))
    first = run(_inputs(cfg, res, store, sel))
    assert first.transitions == [] and {c.id for c in first.checks} == {
        "uceprotect.l1", "uceprotect.l2", "uceprotect.l3", "escalation.uceprotect"}
    res.add(rev(IPS[0], "dnsbl-3.uceprotect.net"), "A", "127.0.0.2")
    res.clear()
    second = run(_inputs(cfg, res, store, sel))
    assert [t["kind"] for t in second.transitions] == ["listed"]
    assert second.find("uceprotect.l3", IPS[0])[0].status == "info"
    assert len(store.selfcheck_history(10)) == 2
    store.close()


def test_only_and_skip(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    res = _clean_world(cfg)
    only = run(_inputs(cfg, res, selection=Selection(only=("spf",))))
    assert {c.id for c in only.checks} == {"spf.record"}
    assert {c.target for c in only.checks} == set(DOMAINS)
    skip = run(_inputs(cfg, res, selection=Selection(skip=("dnsbl.", "uceprotect",
                                                            "checklist"))))
    assert not any(c.id.startswith(("dnsbl.", "uceprotect.", "checklist."))
                   for c in skip.checks)


def test_renderers_are_pure_functions_of_the_data(tmp_path: Path) -> None:
    r = rep.Report(generated=1700000000.0, duration=1.25, checks=[
        rep.CheckResult("uceprotect.l1", "192.0.2.25", "critical", "LISTED",
                        ("Look it up: http://www.uceprotect.net/en/rblcheck.php?ipr=192.0.2.25",),
                        {"listed": True}),
        rep.CheckResult("mx", "example.com", "ok", "MX 10 mail.example.com"),
    ])
    text = rep.render_text(r)
    assert text == rep.render_text(rep.Report.from_json(r.to_json()))
    assert "== UCEPROTECT ==" in text and "-> Look it up" in text and "\033[" not in text
    assert "\033[1;31m" in rep.render_text(r, colour=True)
    nag = rep.render_nagios(r)
    assert nag.startswith("SELFCHECK CRITICAL - uceprotect.l1 192.0.2.25: LISTED | ")
    assert "critical=1;;;0" in nag and "listed=1;;;0" in nag
    d = json.loads(r.to_json())
    assert d["status"] == "critical" and d["exit_code"] == 2
    assert set(d["checks"][0]) == {"id", "target", "status", "summary", "advice", "details"}
    prom = tmp_path / "postwarden.prom"
    rep.write_atomic(prom, rep.render_prometheus(r))
    body = prom.read_text()
    assert 'postwarden_selfcheck_status{id="uceprotect.l1",target="192.0.2.25"} 4' in body
    assert 'postwarden_selfcheck_listed{id="uceprotect.l1",target="192.0.2.25"} 1' in body
    assert [p.name for p in tmp_path.iterdir()] == ["postwarden.prom"]


def test_exit_codes_rank() -> None:
    def status(*s: str) -> int:
        return rep.Report(0.0, [rep.CheckResult("x", "", v, "") for v in s]).exit_code  # type: ignore[arg-type]

    assert status("ok", "info") == 0
    assert status("ok", "unknown") == 3
    assert status("unknown", "warning") == 1
    assert status("warning", "critical", "unknown") == 2
