"""One fresh store per test on every backend: SQLite, one redis-server, a 3-master
Redis Cluster (keys of a script must share a slot) and a Sentinel-managed pair.

The store suites (test_store.py, test_store_feedback.py) run unchanged on each:

    @pytest.fixture(params=BACKENDS)
    def opener(request, tmp_path):
        yield from open_stores(request, tmp_path, "t")
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from postwarden.store import Store
from postwarden.store.redis_store import RedisStore
from postwarden.store.sqlite_store import SqliteStore

BACKENDS = ["sqlite", "redis", "cluster", "sentinel"]
_SERVERS = {"redis": "redis_server", "cluster": "redis_cluster", "sentinel": "redis_sentinel"}
_prefix = itertools.count()

Opener = Callable[[], Store]


def open_stores(request: pytest.FixtureRequest, tmp_path: Path, prefix: str,
                **redis_options: bool) -> Iterator[Opener]:
    """Yield a function that opens (another handle on) one fresh store of the backend
    `request.param`; every handle is closed afterwards. Redis keys get `prefix` and a
    counter, so the tests sharing a server never see each other's keys."""
    opened: list[Store] = []
    if request.param == "sqlite":
        path = tmp_path / "state.db"

        def open_one() -> Store:
            s: Store = SqliteStore(path)
            opened.append(s)
            return s
    else:
        server = request.getfixturevalue(_SERVERS[request.param])
        keys = f"{prefix}{next(_prefix)}:"
        url: str = server.url

        def open_one() -> Store:
            s: Store = RedisStore(url, prefix=keys, timeout=2.0, **redis_options)
            opened.append(s)
            return s

    yield open_one
    for s in opened:
        s.close()
