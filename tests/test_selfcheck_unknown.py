"""Unknown is loud and never ok: root causes, dependent results, empty selections,
and the checklist answering only what it looked at."""

from __future__ import annotations

from pathlib import Path

from test_selfcheck_runner import DOMAINS, _cfg, _clean_world, _inputs

from postwarden.checks import checklist
from postwarden.checks import report as rep
from postwarden.checks.rootcause import DNS_FAMILIES
from postwarden.checks.runner import Selection, Targets, run


def test_resolver_down_is_one_root_cause_and_nothing_dns_based_is_ok(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    res = _clean_world(cfg)
    res.down = True
    report = run(_inputs(cfg, res))
    roots = report.find("resolver.reachable")
    assert len(roots) == 1 and roots[0].status == "unknown"
    assert "127.0.0.1" in roots[0].summary and "does not answer" in roots[0].summary
    dns_based = [c for c in report.checks if c.id.startswith(DNS_FAMILIES)]
    assert dns_based and all(c.status != "ok" for c in dns_based)
    assert report.find("resolver.public")[0].status == "unknown"
    assert all(c.details.get("cause") == "resolver.reachable" for c in dns_based
               if c.status == "unknown")
    assert report.exit_code in (2, 3)  # a Postfix/helo problem may still be critical
    # text: the cause once, everything it explains in one line under it
    text = rep.render_text(report)
    assert text.count("resolver.reachable") == 1
    assert "result(s) unknown because of this: uceprotect.l1 192.0.2.25" in text
    assert "drop the list" not in text  # per-list advice is not repeated 14 times
    # the checklist answers nothing it could not look at
    for item in ("checklist.spf", "checklist.dkim_dmarc"):
        assert report.find(item)[0].details["answer"] == "unknown"
    assert report.find("checklist.verdict")[0].status != "ok"


def test_escalation_is_unknown_when_l1_is(tmp_path: Path) -> None:
    from postwarden.store.sqlite_store import SqliteStore

    cfg = _cfg(tmp_path, lists_add=[])
    res = _clean_world(cfg)
    res.down = True
    store = SqliteStore(tmp_path / "state.db")
    report = run(_inputs(cfg, res, store, Selection(only=("uceprotect", "escalation"))))
    store.close()
    esc = report.find("escalation.uceprotect")
    assert esc and {c.status for c in esc} == {"unknown"}
    assert "L1 state unknown" in esc[0].summary


def test_no_sending_ip_is_one_unknown_never_an_absent_section(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    inp = _inputs(cfg, _clean_world(cfg), selection=Selection(only=("uceprotect", "dnsbl")))
    inp.targets = Targets([], DOMAINS, "mail.example.com")
    report = run(inp)
    assert [(c.id, c.status, c.summary) for c in report.checks] == [
        ("blocklists.no_sending_ip", "unknown", "no sending IP: blocklists not checked")]
    assert report.exit_code == 3
    assert "UNKNOWN" in rep.render_nagios(report).split(" - ")[0]


def test_a_selection_of_nothing_is_unknown(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    res = _clean_world(cfg)
    typo = run(_inputs(cfg, res, selection=Selection(only=("TYPO",))))
    assert [(c.id, c.target, c.status) for c in typo.checks] == [
        ("selfcheck.selection", "TYPO", "unknown")]
    assert typo.exit_code == 3
    mixed = run(_inputs(cfg, res, selection=Selection(only=("spf", "TYPO"))))
    assert {c.id for c in mixed.checks} == {"spf.record", "selfcheck.selection"}
    everything = run(_inputs(cfg, res, selection=Selection(skip=("",))))
    assert [c.id for c in everything.checks] == ["selfcheck.selection"]


def test_php_settings_in_conf_d_are_read_after_php_ini(tmp_path: Path) -> None:
    ini = tmp_path / "fpm" / "php.ini"
    (ini.parent / "conf.d").mkdir(parents=True)
    ini.write_text("mail.add_x_header = Off\n")
    (ini.parent / "conf.d" / "99-mail.ini").write_text("mail.add_x_header = On\n")
    assert checklist.php_add_x_header([str(ini)]) == {str(ini): True}
    (ini.parent / "conf.d" / "99-mail.ini").write_text("; nothing\n")
    assert checklist.php_add_x_header([str(ini)]) == {str(ini): False}
    # a configuration that cannot be read is not "off": it is left out (unknown)
    assert checklist.php_add_x_header([str(tmp_path / "none" / "php.ini")]) == {}


def test_no_dkim_selector_means_the_checklist_cannot_say_dkim_is_fine(tmp_path: Path) -> None:
    cfg = _cfg(tmp_path, lists_add=[])
    (tmp_path / "php.ini").write_text("mail.add_x_header = On\n")
    report = run(_inputs(cfg, _clean_world(cfg)))
    item = report.find("checklist.dkim_dmarc")[0]
    assert item.details["answer"] == "unknown" and item.status == "unknown"
    verdict = report.find("checklist.verdict")[0]
    assert verdict.status != "ok"


def test_php_ini_sets_follow_php_itself() -> None:
    import shutil

    from harness import need

    need("php")
    sets = checklist.php_ini_sets()
    assert shutil.which("php") and sets
    cli = sets[0]  # what `php --ini` names: php.ini first, then its conf.d snippets
    assert cli[0].endswith("php.ini") and all(f.endswith(".ini") for f in cli)
    assert any("/conf.d/" in f for f in cli)
