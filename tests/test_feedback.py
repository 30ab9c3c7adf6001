"""The feedback loop without Postfix: delivery lines parsed, replies classified,
results tied to the stored outbound record, warnings, the log follower's rotation
and restart handling, and the brake on a source's next message."""

from __future__ import annotations

import io
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from form_messages import form_message
from postwarden import dns
from postwarden.config import DnsConfig, from_dict
from postwarden.feedback.attribute import Feedback
from postwarden.feedback.follow import FileFollower, choose
from postwarden.feedback.logline import parse
from postwarden.log import Logger
from postwarden.milter import feedback_brake, forms
from postwarden.milter.pipeline import Inspector, Services
from postwarden.replies import classify
from postwarden.store import OutboundRecord
from postwarden.store.sqlite_store import SqliteStore

T0 = 1_700_000_000.0


def line(qid: str, to: str, dsn: str, status: str, text: str) -> str:
    return (f"Dec  1 11:00:00 mail postfix/smtp[4242]: {qid}: to=<{to}>, "
            f"relay=mx.{to.split('@')[1]}[127.0.0.1]:2525, delay=0.31, "
            f"delays=0.05/0.01/0.1/0.15, dsn={dsn}, status={status} ({text})")


def said(host: str, reply: str, cmd: str = "end of DATA") -> str:
    return f"host {host}[127.0.0.1] said: {reply} (in reply to {cmd} command)"


GMAIL_DMARC = ("550-5.7.26 Unauthenticated email from example.com is not accepted due to "
               "domain's DMARC policy. Please contact the administrator of example.com "
               "domain if this was a legitimate mail. 550 5.7.26 DMARC policy - gsmtp")


# --- the delivery line ------------------------------------------------------------------

def test_parse_a_bounce_keeps_the_receivers_reply() -> None:
    d = parse(line("4F9D42A0B1", "bob@gmail.test", "5.7.26", "bounced",
                   said("mx.gmail.test", GMAIL_DMARC)))
    assert d is not None
    assert (d.queue_id, d.rcpt_domain, d.dsn, d.status) == ("4F9D42A0B1", "gmail.test",
                                                            "5.7.26", "bounced")
    assert d.text == GMAIL_DMARC and d.remote
    assert d.relay == "mx.gmail.test[127.0.0.1]:2525"


def test_parse_sent_deferred_lmtp_and_orig_to() -> None:
    sent = parse(line("ABCDE12345", "a@outlook.test", "2.0.0", "sent", "250 2.0.0 Ok"))
    assert sent is not None and sent.status == "sent" and not sent.remote
    local = ("postfix/lmtp[9]: 5B2C1D0E9F: to=<u@example.com>, orig_to=<alias@example.com>, "
             "relay=mail.example.com[private/dovecot-lmtp], conn_use=2, delay=0.1, "
             "delays=0/0/0/0.1, dsn=4.2.2, status=deferred (host x said: 452 4.2.2 Mailbox "
             "full (in reply to RCPT TO command))")
    d = parse(local)
    assert d is not None and d.status == "deferred" and d.text == "452 4.2.2 Mailbox full"
    conn = parse(line("ABCDE12346", "a@down.test", "4.4.1", "deferred",
                      "connect to mx.down.test[127.0.0.1]:25: Connection refused"))
    assert conn is not None and not conn.remote


def test_parse_rfc3339_syslog_and_debians_relay_transport() -> None:
    text = ("2026-12-01T11:00:00.123456+00:00 mail postfix-out/relay[77]: 4F9D42A0B1: "
            "to=<a@Yahoo.Test>, relay=mx.yahoo.test[127.0.0.1]:25, delay=1.2, "
            "delays=0.1/0/0.5/0.6, dsn=5.7.9, status=bounced (host mx.yahoo.test[127.0.0.1] "
            "said: 554 5.7.9 Message not accepted for policy reasons (in reply to end of "
            "DATA command))")
    d = parse(text)
    assert d is not None and d.rcpt_domain == "yahoo.test" and d.dsn == "5.7.9"
    assert classify(d.text, d.dsn).cls == "auth"


