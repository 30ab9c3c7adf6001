"""Privilege, secrets and log hygiene (issue 7), through the private Postfix."""

from __future__ import annotations

import grp
import json
import os
import pwd
import stat
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SASL_USERS, base_settings
from harness.knot import DnsServer
from harness.milterproc import MilterProcess, toml_dumps
from harness.postfix import Postfix
from harness.sink import Sink

RCPTS = [f"person{i}-{uuid.uuid4().hex[:6]}@example.org" for i in range(5)]


@pytest.mark.e2e
def test_logs_hold_no_bodies_subjects_or_recipient_lists(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess]) -> None:
    milter = start_milter()
    secret_subject = f"Salary review {uuid.uuid4().hex}"
    secret_body = f"Confidential body {uuid.uuid4().hex}"
    data = (f"From: Visitor <visitor@example.net>\nTo: {', '.join(RCPTS)}\n"
            f"Reply-To: other@example.net\nSubject: {secret_subject}\n\n"
            f"{secret_body}\nhttp://bit.ly/x http://tinyurl.com/y\n").encode()
    postfix.smtp(data, "alice@example.com", RCPTS, login=("alice", SASL_USERS["alice"]))
    postfix.sendmail(data, "www-data@example.com", RCPTS)
    sink.wait_for(1)  # the form-like local copy is suspicious enough to be held
    postfix.wait_idle()
    log = "\n".join(milter.lines())
    assert "origin=submission" in log and "origin=local" in log
    assert "rcpts=5" in log
    assert secret_subject not in log and secret_body not in log
    for r in RCPTS:
        assert r not in log and r.split("@")[0] not in log


@pytest.mark.e2e
def test_socket_is_group_postfix_and_not_world_writable(
        postfix: Postfix, start_milter: Callable[..., MilterProcess]) -> None:
    start_milter()
    st = os.stat(postfix.milter_socket)
    assert stat.S_ISSOCK(st.st_mode)
    assert stat.S_IMODE(st.st_mode) == 0o660
    assert st.st_gid == grp.getgrnam("postfix").gr_gid


@pytest.mark.e2e
def test_started_as_root_it_runs_as_the_configured_user(
        postfix: Postfix, sink: Sink, dns_server: DnsServer, e2e_base: Path) -> None:
    work = e2e_base / f"unpriv-{uuid.uuid4().hex[:6]}"
    work.mkdir()
    nobody = pwd.getpwnam("nobody")
    os.chown(work, nobody.pw_uid, nobody.pw_gid)
    settings = base_settings(postfix, dns_server, work)
    settings["user"] = "nobody"
    milter = MilterProcess(work / "m", postfix.milter_socket, settings)
    milter.start()
    try:
        assert milter.proc is not None
        status = Path(f"/proc/{milter.proc.pid}/status").read_text()
        uids = next(line for line in status.splitlines() if line.startswith("Uid:")).split()
        assert uids[1:] == [str(nobody.pw_uid)] * 4  # real, effective, saved, fs
        data = b"From: alice@example.com\nSubject: t\n\nhello\n"
        qid = postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                           login=("alice", SASL_USERS["alice"]))
        assert milter.wait_summary(qid)["origin"] == "submission"
        assert os.stat(postfix.milter_socket).st_uid == nobody.pw_uid
        sink.wait_for(1)
    finally:
        assert milter.stop() == 0


AUDIT = textwrap.dedent("""
    import json, sys
    events = []
    def hook(event, args):
        if event == "socket.connect":
            events.append(["connect", repr(args[1])])
        elif event == "socket.sendto":
            events.append(["sendto", repr(args[1])])
        elif event == "subprocess.Popen":
            events.append(["exec", str(args[1][0]) if args[1] else str(args[0])])
    sys.addaudithook(hook)
    from postwarden.cli import main
    rc = main(sys.argv[1:])
    sys.stdout.flush()
    print("AUDIT " + json.dumps(events), file=sys.stderr)
    sys.exit(rc)
""")


@pytest.mark.e2e
def test_selfcheck_only_asks_dns_and_runs_postconf(
        postfix: Postfix, dns_server: DnsServer, tmp_path: Path) -> None:
    dns_server.zone("example.com", '@ TXT "v=spf1 ip4:192.0.2.25 -all"\n@ MX 10 mail\n'
                    "mail A 192.0.2.25\n")
    settings = base_settings(postfix, dns_server, tmp_path)
    settings["selfcheck"] = {"postfix_config_dir": str(postfix.conf)}
    cfg = tmp_path / "pw.toml"
    cfg.write_text(toml_dumps(settings))
    script = tmp_path / "audit.py"
    script.write_text(AUDIT)
    r = subprocess.run([sys.executable, str(script), "--config", str(cfg), "selfcheck",
                        "--json", "--no-record"], capture_output=True, text=True, cwd="/",
                       timeout=120)
    report = json.loads(r.stdout)
    assert report["checks"], r.stderr
    events = json.loads(r.stderr.rsplit("AUDIT ", 1)[1])
    dns_port = str(dns_server.port)
    # DNS, and the milter socket exactly as Postfix names it (milter.reachable)
    allowed = {f"('127.0.0.1', {dns_port})", repr(str(postfix.milter_socket))}
    for kind, what in events:
        if kind == "exec":  # postconf, and `php --ini` (which files PHP reads)
            assert Path(what).name in ("postconf", "php"), what
        else:
            assert what in allowed, (kind, what)
    assert any(k == "exec" for k, _ in events), "the Postfix audit ran no postconf"
    assert any(k in ("sendto", "connect") for k, _ in events), "no DNS was asked"
