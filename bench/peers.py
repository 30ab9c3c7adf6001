"""The milters the benchmark compares, each a private instance on a unix socket.

Every peer is started by the benchmark with a config written here at run time,
never the system service: the noop pymilter (bench/noop_milter.py), postwarden
(through the test harness), OpenDKIM and dkimpy-milter signing with the same
RSA-2048 key, and rspamd's proxy worker in milter mode with its default modules,
its DNS pointed at the fixture Knot server so nothing it looks up leaves loopback.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import HarnessError, free_port, need
from harness.milter_client import handshake
from harness.milterproc import MilterProcess

BENCH = Path(__file__).resolve().parent
DOMAIN, SELECTOR = "example.com", "bench"


def make_key(directory: Path) -> Path:
    """An RSA-2048 key in traditional PEM (every signer here reads that form)."""
    directory.mkdir(parents=True, exist_ok=True)
    key = directory / "bench.private"
    if not key.exists():
        subprocess.run([need("openssl"), "genrsa", "-traditional", "-out", str(key), "2048"],
                       check=True, capture_output=True)
        os.chmod(key, 0o600)
    return key


def public_key_txt(key: Path) -> str:
    """The `p=` value for the selector's TXT record."""
    der = subprocess.run([need("openssl"), "rsa", "-in", str(key), "-pubout", "-outform", "DER"],
                         check=True, capture_output=True).stdout
    import base64

    return base64.b64encode(der).decode()


def _wait_ready(socket_path: Path, proc: subprocess.Popen[bytes], log: Path,
                timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise HarnessError(f"{proc.args!r} exited {proc.returncode}: "
                               f"{log.read_text(errors='replace')[-2000:]}")
        if socket_path.exists() and handshake(f"unix:{socket_path}"):
            return
        time.sleep(0.05)
    raise HarnessError(f"{proc.args!r} not ready on {socket_path}: "
                       f"{log.read_text(errors='replace')[-2000:]}")


class Peer:
    """A milter process (or tree) on `socket_path`; `spec` is its smtpd_milters entry."""

    name = "peer"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.dir, 0o777)
        self.socket_path = self.dir / f"{self.name}.sock"
        self.log = self.dir / f"{self.name}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def spec(self) -> str:
        return f"{{ unix:{self.socket_path}, default_action=accept }}"

    def command(self) -> list[str]:
        raise NotImplementedError

    def prepare(self) -> None:
        """Write configs before start."""

    def start(self) -> None:
        self.prepare()
        self.socket_path.unlink(missing_ok=True)
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(self.command(), stdout=out, stderr=out, cwd=self.dir,
                                         start_new_session=True)
        _wait_ready(self.socket_path, self.proc, self.log)

    def pids(self) -> list[int]:
        return [self.proc.pid] if self.proc is not None else []

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None


class NoopPeer(Peer):
    name = "noop"

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / "noop_milter.py"), f"unix:{self.socket_path}"]


class CollectPeer(Peer):
    name = "noop-collect"

    def command(self) -> list[str]:
        return [sys.executable, str(BENCH / "noop_milter.py"), "--collect",
                f"unix:{self.socket_path}"]


class PostwardenPeer(Peer):
    """postwarden through the harness's MilterProcess (the same one the e2e tests use)."""

    def __init__(self, directory: Path, name: str, settings: dict[str, Any]) -> None:
        self.name = name
        super().__init__(directory)
        settings = dict(settings, socket=f"unix:{self.socket_path}")
        self.milter = MilterProcess(directory, self.socket_path, settings)

    def start(self) -> None:
        self.milter.start(timeout=30)

    def pids(self) -> list[int]:
        return [self.milter.proc.pid] if self.milter.proc is not None else []

    def stop(self) -> None:
        self.milter.stop()


