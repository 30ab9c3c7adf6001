"""Issue 5 end-to-end: escalation over recorded runs, the daemon's periodic run while
mail flows, and the Postfix audit of a deliberately broken private config."""

from __future__ import annotations

import shutil
import subprocess
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from harness.knot import DnsServer
from harness.postfix import Postfix
from harness.sink import Sink
from selfcheck_world import IP, L1, L2, L3, TXT, World, selfcheck, write_config

pytestmark = pytest.mark.e2e
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
STEPS: list[dict[str, int]] = [{L3: 61}, {L2: 5, L3: 61}, {L1: 0, L2: 6, L3: 64}, {}]
EXPECTED = [f"new UCEPROTECT L3 listing for {IP}", f"UCEPROTECT L3 -> L2 for {IP}",
            f"UCEPROTECT L2 -> L1 for {IP}", f"delisted from UCEPROTECT L1, L2, L3 for {IP}"]


def _world(levels: dict[str, int]) -> World:
    w = World(key=KEY)
    for zone, n in levels.items():
        w.listed[zone] = ["127.0.0.2"]
        w.txt[zone] = TXT[zone].format(n=n)
    return w


def test_four_runs_l3_l2_l1_delisted_each_transition_once(
        dns_server: DnsServer, postfix: Postfix, tmp_path: Path, capsys: Any) -> None:
    cfg = write_config(tmp_path / "pw.toml", dns_server.port, tmp_path, tmp_path / "none.key",
                       postfix.conf, dkim_key_files={})
    seen: list[str] = []
    for levels in STEPS:
        _world(levels).publish(dns_server)
        code, report = selfcheck(cfg, capsys, "--only", "uceprotect", "--only", "escalation")
        seen += [t["text"].split(" (see")[0] for t in report["transitions"]]
    assert [s for s in seen if "rising" not in s] == EXPECTED
    assert [s for s in seen if "rising" in s] == [
        f"UCEPROTECT L2 abusers in the allocation rising for {IP}: 5 -> 6",
        f"UCEPROTECT L3 spam score of the ASN rising for {IP}: 61 -> 64"]
    assert code == 0  # delisted: clean again


def test_daemon_periodic_run_logs_transitions_while_mail_flows(
        dns_server: DnsServer, postfix: Postfix, sink: Sink,
        start_milter: Callable[..., Any]) -> None:
    _world({}).publish(dns_server)
    milter = start_milter({"selfcheck": {
        "interval": 2, "startup_delay": 0.5, "query_timeout": 0.5,
        "postfix_config_dir": str(postfix.conf), "php_ini": ["/nonexistent/php.ini"],
        "lists_remove": ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net",
                         "psbl.surriel.com", "bl.mailspike.net", "all.s5h.net",
                         "all.spamrats.com", "ix.dnsbl.manitu.net", "truncate.gbudb.net",
                         "dnsbl.dronebl.org"]}})
    delivered = 0
    for step, levels in enumerate(STEPS[:3]):
        _world(levels).publish(dns_server)
        expected = EXPECTED[step]
        deadline = time.monotonic() + 20
        while not any(expected in line for line in milter.lines()):
            mid = uuid.uuid4().hex
            postfix.sendmail(f"From: a@example.com\nTo: b@example.net\nSubject: t\n"
                             f"Message-ID: <{mid}@example.com>\n\nbody {mid}\n".encode(),
                             "a@example.com", ["b@example.net"])
            delivered += 1
            assert time.monotonic() < deadline, milter.lines()[-20:]
            time.sleep(0.5)
    _world({}).publish(dns_server)
    milter.wait_line(EXPECTED[3].replace(".", r"\."), timeout=20)
    lines = milter.lines()
    for text in EXPECTED:
        assert sum(text in line for line in lines) == 1, (text, lines)
    assert any(f"critical: selfcheck: UCEPROTECT L2 -> L1 for {IP}" in line for line in lines)
    postfix.wait_idle(60)
    assert len(sink.messages) >= delivered


def test_audit_flags_a_broken_private_postfix(dns_server: DnsServer, postfix: Postfix,
                                              tmp_path: Path, capsys: Any) -> None:
    broken = tmp_path / "broken-postfix"
    shutil.copytree(postfix.conf, broken)
    for line in ("smtpd_milters =", "non_smtpd_milters =", "milter_default_action = tempfail",
                 "myhostname = mail", "smtpd_relay_restrictions = permit",
                 "mynetworks = 0.0.0.0/0"):
        subprocess.run(["postconf", "-c", str(broken), "-e", line], check=True)
    subprocess.run(["postconf", "-c", str(broken), "-X", "-M", "submission/inet"], check=False)
    master = (broken / "master.cf").read_text().replace("smtpd_sasl_auth_enable=yes",
                                                         "smtpd_sasl_auth_enable=no")
    master = master.replace("smtpd_tls_security_level=encrypt", "smtpd_tls_security_level=may")
    master = master.replace("smtpd_tls_auth_only=yes", "smtpd_tls_auth_only=no")
    (broken / "master.cf").write_text(master)
    cfg = write_config(tmp_path / "pw.toml", dns_server.port, tmp_path, tmp_path / "none.key",
                       broken)
    code, report = selfcheck(cfg, capsys, "--no-record", "--only", "postfix")
    got = {c["id"]: c["status"] for c in report["checks"]}
    assert got["postfix.milters"] == "critical"
    assert got["postfix.milter_default_action"] == "warning"
    assert got["postfix.myhostname"] == "critical"
    assert got["postfix.relay"] == "critical"
    assert got["postfix.submission"] == "warning"
    advice = " ".join(a for c in report["checks"] for a in c["advice"])
    assert "postconf -e 'milter_default_action = accept'" in advice
    assert "non_smtpd_milters = $smtpd_milters" in advice
    assert code == 2


