"""Store interface. Backends raise StoreError for any backend failure, so callers
can fail open with one log line instead of catching driver-specific exceptions."""

from __future__ import annotations

import abc
from dataclasses import dataclass


class StoreError(Exception):
    """The backend is unreachable, locked, full or broken."""


@dataclass(frozen=True)
class HoldRecord:
    queue_id: str
    when: float
    reason: str
    source: str
    sender: str


class Store(abc.ABC):
    @abc.abstractmethod
    def record_hold(self, rec: HoldRecord) -> None:
        """Keep why a message was put on the hold queue (Postfix does not log it)."""

    @abc.abstractmethod
    def holds(self, since: float = 0.0) -> list[HoldRecord]:
        """Hold records newer than `since`, newest first."""

    @abc.abstractmethod
    def record_event(self, when: float, kind: str, source: str, findings: str) -> None:
        """One inspected message (kind: origin/action), for status and activity.7d."""

    @abc.abstractmethod
    def close(self) -> None: ...
