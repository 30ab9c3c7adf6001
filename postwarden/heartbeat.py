"""The daemon's heartbeat: a small record in the store that says it is alive.

The daemon rewrites it from its flush loop at most every `EVERY` seconds (never
per message, so mail pays nothing for it). `selfcheck` and `status` read it to
say whether the daemon runs, since when, when it last inspected a message and
ran its periodic self-check, and how its store and DNS were doing. A heartbeat
older than `STALE_AFTER` means the daemon is gone or hung.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

from postwarden import __version__

KEY = "heartbeat"
EVERY = 5.0  # seconds between writes
STALE_AFTER = 60.0  # several missed writes: the daemon is not running (or is stuck)


class MetaStore(Protocol):
    def put_meta(self, key: str, value: str) -> None: ...

    def get_meta(self, key: str) -> str | None: ...


@dataclass
class Heartbeat:
    version: str
    pid: int
    started: float
    written: float
    last_message: float = 0.0  # 0: none inspected since start
    last_periodic: float = 0.0  # 0: the periodic self-check has not run yet
    store_ok: bool = True
    dns: str = ""  # "ok", "unknown: WHY", "" = not checked yet
    socket: str = ""
    stopped: float = 0.0  # set by a clean shutdown

    def age(self, now: float) -> float:
        return max(0.0, now - self.written)

    def stale(self, now: float) -> bool:
        return bool(self.stopped) or self.age(now) > STALE_AFTER

    def to_dict(self, now: float) -> dict[str, Any]:
        return {**asdict(self), "age": round(self.age(now), 1), "stale": self.stale(now)}


def read(store: MetaStore) -> Heartbeat | None:
    """The last heartbeat, or None if no daemon ever wrote one (StoreError propagates)."""
    text = store.get_meta(KEY)
    if not text:
        return None
    try:
        d = json.loads(text)
        return Heartbeat(**{k: d[k] for k in Heartbeat.__dataclass_fields__ if k in d})
    except (ValueError, TypeError, KeyError):
        return None


@dataclass
class Beat:
    """What the daemon's threads tell the heartbeat; written by `maybe_write`."""

    socket: str = ""
    started: float = field(default_factory=time.time)
    last_periodic: float = 0.0
    dns: str = ""
    _last_write: float = 0.0
    _dirty: bool = False  # something worth telling at once (a periodic run ended)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def periodic_ran(self, when: float, dns: str) -> None:
        with self._lock:
            self.last_periodic, self.dns, self._dirty = when, dns, True

    def maybe_write(self, store: Any, now: float, store_ok: bool, force: bool = False,
                    stopped: bool = False) -> bool:
        """Write when EVERY seconds have passed (or `force`); StoreError propagates."""
        if not force and not self._dirty and now - self._last_write < EVERY:
            return False
        self._last_write = now
        with self._lock:
            self._dirty = False
            hb = Heartbeat(__version__, os.getpid(), self.started, now,
                           float(getattr(store, "last_event", 0.0)), self.last_periodic,
                           store_ok, self.dns, self.socket, now if stopped else 0.0)
        store.put_meta(KEY, json.dumps(asdict(hb)))
        return True


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min ago"
    return f"{seconds / 3600:.1f} h ago"


def when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def describe(hb: Heartbeat, now: float) -> str:
    """One line: what the daemon last said about itself."""
    parts = [f"postwarden {hb.version} pid {hb.pid} started {when(hb.started)}",
             f"heartbeat {ago(hb.age(now))}"]
    parts.append(f"last message inspected {ago(now - hb.last_message)}" if hb.last_message
                 else "no message inspected since start")
    parts.append(f"last periodic self-check {ago(now - hb.last_periodic)}"
                 if hb.last_periodic else "periodic self-check not run yet")
    parts.append("store ok" if hb.store_ok else "store DOWN")
    if hb.dns:
        parts.append(f"DNS {hb.dns}")
    return ", ".join(parts)
