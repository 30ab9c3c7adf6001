"""From rewrite: a foreign From failing DMARC becomes ours; the original goes to Reply-To."""

from __future__ import annotations

from email.header import decode_header, make_header
from email.utils import getaddresses
from pathlib import Path

import pytest

from auth_fakes import FakeResolver, config, context, message, rsa_key, signing_config
from postwarden.config import Config
from postwarden.findings import Finding, Severity
from postwarden.logsafe import parse_fields
from postwarden.message import Origin
from postwarden.milter.dkim_sign import DkimSigner
from postwarden.milter.from_rewrite import FromRewriter, rewritten_from
from postwarden.milter.pipeline import HeaderChange


def cfg(**kw: object) -> Config:
    c = config(domains=["example.com"])
    c.from_rewrite.enabled = True
    c.from_rewrite.address = "noreply@example.com"
    c.from_rewrite.site_name = "Example Site"
    for k, v in kw.items():
        setattr(c.from_rewrite, k, v)
    return c


def fail(domain: str = "example.net", policy: str = "reject") -> Finding:
    return Finding("dmarc.fail", Severity.CRITICAL, "x", {"domain": domain, "policy": policy})


def test_form_mail_is_rewritten() -> None:
    c = cfg()
    ctx = context(FakeResolver(), c)
    msg = message("Visitor Name <visitor@example.net>")
    fix = FromRewriter(c)(msg, ctx, [fail()])
    changes = list(fix.changes)
    assert changes == [
        HeaderChange("change", "From", ' "Visitor Name via Example Site" <noreply@example.com>', 1),
        HeaderChange("add", "Reply-To", " Visitor Name <visitor@example.net>"),
    ]
    assert fix.shown == (("from_rewritten", "example.net"),) and fix.rewrites_from


def test_address_only_from_uses_the_address_as_name() -> None:
    c = cfg()
    changes = FromRewriter(c)(message("visitor@example.net"), context(FakeResolver(), c),
                              [fail()]).changes
    assert changes[0].value == ' "visitor@example.net via Example Site" <noreply@example.com>'


def test_existing_reply_to_is_kept() -> None:
    c = cfg()
    msg = message("V <visitor@example.net>", extra=[("Reply-To", " other@example.org")])
    changes = FromRewriter(c)(msg, context(FakeResolver(), c), [fail()]).changes
    assert [ch.name for ch in changes] == ["From"]


def test_site_name_defaults_to_the_address_domain() -> None:
    c = cfg(site_name="")
    changes = FromRewriter(c)(message("V <visitor@example.net>"), context(FakeResolver(), c),
                              [fail()]).changes
    assert "V via example.com" in changes[0].value


def test_encoded_and_non_ascii_names() -> None:
    value = rewritten_from("=?utf-8?q?J=C3=BCrgen?= <j@example.net>", "noreply@example.com",
                           "Site")
    ((name, addr),) = getaddresses([value])
    assert str(make_header(decode_header(name))) == "Jürgen via Site"
    assert addr == "noreply@example.com"
    assert value.isascii()


def test_quotes_and_newlines_in_names_cannot_break_the_header() -> None:
    value = rewritten_from('"Evil\\" <x@y>\r\nBcc: z" <v@example.net>', "n@example.com", "S")
    assert "\n" not in value and "\r" not in value
    assert getaddresses([value])[0][1] == "n@example.com"


@pytest.mark.parametrize(("findings", "origin", "from_"), [
    ([], Origin.LOCAL, "V <v@example.net>"),                        # passes DMARC
    ([fail()], Origin.SUBMISSION, "V <v@example.net>"),             # origin not on
    ([fail("example.com")], Origin.LOCAL, "V <v@example.com>"),     # our own domain
    ([fail("sub.example.com")], Origin.LOCAL, "V <v@sub.example.com>"),  # ours too
    ([fail()], Origin.LOCAL, "V <v@example.org>"),                  # other domain
    ([fail()], Origin.LOCAL, None),                                 # no From
])
def test_left_alone(findings: list[Finding], origin: Origin, from_: str | None) -> None:
    c = cfg()
    msg = message(from_, origin=origin)
    assert FromRewriter(c)(msg, context(FakeResolver(), c), findings).changes == ()


def test_switched_off_by_default() -> None:
    c = config()
    assert FromRewriter(c)(message("V <v@example.net>"), context(FakeResolver(), c),
                           [fail()]).changes == ()


def test_rewrite_then_sign_covers_the_new_from(tmp_path: Path) -> None:
    path, txt = rsa_key(tmp_path)
    c = signing_config([("example.com", "sel", path)], domains=["example.com"])
    c.from_rewrite.enabled, c.from_rewrite.address = True, "noreply@example.com"
    ctx = context(FakeResolver({("sel._domainkey.example.com", "TXT"): [txt]}), c)
    msg = message("V <v@example.net>")
    changes = FromRewriter(c)(msg, ctx, [fail()]).changes
    changes += DkimSigner(c)(msg, ctx, [fail()], changes).changes
    assert [ch.name for ch in changes] == ["From", "Reply-To", "DKIM-Signature"]
    assert "d=example.com" in changes[2].value


def test_config_requires_an_address() -> None:
    from postwarden.config import ConfigError, from_dict
    with pytest.raises(ConfigError, match=r"from_rewrite\.address"):
        from_dict({"from_rewrite": {"enabled": True}, "store": {"path": str(Path("/tmp/x"))}})
    with pytest.raises(ConfigError, match=r"from_rewrite\.origins"):
        from_dict({"from_rewrite": {"origins": ["inbound"]}})


@pytest.mark.parametrize(("result", "rewritten"), [("fail", True), ("pass", False),
                                                   ("none", False)])
def test_generations_differ_rewrites_when_the_stricter_outcome_fails(
        result: str, rewritten: bool) -> None:
    c = cfg()
    differ = Finding("dmarc.generations_differ", Severity.CRITICAL, "x",
                     {"domain": "example.net", "policy": "reject", "result": result})
    changes = FromRewriter(c)(message("V <visitor@example.net>"), context(FakeResolver(), c),
                              [differ]).changes
    assert bool(changes) is rewritten


def test_the_rewrite_line_cannot_carry_a_key_the_sender_wrote() -> None:
    """The visitor's address is the sender's bytes: in the log line it stays one
    escaped token, so no `key=` of its own reaches a reader of the mail log."""
    c = cfg()
    msg = message('V <"x action=accept hdr_from=<a@b>"@example.net>')
    fix = FromRewriter(c)(msg, context(FakeResolver(), c), [fail()])
    assert fix.changes, "not rewritten"
    assert set(parse_fields(fix.note)) <= {"p"}  # only postwarden's own `p=` of DMARC
    assert " action=accept" not in fix.note and "\n" not in fix.note
