"""Postfix-style logging: `postwarden[PID]: QUEUEID: warning: ...`.

Set up once at start (syslog facility mail, or stderr for foreground runs and
tests). Repeated warnings about the same thing are flood-limited: the first is
logged, then one line with a count per `repeat_interval`.

Every line passes `logsafe.line_safe` on its way out, and the queue ID is escaped:
callers escape the values they put into key=value pairs (`logsafe.field`), and no byte
anybody forgot can split a line or colour a terminal.
"""

from __future__ import annotations

import os
import sys
import syslog
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TextIO

from postwarden.logsafe import escape, line_safe

IDENT = "postwarden"
# Flood-limit keys remembered at most (one per finding id and From domain, say): past
# this the least recently logged key is forgotten, so a flood of distinct domains costs
# O(1) per line and bounded memory; a forgotten key is merely logged again.
SEEN_MAX = 10000
_FACILITIES = {
    "mail": syslog.LOG_MAIL,
    "daemon": syslog.LOG_DAEMON,
    "user": syslog.LOG_USER,
    **{f"local{i}": getattr(syslog, f"LOG_LOCAL{i}") for i in range(8)},
}
_PRIORITIES = {
    "info": syslog.LOG_INFO,
    "warning": syslog.LOG_WARNING,
    "error": syslog.LOG_ERR,
    "critical": syslog.LOG_CRIT,
    "fatal": syslog.LOG_CRIT,
}


class Logger:
    """One per process. Thread-safe: libmilter calls us from many threads."""

    def __init__(self) -> None:
        self._target = "stderr"
        self._stream: TextIO = sys.stderr
        self._lock = threading.Lock()
        self._repeat_interval = 600.0
        # key -> (last logged, suppressed since), oldest-logged first
        self._seen: OrderedDict[str, tuple[float, int]] = OrderedDict()
        self.clock: Callable[[], float] = time.monotonic
        self._tag = ""
        self._retag()
        os.register_at_fork(after_in_child=self._retag)

    def _retag(self) -> None:
        """`postwarden[PID]: `, kept rather than asking the kernel on every line."""
        self._tag = f"{IDENT}[{os.getpid()}]: "

    def setup(self, target: str = "stderr", facility: str = "mail",
              repeat_interval: float = 600.0, stream: TextIO | None = None) -> None:
        self._target = target
        self._repeat_interval = repeat_interval
        if stream is not None:
            self._stream = stream
        if target == "syslog":
            syslog.openlog(IDENT, syslog.LOG_PID | syslog.LOG_NDELAY, _FACILITIES[facility])

    def _emit(self, level: str, text: str) -> None:
        text = line_safe(text)
        if self._target == "syslog":
            syslog.syslog(_PRIORITIES.get(level, syslog.LOG_INFO), text)
            return
        with self._lock:
            self._stream.write(f"{self._tag}{text}\n")
            self._stream.flush()

    def line(self, level: str, text: str, queue_id: str | None = None) -> None:
        """Postfix layout: queue ID first, then `warning:`/`error:` for those levels."""
        prefix = f"{escape(queue_id)}: " if queue_id else ""
        tag = "" if level == "info" else f"{level}: "
        self._emit(level, f"{prefix}{tag}{text}")

    def info(self, text: str, queue_id: str | None = None) -> None:
        self.line("info", text, queue_id)

    def warning(self, text: str, queue_id: str | None = None) -> None:
        self.line("warning", text, queue_id)

    def error(self, text: str, queue_id: str | None = None) -> None:
        self.line("error", text, queue_id)

    def critical(self, text: str, queue_id: str | None = None) -> None:
        self.line("critical", text, queue_id)

    def limited(self, key: str, level: str, text: str, queue_id: str | None = None) -> bool:
        """Log `text` unless `key` was logged within repeat_interval; True if logged.

        Suppressed repeats are counted and reported with the next line that gets out.
        """
        now = self.clock()
        with self._lock:
            seen = self._seen
            last, suppressed = seen.get(key, (float("-inf"), 0))
            if now - last < self._repeat_interval:
                seen[key] = (last, suppressed + 1)  # keeps its place: ordered by last logged
                return False
            seen[key] = (now, 0)
            seen.move_to_end(key)
            # The front holds the oldest: drop what expired, and past SEEN_MAX the
            # oldest even if fresh. Each key is added once and dropped once: O(1).
            while seen:
                oldest, (t, _n) = next(iter(seen.items()))
                if len(seen) <= SEEN_MAX and now - t < self._repeat_interval:
                    break
                del seen[oldest]
        if suppressed:
            text = f"{text} (repeated {suppressed} times since last logged)"
        self.line(level, text, queue_id)
        return True


log = Logger()
