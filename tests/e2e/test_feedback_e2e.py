"""The feedback loop end to end: a private Postfix relays gmail.test, outlook.test,
yahoo.test and strict.test (transport_maps) to loopback receivers answering with the
real reply texts; postwarden's reader follows Postfix's own maillog_file.

PHP form mail, SASL mail and sendmail mail go to them; each bounce and deferral is
attributed to its source in `postwarden status --json`; strict.test citing
dnsbl-1.uceprotect.net gives one feedback.blocklisted warning and a UCEPROTECT
lookup at once (seen by a counting DNS forwarder in front of Knot); Gmail's 5.7.26
for a message predicted dmarc=pass is reported as a mismatch. The reader survives
`postfix logrotate` and a daemon restart without counting a line twice or missing
one. With the brake on in enforce mode, a form whose mail bounces 5.1.1 has its next
message held with reason=feedback.unknown_recipients.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from conftest import HOST_IP, SASL_USERS, base_settings
from harness import need
from harness.dns_dropper import DnsDropper
from harness.knot import DnsServer
from harness.milterproc import BIN, MilterProcess, deep_merge
from harness.php import run_php
from harness.postfix import Postfix
from harness.receivers import Receiver, standard, transport_map
from harness.sasl import Dovecot
from harness.sink import Sink
from postwarden.store.sqlite_store import SqliteStore
from selfcheck_world import L1, TXT, World

pytestmark = pytest.mark.e2e
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)

FORM_PHP = r"""<?php
// A contact form: one mail() per submission, to the address typed into the form.
[$self, $to, $tag] = $argv;
$headers = "From: Website <webmaster@example.com>\r\n"
         . "Message-ID: <$tag@example.com>\r\n"
         . "Content-Type: text/plain; charset=utf-8";
if (!mail($to, "Contact form", "Hello, a question about job $tag.\n", $headers)) {
    exit(1);
}
"""


@pytest.fixture(scope="module")
def receivers() -> Iterator[list[Receiver]]:
    rs = standard()
    for r in rs:
        r.start()
    yield rs
    for r in rs:
        r.stop()


@pytest.fixture(scope="module")
def fb_postfix(e2e_base: Path, _sink: Sink, receivers: list[Receiver]) -> Iterator[Postfix]:
    base = e2e_base / "feedback-postfix"
    base.mkdir(parents=True, exist_ok=True)
    (base / "transport").write_text(transport_map(receivers))
    pf = Postfix(base, _sink.port, extra_main=(
        f"transport_maps = texthash:{base}/transport\n"
        # `postfix logrotate` renames maillog_file and opens a new one; no compressor,
        # so a rotated file stays readable (a compressed one is read before it goes).
        "maillog_file_compressor = /bin/true\n"))
    pf.start()
    sasl = Dovecot(base / "dovecot", pf.queue / "private" / "auth", SASL_USERS)
    sasl.start()
    yield pf
    sasl.stop()
    pf.stop()


@pytest.fixture(scope="module")
def counting_dns(dns_server: DnsServer) -> Iterator[DnsDropper]:
    World(key=KEY, listed={L1: ["127.0.0.2"]}, txt={L1: TXT[L1]}).publish(dns_server)
    proxy = DnsDropper(dns_server.port, ())
    proxy.start()
    yield proxy
    proxy.stop()


_n = iter(range(1000))


@pytest.fixture
def milter(fb_postfix: Postfix, dns_server: DnsServer, counting_dns: DnsDropper,
           e2e_base: Path) -> Iterator[Callable[..., MilterProcess]]:
    started: list[MilterProcess] = []

    def start(overrides: dict[str, Any] | None = None, workdir: Path | None = None
              ) -> MilterProcess:
        wd = workdir or e2e_base / f"feedback-milter-{next(_n)}"
        settings = deep_merge(base_settings(fb_postfix, dns_server, wd), {
            "dns": {"port": counting_dns.port},
            "selfcheck": {"periodic": False},  # the only list lookups: the feedback's own
            "feedback": {"log_file": str(fb_postfix.maillog), "poll_interval": 0.1},
        })
        proc = MilterProcess(wd, fb_postfix.milter_socket, deep_merge(settings,
                                                                      overrides or {}))
        proc.start()
        proc.wait_line(r"feedback: reading delivery results from file ")
        started.append(proc)
        return proc

    yield start
    for p in started:
        p.stop()
    fb_postfix.postsuper("-d", "ALL", "deferred")  # no retries into the next test


def php_form(pf: Postfix, tmp: Path, to: str) -> str:
    script = tmp / "form.php"
    script.write_text(FORM_PHP)
    tag = uuid.uuid4().hex[:12]
    run_php(script, pf.conf, [to, tag])
    return pf.queue_id_for(f"{tag}@example.com")


def sendmail(pf: Postfix, to: str) -> str:
    tag = uuid.uuid4().hex[:12]
    pf.sendmail((f"From: cron <root@example.com>\r\nTo: {to}\r\nSubject: nightly report\r\n"
                 f"Message-ID: <{tag}@example.com>\r\n\r\nall good\r\n").encode(),
                "root@example.com", [to])
    return pf.queue_id_for(f"{tag}@example.com")


def sasl(pf: Postfix, to: str) -> str:
    data = (f"From: Alice <alice@example.com>\r\nTo: {to}\r\nSubject: minutes\r\n"
            f"Message-ID: <{uuid.uuid4().hex}@example.com>\r\n\r\nthe minutes\r\n").encode()
    return pf.smtp(data, "alice@example.com", [to], login=("alice", SASL_USERS["alice"]))


def deliveries(m: MilterProcess, qids: list[str], pred: Callable[[dict[str, list[Any]]], bool],
               timeout: float = 60) -> dict[str, list[Any]]:
    """Delivery records per queue ID, read from the milter's store, once pred holds."""
    deadline = time.monotonic() + timeout
    while True:
        s = SqliteStore(m.dir / "state.db")
        try:
            got: dict[str, list[Any]] = {q: [] for q in qids}
            for d in s.deliveries(0):
                if d.queue_id in got:
                    got[d.queue_id].append(d)
        finally:
            s.close()
        if pred(got) or time.monotonic() > deadline:
            return got
        time.sleep(0.2)


