"""Malformed milter macro packets against a real postwarden on an inet: socket.

Starts `postwarden milter` on a loopback TCP port (allow_inet = true), sends
--packets malformed `D` packets (odd string counts, a value without its NUL, no NUL
at all, empty) around the callbacks that read macros, and restarts the daemon
whenever it dies, counting restarts. Before postwarden read macros itself, libmilter's
smfi_getsymval() crashed it with SIGSEGV within a few sessions.

    .venv/bin/python bench/malformed_macros.py --packets 10000
"""

from __future__ import annotations

import argparse
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from common import no_dns_settings  # noqa: E402

from harness.malformed import hammer  # noqa: E402
from harness.milterproc import MilterProcess  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--packets", type=int, default=10000)
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="postwarden-malformed-"))
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = MilterProcess(work, work / "unused.sock", {
        "socket": f"inet:{port}@127.0.0.1", "allow_inet": True, **no_dns_settings(work)})
    proc.start()
    signals: list[int] = []

    def dead() -> bool:
        assert proc.proc is not None
        if proc.proc.poll() is None:
            return False
        signals.append(proc.proc.returncode)
        proc.proc = None
        proc.start()
        return True

    started = time.monotonic()
    try:
        tally, restarts = hammer(proc.address, args.packets, seed=args.seed, on_dead=dead)
    finally:
        rc = proc.stop()
    print(f"malformed macro packets: {tally.packets} in {tally.sessions} sessions over "
          f"{proc.address}, {tally.answered} sessions answered, restarts: {restarts}"
          f"{' (exit ' + ','.join(map(str, signals)) + ')' if signals else ''}, "
          f"final exit {rc}, {time.monotonic() - started:.0f} s")
    shutil.rmtree(work, ignore_errors=True)
    return 0 if restarts == 0 and rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
