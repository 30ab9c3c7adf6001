"""Form/script recognition (source keys) and the stateless suspicion signals."""

from __future__ import annotations

import base64
import os
import pwd

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from form_messages import form_message
from postwarden import dns
from postwarden.config import Config, DnsConfig, FormsConfig, from_dict
from postwarden.findings import Finding
from postwarden.message import Message, Origin
from postwarden.milter import forms
from postwarden.milter.pipeline import CheckContext, Services, describe


def ctx_for(cfg: Config) -> CheckContext:
    resolver = dns.from_config(DnsConfig(nameservers=["127.0.0.1"]))  # never queried here
    return CheckContext(Services(config=cfg, resolver=resolver), dns.Budget(1.0))


def cfg_with(**sections: dict[str, object]) -> Config:
    base: dict[str, object] = {"host": {"domains": ["example.com"],
                                        "hostname": "mail.example.com"}}
    base.update(sections)
    return from_dict(base)


def run_forms(msg: Message, cfg: Config | None = None) -> tuple[list[Finding], CheckContext]:
    ctx = ctx_for(cfg or cfg_with())
    found = forms.forms_check(msg, ctx)
    found += forms.suspicion_check(msg, ctx)
    return found, ctx


# --- source keys ----------------------------------------------------------------------

def test_php_header_is_a_claim_next_to_the_postfix_uid() -> None:
    src = forms.identify(form_message(script="33:contact.php"), FormsConfig())
    assert (src.key, src.kind, src.form) == ("uid:33", "uid", True)
    assert src.claimed == "php:33:contact.php"


def test_php_header_never_replaces_the_uid() -> None:
    # Any local user can write the header: a uid and a script name of their choice.
    keys = {forms.identify(form_message(script=f"{n}:/var/www/f{n}.php", uid=1000),
                           FormsConfig()).key for n in range(20)}
    assert keys == {"uid:1000"}


def test_php_script_name_cannot_break_log_lines() -> None:
    src = forms.identify(form_message(script="1000:/var/www/my site/form.php\t"), FormsConfig())
    assert src.claimed == "php:1000:/var/www/my_site/form.php"


def test_only_postfix_own_received_header_names_the_uid() -> None:
    # A forged Received below Postfix's, or one for another queue ID, names nobody.
    forged = ("Received", " by mail.example.com (Postfix, from userid 0)\r\n\tid 4F9D42A0B1;"
              " Tue,  1 Dec 2026 10:00:00 +0000")
    src = forms.identify(form_message(uid=1000, extra=[forged]), FormsConfig())
    assert src.key == "uid:1000"
    alone = form_message(uid=None, queue_id="7A1B2C3D4E", extra=[forged])
    assert forms.identify(alone, FormsConfig()).key == "local:unknown"


@pytest.mark.parametrize(("user", "form_users", "form"),
                         [("alice", [], False), ("webapp", ["webapp"], True),
                          ("WebApp", ["webapp"], True), ("webapp", ["WEBAPP"], True)])
def test_sasl_users(user: str, form_users: list[str], form: bool) -> None:
    msg = form_message(script=None, origin=Origin.SUBMISSION, auth_user=user,
                       sender=f"{user}@example.com", client_port=40000)
    src = forms.identify(msg, FormsConfig(form_sasl_users=form_users))
    assert (src.key, src.kind, src.form) == (f"sasl:{user.lower()}", "sasl", form)


def test_sasl_form_account_rotating_header_keeps_its_key() -> None:
    keys = {forms.identify(form_message(origin=Origin.SUBMISSION, auth_user="webapp",
                                        script=f"{n}:x{n}.php", sender=f"f+{n}@example.com",
                                        client_port=40000), FormsConfig()).key
            for n in range(10)}
    assert keys == {"sasl:webapp"}


def test_local_uid_from_postfix_received() -> None:
    uid = os.getuid()
    name = pwd.getpwuid(uid).pw_name
    msg = form_message(script=None, sender="someone@example.com", uid=uid)
    plain = forms.identify(msg, FormsConfig(web_users=[]))
    assert (plain.key, plain.kind, plain.form) == (f"uid:{uid}", "uid", False)
    web = forms.identify(msg, FormsConfig(web_users=[name]))
    assert (web.key, web.form) == (f"uid:{uid}", True)


def test_local_web_user_sender() -> None:
    src = forms.identify(form_message(script=None, sender="www-data@mail.example.com",
                                      uid=1000), FormsConfig())
    assert (src.key, src.kind, src.form) == ("uid:1000", "uid", True)
    other = forms.identify(form_message(script=None, sender="Root@Example.com", uid=1000),
                           FormsConfig())
    assert (other.key, other.form) == ("uid:1000", False)
    # the envelope sender is the sender's choice: it never names the source
    nouid = forms.identify(form_message(script=None, sender="x@example.com", uid=None),
                           FormsConfig())
    assert (nouid.key, nouid.form) == ("local:unknown", False)