def status_json(m: MilterProcess) -> dict[str, Any]:
    out = subprocess.run([str(BIN), "--config", str(m.config_path), "status", "--json"],
                         capture_output=True, text=True, timeout=60, check=True)
    return dict(json.loads(out.stdout))


def test_replies_attributed_to_sources_blocklist_and_mismatch(
        milter: Callable[..., MilterProcess], fb_postfix: Postfix, counting_dns: DnsDropper,
        tmp_path: Path) -> None:
    m = milter()
    pf = fb_postfix
    form_unknown = php_form(pf, tmp_path, "nobody-1@gmail.test")
    form_dmarc = php_form(pf, tmp_path, "dmarc-check@gmail.test")
    form_listed = php_form(pf, tmp_path, "info@strict.test")
    form_listed2 = php_form(pf, tmp_path, "sales@strict.test")
    sasl_slow = sasl(pf, "slow-lane@outlook.test")
    cron_tss = sendmail(pf, "tss-ops@yahoo.test")
    ok = sasl(pf, "friend@gmail.test")
    qids = [form_unknown, form_dmarc, form_listed, form_listed2, sasl_slow, cron_tss, ok]
    sources = {q: m.wait_summary(q, timeout=60).get("source", "") for q in qids}
    form = sources[form_unknown]
    # Postfix 3.7 hands non_smtpd_milters no uid: PHP and sendmail mail share one key
    # (postwarden.milter.forms.identify), SASL mail has its own
    assert form.startswith(("uid:", "local:")) and sources[sasl_slow] == "sasl:alice"
    assert m.wait_summary(form_dmarc)["dmarc"] == "pass"  # the prediction on record
    got = deliveries(m, qids, lambda g: all(g.values()))
    assert all(got.values()), got

    def one(q: str) -> tuple[str, str, str]:
        d = got[q][0]
        return d.status, d.cls, d.source

    assert one(form_unknown) == ("bounced", "unknown_recipient", form)
    assert one(form_dmarc) == ("bounced", "auth", form)
    assert one(form_listed) == ("bounced", "blocklist", form)
    assert one(sasl_slow) == ("deferred", "reputation", "sasl:alice")
    assert one(cron_tss) == ("deferred", "reputation", sources[cron_tss])
    assert one(ok) == ("sent", "", "sasl:alice")

    data = status_json(m)["feedback"]
    by_src = {s["source"]: s for s in data["sources"]}
    local = by_src[form]
    assert local["sent"] == sum(1 for q in qids if sources[q] == form)
    assert {k: n for k, n in local["by_class"].items() if k.startswith("bounced:")} == {
        "bounced:auth": 1, "bounced:blocklist": 2, "bounced:unknown_recipient": 1}
    assert by_src["sasl:alice"]["delivered"] == 1
    assert by_src["sasl:alice"]["by_class"].get("deferred:reputation", 0) >= 1
    assert by_src[sources[cron_tss]]["by_class"].get("deferred:reputation", 0) >= 1
    assert local["last_reply"] is not None
    assert [x["queue_id"] for x in data["mismatches"]] == [form_dmarc]

    # the mismatch, loud, with the evidence
    line = m.wait_line(rf"{form_dmarc}: warning: feedback.auth_rejected: MISMATCH: "
                       r"predicted dmarc=pass; gmail.test answered 5.7.26")
    assert "evidence: dkim=" in line
    # one blocklist warning for two citations, and UCEPROTECT asked at once
    m.wait_line(r"self-check of UCEPROTECT Level 1 \(dnsbl-1.uceprotect.net\) right away: "
                rf"{HOST_IP}: critical")
    blocklisted = [x for x in m.lines() if "feedback.blocklisted" in x]
    assert len(blocklisted) == 1, blocklisted
    assert "strict.test rejects this host citing dnsbl-1.uceprotect.net" in blocklisted[0]
    asked = [n for n in counting_dns.seen if n == "25.2.0.192.dnsbl-1.uceprotect.net A"]
    assert len(asked) == 1, counting_dns.seen
    assert len([x for x in m.lines() if "right away" in x]) == 1


