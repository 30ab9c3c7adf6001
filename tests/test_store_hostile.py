"""Values read back from the store are never trusted: a server that is not Redis, a
string where a bucket hash should be, malformed entries. Each is an error line and a
reset (or a StoreError: fail open), never a crash and never a limit switched off."""

from __future__ import annotations

import io
import json
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from harness.fake_redis import FakeRedis
from harness.redis_server import RedisServer
from postwarden.config import from_dict
from postwarden.status import collect, render
from postwarden.store import HoldRecord, StoreError
from postwarden.store.redis_store import RedisStore
from postwarden.store.sqlite_store import SqliteStore

NOW = 1_700_000_000.0


@pytest.fixture
def fake() -> Iterator[FakeRedis]:
    server = FakeRedis().start()
    yield server
    server.stop()


def every_call(s: Any) -> list[tuple[str, Any]]:
    hold = HoldRecord("Q1", NOW, "ratelimit.exceeded", "uid:33", "a@example.com")
    return [
        ("rate_take", lambda: s.rate_take("form:uid:33", 1, 180, 5, NOW)),
        ("bump", lambda: s.bump("short:uid:33", 1, 600, NOW)),
        ("counter", lambda: s.counter("short:uid:33", 600, NOW)),
        ("rate_peek", lambda: s.rate_peek("form:uid:33", 1, 180, 5, NOW, once="m")),
        ("buckets", lambda: s.buckets(NOW)),
        ("record_hold", lambda: s.record_hold(hold)),
        ("holds", lambda: s.holds()),
        ("flush", lambda: (s.record_event(NOW, "local/accept", "uid:33", ""),
                           s.flush_events())),
        ("events", lambda: s.events(0)),
        ("record_selfcheck", lambda: s.record_selfcheck(NOW, "{}")),
        ("selfcheck_history", lambda: s.selfcheck_history()),
    ]


def test_server_answering_one_to_everything_is_a_store_error(fake: FakeRedis) -> None:
    s = RedisStore(fake.url, prefix="x:", timeout=1.0)
    outcomes = {}
    for name, call in every_call(s):
        try:
            call()
            outcomes[name] = "ok"
        except StoreError:
            outcomes[name] = "StoreError"
    assert fake.commands > 0
    # whatever the method, nothing but StoreError (or a harmless write) comes out
    assert {"rate_take", "rate_peek", "bump", "counter", "holds", "flush", "events"} <= \
        {n for n, o in outcomes.items() if o == "StoreError"}


def redis_store(server: RedisServer, name: str) -> tuple[RedisStore, redis.Redis]:
    prefix = f"hostile-{name}-{time.monotonic_ns()}:"
    return RedisStore(server.url, prefix=prefix, timeout=1.0), redis.Redis(port=server.port)


@pytest.mark.parametrize("poison", ["string", "list", "tat-text", "tat-nan", "tat-huge"])
def test_poisoned_bucket_is_reset_not_a_bypass(redis_server: RedisServer,
                                               logbuf: io.StringIO, poison: str) -> None:
    s, r = redis_store(redis_server, poison)
    key = s._k("rl", "form:uid:33")
    {"string": lambda: r.set(key, "x"), "list": lambda: r.rpush(key, "x"),
     "tat-text": lambda: r.hset(key, mapping={"t": "abc", "i": "180", "b": "5"}),
     "tat-nan": lambda: r.hset(key, mapping={"t": "nan", "i": "180", "b": "5"}),
     "tat-huge": lambda: r.hset(key, mapping={"t": "1e300", "i": "180", "b": "5"})}[poison]()
    assert s.rate_peek("form:uid:33", 1, 180, 5, NOW).allowed  # read as empty, kept
    results = [s.rate_take("form:uid:33", 1, 180, 5, NOW).allowed for _ in range(8)]
    assert results == [True] * 5 + [False] * 3  # the limit works from an empty bucket
    assert "bad value under bucket form:uid:33" in logbuf.getvalue()
    assert len([ln for ln in logbuf.getvalue().splitlines() if "error:" in ln]) == 1


def test_poisoned_counter_is_reset(redis_server: RedisServer, logbuf: io.StringIO) -> None:
    s, r = redis_store(redis_server, "ctr")
    r.set(s._k("ctr", "short:uid:33"), "x")
    assert s.counter("short:uid:33", 600, NOW) == 0  # read as zero, left for bump to reset
    assert r.get(s._k("ctr", "short:uid:33")) == b"x"
    assert s.bump("short:uid:33", 1, 600, NOW) == pytest.approx(1.0)
    assert s.bump("short:uid:33", 1, 600, NOW) == pytest.approx(2.0)
    assert "bad value under counter short:uid:33" in logbuf.getvalue()


