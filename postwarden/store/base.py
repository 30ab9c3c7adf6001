"""Store interface. Backends raise StoreError for any backend failure, so callers
can fail open with one log line instead of catching driver-specific exceptions.

Time is passed in (`now`, `when`), so tests simulate an hour without sleeping. The
SQLite backend (one host) uses it as given; the Redis backend's rate and counter
scripts use the server's clock instead (a shared store must not let the relays'
clocks disagree about a limit), unless built with server_clock=False for tests.
"""

from __future__ import annotations

import abc
import threading
from dataclasses import dataclass

from postwarden.store.feedback import OUTBOUND_RETENTION, DeliveryRecord, OutboundRecord

EVENT_RETENTION = 8 * 86400  # the self-check reports 7 days of activity
HOLD_RETENTION = 30 * 86400
SELFCHECK_KEEP = 1000
NOTICES_KEEP = 20
SEEN_REPEATS = 3  # retries of one identity admitted free; more count (the identity
# includes sender-chosen parts, so it must not become a way around a limit)
SEEN_TTL = 900.0  # seconds a counted message identity is remembered: Postfix retries
# a tempfailed session within minutes (queue_run_delay 300 s, minimal_backoff_time 300 s)
EVENT_BATCH = 200  # queued events written in one transaction / one round trip
MAX_PENDING = 20000  # events kept in memory while the backend is down; older are dropped


class StoreError(Exception):
    """The backend is unreachable, locked, full or broken."""


def bad_value(where: str, what: str, why: str) -> None:
    """One `error:` line per bad stored value (reset or removed by the caller): a value
    nobody but postwarden should write was changed by someone, or the store is damaged."""
    from postwarden.log import log  # the store is imported by log's users; no cycle

    log.limited(f"store.bad|{where}|{what}", "error",
                f"store {where}: bad value under {what}: {why}")


@dataclass(frozen=True)
class HoldRecord:
    queue_id: str
    when: float
    reason: str
    source: str
    sender: str


@dataclass(frozen=True)
class RateResult:
    """One GCRA decision. `used` is in units (messages or recipients) of `burst`."""

    allowed: bool
    used: float
    burst: float
    retry_after: float


@dataclass(frozen=True)
class BucketState:
    """A non-empty rate bucket, for `postwarden status`."""

    key: str
    used: float
    burst: float
    interval: float  # seconds per unit: window / rate

    @property
    def rate_per_hour(self) -> float:
        return 3600.0 / self.interval if self.interval > 0 else 0.0


@dataclass(frozen=True)
class EventRecord:
    when: float
    kind: str  # "origin/action", e.g. "local/hold"
    source: str
    findings: str  # comma-separated finding ids, "" for none


@dataclass
class Activity:
    """Per-source counts: what the self-check's 7-day activity report shows."""

    messages: int = 0
    form_messages: int = 0
    holds: int = 0
    ratelimit_hits: int = 0


@dataclass(frozen=True)
class AuditRecord:
    """One operator action (release, delete, rate-limit reset): who, when, on what."""

    when: float
    actor: str  # the login that ran the command (SUDO_USER or the user)
    action: str  # "release" | "delete" | "ratelimit.reset"
    target: str  # queue ID or bucket key
    detail: str  # e.g. the hold reason or the bucket level before the reset


AUDIT_RETENTION = 90 * 86400


@dataclass(frozen=True)
class SelfcheckRun:
    when: float
    report_json: str


def gcra(tat: float, now: float, cost: float, interval: float,
         burst: float) -> tuple[float, RateResult]:
    """Pure GCRA step (the Redis Lua script is the same arithmetic): new TAT + result.

    A bucket holds at most `burst` units; one unit drains every `interval` seconds.
    From idle, `burst` messages pass at once, then one per interval: over a window
    at most burst + rate pass. A denied request does not change the bucket.
    """
    base = max(tat, now)
    new_tat = base + cost * interval
    over = new_tat - now - burst * interval
    if over > 1e-9:
        return tat, RateResult(False, (base - now) / interval, burst, over)
    return new_tat, RateResult(True, (new_tat - now) / interval, burst, 0.0)


