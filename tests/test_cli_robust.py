"""The CLI as an operator uses it: output into a pipe that closes early, Ctrl-C in the
middle of a self-check, --prometheus into a directory that does not exist. Real
processes of the installed `postwarden` command; DNS is a loopback socket that never
answers (a resolver that times out), so nothing leaves the machine."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.milterproc import BIN, toml_dumps
from postwarden.store.sqlite_store import SqliteStore


@pytest.fixture
def silent_dns() -> Iterator[int]:
    """A UDP port on loopback that swallows every query."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind(("127.0.0.1", 0))
    yield s.getsockname()[1]
    s.close()


def write_config(tmp_path: Path, dns_port: int, timeout: float) -> Path:
    settings: dict[str, Any] = {
        "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                 "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": timeout},
        "store": {"backend": "sqlite", "path": str(tmp_path / "state.db")},
        "selfcheck": {"query_timeout": timeout, "run_timeout": 4 * timeout,
                      "periodic": False, "postfix_config_dir": str(tmp_path / "nopostfix")},
    }
    path = tmp_path / "postwarden.toml"
    path.write_text(toml_dumps(settings))
    SqliteStore(tmp_path / "state.db").close()  # as the milter leaves it: status reads it
    return path


def run_closed_stdout(args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """Like `postwarden ... | head -0`: the reader is gone before the first write."""
    proc = subprocess.Popen([str(BIN), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    proc.stdout.close()
    with proc.stderr:
        err = proc.stderr.read()
    rc = proc.wait(timeout=120)
    return subprocess.CompletedProcess(args, rc, b"", err)


@pytest.mark.parametrize("command", [["status"], ["status", "--json"], ["config", "check"]])
def test_closed_stdout_exits_quietly_with_the_commands_status(
        tmp_path: Path, silent_dns: int, command: list[str]) -> None:
    cfg = write_config(tmp_path, silent_dns, 0.3)
    r = run_closed_stdout(["--config", str(cfg), *command])
    assert b"Traceback" not in r.stderr and b"BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode == 0


def test_closed_stdout_selfcheck(tmp_path: Path, silent_dns: int) -> None:
    cfg = write_config(tmp_path, silent_dns, 0.3)
    r = run_closed_stdout(["--config", str(cfg), "selfcheck", "--only", "rdns",
                           "--no-record"])
    assert b"Traceback" not in r.stderr and b"BrokenPipe" not in r.stderr, r.stderr
    assert r.returncode == 3  # the reverse DNS is unknown: the resolver never answers


def test_sigint_ends_selfcheck_at_once(tmp_path: Path, silent_dns: int) -> None:
    # every query waits 5 minutes: an exit that waited for the pending queries would
    # still be running long after the wait below gives up
    cfg = write_config(tmp_path, silent_dns, 300.0)
    proc = subprocess.Popen([str(BIN), "--config", str(cfg), "selfcheck", "--no-record"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    time.sleep(2.0)  # well inside the first queries
    assert proc.poll() is None
    proc.send_signal(signal.SIGINT)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise AssertionError("SIGINT did not end the self-check: it waited for the DNS "
                             "timeouts") from None
    assert proc.returncode == 130, err
    assert b"interrupted" in err and b"Traceback" not in err


def test_prometheus_into_missing_directory(tmp_path: Path, silent_dns: int) -> None:
    cfg = write_config(tmp_path, silent_dns, 0.3)
    target = tmp_path / "no" / "such" / "dir" / "postwarden.prom"
    r = subprocess.run([str(BIN), "--config", str(cfg), "selfcheck", "--only", "rdns",
                        "--no-record", "--prometheus", str(target)],
                       capture_output=True, timeout=120)
    assert b"Traceback" not in r.stderr
    assert b"cannot write --prometheus" in r.stderr and b"create the directory" in r.stderr
    assert r.stdout.startswith(b"postwarden selfcheck: ")  # the report is not lost
    assert r.returncode == 3
    assert not target.parent.exists()  # not created behind the admin's back
    # and into a directory that exists: written whole, no temp file left behind
    target.parent.mkdir(parents=True)
    r = subprocess.run([str(BIN), "--config", str(cfg), "selfcheck", "--only", "rdns",
                        "--no-record", "--prometheus", str(target)],
                       capture_output=True, timeout=120)
    assert b"postwarden_selfcheck_exit_code 3" in target.read_bytes()
    assert [p.name for p in target.parent.iterdir()] == ["postwarden.prom"]