@pytest.mark.parametrize("text", [
    "postfix/smtp[1]: ABCDE12345: to=<a@b.test>, relay=x, status=sent (ok)",  # fields missing
    "postfix/smtp[1]: ABCDE12345: to=<a>b@c.test>, relay=x[1.2.3.4]:25, delay=1, "
    "delays=1/1/1/1, dsn=2.0.0, status=sent (ok)",
    "postfix/smtp[1]: ABCDE12345: to=<a@b.test>, relay=x[1.2.3.4]:25, delay=1, "
    "delays=1/1/1/1, dsn=9.9.9, status=sent (ok)",
    "postfix/smtp[1]: ABCDE12345: to=<a@b.test>, relay=x[1.2.3.4]:25, delay=1, "
    "delays=1/1/1/1, dsn=2.0.0, status=sent (" + "A" * 20000 + ")",
    "postfix/cleanup[1]: ABCDE12345: message-id=<x@y>",
])
def test_malformed_lines_are_not_deliveries(text: str) -> None:
    assert parse(text) is None


def test_hostile_reply_bytes_cannot_forge_a_line() -> None:
    d = parse(line("ABCDE12345", "a@evil.test", "5.7.1", "bounced",
                   said("mx.evil.test", "550 5.7.1 spam\x1b[31m\x00\u2028fake: status=sent")))
    assert d is not None and d.status == "bounced"
    assert all(c.isprintable() for c in d.text) and "\x1b" not in d.text


# --- the reply table ----------------------------------------------------------------------

@pytest.mark.parametrize("dsn, text, cls, zone", [
    ("5.7.26", "550-5.7.26 This mail has been blocked because the sender is "
               "unauthenticated. Gmail requires all senders to authenticate", "auth", ""),
    ("5.7.26", GMAIL_DMARC, "auth", ""),
    ("5.7.27", "550-5.7.27 The sender's domain has not passed SPF", "auth", ""),
    ("5.7.9", "554 5.7.9 Message not accepted for policy reasons. See "
              "https://senders.yahooinc.com/error-codes", "auth", ""),
    ("5.7.1", "550 5.7.1 DKIM signature verification failed", "auth", ""),
    ("5.7.515", "550 5.7.515 Access denied, sending domain example.com does not meet the "
                "required authentication level", "auth", ""),
    ("5.7.25", "550-5.7.25 The IP address sending this message does not have a PTR "
               "record setup", "rdns", ""),
    ("4.7.25", "450 4.7.25 Client host rejected: cannot find your hostname, [192.0.2.25]",
     "rdns", ""),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
              "dnsbl-1.uceprotect.net; IP 192.0.2.25 is UCEPROTECT-Level 1 listed",
     "blocklist", "dnsbl-1.uceprotect.net"),
    ("5.7.1", "554 5.7.1 Your IP 192.0.2.25 is listed in zen.spamhaus.org", "blocklist",
     "zen.spamhaus.org"),
    ("5.7.1", "550 5.7.1 rejected: see https://www.spamhaus.org/query/ip/192.0.2.25",
     "blocklist", "zen.spamhaus.org"),
    ("5.7.1", "554 5.7.1 Service unavailable; Client host [192.0.2.25] blocked using "
              "b.barracudacentral.org", "blocklist", "b.barracudacentral.org"),
    ("5.7.1", "550 5.7.1 Rejected by Cloudmark CSI: poor reputation", "blocklist", ""),
    ("5.7.1", "550 5.7.1 Unfortunately, messages from [192.0.2.25] weren't sent. Please "
              "contact your Internet service provider since part of their network is on "
              "our block list (S3140).", "blocklist", ""),
    ("5.7.606", "550 5.7.606 Access denied, banned sending IP [192.0.2.25]", "blocklist", ""),
    ("4.7.28", "421-4.7.28 Gmail has detected an unusual rate of unsolicited mail "
               "originating from your IP address", "reputation", ""),
    ("4.7.650", "451 4.7.650 The mail server [192.0.2.25] has been temporarily rate "
                "limited due to IP reputation.", "reputation", ""),
    ("4.7.0", "421 4.7.0 [TSS04] Messages from 192.0.2.25 temporarily deferred due to "
              "unexpected volume or user complaints", "reputation", ""),
    ("4.7.0", "421 4.7.0 Try again later, closing connection. You are being rate limited",
     "rate", ""),
    ("5.7.1", "550-5.7.1 Our system has detected that this message is likely unsolicited "
              "mail", "content", ""),
    ("5.7.1", "554 5.7.1 Message rejected as spam", "content", ""),
    ("5.1.1", "550 5.1.1 <nobody@gmail.test>: Recipient address rejected: User unknown",
     "unknown_recipient", ""),
    ("5.1.1", "550 5.1.1 The email account that you tried to reach does not exist",
     "unknown_recipient", ""),
    ("5.2.2", "552 5.2.2 The recipient's inbox is out of storage space (mailbox full)",
     "mailbox_full", ""),
    ("5.7.10", "530 5.7.10 Must issue a STARTTLS command first", "tls", ""),
    ("5.7.1", "550 5.7.1 Relaying denied by local policy", "policy", ""),
    ("5.1.1", "550 something unusual", "unknown_recipient", ""),  # by DSN only
])
def test_real_reply_texts(dsn: str, text: str, cls: str, zone: str) -> None:
    c = classify(text, dsn)
    assert (c.cls, c.zone) == (cls, zone), c
    assert c.meaning and c.advice


