"""One store suite, run unchanged against SQLite and a real redis-server on loopback."""

from __future__ import annotations

import itertools
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from harness.redis_server import RedisServer
from postwarden.config import StoreConfig
from postwarden.store import AuditRecord, HoldRecord, Store, StoreError, open_store
from postwarden.store.base import EVENT_BATCH, MAX_PENDING, gcra
from postwarden.store.redis_store import RedisStore
from postwarden.store.sqlite_store import SqliteStore
from store_fixtures import BACKENDS, Opener, open_stores

T0 = 1_700_000_000.0
_prefix = itertools.count()


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    """A function that opens (another handle on) one fresh store."""
    yield from open_stores(request, tmp_path, "t", server_clock=False)


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


# --- hold reasons ---------------------------------------------------------------------

def test_holds_newest_first_and_since(store: Store) -> None:
    for i, qid in enumerate(["AAA1", "AAA2", "AAA3"]):
        store.record_hold(HoldRecord(qid, T0 + i, "ratelimit.exceeded", f"php:33:f{i}.php",
                                     "www-data@example.com"))
    got = store.holds()
    assert [h.queue_id for h in got] == ["AAA3", "AAA2", "AAA1"]
    assert got[0] == HoldRecord("AAA3", T0 + 2, "ratelimit.exceeded", "php:33:f2.php",
                                "www-data@example.com")
    assert [h.queue_id for h in store.holds(since=T0 + 0.5)] == ["AAA3", "AAA2"]


# --- GCRA -----------------------------------------------------------------------------

def test_burst_then_one_per_interval(store: Store) -> None:
    interval, burst = 180.0, 5.0  # 20 per hour, burst 5
    results = [store.rate_take("php:33:form.php", 1, interval, burst, T0) for _ in range(8)]
    assert [r.allowed for r in results] == [True] * 5 + [False] * 3
    assert results[4].used == pytest.approx(5)
    assert results[5].used == pytest.approx(5)
    assert results[5].retry_after == pytest.approx(interval)
    # A denied request does not fill the bucket: one interval later exactly one fits.
    assert store.rate_take("php:33:form.php", 1, interval, burst, T0 + interval - 1).allowed \
        is False
    assert store.rate_take("php:33:form.php", 1, interval, burst, T0 + interval).allowed
    assert not store.rate_take("php:33:form.php", 1, interval, burst, T0 + interval).allowed


def test_cost_counts_units(store: Store) -> None:
    r = store.rate_take("k", 3, 10.0, 5.0, T0)
    assert r.allowed and r.used == pytest.approx(3)
    assert not store.rate_take("k", 3, 10.0, 5.0, T0).allowed
    assert store.rate_take("k", 2, 10.0, 5.0, T0).allowed
    assert not store.rate_take("other", 6, 10.0, 5.0, T0).allowed  # bigger than the bucket


def test_simulated_hour_admits_at_most_rate_plus_burst(store: Store) -> None:
    rate, window, burst = 20, 3600.0, 5.0
    admitted = sum(store.rate_take("src", 1, window / rate, burst, T0 + 10 * i).allowed
                   for i in range(360))  # one try every 10 s for an hour
    assert burst + rate - 1 <= admitted <= burst + rate


# Gaps in tenths of an interval: most land mid-interval, where an off-by-a-little
# comparison shows.
_steps = st.lists(st.tuples(st.integers(0, 30), st.sampled_from([1.0, 2.0, 3.0, 7.0])),
                  min_size=1, max_size=40)


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=_steps, interval=st.sampled_from([1.0, 7.5, 180.0]),
       burst=st.sampled_from([1.0, 5.0, 50.0]))
def test_backends_follow_the_gcra_model(store: Store, steps: list[tuple[float, float]],
                                        interval: float, burst: float) -> None:
    """Every backend answers exactly what gcra() says, step by step (the SQLite upsert
    and the Redis script each re-implement it)."""
    key, now, tat = f"model{next(_prefix)}", T0, T0
    for tenths, cost in steps:
        now += tenths * interval / 10
        tat, want = gcra(tat, now, cost, interval, burst)
        got = store.rate_take(key, cost, interval, burst, now)
        assert got.allowed == want.allowed
        assert got.used == pytest.approx(want.used, abs=1e-6)
        assert got.retry_after == pytest.approx(want.retry_after, abs=1e-6)