@pytest.mark.parametrize("extra", [
    [("X-Mailer", " PHPMailer 6.9.1 (https://github.com/PHPMailer/PHPMailer)")],
    [("Content-Type", ' multipart/alternative;\r\n\tboundary="b1_Xk29dfkj3"')],
])
def test_phpmailer_over_smtp(extra: list[tuple[str, str]]) -> None:
    msg = form_message(script=None, origin=Origin.INTERNAL, sender="Shop@Example.com",
                       client_port=41000, extra=extra)
    src = forms.identify(msg, FormsConfig())
    assert (src.key, src.kind, src.form) == ("ip:127.0.0.1", "ip", True)
    assert src.claimed == "phpmailer:shop@example.com"


def test_phpmailer_rotating_sender_keeps_its_key() -> None:
    keys = {forms.identify(form_message(script=None, origin=Origin.INTERNAL,
                                        sender=f"form+{n}@example.com", client_port=41000,
                                        client_addr="192.0.2.10",
                                        extra=[("X-Mailer", " PHPMailer 6.9.1")]),
                           FormsConfig()).key for n in range(30)}
    assert keys == {"ip:192.0.2.10"}


def test_wordpress_sender() -> None:
    msg = form_message(script=None, origin=Origin.INTERNAL, sender="wordpress@example.com",
                       client_port=41000)
    src = forms.identify(msg, FormsConfig())
    assert (src.key, src.form, src.claimed) == ("ip:127.0.0.1", True,
                                                "wordpress:wordpress@example.com")


def test_plain_internal_smtp_is_keyed_by_ip() -> None:
    msg = form_message(script=None, origin=Origin.INTERNAL, sender="app@example.com",
                       client_addr="192.0.2.10", client_port=41000)
    src = forms.identify(msg, FormsConfig())
    assert (src.key, src.form) == ("ip:192.0.2.10", False)


# --- the check --------------------------------------------------------------------------

def test_form_detected_and_source_in_summary() -> None:
    found, ctx = run_forms(form_message())
    assert [f.id for f in found] == ["form.detected"]
    assert found[0].data["source"] == "uid:33"
    assert describe(ctx.known)["source"] == "uid:33"
    assert describe(ctx.known)["claimed"] == "php:33:contact.php"
    assert ctx.known.source().key == "uid:33"


def test_non_form_mail_gets_source_but_no_findings() -> None:
    msg = form_message(script=None, origin=Origin.SUBMISSION, auth_user="alice",
                       sender="alice@example.com", rcpts=[f"r{i}@example.org" for i in range(9)])
    found, ctx = run_forms(msg)
    assert found == []
    assert describe(ctx.known)["source"] == "sasl:alice"


def test_disabled_gives_no_findings_but_keeps_source() -> None:
    found, ctx = run_forms(form_message(), cfg_with(forms={"enabled": False}))
    assert found == []
    assert describe(ctx.known)["source"] == "uid:33"


# --- signals ----------------------------------------------------------------------------

def ids_of(msg: Message, cfg: Config | None = None) -> set[str]:
    return {f.id for f in run_forms(msg, cfg)[0]}


def test_many_recipients_boundary() -> None:
    assert "form.many_rcpts" not in ids_of(form_message(rcpts=[f"a{i}@example.com"
                                                               for i in range(3)]))
    assert "form.many_rcpts" in ids_of(form_message(rcpts=[f"a{i}@example.com"
                                                           for i in range(4)]))


def test_many_domains_boundary() -> None:
    two = ["a@example.com", "b@example.org"]
    assert "form.many_domains" not in ids_of(form_message(rcpts=two))
    assert "form.many_domains" in ids_of(form_message(rcpts=[*two, "c@example.net"]))


@pytest.mark.parametrize(("from_", "hit"), [
    ("Visitor <visitor@example.net>", True),
    ("Form <noreply@example.com>", False),
    ("Form <noreply@shop.example.com>", False),  # a subdomain of ours
    ("Form <noreply@mail.example.com>", False),
])
def test_foreign_from(from_: str, hit: bool) -> None:
    assert ("form.foreign_from" in ids_of(form_message(from_=from_))) is hit


def test_the_envelope_sender_does_not_make_a_domain_ours() -> None:
    """`-f visitor@gmail.com` with `From: visitor@gmail.com`: foreign for the form
    signals and for DMARC advice and the From rewrite alike (one rule)."""
    from postwarden.milter.auth_results import foreign, is_ours

    msg = form_message(from_="Visitor <visitor@gmail.com>", sender="visitor@gmail.com")
    assert "form.foreign_from" in ids_of(msg)
    cfg = cfg_with()
    assert foreign(cfg, "gmail.com") and not is_ours(cfg, "gmail.com")
    assert not foreign(cfg, "shop.example.com")