def test_config_replies_come_first() -> None:
    from postwarden.feedback.attribute import extra_replies

    cfg = from_dict({"feedback": {"replies": [
        {"pattern": r"ACME-BL-\d+", "kind": "blocklist", "zone": "bl.acme.test"}]}})
    extra = extra_replies(list(cfg.feedback.replies))
    assert classify("550 5.7.1 ACME-BL-17 rejected as spam", "5.7.1", extra).zone == \
        "bl.acme.test"
    assert classify("550 5.7.1 ACME-BL-17 rejected as spam", "5.7.1").cls == "content"


# --- attribution and warnings ---------------------------------------------------------------

@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteStore]:
    s = SqliteStore(tmp_path / "state.db")
    yield s
    s.close()


@pytest.fixture
def logbuf() -> tuple[Logger, io.StringIO]:
    buf = io.StringIO()
    lg = Logger()
    lg.setup("stderr", stream=buf, repeat_interval=600)
    return lg, buf


def outbound(qid: str, source: str = "uid:33", dmarc: str = "pass"
             ) -> OutboundRecord:
    return OutboundRecord(qid, T0, source, "local", "example.com", "example.com", True,
                          "pass", "pass", dmarc)


def test_a_bounce_is_tied_to_its_source(store: SqliteStore,
                                        logbuf: tuple[Logger, io.StringIO]) -> None:
    lg, buf = logbuf
    store.record_outbound(outbound("AAAAA11111"))
    fb = Feedback(store, logger=lg, clock=lambda: T0 + 10)
    assert fb(line("AAAAA11111", "x@gmail.test", "5.1.1", "bounced",
                   said("mx.gmail.test", "550 5.1.1 <x@gmail.test> does not exist")))
    assert fb(line("BBBBB22222", "y@gmail.test", "2.0.0", "sent", "250 ok"))
    assert not fb("Dec  1 postfix/qmgr[1]: AAAAA11111: removed")
    recs = store.deliveries(T0)
    assert [(r.queue_id, r.status, r.cls, r.source) for r in recs] == [
        ("BBBBB22222", "sent", "", ""),
        ("AAAAA11111", "bounced", "unknown_recipient", "uid:33")]
    assert fb.counters.unattributed == 1 and fb.counters.deliveries == 2
    assert "AAAAA11111: warning: feedback.unknown_recipients:" in buf.getvalue()
    assert "source=uid:33" in buf.getvalue()


def test_auth_rejection_of_a_pass_prediction_is_a_mismatch(
        store: SqliteStore, logbuf: tuple[Logger, io.StringIO]) -> None:
    lg, buf = logbuf
    store.record_outbound(outbound("CCCCC33333", dmarc="pass"))
    store.record_outbound(outbound("DDDDD44444", dmarc="fail"))
    fb = Feedback(store, logger=lg)
    fb(line("CCCCC33333", "x@gmail.test", "5.7.26", "bounced", said("mx.gmail.test",
                                                                    GMAIL_DMARC)))
    fb(line("DDDDD44444", "x@gmail.test", "5.7.26", "bounced", said("mx.gmail.test",
                                                                    GMAIL_DMARC)))
    out = buf.getvalue()
    assert "CCCCC33333: warning: feedback.auth_rejected: MISMATCH: predicted dmarc=pass; " \
           "gmail.test answered 5.7.26" in out
    assert "DDDDD44444: warning: feedback.auth_rejected: gmail.test answered 5.7.26" in out
    assert "predicted dkim=pass spf=pass dmarc=fail" in out


