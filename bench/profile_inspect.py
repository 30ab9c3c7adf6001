"""Where postwarden's time goes: cProfile of the milter's per-message work.

Builds the Inspector exactly as the daemon does (daemon.build_inspector, real
resolver on fixture Knot DNS, SQLite store) and runs what `eom` runs for each
message: origin, Inspector.handle (inspect, then the effects: the summary line and
the log call, the event record, the rate-limit units). The DNS
cache is warm after the first message, as on a running server.

    .venv/bin/python bench/profile_inspect.py [-n 3000] [--sign] [--top 25]
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

import common  # noqa: E402
from common import serve_zones, smtpd_message, workdir  # noqa: E402
from fixtures import message  # noqa: E402
from milter_load import from_domain_headers, split_message  # noqa: E402

from harness.knot import DnsServer  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=3000)
    ap.add_argument("--size", type=int, default=4, help="KB")
    ap.add_argument("--sign", action="store_true", help="DKIM signing on (RSA 2048)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--new-from-domain", action="store_true",
                    help="a From domain never seen before on every message")
    args = ap.parse_args(argv)
    base = workdir("postwarden-prof-")
    dns = DnsServer(base / "knot")
    try:
        key = serve_zones(dns, base)
        extra: dict[str, object] = {}
        if args.sign:
            extra["dkim"] = {"sign": True, "keys": [{"domain": "example.com",
                                                      "selector": "bench",
                                                      "key_file": str(key)}]}
        # the summary lines are formatted and written (and flushed), to nowhere
        cfg, _store, inspector = common.inspector(dns, base, extra)
        headers, body = split_message(message(args.size * 1024))

        def one(i: int) -> None:
            hdrs = from_domain_headers(headers, 0, i) if args.new_from_domain else headers
            msg = smtpd_message(cfg, hdrs, body, f"{i:010X}")
            inspector.handle(msg)  # inspect, then the effects: log lines, event, units

        one(0)  # warm the DNS cache
        t, cpu = time.perf_counter(), time.process_time()
        for i in range(1, args.n + 1):
            one(i)
        plain = (time.perf_counter() - t) / args.n
        cpu = (time.process_time() - cpu) / args.n  # less disturbed by other processes
        prof = cProfile.Profile()
        prof.enable()
        for i in range(args.n + 1, 2 * args.n + 1):
            one(i)
        prof.disable()
        print(f"{1000 * plain:.3f} ms per message without the profiler "
              f"({args.size} KB{', signing' if args.sign else ''}), "
              f"{1000 * cpu:.3f} ms CPU\n")
        stats = pstats.Stats(prof)
        stats.sort_stats("cumulative").print_stats(args.top)
        stats.sort_stats("tottime").print_stats(args.top)
        return 0
    finally:
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
