"""`make bench`: what each milter costs a real Postfix, against no milter at all.

smtp-source (or the sendmail command, --sendmail) -> private Postfix (+ one milter)
-> smtp-sink, all on loopback. Per run: wall time from the first connection until
the sink counted every message, and the CPU seconds of Postfix's process tree and of
the milter's, from /proc. Variants are interleaved (each round runs every variant
once, in a rotated order) in ONE invocation, so the ratio to `none` compares runs
made under the same machine conditions. Postfix is reloaded before every run, so
each starts with fresh smtpd/cleanup processes whatever ran before it.

    .venv/bin/python bench/run.py                 # 4 KB and 100 KB, 5 rounds
    .venv/bin/python bench/run.py --quick         # 4 KB, 2 rounds, fewer messages
    .venv/bin/python bench/run.py --sendmail      # inject with the sendmail command
"""

from __future__ import annotations

import argparse
import concurrent.futures
import dataclasses
import json
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from fixtures import RCPT, SENDER, message, postwarden_settings, selfcheck_always, zones  # noqa: E402
from peers import (  # noqa: E402
    DOMAIN,
    SELECTOR,
    CollectPeer,
    DkimpyPeer,
    NoopPeer,
    OpenDkimPeer,
    Peer,
    PostwardenPeer,
    RspamdPeer,
    make_key,
)
from procstat import children, command, cpu_seconds  # noqa: E402
from smtpsink import SmtpSink  # noqa: E402

from harness import HarnessError, need  # noqa: E402
from harness.knot import DnsServer  # noqa: E402
from harness.postfix import Postfix  # noqa: E402
from harness.redis_server import RedisCluster, RedisServer  # noqa: E402

ALL_VARIANTS = ["none", "noop", "noop-collect", "postwarden", "postwarden-unpinned",
                "postwarden-sign", "postwarden-redis", "postwarden-cluster", "postwarden-selfcheck",
                "opendkim",
                "dkimpy-milter", "rspamd"]


class BenchPostfix(Postfix):
    """The harness's Postfix; variants differ only in smtpd_milters/non_smtpd_milters,
    edited in place (postconf -e) so no process logs "overriding earlier entry"."""

    milters = ""

    def write_config(self, extra_main: str | None = None) -> None:
        super().write_config(extra_main)
        # No maillog_file: at hundreds of messages a second, Postfix's postlogd
        # (a unix-dgram service of master) can fill its queue across a reload, and
        # master then blocks forever writing its own log line (seen here twice).
        self.postconf("-e", f"smtpd_milters = {self.milters}",
                      f"non_smtpd_milters = {self.milters}",
                      *([] if os.environ.get("BENCH_MAILLOG") else ["maillog_file ="]))

    def reload(self) -> None:
        """SIGHUP to master, as `postfix reload` ends up doing, minus its 2 s of checks."""
        self.write_config()
        pid = self.master_pid()
        if pid is None:
            raise HarnessError("Postfix master is not running")
        old = {c for c in children(pid) if command(c) in ("smtpd", "cleanup")}
        os.kill(pid, signal.SIGHUP)
        # Until the old generation's smtpd and cleanup processes are gone, an idle
        # one still accepts work with the old milter list.
        deadline = time.monotonic() + 20
        while old & set(children(pid)):
            if time.monotonic() > deadline:
                raise HarnessError("Postfix children did not exit after a reload")
            time.sleep(0.05)
        self.wait_banner(self.smtp_port)


@dataclass
class Run:
    variant: str
    size: int
    messages: int
    seconds: float
    postfix_cpu: float
    milter_cpu: float

    @property
    def rate(self) -> float:
        return self.messages / self.seconds


