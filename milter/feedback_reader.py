"""Start the feedback reader in the daemon: its own thread, never on the mail path.

It follows Postfix's delivery lines (postwarden.feedback.follow), ties each to the
outbound record the milter stored (postwarden.feedback.attribute), and when a
receiver cites a blocklist runs that list's self-check at once
(postwarden.checks.listnow) and publishes the answer in the daemon's HostState.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from postwarden.checks.listnow import check_list_now
from postwarden.config import Config
from postwarden.feedback.attribute import Feedback, extra_replies
from postwarden.feedback.follow import choose
from postwarden.hoststate import HostState
from postwarden.log import log

Live = Callable[[], tuple[Config, Any]]  # the config and store after any reload


def start(live: Live, host: HostState, stop: threading.Event) -> Feedback | None:
    """Log which source is read and start the thread; None when feedback is off."""
    cfg, store = live()
    fb = cfg.feedback
    if store is None:
        log.info("feedback: off: no store to tie delivery results to")
        return None
    follower, line = choose(fb.source, fb.log_file, fb.journal_identifiers, store,
                            fb.poll_interval, fb.start_at)
    log.info(line)
    if follower is None:
        return None

    def recheck(zone: str) -> object:
        current_cfg, current_store = live()
        return check_list_now(current_cfg, current_store, host, zone)

    handler = Feedback(store, extra_replies(list(fb.replies)), fb.retention, recheck,
                       fb.recheck_interval)

    def run() -> None:
        try:
            follower.run(stop, handler)
        except Exception as e:  # never take the daemon down; say why feedback stopped
            log.error(f"feedback: reader stopped: {type(e).__name__}: {e}")

    threading.Thread(target=run, name="feedback_reader", daemon=True).start()
    return handler
