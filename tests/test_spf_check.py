"""SPF as receivers see it: our configured IPs, every result, alignment, the cache."""

from __future__ import annotations

import pytest

from auth_fakes import FakeResolver, config, context, message
from postwarden.findings import Severity
from postwarden.milter.auth_results import DkimSignature
from postwarden.milter.pipeline import describe
from postwarden.milter.spf_check import SpfCheck

IP = "192.0.2.25"


def zone(**spf: str) -> FakeResolver:
    """`spf_<domain label>` -> that domain's TXT record (domain = label.example.com)."""
    res = FakeResolver()
    for label, text in spf.items():
        res.add(f"{label}.example.com", "TXT", text)
    return res


def run(res: FakeResolver, mail_from: str, from_: str = "Alice <alice@example.com>",
        check: SpfCheck | None = None, **host: object):  # type: ignore[no-untyped-def]
    ctx = context(res, config(**host))
    out = (check or SpfCheck())(message(from_, mail_from=mail_from), ctx)
    return out, ctx


@pytest.mark.parametrize(("record", "result", "severity"), [
    ("v=spf1 ip4:192.0.2.0/24 -all", "pass", None),
    ("v=spf1 ip4:198.51.100.1 -all", "fail", Severity.ERROR),
    ("v=spf1 ip4:198.51.100.1 ~all", "softfail", Severity.WARNING),
    ("v=spf1 ?all", "neutral", Severity.WARNING),
    ("v=spf1 ip4:192.0.2.25 moo -all", "permerror", Severity.ERROR),
])
def test_results(record: str, result: str, severity: Severity | None) -> None:
    res = zone(s=record)
    out, ctx = run(res, "bounce@s.example.com", "Alice <alice@s.example.com>")
    assert ctx.known.spf().result == result
    assert describe(ctx.known)["spf"] == result
    if severity is None:
        assert out == []
    else:
        assert [f.id for f in out] == [f"spf.{result}"]
        assert out[0].severity is severity
        assert "192.0.2.25" in out[0].text


def test_fail_text_says_what_to_publish() -> None:
    out, _ = run(zone(s="v=spf1 ip4:198.51.100.1 -all"), "x@s.example.com",
                 "A <a@s.example.com>")
    assert "add ip4:192.0.2.25 to the SPF record of s.example.com" in out[0].text


def test_none() -> None:
    out, _ = run(FakeResolver(), "bounce@example.com")
    assert [f.id for f in out] == ["spf.none"]
    assert 'publish "v=spf1 ip4:192.0.2.25 -all" at example.com' in out[0].text


def test_too_many_lookups_is_permerror() -> None:
    res = FakeResolver()
    includes = " ".join(f"include:i{n}.example.com" for n in range(11))
    res.add("example.com", "TXT", f"v=spf1 {includes} -all")
    for n in range(11):
        res.add(f"i{n}.example.com", "TXT", "v=spf1 ip4:198.51.100.7 ~all")
    out, ctx = run(res, "bounce@example.com")
    assert ctx.known.spf().result == "permerror"
    assert "Too many DNS lookups" in ctx.known.spf().explanation
    assert out[0].id == "spf.permerror"


def test_mx_a_include_and_redirect_go_through_our_resolver() -> None:
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 redirect=_spf.example.com")
    res.add("_spf.example.com", "TXT",
            "v=spf1 mx:example.com a:out.example.com include:x.example.net -all")
    res.add("example.com", "MX", "10 mx.example.com")
    res.add("mx.example.com", "A", "198.51.100.1")
    res.add("out.example.com", "A", "198.51.100.2")
    res.add("x.example.net", "TXT", "v=spf1 ip4:192.0.2.25 -all")
    out, ctx = run(res, "bounce@example.com")
    assert ctx.known.spf().result == "pass" and out == []
    assert ("mx.example.com", "A") in res.asked


def test_ipv6_sending_address() -> None:
    res = zone(s="v=spf1 ip6:2001:db8::/32 -all")
    _, ctx = run(res, "b@s.example.com", "A <a@s.example.com>", ips=["2001:db8::25"])
    assert ctx.known.spf().result == "pass"


def test_worst_result_over_all_sending_ips() -> None:
    res = zone(s="v=spf1 ip4:192.0.2.25 -all")
    out, ctx = run(res, "b@s.example.com", "A <a@s.example.com>",
                   ips=["192.0.2.25", "2001:db8::25"])
    assert ctx.known.spf().result == "fail"
    assert dict(ctx.known.spf().per_ip) == {"192.0.2.25": "pass", "2001:db8::25": "fail"}
    assert "2001:db8::25" in out[0].text and "ip6:2001:db8::25" in out[0].text