def decayed(value: float, updated: float, now: float, half_life: float) -> float:
    """An exponentially decaying counter read at `now`."""
    if now <= updated:
        return value
    return float(value * 0.5 ** ((now - updated) / half_life))


class Store(abc.ABC):
    """Events are queued and written in batches: the activity record is statistics,
    so a message should not wait for its own transaction or round trip. The daemon
    flushes twice a second, readers in the same process flush first, and a failed
    batch stays queued (up to MAX_PENDING) for the next try."""

    def __init__(self) -> None:
        self._pending: list[EventRecord] = []
        self._pending_lock = threading.Lock()
        self.events_dropped = 0
        self.last_event = 0.0

    # --- hold reasons -------------------------------------------------------
    @abc.abstractmethod
    def record_hold(self, rec: HoldRecord) -> None:
        """Keep why a message was put on the hold queue (Postfix does not log it)."""

    @abc.abstractmethod
    def holds(self, since: float = 0.0) -> list[HoldRecord]:
        """Hold records newer than `since`, newest first."""

    # --- rate limits ----------------------------------------------------------
    @abc.abstractmethod
    def rate_take(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        """Atomically take `cost` units from the GCRA bucket `key` if they fit.

        O(1) state per key; safe with many threads and processes (and, for Redis,
        many MTAs): concurrent callers never admit more than the bucket allows.
        `once`: the message's identity. A message already admitted by this bucket
        within the last SEEN_TTL seconds is admitted again without taking units (a
        retried SMTP session, a relay restarted mid-message: one message, one unit),
        up to SEEN_REPEATS times; past that each copy counts again.
        """

    @abc.abstractmethod
    def rate_peek(self, key: str, cost: float, interval: float, burst: float,
                  now: float, once: str = "") -> RateResult:
        """What rate_take would answer now, changing nothing: the checks ask this, and
        the units are taken only once the decision keeps the message."""

    @abc.abstractmethod
    def buckets(self, now: float, limit: int = 50) -> list[BucketState]:
        """Non-empty buckets at `now`, fullest (relative to burst) first."""

    @abc.abstractmethod
    def bump(self, key: str, amount: float, half_life: float, now: float) -> float:
        """Add to an exponentially decaying counter and return its new value.

        Used for "same body again from this source" and "far above the usual rate".
        Counters that decayed to nothing are forgotten by the backend.
        """

    @abc.abstractmethod
    def counter(self, key: str, half_life: float, now: float) -> float:
        """A decaying counter's value at `now`, changing nothing (0 when there is none
        or it is damaged: bump then resets it). The checks read, effects bump."""

    # --- events, for status and the self-check's activity report --------------
    def record_event(self, when: float, kind: str, source: str, findings: str) -> None:
        """Queue one inspected message (kind: origin/action) for status and activity.7d.

        Raises StoreError only when it had to write a full batch and could not.
        """
        self.last_event = when  # read by the daemon's heartbeat
        with self._pending_lock:
            self._pending.append(EventRecord(when, kind, source, findings))
            # Every EVENT_BATCH events, not on each one past it: while the backend is
            # down, messages must not each pay for another failed write.
            full = len(self._pending) % EVENT_BATCH == 0
        if full:
            self.flush_events()

    def flush_events(self) -> None:
        """Write the queued events; on failure they stay queued and StoreError is raised."""
        with self._pending_lock:
            batch, self._pending = self._pending, []
        if not batch:
            return
        try:
            self._write_events(batch)
        except StoreError:
            with self._pending_lock:
                kept = batch + self._pending
                self.events_dropped += max(0, len(kept) - MAX_PENDING)
                self._pending = kept[-MAX_PENDING:]
            raise

    @abc.abstractmethod
    def _write_events(self, batch: list[EventRecord]) -> None:
        """Append events atomically (all or none), pruning those past EVENT_RETENTION."""

    def events(self, since: float, limit: int = 10000) -> list[EventRecord]:
        """Events newer than `since`, newest first (kept EVENT_RETENTION seconds)."""
        self.flush_events()
        return self._read_events(since, limit)

    @abc.abstractmethod
    def _read_events(self, since: float, limit: int) -> list[EventRecord]: ...

    def activity(self, since: float) -> dict[str, Activity]:
        """Per-source counts of messages, form messages, holds and rate-limit hits."""
        out: dict[str, Activity] = {}
        for ev in self.events(since, limit=1_000_000):
            a = out.setdefault(ev.source, Activity())
            ids = ev.findings.split(",") if ev.findings else []
            a.messages += 1
            a.form_messages += "form.detected" in ids
            a.holds += ev.kind.endswith("/hold")
            a.ratelimit_hits += "ratelimit.exceeded" in ids
        return out

    # Shared by several relays (rate limits are then per site, not per host): its
    # outage is degraded mode, with local budgets (milter/ratelimit.py).
    shared = False

    def notices(self) -> list[tuple[float, str]]:
        """(when, text) of things about the store itself an operator must know (the
        file was replaced while the milter ran, a degraded-mode period), newest first."""
        return []

    @abc.abstractmethod
    def record_notice(self, when: float, text: str) -> None:
        """Keep one notice for `notices()` (the newest NOTICES_KEEP are kept)."""

    @abc.abstractmethod
    def rate_reset(self, key: str) -> bool:
        """Empty the bucket `key`; False if it was already empty (or never existed)."""

    # --- operator audit trail -------------------------------------------------
    @abc.abstractmethod
    def record_audit(self, rec: AuditRecord) -> None:
        """Keep one operator action (kept AUDIT_RETENTION seconds)."""

    @abc.abstractmethod
    def audit(self, since: float = 0.0) -> list[AuditRecord]:
        """Audit records newer than `since`, newest first."""

    # --- self-check history ---------------------------------------------------
    @abc.abstractmethod
    def record_selfcheck(self, when: float, report_json: str) -> None:
        """Keep one self-check report (the newest SELFCHECK_KEEP are kept)."""

    @abc.abstractmethod
    def selfcheck_history(self, limit: int = 10) -> list[SelfcheckRun]:
        """The newest `limit` self-check reports, newest first."""

    # --- small named values (daemon heartbeat, probe secret and sightings) ------
    @abc.abstractmethod
    def put_meta(self, key: str, value: str) -> None:
        """Set one small named value (overwrites)."""

    @abc.abstractmethod
    def get_meta(self, key: str) -> str | None:
        """The value set by put_meta, or None if never set."""

    # --- feedback: what left, what receivers answered (postwarden.feedback) --------
    @abc.abstractmethod
    def record_outbound(self, rec: OutboundRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        """Keep one outbound message by queue ID (a later record for the same ID
        replaces it); records older than `retention` before rec.when are pruned."""

    @abc.abstractmethod
    def outbound(self, queue_id: str) -> OutboundRecord | None:
        """The outbound record of this queue ID, or None (never seen, or pruned)."""

    @abc.abstractmethod
    def outbound_since(self, since: float) -> list[OutboundRecord]:
        """Outbound records newer than `since`, newest first."""

    @abc.abstractmethod
    def record_delivery(self, rec: DeliveryRecord,
                        retention: float = OUTBOUND_RETENTION) -> None:
        """Keep one delivery attempt; those older than `retention` are pruned."""

    @abc.abstractmethod
    def deliveries(self, since: float, source: str | None = None) -> list[DeliveryRecord]:
        """Delivery attempts newer than `since` (of one source), newest first."""

    @abc.abstractmethod
    def claim_report(self, report_id: str, when: float, summary: str) -> bool:
        """Remember a DMARC aggregate report id; False when it was already there
        (a duplicate is imported once). `summary` is its JSON digest."""

    @abc.abstractmethod
    def reports(self, since: float) -> list[tuple[str, float, str]]:
        """(report id, when imported, summary JSON) newer than `since`, newest first."""

    @abc.abstractmethod
    def close(self) -> None: ...