@dataclass
class Bench:
    base: Path
    sessions: int
    sendmail: bool
    variants: list[str]
    dump: Path | None = None
    peers: dict[str, Peer] = field(default_factory=dict)
    started: list[Any] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.dns = DnsServer(self.base / "knot")
        self.sink = SmtpSink(self.dump)
        self.postfix = BenchPostfix(self.base / "postfix", self.sink.port)
        self.key = make_key(self.base / "keys")

    # -- setup ---------------------------------------------------------------------
    def start(self) -> None:
        for name, records in zones(self.key).items():
            self.dns.zone(name, records)
        self.dns.start()
        self.started.append(self.dns)
        self.sink.start()
        self.started.append(self.sink)
        for v in self.variants:
            if v != "none":
                peer = self._make_peer(v)
                peer.start()
                self.started.append(peer)
                self.peers[v] = peer
        self.postfix.start()
        self.started.append(self.postfix)

    def _make_peer(self, v: str) -> Peer:
        d = self.postfix.queue / "bench" / v
        key = {"domain": DOMAIN, "selector": SELECTOR, "key_file": str(self.key)}
        if v == "noop":
            return NoopPeer(d)
        if v == "noop-collect":
            return CollectPeer(d)
        if v == "opendkim":
            return OpenDkimPeer(d, self.key)
        if v == "dkimpy-milter":
            return DkimpyPeer(d, self.key)
        if v == "rspamd":
            return RspamdPeer(d, self.dns.port)
        extra: dict[str, Any] = {}
        if v == "postwarden-sign":
            extra = {"dkim": {"sign": True, "keys": [key]}}
        elif v == "postwarden-redis":
            redis = RedisServer(self.base / "redis")
            redis.start()
            self.started.append(redis)
            extra = {"store": {"backend": "redis", "redis_url": redis.url}}
        elif v == "postwarden-cluster":  # the same store on a 3-master Redis Cluster
            cluster = RedisCluster(self.base / "redis-cluster")
            self.started.append(cluster)
            cluster.start()
            extra = {"store": {"backend": "redis", "redis_url": cluster.url}}
        elif v == "postwarden-selfcheck":
            extra = {"selfcheck": selfcheck_always(self.postfix.conf)}
        elif v == "postwarden-unpinned":  # what pin_cpu buys
            extra = {"pin_cpu": False}
        elif v != "postwarden":
            raise SystemExit(f"unknown variant {v!r}; known: {', '.join(ALL_VARIANTS)}")
        return PostwardenPeer(d, v, postwarden_settings(self.dns.port, d, extra))

    def stop(self) -> None:
        for thing in reversed(self.started):
            try:
                thing.stop()
            except Exception as e:  # keep stopping the rest
                print(f"stopping {type(thing).__name__}: {e}", file=sys.stderr)

    # -- one run -------------------------------------------------------------------
    def use(self, variant: str) -> None:
        self.postfix.milters = self.peers[variant].spec if variant != "none" else ""
        self.postfix.reload()

    def inject(self, data: bytes, n: int) -> None:
        if self.sendmail:
            with concurrent.futures.ThreadPoolExecutor(self.sessions) as pool:
                list(pool.map(lambda _: self.postfix.sendmail(data, SENDER, [RCPT]), range(n)))
            return
        msgfile = self.base / f"message-{len(data)}.eml"
        if not msgfile.exists():
            msgfile.write_bytes(data.replace(b"\r\n", b"\n"))
        subprocess.run([need("smtp-source"), "-s", str(self.sessions), "-m", str(n),
                        "-F", str(msgfile), "-f", SENDER, "-t", RCPT, "-M", "client.example.net",
                        f"127.0.0.1:{self.postfix.smtp_port}"], check=True, timeout=600)

    def deliver(self, data: bytes, n: int) -> float:
        if n <= 0:
            return 0.0
        base = self.sink.count
        start = time.monotonic()
        self.inject(data, n)
        return self.sink.wait_for(base + n, timeout=120 + n / 5) - start

    def measure(self, variant: str, size: int, n: int, warmup: int) -> Run:
        self.use(variant)
        data = message(size)
        self.deliver(data, warmup)
        master = self.postfix.master_pid()
        if master is None:
            raise HarnessError("Postfix master is not running")
        milter_pids = self.peers[variant].pids() if variant != "none" else []
        pf0, m0 = cpu_seconds([master]), cpu_seconds(milter_pids)
        ch0 = _children_cpu()
        seconds = self.deliver(data, n)
        pf1, m1 = cpu_seconds([master]), cpu_seconds(milter_pids)
        pf = pf1 - pf0 + ((_children_cpu() - ch0) if self.sendmail else 0.0)  # sendmail+postdrop
        if variant != "none" and n >= 100 and m1 - m0 <= 0:
            # a milter Postfix cannot reach (default_action=accept) would fake a fast run
            raise HarnessError(f"{variant} used no CPU for {n} messages: Postfix did not "
                               "reach it (see the milter's log in the work directory)")
        return Run(variant, size, n, seconds, pf, m1 - m0)


def _children_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


