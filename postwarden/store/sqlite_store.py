"""SQLite backend: the embedded default, one file that survives restarts.

One connection per process behind a lock (libmilter calls us from many threads;
each call is a short transaction, so the lock is held for microseconds). WAL and a
busy timeout let the milter, `postwarden status` and the self-check use the file
at the same time. Rate updates run in `BEGIN IMMEDIATE`, so two processes sharing
the file never both admit the last unit of a bucket.

The file is watched: if it is deleted or replaced while open (a clean-up script, a
restore, `rm`), writes would go on into the old, unlinked inode and `postwarden
status` would read an empty new file and show nothing held. At most once a second
the path is compared with the open file (device and inode); on a change the store
says so in an `error:` line, reopens the path, and leaves a notice in the new file
that `status` shows.

SQLite keeps whatever type was written, so every row read back is checked: a bucket
TAT that is not a plausible number counts as an empty bucket in the upsert itself (the
limit keeps working), and readers delete such rows with one `error:` line each.
"""

from __future__ import annotations

import math
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

from postwarden.store.base import (
    AUDIT_RETENTION,
    EVENT_RETENTION,
    HOLD_RETENTION,
    SEEN_REPEATS,
    SEEN_TTL,
    SELFCHECK_KEEP,
    AuditRecord,
    BucketState,
    EventRecord,
    HoldRecord,
    RateResult,
    SelfcheckRun,
    Store,
    StoreError,
    bad_value,
    decayed,
    gcra,
)
from postwarden.store.feedback import OUTBOUND_RETENTION, DeliveryRecord, OutboundRecord

T = TypeVar("T")


class _Denied(Exception):
    """Raised inside a rate transaction so that it rolls back."""

# What rate_take would read: the bucket's TAT and the message's identity row.
_PEEK = ("SELECT b.tat, s.expires, s.n FROM (SELECT ? AS key, ? AS ident) AS q "
         "LEFT JOIN buckets AS b ON b.key = q.key "
         "LEFT JOIN seen AS s ON s.key = q.key AND s.ident = q.ident")
# The message's identity row, counted: n comes back as 1 for a message not seen (or
# seen so long ago, or stored so badly, that it counts as new), else one more than
# the times it was admitted before. Every right-hand side reads the old row.
_LIVE = ("typeof(expires) IN ('real', 'integer') AND expires > :now "
         "AND typeof(n) = 'integer'")
_SEEN = (f"INSERT INTO seen(key, ident, expires, n) VALUES (:key, :ident, :exp, 1) "  # noqa: S608
         f"ON CONFLICT(key, ident) DO UPDATE SET n = CASE WHEN {_LIVE} THEN n + 1 ELSE 1 END, "
         f"expires = CASE WHEN {_LIVE} THEN expires ELSE :exp END RETURNING n")
