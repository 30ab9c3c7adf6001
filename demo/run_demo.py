"""`make demo`: a private Postfix + postwarden on loopback, a few outbound messages.

Starts Knot DNS (fixture zones), an SMTP sink, a private Postfix built from
postfix-examples/, Dovecot SASL and postwarden in monitor mode; sends mail by SMTP
submission, by the sendmail command and by PHP mail() (a contact form with a
visitor's From, seven times in a burst), prints postwarden's log lines and what
became of each message. Then the self-check: the fixture blocklists first list the
host on UCEPROTECT L3, then on L2; the daemon's periodic run logs the escalation,
and `postwarden selfcheck` prints its text report, the Nagios line and the JSON.
Then it stops everything. Nothing leaves 127.0.0.1.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from cryptography.hazmat.primitives.asymmetric import rsa  # noqa: E402

from harness.knot import DnsServer  # noqa: E402
from harness.milterproc import MilterProcess  # noqa: E402
from harness.php import run_php  # noqa: E402
from harness.postfix import Postfix  # noqa: E402
from harness.sasl import Dovecot  # noqa: E402
from harness.sink import Sink  # noqa: E402
from selfcheck_world import L2, L3, TXT, World  # noqa: E402

BIN = Path(sys.executable).parent / "postwarden"
# The demo watches UCEPROTECT and Spamhaus only, to stay quick.
OTHER_LISTS = ["b.barracudacentral.org", "bl.spamcop.net", "psbl.surriel.com",
               "bl.mailspike.net", "all.s5h.net", "all.spamrats.com", "ix.dnsbl.manitu.net",
               "truncate.gbudb.net", "dnsbl.dronebl.org"]

ZONES = {
    "example.com": '@ TXT "v=spf1 ip4:192.0.2.25 -all"\n'
                   '_dmarc TXT "v=DMARC1; p=quarantine; rua=mailto:dmarc@example.com"\n'
                   "@ MX 10 mail\nmail A 192.0.2.25\n",
    "example.net": '@ TXT "v=spf1 ip4:198.51.100.0/24 -all"\n_dmarc TXT "v=DMARC1; p=reject"\n',
}


def message(sender: str, to: str, subject: str) -> tuple[str, bytes]:
    mid = f"{uuid.uuid4().hex[:16]}@example.com"
    return mid, (f"From: {sender}\nTo: {to}\nSubject: {subject}\nMessage-ID: <{mid}>\n"
                 f"Date: Fri, 27 Nov 2026 12:00:00 +0000\n\nHello.\n").encode()


def _listed(world: World, levels: dict[str, int]) -> None:
    for zone, n in levels.items():
        world.listed[zone] = ["127.0.0.2"]
        world.txt[zone] = TXT[zone].format(n=n)


def selfcheck_demo(milter: MilterProcess, dns: DnsServer, world: World) -> None:
    """L3, then L2: the daemon logs the escalation; the self-check reports it."""
    milter.wait_line(r"selfcheck: new UCEPROTECT L3 listing", timeout=20)
    _listed(world, {L2: 5})
    for bl_zone in (L2, L3):
        world._list_zone(dns, bl_zone)
    line = milter.wait_line(r"selfcheck: UCEPROTECT L3 -> L2", timeout=20)
    print("\nthe daemon's periodic self-check, as the listing escalates (mail log):")
    for ln in milter.lines():
        if "selfcheck: " in ln and "UCEPROTECT" in ln:
            print("  " + ln)
    assert line
    cfg = ["-c", str(milter.config_path), "selfcheck", "--no-record"]
    text = subprocess.run([str(BIN), *cfg], capture_output=True, text=True, timeout=60)
    print(f"\n$ postwarden selfcheck   (exit {text.returncode})")
    print(text.stdout.rstrip())
    nag = subprocess.run([str(BIN), *cfg, "--nagios"], capture_output=True, text=True,
                         timeout=60)
    print(f"\n$ postwarden selfcheck --nagios   (exit {nag.returncode})\n{nag.stdout.rstrip()}")
    js = subprocess.run([str(BIN), *cfg, "--json"], capture_output=True, text=True, timeout=60)
    data = json.loads(js.stdout)
    l2 = next(c for c in data["checks"] if c["id"] == "uceprotect.l2")
    short = {k: data[k] for k in ("version", "generated", "status", "exit_code", "counts")}
    short["checks"] = [l2, f"... {len(data['checks']) - 1} more"]
    print(f"\n$ postwarden selfcheck --json   (exit {js.returncode}; abridged)")
    print(json.dumps(short, indent=2))


def main() -> int:
    base = Path(tempfile.mkdtemp(prefix="postwarden-demo-"))
    base.chmod(0o755)
    dns, sink = DnsServer(base / "knot"), Sink()
    postfix = Postfix(base / "postfix", sink.port)
    sasl = Dovecot(base / "dovecot", postfix.queue / "private" / "auth", {"alice": "secret"})
    milter: MilterProcess | None = None
    t0 = time.monotonic()
    world = World(key=rsa.generate_private_key(public_exponent=65537, key_size=2048))
    _listed(world, {L3: 61})  # the host's ASN is on UCEPROTECT L3 from the start
    try:
        world.publish(dns)
        for name, records in ZONES.items():
            dns.zone(name, records)
        dns.start()
        sink.start()
        postfix.start()
        sasl.start()
        milter = MilterProcess(base / "milter", postfix.milter_socket, {
            "socket": f"unix:{postfix.milter_socket}",
            "mode": "monitor",
            "outbound": {"internal_networks": []},
            "host": {"ips": ["192.0.2.25"], "hostname": "mail.example.com",
                     "domains": ["example.com"]},
            "dns": {"nameservers": ["127.0.0.1"], "port": dns.port, "timeout": 1.0},
            "store": {"backend": "sqlite", "path": str(base / "milter" / "state.db")},
            "log": {"target": "stderr"},
            "selfcheck": {"interval": 2, "startup_delay": 0.5, "query_timeout": 1.0,
                          "postfix_config_dir": str(postfix.conf),
                          "lists_remove": OTHER_LISTS},
        })
        milter.start()
        print(f"private Postfix on 127.0.0.1:{postfix.smtp_port} (submission "
              f"{postfix.submission_port}), postwarden on {postfix.milter_socket}\n")

        sent: dict[str, str] = {}
        mid, data = message("Alice <alice@example.com>", "bob@example.org", "Minutes")
        sent[postfix.smtp(data, "alice@example.com", ["bob@example.org"],
                          login=("alice", "secret"))] = "SMTP submission (SASL alice)"
        mid, data = message("cron@example.com", "ops@example.org", "Backup report")
        postfix.sendmail(data, "cron@example.com", ["ops@example.org"])
        sent[postfix.queue_id_for(mid)] = "sendmail command (cron job)"
        # A contact form abused in a burst: the form limit (burst 5) holds the rest.
        form = base / "contact.php"
        form.write_text("<?php\nfor ($i = 1; $i <= 7; $i++) {\n"
                        "  mail('owner@example.org', \"Contact form $i\", 'Hi!', "
                        "'From: Visitor <visitor@example.net>');\n}\n")
        run_php(form, postfix.conf)
        deadline = time.monotonic() + 20
        while len(sent) < 2 + 7 and time.monotonic() < deadline:
            for line in postfix.log_text().splitlines():
                if "message-id=" in line and "postfix/cleanup" in line:
                    qid = line.split("]: ", 1)[1].split(":", 1)[0]
                    sent.setdefault(qid, "PHP mail() contact form")
            time.sleep(0.1)

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            done = [q for q in sent if milter.summaries(q)]
            if len(done) == len(sent) and postfix.wait_idle(30) is not None:
                break
            time.sleep(0.2)
        held = set(postfix.held())
        print("postwarden's log lines:")
        for line in milter.lines():
            if any(q in line for q in sent):
                print("  " + line)
        print("\nwhat happened to each message:")
        log = postfix.log_text().splitlines()
        for qid, how in sent.items():
            mine = [line for line in log if f"{qid}: " in line]
            fate = ("held (postsuper -H to release)" if qid in held else
                    "delivered" if any("status=sent" in line for line in mine) else
                    "bounced" if any("status=bounced" in line for line in mine) else
                    "still queued")
            print(f"  {qid}  {how:32s} {fate}")
        selfcheck_demo(milter, dns, world)
        print(f"\ndemo finished in {time.monotonic() - t0:.1f}s")
        return 0
    finally:
        if milter is not None:
            milter.stop()
        sasl.stop()
        postfix.stop()
        sink.stop()
        dns.stop()
        shutil.rmtree(base, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
