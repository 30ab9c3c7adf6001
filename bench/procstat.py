"""CPU seconds of a process tree and RSS of a process, read from /proc.

A process's own utime+stime plus the c-times of the children it reaped: summed
over the live tree, every process that ever ran in it is counted exactly once
(Postfix's master reaps its smtpd/cleanup/smtp children, so their time lands in
its cutime when they exit).
"""

from __future__ import annotations

import os
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may hold spaces: split after its closing paren
    return [str(pid), "comm", *text[text.rindex(")") + 2:].split()]


def _children() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(int(entry))
            if st is not None:
                kids.setdefault(int(st[3]), []).append(int(entry))
    return kids


def children(pid: int) -> list[int]:
    """Direct children of `pid` (zombies included until reaped)."""
    return _children().get(pid, [])


def command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def tree(pid: int) -> list[int]:
    kids, out, todo = _children(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += kids.get(p, [])
    return out


def cpu_seconds(pids: list[int]) -> float:
    """utime+stime+cutime+cstime of each process of each tree rooted at `pids`."""
    total = 0
    seen: set[int] = set()
    for root in pids:
        for p in tree(root):
            if p in seen:
                continue
            seen.add(p)
            st = _stat(p)
            if st is not None:
                total += sum(int(x) for x in st[13:17])
    return total / TICK


def rss_kib(pid: int) -> int:
    """Resident set size in KiB (VmRSS), 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0
