"""The daemon against hostile peers and hostile files, through the milter protocol.

Every case runs a real `postwarden milter` and talks to it with the project's
milter-protocol client: the daemon must survive, answer, and say what happened.
"""

from __future__ import annotations

import itertools
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.knot import DnsServer
from harness.malformed import hammer
from harness.milter_client import MilterClient
from harness.milterproc import BIN, MilterProcess, deep_merge, standalone_settings

_ids = itertools.count(1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def settings(dns_server: DnsServer, work: Path, sock: str) -> dict[str, Any]:
    return standalone_settings(dns_server.port, work, sock)


@pytest.fixture
def daemon(dns_server: DnsServer, e2e_base: Path) -> Iterator[Any]:
    started: list[MilterProcess] = []

    def start(over: dict[str, Any] | None = None, inet: bool = False) -> MilterProcess:
        work = e2e_base / f"hostile-{next(_ids)}"
        sock = work / "pw.sock"
        spec = f"inet:{free_port()}@127.0.0.1" if inet else f"unix:{sock}"
        base = settings(dns_server, work, spec)
        if inet:
            base["allow_inet"] = True
        proc = MilterProcess(work, sock, deep_merge(base, over or {}))
        proc.start()
        started.append(proc)
        return proc

    yield start
    for p in started:
        p.stop()


def good_message(proc: MilterProcess, qid: str, headers: list[tuple[str, str]] | None = None,
                 body: bytes = b"hello\r\n") -> bytes:
    with MilterClient(proc.address, timeout=15) as c:
        c.negotiate()
        reply = c.message(("192.0.2.80", 41000), "client.example.net", "alice@example.com",
                          ["bob@example.net"],
                          headers or [("From", " alice@example.com"), ("Subject", " hi")],
                          body, {"C": {"{daemon_name}": "ORIGINATING", "j": "mail.example.com"},
                                 "M": {"{auth_authen}": "alice"}, "E": {"i": qid}})
    return reply.code


def test_malformed_macro_packets_do_not_kill_the_daemon(daemon: Any) -> None:
    """Odd-count and unterminated `D` packets before connect, MAIL FROM and end of
    message, over the opt-in TCP socket where any local user can send them. Before
    postwarden read macros itself, 1-10 of these ended the process with SIGSEGV."""
    proc = daemon(inet=True)
    assert proc.proc is not None
    pid = proc.proc.pid
    tally, deaths = hammer(proc.address, 500, seed=7,
                           on_dead=lambda: proc.proc is not None and proc.proc.poll() is not None)
    print(f"\nmalformed macro packets: {tally.packets} in {tally.sessions} sessions, "
          f"{tally.answered} answered, daemon deaths: {deaths}")
    assert deaths == 0 and proc.proc.poll() is None and proc.proc.pid == pid
    assert tally.answered == tally.sessions  # every session got its end-of-message reply
    # Well-formed macros are still read, by the same bounded reader.
    qid = "MFGOOD0001"
    assert good_message(proc, qid) in (b"a", b"c")
    summary = proc.wait_summary(qid)
    assert summary["origin"] == "submission"  # {daemon_name}=ORIGINATING and {auth_authen}
    assert any("listening on TCP" in line and "warning:" in line for line in proc.lines())


def test_inet_socket_is_opt_in_and_loopback_only(tmp_path: Path) -> None:
    from postwarden import config

    with pytest.raises(config.ConfigError, match="allow_inet = true"):
        config.from_dict({"socket": "inet:8894@127.0.0.1"})
    for spec in ("inet:8894@0.0.0.0", "inet:8894", "inet:8894@192.0.2.1",
                 "inet:8894@mail.example.com", "inet6:8894@2001:db8::1"):
        with pytest.raises(config.ConfigError, match="loopback"):
            config.from_dict({"socket": spec, "allow_inet": True})
    assert config.from_dict({"socket": "inet6:8894@::1", "allow_inet": True}).allow_inet
    assert config.from_dict({"socket": "inet:8894@127.0.0.1", "allow_inet": True})


def test_header_name_not_utf8_is_answered_and_logged(daemon: Any) -> None:
    """pymilter cannot turn such a name into str and raises before our code runs; the
    message must still get its end-of-message answer and be inspected."""
    proc = daemon()
    qid = "HDRBAD0001"
    code = good_message(proc, qid, [("From", " alice@example.com"), ("X-\udcff\udcfe", " v"),
                                    ("Subject", " hi")])
    assert code in (b"a", b"c")
    summary = proc.wait_summary(qid)
    assert summary["hdr_from"] == "<alice@example.com>"
    proc.wait_line(r"error: pymilter could not pass a command.*UnicodeDecodeError")


def test_second_instance_refuses_the_socket(daemon: Any) -> None:
    first = daemon()
    before = first.socket_path.stat().st_ino
    second = subprocess.run([str(BIN), "--config", str(first.config_path), "milter",
                             "--log-stderr"], capture_output=True, text=True, timeout=30)
    assert second.returncode == 73
    assert "another postwarden milter (pid " in second.stderr
    assert first.socket_path.stat().st_ino == before  # never removed nor replaced
    qid = "LOCK000001"
    assert good_message(first, qid) in (b"a", b"c")
    first.wait_summary(qid)


def test_sighup_at_any_moment_of_start_up(daemon: Any, dns_server: DnsServer,
                                          e2e_base: Path) -> None:
    """SIGHUP from the first moment Python has a handler (seen in /proc: before the
    heavy imports, the config load and DNS detection), then again during start-up.
    The moments before that, inside the interpreter's own start, are closed by the
    unit's Type=notify: systemd holds a reload until the daemon says READY=1."""
    work = e2e_base / f"hostile-hup-{next(_ids)}"
    proc = MilterProcess(work, work / "pw.sock", settings(dns_server, work,
                                                          f"unix:{work / 'pw.sock'}"))
    for delay in (0.0, 0.05, 0.15, 0.3):
        with open(proc.log_path, "ab") as log:
            p = subprocess.Popen([str(BIN), "--config", str(proc.config_path), "milter",
                                  "--log-stderr"], stdout=log, stderr=log)
        while not _catches_sighup(p.pid):
            assert p.poll() is None
            time.sleep(0.001)
        time.sleep(delay)
        p.send_signal(signal.SIGHUP)
        time.sleep(0.5)
        p.send_signal(signal.SIGHUP)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and p.poll() is None:
            if any("starting:" in line for line in proc.lines()) and \
                    (work / "pw.sock").exists():
                break
            time.sleep(0.05)
        assert p.poll() is None, f"SIGHUP {delay}s after start killed the daemon"
        p.send_signal(signal.SIGTERM)
        assert p.wait(15) == 0
        proc.log_path.write_text("")


def _catches_sighup(pid: int) -> bool:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("SigCgt:"):
            return bool(int(line.split()[1], 16) & (1 << (signal.SIGHUP - 1)))
    return False


NESTED = "x = " + "[" * 3000 + "]" * 3000 + "\n"


@pytest.mark.parametrize("bad, words", [
    (NESTED, "nested too deeply"),
    ({"dkim": {"keys": [{"domain": "example.com", "selector": "s",
                         "key_file": "/etc/\0x"}]}}, "NUL"),
    ({"store": {"path": "/tmp/a\0b.db"}}, "NUL"),
    ({"socket": "unix:/tmp/a\0b.sock"}, "NUL"),
    ({"selfcheck": {"interval": 9223372036854775807}}, "at most"),
    ({"selfcheck": {"startup_delay": float("inf")}}, "finite"),
    ({"dns": {"timeout": float("nan")}}, "finite"),
])
def test_hostile_config_is_refused_by_check_and_by_reload(daemon: Any, bad: Any,
                                                          words: str) -> None:
    proc = daemon()
    if isinstance(bad, str):
        proc.config_path.write_text(bad + proc.config_path.read_text())
    else:
        proc.write_config(deep_merge(proc.settings, bad))
    check = subprocess.run([str(BIN), "--config", str(proc.config_path), "config", "check"],
                           capture_output=True, text=True, timeout=30)
    assert check.returncode == 2, check.stdout + check.stderr
    assert "Traceback" not in check.stderr and words in check.stderr, check.stderr
    proc.hup()
    proc.wait_line(r"error: reload refused, keeping the running config: .*" + words)
    assert proc.proc is not None and proc.proc.poll() is None
    qid = f"HUPBAD{next(_ids):04d}"
    assert good_message(proc, qid) in (b"a", b"c")
    proc.wait_summary(qid)


def test_config_check_refuses_a_fifo(tmp_path: Path) -> None:
    fifo = tmp_path / "postwarden.toml"
    os.mkfifo(fifo)
    check = subprocess.run([str(BIN), "--config", str(fifo), "config", "check"],
                           capture_output=True, text=True, timeout=20)
    assert check.returncode == 2 and "not a regular file" in check.stderr


def test_permission_warnings(tmp_path: Path) -> None:
    key = tmp_path / "dkim.key"
    key.write_text("not a key\n")
    key.chmod(0o620)
    sockdir = tmp_path / "sock"
    sockdir.mkdir()
    sockdir.chmod(0o777)
    cfg_file = tmp_path / "postwarden.toml"
    cfg_file.write_text(f'socket = "unix:{sockdir}/pw.sock"\n'
                        f'[store]\nredis_url = "redis://:s3cret@127.0.0.1:6379/0"\n'
                        f'[selfcheck]\ndkim_key_files = {{ "s._domainkey.example.com" = '
                        f'"{key}" }}\n')
    cfg_file.chmod(0o644)
    check = subprocess.run([str(BIN), "--config", str(cfg_file), "config", "check"],
                           capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stderr
    out = check.stdout
    assert "readable by every user and holds a Redis password" in out
    assert f"DKIM key {key} is writable by its group" in out
    assert f"socket directory {sockdir} is writable by every user" in out
    cfg_file.chmod(0o640)
    key.chmod(0o600)
    sockdir.chmod(0o750)
    quiet = subprocess.run([str(BIN), "--config", str(cfg_file), "config", "check"],
                           capture_output=True, text=True, timeout=20)
    # (the advice on [host] ips, [dns] nameservers and user still applies to this file)
    assert "readable by every user" not in quiet.stdout, quiet.stdout
    assert "is writable by" not in quiet.stdout, quiet.stdout


def test_start_logs_what_config_check_prints(daemon: Any, tmp_path: Path) -> None:
    """One list of config warnings: the daemon logs at start each line `config check`
    prints for the same file (here: user unset, a DKIM key its group can write)."""
    key = tmp_path / "dkim.key"
    key.write_text("not a key\n")
    key.chmod(0o620)
    proc = daemon({"selfcheck": {"dkim_key_files": {"s._domainkey.example.com": str(key)}}})
    check = subprocess.run([str(BIN), "--config", str(proc.config_path), "config", "check"],
                           capture_output=True, text=True, timeout=20)
    assert check.returncode == 0, check.stderr
    printed = [ln.split(": warning: ", 1)[1] for ln in check.stdout.splitlines()
               if ": warning: " in ln]
    assert any(w.startswith("user is unset") for w in printed), printed
    assert f"DKIM key {key} is writable by its group" in " ".join(printed)
    for w in printed:
        proc.wait_line(re.escape(f"warning: {w}"))


def test_store_files_are_private_whatever_the_umask(daemon: Any) -> None:
    old = os.umask(0o022)
    try:
        proc = daemon()
    finally:
        os.umask(old)
    qid = "UMASK00001"
    assert good_message(proc, qid) in (b"a", b"c")
    proc.wait_summary(qid)
    proc.stop()
    db = Path(proc.settings["store"]["path"])
    for f in [db, *db.parent.glob(db.name + "-*")]:
        assert f.stat().st_mode & 0o007 == 0, f"{f} is {oct(f.stat().st_mode)}"


def test_selfcheck_thread_survives_a_huge_interval_value() -> None:
    from postwarden import config

    with pytest.raises(config.ConfigError, match="at most"):
        config.from_dict({"selfcheck": {"interval": 10**12}})



def test_big_bodies_are_bounded_and_returned(daemon: Any) -> None:
    """16 concurrent 8 MiB messages: the daemon keeps at most body_memory of each while
    it arrives and inspects spooled bodies one at a time, then gives the memory back.
    Whole-body buffering grew RSS by 1.6x the bodies at peak and kept 1.4x after
    (bench/body_memory.py)."""
    from harness.bodyload import big_messages

    proc = daemon()
    assert proc.proc is not None
    sessions, size = 16, 8 << 20
    run = big_messages(proc.address, proc.proc.pid, sessions, size)
    total_kib = sessions * size >> 10
    print(f"\nRSS KiB before {run.before_kib} peak {run.peak_kib} after {run.after_kib} "
          f"for {total_kib} KiB of bodies")
    assert run.answered == sessions
    assert run.peak_kib - run.before_kib < 0.75 * total_kib
    assert run.after_kib - run.before_kib < 0.35 * total_kib
    for i in range(sessions):
        assert proc.wait_summary(f"BIG{i:06d}")["origin"] == "submission"


def test_unit_restarts_and_waits_for_ready(daemon: Any, tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    unit = (Path(__file__).resolve().parents[1] / "packaging" / "postwarden.service").read_text()
    assert "Restart=on-failure" in unit and "Type=notify" in unit
    assert "StartLimitBurst=" in unit and "RestartPreventExitStatus=2" in unit
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        path = tmp_path / "notify"
        notify.bind(str(path))
        notify.settimeout(20)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        daemon()
        assert notify.recv(1000).split(b"\n")[0] == b"READY=1"


def test_start_says_when_reload_cannot_work_after_the_privilege_drop(daemon: Any) -> None:
    """Root-only config, user = nobody: SIGHUP would re-read it as nobody. The daemon
    says so once at start (and a reload is refused with a line, never a crash)."""
    if os.geteuid() != 0:
        pytest.fail("this test needs root (the privilege drop)")
    proc = daemon({"user": "nobody", "socket_group": ""})
    proc.config_path.chmod(0o600)
    proc.stop()
    proc.start()
    proc.wait_line(r"warning: after switching to user nobody, .*postwarden\.toml cannot be "
                   r"read: SIGHUP reloads will be refused")
    proc.hup()
    proc.wait_line(r"error: reload refused, keeping the running config: .*cannot read")
    assert proc.proc is not None and proc.proc.poll() is None
