"""Whether the store answered last time: its failure is logged once, its return once.

One instance per daemon, made by the daemon and handed to the per-message pipeline
(Services.health) and the event flush loop, so every writer reports into the same
state and a test can look at its own.
"""

from __future__ import annotations

import re
import threading

from postwarden.log import log
from postwarden.metrics import metrics
from postwarden.store import StoreError

_LOG_KEY = "store.unavailable"


class StoreHealth:
    """Remembers that the store failed, so its return is logged once."""

    def __init__(self) -> None:
        self._down = False
        self._lock = threading.Lock()

    @property
    def down(self) -> bool:
        return self._down

    def failed(self, e: StoreError, what: str) -> None:
        metrics.store_errors.inc()
        with self._lock:
            self._down = True
        # One line per condition (locked, full, read-only, gone), not one per message.
        cause = re.sub(r"[\d.:/]+", "", str(e))[-60:]
        log.limited(f"{_LOG_KEY}|{cause}", "error", f"store unavailable: {e}; {what} not "
                    "enforced (fail open) until it returns")

    def ok(self) -> None:
        if not self._down:
            return
        with self._lock:
            was, self._down = self._down, False
        if was:
            log.info("store reachable again: rate limits and history resumed")
