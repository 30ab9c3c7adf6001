"""Past one Redis: hash slots, the server's clock, each message counted once, and a
cluster node or a Sentinel primary going away mid-run (real servers on loopback)."""

from __future__ import annotations

import itertools
import time
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

from harness.redis_server import RedisCluster, RedisSentinel, RedisServer
from postwarden.config import ConfigError, from_dict
from postwarden.store import Store, StoreError
from postwarden.store.base import SEEN_REPEATS
from postwarden.store.redis_store import RedisStore, slot_key
from postwarden.store.sqlite_store import SqliteStore

T0 = 1_700_000_000.0
_n = itertools.count()


def _slot(key: str) -> int:
    return int(key_slot(key.encode()))


@pytest.mark.parametrize("name", ["php:33:contact.php", "a}b", "{x}", "sasl:ünï", ""])
def test_keys_one_script_touches_share_a_slot(name: str) -> None:
    bucket = slot_key("pw:", "rl", name)
    assert _slot(bucket) == _slot(slot_key("pw:", "rl", name, "seen", "ab12"))
    assert _slot(slot_key("pw:", "events")) == _slot(slot_key("pw:", "events", "", "seq"))
    assert _slot(slot_key("pw:", "holds")) == _slot(slot_key("pw:", "holds", "", "seq"))


def test_buckets_of_different_sources_spread_over_the_slots() -> None:
    slots = {_slot(slot_key("pw:", "rl", f"form:php:33:f{i}.php")) for i in range(50)}
    assert len(slots) > 40  # not one tag for everything: a cluster spreads the load


@pytest.mark.parametrize("prefix", ["pw{x}:", "a}"])
def test_prefix_with_braces_is_a_config_error(prefix: str) -> None:
    with pytest.raises(ConfigError, match="redis_prefix"):
        from_dict({"store": {"redis_prefix": prefix}})


@pytest.mark.parametrize("url", ["127.0.0.1:6379", "http://x/", "redis+sentinel://h:26379",
                                 "redis+cluster://h:6379/3", "redis+cluster://h:port"])
def test_unusable_redis_url_is_a_config_error(url: str) -> None:
    with pytest.raises(ConfigError, match="redis_url"):
        from_dict({"store": {"redis_url": url}})


def test_cluster_listing_reads_every_master(redis_cluster: RedisCluster) -> None:
    s = RedisStore(redis_cluster.url, prefix=f"list{next(_n)}:", timeout=2.0,
                   server_clock=False)
    names = [f"form:php:33:f{i}.php" for i in range(30)]
    for name in names:
        assert s.rate_take(name, 1, 60.0, 5.0, T0, once=f"id-{name}").allowed
    owners = set()
    for name in names:
        slot = _slot(s._k("rl", name))
        owners.add(s._r.nodes_manager.get_node_from_slot(slot).port)
    assert len(owners) == 3  # the buckets live on all three masters
    got = s.buckets(T0 + 1, limit=100)
    assert sorted(b.key for b in got) == sorted(names)  # no "seen" key listed as a bucket
    s.close()


def _server(request: pytest.FixtureRequest, kind: str) -> str:
    fixture = {"redis": "redis_server", "cluster": "redis_cluster",
               "sentinel": "redis_sentinel"}[kind]
    return str(request.getfixturevalue(fixture).url)


@pytest.mark.parametrize("kind", ["redis", "cluster", "sentinel"])
def test_relay_clocks_minutes_apart_enforce_one_limit(request: pytest.FixtureRequest,
                                                      kind: str) -> None:
    url, prefix = _server(request, kind), f"clock{next(_n)}:"
    wall = time.time()
    # relay b's clock is 10 minutes ahead: with the callers' clocks its view of the
    # bucket would be 10 one-minute intervals emptier
    a = RedisStore(url, prefix=prefix, timeout=2.0)
    b = RedisStore(url, prefix=prefix, timeout=2.0)
    got = [(a if i % 2 else b).rate_take("php:33:f.php", 1, 60.0, 4.0,
                                         wall + (0 if i % 2 else 600)).allowed
           for i in range(10)]
    assert sum(got) == 4
    [bucket] = b.buckets(wall + 600)  # read against the server's clock too
    assert bucket.used == pytest.approx(4, abs=0.1)
    # relay a is told to wait one interval at most, not ten minutes more
    assert 0 < a.rate_take("php:33:f.php", 1, 60.0, 4.0, wall).retry_after <= 60
    # the same with the callers' clocks: the relay ahead puts the bucket 10 minutes
    # into the other's future, so the other waits 11 minutes: the test can fail
    c = RedisStore(url, prefix=prefix + "caller:", timeout=2.0, server_clock=False)
    for _ in range(4):
        assert c.rate_take("php:33:f.php", 1, 60.0, 4.0, wall + 600).allowed
    assert c.rate_take("php:33:f.php", 1, 60.0, 4.0, wall).retry_after > 600
    server_now = a.server_time()
    assert abs(server_now - time.time()) < 5  # TIME is what the scripts read
    for s in (a, b, c):
        s.close()


def _store(request: pytest.FixtureRequest, kind: str, tmp_path: Path) -> Store:
    if kind == "sqlite":
        return SqliteStore(tmp_path / "s.db")
    return RedisStore(_server(request, kind), prefix=f"once{next(_n)}:", timeout=2.0,
                      server_clock=False)


