"""SQLite backend: the embedded default, one file that survives restarts.

One connection per process behind a lock (libmilter calls us from many threads;
each call is a short transaction, so the lock is held for microseconds). WAL and a
busy timeout let the milter, `postwarden status` and the self-check use the file
at the same time. Rate updates run in `BEGIN IMMEDIATE`, so two processes sharing
the file never both admit the last unit of a bucket.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from postwarden.store.base import (
    EVENT_RETENTION,
    HOLD_RETENTION,
    SELFCHECK_KEEP,
    BucketState,
    EventRecord,
    HoldRecord,
    RateResult,
    SelfcheckRun,
    Store,
    StoreError,
    decayed,
    gcra,
)
from postwarden.store.feedback import OUTBOUND_RETENTION, DeliveryRecord, OutboundRecord

T = TypeVar("T")
# gcra() in one upsert: the bucket moves only if the cost fits (unqualified columns
# in DO UPDATE are the stored row's), RETURNING says whether it did.
_TAKE = """
INSERT INTO buckets(key, tat, interval, burst) VALUES (:key, :now + :cost * :iv, :iv, :burst)
ON CONFLICT(key) DO UPDATE SET tat = max(tat, :now) + :cost * :iv,
                               interval = :iv, burst = :burst
WHERE max(tat, :now) + :cost * :iv - :now - :burst * :iv <= 1e-9
RETURNING tat
"""
PRUNE_EVERY = 500  # writes between clean-ups of expired rows
BUSY_TIMEOUT_MS = 250  # a locked file must not hold mail up: fail open instead
REOPEN_EVERY = 2.0  # seconds between tries to open a file that could not be opened
# The hot set is the bucket and counter rows plus the B-tree interiors; SQLite's
# default 2 MiB cache mostly ends up holding appended event pages, and filling it made
# the milter's RSS climb for its first ~30k messages (bench/milter_load.py).
CACHE_KIB = 512

_SCHEMA = """
CREATE TABLE IF NOT EXISTS buckets (
    key TEXT PRIMARY KEY, tat REAL NOT NULL, interval REAL NOT NULL, burst REAL NOT NULL);
