"""A real redis-server on a loopback port, no persistence."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
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


def _wait(check: Callable[[], bool], what: str, log: Path, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError):
            pass
        time.sleep(0.1)
    raise HarnessError(f"{what}: " + (log.read_text()[-2000:] if log.exists() else ""))


class RedisNode:
    """One redis-server process with extra arguments, restartable on the same port."""

    def __init__(self, directory: Path, name: str, extra: list[str]) -> None:
        self.dir = directory
        self.name = name
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.dir / f"{self.name}.log"

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [need("redis-server"), "--port", str(self.port), "--bind", "127.0.0.1",
                 "--save", "", "--appendonly", "no", "--dir", str(self.dir),
                 "--logfile", "", *self.extra], stdout=log, stderr=log)

        def up() -> bool:
            with redis.Redis(port=self.port, socket_timeout=0.5) as c:
                return bool(c.ping())
        _wait(up, f"redis-server {self.name} did not start", self.log, 10)

    def stop(self) -> None:
        stop_process(self.proc)
        self.proc = None

    def kill(self) -> None:
        """Gone at once, as a crashed host would be (no shutdown handshake)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


class RedisCluster:
    """Three masters (no replicas) on loopback, created with `redis-cli --cluster create`."""

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.nodes = []
        for i in range(masters):
            bus = free_port()
            self.nodes.append(RedisNode(self.dir, f"node{i}", [
                "--cluster-enabled", "yes", "--cluster-port", str(bus),
                "--cluster-config-file", str(self.dir / f"nodes-{i}.conf"),
                "--cluster-node-timeout", "2000"]))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in self.nodes)

    def start(self) -> None:
        for n in self.nodes:
            n.start()
        log = self.dir / "create.log"
        with open(log, "ab") as out:
            rc = subprocess.call(
                [need("redis-cli"), "--cluster", "create",
                 *(f"127.0.0.1:{n.port}" for n in self.nodes), "--cluster-yes"],
                stdout=out, stderr=out)
        if rc != 0:
            raise HarnessError("redis-cli --cluster create failed: " + log.read_text()[-2000:])
        self.wait_ok()

    def wait_ok(self) -> None:
        def ok() -> bool:
            for n in self.nodes:
                with n.client() as c:
                    if c.cluster("info").get("cluster_state") != "ok":  # type: ignore[union-attr]
                        return False
            return True
        _wait(ok, "cluster did not reach state ok", self.dir / "create.log")

    def stop(self) -> None:
        for n in self.nodes:
            n.stop()

    def flush(self) -> None:
        for n in self.nodes:
            with n.client() as c:
                c.flushall()


class RedisSentinel:
    """A primary, its replica and one sentinel watching them as service `pw` (quorum 1,
    so a failover needs nothing but that sentinel)."""

    service = "pw"

    def __init__(self, directory: Path) -> None:
        self.dir = directory
        self.dir.mkdir(parents=True, exist_ok=True)
        self.primary = RedisNode(self.dir, "primary", [])
        self.replica = RedisNode(self.dir, "replica", [])
        self.sentinel_port = free_port()
        self.sentinel_proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.service}/0"

    def start(self) -> None:
        self.primary.start()
        self.replica.extra = ["--replicaof", "127.0.0.1", str(self.primary.port)]
        self.replica.start()
        conf = self.dir / "sentinel.conf"
        conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\ndir {self.dir}\n"
            f"sentinel monitor {self.service} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.service} 1000\n"
            f"sentinel failover-timeout {self.service} 4000\n")
        log = self.dir / "sentinel.log"
        with open(log, "ab") as out:
            self.sentinel_proc = subprocess.Popen(
                [need("redis-sentinel"), str(conf)], stdout=out, stderr=out)

        def ready() -> bool:
            with redis.Redis(port=self.sentinel_port, socket_timeout=0.5) as s:
                replicas = s.sentinel_slaves(self.service)
                return any("s_down" not in str(r.get("flags", ""))
                           and r.get("master-link-status") == "ok" for r in replicas)
        _wait(ready, "sentinel did not see the replica", log)

    def failover(self, timeout: float = 30) -> None:
        """SENTINEL FAILOVER, retried while the sentinel does not yet trust the replica
        (NOGOODSLAVE: it refreshes what it knows about replicas every 10 s)."""
        deadline = time.monotonic() + timeout
        with redis.Redis(port=self.sentinel_port, socket_timeout=2) as s:
            while True:
                try:
                    s.execute_command("SENTINEL", "FAILOVER", self.service)
                    return
                except redis.ResponseError as e:
                    if "NOGOODSLAVE" not in str(e) or time.monotonic() > deadline:
                        raise
                    time.sleep(0.5)

    def current_primary_port(self) -> int:
        with redis.Redis(port=self.sentinel_port, socket_timeout=1) as s:
            return int(s.sentinel_get_master_addr_by_name(self.service)[1])

    def stop(self) -> None:
        stop_process(self.sentinel_proc)
        self.sentinel_proc = None
        self.primary.stop()
        self.replica.stop()
