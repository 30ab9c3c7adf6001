"""Postfix's own smtp-sink as the relay target: counts messages, keeps nothing.

`-c` makes smtp-sink print a running `mesg=N` counter on every completed DATA;
a reader thread follows it, so the benchmark can wait for "N more messages"
without a Python SMTP server in the measured path. With `dump` set, smtp-sink
appends every message to that file (the smoke test reads it).
"""

from __future__ import annotations

import re
import subprocess
import threading
import time
from pathlib import Path

from harness import HarnessError, free_port, need

_COUNT = re.compile(rb"mesg=(\d+)")


class SmtpSink:
    def __init__(self, dump: Path | None = None) -> None:
        self.port = free_port()
        self.dump = dump
        self.count = 0
        self.cond = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        cmd = [need("smtp-sink"), "-c", "-u", "nobody"]
        if self.dump is not None:
            self.dump.parent.chmod(0o777)
            cmd += ["-D", str(self.dump)]
        self.proc = subprocess.Popen([*cmd, f"127.0.0.1:{self.port}", "256"],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        threading.Thread(target=self._follow, name="smtp-sink", daemon=True).start()
        time.sleep(0.2)
        if self.proc.poll() is not None:
            raise HarnessError(f"smtp-sink exited {self.proc.returncode}")

    def _follow(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        tail = b""
        while True:
            chunk = self.proc.stdout.read1(65536)
            if not chunk:
                return
            tail = (tail + chunk)[-200:]
            counts = _COUNT.findall(tail)
            if counts:
                with self.cond:
                    self.count = max(self.count, int(counts[-1]))
                    self.cond.notify_all()

    def wait_for(self, n: int, timeout: float) -> float:
        """Block until the sink has counted `n` messages in total; monotonic time then."""
        deadline = time.monotonic() + timeout
        with self.cond:
            while self.count < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise HarnessError(f"smtp-sink has {self.count} messages, waited for {n}")
                if self.proc is not None and self.proc.poll() is not None:
                    raise HarnessError(f"smtp-sink exited {self.proc.returncode} after "
                                       f"{self.count} messages (can user nobody write "
                                       f"{self.dump}?)")
                self.cond.wait(min(left, 0.5))
            return time.monotonic()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)
        self.proc = None
