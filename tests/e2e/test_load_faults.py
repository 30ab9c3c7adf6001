"""Nothing lost under load with faults (issue 7): 5,000 messages through the private
Postfix while the milter is SIGKILLed, DNS and Redis stop and start, and the config
is reloaded. Every message ends delivered to the sink or on the hold queue.
"""

from __future__ import annotations

import re
import smtplib
import ssl
import statistics
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import SASL_USERS
from harness import need
from harness.knot import DnsServer
from harness.milterproc import MilterProcess
from harness.postfix import Postfix
from harness.redis_server import RedisServer
from harness.sink import Sink

SMTP_THREADS, SMTP_PER_THREAD = 4, 750  # 3,000 by SASL submission
SENDMAIL_THREADS, SENDMAIL_PER_THREAD = 3, 500  # 1,500 by the sendmail command
PHP_SCRIPTS, PHP_PER_SCRIPT = 2, 250  # 500 by PHP mail(), mostly over the form limit
TOTAL = (SMTP_THREADS * SMTP_PER_THREAD + SENDMAIL_THREADS * SENDMAIL_PER_THREAD
         + PHP_SCRIPTS * PHP_PER_SCRIPT)
MARK = re.compile(rb"LOADMARK-(\d+)-")


def body(n: int, sender: str) -> bytes:
    return (f"From: {sender}\nTo: rcpt{n % 7}@example.org\nSubject: load {n}\n"
            f"Message-ID: <load-{n}@example.com>\n\nLOADMARK-{n}-\n" + "x" * 1500 + "\n"
            ).encode()


class Recorder:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.sent = 0
        self.samples: list[tuple[float, float, str]] = []  # (start, latency, how)
        self.errors: list[str] = []

    def done(self, start: float, how: str) -> None:
        with self.lock:
            self.sent += 1
            self.samples.append((start, time.monotonic() - start, how))


def smtp_worker(postfix: Postfix, rec: Recorder, first: int, count: int) -> None:
    ctx = ssl.create_default_context()
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    n, conn = first, None
    while n < first + count:
        try:
            if conn is None:
                conn = smtplib.SMTP("127.0.0.1", postfix.submission_port, timeout=120)
                conn.starttls(context=ctx)
                conn.login("alice", SASL_USERS["alice"])
            t0 = time.monotonic()
            conn.sendmail("alice@example.com", [f"rcpt{n % 7}@example.org"],
                          body(n, "alice@example.com"))
            rec.done(t0, "smtp")
            n += 1
            if n % 50 == 0:
                conn.quit()
                conn = None
        except (smtplib.SMTPException, OSError) as e:
            # A refused or broken session: the message was not accepted; send it again.
            rec.errors.append(f"smtp {n}: {e}")
            conn = None
            time.sleep(0.2)


def sendmail_worker(postfix: Postfix, rec: Recorder, first: int, count: int) -> None:
    for n in range(first, first + count):
        t0 = time.monotonic()
        sender = f"app{n % 3}@example.com"
        subprocess.run([need("sendmail"), "-C", str(postfix.conf), "-f", sender, "-i",
                        f"rcpt{n % 7}@example.org"], input=body(n, sender), check=True)
        rec.done(t0, "sendmail")


def php_worker(postfix: Postfix, rec: Recorder, script: Path, first: int, count: int) -> None:
    sendmail = f"{need('sendmail')} -C {postfix.conf} -t -i"
    with subprocess.Popen(
            [need("php"), "-n", "-d", "mail.add_x_header=On", "-d",
             f"sendmail_path={sendmail}", str(script), str(first), str(count)],
            stdout=subprocess.PIPE, text=True) as proc:
        assert proc.stdout is not None
        t0 = time.monotonic()
        for line in proc.stdout:
            if line.startswith("sent"):
                rec.done(t0, "php")
                t0 = time.monotonic()
    assert proc.returncode == 0


PHP_SCRIPT = """<?php
$first = (int)$argv[1]; $count = (int)$argv[2];
for ($n = $first; $n < $first + $count; $n++) {
    $ok = mail("rcpt" . ($n % 7) . "@example.org", "Contact form $n",
               "LOADMARK-$n-\\nSomeone filled in the form.\\n",
               "From: webmaster@example.com\\r\\nMessage-ID: <load-$n@example.com>");
    if (!$ok) { exit(1); }
    echo "sent $n\\n";
}
"""


def markers_in(data: bytes) -> list[int]:
    return [int(m) for m in MARK.findall(data)]


def held_markers(postfix: Postfix) -> list[int]:
    out: list[int] = []
    for path in (postfix.queue / "hold").rglob("*"):
        if path.is_file():
            out += markers_in(path.read_bytes())[:1]
    return out


def window_stats(samples: list[tuple[float, float, str]], a: float, b: float) -> str:
    inside = [lat for (t, lat, how) in samples if a <= t < b and how == "smtp"]
    if not inside:
        return "no SMTP samples"
    rate = len([1 for (t, _, _) in samples if a <= t < b]) / max(b - a, 0.001)
    q = statistics.quantiles(inside, n=100) if len(inside) > 1 else [inside[0]] * 99
    return (f"{rate:6.1f} msg/s accepted, SMTP latency p50 {q[49] * 1000:6.1f} ms "
            f"p99 {q[98] * 1000:7.1f} ms (n={len(inside)})")


