"""The feedback records (what left, what receivers answered), run unchanged against
SQLite and a real redis-server on loopback, like tests/test_store.py."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from postwarden.store import DeliveryRecord, OutboundRecord, Store
from postwarden.store.feedback import OUTBOUND_RETENTION, tally
from postwarden.store.sqlite_store import SqliteStore
from store_fixtures import BACKENDS, Opener, open_stores

T0 = 1_700_000_000.0


@pytest.fixture(params=BACKENDS)
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Opener]:
    yield from open_stores(request, tmp_path, "fb")


@pytest.fixture
def store(opener: Opener) -> Store:
    return opener()


def ob(qid: str, when: float, source: str = "php:33:contact.php", dmarc: str = "pass"
       ) -> OutboundRecord:
    return OutboundRecord(qid, when, source, "local", "example.com", "example.com", True,
                          "pass", "pass", dmarc)


def dl(qid: str, when: float, status: str = "bounced", cls: str = "unknown_recipient",
       source: str = "php:33:contact.php", rcpt: str = "gmail.test") -> DeliveryRecord:
    return DeliveryRecord(qid, when, rcpt, f"mx.{rcpt}[127.0.0.1]:25", status,
                          "5.1.1" if status == "bounced" else "2.0.0", cls, "550 5.1.1 no",
                          source, "example.com")


def test_outbound_by_queue_id_replaced_and_survives_reopen(opener: Opener) -> None:
    s = opener()
    s.record_outbound(ob("4F9D42A0B1", T0, dmarc="fail"))
    s.record_outbound(ob("4F9D42A0B1", T0 + 1))  # the same queue ID again: replaced
    s.record_outbound(ob("5A1B2C3D4E", T0 + 2, source="sasl:alice"))
    again = opener()
    assert again.outbound("4F9D42A0B1") == ob("4F9D42A0B1", T0 + 1)
    assert again.outbound("NOSUCHID") is None
    assert [r.queue_id for r in again.outbound_since(T0)] == ["5A1B2C3D4E", "4F9D42A0B1"]
    assert [r.queue_id for r in again.outbound_since(T0 + 1)] == ["5A1B2C3D4E"]


def test_outbound_pruned_after_the_retention_window(store: Store) -> None:
    store.record_outbound(ob("OLD0000001", T0), retention=OUTBOUND_RETENTION)
    store.record_outbound(ob("NEW0000001", T0 + OUTBOUND_RETENTION + 10))
    assert [r.queue_id for r in store.outbound_since(0)] == ["NEW0000001"]
    if isinstance(store, SqliteStore):
        assert store.outbound("OLD0000001") is None
    # Redis expires the record by itself (PX = retention); the index entry is gone now


def test_deliveries_by_source_and_time_and_pruned(store: Store) -> None:
    store.record_delivery(dl("AAA1", T0, status="sent", cls=""))
    store.record_delivery(dl("AAA2", T0 + 1))
    store.record_delivery(dl("AAA3", T0 + 2, source="sasl:alice", status="deferred",
                             cls="rate"))
    got = store.deliveries(T0 - 1)
    assert [d.queue_id for d in got] == ["AAA3", "AAA2", "AAA1"]
    assert got[1] == dl("AAA2", T0 + 1)
    assert [d.queue_id for d in store.deliveries(T0 - 1, source="sasl:alice")] == ["AAA3"]
    assert [d.queue_id for d in store.deliveries(T0 + 0.5)] == ["AAA3", "AAA2"]
    store.record_delivery(dl("AAA4", T0 + 100), retention=50)
    assert [d.queue_id for d in store.deliveries(0)] == ["AAA4"]
    assert [d.queue_id for d in store.deliveries(0, source="php:33:contact.php")] == ["AAA4"]


def test_tally_counts_by_status_and_class() -> None:
    recs = [dl("A", T0, "sent", ""), dl("B", T0 + 1), dl("C", T0 + 2),
            dl("D", T0 + 3, "deferred", "rate", rcpt="yahoo.test")]
    by_src = tally(recs, "source")["php:33:contact.php"]
    assert (by_src.delivered, by_src.deferred, by_src.bounced) == (1, 1, 2)
    assert by_src.by_class == {"bounced:unknown_recipient": 2, "deferred:rate": 1}
    assert by_src.rejected("unknown_recipient") == 2 and by_src.rejected() == 3
    assert by_src.last is not None and by_src.last.queue_id == "D"
    assert set(tally(recs, "rcpt_domain")) == {"gmail.test", "yahoo.test"}


def test_marks_and_report_ids(opener: Opener) -> None:
    s = opener()
    assert s.get_meta("maillog") is None
    s.put_meta("maillog", "12345:678")
    s.put_meta("maillog", "12345:999")
    assert opener().get_meta("maillog") == "12345:999"
    assert s.claim_report("google.com!example.com!1!2", T0, '{"rows": 1}') is True
    assert s.claim_report("google.com!example.com!1!2", T0 + 5, '{"rows": 9}') is False
    assert s.claim_report("yahoo!1", T0 + 1, "{}") is True
    assert opener().reports(0) == [("yahoo!1", T0 + 1, "{}"),
                                   ("google.com!example.com!1!2", T0, '{"rows": 1}')]
