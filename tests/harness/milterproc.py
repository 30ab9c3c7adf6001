"""A `postwarden milter` subprocess with a test config, and readers for its log."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from harness import HarnessError
from harness.milter_client import handshake

BIN = Path(sys.executable).parent / "postwarden"


def toml_dumps(data: dict[str, Any]) -> str:
    """Just enough TOML for test configs: scalars, lists, inline tables in lists,
    and nested dicts as [section] tables."""

    def key(k: str) -> str:
        return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else val(k)

    def val(v: Any) -> str:
        if isinstance(v, bool):
            return "true" if v else "false"
        if isinstance(v, int | float):
            return repr(v)
        if isinstance(v, str):
            text = v.replace("\\", "\\\\").replace('"', '\\"')
            return '"' + re.sub(r"[\x00-\x1f\x7f]", lambda m: f"\\u{ord(m[0]):04x}", text) + '"'
        if isinstance(v, list):
            return "[" + ", ".join(val(x) for x in v) + "]"
        if isinstance(v, dict):
            return "{ " + ", ".join(f"{key(k)} = {val(x)}" for k, x in v.items()) + " }"
        raise TypeError(v)

    out: list[str] = []

    def table(prefix: str, d: dict[str, Any]) -> None:
        if prefix:
            out.append(f"[{prefix}]")
        for k, v in d.items():
            if not isinstance(v, dict):
                out.append(f"{key(k)} = {val(v)}")
        out.append("")
        for k, v in d.items():
            if isinstance(v, dict):
                table(f"{prefix}.{key(k)}" if prefix else key(k), v)

    table("", data)
    return "\n".join(out)


def standalone_settings(dns_port: int, work: Path, socket: str) -> dict[str, Any]:
    """A daemon on its own socket (no Postfix): fixture DNS on `dns_port`, SQLite in
    `work`, no periodic self-check, short DNS limits for hostile-input tests."""
    return {
        "socket": socket,
        "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                 "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_port, "timeout": 0.5,
                "message_budget": 1.0},
        "store": {"path": str(work / "state.db")},
        "log": {"target": "stderr"},
        "selfcheck": {"periodic": False},
    }


def deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


class MilterProcess:
    def __init__(self, workdir: Path, socket_path: Path, settings: dict[str, Any]) -> None:
        self.dir = workdir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.socket_path = socket_path
        self.settings = settings
        self.config_path = self.dir / "postwarden.toml"
        self.log_path = self.dir / "postwarden.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.wrapper: list[str] = []  # e.g. ["faketime", "-f", "+10m"]: a skewed clock
        self.write_config(settings)

    def write_config(self, settings: dict[str, Any]) -> None:
        self.settings = settings
        self.config_path.write_text(toml_dumps(settings))

    def start(self, timeout: float = 15.0) -> None:
        with open(self.log_path, "ab") as log:
            env = dict(os.environ, PYTHONUNBUFFERED="1")
            # its own process group: a wrapper (faketime) runs the daemon as its child,
            # and stop() must not leave that child running after the test
            self.proc = subprocess.Popen([*self.wrapper, str(BIN), "--config",
                                          str(self.config_path), "milter", "--log-stderr"],
                                         stdout=log, stderr=log, env=env, cwd="/",
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise HarnessError(f"postwarden exited {self.proc.returncode}: "
                                   f"{self.log_path.read_text()[-3000:]}")
            if handshake(self.address):
                return
            time.sleep(0.05)
        self.kill()  # a half-started daemon would hold the socket's lock for the next test
        raise HarnessError(f"postwarden not ready after {timeout:.0f} s: "
                           f"{self.log_path.read_text()[-3000:]}")

    @property
    def address(self) -> str:
        """The socket the daemon listens on, as the milter client takes it."""
        spec = str(self.settings.get("socket", ""))
        return spec if spec.startswith("inet:") else f"unix:{self.socket_path}"

    def stop(self) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        rc = self.proc.returncode
        self._kill_group(self.proc.pid)
        self.proc = None
        return rc

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self._kill_group(self.proc.pid)
            self.proc = None

    @staticmethod
    def _kill_group(pgid: int) -> None:
        """Whatever the daemon's process group still holds (a wrapper's child)."""
        try:
            os.killpg(pgid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass

    def hup(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def lines(self) -> list[str]:
        try:
            return self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return []

    def wait_line(self, pattern: str, timeout: float = 20.0) -> str:
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.lines():
                if rx.search(line):
                    return line
            time.sleep(0.05)
        raise AssertionError(f"no log line matching {pattern!r}; log:\n"
                             + "\n".join(self.lines()[-30:]))

    def summaries(self, queue_id: str) -> list[dict[str, str]]:
        """Parsed summary lines (the ones with origin=) for one queue ID."""
        out = []
        for line in self.lines():
            m = re.match(r"postwarden\[\d+\]: (\S+): (origin=.*)$", line)
            if m and m.group(1) == queue_id:
                out.append(parse_kv(m.group(2)))
        return out

    def wait_summary(self, queue_id: str, timeout: float = 20.0) -> dict[str, str]:
        self.wait_line(rf"\]: {re.escape(queue_id)}: origin=", timeout)
        return self.summaries(queue_id)[-1]


def parse_kv(text: str) -> dict[str, str]:
    return dict(m.groups() for m in re.finditer(r"(\w+)=(<[^>]*>|\S+)", text))