def test_rate_peek_says_what_a_take_would_and_changes_nothing(store: Store) -> None:
    """The checks peek; only the effects stage takes (for mail that is kept)."""
    for _ in range(3):
        assert store.rate_peek("peek", 1, 60.0, 2.0, T0).allowed  # nothing taken
    assert store.buckets(T0) == []
    assert store.rate_take("peek", 2, 60.0, 2.0, T0).allowed
    want = store.rate_peek("peek", 1, 60.0, 2.0, T0)
    got = store.rate_take("peek", 1, 60.0, 2.0, T0)
    assert (want.allowed, want.used, want.retry_after) == (got.allowed, got.used,
                                                           got.retry_after)
    assert not want.allowed
    assert store.rate_peek("peek", 1, 60.0, 2.0, T0 + 60.0).allowed  # one unit drained


def test_rate_peek_admits_a_message_the_bucket_already_admitted(store: Store) -> None:
    """A retried message (same identity) is admitted by the take without units: the
    peek must say so too, or the check would hold what the take lets through."""
    assert store.rate_take("once", 2, 60.0, 2.0, T0, once="msg-1").allowed  # now full
    assert not store.rate_peek("once", 1, 60.0, 2.0, T0).allowed
    assert not store.rate_peek("once", 1, 60.0, 2.0, T0, once="msg-2").allowed
    assert store.rate_peek("once", 1, 60.0, 2.0, T0, once="msg-1").allowed
    assert store.rate_take("once", 1, 60.0, 2.0, T0, once="msg-1").allowed


def test_a_denied_message_is_not_remembered_as_admitted(store: Store) -> None:
    assert store.rate_take("deny", 1, 60.0, 1.0, T0, once="a").allowed
    assert not store.rate_take("deny", 1, 60.0, 1.0, T0, once="b").allowed
    assert not store.rate_take("deny", 1, 60.0, 1.0, T0, once="b").allowed  # judged again
    assert not store.rate_peek("deny", 1, 60.0, 1.0, T0, once="b").allowed
    assert store.rate_take("deny", 1, 60.0, 1.0, T0 + 60.0, once="b").allowed  # room again
    assert store.rate_take("deny", 1, 60.0, 1.0, T0 + 60.0, once="b").allowed  # its retry


def test_keys_are_independent(store: Store) -> None:
    assert store.rate_take("a", 2, 60.0, 2.0, T0).allowed
    assert not store.rate_take("a", 1, 60.0, 2.0, T0).allowed
    assert store.rate_take("b", 2, 60.0, 2.0, T0).allowed


def test_concurrent_threads_never_overshoot(store: Store) -> None:
    admitted: list[bool] = []
    lock = threading.Lock()

    def worker() -> None:
        for _ in range(10):
            ok = store.rate_take("shared", 1, 3600.0, 37.0, T0).allowed
            with lock:
                admitted.append(ok)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(admitted) == 160 and sum(admitted) == 37


def test_two_handles_share_one_limit(opener: Opener) -> None:
    a, b = opener(), opener()
    results = [(a if i % 2 else b).rate_take("sasl:alice", 1, 60.0, 4.0, T0).allowed
               for i in range(10)]
    assert sum(results) == 4


def test_limits_survive_reopen(opener: Opener) -> None:
    first = opener()
    for _ in range(3):
        assert first.rate_take("php:33:x.php", 1, 600.0, 3.0, T0).allowed
    first.close()
    again = opener()
    assert not again.rate_take("php:33:x.php", 1, 600.0, 3.0, T0 + 1).allowed