def test_a_cited_list_warns_once_and_is_rechecked_once(
        store: SqliteStore, logbuf: tuple[Logger, io.StringIO]) -> None:
    lg, buf = logbuf
    checked: list[str] = []
    done = threading.Event()

    def recheck(zone: str) -> None:
        checked.append(zone)
        done.set()

    fb = Feedback(store, logger=lg, recheck=recheck)
    reply = said("mx.strict.test", "554 5.7.1 Service unavailable; Client host "
                 "[192.0.2.25] blocked using dnsbl-1.uceprotect.net", "RCPT TO")
    for i in range(3):
        fb(line(f"EEEEE5555{i}", f"u{i}@strict.test", "5.7.1", "bounced", reply))
    assert done.wait(5)
    time.sleep(0.2)
    assert checked == ["dnsbl-1.uceprotect.net"]
    warnings = [x for x in buf.getvalue().splitlines() if "feedback.blocklisted" in x]
    assert len(warnings) == 1
    assert "strict.test rejects this host citing dnsbl-1.uceprotect.net" in warnings[0]
    assert "critical:" in warnings[0]


def test_malformed_delivery_lines_are_counted(store: SqliteStore,
                                              logbuf: tuple[Logger, io.StringIO]) -> None:
    lg, buf = logbuf
    fb = Feedback(store, logger=lg)
    assert not fb("postfix/smtp[1]: ZZZZZ99999: to=<a@b>, status=sent (\x00 forged)")
    assert not fb("postfix/smtp[1]: ZZZZZ99999: to=<a@b>, status=bounced (x)")
    assert fb.counters.malformed == 2 and store.deliveries(0) == []
    assert "\x00" not in buf.getvalue() and "skipped a malformed delivery line" in buf.getvalue()


# --- the follower -----------------------------------------------------------------------------

class Collect:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def __call__(self, text: str) -> bool:
        self.lines.append(text)
        return True


def follow_until(f: FileFollower, want: int, c: Collect, timeout: float = 10) -> None:
    stop = threading.Event()
    t = threading.Thread(target=f.run, args=(stop, c))
    t.start()
    deadline = time.monotonic() + timeout
    while len(c.lines) < want and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(0.1)  # nothing more arrives
    stop.set()
    t.join(5)


def test_file_rotation_and_restarts_count_each_line_once(tmp_path: Path,
                                                         store: SqliteStore) -> None:
    log = tmp_path / "maillog"
    log.write_text("old-1\n")
    c = Collect()
    first = FileFollower(str(log), store, poll=0.02, start_at="end")
    stop = threading.Event()
    t = threading.Thread(target=first.run, args=(stop, c))
    t.start()
    time.sleep(0.2)
    with log.open("a") as fh:
        fh.write("a-1\na-2\npart")  # a half-written line is not read yet
    time.sleep(0.2)
    with log.open("a") as fh:
        fh.write("ial\n")
    time.sleep(0.2)
    os.rename(log, tmp_path / "maillog.1")  # logrotate: rename, then a new file
    with (tmp_path / "maillog.1").open("a") as fh:
        fh.write("a-3\n")  # written by Postfix before it reopened
    log.write_text("b-1\n")
    time.sleep(0.3)
    stop.set()
    t.join(5)
    assert c.lines == ["a-1", "a-2", "partial", "a-3", "b-1"]

    # down: more lines, then a rename while stopped; restart resumes in maillog.1
    with log.open("a") as fh:
        fh.write("b-2\n")
    os.rename(log, tmp_path / "maillog.2")
    log.write_text("c-1\n")
    follow_until(FileFollower(str(log), store, poll=0.02), 7, c)
    assert c.lines[5:] == ["b-2", "c-1"]

    # copytruncate: the file is emptied and written again from the start
    log.write_text("")
    c2 = Collect()
    again = FileFollower(str(log), store, poll=0.02)
    stop = threading.Event()
    t = threading.Thread(target=again.run, args=(stop, c2))
    t.start()
    time.sleep(0.2)
    with log.open("a") as fh:
        fh.write("d-1\n")
    time.sleep(0.3)
    stop.set()
    t.join(5)
    assert c2.lines == ["d-1"]


def test_choose_says_which_source(tmp_path: Path, store: SqliteStore) -> None:
    log = tmp_path / "maillog"
    log.write_text("")
    f, text = choose("auto", str(log), ["postfix/smtp"], store)
    assert isinstance(f, FileFollower) and text.endswith(f"from file {log}")
    f, text = choose("off", str(log), [], store)
    assert f is None and "off" in text
    f, text = choose("file", str(tmp_path / "nope"), [], store)
    assert f is None and "does not exist" in text


# --- outbound record and brake through the pipeline --------------------------------------------

