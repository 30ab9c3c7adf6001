"""Store trouble (issue 7): a full disk, a read-only file system and a locked file.

Real conditions, not mocks: the SQLite file lives on a tiny tmpfs that is filled
up or remounted read-only, or another connection holds an exclusive lock. Mail is
never refused or delayed for it; one `error:` line per condition, one line when the
store is back, and counting resumes.
"""

from __future__ import annotations

import io
import os
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from auth_fakes import FakeResolver, config
from postwarden.log import log
from postwarden.message import Message, Origin
from postwarden.milter.pipeline import Inspector, Services, default_checks, default_fixers
from postwarden.store.sqlite_store import SqliteStore


@pytest.fixture
def tiny_fs(tmp_path: Path) -> Iterator[Path]:
    # Room for the WAL of a few hundred messages (SQLite checkpoints at 1000 pages):
    # the disk must be full because the test fills it, not because the WAL did.
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mnt)], check=True)
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], check=False)


@pytest.fixture
def logbuf() -> Iterator[io.StringIO]:
    buf = io.StringIO()
    log.setup("stderr", repeat_interval=600, stream=buf)
    yield buf
    import sys
    log.setup("stderr", stream=sys.stderr)


def inspector(db: Path) -> Inspector:
    cfg = config(domains=["example.com"])
    services = Services(config=cfg, resolver=FakeResolver({
        ("example.com", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"]}), store=SqliteStore(db))
    return Inspector(services, default_checks(services), default_fixers(services))


def php_message(n: int) -> Message:
    return Message(queue_id=f"Q{n:05d}", origin=Origin.LOCAL, client_addr="127.0.0.1",
                   mail_from="www-data@example.com", rcpts=["owner@example.org"],
                   headers=[("X-PHP-Originating-Script", " 33:contact.php"),
                            ("From", " webmaster@example.com"), ("To", " owner@example.org")],
                   body=f"form message {n}\r\n".encode())


def send(ins: Inspector, first: int, count: int) -> list[str]:
    """The actions; how long each message waits is measured by bench/store_wait.py."""
    return [ins.handle(php_message(n)).decision.action for n in range(first, first + count)]


def errors(buf: io.StringIO) -> list[str]:
    return [line for line in buf.getvalue().splitlines() if ": error:" in line]


def test_disk_full_then_space_again(tiny_fs: Path, logbuf: io.StringIO) -> None:
    ins = inspector(tiny_fs / "state.db")
    actions = send(ins, 0, 3)
    assert actions == ["accept"] * 3
    filler = tiny_fs / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)
    actions = send(ins, 3, 40)
    assert set(actions) <= {"accept", "hold"} and len(actions) == 40
    full = errors(logbuf)
    assert len(full) == 1 and "store unavailable" in full[0] and "full" in full[0]
    filler.unlink()
    actions = send(ins, 43, 30)
    assert "store reachable again" in logbuf.getvalue()
    assert "hold" in actions  # counting resumed: the form limit (burst 5) bites again
    assert len(errors(logbuf)) == 1


def test_unwritable_at_start_then_fixed(tiny_fs: Path, logbuf: io.StringIO) -> None:
    """The state directory cannot be written when the daemon starts (read-only file
    system here; a wrong owner on a real server): mail flows, one error line, and the
    store is opened as soon as the directory is writable again."""
    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    try:
        ins = inspector(tiny_fs / "state.db")
        actions = send(ins, 0, 30)
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(tiny_fs)], check=True)
    assert actions == ["accept"] * 30
    ro = errors(logbuf)
    assert len(ro) == 1 and "unable to open database file" in ro[0]
    time.sleep(2.1)  # the store retries opening every 2 s
    actions = send(ins, 30, 20)
    assert "store reachable again" in logbuf.getvalue()
    assert "hold" in actions
    assert (tiny_fs / "state.db").exists()


def test_locked_file_fails_open_quickly(tmp_path: Path, logbuf: io.StringIO) -> None:
    db = tmp_path / "state.db"
    ins = inspector(db)
    send(ins, 0, 2)
    other = sqlite3.connect(db, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        actions = send(ins, 2, 10)
    finally:
        other.execute("ROLLBACK")
        other.close()
    # no limit enforced while locked: fail open (a wait without end would hang here)
    assert actions == ["accept"] * 10
    locked = errors(logbuf)
    assert len(locked) == 1 and "locked" in locked[0]
    actions = send(ins, 12, 20)
    assert "store reachable again" in logbuf.getvalue()
    assert "hold" in actions