def test_log_rotation_and_restart_count_every_line_once(
        milter: Callable[..., MilterProcess], fb_postfix: Postfix, e2e_base: Path) -> None:
    pf = fb_postfix
    wd = e2e_base / "feedback-rotate"
    m = milter(workdir=wd)
    first = [sasl(pf, f"a{i}@gmail.test") for i in range(3)]
    deliveries(m, first, lambda g: all(g.values()))
    subprocess.run([need("postfix"), "-c", str(pf.conf), "logrotate"], check=True,
                   capture_output=True)
    second = [sasl(pf, f"b{i}@gmail.test") for i in range(3)]
    deliveries(m, second, lambda g: all(g.values()))
    m.stop()
    # while postwarden is down: more mail (accepted unchecked), and another rotation
    down = [sasl(pf, f"c{i}@gmail.test") for i in range(2)]
    pf.wait_idle()
    time.sleep(1)  # postlogd has written the delivery lines
    subprocess.run([need("postfix"), "-c", str(pf.conf), "logrotate"], check=True,
                   capture_output=True)
    down += [sasl(pf, f"d{i}@gmail.test") for i in range(2)]
    pf.wait_idle()
    again = milter(workdir=wd)
    last = [sasl(pf, f"e{i}@gmail.test") for i in range(2)]
    everything = first + second + down + last
    got = deliveries(again, everything, lambda g: all(g.values()))
    time.sleep(1.5)  # a line counted twice would show up now
    got = deliveries(again, everything, lambda g: True, timeout=0)
    assert {q: len(v) for q, v in got.items()} == {q: 1 for q in everything}
    assert all(d[0].status == "sent" for d in got.values())


def test_brake_holds_the_form_whose_mail_bounces_unknown_recipients(
        milter: Callable[..., MilterProcess], fb_postfix: Postfix, tmp_path: Path) -> None:
    pf = fb_postfix
    m = milter({"mode": "enforce",
                "policy": {"enforce": {"feedback.unknown_recipients": "hold"}},
                "feedback": {"brake_min": 3, "brake_ratio": 0.5}})
    bounced = [php_form(pf, tmp_path, f"nobody-{i}@gmail.test") for i in range(3)]
    got = deliveries(m, bounced, lambda g: all(g.values()))
    assert [got[q][0].cls for q in bounced] == ["unknown_recipient"] * 3
    nxt = php_form(pf, tmp_path, "real-person@gmail.test")
    summary = m.wait_summary(nxt)
    assert summary["action"] == "hold"
    m.wait_line(rf"{nxt}: hold: reason=feedback.unknown_recipients source=")
    pf.wait_queue(lambda es: any(e["queue_id"] == nxt and e["queue_name"] == "hold"
                                 for e in es))
    pf.postsuper("-d", nxt)


