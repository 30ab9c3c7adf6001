"""The installed Debian package, run as its systemd unit would run it.

Run by `make deb-check` (packaging/deb-check) after `apt-get install ./postwarden_*.deb`
on a machine without systemd as PID 1: the daemon is started with the unit's
ExecStartPre/ExecStart command lines, as the unit's User= and Group=, with its
UMask=, and signals readiness on a NOTIFY_SOCKET of our own. A private Postfix,
wired by `postwarden postfix-setup --apply`, sends one local message through it.
Plain `make test` deselects these tests (tests/conftest.py): they need root and
change the system (the package's config file, its state directory).
"""

from __future__ import annotations

import os
import pwd
import re
import shlex
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import HarnessError, need
from harness.knot import DnsServer
from harness.milterproc import parse_kv, toml_dumps
from harness.postfix import EXAMPLES, Postfix
from harness.sink import Sink

pytestmark = pytest.mark.deb

UNIT = Path("/lib/systemd/system/postwarden.service")
CONFIG = Path("/etc/postwarden/postwarden.toml")
SOCKET_DIR = Path("/var/spool/postfix/postwarden")
VERSION_RX = r"\d+\.\d+\.\d+"


def unit_settings(path: Path) -> dict[str, list[str]]:
    """Key -> values of a unit file's [Service] section (repeated keys kept in order)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line
            continue
        if section == "[Service]":
            k, _, v = line.partition("=")
            out.setdefault(k.strip(), []).append(v.strip())
    return out


def as_unit_user(service: dict[str, list[str]], command: str) -> list[str]:
    """The command line as systemd runs it for User=/Group= (no PID 1 here)."""
    argv = shlex.split(command.lstrip("-@:+!"))
    return [need("setpriv"), f"--reuid={service['User'][0]}", f"--regid={service['Group'][0]}",
            "--init-groups", "--no-new-privs", "--", *argv]


@pytest.fixture(scope="module")
def installed() -> None:
    r = subprocess.run(["dpkg-query", "-W", "-f=${Status}", "postwarden"],
                       capture_output=True, text=True)
    if "install ok installed" not in r.stdout or not UNIT.exists():
        raise HarnessError("the postwarden package is not installed: run `make deb-check`")


@pytest.fixture(scope="module")
def plain_postfix(installed: None, e2e_base: Path, _sink: Sink) -> Iterator[Postfix]:
    """A private Postfix without the example lines, its queue's postwarden/ being
    the package's socket directory (a symlink: the instance runs chroot-less)."""
    pf = Postfix(e2e_base / "deb-postfix", _sink.port, examples=False)
    pf.write_config()
    (pf.queue / "postwarden").symlink_to(SOCKET_DIR)
    yield pf
    pf.stop()


@pytest.fixture
def notify_socket() -> Iterator[tuple[socket.socket, str]]:
    d = Path(tempfile.mkdtemp(prefix="postwarden-notify-"))
    os.chmod(d, 0o755)
    path = str(d / "notify")
    s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    s.bind(path)
    os.chmod(path, 0o666)  # the daemon runs as postwarden, like systemd's own socket
    yield s, path
    s.close()
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def package_config(installed: None) -> Iterator[Path]:
    """The conffile, restored afterwards (rewritten in place: owner and mode stay)."""
    original = CONFIG.read_bytes()
    yield CONFIG
    CONFIG.write_bytes(original)


def recv_states(s: socket.socket, want: str, timeout: float) -> list[str]:
    """Notification datagrams until one carries `want`."""
    got: list[str] = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        s.settimeout(max(0.1, deadline - time.monotonic()))
        try:
            got.append(s.recv(4096).decode())
        except TimeoutError:
            break
        if any(want in line.split("\n") for line in got):
            return got
    raise AssertionError(f"no {want} on NOTIFY_SOCKET; got {got!r}")


def test_postfix_setup_prints_applies_and_is_idempotent(plain_postfix: Postfix) -> None:
    conf = str(plain_postfix.conf)
    before = (plain_postfix.conf / "main.cf").read_text()
    dry = subprocess.run(["/usr/bin/postwarden", "postfix-setup", "-c", conf],
                         capture_output=True, text=True, check=True).stdout
    assert f"postconf -c {conf} -e 'smtpd_milters=" in dry
    assert (plain_postfix.conf / "main.cf").read_text() == before  # printing changes nothing

    applied = subprocess.run(["/usr/bin/postwarden", "postfix-setup", "-c", conf, "--apply"],
                             capture_output=True, text=True, check=True).stdout
    backups = sorted(plain_postfix.conf.glob("main.cf.postwarden-*"))
    assert len(backups) == 1 and backups[0].read_text() == before
    assert "no submission service" in applied  # never added without --submission
    example = {}
    for line in (EXAMPLES / "main.cf").read_text().splitlines():
        if line and not line.startswith("#"):
            k, _, v = line.partition("=")
            example[k.strip()] = v.strip()
    for key, value in example.items():
        assert plain_postfix.postconf("-h", key).strip() == value

    again = subprocess.run(["/usr/bin/postwarden", "postfix-setup", "-c", conf, "--apply"],
                           capture_output=True, text=True, check=True).stdout
    assert "nothing to change" in again
    assert len(list(plain_postfix.conf.glob("main.cf.postwarden-*"))) == 1