@pytest.mark.parametrize("kind", ["sqlite", "redis", "cluster"])
def test_a_retried_message_takes_one_unit(request: pytest.FixtureRequest, tmp_path: Path,
                                          kind: str) -> None:
    s = _store(request, kind, tmp_path)
    first = s.rate_take("form:uid:33", 1, 600.0, 3.0, T0, once="mid\0<a@x>\0...")
    again = s.rate_take("form:uid:33", 1, 600.0, 3.0, T0 + 300, once="mid\0<a@x>\0...")
    assert first.allowed and again.allowed
    assert again.used == pytest.approx(first.used - 0.5)  # drained, nothing taken
    assert s.rate_take("form:uid:33", 1, 600.0, 3.0, T0 + 300, once="other").used \
        == pytest.approx(1.5)
    # each bucket remembers for itself: another limit counts the same message once too
    assert s.rate_take("form_rcpts:uid:33", 1, 600.0, 3.0, T0, once="mid\0<a@x>\0...") \
        .used == pytest.approx(1)
    s.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_the_same_identity_over_and_over_counts_again(request: pytest.FixtureRequest,
                                                      tmp_path: Path, kind: str) -> None:
    """The identity has sender-chosen parts (Message-ID): repeating it is no way around."""
    s = _store(request, kind, tmp_path)
    used = [s.rate_take("k", 1, 600.0, 50.0, T0, once="same").used
            for _ in range(SEEN_REPEATS + 4)]
    assert used == pytest.approx([1.0] * (SEEN_REPEATS + 1) + [2.0, 3.0, 4.0])
    s.close()


@pytest.mark.parametrize("kind", ["sqlite", "redis"])
def test_a_denied_message_is_judged_again_on_retry(request: pytest.FixtureRequest,
                                                   tmp_path: Path, kind: str) -> None:
    s = _store(request, kind, tmp_path)
    assert s.rate_take("k", 1, 600.0, 1.0, T0, once="m1").allowed
    assert not s.rate_take("k", 1, 600.0, 1.0, T0, once="m2").allowed
    assert s.rate_take("k", 1, 600.0, 1.0, T0 + 600, once="m2").allowed  # fits now
    s.close()


def test_a_stranger_key_under_the_identity_is_forgotten(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, prefix=f"odd{next(_n)}:", timeout=2.0,
                   server_clock=False)
    from postwarden.store.redis_store import _digest

    with redis.Redis(port=redis_server.port) as r:
        r.rpush(s._k("rl", "k", "seen", _digest("m1")), "x")
    assert s.rate_take("k", 1, 600.0, 5.0, T0, once="m1").used == pytest.approx(1)
    assert s.rate_take("k", 1, 600.0, 5.0, T0, once="m1").used == pytest.approx(1)
    s.close()


# --- failover -----------------------------------------------------------------------

def test_cluster_node_gone_is_store_error_then_recovers(own_cluster: RedisCluster) -> None:
    s = RedisStore(own_cluster.url, prefix="gone:", timeout=0.5, server_clock=False)
    names = [f"form:uid:{i}" for i in range(12)]
    for name in names:
        assert s.rate_take(name, 1, 600.0, 5.0, T0).allowed
    victim = own_cluster.nodes[1]
    victim.kill()
    outcomes = []
    for name in names:
        try:
            s.rate_take(name, 1, 600.0, 5.0, T0)
            outcomes.append("ok")
        except StoreError:
            outcomes.append("StoreError")  # nothing else may come out: fail open
    assert "StoreError" in outcomes
    victim.start()
    own_cluster.wait_ok()
    deadline = time.monotonic() + 20
    while True:
        try:
            got = [s.rate_take(n, 1, 600.0, 5.0, T0).allowed for n in names]
            break
        except StoreError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.2)
    assert all(got)
    s.close()


def test_sentinel_failover_costs_at_most_one_error(own_pair: RedisSentinel) -> None:
    s = RedisStore(own_pair.url, prefix="fo:", timeout=1.0, server_clock=False)
    assert s.rate_take("k", 3, 600.0, 100.0, T0).allowed
    before = own_pair.current_primary_port()
    own_pair.failover()
    errors, deadline = 0, time.monotonic() + 30
    while own_pair.current_primary_port() == before and time.monotonic() < deadline:
        time.sleep(0.1)
    assert own_pair.current_primary_port() != before
    results = []
    for _ in range(20):
        try:
            results.append(s.rate_take("k", 1, 600.0, 100.0, T0))
        except StoreError:
            errors += 1
        time.sleep(0.1)
    assert errors <= 1
    # the graceful failover kept the bucket: 3 + the later takes, on the new primary
    assert results[-1].used == pytest.approx(3 + len(results))
    s.close()


# --- store.reachable ------------------------------------------------------------------

def test_selfcheck_store_reachable_states(redis_server: RedisServer, tmp_path: Path) -> None:
    from harness import free_port
    from postwarden.checks import storecheck

    assert storecheck.check(None, T0).status == "unknown"
    gone = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
    down = storecheck.check(gone, T0)
    assert down.status == "critical" and "unreachable" in down.summary
    up = RedisStore(redis_server.url, prefix=f"sc{next(_n)}:", timeout=2.0)
    assert storecheck.check(up, T0).status == "ok"
    up.record_notice(T0 - 60, "degraded mode for 42s from ... on relay1: store unreachable")
    seen = storecheck.check(up, T0)
    assert seen.status == "info" and seen.details["degraded_periods_7d"] == 1
    assert storecheck.check(up, T0 + 8 * 86400).status == "ok"  # older than 7 days
    local = SqliteStore(tmp_path / "s.db")
    assert storecheck.check(local, T0).status == "ok"
    for s in (up, local):
        s.close()