def test_buckets_fullest_first(store: Store) -> None:
    store.rate_take("half", 2, 60.0, 4.0, T0)
    store.rate_take("full", 4, 60.0, 4.0, T0)
    store.rate_take("gone", 1, 1.0, 4.0, T0 - 100)  # drained long ago
    got = store.buckets(T0 + 30)
    assert [b.key for b in got] == ["full", "half"]
    assert got[0].used == pytest.approx(3.5)
    assert got[0].burst == 4.0 and got[0].rate_per_hour == pytest.approx(60)
    assert [b.key for b in store.buckets(T0 + 30, limit=1)] == ["full"]


# --- decaying counters --------------------------------------------------------------

def test_bump_decays_by_half_life(store: Store) -> None:
    assert store.bump("fp:php:33:f.php:abc", 1, 600.0, T0) == pytest.approx(1)
    assert store.bump("fp:php:33:f.php:abc", 1, 600.0, T0) == pytest.approx(2)
    assert store.bump("fp:php:33:f.php:abc", 1, 600.0, T0 + 600) == pytest.approx(2)
    assert store.bump("fp:php:33:f.php:abc", 0, 600.0, T0 + 1800) == pytest.approx(0.5)
    assert store.bump("other", 0, 600.0, T0) == 0


def test_counter_reads_what_bump_leaves_and_writes_nothing(store: Store) -> None:
    assert store.counter("ctr", 600.0, T0) == 0
    store.bump("ctr", 2, 600.0, T0)
    assert store.counter("ctr", 600.0, T0 + 600) == pytest.approx(1)
    assert store.counter("ctr", 600.0, T0 + 600) == pytest.approx(1)  # a read moves nothing
    assert store.bump("ctr", 1, 600.0, T0 + 600) == pytest.approx(2)


# --- events and activity ------------------------------------------------------------

def test_events_and_activity(store: Store) -> None:
    store.record_event(T0, "local/accept", "php:33:f.php", "form.detected")
    store.record_event(T0 + 1, "local/hold", "php:33:f.php", "form.detected,ratelimit.exceeded")
    store.record_event(T0 + 2, "submission/accept", "sasl:alice", "")
    store.record_event(T0 - 9000, "local/accept", "uid:0", "")
    evs = store.events(T0 - 1)
    assert [(e.when, e.source) for e in evs] == [
        (T0 + 2, "sasl:alice"), (T0 + 1, "php:33:f.php"), (T0, "php:33:f.php")]
    assert evs[1].kind == "local/hold"
    assert evs[1].findings == "form.detected,ratelimit.exceeded"
    assert len(store.events(T0 - 1, limit=2)) == 2
    act = store.activity(T0 - 1)
    assert set(act) == {"php:33:f.php", "sasl:alice"}
    php = act["php:33:f.php"]
    assert (php.messages, php.form_messages, php.holds, php.ratelimit_hits) == (2, 2, 1, 1)
    alice = act["sasl:alice"]
    assert (alice.messages, alice.form_messages, alice.holds, alice.ratelimit_hits) == (1, 0, 0, 0)
    assert store.activity(T0 - 10000)["uid:0"].messages == 1


# --- self-check history -------------------------------------------------------------

def test_selfcheck_history_newest_first(store: Store) -> None:
    for i in range(4):
        store.record_selfcheck(T0 + i * 3600, json.dumps({"run": i}))
    runs = store.selfcheck_history(limit=3)
    assert [json.loads(r.report_json)["run"] for r in runs] == [3, 2, 1]
    assert runs[0].when == T0 + 3 * 3600
    assert store.selfcheck_history(limit=1)[0].when == T0 + 3 * 3600


# --- failures are StoreError ----------------------------------------------------------

def test_redis_unreachable_is_store_error() -> None:
    from harness import free_port

    s = RedisStore(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)  # lazy: no error yet
    with pytest.raises(StoreError):
        s.rate_take("k", 1, 1.0, 1.0, T0)
    s.record_event(T0, "local/accept", "uid:0", "")  # queued: no round trip yet
    with pytest.raises(StoreError):
        s.flush_events()