def test_automatic_reaction_holds_form_mail_only_while_listed(
        dns_server: DnsServer, postfix: Postfix, sink: Sink,
        start_milter: Callable[..., Any], tmp_path: Path) -> None:
    from harness.php import run_php

    _world({L1: 0, L2: 5, L3: 61}).publish(dns_server)
    milter = start_milter({"selfcheck": {
        "interval": 2, "startup_delay": 0.5, "query_timeout": 0.5,
        "hold_forms_when_listed": True,
        "postfix_config_dir": str(postfix.conf), "php_ini": ["/nonexistent/php.ini"],
        "lists_remove": ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net",
                         "psbl.surriel.com", "bl.mailspike.net", "all.s5h.net",
                         "all.spamrats.com", "ix.dnsbl.manitu.net", "truncate.gbudb.net",
                         "dnsbl.dronebl.org"]}})
    milter.wait_line(r"automatic reaction ON", timeout=30)

    def form_mail() -> str:
        script = tmp_path / f"form-{uuid.uuid4().hex[:8]}.php"  # a fresh source: no limit hit
        marker = uuid.uuid4().hex
        script.write_text(f"<?php\nmail('owner@example.org', 'Contact', 'Hi {marker}', "
                          "'From: webmaster@example.com');\n")
        run_php(script, postfix.conf)
        return marker

    listed_marker = form_mail()
    mid = uuid.uuid4().hex
    postfix.sendmail(f"From: cron@example.com\nTo: ops@example.net\nSubject: t\n"
                     f"Message-ID: <{mid}@example.com>\n\nbackup ok {mid}\n".encode(),
                     "cron@example.com", ["ops@example.net"])
    hold = milter.wait_line(r"hold: reason=[^ ]*uceprotect\.listed_form", timeout=20)
    held_qid = hold.split("]: ", 1)[1].split(":", 1)[0]
    postfix.wait_queue(lambda es: any(e["queue_id"] == held_qid and e["queue_name"] == "hold"
                                      for e in es))
    deadline = time.monotonic() + 20
    while not sink.find(mid):  # ordinary local mail is not held
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert not sink.find(listed_marker)

    _world({}).publish(dns_server)
    milter.wait_line(r"automatic reaction OFF", timeout=30)
    free_marker = form_mail()
    deadline = time.monotonic() + 20
    while not sink.find(free_marker):
        assert time.monotonic() < deadline, milter.lines()[-10:]
        time.sleep(0.2)


def test_listed_form_mail_is_reported_but_flows_with_the_reaction_off(
        dns_server: DnsServer, postfix: Postfix, sink: Sink,
        start_milter: Callable[..., Any], tmp_path: Path) -> None:
    """hold_forms_when_listed off (the default): the finding is still on the summary
    line, with the switch that would hold it, and the mail is delivered."""
    from harness.php import run_php

    _world({L1: 0}).publish(dns_server)
    milter = start_milter({"selfcheck": {
        "interval": 2, "startup_delay": 0.5, "query_timeout": 0.5,
        "postfix_config_dir": str(postfix.conf), "php_ini": ["/nonexistent/php.ini"],
        "lists_remove": ["zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net",
                         "psbl.surriel.com", "bl.mailspike.net", "all.s5h.net",
                         "all.spamrats.com", "ix.dnsbl.manitu.net", "truncate.gbudb.net",
                         "dnsbl.dronebl.org"]}})
    milter.wait_line(rf"UCEPROTECT L1.* for {IP}", timeout=30)
    pattern = "uceprotect.listed_form"
    deadline = time.monotonic() + 30
    while True:  # the HostState is published right after the transition line
        script = tmp_path / f"form-{uuid.uuid4().hex[:8]}.php"
        marker = uuid.uuid4().hex
        script.write_text(f"<?php\nmail('owner@example.org', 'Contact', 'Hi {marker}', "
                          "'From: webmaster@example.com');\n")
        run_php(script, postfix.conf)
        wait = time.monotonic() + 20
        while not sink.find(marker):  # delivered, listed or not: nothing holds it
            assert time.monotonic() < wait, milter.lines()[-10:]
            time.sleep(0.2)
        summaries = [line for line in milter.lines() if pattern in line and "findings=" in line]
        if summaries:
            break
        assert time.monotonic() < deadline, milter.lines()[-10:]
    assert "action=accept would=accept" in summaries[0]
    assert not any("automatic reaction ON" in line for line in milter.lines())
    milter.wait_line(rf"warning: uceprotect\.listed_form: form mail .* while {IP} \(L1\) "
                     r"is listed on UCEPROTECT; fix: .*hold_forms_when_listed", timeout=5)
    assert not any("hold: reason=" in line for line in milter.lines())
