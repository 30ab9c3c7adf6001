"""Start the feedback reader in the daemon: its own thread, never on the mail path.

It follows Postfix's delivery lines (postwarden.feedback.follow), ties each to the
outbound record the milter stored (postwarden.feedback.attribute), and when a
receiver cites a blocklist runs that list's self-check at once
(postwarden.checks.listnow) and publishes the answer in the daemon's HostState.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from postwarden.checks.listnow import check_list_now
from postwarden.config import Config
from postwarden.dmarc_reports_cli import import_inputs
from postwarden.feedback.attribute import Feedback, extra_replies
from postwarden.feedback.follow import choose
from postwarden.feedback.logline import printable
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


def start_dmarc_watch(live: Live, stop: threading.Event) -> bool:
    """Import DMARC reports arriving in `[feedback] dmarc_maildir`; False when off."""
    cfg, store = live()
    maildir = cfg.feedback.dmarc_maildir
    if not maildir or store is None:
        return False
    log.info(f"feedback: importing DMARC aggregate reports from Maildir {maildir} every "
             f"{cfg.feedback.dmarc_interval}s")
    seen: dict[str, float] = {}  # file -> mtime already imported (the store dedups too)

    def loop() -> None:
        while not stop.is_set():
            current_cfg, current_store = live()
            try:
                fresh = _new_files(maildir, seen)
                if fresh and current_store is not None:
                    out, _bad = import_inputs(current_store, fresh, list(current_cfg.host.ips),
                                              list(current_cfg.host.domains), time.time())
                    _log_import(out)
            except Exception as e:  # a broken Maildir or store: try again next time
                log.limited("feedback.dmarc", "error",
                            f"feedback: DMARC report import failed: {type(e).__name__}: {e}")
            stop.wait(current_cfg.feedback.dmarc_interval)

    threading.Thread(target=loop, name="dmarc_reports", daemon=True).start()
    return True


def _new_files(maildir: str, seen: dict[str, float]) -> list[str]:
    out = []
    for sub in ("new", "cur"):
        d = Path(maildir) / sub
        if not d.is_dir():
            continue
        for f in d.iterdir():
            try:
                mtime = f.stat().st_mtime
            except OSError:
                continue
            # a file an MUA moved new/ -> cur/ is read again: the store's report ids
            # keep it from counting twice
            if f.is_file() and seen.get(f.name) != mtime:
                seen[f.name] = mtime
                out.append(str(f))
    return sorted(out)


def _log_import(out: dict[str, Any]) -> None:
    for r in out["imported"]:
        log.info(f"feedback: DMARC report {r['org']} {r['report_id']} imported: {r['ours']} "
                 f"rows about this host, {len(r['findings'])} finding(s)")
    for r in out["rejected"]:
        log.warning(f"feedback: DMARC report rejected: {r['reason']}")
    for f in out["findings"]:
        level = "info" if f["severity"] == "info" else "warning"
        log.line(level, f"{f['id']}: {printable(str(f['text']), 400)}")
