"""Issue 2 end-to-end: every outbound path gets one summary line; nothing is lost."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from conftest import SASL_USERS
from harness.milterproc import MilterProcess
from harness.php import run_php
from harness.postfix import Postfix
from harness.sink import Sink

ROOT = Path(__file__).resolve().parents[2]


def make_message(sender: str = "alice@example.com", to: str = "bob@example.net",
                 subject: str = "quarterly numbers") -> tuple[str, bytes]:
    mid = f"{uuid.uuid4().hex}@example.com"
    data = (f"From: Alice <{sender}>\n"
            f"To: <{to}>\n"
            f"Subject: {subject}\n"
            f"Date: Fri, 27 Nov 2026 12:00:00 +0000\n"
            f"Message-ID: <{mid}>\n"
            "MIME-Version: 1.0\n"
            "Content-Type: text/plain; charset=utf-8\n"
            "\n"
            f"Hello Bob,\n\nthe numbers are attached in spirit. {mid}\n.dot line\n"
            ).encode()
    return mid, data


def strip_received(data: bytes) -> bytes:
    """The delivered message minus the Received: headers Postfix prepends."""
    lines = data.replace(b"\r\n", b"\n").split(b"\n")
    out, skipping = [], False
    for i, line in enumerate(lines):
        if line == b"":
            out.extend(lines[i:])
            break
        if line.lower().startswith(b"received:"):
            skipping = True
            continue
        if skipping and line[:1] in (b" ", b"\t"):
            continue
        skipping = False
        out.append(line)
    return b"\n".join(out).rstrip(b"\n")


@pytest.mark.e2e
def test_submission_sendmail_php_each_get_one_summary(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., object], tmp_path: Path
) -> None:
    milter = start_milter()

    mid, data = make_message()
    qid_sub = postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                           login=("alice", SASL_USERS["alice"]))
    mid2, data2 = make_message(sender="root@example.com", to="ops@example.org")
    postfix.sendmail(data2, "root@example.com", ["ops@example.org"])
    qid_local = postfix.queue_id_for(mid2)

    script = tmp_path / "contact.php"
    marker = uuid.uuid4().hex
    script.write_text(
        "<?php\n"
        f"$ok = mail('owner@example.org', 'Contact form', \"Message {marker}\\n\", "
        "'From: webmaster@example.com');\n"
        "exit($ok ? 0 : 1);\n")
    run_php(script, postfix.conf)

    delivered = sink.wait_for(3)
    by_mid = {m: d for d in delivered for m in (mid, mid2) if m.encode() in d.data}
    # Byte-identical apart from Postfix's own Received: headers (monitor mode).
    assert strip_received(by_mid[mid].data) == data.rstrip(b"\n")
    assert strip_received(by_mid[mid2].data) == data2.rstrip(b"\n")

    s = milter.wait_summary(qid_sub)
    assert s["origin"] == "submission"
    assert s["from"] == "<alice@example.com>" and s["hdr_from"] == "<alice@example.com>"
    assert s["rcpts"] == "1" and s["action"] == "accept" and "would" in s
    assert len(milter.summaries(qid_sub)) == 1

    s = milter.wait_summary(qid_local)
    assert s["origin"] == "local" and s["from"] == "<root@example.com>"
    assert len(milter.summaries(qid_local)) == 1

    php_msg = sink.find(marker)
    assert len(php_msg) == 1
    assert php_msg[0].header("X-PHP-Originating-Script") is not None
    qid_php = postfix.queue_id_for(php_msg[0].header("Message-ID") or "")
    s = milter.wait_summary(qid_php)
    assert s["origin"] == "local" and s["hdr_from"] == "<webmaster@example.com>"


@pytest.mark.e2e
def test_inbound_mail_untouched_and_not_summarised(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., object]) -> None:
    milter = start_milter()
    _, data = make_message(sender="stranger@example.net", to="alice@example.com")
    qid = postfix.smtp(data, "stranger@example.net", ["alice@example.com"])
    delivered = sink.wait_for(1)
    assert strip_received(delivered[0].data) == data.rstrip(b"\n")
    # Give the milter time to have logged something, then check it did not.
    _, data2 = make_message()
    qid2 = postfix.smtp(data2, "alice@example.com", ["bob@example.net"],
                        login=("alice", SASL_USERS["alice"]))
    milter.wait_summary(qid2)
    assert milter.summaries(qid) == []
    assert not any(qid in line for line in milter.lines())


@pytest.mark.e2e
def test_internal_network_client_is_outbound(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., object]) -> None:
    milter = start_milter({"outbound": {"internal_networks": ["127.0.0.1/32"]}})
    _, data = make_message()
    qid = postfix.smtp(data, "app@example.com", ["bob@example.net"])
    assert milter.wait_summary(qid)["origin"] == "internal"
    sink.wait_for(1)


def _thread_cpus(pid: int) -> dict[str, str]:
    """Each thread's Cpus_allowed_list, from /proc."""
    out = {}
    for task in Path(f"/proc/{pid}/task").iterdir():
        for line in (task / "status").read_text().splitlines():
            if line.startswith("Cpus_allowed_list:"):
                out[task.name] = line.split(":", 1)[1].strip()
    return out