def test_dmarc_reports_imported_once_bad_ones_rejected_mismatch_reported(
        milter: Callable[..., MilterProcess], fb_postfix: Postfix, tmp_path: Path) -> None:
    from dmarc_fixtures import MALFORMED, XML_BOMB, gz, report_mail, report_xml, zipped

    m = milter()
    sent = [php_form(fb_postfix, tmp_path, f"friend-{i}@gmail.test") for i in range(2)]
    for q in sent:
        assert m.wait_summary(q)["dmarc"] == "pass"
    now = time.time()
    ours = {"ip": HOST_IP, "count": 2, "dkim": "fail", "spf": "fail"}  # planted mismatch
    spoof = {"ip": "203.0.113.9", "count": 40, "dkim": "fail", "spf": "fail"}
    good = report_xml("g-100", now - 3600, now + 3600, [ours, spoof])
    reports = tmp_path / "reports"
    reports.mkdir()
    (reports / "google.com!example.com!1!2.xml.gz").write_bytes(gz(good))
    (reports / "duplicate.xml").write_bytes(good)
    (reports / "yahoo.zip").write_bytes(zipped("yahoo.xml", report_xml(
        "y-7", now - 3600, now + 3600, [{"ip": HOST_IP, "count": 2}], org="yahoo.com")))
    (reports / "broken.xml").write_bytes(MALFORMED)
    (reports / "bomb.xml").write_bytes(XML_BOMB)
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "new" / "1700000000.M1.mail").write_bytes(report_mail(
        "outlook.xml.gz", gz(report_xml("o-1", now - 3600, now + 3600,
                                        [{"ip": HOST_IP, "count": 2}], org="outlook.com"))))

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([str(BIN), "--config", str(m.config_path), *args],
                              capture_output=True, text=True, timeout=120)

    r = cli("dmarc-reports", str(reports), str(maildir))
    assert r.returncode == 1, r.stderr
    lines = r.stdout.splitlines()
    assert lines[-1] == "3 imported, 1 duplicate(s), 2 rejected, 3 finding(s)", r.stdout
    assert any(x.startswith("rejected:") and "bomb.xml: refused" in x and "XML bomb" in x
               for x in lines)
    assert any(x.startswith("rejected:") and "broken.xml: not well-formed XML" in x
               for x in lines)
    assert any(x.startswith("duplicate: google.com report g-100") for x in lines)
    mism = [x for x in lines if "dmarc_report.mismatch" in x]
    assert len(mism) == 2  # spf and dmarc predicted pass, both seen failing
    assert any("MISMATCH: google.com saw dmarc=fail for 2 message(s) From example.com from "
               f"{HOST_IP}; postwarden predicted dmarc=pass" in x for x in mism)
    assert any("dmarc_report.foreign_ip" in x and "203.0.113.9" in x for x in lines)
    # again: every input is a duplicate now (4 inputs, 3 reports), nothing counted twice
    again = json.loads(cli("dmarc-reports", "--json", str(reports), str(maildir)).stdout)
    assert (len(again["imported"]), len(again["duplicates"]), len(again["rejected"])) == \
        (0, 4, 2)
    # and the self-check carries the findings in "receivers said"
    sc = cli("selfcheck", "--json", "--no-record", "--only", "dmarc_report",
             "--only", "feedback")
    report = json.loads(sc.stdout)
    ids = sorted((c["id"], c["status"]) for c in report["checks"])
    assert ("dmarc_report.mismatch", "critical") in ids
    assert ("dmarc_report.foreign_ip", "warning") in ids
    assert any(i == "feedback.receivers" for i, _ in ids)
    assert cli("selfcheck", "--no-record", "--only", "dmarc_report").stdout.count(
        "== Receivers said ==") == 1


def test_the_daemon_imports_reports_arriving_in_its_maildir(
        milter: Callable[..., MilterProcess], fb_postfix: Postfix, tmp_path: Path) -> None:
    from dmarc_fixtures import gz, report_mail, report_xml

    maildir = tmp_path / "dmarc-Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    m = milter({"feedback": {"dmarc_maildir": str(maildir), "dmarc_interval": 1}})
    m.wait_line(rf"importing DMARC aggregate reports from Maildir {maildir} every 1s")
    qid = php_form(fb_postfix, tmp_path, "friend@gmail.test")
    assert m.wait_summary(qid)["dmarc"] == "pass"
    now = time.time()
    (maildir / "new" / "1.M1.mail").write_bytes(report_mail("r.xml.gz", gz(report_xml(
        "w-1", now - 600, now + 600, [{"ip": HOST_IP, "count": 1, "dkim": "fail",
                                        "spf": "fail"}]))))
    m.wait_line(r"feedback: DMARC report google.com w-1 imported: 1 rows about this host, "
                r"2 finding\(s\)")
    m.wait_line(r"warning: dmarc_report.mismatch: MISMATCH: google.com saw dmarc=fail")
