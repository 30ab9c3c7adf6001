"""End-to-end harness: private Postfix, Knot DNS, SMTP sink, Dovecot SASL, Redis, PHP.

Everything runs on loopback, started and stopped by pytest fixtures (tests/conftest.py).
A missing binary raises HarnessError: the suite fails loudly, it never skips.
"""

from __future__ import annotations

import shutil
import socket
import subprocess


class HarnessError(RuntimeError):
    pass


def need(binary: str) -> str:
    """Path of a required system binary, or a loud failure naming the apt package."""
    path = shutil.which(binary) or shutil.which(binary, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path is None:
        raise HarnessError(f"required program {binary!r} not found: run .ci/run or "
                           "`make deps` to install the Debian packages")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop_process(proc: subprocess.Popen[bytes] | None, timeout: float = 10) -> None:
    """SIGTERM, then SIGKILL if it does not exit in time; always reaped."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
