"""No sender- or DNS-controlled value can split a log line, colour a terminal or plant a
key=value pair: the escaping rule itself, and a property test through the real
Inspector (every per-message check, DNS answers from a fake resolver) and the real
summary/warning logging, with hostile headers, envelope, macros and DNS answers."""

from __future__ import annotations

import io
import os
from collections import OrderedDict
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from auth_fakes import FakeResolver
from postwarden.config import from_dict
from postwarden.findings import Severity
from postwarden.log import log
from postwarden.logsafe import escape, field, line_safe, parse_fields, unescape
from postwarden.message import Message, Origin
from postwarden.milter import app
from postwarden.milter.pipeline import Inspector, Services, default_checks

# What an attacker reaches for: every line and paragraph separator Python's
# str.splitlines() honours, NUL, ESC, DEL, quotes, angles, `=`, backslashes, invalid
# UTF-8 as pymilter hands it over (lone surrogates), and whole forged fragments.
NASTY = ["\n", "\r", "\x0b", "\x0c", "\x1c", "\x1d", "\x1e", "\x85", "\u2028", "\u2029",
         "\x00", "\x1b", "\x7f", "\x9b", '"', "<", ">", "=", " ", "\\", "\t", "\udcff",
         "é", "\U0001f600", ";", ":", "@", "."]
FORGED = ["action=accept", "origin=local", " 4F9D42A0B1: origin=local action=accept",
          "\n4F9D42A0B1: hold: x; delete with 'postsuper -d ALL'", '"x>action=accept"',
          "\x1b[2J", "from=<root@localhost>"]
hostile = st.lists(st.one_of(st.sampled_from(NASTY), st.sampled_from(FORGED),
                             st.text(alphabet="abcxyz019-", min_size=1, max_size=6)),
                   max_size=8).map("".join)

CASES = {"n": 0}


@pytest.fixture(autouse=True)
def _restore_log() -> Iterator[None]:
    yield
    log.setup("stderr", stream=io.StringIO(), repeat_interval=600)


def test_escape_rule_examples() -> None:
    assert escape("mail.example.com") == "mail.example.com"
    assert escape("a b") == '"a\\x20b"'
    assert escape("x\x1b[2J") == "x\\x1b[2J"
    assert escape("x\u2028y\x85") == "x\\u2028y\\x85"
    assert escape('"x>action=accept"') == '"\\"x>action=accept\\""'
    assert field("from", "a@b.example", angle=True) == "from=<a@b.example>"
    assert field("from", "SRS0=ab=cd@b.example", angle=True) == "from=<SRS0=ab=cd@b.example>"
    assert field("from", '"x>action=accept"@e.example', angle=True) \
        == 'from="<\\"x>action=accept\\"@e.example>"'
    assert line_safe("a\nb\x00c\u2029") == "a\\x0ab\\x00c\\u2029"


@given(hostile)
@settings(max_examples=300)
def test_escape_is_one_printable_token_and_round_trips(value: str) -> None:
    for token in (escape(value), field("k", value).removeprefix("k="),
                  field("k", value, angle=True).removeprefix("k=")):
        assert token.isascii() and token.isprintable() and " " not in token
        assert len(token.splitlines()) <= 1
    line = f"a=1 {field('k', value)} {field('f', value, angle=True)} z=2"
    assert parse_fields(line, frozenset({"f"})) == {"a": "1", "k": value, "f": value, "z": "2"}
    assert unescape(escape(value)) == value


@given(local=hostile, domain=hostile, selector=hostile, display=hostile, qid=hostile,
       spf=hostile, dmarc=hostile, dkim_key=hostile, subject=hostile)