CREATE TABLE IF NOT EXISTS counters (
    key TEXT PRIMARY KEY, value REAL NOT NULL, updated REAL NOT NULL,
    half_life REAL NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, kind TEXT NOT NULL, source TEXT NOT NULL,
    findings TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS events_at ON events(at);
CREATE TABLE IF NOT EXISTS holds (
    id INTEGER PRIMARY KEY, queue_id TEXT NOT NULL, at REAL NOT NULL, reason TEXT NOT NULL,
    source TEXT NOT NULL, sender TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS holds_at ON holds(at);
CREATE TABLE IF NOT EXISTS selfcheck (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, report TEXT NOT NULL);
"""
# The feedback loop's tables (postwarden.store.feedback): by queue ID, by time.
_FEEDBACK_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbound (
    queue_id TEXT PRIMARY KEY, at REAL NOT NULL, source TEXT NOT NULL, origin TEXT NOT NULL,
    env_domain TEXT NOT NULL, from_domain TEXT NOT NULL, signed INTEGER NOT NULL,
    dkim TEXT NOT NULL, spf TEXT NOT NULL, dmarc TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbound_at ON outbound(at);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY, queue_id TEXT NOT NULL, at REAL NOT NULL,
    rcpt_domain TEXT NOT NULL, relay TEXT NOT NULL, status TEXT NOT NULL, dsn TEXT NOT NULL,
    cls TEXT NOT NULL, text TEXT NOT NULL, source TEXT NOT NULL, from_domain TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS deliveries_at ON deliveries(at);
CREATE INDEX IF NOT EXISTS deliveries_source ON deliveries(source, at);
CREATE TABLE IF NOT EXISTS marks (name TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS dmarc_reports (
    report_id TEXT PRIMARY KEY, at REAL NOT NULL, summary TEXT NOT NULL);
"""


class SqliteStore(Store):
    def __init__(self, path: str | Path) -> None:
        super().__init__()
        self.path = str(path)
        self._lock = threading.Lock()
        self._writes = 0
        self._db: sqlite3.Connection | None = None
        self._next_try = 0.0
        self._last_error = ""
        with self._lock:
            try:
                self._connection()
            except StoreError:
                pass  # retried by the first operation; it reports the error then

    def _connection(self) -> sqlite3.Connection:
        """The open connection, or one more try to open it (at most every few seconds,
        so a store that cannot be opened costs mail nothing); StoreError meanwhile."""
        if self._db is not None:
            return self._db
        now = time.monotonic()
        if now < self._next_try:
            raise StoreError(self._last_error)
        db = None
        try:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=BUSY_TIMEOUT_MS / 1000,
                                 isolation_level=None, check_same_thread=False)
            db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute(f"PRAGMA cache_size=-{CACHE_KIB}")
            db.executescript(_SCHEMA)
            db.executescript(_FEEDBACK_SCHEMA)
        except (sqlite3.Error, OSError) as e:
            if db is not None:
                db.close()
            self._next_try = now + REOPEN_EVERY
            self._last_error = f"sqlite {self.path}: {e}"
            raise StoreError(self._last_error) from None
        self._db = db
        return db

    @staticmethod
    def _rollback(db: sqlite3.Connection) -> None:
        """Leave no transaction open after a failure (a full disk can fail COMMIT), or
        every later BEGIN fails and the store never recovers."""
        if db.in_transaction:
            try:
                db.execute("ROLLBACK")
            except sqlite3.Error:
                pass

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One short write transaction; every sqlite error becomes StoreError."""
        with self._lock:
            db = self._connection()
            try:
                db.execute("BEGIN IMMEDIATE")
                yield db
                db.execute("COMMIT")
            except sqlite3.Error as e:
                self._rollback(db)
                raise StoreError(f"sqlite {self.path}: {e}") from None
            except BaseException:
                self._rollback(db)
                raise

    def _read(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        with self._lock:
            db = self._connection()
            try:
                return fn(db)
            except sqlite3.Error as e:
                raise StoreError(f"sqlite {self.path}: {e}") from None

    def _maybe_prune(self, db: sqlite3.Connection, now: float) -> None:
        """Inside a write transaction: every PRUNE_EVERY writes, expired rows go too."""
        self._writes += 1
        if self._writes % PRUNE_EVERY == 0:
            self._prune_rows(db, now)

    def _prune_alone(self, db: sqlite3.Connection, now: float) -> None:
        """The same clean-up in its own transaction, after an autocommit write; a
        failure only delays it (the next write reports a broken store)."""
        try:
            db.execute("BEGIN IMMEDIATE")
            self._prune_rows(db, now)
            db.execute("COMMIT")
        except sqlite3.Error:
            self._rollback(db)

    @staticmethod
    def _prune_rows(db: sqlite3.Connection, now: float) -> None:
        db.execute("DELETE FROM events WHERE at < ?", (now - EVENT_RETENTION,))
        db.execute("DELETE FROM holds WHERE at < ?", (now - HOLD_RETENTION,))
        db.execute("DELETE FROM buckets WHERE tat < ?", (now,))
        db.execute("DELETE FROM counters WHERE updated < ? - 20 * half_life", (now,))

    # --- holds ------------------------------------------------------------------
    def record_hold(self, rec: HoldRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO holds(queue_id, at, reason, source, sender) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (rec.queue_id, rec.when, rec.reason, rec.source, rec.sender))
            self._maybe_prune(db, rec.when)

    def holds(self, since: float = 0.0) -> list[HoldRecord]:
        rows = self._read(lambda db: db.execute(
            "SELECT queue_id, at, reason, source, sender FROM holds WHERE at > ? "
            "ORDER BY at DESC, id DESC", (since,)).fetchall())
        return [HoldRecord(*r) for r in rows]

    # --- rate limits ------------------------------------------------------------
    def rate_take(self, key: str, cost: float, interval: float, burst: float,
                  now: float) -> RateResult:
        """One statement (itself a transaction): the hot path's only write.

        The upsert updates the bucket only if the cost fits (gcra()'s arithmetic in
        SQL) and returns the new TAT; no row back means denied, and only then is the
        bucket read again to say by how much.
        """
        args = {"key": key, "now": now, "cost": cost, "iv": interval, "burst": burst}
        if (cost - burst) * interval <= 1e-9:  # could fit: an empty bucket admits it
            with self._lock:
                db = self._connection()
                try:
                    row = db.execute(_TAKE, args).fetchone()
                except sqlite3.Error as e:
                    self._rollback(db)
                    raise StoreError(f"sqlite {self.path}: {e}") from None
                if row is not None:
                    self._writes += 1
                    if self._writes % PRUNE_EVERY == 0:
                        self._prune_alone(db, now)
                    return RateResult(True, (row[0] - now) / interval, burst, 0.0)
        row = self._read(lambda db: db.execute("SELECT tat FROM buckets WHERE key = ?",
                                               (key,)).fetchone())
        return gcra(row[0] if row else now, now, cost, interval, burst)[1]

    def buckets(self, now: float, limit: int = 50) -> list[BucketState]:
        rows = self._read(lambda db: db.execute(
            "SELECT key, tat, interval, burst FROM buckets WHERE tat > ? "
            "ORDER BY (tat - ?) / interval / burst DESC LIMIT ?",
            (now, now, limit)).fetchall())
        return [BucketState(k, (tat - now) / iv, b, iv) for k, tat, iv, b in rows]

    def bump(self, key: str, amount: float, half_life: float, now: float) -> float:
        with self._tx() as db:
            row = db.execute("SELECT value, updated FROM counters WHERE key = ?",
                             (key,)).fetchone()
            value = (decayed(row[0], row[1], now, half_life) if row else 0.0) + amount
            db.execute("INSERT INTO counters(key, value, updated, half_life) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                       "value = excluded.value, updated = excluded.updated, "
                       "half_life = excluded.half_life",
                       (key, value, max(now, row[1]) if row else now, half_life))
            self._maybe_prune(db, now)
            return value

    # --- events -----------------------------------------------------------------
    def _write_events(self, batch: list[EventRecord]) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO events(at, kind, source, findings) VALUES (?, ?, ?, ?)",
                           [(e.when, e.kind, e.source, e.findings) for e in batch])
            self._maybe_prune(db, batch[-1].when)

    def _read_events(self, since: float, limit: int) -> list[EventRecord]:
        rows = self._read(lambda db: db.execute(
            "SELECT at, kind, source, findings FROM events WHERE at > ? "
            "ORDER BY at DESC, id DESC LIMIT ?", (since, limit)).fetchall())
        return [EventRecord(*r) for r in rows]

    # --- self-check history -----------------------------------------------------
    def record_selfcheck(self, when: float, report_json: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO selfcheck(at, report) VALUES (?, ?)", (when, report_json))
            db.execute("DELETE FROM selfcheck WHERE id NOT IN "
                       "(SELECT id FROM selfcheck ORDER BY at DESC, id DESC LIMIT ?)",
                       (SELFCHECK_KEEP,))

    def selfcheck_history(self, limit: int = 10) -> list[SelfcheckRun]:
        rows = self._read(lambda db: db.execute(
            "SELECT at, report FROM selfcheck ORDER BY at DESC, id DESC LIMIT ?",
            (limit,)).fetchall())
        return [SelfcheckRun(*r) for r in rows]

    # --- feedback ---------------------------------------------------------------
    def record_outbound(self, rec: OutboundRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO outbound(queue_id, at, source, origin, "
                       "env_domain, from_domain, signed, dkim, spf, dmarc) "
                       "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (rec.queue_id, rec.when, rec.source, rec.origin, rec.env_domain,
                        rec.from_domain, int(rec.signed), rec.dkim, rec.spf, rec.dmarc))
            # an index range that is empty on almost every call: pruning stays exact
            db.execute("DELETE FROM outbound WHERE at < ?", (rec.when - retention,))

    @staticmethod
    def _outbound_row(r: tuple[object, ...]) -> OutboundRecord:
        qid, at, src, origin, env, frm, signed, dkim, spf, dmarc = r
        return OutboundRecord(str(qid), float(at), str(src), str(origin),  # type: ignore[arg-type]
                              str(env), str(frm), bool(signed), str(dkim), str(spf), str(dmarc))

    _OUTBOUND_COLS = ("queue_id, at, source, origin, env_domain, from_domain, signed, dkim, "
                      "spf, dmarc")

    def outbound(self, queue_id: str) -> OutboundRecord | None:
        row = self._read(lambda db: db.execute(
            f"SELECT {self._OUTBOUND_COLS} FROM outbound WHERE queue_id = ?",  # noqa: S608
            (queue_id,)).fetchone())
        return self._outbound_row(row) if row else None

    def outbound_since(self, since: float) -> list[OutboundRecord]:
        rows = self._read(lambda db: db.execute(
            f"SELECT {self._OUTBOUND_COLS} FROM outbound WHERE at > ? "  # noqa: S608
            "ORDER BY at DESC", (since,)).fetchall())
        return [self._outbound_row(r) for r in rows]

    def record_delivery(self, rec: DeliveryRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO deliveries(queue_id, at, rcpt_domain, relay, status, dsn, "
                       "cls, text, source, from_domain) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                       (rec.queue_id, rec.when, rec.rcpt_domain, rec.relay, rec.status,
                        rec.dsn, rec.cls, rec.text, rec.source, rec.from_domain))
            # an index range that is empty on almost every call: pruning stays exact
            db.execute("DELETE FROM deliveries WHERE at < ?", (rec.when - retention,))

    def deliveries(self, since: float, source: str | None = None) -> list[DeliveryRecord]:
        cols = "queue_id, at, rcpt_domain, relay, status, dsn, cls, text, source, from_domain"
        if source is None:
            rows = self._read(lambda db: db.execute(
                f"SELECT {cols} FROM deliveries WHERE at > ? "  # noqa: S608
                "ORDER BY at DESC, id DESC", (since,)).fetchall())
        else:
            rows = self._read(lambda db: db.execute(
                f"SELECT {cols} FROM deliveries WHERE source = ? AND at > ? "  # noqa: S608
                "ORDER BY at DESC, id DESC", (source, since)).fetchall())
        return [DeliveryRecord(*r) for r in rows]

    def get_mark(self, name: str) -> str | None:
        row = self._read(lambda db: db.execute("SELECT value FROM marks WHERE name = ?",
                                               (name,)).fetchone())
        return str(row[0]) if row else None

    def set_mark(self, name: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT OR REPLACE INTO marks(name, value) VALUES (?, ?)", (name, value))

    def claim_report(self, report_id: str, when: float, summary: str) -> bool:
        with self._tx() as db:
            cur = db.execute("INSERT OR IGNORE INTO dmarc_reports(report_id, at, summary) "
                             "VALUES (?, ?, ?)", (report_id, when, summary))
            return cur.rowcount == 1

    def reports(self, since: float) -> list[tuple[str, float, str]]:
        rows = self._read(lambda db: db.execute(
            "SELECT report_id, at, summary FROM dmarc_reports WHERE at > ? ORDER BY at DESC",
            (since,)).fetchall())
        return [(str(a), float(b), str(c)) for a, b, c in rows]

    def close(self) -> None:
        try:
            self.flush_events()
        finally:
            self._close()

    def _close(self) -> None:
        with self._lock:
            db, self._db = self._db, None
            self._next_try = float("inf")  # closed for good
            if db is None:
                return
            try:
                db.close()
            except sqlite3.Error as e:
                raise StoreError(f"sqlite {self.path}: {e}") from None