class OpenDkimPeer(Peer):
    name = "opendkim"

    def __init__(self, directory: Path, key: Path) -> None:
        super().__init__(directory)
        self.key = key

    def prepare(self) -> None:
        (self.dir / "opendkim.conf").write_text(
            f"Socket local:{self.socket_path}\nUMask 000\nMode s\nSyslog no\n"
            f"Domain {DOMAIN}\nSelector {SELECTOR}\nKeyFile {self.key}\n"
            "Canonicalization relaxed/relaxed\nSignatureAlgorithm rsa-sha256\n"
            "InternalHosts 127.0.0.0/8\nOversignHeaders From\nRequireSafeKeys false\n"
            f"PidFile {self.dir}/opendkim.pid\n")

    def command(self) -> list[str]:
        return [need("opendkim"), "-f", "-x", str(self.dir / "opendkim.conf")]


class DkimpyPeer(Peer):
    name = "dkimpy-milter"

    def __init__(self, directory: Path, key: Path) -> None:
        super().__init__(directory)
        self.key = self.dir / "bench.private"
        shutil.copy(key, self.key)
        shutil.chown(self.key, "dkimpy-milter", "dkimpy-milter")
        os.chmod(self.key, 0o600)

    def prepare(self) -> None:
        (self.dir / "dkimpy-milter.conf").write_text(
            f"Syslog no\nUMask 0\nSocket local:{self.socket_path}\nMode s\n"
            f"Domain {DOMAIN}\nSelector {SELECTOR}\nKeyFile {self.key}\n"
            "Canonicalization relaxed/relaxed\nInternalHosts 127.0.0.0/8\n"
            "UserID dkimpy-milter\n")

    def command(self) -> list[str]:
        # the system interpreter: dkimpy-milter is Debian's, with Debian's pymilter
        return ["/usr/bin/python3", need("dkimpy-milter"), str(self.dir / "dkimpy-milter.conf")]


class RspamdPeer(Peer):
    """rspamd proxy (milter = yes) -> one normal worker, default modules, no Redis."""

    name = "rspamd"

    def __init__(self, directory: Path, dns_port: int) -> None:
        super().__init__(directory)
        self.dns_port = dns_port
        self.normal_port, self.controller_port = free_port(), free_port()

    def prepare(self) -> None:
        local = self.dir / "local.d"
        local.mkdir(exist_ok=True)
        (self.dir / "override.d").mkdir(exist_ok=True)
        for sub in ("db", "run", "log"):
            (self.dir / sub).mkdir(exist_ok=True)
            shutil.chown(self.dir / sub, "_rspamd", "_rspamd")
        (local / "options.inc").write_text(
            f'dns {{ nameserver = ["127.0.0.1:{self.dns_port}"]; timeout = 1s; '
            "retransmits = 1; }\n")
        (local / "logging.inc").write_text(f'type = "file"; filename = "{self.dir}/log/rspamd.log";'
                                           ' level = "error";\n')
        (local / "worker-normal.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.normal_port}";\ncount = 1;\n')
        (local / "worker-controller.inc").write_text(
            f'bind_socket = "127.0.0.1:{self.controller_port}";\n')
        (local / "worker-proxy.inc").write_text(
            f'bind_socket = "{self.socket_path} mode=0666 owner=_rspamd";\nmilter = yes;\n'
            f'upstream "local" {{ default = yes; self_scan = no; '
            f'hosts = "127.0.0.1:{self.normal_port}"; }}\n')
        (local / "fuzzy_check.conf").write_text("enabled = false;\n")
        # rspamd's default config binds its "normal" and "controller" workers inside
        # rspamd.conf itself; local.d/worker-*.inc (merged at priority 1) rebinds them.
        # The proxy needs a directory _rspamd can create its socket in.
        os.chmod(self.dir, 0o777)

    def command(self) -> list[str]:
        return [need("rspamd"), "-f", "-c", "/etc/rspamd/rspamd.conf", "-u", "_rspamd",
                "-g", "_rspamd", "-p", str(self.dir / "run" / "rspamd.pid"),
                f"--var=LOCAL_CONFDIR={self.dir}", f"--var=DBDIR={self.dir}/db",
                f"--var=RUNDIR={self.dir}/run", f"--var=LOGDIR={self.dir}/log"]
