"""What the feedback loop costs per message: the outbound record (one store write)
and the brake check (one read of the source's delivery results).

Builds the daemon's Inspector (daemon.build_inspector, fixture Knot DNS, SQLite
store) and times Inspector.handle in interleaved rounds: with the feedback parts,
and with them switched off (no brake check, record_outbound a no-op). `--history N`
first stores N delivery results for the benchmark's source (a busy sender whose
replies the brake reads on every message). Prints ms per message and the ratio.

    .venv/bin/python bench/feedback_cost.py [-n 2000] [--rounds 5] [--history 2000]
"""

from __future__ import annotations

import argparse
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
from milter_load import split_message  # noqa: E402

from harness.knot import DnsServer  # noqa: E402
from postwarden.milter.feedback_brake import FeedbackBrake  # noqa: E402
from postwarden.store import DeliveryRecord  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("-n", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--history", type=int, default=0)
    args = ap.parse_args(argv)
    base = workdir("postwarden-fbcost-")
    dns = DnsServer(base / "knot")
    try:
        serve_zones(dns, base)
        cfg, store, inspector = common.inspector(dns, base, {})
        headers, body = split_message(message(4 * 1024))
        counter = iter(range(10**9))

        def one() -> None:
            msg = smtpd_message(cfg, headers, body, f"{next(counter):010X}")
            inspector.handle(msg)  # inspect, then the effects: the outbound record

        one()  # warm the DNS cache; learn the source key
        source = store.outbound_since(0)[0].source
        now = time.time()
        for i in range(args.history):
            store.record_delivery(DeliveryRecord(f"H{i:09d}", now - i, "gmail.test",
                                                 "mx[127.0.0.1]:25", "sent", "2.0.0", "",
                                                 "", source, "example.com"))
        with_checks = list(inspector.checks)
        without_checks = [c for c in with_checks if not isinstance(c, FeedbackBrake)]
        real_record = store.record_outbound

        def timed(on: bool) -> float:
            inspector.checks = with_checks if on else without_checks
            store.record_outbound = real_record if on else (  # type: ignore[method-assign]
                lambda rec, retention=0.0: None)
            t = time.perf_counter()
            for _ in range(args.n):
                one()
            return (time.perf_counter() - t) / args.n

        on, off = [], []
        for _ in range(args.rounds):
            off.append(timed(False))
            on.append(timed(True))
        on.sort()
        off.sort()
        m_on, m_off = on[len(on) // 2], off[len(off) // 2]
        print(f"source {source}, {args.history} stored delivery results, {args.rounds} "
              f"rounds of {args.n} messages (medians)")
        print(f"  without feedback: {1000 * m_off:.3f} ms/message")
        print(f"  with feedback:    {1000 * m_on:.3f} ms/message")
        print(f"  ratio with/without: {m_on / m_off:.3f}")
        store.close()
        return 0
    finally:
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
