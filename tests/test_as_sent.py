"""The verdict is about the message as it will leave: postwarden's own fixes first.

Through the real pipeline (default checks and fixers, policy, effects) with a fake
resolver: a contact form's foreign p=reject From is rewritten and signed, so DMARC
passes for the message as sent and enforce mode delivers it; with signing or the
rewrite switched off the same message is held and the advice names the switch.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest

from auth_fakes import FakeResolver, config, message, rsa_key
from postwarden.config import Config, DkimKey
from postwarden.findings import Severity
from postwarden.logsafe import parse_fields
from postwarden.message import Message, Origin
from postwarden.milter.effects import Applied, summary_line
from postwarden.milter.pipeline import Inspector, Services, default_checks, default_fixers

VISITOR = "Vera <visitor@foreign.example>"


def world(tmp_path: Path, *, sign: bool = True, rewrite: bool = True,
          mode: str = "enforce") -> Inspector:
    key, _txt = rsa_key(tmp_path)  # our own signature is never verified: no key record
    cfg: Config = config(domains=["example.com"])
    cfg.mode = mode
    cfg.dkim.sign = sign
    cfg.dkim.keys = [DkimKey("example.com", "sel", str(key))]
    cfg.from_rewrite.enabled = rewrite
    cfg.from_rewrite.address = "noreply@example.com"
    resolver = FakeResolver({
        # the envelope sender's domain: SPF passes, but it does not align with either From
        ("host.example.org", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"],
        ("_dmarc.foreign.example", "TXT"): ["v=DMARC1; p=reject"],
        ("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"],
    })
    services = Services(config=cfg, resolver=resolver)
    return Inspector(services, default_checks(services), default_fixers(services))


def form(from_: str = VISITOR, origin: Origin = Origin.LOCAL, **kw: str) -> Message:
    return message(from_, mail_from="www-data@host.example.org", origin=origin,
                   extra=[("X-PHP-Originating-Script", " 33:contact.php")], **kw)


def ids(a: Applied) -> set[str]:
    return {f.id for f in a.findings}


def test_rewritten_and_signed_form_mail_passes_dmarc_and_is_delivered(
        tmp_path: Path, logbuf: io.StringIO) -> None:
    applied = world(tmp_path).handle(form())
    assert applied.decision.action == "accept" and applied.decision.delivers
    assert [c.name for c in applied.changes] == ["From", "Reply-To", "DKIM-Signature"]
    assert not ids(applied) & {"dmarc.fail", "dkim.missing"}
    (spf,) = [f for f in applied.findings if f.id == "spf.unaligned"]
    assert spf.severity == Severity.INFO and "DKIM does" in spf.text  # our signature does
    summary = parse_fields(summary_line(form(), applied.verdict, "enforce"))
    assert summary["dkim"] == "none->pass(signed)"
    assert summary["dmarc"] == "fail->pass(rewritten)"
    assert summary["hdr_from"] == "noreply@example.com"  # the From as it leaves
    assert summary["signed"] == "example.com/sel" and summary["action"] == "accept"
    text = logbuf.getvalue()
    assert "warning: dmarc.fail" not in text and "warning: dkim.missing" not in text
    assert "from rewritten: <visitor@foreign.example> -> <noreply@example.com>" in text


def test_signing_off_holds_it_and_names_the_switch(tmp_path: Path,
                                                   logbuf: io.StringIO) -> None:
    applied = world(tmp_path, sign=False).handle(form())
    assert applied.decision.action == "hold"
    (fail,) = [f for f in applied.findings if f.id == "dmarc.fail"]
    assert fail.data["domain"] == "example.com"  # judged as rewritten
    assert "([dkim] sign = false)" in fail.advice[0]
    (line,) = [ln for ln in logbuf.getvalue().splitlines() if "warning: dmarc.fail" in ln]
    assert "[dkim] sign = false" in line
    assert [c.name for c in applied.changes] == ["From", "Reply-To"]  # held: rewritten


def test_rewrite_off_holds_it_and_names_the_switch(tmp_path: Path,
                                                   logbuf: io.StringIO) -> None:
    applied = world(tmp_path, rewrite=False).handle(form())
    assert applied.decision.action == "hold"
    (fail,) = [f for f in applied.findings if f.id == "dmarc.fail"]
    assert fail.data["domain"] == "foreign.example"
    assert "[from_rewrite] enabled = false" in fail.advice[0]
    assert applied.changes == ()  # nothing of ours to sign for foreign.example


def test_our_own_signed_mail_reports_no_dkim_missing(tmp_path: Path,
                                                     logbuf: io.StringIO) -> None:
    msg = message("Alice <alice@example.com>", mail_from="alice@example.com",
                  origin=Origin.SUBMISSION)
    applied = world(tmp_path).handle(msg)
    assert [c.name for c in applied.changes] == ["DKIM-Signature"]
    assert "dkim.missing" not in ids(applied)
    summary = parse_fields(summary_line(msg, applied.verdict, "enforce"))
    assert summary["dkim"] == "none->pass(signed)" and summary["signed"] == "example.com/sel"
    assert "dkim.missing" not in logbuf.getvalue()


def test_without_keys_the_switch_is_not_blamed(tmp_path: Path, logbuf: io.StringIO) -> None:
    insp = world(tmp_path, sign=False)
    insp.services.config.dkim.keys = []
    msg = message("Alice <alice@example.com>", mail_from="alice@example.com",
                  origin=Origin.SUBMISSION)
    (missing,) = [f for f in insp.handle(msg).findings if f.id == "dkim.missing"]
    assert "sign = false" not in missing.text


@pytest.mark.parametrize("action", ["reject", "tempfail"])
def test_a_refused_message_gets_no_header_changes(tmp_path: Path, logbuf: io.StringIO,
                                                  action: str) -> None:
    insp = world(tmp_path)
    insp.policy.enforce["form.detected"] = action
    applied = insp.handle(form("Web <web@example.com>", origin=Origin.SUBMISSION))
    assert applied.decision.action == action and not applied.decision.delivers
    assert applied.verdict.changes  # planned ...
    assert applied.changes == ()  # ... but a refused message is not changed


def test_evidence_is_computed_once_per_message(tmp_path: Path, logbuf: io.StringIO) -> None:
    """Rewritten, signed and judged again as it leaves: still one DMARC discovery per
    domain, one SPF evaluation, and no second verification pass."""
    insp = world(tmp_path)
    resolver = insp.services.resolver
    assert isinstance(resolver, FakeResolver)
    insp.handle(form())
    asked = [name for name, _rt in resolver.asked]
    assert asked.count("_dmarc.foreign.example") == 1
    assert asked.count("_dmarc.example.com") == 1  # the rewritten From's, judged as sent
    assert asked.count("host.example.org") == 1
    assert insp.services.spf_results.evaluations == 1


def test_the_order_of_the_checks_does_not_change_the_verdict(tmp_path: Path,
                                                             logbuf: io.StringIO) -> None:
    """Each check asks the evidence for what it needs: no order between them to keep."""
    forward = world(tmp_path, sign=False)
    backward = world(tmp_path, sign=False)
    backward.checks.reverse()
    a, b = forward.inspect(form()), backward.inspect(form())
    assert sorted(f.id for f in a.findings) == sorted(f.id for f in b.findings)
    assert a.decision == b.decision and a.summary == b.summary