@pytest.mark.e2e
@pytest.mark.load
def test_five_thousand_messages_with_faults(
        postfix: Postfix, sink: Sink, start_milter: Callable[..., MilterProcess],
        dns_server: DnsServer, redis_server: RedisServer, tmp_path: Path) -> None:
    dns_server.zone("example.com", '@ TXT "v=spf1 ip4:192.0.2.25 -all"\n'
                    '_dmarc TXT "v=DMARC1; p=none"\n')
    redis_server.flush()
    settings: dict[str, Any] = {
        "store": {"backend": "redis", "redis_url": redis_server.url},
        "dns": {"timeout": 0.5, "message_budget": 1.0},
        "ratelimit": {"limits": [
            {"name": "form", "key": "source", "count": "messages", "rate": 20,
             "window": 3600, "burst": 5, "origins": ["local", "submission"],
             "forms_only": True},
            {"name": "sasl", "key": "sasl_user", "count": "messages", "rate": 100000,
             "window": 3600, "burst": 10000, "origins": ["submission"]},
        ]},
    }
    milter = start_milter(settings)
    rec = Recorder()
    scripts = []
    for i in range(PHP_SCRIPTS):
        s = tmp_path / f"form{i}.php"
        s.write_text(PHP_SCRIPT)
        scripts.append(s)

    threads = [threading.Thread(target=smtp_worker,
                                args=(postfix, rec, i * SMTP_PER_THREAD, SMTP_PER_THREAD))
               for i in range(SMTP_THREADS)]
    base = SMTP_THREADS * SMTP_PER_THREAD
    threads += [threading.Thread(target=sendmail_worker,
                                 args=(postfix, rec, base + i * SENDMAIL_PER_THREAD,
                                       SENDMAIL_PER_THREAD))
                for i in range(SENDMAIL_THREADS)]
    base += SENDMAIL_THREADS * SENDMAIL_PER_THREAD
    threads += [threading.Thread(target=php_worker,
                                 args=(postfix, rec, scripts[i], base + i * PHP_PER_SCRIPT,
                                       PHP_PER_SCRIPT))
                for i in range(PHP_SCRIPTS)]

    faults: list[tuple[str, float, float]] = []

    def at(fraction: float) -> None:
        while rec.sent < TOTAL * fraction and any(t.is_alive() for t in threads):
            time.sleep(0.05)

    def inject() -> None:
        at(0.15)
        t0 = time.monotonic()
        assert milter.proc is not None
        milter.kill()  # SIGKILL: Postfix applies default_action=accept meanwhile
        time.sleep(2)
        milter.start()
        faults.append(("milter SIGKILL + restart", t0, time.monotonic()))
        at(0.35)
        t0 = time.monotonic()
        dns_server.stop()
        time.sleep(3)
        dns_server.start()
        faults.append(("DNS server stopped 3 s", t0, time.monotonic()))
        at(0.55)
        t0 = time.monotonic()
        redis_server.stop()
        time.sleep(3)
        redis_server.start()
        faults.append(("Redis stopped 3 s", t0, time.monotonic()))
        at(0.75)
        t0 = time.monotonic()
        milter.write_config({**milter.settings, "log": {"target": "stderr",
                                                        "repeat_interval": 30}})
        milter.hup()
        milter.wait_line(r"reloaded: ")
        faults.append(("SIGHUP with a changed config", t0, time.monotonic()))

    started = time.monotonic()
    injector = threading.Thread(target=inject)
    for t in [*threads, injector]:
        t.start()
    for t in [*threads, injector]:
        t.join(timeout=900)
    sending_done = time.monotonic()
    assert len(faults) == 4, f"faults injected: {faults}"
    assert all(f[2] <= sending_done for f in faults)  # every fault hit while mail flowed

    deadline = time.monotonic() + 300
    delivered: list[int] = []
    held: list[int] = []
    while time.monotonic() < deadline:
        delivered = [n for m in list(sink.messages) for n in markers_in(m.data)[:1]]
        held = held_markers(postfix)
        if len(delivered) + len(held) >= TOTAL and all(
                e["queue_name"] == "hold" for e in postfix.queue_entries()):
            break
        time.sleep(1)
    bounced = [line for line in postfix.log_text().splitlines() if "status=bounced" in line]

    print(f"\nsent {TOTAL} ({rec.sent} accepted by Postfix, {len(rec.errors)} client "
          f"retries): delivered {len(delivered)}, held {len(held)}, bounced {len(bounced)} "
          f"in {sending_done - started:.1f}s of sending")
    print(f"  whole run: {window_stats(rec.samples, started, sending_done)}")
    for name, a, b in faults:
        print(f"  during {name:30s} ({b - a:4.1f}s): {window_stats(rec.samples, a, b)}")
    errors = [line for line in milter.lines() if ": error:" in line]
    print(f"  postwarden error lines: {len(errors)}")
    php_held = len([n for n in held if n >= TOTAL - PHP_SCRIPTS * PHP_PER_SCRIPT])
    print(f"  PHP form messages held: {php_held} of {PHP_SCRIPTS * PHP_PER_SCRIPT}")
    for line in errors[:10]:
        print("    " + line[:200])

    assert rec.sent == TOTAL
    assert bounced == []
    assert len(set(delivered)) == len(delivered), "a message was delivered twice"
    assert not set(delivered) & set(held)
    assert sorted(delivered + held) == list(range(TOTAL)), "messages lost"
    # Form mail over its limit was held while the milter and Redis were up (while
    # either was down it passed: fail open), and only form mail was held.
    assert len(held) >= 100
    assert max(held) >= TOTAL - PHP_SCRIPTS * PHP_PER_SCRIPT
    assert min(held) >= TOTAL - PHP_SCRIPTS * PHP_PER_SCRIPT
    assert len(errors) < 20  # one line per condition, not one per message
    log = "\n".join(milter.lines())
    assert "LOADMARK" not in log and "Someone filled in" not in log
    assert "rcpt0@example.org" not in log and "Subject" not in log