@pytest.mark.e2e
def test_all_milter_threads_run_on_one_cpu_unless_told_otherwise(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess]) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    pinned = start_milter()
    _, data = make_message()
    qid = postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                       login=("alice", SASL_USERS["alice"]))
    pinned.wait_summary(qid)  # libmilter's connection threads exist by now
    assert pinned.proc is not None
    cpus = _thread_cpus(pinned.proc.pid)
    start = pinned.wait_line(r"starting postwarden ")
    if len(allowed) >= 2:
        assert f"cpu={allowed[-1]}," in start
        assert set(cpus.values()) == {str(allowed[-1])} and len(cpus) >= 2
    else:  # nothing to choose from: left alone, and said so
        assert "cpu=any," in start
    pinned.stop()

    free = start_milter({"pin_cpu": False})
    assert "cpu=any," in free.wait_line(r"starting postwarden ")
    assert free.proc is not None
    ours = _thread_cpus(os.getpid())[str(threading.get_native_id())]
    assert set(_thread_cpus(free.proc.pid).values()) == {ours}  # what it was given
    sink.wait_for(1)


@pytest.mark.e2e
def test_mail_flows_with_postwarden_stopped(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., object]) -> None:
    milter = start_milter()
    milter.stop()
    mid, data = make_message()
    postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                 login=("alice", SASL_USERS["alice"]))
    mid2, data2 = make_message(sender="root@example.com")
    postfix.sendmail(data2, "root@example.com", ["bob@example.net"])
    delivered = sink.wait_for(2)
    assert {mid, mid2} <= {m for d in delivered for m in (mid, mid2) if m.encode() in d.data}
    postfix.wait_idle()  # nothing of ours left in active or deferred


@pytest.mark.e2e
def test_sighup_reloads_and_refuses_a_broken_config(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., object]) -> None:
    milter = start_milter()
    good = dict(milter.settings)  # type: ignore[attr-defined]
    milter.write_config({**good, "mode": "enforce"})  # type: ignore[attr-defined]
    milter.hup()  # type: ignore[attr-defined]
    milter.wait_line(r"reloaded: mode=enforce")  # type: ignore[attr-defined]
    _, data = make_message()
    qid = postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                       login=("alice", SASL_USERS["alice"]))
    assert "would" not in milter.wait_summary(qid)  # type: ignore[attr-defined]

    milter.write_config({**good, "mdoe": "monitor"})  # type: ignore[attr-defined]
    milter.hup()  # type: ignore[attr-defined]
    line = milter.wait_line(r"error: reload refused")  # type: ignore[attr-defined]
    assert "mdoe" in line
    _, data = make_message()
    qid = postfix.smtp(data, "alice@example.com", ["bob@example.net"],
                       login=("alice", SASL_USERS["alice"]))
    assert "would" not in milter.wait_summary(qid)  # type: ignore[attr-defined]
    assert milter.stop() == 0  # type: ignore[attr-defined]
    sink.wait_for(2)


def _postwarden(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(Path(sys.executable).parent / "postwarden"), *args],
                          capture_output=True, text=True)


def test_config_check_names_the_bad_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "monitor"\n[dns]\nprot = 53\n')
    r = _postwarden("--config", str(bad), "config", "check")
    assert r.returncode == 2
    assert "dns.prot" in r.stderr and "dns.port" in r.stderr

    bad.write_text('mode = "monitor"\n[dns]\nport = "fifty-three"\n')
    r = _postwarden("--config", str(bad), "config", "check")
    assert r.returncode == 2 and "dns.port" in r.stderr and "integer" in r.stderr


def test_config_check_accepts_the_shipped_example() -> None:
    r = _postwarden("--config", str(ROOT / "packaging" / "postwarden.toml"), "config", "check")
    assert r.returncode == 0, r.stderr


def test_milter_refuses_to_start_on_invalid_config(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('mode = "enforcing"\n')
    r = _postwarden("--config", str(bad), "milter", "--log-stderr")
    assert r.returncode == 2 and "mode" in r.stderr and "enforce" in r.stderr
