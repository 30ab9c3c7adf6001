"""Daemon memory with concurrent big messages through the milter protocol.

    .venv/bin/python bench/body_memory.py --sessions 16 --mib 16

Prints the daemon's RSS before, at peak and after the run, and the total body
bytes sent: how much of the bodies the daemon holds at once, and whether it gives
the memory back afterwards.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import no_dns_settings  # noqa: E402

from harness.bodyload import big_messages  # noqa: E402
from harness.milterproc import MilterProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sessions", type=int, default=16)
    ap.add_argument("--mib", type=int, default=16)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="postwarden-bodymem-"))
    proc = MilterProcess(work, work / "pw.sock", {
        "socket": f"unix:{work / 'pw.sock'}", **no_dns_settings(work)})
    proc.start()
    assert proc.proc is not None
    try:
        run = big_messages(proc.address, proc.proc.pid, args.sessions, args.mib << 20)
    finally:
        proc.stop()
        shutil.rmtree(work, ignore_errors=True)
    total = args.sessions * args.mib
    print(f"{args.sessions} x {args.mib} MiB ({total} MiB of bodies): RSS before "
          f"{run.before_kib >> 10} MiB, peak {run.peak_kib >> 10} MiB "
          f"(+{(run.peak_kib - run.before_kib) >> 10}), after {run.after_kib >> 10} MiB "
          f"(+{(run.after_kib - run.before_kib) >> 10}); {run.answered}/{args.sessions} answered")
    return 0 if run.answered == args.sessions else 1


if __name__ == "__main__":
    sys.exit(main())
