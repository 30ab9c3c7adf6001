"""The daemon's heartbeat, judged: is postwarden running while Postfix sends?

`milter.reachable` says whether the socket answers now; the heartbeat says what
the daemon itself last reported (version, start, last inspected message, last
periodic self-check, store and DNS health). A stale heartbeat while Postfix is
running is a warning: mail flows and nothing inspects it.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from postwarden import heartbeat
from postwarden.checks.postfix_audit import PostfixFacts
from postwarden.checks.report import CheckResult
from postwarden.findings import Finding
from postwarden.heartbeat import ago, describe, when

ID = "milter.heartbeat"


def postfix_running(facts: PostfixFacts | None) -> bool | None:
    """Postfix's master is alive (its pid file names a live process); None: cannot tell."""
    if facts is None:
        return None
    queue = facts.main.get("queue_directory", "/var/spool/postfix")
    pidfile = Path(queue) / "pid" / "master.pid"
    try:
        pid = int(pidfile.read_text().split()[0])
    except FileNotFoundError:
        return False
    except (OSError, ValueError, IndexError):
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def check_heartbeat(store: Any, now: float, postfix_up: bool | None,
                    socket_answers: bool) -> Finding:
    """`milter.heartbeat` from the store (None store: unknown)."""
    if store is None:
        return CheckResult(ID, "", "unknown", "store unavailable: the daemon's heartbeat "
                           "cannot be read", ("Check [store] and its permissions",), {})
    try:
        hb = heartbeat.read(store)
    except Exception as e:  # StoreError and driver errors: say so, never ok
        return CheckResult(ID, "", "unknown", f"cannot read the heartbeat: {e}", (), {})
    if hb is None:
        return CheckResult(ID, "", "info" if socket_answers else "warning",
                           "no heartbeat in the store: the daemon has not run with this "
                           "store (or with [store] as configured here)",
                           ("Start the daemon with the same [store] as this config",),
                           {"heartbeat": None, "postfix_running": postfix_up})
    d: dict[str, Any] = {"heartbeat": hb.to_dict(now), "postfix_running": postfix_up}
    if not hb.stale(now):
        bad = [] if hb.store_ok else ["store down"]
        if hb.dns.startswith("unknown"):
            bad.append("its DNS is failing")
        return CheckResult(ID, str(hb.pid), "warning" if bad else "ok",
                           ("daemon running, but " + " and ".join(bad) + ": " if bad else
                            "daemon running: ") + describe(hb, now), (), d)
    what = (f"daemon stopped at {when(hb.stopped)}" if hb.stopped
            else f"daemon heartbeat is stale ({ago(hb.age(now))}): not running or hung")
    if postfix_up:
        return CheckResult(ID, str(hb.pid), "warning",
                           f"{what} while Postfix is running: mail passes unchecked",
                           ("systemctl start postwarden; journalctl -u postwarden says why it "
                            "stopped",), d)
    state = "not running" if postfix_up is False else "in an unknown state"
    return CheckResult(ID, str(hb.pid), "info", f"{what}; Postfix is {state}", (), d)
