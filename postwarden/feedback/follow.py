"""Follow Postfix's log: a file (rotation by rename or truncation) or the journal.

The position is kept in the store (a file's inode and byte offset, the journal's
cursor) and written right after every line the handler consumed, so a restart
resumes after the last line counted: nothing is counted twice, nothing is missed.
A file renamed away while the daemon was down is found again by its inode in the
same directory (mail.log.1) and read to its end first.

A follower never raises into the daemon: an unreadable file or a dead journalctl
is logged (rate-limited) and retried.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import threading
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any, Protocol

from postwarden.log import log
from postwarden.store import Store, StoreError

Handle = Callable[[str], bool]  # one line -> True when it changed the store (a delivery)
DEFAULT_LOG_FILES = ("/var/log/mail.log", "/var/log/maillog")
SAVE_EVERY = 200  # lines between saves of the position when no delivery line came


class Follower(Protocol):
    def describe(self) -> str: ...

    def run(self, stop: threading.Event, handle: Handle) -> None: ...


def _save(store: Store, name: str, value: str) -> None:
    try:
        store.put_meta(name, value)
    except StoreError as e:
        log.limited("feedback.mark", "error", f"feedback: cannot save the log position: {e}; "
                    "after a restart some lines may be read again")


class FileFollower:
    def __init__(self, path: str, store: Store, poll: float = 0.5,
                 start_at: str = "end") -> None:
        self.path = path
        self.store = store
        self.poll = poll
        self.start_at = start_at
        self.mark = f"feedback:file:{path}"

    def describe(self) -> str:
        return f"file {self.path}"

    def _load(self) -> tuple[int, int] | None:
        try:
            raw = self.store.get_meta(self.mark)
        except StoreError:
            return None
        try:
            ino, off = (raw or "").split(":")
            return int(ino), int(off)
        except ValueError:
            return None

    def _rotated(self, inode: int) -> Path | None:
        """The file with this inode next to the log (renamed by logrotate), if any."""
        p = Path(self.path)
        try:
            for cand in p.parent.iterdir():
                if cand.name.startswith(p.name) and cand != p and cand.stat().st_ino == inode:
                    return cand
        except OSError:
            return None
        return None

    def _drain(self, fh: IO[bytes], inode: int, handle: Handle,
               stop: threading.Event) -> int:
        """Every complete line from the current offset; the position saved as we go."""
        n = since_save = 0
        while not stop.is_set():
            start = fh.tell()
            raw = fh.readline()
            if not raw:
                break
            if not raw.endswith(b"\n"):  # a line still being written: wait for the rest
                fh.seek(start)
                break
            n += 1
            since_save += 1
            changed = False
            try:
                changed = handle(raw[:-1].decode("utf-8", "replace"))
            except Exception as e:  # one bad line must not stop the reader
                log.limited("feedback.handle", "error",
                            f"feedback: line skipped: {type(e).__name__}: {e}")
            if changed or since_save >= SAVE_EVERY:
                _save(self.store, self.mark, f"{inode}:{fh.tell()}")
                since_save = 0
        if since_save:
            _save(self.store, self.mark, f"{inode}:{fh.tell()}")
        return n

    def _open(self) -> tuple[IO[bytes], int]:
        fh = open(self.path, "rb")
        return fh, os.fstat(fh.fileno()).st_ino

    def _first_open(self, stop: threading.Event, handle: Handle) -> tuple[IO[bytes], int]:
        fh, inode = self._open()
        size = os.fstat(fh.fileno()).st_size
        mark = self._load()
        if mark is None:
            if self.start_at == "end":
                fh.seek(size)
            _save(self.store, self.mark, f"{inode}:{fh.tell()}")
            return fh, inode
        old_ino, off = mark
        if old_ino == inode:
            fh.seek(off if off <= size else 0)  # shorter: truncated while we were down
            return fh, inode
        old = self._rotated(old_ino)
        if old is not None:  # renamed while we were down: finish it first
            with open(old, "rb") as ofh:
                ofh.seek(off if off <= os.fstat(ofh.fileno()).st_size else 0)
                self._drain(ofh, old_ino, handle, stop)
        else:
            log.warning(f"feedback: {self.path} was rotated while postwarden was down and "
                        "the old file is gone (compressed?): its last lines are not counted")
        _save(self.store, self.mark, f"{inode}:0")
        return fh, inode

    def run(self, stop: threading.Event, handle: Handle) -> None:
        fh: IO[bytes] | None = None
        inode = 0
        while not stop.is_set():
            try:
                if fh is None:
                    fh, inode = self._first_open(stop, handle)
                got = self._drain(fh, inode, handle, stop)
                try:
                    st = os.stat(self.path)
                except FileNotFoundError:
                    st = None  # renamed, the new file not created yet: keep the old open
                if st is not None and st.st_ino != inode:
                    self._drain(fh, inode, handle, stop)  # the old file's last lines
                    fh.close()
                    fh = open(self.path, "rb")
                    inode = os.fstat(fh.fileno()).st_ino
                    _save(self.store, self.mark, f"{inode}:0")
                    continue
                if st is not None and st.st_size < fh.tell():  # truncated (copytruncate)
                    fh.seek(0)
                    _save(self.store, self.mark, f"{inode}:0")
                    continue
                if not got:
                    stop.wait(self.poll)
            except OSError as e:
                log.limited("feedback.file", "error", f"feedback: cannot read {self.path}: "
                            f"{e}; retrying")
                if fh is not None:
                    fh.close()
                fh = None
                stop.wait(max(self.poll, 5.0))
        if fh is not None:
            fh.close()


class JournalFollower:
    """`journalctl -f -o json -t postfix/smtp ...`, resumed after the stored cursor."""

    def __init__(self, identifiers: list[str], store: Store, exe: str = "journalctl") -> None:
        self.identifiers = identifiers
        self.store = store
        self.exe = exe
        self.mark = "feedback:journal"

    def describe(self) -> str:
        return f"journal ({', '.join(self.identifiers)})"

    def _command(self) -> list[str]:
        cmd = [self.exe, "-f", "-o", "json", "--no-pager"]
        for ident in self.identifiers:
            cmd += ["-t", ident]
        try:
            cursor = self.store.get_meta(self.mark)
        except StoreError:
            cursor = None
        return cmd + ([f"--after-cursor={cursor}"] if cursor else ["-n", "0"])

    def run(self, stop: threading.Event, handle: Handle) -> None:
        while not stop.is_set():
            try:
                proc = subprocess.Popen(self._command(), stdout=subprocess.PIPE,
                                        stderr=subprocess.DEVNULL)
            except OSError as e:
                log.limited("feedback.journal", "error", f"feedback: cannot run journalctl: "
                            f"{e}; retrying")
                stop.wait(10)
                continue
            try:
                self._read(proc, stop, handle)
            finally:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
                if proc.stdout is not None:
                    proc.stdout.close()
            if not stop.is_set():
                log.limited("feedback.journal", "error",
                            f"feedback: journalctl exited ({proc.returncode}); restarting")
                stop.wait(5)

    def _read(self, proc: subprocess.Popen[bytes], stop: threading.Event,
              handle: Handle) -> None:
        assert proc.stdout is not None
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            self._loop(proc, sel, stop, handle)

    def _loop(self, proc: subprocess.Popen[bytes], sel: selectors.BaseSelector,
              stop: threading.Event, handle: Handle) -> None:
        assert proc.stdout is not None
        buf = b""
        while not stop.is_set():
            if not sel.select(timeout=0.5):
                continue
            chunk = os.read(proc.stdout.fileno(), 65536)
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for raw in lines:
                entry = _entry(raw)
                if entry is None:
                    continue
                line, cursor = entry
                try:
                    changed = handle(line)
                except Exception as e:
                    log.limited("feedback.handle", "error",
                                f"feedback: line skipped: {type(e).__name__}: {e}")
                    changed = False
                if changed and cursor:
                    _save(self.store, self.mark, cursor)


def _entry(raw: bytes) -> tuple[str, str] | None:
    """A journal JSON entry as a syslog-style line, and its cursor."""
    try:
        e: Any = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(e, dict):
        return None
    msg = e.get("MESSAGE")
    if isinstance(msg, list):  # journald sends non-UTF-8 messages as a byte array
        msg = bytes(b for b in msg if isinstance(b, int) and 0 <= b < 256).decode(
            "utf-8", "replace")
    if not isinstance(msg, str):
        return None
    ident, pid = e.get("SYSLOG_IDENTIFIER", ""), e.get("_PID") or e.get("SYSLOG_PID", "0")
    return f"{ident}[{pid}]: {msg}", str(e.get("__CURSOR", ""))


def choose(source: str, log_file: str, identifiers: list[str], store: Store,
           poll: float = 0.5, start_at: str = "end") -> tuple[Follower | None, str]:
    """The follower `[feedback] source` asks for, and the start-up line saying so."""
    if source == "off":
        return None, "feedback: off ([feedback] source = \"off\")"
    if source in ("auto", "file"):
        candidates = [log_file] if log_file else list(DEFAULT_LOG_FILES)
        path = next((c for c in candidates if os.path.isfile(c)), None)
        if path is not None and not os.access(path, os.R_OK):
            return None, (f"feedback: off: cannot read {path} as this user (add it to the "
                          "group that owns the log, e.g. adm, or set [feedback] source = "
                          "\"journal\")")
        if path is not None:
            f = FileFollower(path, store, poll, start_at)
            return f, f"feedback: reading delivery results from {f.describe()}"
        if source == "file":
            return None, (f"feedback: off: log file {' or '.join(candidates)} does not exist; "
                          "set [feedback] log_file")
    exe = shutil.which("journalctl")
    if exe is not None and (os.path.isdir("/run/systemd/journal")
                            or os.path.isdir("/var/log/journal")):
        j = JournalFollower(identifiers, store, exe)
        return j, f"feedback: reading delivery results from {j.describe()}"
    if source == "journal":
        return None, "feedback: off: no systemd journal (journalctl) on this host"
    return None, ("feedback: off: no mail log file (" + ", ".join(DEFAULT_LOG_FILES)
                  + ") and no systemd journal; set [feedback] log_file")
