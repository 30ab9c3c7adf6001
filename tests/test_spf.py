"""The one pyspf adapter (postwarden/spf.py): limits, PTR errors, both halves agree."""

from __future__ import annotations

import pytest

from auth_fakes import FakeResolver, config, context, message
from postwarden import spf
from postwarden.checks import records
from postwarden.dns import Budget
from postwarden.milter.spf_check import SpfCheck

IP = "192.0.2.25"
PTR_NAME = "25.2.0.192.in-addr.arpa"


def milter_result(res: FakeResolver, domain: str, check: SpfCheck | None = None) -> str:
    ctx = context(res, config())
    (check or SpfCheck())(message(f"A <a@{domain}>", mail_from=f"b@{domain}"), ctx)
    return str(ctx.known.spf().result)


def selfcheck_result(res: FakeResolver, domain: str) -> str:
    return records.evaluate(IP, domain, res)[0]


@pytest.mark.parametrize(("record", "expected"), [
    ("v=spf1 a:nx.example.com a:nx.example.com a:nx.example.com -all", "permerror"),
    ("v=spf1 a:nx.example.com a:nx.example.com -all", "fail"),
    ("v=spf1 mx:nx.example.com a:nx.example.com exists:nx.example.com -all", "permerror"),
])
def test_every_void_lookup_counts_even_when_the_cache_answers(record: str,
                                                                expected: str) -> None:
    """RFC 7208 4.6.4: a repeated query is a query, whether DNS or a cache answers it."""
    res = FakeResolver()
    res.add("example.com", "TXT", record)
    res.add("other.example.com", "A", "198.51.100.9")
    check = SpfCheck()
    assert milter_result(res, "example.com", check) == expected
    assert res.asked.count(("nx.example.com", "A")) == 1  # the resolver's cache answered
    res.clear()
    # warm the resolver's cache with the void answer first, then evaluate again
    assert res.query("nx.example.com", "A").status == "nxdomain"
    assert selfcheck_result(res, "example.com") == expected
    assert milter_result(res, "example.com") == expected


def test_milter_and_selfcheck_use_the_one_adapter() -> None:
    assert records.spf is spf
    import postwarden.milter.spf_check as milter_spf

    assert milter_spf.SpfResults is spf.SpfResults  # whose evaluate() is the adapter's


def test_a_ptr_lookup_error_means_no_match_not_temperror() -> None:
    """RFC 7208 5.5: a DNS error on the PTR lookup: the mechanism fails to match."""
    res = FakeResolver()
    res.add("example.com", "TXT", f"v=spf1 ptr ip4:{IP} -all")
    res.failing.add(PTR_NAME)
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res)
    assert ev.result == "pass"
    assert ev.skipped and PTR_NAME in ev.skipped[0]
    assert not ev.reusable  # rests on a DNS error: not kept for later messages
    res2 = FakeResolver()
    res2.add("example.com", "TXT", "v=spf1 ptr -all")
    res2.failing.add(PTR_NAME)
    assert spf.evaluate(IP, "b@example.com", "mail.example.com", res2).result == "fail"


def test_an_address_lookup_error_skips_that_name_and_the_search_goes_on() -> None:
    """RFC 7208 5.5: "that domain name is skipped and the search continues"."""
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 ptr:example.com -all")
    res.add(PTR_NAME, "PTR", "broken.example.com.", "mail.example.com.")
    res.failing.add("broken.example.com")
    res.add("mail.example.com", "A", IP)
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res)
    assert ev.result == "pass" and len(ev.skipped) == 1


def test_the_p_macro_survives_a_ptr_error() -> None:
    """RFC 7208 7.3: no validated name (a DNS error included): %{p} is "unknown"."""
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 exists:%{p}.allow.example.com -all")
    res.add("unknown.allow.example.com", "A", "127.0.0.2")
    res.failing.add(PTR_NAME)
    assert spf.evaluate(IP, "b@example.com", "mail.example.com", res).result == "pass"


def test_a_spent_budget_in_ptr_is_still_temperror() -> None:
    """Our own per-message time limit is not an answer receivers would get."""
    res = FakeResolver()
    res.add("example.com", "TXT", f"v=spf1 ptr ip4:{IP} -all")
    now = [0.0]
    budget = Budget(1.0, clock=lambda: now[0])
    res.query("example.com", "TXT", budget)  # the record is cached; the PTR is not
    now[0] = 2.0
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res, budget)
    assert ev.result == "temperror" and not ev.reusable


def test_other_dns_errors_stay_temperror() -> None:
    res = FakeResolver()
    res.add("example.com", "TXT", "v=spf1 a:down.example.com -all")
    res.failing.add("down.example.com")
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res)
    assert ev.result == "temperror" and "down.example.com" in ev.explanation


def test_ttl_and_sender_dependence_are_reported() -> None:
    res = FakeResolver(ttl=120)
    res.add("example.com", "TXT", "v=spf1 exists:%{l}.ok.example.com -all")
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res)
    assert ev.result == "fail" and ev.sender_dependent and not ev.reusable
    res2 = FakeResolver(ttl=120)
    res2.add("example.com", "TXT", f"v=spf1 ip4:{IP} -all")
    ev2 = spf.evaluate(IP, "b@example.com", "mail.example.com", res2)
    assert (ev2.result, ev2.ttl, ev2.reusable) == ("pass", 120, True)


def _ten_lookups(res: FakeResolver) -> str:
    for n in range(9):
        res.add(f"i{n}.example.net", "TXT", "v=spf1 ip4:198.51.100.1 -all")
    res.add("host.example.net", "A", "198.51.100.2")
    return " ".join(f"include:i{n}.example.net" for n in range(9)) + " a:host.example.net"


@pytest.mark.parametrize(("tail", "expected"), [
    ("redirect=r.example.net -all", "fail"),          # redirect ignored: 10 lookups
    ("-all", "fail"),
    ("redirect=r.example.net", "permerror"),           # no all: the redirect is an 11th
    ("a:host.example.net -all", "permerror"),          # 11 lookups
])
def test_a_redirect_ignored_by_all_costs_no_lookup(tail: str, expected: str) -> None:
    """RFC 7208 6.1/4.6.4; pyspf 2.0.14 counts it while parsing the record."""
    res = FakeResolver()
    res.add("example.com", "TXT", f"v=spf1 {_ten_lookups(res)} {tail}")
    res.add("r.example.net", "TXT", f"v=spf1 ip4:{IP} -all")
    ev = spf.evaluate(IP, "b@example.com", "mail.example.com", res)
    assert ev.result == expected
    assert milter_result(res, "example.com") == expected
    lookups = records.count_lookups("example.com", res)[0]
    assert (lookups > 10) == (expected == "permerror")


@pytest.mark.parametrize("record", [
    "v=spf1 redirect=r.example.net -all redirect=r.example.net",  # twice: syntax error
    "v=spf1 ?all redirect=",                                        # empty domain
])
def test_an_ignored_redirect_is_still_parsed(record: str) -> None:
    res = FakeResolver()
    res.add("example.com", "TXT", record)
    assert spf.evaluate(IP, "b@example.com", "mail.example.com", res).result == "permerror"