def _inspector(store: SqliteStore, **cfg: Any) -> Inspector:
    config = from_dict({"host": {"domains": ["example.com"]}, **cfg})
    services = Services(config=config, resolver=dns.from_config(
        DnsConfig(nameservers=["127.0.0.1"])), store=store, clock=lambda: T0)
    return Inspector(services, [forms.forms_check, feedback_brake.FeedbackBrake()])


def test_each_inspected_message_is_remembered_by_queue_id(store: SqliteStore) -> None:
    _inspector(store).handle(form_message(queue_id="QID0000001"))
    rec = store.outbound("QID0000001")
    assert rec is not None
    assert (rec.source, rec.origin, rec.env_domain, rec.from_domain) == (
        "uid:33", "local", "mail.example.com", "example.com")
    assert rec.dmarc == "unknown"  # no DMARC check ran in this pipeline: not a pass


def test_brake_holds_a_form_whose_mail_bounces_5_1_1(store: SqliteStore) -> None:
    policy = {"enforce": {"feedback.unknown_recipients": "hold"}}
    insp = _inspector(store, mode="enforce", policy=policy)
    fb = Feedback(store, clock=lambda: T0, logger=Logger())
    for i in range(4):
        store.record_outbound(outbound(f"BNC000000{i}"))
        fb(line(f"BNC000000{i}", f"n{i}@gmail.test", "5.1.1", "bounced",
                said("mx.gmail.test", "550 5.1.1 does not exist")))
    assert insp.handle(form_message(queue_id="NEXT000001")).decision.action == "accept"
    store.record_outbound(outbound("BNC0000009"))
    fb(line("BNC0000009", "n9@gmail.test", "5.1.1", "bounced",
            said("mx.gmail.test", "550 5.1.1 does not exist")))
    v = insp.handle(form_message(queue_id="NEXT000002"))
    assert (v.decision.action, v.decision.reason) == ("hold", "feedback.unknown_recipients")
    # another source is not braked, and monitor mode only says would=hold
    other = form_message(queue_id="NEXT000003", uid=1000)
    assert insp.handle(other).decision.action == "accept"
    mon = _inspector(store, mode="monitor", policy=policy).handle(
        form_message(queue_id="NEXT000004"))
    assert (mon.decision.action, mon.decision.would) == ("accept", "hold")


# --- shown: status and the self-check's "receivers said" ---------------------------------------

def test_status_and_selfcheck_show_what_receivers_said(store: SqliteStore) -> None:
    from postwarden.checks import receivers
    from postwarden.checks.report import Report, render_nagios, render_prometheus, render_text
    from postwarden.feedback import summary

    store.record_outbound(outbound("MMMMM00001", dmarc="pass"))
    store.record_outbound(outbound("MMMMM00002", source="sasl:alice"))
    fb = Feedback(store, clock=lambda: T0 + 1, logger=Logger())
    fb(line("MMMMM00001", "x@gmail.test", "5.7.26", "bounced",
            said("mx.gmail.test", GMAIL_DMARC + "\x1b[2J")))
    fb(line("MMMMM00002", "y@outlook.test", "2.0.0", "sent", "250 ok"))
    data = summary.collect(store, T0 + 2)
    src = {s["source"]: s for s in data["sources"]}
    assert src["uid:33"]["sent"] == 1
    assert src["uid:33"]["by_class"] == {"bounced:auth": 1}
    assert src["uid:33"]["last_reply"]["dsn"] == "5.7.26"
    assert "\x1b" not in src["uid:33"]["last_reply"]["reply"]
    assert (src["sasl:alice"]["delivered"], src["sasl:alice"]["bounced"]) == (1, 0)
    assert [m["queue_id"] for m in data["mismatches"]] == ["MMMMM00001"]
    text = "\n".join(summary.render(data))
    assert "MISMATCH MMMMM00001: predicted dmarc=pass; gmail.test answered 5.7.26" in text

    c = receivers.check(store, T0 + 2)
    assert c.status == "critical" and c.summary.startswith("MISMATCH: predicted dmarc=pass")
    report = Report(generated=T0 + 2, checks=[c])
    assert "== Receivers said ==" in render_text(report)
    assert "bounced_auth=1;;;0" in render_nagios(report)
    prom = render_prometheus(report)
    assert ('postwarden_feedback_replies{status="bounced",class="auth",'
            'receiver="gmail.test"} 1') in prom
    assert 'postwarden_feedback_replies{status="sent",class="",receiver="outlook.test"} 1' \
        in prom
    assert "postwarden_feedback_mismatches 1" in prom
    empty = receivers.check(SqliteStore(":memory:"), T0)
    assert empty.status == "info" and "no delivery results" in empty.summary
    assert receivers.check(None, T0).status == "unknown"


