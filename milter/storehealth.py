"""Whether the store answered last time, and degraded mode while a shared one is away.

One instance per daemon, made by the daemon and handed to the per-message pipeline
(Services.health), the effects stage and the event flush loop, so every writer
reports into the same state (a failure is logged once, its return once) and a test
can look at its own.
"""

from __future__ import annotations

import re
import socket
import threading
import time

from postwarden.log import log
from postwarden.metrics import metrics
from postwarden.store import Store, StoreError
from postwarden.store.base import MAX_PENDING, HoldRecord, RateResult, gcra

_LOG_KEY = "store.unavailable"
_HOST = socket.gethostname()  # queue IDs are unique per host only


class StoreHealth:
    """Remembers that the store failed, so its return is logged once.

    With a shared store (Redis) an outage is degraded mode: each relay enforces every
    rate limit alone, in memory, at `degraded_fraction` of it (several relays each
    taking their own share must not add up to more than the shared limit by much),
    and says so: one `warning:` line when it starts, one when it ends with the count
    of messages passed and held meanwhile, and a store notice `postwarden status`
    shows. The local budgets are dropped on recovery and nothing is replayed into the
    shared buckets, so no message is counted twice.
    """

    LOCAL_KEYS = 10000  # local budgets kept; the emptiest are dropped past this
    # A cluster with one node gone answers for some keys and not others: degraded mode
    # ends only after this many seconds without a failure, or it would flap (a line
    # pair per message) while the history keys' nodes answer and the limit's does not.
    RECOVER_AFTER = 5.0
    # While degraded, one message per second asks the store (a cluster that lost a
    # node can take a second per command to say so); the others go local at once.
    PROBE_EVERY = 1.0

    def __init__(self) -> None:
        self._down = False
        self._degraded = False
        self._lock = threading.Lock()
        self.since = 0.0
        self.passed = 0
        self.held = 0
        self.periods = 0
        self._local: dict[str, float] = {}
        self._last_failure = 0.0
        self._last_probe = 0.0
        self._holds: list[HoldRecord] = []
        self._known: tuple[Store | None, float] = (None, 0.0)

    def know(self, store: Store, fraction: float) -> None:
        """The store and degraded_fraction in use, for failures reported without them
        (the flush timer), so an outage it sees first starts degraded mode too."""
        self._known = (store, fraction)

    @property
    def degraded(self) -> bool:
        return self._degraded

    def failed(self, e: StoreError, what: str, store: Store | None = None,
               now: float | None = None, fraction: float = 0.0) -> None:
        """`store` and `fraction` > 0: a shared store's outage starts degraded mode."""
        metrics.store_errors.inc()
        if store is None:  # the flush timer: what the limits' own calls said
            store, fraction = self._known
        shared = store is not None and store.shared and fraction > 0
        with self._lock:
            self._down = True
            if now is not None:
                self._last_failure = now
            entering = shared and not self._degraded
            if entering:
                self._degraded = True
                self.since = time.time() if now is None else now
                self._last_probe = self.since
                self.passed = self.held = 0
                self._local.clear()
                self.periods += 1
            degraded = self._degraded
        if entering:
            log.warning(f"store unavailable: {e}; degraded mode: each rate limit is "
                        f"enforced by this relay alone at {fraction:.0%} of it, form history "
                        "and activity wait, until the store returns")
            return
        if degraded:
            return  # one line per outage, whatever else fails during it
        # One line per condition (locked, full, read-only, gone), not one per message.
        cause = re.sub(r"[\d.:/]+", "", str(e))[-60:]
        log.limited(f"{_LOG_KEY}|{cause}", "error", f"store unavailable: {e}; {what} not "
                    "enforced (fail open) until it returns")

    def ok(self, store: Store | None = None, now: float | None = None) -> None:
        """The store answered. Callers that only queued (activity, the flush timer
        with nothing to write) pass no store: they cannot end degraded mode."""
        if not self._down:
            return
        if self._degraded and (store is None or now is None
                               or now - self._last_failure < self.RECOVER_AFTER):
            return  # only the limits' own round trips, and only once they keep working
        with self._lock:
            was = self._clear_down()
            degraded, self._degraded = self._degraded, False
            passed, held, since = self.passed, self.held, self.since
            self._local.clear()
        if not was:
            return  # another thread saw the return first
        if not degraded:
            log.info("store reachable again: rate limits and history resumed")
            return
        end = time.time() if now is None else now
        text = (f"degraded mode for {max(end - since, 0):.0f}s from "
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(since))} on {_HOST}: "
                f"store unreachable; {passed} messages passed and {held} held on local "
                "budgets")
        log.warning(f"store reachable again: {text}; shared rate limits resumed")
        if store is not None:
            with self._lock:
                holds, self._holds = self._holds, []
            try:
                store.record_notice(end, text)
                for rec in holds:
                    store.record_hold(rec)
            except StoreError:
                pass  # the next outage began already; the hold lines are in the log

    def record_hold(self, store: Store, rec: HoldRecord) -> None:
        """Keep why a message was held. While degraded the reasons wait in memory (like
        activity events) and are written when the store returns: a held message must
        not wait for a store that is known to be away."""
        with self._lock:
            if self._degraded:
                if len(self._holds) < MAX_PENDING:
                    self._holds.append(rec)
                return
        store.record_hold(rec)

    def skip_store(self, now: float) -> bool:
        """Degraded and this is not the second's probe: do not wait for the store."""
        if not self.degraded:  # the usual case, read without the lock (a bool)
            return False
        with self._lock:
            if not self._degraded:
                return False
            if now - self._last_probe >= self.PROBE_EVERY or now < self._last_probe:
                self._last_probe = now
                return False
            return True

    def _clear_down(self) -> bool:
        was, self._down = self._down, False
        return was

    def local_take(self, key: str, cost: float, interval: float, burst: float,
                   now: float, fraction: float) -> RateResult:
        """The degraded-mode budget: gcra() in memory at `fraction` of the limit."""
        with self._lock:
            if len(self._local) >= self.LOCAL_KEYS:
                for k in [k for k, tat in self._local.items() if tat <= now]:
                    del self._local[k]
                while len(self._local) >= self.LOCAL_KEYS:
                    del self._local[min(self._local, key=self._local.__getitem__)]
            tat, r = gcra(self._local.get(key, now), now, cost, interval / fraction,
                          burst * fraction)
            self._local[key] = tat
            return r

    def local_peek(self, key: str, cost: float, interval: float, burst: float,
                   now: float, fraction: float) -> RateResult:
        """What local_take would answer, taking nothing: the checks only look."""
        with self._lock:
            return gcra(self._local.get(key, now), now, cost, interval / fraction,
                        burst * fraction)[1]

    def count(self, held: bool) -> None:
        if not self.degraded:
            return
        with self._lock:
            if self._degraded:
                self.held += held
                self.passed += not held

    def state(self) -> dict[str, object]:
        """For metrics and the daemon's own status: degraded now, since when, counts."""
        with self._lock:
            return {"degraded": self._degraded, "since": self.since if self._degraded else 0.0,
                    "passed": self.passed, "held": self.held, "periods": self.periods}
