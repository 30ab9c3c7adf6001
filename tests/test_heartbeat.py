"""The daemon's heartbeat: written at most every EVERY seconds, judged by the self-check."""

from __future__ import annotations

from pathlib import Path

from postwarden import heartbeat
from postwarden.checks import daemon_state
from postwarden.store.sqlite_store import SqliteStore

T0 = 1_800_000_000.0


def test_written_at_most_every_few_seconds_and_read_back(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    beat = heartbeat.Beat(socket="unix:/x.sock", started=T0)
    assert heartbeat.read(s) is None
    assert beat.maybe_write(s, T0, True)
    assert not beat.maybe_write(s, T0 + heartbeat.EVERY / 2, True)  # not per message
    s.record_event(T0 + 3, "local/accept", "uid:0", "")
    beat.periodic_ran(T0 + 4, "ok")
    assert beat.maybe_write(s, T0 + heartbeat.EVERY, False)
    hb = heartbeat.read(s)
    assert hb is not None and hb.written == T0 + heartbeat.EVERY and hb.last_message == T0 + 3
    assert hb.last_periodic == T0 + 4 and hb.dns == "ok" and not hb.store_ok
    assert not hb.stale(T0 + 20) and hb.stale(T0 + 20 + heartbeat.STALE_AFTER)
    s.close()


def test_judged_with_postfix_running(tmp_path: Path) -> None:
    s = SqliteStore(tmp_path / "s.db")
    r = daemon_state.check_heartbeat(s, T0, True, socket_answers=False)
    assert r.status == "warning" and "no heartbeat" in r.summary
    beat = heartbeat.Beat(started=T0)
    beat.maybe_write(s, T0, True)
    assert daemon_state.check_heartbeat(s, T0 + 5, True, True).status == "ok"
    stale = T0 + heartbeat.STALE_AFTER + 1
    r = daemon_state.check_heartbeat(s, stale, True, False)
    assert r.status == "warning" and "while Postfix is running" in r.summary
    assert daemon_state.check_heartbeat(s, stale, False, False).status == "info"
    beat.maybe_write(s, T0 + 30, True, force=True, stopped=True)
    r = daemon_state.check_heartbeat(s, T0 + 31, True, False)
    assert r.status == "warning" and "daemon stopped at" in r.summary
    assert daemon_state.check_heartbeat(None, T0, True, True).status == "unknown"
    s.close()