def test_reply_to_differs() -> None:
    same = form_message(extra=[("Reply-To", " NoReply@example.com")])
    assert "form.reply_to_differs" not in ids_of(same)
    other = form_message(extra=[("Reply-To", " visitor@example.net")])
    assert "form.reply_to_differs" in ids_of(other)


def test_url_count_and_shorteners() -> None:
    three = "see http://example.com/a https://example.org/b www.example.net/c\n"
    assert not ids_of(form_message(three)) & {"form.many_urls", "form.url_shortener"}
    four = three + "and https://bit.ly/xyz\n"
    assert {"form.many_urls", "form.url_shortener"} <= ids_of(form_message(four))


def test_urls_found_in_base64_body() -> None:
    text = "".join(f"https://example.com/{i}\n" for i in range(5)).encode()
    msg = form_message(base64.encodebytes(text).decode(),
                       extra=[("Content-Type", " text/plain; charset=utf-8"),
                              ("Content-Transfer-Encoding", " base64")])
    assert "form.many_urls" in ids_of(msg)


def test_urls_beyond_scan_limit_are_not_counted() -> None:
    body = "x" * 200 + "\n" + "".join(f"https://example.com/{i}\n" for i in range(5))
    assert "form.many_urls" in ids_of(form_message(body))
    assert "form.many_urls" not in ids_of(form_message(body),
                                          cfg_with(forms={"body_scan_bytes": 100}))


# --- suspicion score ----------------------------------------------------------------------

SPAMMY = dict(from_="Visitor <visitor@example.net>",
              rcpts=[f"v{i}@example.org" for i in range(3)] + ["x@example.net", "y@example.com"],
              body="buy now https://bit.ly/a https://bit.ly/b https://bit.ly/c https://bit.ly/d\n")


def test_suspicious_when_weights_reach_threshold() -> None:
    found, _ = run_forms(form_message(**SPAMMY))  # type: ignore[arg-type]
    sus = [f for f in found if f.id == "form.suspicious"]
    assert len(sus) == 1
    w = FormsConfig().weights
    expected = sum(w[s] for s in ("many_rcpts", "many_domains", "foreign_from", "many_urls",
                                  "url_shortener"))
    assert sus[0].data["score"] == expected
    assert sus[0].data["source"] == "uid:33"


def test_below_threshold_is_not_suspicious() -> None:
    found, _ = run_forms(form_message(from_="Visitor <visitor@example.net>",
                                      extra=[("Reply-To", " other@example.net")]))
    assert {f.id for f in found} == {"form.detected", "form.foreign_from",
                                     "form.reply_to_differs"}


def test_weights_are_configurable_and_zero_disables() -> None:
    msg = form_message(from_="Visitor <visitor@example.net>")
    assert "form.suspicious" in ids_of(msg, cfg_with(forms={"weights": {"foreign_from": 8}}))
    off = cfg_with(forms={"weights": {"many_rcpts": 0, "many_domains": 0, "foreign_from": 0,
                                      "many_urls": 0, "url_shortener": 0}})
    assert "form.suspicious" not in ids_of(form_message(**SPAMMY), off)  # type: ignore[arg-type]


# --- robustness ---------------------------------------------------------------------------

_names = st.sampled_from(["From", "Reply-To", "X-PHP-Originating-Script", "X-Mailer",
                          "Content-Type", "Content-Transfer-Encoding", "Received", "To"])
_values = st.text(max_size=200).map(lambda t: t.encode("utf-8", "surrogatepass")
                                    .decode("utf-8", "surrogateescape"))


@settings(max_examples=300, deadline=None)
@given(headers=st.lists(st.tuples(_names, _values), max_size=8), body=st.binary(max_size=600),
       sender=st.text(max_size=40), rcpts=st.lists(st.text(max_size=30), max_size=6),
       origin=st.sampled_from(list(Origin)), auth=st.text(max_size=20))
def test_any_message_gets_a_clean_source_key(headers: list[tuple[str, str]], body: bytes,
                                             sender: str, rcpts: list[str], origin: Origin,
                                             auth: str) -> None:
    msg = Message(origin=origin, mail_from=sender, rcpts=rcpts, auth_user=auth,
                  headers=headers, body=body, client_addr="127.0.0.1")
    found, ctx = run_forms(msg)
    key = describe(ctx.known)["source"]
    assert key and all(c.isprintable() and not c.isspace() for c in key)
    assert all(f.id.startswith("form.") for f in found)