def test_redis_recovers_after_restart(redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, prefix="recover:", timeout=0.5)
    assert s.rate_take("k", 1, 60.0, 5.0, T0).allowed
    redis_server.stop()
    try:
        with pytest.raises(StoreError):
            s.rate_take("k", 1, 60.0, 5.0, T0)
    finally:
        redis_server.start()
    assert s.rate_take("k", 1, 60.0, 5.0, T0).allowed  # same object works again
    s.close()


def test_sqlite_unusable_path_is_store_error(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    s = SqliteStore(tmp_path / "file" / "state.db")  # like Redis: retried, not fatal
    with pytest.raises(StoreError):
        s.rate_take("k", 1, 1.0, 1.0, T0)
    s.record_event(T0, "local/accept", "uid:0", "")
    with pytest.raises(StoreError):
        s.flush_events()


def test_events_queued_through_an_outage_are_written_after_it(
        redis_server: RedisServer) -> None:
    s = RedisStore(redis_server.url, prefix="outage:", timeout=0.5)
    redis_server.stop()
    try:
        for i in range(3):
            s.record_event(T0 + i, "local/accept", "uid:0", "")
        with pytest.raises(StoreError):
            s.flush_events()
    finally:
        redis_server.start()
    s.record_event(T0 + 3, "local/accept", "uid:0", "")
    assert [e.when for e in s.events(T0 - 1)] == [T0 + 3, T0 + 2, T0 + 1, T0]
    s.close()


def test_a_down_store_keeps_the_newest_events_and_counts_the_rest(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    s = SqliteStore(tmp_path / "file" / "state.db")
    failed_writes = 0
    for i in range(MAX_PENDING + 500):
        try:
            s.record_event(T0 + i, "local/accept", "uid:0", "")
        except StoreError:
            failed_writes += 1
    # one try per batch, not one per event once the queue is past a batch
    assert failed_writes == (MAX_PENDING + 500) // EVENT_BATCH
    with pytest.raises(StoreError):
        s.flush_events()  # the daemon's timer: the overflow is counted at each try
    assert s.events_dropped == 500
    with pytest.raises(StoreError):
        s.close()  # says the queued events could not be written


def test_a_full_batch_is_written_without_waiting_for_a_flush(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    reader = SqliteStore(tmp_path / "s.db")  # another process's view: `postwarden status`
    for i in range(EVENT_BATCH - 1):
        s.record_event(T0 + i, "local/accept", "uid:0", "")
    assert reader.events(T0 - 1) == []
    s.record_event(T0 + EVENT_BATCH, "local/accept", "uid:0", "")
    assert len(reader.events(T0 - 1)) == EVENT_BATCH
    s.close()
    reader.close()


def test_open_store_picks_backend(tmp_path: Path, redis_server: RedisServer) -> None:
    s = open_store(StoreConfig(backend="sqlite", path=str(tmp_path / "a.db")))
    assert isinstance(s, SqliteStore)
    s.close()
    r = open_store(StoreConfig(backend="redis", redis_url=redis_server.url))
    assert isinstance(r, RedisStore)
    r.close()


def test_audit_trail_newest_first_and_since(store: Store) -> None:
    store.record_audit(AuditRecord(100.0, "alice", "release", "AAAA1", "reason=x"))
    store.record_audit(AuditRecord(200.0, "bob", "ratelimit.reset", "form:php:33:a.php",
                                   "level=5/5"))
    assert [a.actor for a in store.audit()] == ["bob", "alice"]
    assert store.audit(since=150.0) == [
        AuditRecord(200.0, "bob", "ratelimit.reset", "form:php:33:a.php", "level=5/5")]


def test_rate_reset_empties_one_bucket(store: Store) -> None:
    for _ in range(3):
        store.rate_take("form:a", 1, 60.0, 3, now=1000.0)
    store.rate_take("form:b", 1, 60.0, 3, now=1000.0)
    assert not store.rate_take("form:a", 1, 60.0, 3, now=1000.0).allowed
    assert store.rate_reset("form:a") is True
    assert store.rate_reset("form:a") is False  # already empty
    assert store.rate_take("form:a", 1, 60.0, 3, now=1000.0).allowed
    assert {b.key for b in store.buckets(1000.0)} == {"form:a", "form:b"}
