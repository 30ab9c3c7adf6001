"""How long a self-check waits when one blocklist never answers.

Runs the self-check's runner (checks/runner.py, its thread pool and run budget) on
the unit tests' world: 15 lists, 2 IPs, 3 domains, every answer taking --latency
seconds and one list silent for --timeout seconds. The baseline is one silent
query through the same resolver, measured in the same run. Prints the run's wall
time as a ratio to that one wait (about 1 when the silent list costs one wait and
the rest runs beside it), and the queries' waits added up as a ratio to the wall time.

    .venv/bin/python bench/selfcheck_wait.py [--latency 0.05] [--timeout 1.0] [--rounds 3]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from test_selfcheck_runner import SLOW, _cfg, _clean_world, _inputs  # noqa: E402

from postwarden.checks.runner import run  # noqa: E402
from postwarden.dns import Answer  # noqa: E402
from selfcheck_fakes import FakeResolver  # noqa: E402


class Latent:
    """Every answer of `res` takes `latency` seconds; the waits are added up."""

    def __init__(self, res: FakeResolver, latency: float) -> None:
        self.waited = 0.0
        self._lock = threading.Lock()
        fetch = res._fetch

        def slow_fetch(name: str, rdtype: str, lifetime: float) -> Answer:
            t0 = time.monotonic()
            time.sleep(min(latency, lifetime))
            answer = fetch(name, rdtype, lifetime)
            with self._lock:
                self.waited += time.monotonic() - t0
            return answer

        res._fetch = slow_fetch  # type: ignore[method-assign]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--latency", type=float, default=0.05)
    ap.add_argument("--timeout", type=float, default=1.0)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args(argv)
    walls, ratios, overlaps = [], [], []
    with tempfile.TemporaryDirectory(prefix="postwarden-scwait-") as tmp:
        cfg = _cfg(Path(tmp), query_timeout=args.timeout)
        for _ in range(args.rounds):
            probe = FakeResolver(slow=(SLOW,), delay=args.timeout)
            t0 = time.monotonic()
            probe.query(f"1.0.0.127.{SLOW}", "A")
            one_wait = time.monotonic() - t0
            res = _clean_world(cfg, delay=args.timeout)
            latent = Latent(res, args.latency)
            t0 = time.monotonic()
            report = run(_inputs(cfg, res))
            wall = time.monotonic() - t0
            unknown = [c for c in report.find(f"dnsbl.{SLOW}") if c.status == "unknown"]
            if len(unknown) != 2:
                print(f"the silent list was not reported unknown: {unknown}")
                return 1
            walls.append(wall)
            ratios.append(wall / one_wait)
            overlaps.append(latent.waited / wall)
    print(f"self-check, 15 lists x 2 IPs, one silent ({args.timeout:.1f}s), "
          f"{args.latency * 1000:.0f} ms per answer, {args.rounds} rounds: wall median "
          f"{statistics.median(walls):.2f}s = {statistics.median(ratios):.2f} x one silent "
          f"query; the queries' waits add up to {statistics.median(overlaps):.1f} x the "
          "wall time (1.0: one after the other)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