def test_journal_follower_resumes_after_its_cursor(tmp_path: Path, store: SqliteStore) -> None:
    """A stand-in journalctl (same arguments, same JSON lines) records how it was called."""
    import sys

    from postwarden.feedback.follow import JournalFollower

    argv_log = tmp_path / "argv"
    fake = tmp_path / "journalctl"
    entries = [
        {"__CURSOR": "s=1;i=1", "SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "77",
         "MESSAGE": line("JJJJJ00001", "a@gmail.test", "2.0.0", "sent", "250 ok")
         .split("]: ", 1)[1]},
        {"__CURSOR": "s=1;i=2", "SYSLOG_IDENTIFIER": "postfix/smtp", "_PID": "77",
         "MESSAGE": [ord(c) for c in "not valid \xff utf-8"]},  # journald's byte array
        "not json at all",
    ]
    import json as _json
    body = "\n".join(e if isinstance(e, str) else _json.dumps(e) for e in entries)
    fake.write_text(f"#!{sys.executable}\n"
                    "import sys, time\n"
                    f"open({str(argv_log)!r}, 'a').write(' '.join(sys.argv[1:]) + '\\n')\n"
                    f"sys.stdout.write({body!r} + '\\n'); sys.stdout.flush()\n"
                    "time.sleep(30)\n")
    fake.chmod(0o755)
    got: list[str] = []

    def handle(text: str) -> bool:
        got.append(text)
        return parse(text) is not None

    for _ in range(2):
        stop = threading.Event()
        j = JournalFollower(["postfix/smtp", "postfix/lmtp"], store, str(fake))
        t = threading.Thread(target=j.run, args=(stop, handle))
        t.start()
        deadline = time.monotonic() + 10
        while len(got) < 2 and time.monotonic() < deadline:
            time.sleep(0.02)
        stop.set()
        t.join(10)
        assert not t.is_alive()
        got.clear()
    calls = argv_log.read_text().splitlines()
    assert calls[0] == "-f -o json --no-pager -t postfix/smtp -t postfix/lmtp -n 0"
    assert calls[1].endswith("--after-cursor=s=1;i=1")  # the last delivery line's cursor


def test_undecodable_header_bytes_are_stored_as_valid_text(store: SqliteStore) -> None:
    msg = form_message(queue_id="QID0000002", from_="Web <\udcffbad@ex\udcfeample.com>")
    _inspector(store).handle(msg)
    rec = store.outbound("QID0000002")
    assert rec is not None and rec.from_domain == "ex\ufffdample.com"


def test_a_busy_sources_tally_is_reused_for_a_few_seconds(store: SqliteStore) -> None:
    now = [T0]
    config = from_dict({"host": {"domains": ["example.com"]}, "mode": "enforce",
                        "policy": {"enforce": {"feedback.unknown_recipients": "hold"}}})
    services = Services(config=config, resolver=dns.from_config(
        DnsConfig(nameservers=["127.0.0.1"])), store=store, clock=lambda: now[0])
    insp = Inspector(services, [forms.forms_check, feedback_brake.FeedbackBrake()], [])
    src = "uid:33"
    for i in range(feedback_brake.BIG_HISTORY):
        store.record_delivery(dl_sent(f"S{i:09d}", T0 - 10, src))
    assert insp.inspect(form_message(queue_id="BUSY000001")).decision.action == "accept"
    for i in range(3 * feedback_brake.BIG_HISTORY):
        store.record_delivery(dl_sent(f"B{i:09d}", T0 - 5, src, "bounced", "unknown_recipient"))
    now[0] += 1  # within CACHE_SECONDS: the tally read a second ago stands
    assert insp.inspect(form_message(queue_id="BUSY000002")).decision.action == "accept"
    now[0] += feedback_brake.CACHE_SECONDS
    assert insp.inspect(form_message(queue_id="BUSY000003")).decision.action == "hold"


def dl_sent(qid: str, when: float, source: str, status: str = "sent", cls: str = ""
            ) -> Any:
    from postwarden.store import DeliveryRecord

    return DeliveryRecord(qid, when, "gmail.test", "mx[127.0.0.1]:25", status,
                          "5.1.1" if cls else "2.0.0", cls, "", source, "example.com")