def test_malformed_entries_do_not_break_status(redis_server: RedisServer,
                                               logbuf: io.StringIO) -> None:
    s, r = redis_store(redis_server, "status")
    s.record_hold(HoldRecord("Q1", NOW, "ratelimit.exceeded", "uid:33", "a@example.com"))
    s.record_event(NOW, "local/hold", "uid:33", "ratelimit.exceeded")
    s.flush_events()
    s.rate_take("form:uid:33", 1, 180, 5, NOW)
    # the four kinds: a member without the sequence, JSON of the wrong shape, a bucket
    # whose numbers are not numbers, a self-check entry that is not [when, report]
    r.zadd(s._k("holds"), {b"no-sequence-here": NOW})
    r.zadd(s._k("events"), {b'7 {"not": "a list"}': NOW})
    r.hset(s._k("rl", "form:uid:1000"), mapping={"t": "soon", "i": "0", "b": "x"})
    r.lpush(s._k("selfcheck"), b"[1, 2, 3]")
    cfg = from_dict({})
    data = collect(s, cfg, NOW + 1, None)
    text = render(data)
    assert [h["queue_id"] for h in data["held"]] == ["Q1"]
    assert [b["key"] for b in data["buckets"]] == ["form:uid:33"]
    assert "Q1" in text
    assert len(s.selfcheck_history()) == 0
    errors = logbuf.getvalue()
    for what in ("holds entry", "events entry", "bucket form:uid:1000", "selfcheck entry"):
        assert what in errors, errors
    # removed: a second read is clean
    logbuf.truncate(0)
    collect(s, cfg, NOW + 1, None)
    s.selfcheck_history()
    assert "error:" not in logbuf.getvalue()


def test_sqlite_poisoned_rows(tmp_path: Path, logbuf: io.StringIO) -> None:
    path = tmp_path / "state.db"
    s = SqliteStore(path)
    s.record_hold(HoldRecord("Q1", NOW, "ratelimit.exceeded", "uid:33", "a@example.com"))
    s.rate_take("form:uid:33", 1, 180, 5, NOW)
    db = sqlite3.connect(path)
    db.execute("INSERT INTO buckets VALUES ('form:uid:1000', 'abc', 180, 5)")
    db.execute("INSERT INTO buckets VALUES ('form:uid:1001', 1e300, 180, 5)")
    db.execute("INSERT INTO holds(queue_id, at, reason, source, sender) "
               "VALUES (x'00ff', 'later', 1, 2, 3)")
    db.execute("INSERT INTO events(at, kind, source, findings) VALUES ('x', 1, 2, 3)")
    db.execute("INSERT INTO counters VALUES ('short:uid:33', 'x', 'y', 600)")
    db.execute("INSERT INTO selfcheck(at, report) VALUES ('x', x'00')")
    db.commit()
    db.close()
    data = collect(s, from_dict({}), NOW + 1, None)
    render(data)
    assert [h["queue_id"] for h in data["held"]] == ["Q1"]
    assert [b["key"] for b in data["buckets"]] == ["form:uid:33"]
    assert s.selfcheck_history() == []
    assert s.counter("short:uid:33", 600, NOW) == 0
    assert s.rate_peek("form:uid:1000", 1, 180, 2, NOW).allowed
    assert s.bump("short:uid:33", 1, 600, NOW) == pytest.approx(1.0)
    # the poisoned buckets limit again from empty
    assert [s.rate_take("form:uid:1000", 1, 180, 2, NOW).allowed for _ in range(3)] \
        == [True, True, False]
    assert [s.rate_take("form:uid:1001", 1, 180, 2, NOW).allowed for _ in range(3)] \
        == [True, True, False]
    assert logbuf.getvalue().count("error:") >= 4
    s.close()
    assert json.dumps(data)  # still data, whatever was stored


@pytest.mark.parametrize("value", [float("inf"), float("nan"), 0.0, -1.0])
def test_redis_timeout_must_be_finite_and_positive(value: float) -> None:
    from postwarden.config import ConfigError

    with pytest.raises(ConfigError, match="redis_timeout"):
        from_dict({"store": {"redis_timeout": value}})
