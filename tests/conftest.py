"""Fixtures: the real parts every end-to-end test stands on (see tests/harness/)."""

from __future__ import annotations

import io
import itertools
import os
import shutil
import tempfile
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol, TypeVar

import pytest

from harness.knot import DnsServer
from harness.milterproc import MilterProcess, deep_merge
from harness.postfix import Postfix
from harness.redis_server import RedisCluster, RedisSentinel, RedisServer
from harness.sasl import Dovecot
from harness.sink import Sink
from postwarden.log import log

SASL_USERS = {"alice": "alice-secret", "forms": "forms-secret"}
HOST_IP = "192.0.2.25"


class _Server(Protocol):
    def start(self) -> object: ...
    def stop(self) -> object: ...


S = TypeVar("S", bound=_Server)


def running(server: S) -> Iterator[S]:
    """Start `server` and yield it; stopped afterwards, also when it failed half way
    through starting (a cluster with some nodes up)."""
    try:
        server.start()
        yield server
    finally:
        server.stop()


@pytest.fixture
def logbuf(monkeypatch: pytest.MonkeyPatch) -> Iterator[io.StringIO]:
    """postwarden's log lines, in a buffer, with the repeat limiter's memory fresh."""
    buf = io.StringIO()
    monkeypatch.setattr(log, "_seen", OrderedDict())
    log.setup("stderr", stream=buf, repeat_interval=600)
    yield buf
    log.setup("stderr", stream=io.StringIO())


@pytest.fixture(scope="session")
def e2e_base() -> Iterator[Path]:
    """A directory user postfix can traverse (pytest's own tmp dirs are 0700)."""
    base = Path(tempfile.mkdtemp(prefix="postwarden-e2e-"))
    os.chmod(base, 0o755)
    yield base
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="session")
def dns_server(e2e_base: Path) -> Iterator[DnsServer]:
    yield from running(DnsServer(e2e_base / "knot"))


@pytest.fixture(scope="session")
def _sink() -> Iterator[Sink]:
    s = Sink()
    s.start()
    yield s
    s.stop()


@pytest.fixture
def sink(_sink: Sink) -> Sink:
    _sink.clear()
    return _sink


@pytest.fixture(scope="session")
def postfix(e2e_base: Path, _sink: Sink) -> Iterator[Postfix]:
    pf = Postfix(e2e_base / "postfix", _sink.port)
    pf.start()
    sasl = Dovecot(e2e_base / "dovecot", pf.queue / "private" / "auth", SASL_USERS)
    sasl.start()
    yield pf
    sasl.stop()
    pf.stop()


_counter = itertools.count()


def base_settings(postfix: Postfix, dns_server: DnsServer, workdir: Path) -> dict[str, Any]:
    return {
        "socket": f"unix:{postfix.milter_socket}",
        "mode": "monitor",
        "outbound": {"internal_networks": []},
        "host": {"ips": [HOST_IP], "hostname": "mail.example.com", "domains": ["example.com"]},
        "dns": {"nameservers": ["127.0.0.1"], "port": dns_server.port, "timeout": 1.0},
        "store": {"backend": "sqlite", "path": str(workdir / "state.db")},
        "log": {"target": "stderr", "repeat_interval": 600},
    }


@pytest.fixture
def start_milter(postfix: Postfix, dns_server: DnsServer,
                 e2e_base: Path) -> Iterator[Callable[..., MilterProcess]]:
    """start_milter(settings_overrides) -> a running postwarden on the Postfix socket."""
    started: list[MilterProcess] = []

    def start(overrides: dict[str, Any] | None = None) -> MilterProcess:
        workdir = e2e_base / f"milter-{next(_counter)}"
        settings = deep_merge(base_settings(postfix, dns_server, workdir), overrides or {})
        proc = MilterProcess(workdir, postfix.milter_socket, settings)
        proc.start()
        started.append(proc)
        return proc

    yield start
    for p in started:
        p.stop()


@pytest.fixture(scope="session")
def redis_server(e2e_base: Path) -> Iterator[RedisServer]:
    yield from running(RedisServer(e2e_base / "redis"))


@pytest.fixture(scope="session")
def redis_cluster(e2e_base: Path) -> Iterator[RedisCluster]:
    """A 3-master Redis Cluster on loopback, shared by the session (tests that kill a
    node take own_cluster)."""
    yield from running(RedisCluster(e2e_base / "redis-cluster"))


@pytest.fixture(scope="session")
def redis_sentinel(e2e_base: Path) -> Iterator[RedisSentinel]:
    """A Sentinel-managed primary/replica pair on loopback, shared by the session."""
    yield from running(RedisSentinel(e2e_base / "redis-sentinel"))


@pytest.fixture
def own_cluster(e2e_base: Path) -> Iterator[RedisCluster]:
    """A Redis Cluster of this test's own, for tests that kill its nodes."""
    yield from running(RedisCluster(e2e_base / f"cluster-{uuid.uuid4().hex[:6]}"))


@pytest.fixture
def own_pair(e2e_base: Path) -> Iterator[RedisSentinel]:
    """A Sentinel-managed pair of this test's own, for tests that fail it over."""
    yield from running(RedisSentinel(e2e_base / f"sentinel-{uuid.uuid4().hex[:6]}"))


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests of the installed .deb run only when asked for by marker (`make deb-check`):
    they need the package installed and change the system."""
    if "deb" in (config.getoption("markexpr") or ""):
        return
    deb = [item for item in items if item.get_closest_marker("deb")]
    if deb:
        config.hook.pytest_deselected(items=deb)
        items[:] = [item for item in items if not item.get_closest_marker("deb")]


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print each public suite's pass/total (tests/suites.py) after pytest's summary."""
    import suites

    rows = suites.lines()
    if rows:
        terminalreporter.section("public test suites")
        for row in rows:
            terminalreporter.write_line(row)