# -- reporting -------------------------------------------------------------------------
def summarize(runs: list[Run], variants: list[str], sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for size in sizes:
        base = [r.rate for r in runs if r.size == size and r.variant == "none"]
        base_median = statistics.median(base) if base else None
        for v in variants:
            mine = [r for r in runs if r.size == size and r.variant == v]
            if not mine:
                continue
            rates = [r.rate for r in mine]
            msgs = sum(r.messages for r in mine)
            med = statistics.median(rates)
            rows.append({
                "variant": v, "size_kb": size // 1024, "runs": len(mine),
                "median": round(med, 1), "min": round(min(rates), 1), "max": round(max(rates), 1),
                "ratio": round(med / base_median, 2) if base_median else None,
                "postfix_cpu_ms": round(1000 * sum(r.postfix_cpu for r in mine) / msgs, 2),
                "milter_cpu_ms": round(1000 * sum(r.milter_cpu for r in mine) / msgs, 2),
            })
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    out = ["| variant | size | msgs/s median | min | max | ratio vs none "
           "| Postfix CPU ms/msg | milter CPU ms/msg |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        ratio = "-" if r["ratio"] is None else f"{r['ratio']:.2f}"
        out.append(f"| {r['variant']} | {r['size_kb']} KB | {r['median']:.0f} | {r['min']:.0f} "
                   f"| {r['max']:.0f} | {ratio} | {r['postfix_cpu_ms']:.2f} "
                   f"| {r['milter_cpu_ms']:.2f} |")
    return "\n".join(out)


def machine() -> str:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    pf = subprocess.run([need("postconf"), "-d", "-h", "mail_version"], capture_output=True,
                        text=True).stdout.strip()
    return (f"{os.cpu_count()} CPUs ({model}), Linux {platform.release()}, "
            f"Postfix {pf}, Python {platform.python_version()}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="4 KB only, 2 rounds, 200 messages")
    ap.add_argument("--rounds", type=int, default=None, help="interleaved runs per variant")
    ap.add_argument("--messages", type=int, default=None, help="messages per run")
    ap.add_argument("--sessions", type=int, default=10, help="concurrent sessions/injectors")
    ap.add_argument("--sizes", default=None, help="message sizes in KB, e.g. 4,100")
    ap.add_argument("--variants", default=",".join(ALL_VARIANTS))
    ap.add_argument("--sendmail", action="store_true", help="inject with the sendmail command")
    ap.add_argument("--json", type=Path, help="also write the runs and the table as JSON here")
    ap.add_argument("--dump", type=Path, help="let smtp-sink append every message to this file")
    ap.add_argument("--warmup", type=int, default=None,
                    help="messages sent (not timed) after each reload; default n/10")
    ap.add_argument("--keep", action="store_true", help="keep the work directory")
    args = ap.parse_args(argv)
    variants = args.variants.split(",")
    if variants[0] != "none":
        variants = ["none", *[v for v in variants if v != "none"]]
    rounds = args.rounds or (2 if args.quick else 5)
    n = args.messages or (200 if args.quick else 500)
    sizes = [int(s) * 1024 for s in (args.sizes or ("4" if args.quick else "4,100")).split(",")]
    warmup = args.warmup if args.warmup is not None else max(args.sessions, n // 10)

    # SIGTERM (a test's timeout, Ctrl-C from a supervisor) still stops every process
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    base = Path(tempfile.mkdtemp(prefix="postwarden-bench-"))
    os.chmod(base, 0o755)
    bench = Bench(base, args.sessions, args.sendmail, variants, args.dump)
    runs: list[Run] = []
    started = time.strftime("%Y-%m-%d %H:%M %Z")
    try:
        bench.start()
        print(f"# {started}, {machine()}")
        print(f"# {'sendmail' if args.sendmail else 'smtp-source'}, {args.sessions} sessions, "
              f"{n} messages per run, {rounds} rounds, one message per session")
        for size in sizes:
            for rnd in range(rounds):
                order = variants[rnd % len(variants):] + variants[:rnd % len(variants)]
                for v in order:
                    r = bench.measure(v, size, n, warmup)
                    runs.append(r)
                    print(f"{v:22s} {size // 1024:4d} KB round {rnd + 1}: {r.rate:7.1f} msgs/s "
                          f"postfix {1000 * r.postfix_cpu / n:6.2f} ms/msg "
                          f"milter {1000 * r.milter_cpu / n:6.2f} ms/msg", flush=True)
    finally:
        bench.stop()
        if not args.keep:
            shutil.rmtree(base, ignore_errors=True)
    rows = summarize(runs, variants, sizes)
    print()
    print(table(rows))
    if args.json:
        args.json.write_text(json.dumps({"date": started, "machine": machine(),
                                         "mode": "sendmail" if args.sendmail else "smtp",
                                         "sessions": args.sessions, "messages": n,
                                         "rows": rows,
                                         "runs": [dataclasses.asdict(r) for r in runs]},
                                        indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
