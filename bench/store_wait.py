"""How long a message waits when the SQLite store is locked by another process.

The per-message pipeline on the daemon's Inspector (as in tests/test_store_trouble.py:
fake DNS, a PHP form message) with a healthy store, then with another connection
holding an exclusive lock on the file. The baseline is the healthy store in the same
run. Prints median and slowest ms per message for both and their ratio: what the
store's busy waits (BUSY_TIMEOUT_MS per statement) cost each message while locked.

    .venv/bin/python bench/store_wait.py [-n 50]
"""

from __future__ import annotations

import argparse
import io
import sqlite3
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_store_trouble import inspector, php_message  # noqa: E402

from postwarden.log import log  # noqa: E402
from postwarden.milter.pipeline import Inspector  # noqa: E402


def times(ins: Inspector, first: int, count: int) -> list[float]:
    out = []
    for n in range(first, first + count):
        t0 = time.monotonic()
        ins.handle(php_message(n))
        out.append(time.monotonic() - t0)
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=50)
    args = ap.parse_args(argv)
    log.setup("stderr", stream=io.StringIO())  # the error lines are the tests' business
    with tempfile.TemporaryDirectory(prefix="postwarden-storewait-") as tmp:
        db = Path(tmp) / "state.db"
        ins = inspector(db)
        times(ins, 0, 5)  # warm up: the schema, the DNS cache
        healthy = times(ins, 5, args.n)
        other = sqlite3.connect(db, isolation_level=None)
        other.execute("BEGIN EXCLUSIVE")
        try:
            locked = times(ins, 5 + args.n, args.n)
        finally:
            other.execute("ROLLBACK")
            other.close()
    h, lk = statistics.median(healthy), statistics.median(locked)
    print(f"{args.n} messages each: healthy store median {h * 1000:.2f} ms, slowest "
          f"{max(healthy) * 1000:.2f} ms; locked store median {lk * 1000:.2f} ms, slowest "
          f"{max(locked) * 1000:.2f} ms; ratio locked/healthy median {lk / h:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