def test_the_client_address_is_never_used() -> None:
    """Local mail comes from 127.0.0.1; SPF is evaluated for [host] ips only."""
    res = zone(s="v=spf1 ip4:127.0.0.1 -all")
    _, ctx = run(res, "b@s.example.com", "A <a@s.example.com>")
    assert ctx.known.spf().result == "fail"


def test_null_sender_uses_the_helo_name() -> None:
    res = FakeResolver({("mail.example.com", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"]})
    out, ctx = run(res, "", "Alice <alice@example.com>")
    o = ctx.known.spf()
    assert (o.identity, o.domain, o.result) == ("helo", "mail.example.com", "pass")
    assert out == []  # mail.example.com aligns (relaxed) with example.com


def test_no_sending_ip_configured_is_unknown_without_finding() -> None:
    out, ctx = run(FakeResolver(), "b@example.com", ips=[])
    assert out == [] and describe(ctx.known)["spf"] == "unknown" and ctx.known.spf() is None


def test_temperror_is_reported_and_not_cached() -> None:
    res = FakeResolver()
    res.failing.add("example.com")
    check = SpfCheck()
    out, ctx = run(res, "b@example.com", check=check)
    assert [f.id for f in out] == ["spf.temperror"]
    res.failing.clear()
    res.add("example.com", "TXT", "v=spf1 ip4:192.0.2.25 -all")
    out, ctx = run(res, "b@example.com", check=check)
    assert out == [] and ctx.known.spf().result == "pass"


def test_spent_budget_is_temperror_at_once() -> None:
    res = zone(s="v=spf1 -all")
    ctx = context(res, config(), budget=-1.0)
    out = SpfCheck()(message("A <a@s.example.com>", mail_from="b@s.example.com"), ctx)
    assert [f.id for f in out] == ["spf.temperror"] and res.queries == 0


def test_results_are_cached_per_domain_and_ip_until_the_ttl() -> None:
    now = [1000.0]
    res = FakeResolver(ttl=300)
    res.add("example.com", "TXT", "v=spf1 include:_spf.example.com -all")
    res.add("_spf.example.com", "TXT", "v=spf1 ip4:192.0.2.0/24 -all")
    check = SpfCheck(clock=lambda: now[0])
    for sender in ("a@example.com", "b@example.com", "c@example.com"):
        out, _ = run(res, sender, check=check)
        assert out == []
    assert check.results.evaluations == 1
    queries = res.queries
    now[0] += 301
    res.clear()
    run(res, "d@example.com", check=check)
    assert check.results.evaluations == 2 and res.queries > queries


def test_sender_dependent_macros_are_not_cached() -> None:
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 exists:%{l}.allow.example.com -all")
    res.add("alice.allow.example.com", "A", "127.0.0.2")
    check = SpfCheck()
    assert run(res, "alice@example.com", check=check)[1].known.spf().result == "pass"
    assert run(res, "mallory@example.com", check=check)[1].known.spf().result == "fail"


@pytest.mark.parametrize(("mail_from", "from_", "dmarc", "unaligned"), [
    ("b@example.com", "A <a@example.com>", None, False),                 # same domain
    ("b@bounce.example.com", "A <a@example.com>", None, False),          # subdomain, relaxed
    ("b@bounce.example.com", "A <a@example.com>", "v=DMARC1; p=none; aspf=s", True),  # strict
    ("www-data@example.com", "V <visitor@example.net>", None, True),     # the form case
])
def test_alignment(mail_from: str, from_: str, dmarc: str | None, unaligned: bool) -> None:
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 ip4:192.0.2.25 -all")
    res.add("bounce.example.com", "TXT", "v=spf1 ip4:192.0.2.25 -all")
    if dmarc:
        res.add("_dmarc.example.com", "TXT", dmarc)
    out, _ = run(res, mail_from, from_)
    found = [f for f in out if f.id == "spf.unaligned"]
    assert bool(found) is unaligned
    if found:
        assert found[0].severity is Severity.WARNING
        assert "envelope sender" in found[0].text


def test_unaligned_is_info_when_dkim_already_aligns() -> None:
    res = FakeResolver({("example.net", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"]})
    ctx = context(res, config())
    ctx.given(dkim=[DkimSignature("example.com", "s", "rsa-sha256", "pass", "rsa", 2048)])
    out = SpfCheck()(message("A <a@example.com>", mail_from="b@example.net"), ctx)
    assert [(f.id, f.severity) for f in out] == [("spf.unaligned", Severity.INFO)]


def test_unaligned_foreign_from_advises_a_from_of_our_own() -> None:
    res = FakeResolver({("example.com", "TXT"): ["v=spf1 ip4:192.0.2.25 -all"]})
    out, _ = run(res, "www-data@example.com", "V <visitor@example.net>", domains=["example.com"])
    assert "example.net is not one of this host's domains" in out[0].text
    assert "[from_rewrite]" in out[0].text
