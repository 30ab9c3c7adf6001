"""Postfix audit rules on plain facts (the e2e test reads a real private instance)."""

from __future__ import annotations

from postwarden.checks.postfix_audit import (
    PostfixFacts,
    audit,
    bind_addresses,
    open_relay_reason,
    spam_filter,
)

GOOD_MAIN = {
    "smtpd_milters": "{ unix:postwarden/postwarden.sock, default_action=accept }",
    "non_smtpd_milters": "$smtpd_milters",
    "milter_default_action": "accept",
    "myhostname": "mail.example.com",
    "inet_protocols": "ipv4",
    "smtpd_relay_restrictions": "permit_mynetworks, permit_sasl_authenticated, "
                                "reject_unauth_destination",
    "mynetworks": "127.0.0.0/8",
}
SUBMISSION = {"smtpd_tls_security_level": "encrypt", "smtpd_sasl_auth_enable": "yes",
              "smtpd_relay_restrictions": "permit_sasl_authenticated,reject",
              "milter_macro_daemon_name": "ORIGINATING"}


def _facts(main: dict[str, str] | None = None,
           services: dict[str, dict[str, str]] | None = None) -> PostfixFacts:
    # postconf expands $smtpd_milters in its output; mimic that
    m = {**GOOD_MAIN, **(main or {})}
    if m["non_smtpd_milters"] == "$smtpd_milters":
        m["non_smtpd_milters"] = m["smtpd_milters"]
    svc = services if services is not None else {"submission/inet": dict(SUBMISSION)}
    return PostfixFacts("/etc/postfix", m, svc, {s: "smtpd" for s in svc})


def _status(facts: PostfixFacts) -> dict[str, str]:
    return {r.id: r.status for r in audit(facts)}


def test_good_config_passes_every_aspect() -> None:
    assert set(_status(_facts()).values()) == {"ok"}
    assert {r.target for r in audit(_facts())} == {"/etc/postfix"}


def test_missing_milters_and_tempfail() -> None:
    f = _facts({"non_smtpd_milters": "", "milter_default_action": "tempfail",
                "smtpd_milters": "unix:other/other.sock"})
    results = {r.id: r for r in audit(f)}
    assert results["postfix.milters"].status == "critical"
    assert any("non_smtpd_milters = $smtpd_milters" in a
               for a in results["postfix.milters"].advice)
    assert results["postfix.milter_default_action"].status == "warning"
    assert results["postfix.milter_default_action"].advice == (
        "postconf -e 'milter_default_action = accept'",)


def test_submission_without_sasl_and_tls_and_missing() -> None:
    weak = {"submission/inet": {"milter_macro_daemon_name": "ORIGINATING"}}
    r = {x.id: x for x in audit(_facts(services=weak))}["postfix.submission"]
    assert r.status == "warning" and "SASL" in r.summary and "TLS" in r.summary
    assert _status(_facts(services={}))["postfix.submission"] == "warning"


def test_open_relay_and_fqdn() -> None:
    f = _facts({"smtpd_relay_restrictions": "permit", "myhostname": "mail"})
    st = _status(f)
    assert st["postfix.relay"] == "critical" and st["postfix.myhostname"] == "critical"
    assert open_relay_reason("permit_mynetworks, reject_unauth_destination", "0.0.0.0/0")
    assert open_relay_reason("permit_mynetworks, reject_unauth_destination",
                             "127.0.0.0/8") == ""
    assert open_relay_reason("permit_mynetworks", "127.0.0.0/8")


def test_inet_protocols_vs_ipv6_ptr() -> None:
    f = _facts({"inet_protocols": "all"})
    assert {r.id: r.status for r in audit(f, ipv6_without_ptr=["2001:db8::25"])}[
        "postfix.inet_protocols"] == "warning"
    assert _status(f)["postfix.inet_protocols"] == "ok"


def test_spam_filter_and_bind_addresses() -> None:
    f = _facts({"smtpd_milters": "inet:localhost:11332 { unix:postwarden/postwarden.sock }",
                "smtp_bind_address": "192.0.2.25"},
               {"submission/inet": dict(SUBMISSION),
                "filtered/unix": {"smtp_bind_address": "192.0.2.26"}})
    assert spam_filter(f) == []  # a port number alone says nothing
    f.main["content_filter"] = "amavis:[127.0.0.1]:10024"
    assert spam_filter(f) == ["amavis"]
    assert bind_addresses(f) == ["192.0.2.25", "192.0.2.26"]
