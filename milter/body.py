"""A message body as it arrives, with the daemon's memory for bodies bounded.

A body stays in memory up to `body_memory` bytes and goes to an unlinked temporary
file past that, so a session receiving a big message holds at most body_memory of
it. The checks need the whole body at end of message (dkimpy verifies and signs
the whole message, the form checks read a prefix), so a spooled body is read back
then, but only one spooled body at a time is inspected (`inspecting`): 16
concurrent 16 MiB messages cost one message's copies, not sixteen. Small bodies,
nearly all mail, never wait.

glibc raises its mmap threshold each time a big block is freed, after which big
blocks come from the heap and stay allocated when freed; `return_memory_to_os`
fixes the threshold so they are always mapped and unmapped on free.
"""

from __future__ import annotations

import contextlib
import ctypes
import tempfile
import threading
from collections.abc import Iterator

_spooled_inspection = threading.Lock()
M_MMAP_THRESHOLD = -3


def _libc() -> ctypes.CDLL | None:
    """The C library already loaded in this process (no find_library: it runs
    ldconfig and a compiler in subprocesses)."""
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


_LIBC = _libc()


def return_memory_to_os(threshold: int = 256 * 1024) -> bool:
    try:
        return _LIBC is not None and bool(_LIBC.mallopt(M_MMAP_THRESHOLD, threshold))
    except AttributeError:
        return False


def _trim() -> None:
    """Give freed heap pages back after a big message (the copies dkimpy makes of a
    body are many mid-sized blocks, not one mapping)."""
    try:
        if _LIBC is not None:
            _LIBC.malloc_trim(0)
    except AttributeError:
        pass


class Body:
    def __init__(self, memory: int, limit: int) -> None:
        self.limit = limit
        self.memory = memory
        self.size = 0
        self.kept = 0
        self.truncated = False
        self._file: tempfile.SpooledTemporaryFile[bytes] = tempfile.SpooledTemporaryFile(
            max_size=memory, prefix="postwarden-body-")

    def add(self, chunk: bytes) -> None:
        if self.size + len(chunk) <= self.limit:
            self._file.write(chunk)
            self.kept += len(chunk)
        else:
            self.truncated = True
        self.size += len(chunk)

    @property
    def spooled(self) -> bool:
        return self.kept > self.memory  # where SpooledTemporaryFile rolls over to disk

    @contextlib.contextmanager
    def contents(self) -> Iterator[bytes]:
        """The whole body (up to the limit) while the checks run; a spooled one waits
        for its turn, and the heap is trimmed after (the caller drops its references
        to the bytes inside the block)."""
        spooled = self.spooled
        lock = _spooled_inspection if spooled else contextlib.nullcontext()
        with lock:
            self._file.seek(0)
            data = self._file.read()
            self.close()
            try:
                yield data
            finally:
                del data
                if spooled:
                    _trim()

    def close(self) -> None:
        self._file.close()
