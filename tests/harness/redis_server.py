"""A real redis-server on a loopback port, no persistence."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path

import redis

from harness import HarnessError, free_port, need, stop_process


class RedisServer:
    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        with open(self.dir / "redis.log", "ab") as log:
            self.proc = subprocess.Popen(
                [need("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir)],
                stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with redis.Redis(port=self.port, socket_timeout=0.5) as client:
                    client.ping()
                return
            except redis.RedisError:
                if self.proc.poll() is not None:
                    break
                time.sleep(0.05)
        raise HarnessError("redis-server did not start: "
                           + (self.dir / "redis.log").read_text()[-2000:])

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def flush(self) -> None:
        with redis.Redis(port=self.port) as client:
            client.flushall()