def test_daemon_runs_as_the_unit_and_inspects_mail_from_postfix(
        plain_postfix: Postfix, package_config: Path, dns_server: DnsServer, _sink: Sink,
        notify_socket: tuple[socket.socket, str], e2e_base: Path) -> None:
    if not plain_postfix.postconf("-h", "smtpd_milters").strip().startswith("{ unix:postwarden"):
        subprocess.run(["/usr/bin/postwarden", "postfix-setup", "-c", str(plain_postfix.conf),
                        "--apply"], check=True, capture_output=True)
    plain_postfix.start(write=False)
    _sink.clear()

    # The admin's config edit: [host] and a resolver; logging to stderr (no syslog
    # daemon here). Socket and store stay at the package's defaults.
    package_config.write_text(toml_dumps({
        "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                 "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1.0},
        "log": {"target": "stderr"},
        "selfcheck": {"periodic": False},
    }))
    # A fresh store: earlier runs' messages would count against the rate limits.
    for old in Path("/var/lib/postwarden").glob("postwarden.db*"):
        old.unlink()
    service = unit_settings(UNIT)
    assert service["Type"] == ["notify"]
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
    for pre in service["ExecStartPre"]:
        r = subprocess.run(as_unit_user(service, pre), env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr

    sock, path = notify_socket
    log_path = e2e_base / "deb-daemon.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(as_unit_user(service, service["ExecStart"][0]),
                                env=dict(env, NOTIFY_SOCKET=path), stdout=log, stderr=log,
                                umask=int(service["UMask"][0], 8))
    try:
        states = recv_states(sock, "READY=1", 30)
        milter_socket = SOCKET_DIR / "postwarden.sock"
        # Ready means listening: a connection succeeds at once.
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.connect(str(milter_socket))
        st = milter_socket.stat()
        assert pwd.getpwuid(st.st_uid).pw_name == "postwarden"
        assert st.st_mode & 0o777 == 0o660
        status = Path(f"/proc/{proc.pid}/status").read_text()
        uid = int(re.search(r"^Uid:\s+(\d+)", status, re.M).group(1))  # type: ignore[union-attr]
        assert pwd.getpwuid(uid).pw_name == "postwarden"
        assert any(f"MAINPID={proc.pid}" in s for s in states)
        text = log_path.read_text()
        assert re.search(rf"starting postwarden {VERSION_RX}: mode=monitor, "
                         rf"socket=unix:{milter_socket}, store=sqlite", text), text

        msgid = "deb-check-1@example.com"
        data = (f"From: Web <www-data@example.com>\r\nTo: bob@example.net\r\n"
                f"Subject: deb check\r\nMessage-ID: <{msgid}>\r\n\r\nhello\r\n").encode()
        plain_postfix.sendmail(data, "www-data@example.com", ["bob@example.net"])
        qid = plain_postfix.queue_id_for(msgid)
        deadline = time.monotonic() + 30
        summary: dict[str, str] = {}
        while time.monotonic() < deadline and not summary:
            for line in log_path.read_text().splitlines():
                m = re.search(rf"\]: {qid}: (origin=.*)$", line)
                if m:
                    summary = parse_kv(m.group(1))
            time.sleep(0.1)
        assert summary.get("origin") == "local", log_path.read_text()
        assert summary.get("action") == "accept", summary
        _sink.wait_for(1)

        proc.send_signal(signal.SIGHUP)  # ExecReload's signal
        recv_states(sock, "READY=1", 20)
        assert "reloaded: mode=monitor" in log_path.read_text()
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            rc = proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise AssertionError("no exit 20 s after SIGTERM:\n"
                                 + log_path.read_text()[-3000:]) from None
    assert rc == 0
    text = log_path.read_text()
    assert "stopped after 1 messages" in text, text
    assert Path("/var/lib/postwarden/postwarden.db").exists()  # the package's state dir