@settings(max_examples=400, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
def test_no_hostile_value_forges_a_line(local: str, domain: str, selector: str,
                                        display: str, qid: str, spf: str, dmarc: str,
                                        dkim_key: str, subject: str) -> None:
    CASES["n"] += 1
    domain = domain or "d"
    qid = qid or "Q"
    resolver = FakeResolver()
    resolver.add(domain, "TXT", f"v=spf1 {spf} -all")
    resolver.add(f"_dmarc.{domain}", "TXT", f"v=DMARC1; p={dmarc}; rua=mailto:{dmarc}")
    resolver.add(f"{selector}._domainkey.{domain}", "TXT", f"v=DKIM1; p={dkim_key}")
    cfg = from_dict({"mode": "monitor", "host": {"domains": ["example.com"],
                                                 "ips": ["192.0.2.25"]}})
    headers = [("From", f" {display} <{local}@{domain}>"), ("Subject", f" {subject}"),
               ("DKIM-Signature", f" v=1; a=rsa-sha256; d={domain}; s={selector}; "
                                  f"h=from; bh={dkim_key}; b={dkim_key}"),
               ("X-PHP-Originating-Script", f" 33:{subject}")]
    # The adapter hands envelope and macro values over as valid Unicode (app._valid);
    # header values keep pymilter's surrogates for invalid UTF-8.
    qid = app._valid(qid)
    msg = Message(queue_id=qid, origin=Origin.SUBMISSION, client_name="c.example",
                  client_addr="192.0.2.25", client_port=4000, auth_user=app._valid(local),
                  mail_from=app._valid(f"{local}@{domain}"),
                  rcpts=[app._valid(f"{subject}@{domain}")], headers=headers,
                  body=f"{subject}\r\n".encode("utf-8", "surrogateescape"))
    inspector = Inspector(Services(cfg, resolver), default_checks(Services(cfg, resolver)))
    buf = io.StringIO()
    log.setup("stderr", stream=buf, repeat_interval=0)
    log._seen = OrderedDict()
    verdict = inspector.inspect(msg)
    app._log_verdict(msg, verdict, cfg.mode)
    log.info(app.inbound_line(msg), msg.queue_id)

    lines = buf.getvalue().splitlines()
    warnings = sum(f.severity >= Severity.WARNING for f in verdict.findings)
    errors = sum(f.id == "internal.error" for f in verdict.findings)
    prefix = f"postwarden[{os.getpid()}]: {escape(qid)}: "
    assert all(ln.startswith(prefix) for ln in lines), lines
    assert all(ln.isascii() and ln.isprintable() for ln in lines)
    bodies = [ln[len(prefix):] for ln in lines]
    summaries = [b for b in bodies if b.startswith("origin=submission ")]
    inbound = [b for b in bodies if b.startswith("origin=inbound ")]
    assert len(summaries) == 1 and len(inbound) == 1
    assert sum(b.startswith("warning: ") for b in bodies) == warnings
    assert sum(b.startswith("error: ") for b in bodies) == errors
    assert len(lines) == 2 + warnings + errors

    want = {"origin": "submission", "from": msg.mail_from[:254],
            "hdr_from": msg.header_from[:254], "rcpts": "1",
            **{k: v[:300] for k, v in verdict.summary.items()},
            "findings": ",".join(f.id for f in verdict.findings) or "none",
            "action": verdict.decision.action, "would": verdict.decision.would}
    got = parse_fields(summaries[0])
    assert {k: got.get(k) for k in want} == want
    assert set(got) == set(want)
    assert parse_fields(inbound[0]) == {"origin": "inbound", "from": msg.mail_from[:254]}


def test_report_case_count() -> None:
    """Runs after the property test in file order: says how many cases it generated."""
    print(f"\nlog-line property test: {CASES['n']} generated cases")
    assert CASES["n"] >= 400


@given(sender=hostile, reason=hostile, qid=hostile, source=hostile)
@example(sender="", reason="", qid="", source="<from=<root@localhost>")  # looks like from=
@settings(max_examples=100, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_status_text_never_prints_a_forged_line(tmp_path_factory: pytest.TempPathFactory,
                                                sender: str, reason: str, qid: str,
                                                source: str) -> None:
    from postwarden.status import collect, render
    from postwarden.store import HoldRecord
    from postwarden.store.sqlite_store import SqliteStore

    # what reaches the store has passed the adapter: valid Unicode
    sender, reason, qid, source = (app._valid(v) for v in (sender, reason, qid, source))
    store = SqliteStore(tmp_path_factory.mktemp("st") / "s.db")
    try:
        store.record_hold(HoldRecord(qid or "Q", 1000.0, reason, source, sender))
        store.record_event(1000.0, "local/hold", source, "ratelimit.exceeded")
        text = render(collect(store, from_dict({}), 1001.0, {qid or "Q"}))
    finally:
        store.close()
    lines = text.splitlines()
    assert all(ln.isascii() and ln.isprintable() for ln in lines)
    # one hold: one line about it and one with its commands, nothing else mentions postsuper
    assert sum("postsuper -d" in ln for ln in lines) == 1
    (held,) = [ln for ln in lines if " reason=" in ln]
    assert parse_fields(held.split("on hold", 1)[1].strip()) == {
        "reason": reason, "source": source or "-", "from": sender[:254]}


@given(summary=hostile, target=hostile, advice=hostile)
@settings(max_examples=100, deadline=None)
def test_selfcheck_text_and_nagios_stay_one_line_per_item(summary: str, target: str,
                                                          advice: str) -> None:
    from postwarden.checks.report import CheckResult, Report, render_nagios, render_text

    report = Report(0.0, [CheckResult("spf.record", target, "warning", summary, (advice,))])
    text = render_text(report)
    assert all(ln.isascii() and ln.isprintable() for ln in text.splitlines())
    assert len(text.splitlines()) == 5  # headline, blank, section, the check, its advice
    nagios = render_nagios(report)
    assert len(nagios.splitlines()) == 1 and nagios.count("|") == 1