# A denied message's count taken back: a new row goes, a counted one is as it was.
_UNSEE_NEW = "DELETE FROM seen WHERE key = :key AND ident = :ident"
_UNSEE = "UPDATE seen SET n = n - 1 WHERE key = :key AND ident = :ident"
# gcra() in one upsert: the bucket moves only if the cost fits (unqualified columns
# in DO UPDATE are the stored row's), RETURNING says whether it did.
# A stored TAT that is not a number, or beyond any burst (MAX_AHEAD), reads as now.
_TAKE = """
INSERT INTO buckets(key, tat, interval, burst) VALUES (:key, :now + :cost * :iv, :iv, :burst)
ON CONFLICT(key) DO UPDATE SET
    tat = max(CASE WHEN typeof(tat) IN ('real', 'integer') AND tat - :now <= 1e9
                   THEN tat ELSE :now END, :now) + :cost * :iv,
    interval = :iv, burst = :burst
WHERE max(CASE WHEN typeof(tat) IN ('real', 'integer') AND tat - :now <= 1e9
               THEN tat ELSE :now END, :now) + :cost * :iv - :now - :burst * :iv <= 1e-9
RETURNING tat
"""
MAX_AHEAD = 1e9  # seconds a TAT may lie ahead; more is a damaged value
PRUNE_EVERY = 500  # writes between clean-ups of expired rows
OUTBOUND_PRUNE_EVERY = 60.0  # seconds of message time between prunes of outbound
BUSY_TIMEOUT_MS = 250  # a locked file must not hold mail up: fail open instead
REOPEN_EVERY = 2.0  # seconds between tries to open a file that could not be opened
# The hot set is the bucket and counter rows plus the B-tree interiors; SQLite's
# default 2 MiB cache mostly ends up holding appended event pages, and filling it made
# the milter's RSS climb for its first ~30k messages (bench/milter_load.py).
CACHE_KIB = 512
CHECK_FILE_EVERY = 1.0  # seconds between checks that the path is still our file

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
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, detail TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS selfcheck (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, report TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS seen (
    key TEXT NOT NULL, ident TEXT NOT NULL, expires REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (key, ident));
CREATE TABLE IF NOT EXISTS notices (
    id INTEGER PRIMARY KEY, at REAL NOT NULL, text TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
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
CREATE TABLE IF NOT EXISTS dmarc_reports (
    report_id TEXT PRIMARY KEY, at REAL NOT NULL, summary TEXT NOT NULL);
"""


class SqliteStore(Store):
    def __init__(self, path: str | Path, create: bool = True, readonly: bool = False,
                 seen_ttl: float = SEEN_TTL) -> None:
        """`create=False` for readers (`status`): a missing file is an error, not a new
        empty store that would report nothing held. `readonly` never writes the file."""
        super().__init__()
        self.path = str(path)
        self._create = create and not readonly
        self.readonly = readonly
        self._seen_ttl = seen_ttl
        self._outbound_pruned = -math.inf  # the last cutoff outbound was pruned to
        self._identity: tuple[int, int] | None = None
        self._next_check = 0.0
        self._lock = threading.Lock()
        self._writes = 0
        self._db: sqlite3.Connection | None = None
        self._next_try = 0.0
        self._last_error = ""
        with self._lock:
            try:
                self._connection()
            except StoreError:
                if readonly:  # a reader has nothing to retry for: say so now
                    raise
                # retried by the first operation; it reports the error then

    def _connection(self) -> sqlite3.Connection:
        """The open connection, or one more try to open it (at most every few seconds,
        so a store that cannot be opened costs mail nothing); StoreError meanwhile."""
        if self._db is not None:
            if self._identity is None or time.monotonic() < self._next_check:
                return self._db
            self._check_file(self._db)
            if self._db is not None:
                return self._db
        now = time.monotonic()
        if now < self._next_try:
            raise StoreError(self._last_error)
        if self.path != ":memory:" and not self._create and not Path(self.path).exists():
            raise StoreError(f"sqlite {self.path}: the store file does not exist "
                             "(never written yet, or deleted: the milter creates it "
                             "again with its next message)")
        if self.readonly:
            return self._open_readonly(now)
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
            self._identity = self._stat()
        except (sqlite3.Error, OSError) as e:
            if db is not None:
                db.close()
            self._next_try = now + REOPEN_EVERY
            self._last_error = f"sqlite {self.path}: {e}"
            raise StoreError(self._last_error) from None
        self._db = db
        self._next_check = time.monotonic() + CHECK_FILE_EVERY
        return db

    def _stat(self) -> tuple[int, int] | None:
        if self.path == ":memory:":
            return None
        st = os.stat(self.path)
        return st.st_dev, st.st_ino

    def _check_file(self, db: sqlite3.Connection) -> None:
        """Under the lock: is the path still the file we have open? If not, reopen it
        and leave a notice in the new file (what was written before is not in it)."""
        self._next_check = time.monotonic() + CHECK_FILE_EVERY
        try:
            now_id: tuple[int, int] | None = self._stat()
        except OSError:
            now_id = None
        if now_id == self._identity:
            return
        what = "deleted" if now_id is None else "replaced by another file"
        text = (f"the store file was {what} while postwarden (pid {os.getpid()}) had it "
                "open; hold reasons, rate-limit buckets and activity written before "
                f"{time.strftime('%Y-%m-%d %H:%M:%S')} are not in this file")
        from postwarden.log import log

        log.error(f"store sqlite {self.path}: the file was {what} while open; reopening "
                  "it. Hold reasons and rate limits recorded before are lost from "
                  "`postwarden status` (the held messages themselves are still on the "
                  "hold queue: postqueue -j)")
        try:
            db.close()
        except sqlite3.Error:
            pass
        self._db, self._identity, self._next_try = None, None, 0.0
        try:
            new = self._connection()
            new.execute("INSERT INTO notices(at, text) VALUES (?, ?)", (time.time(), text))
        except (StoreError, sqlite3.Error):
            pass  # the next operation reports the broken store

    def _open_readonly(self, now: float) -> sqlite3.Connection:
        """Open without ever writing: a monitoring user in the store's group may only
        read the file. `mode=ro` still needs the WAL's -shm to be writable; when it is
        not, `immutable=1` reads the main file as it is (the last checkpoint)."""
        errors = []
        for flags in ("mode=ro", "immutable=1"):
            db = None
            try:
                db = sqlite3.connect(f"file:{Path(self.path).absolute()}?{flags}", uri=True,
                                     timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None,
                                     check_same_thread=False)
                db.execute("SELECT count(*) FROM selfcheck").fetchone()
            except (sqlite3.Error, OSError) as e:
                errors.append(f"{flags}: {e}")
                if db is not None:
                    db.close()
                continue
            self._db = db
            return db
        self._next_try = now + REOPEN_EVERY
        self._last_error = f"sqlite {self.path} (read-only): {'; '.join(errors)}"
        raise StoreError(self._last_error)

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
        if self.readonly:
            raise StoreError(f"sqlite {self.path}: opened read-only")
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
        db.execute("DELETE FROM seen WHERE expires < ?", (now,))
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
            "SELECT id, queue_id, at, reason, source, sender FROM holds WHERE at > ? "
            "ORDER BY at DESC, id DESC", (since,)).fetchall())
        good = self._valid("holds", rows, (str, float, str, str, str))
        return [HoldRecord(str(r[1]), _f(r[2]), str(r[3]), str(r[4]), str(r[5])) for r in good]

    def _valid(self, table: str, rows: list[tuple[object, ...]],
               types: tuple[type, ...]) -> list[tuple[object, ...]]:
        """Rows (id first) whose columns have these types (float: a finite number);
        the others are deleted, one error line each."""
        good, bad = [], []
        for row in rows:
            if all(_is(v, t) for v, t in zip(row[1:], types, strict=True)):
                good.append(row)
            else:
                bad.append(row)
        for row in bad:
            bad_value(f"sqlite {self.path}", f"{table} row {row[0]}",
                      f"{repr(row[1:])[:80]} has the wrong types; deleted")
        if bad:
            try:
                with self._tx() as db:
                    db.executemany(f"DELETE FROM {table} WHERE rowid = ?",  # noqa: S608
                                   [(r[0],) for r in bad])
            except StoreError:
                pass
        return good

    # --- rate limits ------------------------------------------------------------
    def rate_peek(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        # one statement: the bucket and this message's identity row side by side
        row = self._read(lambda db: db.execute(_PEEK, (key, once)).fetchone())
        tat = row[0] if row[0] is not None and _is(row[0], float) else now
        if _f(tat) - now > MAX_AHEAD:
            tat = now  # damaged: rate_take reads it as empty too
        if _is(row[1], float) and _f(row[1]) > now and _is(row[2], int) \
                and 1 <= int(row[2]) <= SEEN_REPEATS:
            return RateResult(True, max(_f(tat) - now, 0.0) / interval, burst, 0.0)
        return gcra(_f(tat), now, cost, interval, burst)[1]

    def rate_take(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        """One statement (itself a transaction): the hot path's only write.

        The upsert updates the bucket only if the cost fits (gcra()'s arithmetic in
        SQL) and returns the new TAT; no row back means denied, and only then is the
        bucket read again to say by how much.
        """
        args = {"key": key, "now": now, "cost": cost, "iv": interval, "burst": burst}
        fits = (cost - burst) * interval <= 1e-9  # an empty bucket admits it
        if once and fits:
            try:
                return self._take_once(key, once, now, interval, burst, args)
            except _Denied:
                pass  # rolled back: the identity is not remembered for a denied message
        elif fits:
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
        tat = row[0] if row else now
        if not _is(tat, float) or tat - now > MAX_AHEAD:
            bad_value(f"sqlite {self.path}", f"bucket {key}", f"TAT {tat!r}; read as empty")
            tat = now
        return gcra(tat, now, cost, interval, burst)[1]

    def _take_once(self, key: str, once: str, now: float, interval: float, burst: float,
                   args: dict[str, object]) -> RateResult:
        """The identity counted, then the upsert; _Denied when it does not fit.

        Two statements, each its own transaction (no BEGIN/COMMIT on the hot path):
        the identity row first (RETURNING says how often this message was admitted
        before), then, for a message not seen, the units. A denial takes the count
        back, so the message's retry is judged again. A crash between the two can
        only let that one message's retry through without a unit."""
        if self.readonly:
            raise StoreError(f"sqlite {self.path}: opened read-only")
        with self._lock:
            db = self._connection()
            try:
                (n,) = db.execute(_SEEN, {"key": key, "ident": once, "now": now,
                                          "exp": now + self._seen_ttl}).fetchone()
                if 1 <= int(n) - 1 <= SEEN_REPEATS:
                    b = db.execute("SELECT tat FROM buckets WHERE key = ?", (key,)).fetchone()
                    tat = b[0] if b and _is(b[0], float) and _f(b[0]) - now <= MAX_AHEAD \
                        else now
                    return RateResult(True, max(_f(tat) - now, 0.0) / interval, burst, 0.0)
                row = db.execute(_TAKE, args).fetchone()
                if row is None:
                    db.execute(_UNSEE_NEW if int(n) == 1 else _UNSEE,
                               {"key": key, "ident": once})
                    raise _Denied
                self._writes += 1
                if self._writes % PRUNE_EVERY == 0:
                    self._prune_alone(db, now)
                return RateResult(True, (row[0] - now) / interval, burst, 0.0)
            except sqlite3.Error as e:
                self._rollback(db)
                raise StoreError(f"sqlite {self.path}: {e}") from None

    def buckets(self, now: float, limit: int = 50) -> list[BucketState]:
        rows = self._read(lambda db: db.execute(
            "SELECT rowid, key, tat, interval, burst FROM buckets WHERE tat > ? "
            "OR typeof(tat) NOT IN ('real', 'integer') OR typeof(interval) NOT IN "
            "('real', 'integer') OR typeof(burst) NOT IN ('real', 'integer') "
            "OR interval <= 0 OR burst <= 0 OR tat - ? > ?",
            (now, now, MAX_AHEAD)).fetchall())
        out = []
        for row in self._valid("buckets", rows, (str, float, float, float)):
            key, tat, iv, b = str(row[1]), _f(row[2]), _f(row[3]), _f(row[4])
            if iv <= 0 or b <= 0 or tat - now > MAX_AHEAD:
                self._drop_bucket(row)
            elif tat > now:
                out.append(BucketState(key, (tat - now) / iv, b, iv))
        out.sort(key=lambda st: st.used / st.burst, reverse=True)
        return out[:limit]

    def _drop_bucket(self, row: tuple[object, ...]) -> None:
        bad_value(f"sqlite {self.path}", f"bucket {row[1]}", f"{row[2:]!r}; deleted")
        try:
            with self._tx() as db:
                db.execute("DELETE FROM buckets WHERE rowid = ?", (row[0],))
        except StoreError:
            pass

    def bump(self, key: str, amount: float, half_life: float, now: float) -> float:
        with self._tx() as db:
            row = db.execute("SELECT value, updated FROM counters WHERE key = ?",
                             (key,)).fetchone()
            if row is not None and not (_is(row[0], float) and _is(row[1], float)):
                bad_value(f"sqlite {self.path}", f"counter {key}",
                          f"{row!r} is not numbers; reset to zero")
                row = None
            value = (decayed(row[0], row[1], now, half_life) if row else 0.0) + amount
            db.execute("INSERT INTO counters(key, value, updated, half_life) "
                       "VALUES (?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET "
                       "value = excluded.value, updated = excluded.updated, "
                       "half_life = excluded.half_life",
                       (key, value, max(now, row[1]) if row else now, half_life))
            self._maybe_prune(db, now)
            return value

    def counter(self, key: str, half_life: float, now: float) -> float:
        row = self._read(lambda db: db.execute(
            "SELECT value, updated FROM counters WHERE key = ?", (key,)).fetchone())
        if row is None or not (_is(row[0], float) and _is(row[1], float)):
            return 0.0
        return decayed(_f(row[0]), _f(row[1]), now, half_life)

    # --- events -----------------------------------------------------------------
    def _write_events(self, batch: list[EventRecord]) -> None:
        with self._tx() as db:
            db.executemany("INSERT INTO events(at, kind, source, findings) VALUES (?, ?, ?, ?)",
                           [(e.when, e.kind, e.source, e.findings) for e in batch])
            self._maybe_prune(db, batch[-1].when)

    def _read_events(self, since: float, limit: int) -> list[EventRecord]:
        rows = self._read(lambda db: db.execute(
            "SELECT id, at, kind, source, findings FROM events WHERE at > ? "
            "ORDER BY at DESC, id DESC LIMIT ?", (since, limit)).fetchall())
        good = self._valid("events", rows, (float, str, str, str))
        return [EventRecord(_f(r[1]), str(r[2]), str(r[3]), str(r[4])) for r in good]

    def rate_reset(self, key: str) -> bool:
        with self._tx() as db:
            return db.execute("DELETE FROM buckets WHERE key = ?", (key,)).rowcount > 0

    # --- operator audit trail -----------------------------------------------------
    def record_audit(self, rec: AuditRecord) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO audit(at, actor, action, target, detail) "
                       "VALUES (?, ?, ?, ?, ?)",
                       (rec.when, rec.actor, rec.action, rec.target, rec.detail))
            db.execute("DELETE FROM audit WHERE at < ?", (rec.when - AUDIT_RETENTION,))

    def audit(self, since: float = 0.0) -> list[AuditRecord]:
        rows = self._read(lambda db: db.execute(
            "SELECT at, actor, action, target, detail FROM audit WHERE at > ? "
            "ORDER BY at DESC, id DESC", (since,)).fetchall())
        return [AuditRecord(*r) for r in rows]

    # --- self-check history -----------------------------------------------------
    def record_selfcheck(self, when: float, report_json: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO selfcheck(at, report) VALUES (?, ?)", (when, report_json))
            db.execute("DELETE FROM selfcheck WHERE id NOT IN "
                       "(SELECT id FROM selfcheck ORDER BY at DESC, id DESC LIMIT ?)",
                       (SELFCHECK_KEEP,))

    def selfcheck_history(self, limit: int = 10) -> list[SelfcheckRun]:
        rows = self._read(lambda db: db.execute(
            "SELECT id, at, report FROM selfcheck ORDER BY at DESC, id DESC LIMIT ?",
            (limit,)).fetchall())
        good = self._valid("selfcheck", rows, (float, str))
        return [SelfcheckRun(_f(r[1]), str(r[2])) for r in good]

    def record_notice(self, when: float, text: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO notices(at, text) VALUES (?, ?)", (when, text))

    def notices(self) -> list[tuple[float, str]]:
        rows = self._read(lambda db: db.execute(
            "SELECT id, at, text FROM notices ORDER BY at DESC, id DESC LIMIT 20").fetchall())
        return [(_f(r[1]), str(r[2])) for r in self._valid("notices", rows, (float, str))]

    # --- named values -------------------------------------------------------------
    def put_meta(self, key: str, value: str) -> None:
        with self._tx() as db:
            db.execute("INSERT INTO meta(key, value) VALUES (?, ?) ON CONFLICT(key) "
                       "DO UPDATE SET value = excluded.value", (key, value))

    def get_meta(self, key: str) -> str | None:
        row = self._read(lambda db: db.execute(
            "SELECT value FROM meta WHERE key = ?", (key,)).fetchone())
        return None if row is None else str(row[0])

    # --- feedback ---------------------------------------------------------------
    def record_outbound(self, rec: OutboundRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        # Each statement its own transaction (one record per message on the hot path:
        # no BEGIN/COMMIT round trips); a crash between them only delays pruning.
        if self.readonly:
            raise StoreError(f"sqlite {self.path}: opened read-only")
        with self._lock:
            db = self._connection()
            try:
                db.execute("INSERT OR REPLACE INTO outbound(queue_id, at, source, origin, "
                           "env_domain, from_domain, signed, dkim, spf, dmarc) "
                           "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                           (rec.queue_id, rec.when, rec.source, rec.origin, rec.env_domain,
                            rec.from_domain, int(rec.signed), rec.dkim, rec.spf, rec.dmarc))
                # at most once a minute (a write transaction even when it deletes
                # nothing): a record is kept for `retention`, and at most a minute more
                cutoff = rec.when - retention
                if cutoff >= self._outbound_pruned + OUTBOUND_PRUNE_EVERY:
                    db.execute("DELETE FROM outbound WHERE at < ?", (cutoff,))
                    self._outbound_pruned = cutoff
            except sqlite3.Error as e:
                self._rollback(db)
                raise StoreError(f"sqlite {self.path}: {e}") from None

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


def _is(value: object, t: type) -> bool:
    """SQLite returns what was stored: check the type (float: any finite number)."""
    if t is float:
        return (isinstance(value, (int, float)) and not isinstance(value, bool)
                and math.isfinite(value))
    return isinstance(value, t)


def _f(value: object) -> float:
    assert isinstance(value, (int, float))
    return float(value)
