"""Blocklist lookups: test points, refusal codes, rewritten answers, UCEPROTECT TXT."""

from __future__ import annotations

import pytest

from postwarden.blocklists import (
    DEFAULT_LISTS,
    PUBLIC_RESOLVERS,
    SPAMHAUS_ZEN,
    UCEPROTECT,
    by_zone,
    lists_for,
    parse_uceprotect_txt,
)
from postwarden.checks import dnsbl
from selfcheck_fakes import SERVFAIL, TIMEOUT, FakeResolver, healthy, rev

IP = "192.0.2.25"
SEV = {"l1": "critical", "l2": "warning", "l3": "info"}
L1, L2, L3 = UCEPROTECT


def test_table_ships_no_sorbs_and_only_mailspike_bl() -> None:
    zones = {bl.zone for bl in DEFAULT_LISTS}
    assert not any("sorbs" in z for z in zones)
    assert "rep.mailspike.net" not in zones and "bl.mailspike.net" in zones
    assert {"dnsbl-1.uceprotect.net", "dnsbl-2.uceprotect.net", "dnsbl-3.uceprotect.net",
            "zen.spamhaus.org", "b.barracudacentral.org", "bl.spamcop.net",
            "psbl.surriel.com", "all.s5h.net", "all.spamrats.com"} <= zones
    assert [bl.check_id for bl in UCEPROTECT] == ["uceprotect.l1", "uceprotect.l2",
                                                   "uceprotect.l3"]
    assert not any(bl.ipv6 for bl in UCEPROTECT)


def test_lists_for_add_remove_and_dqs() -> None:
    lists = lists_for(add=["bl.example.net"], remove=["bl.spamcop.net"],
                      spamhaus_dqs_key="abc123")
    zones = [bl.zone for bl in lists]
    assert "bl.spamcop.net" not in zones and zones[-1] == "bl.example.net"
    assert lists[-1].check_id == "dnsbl.bl.example.net"
    zen = next(bl for bl in lists if bl.zone == "zen.spamhaus.org")
    assert zen.qzone == "abc123.zen.dq.spamhaus.net"
    assert by_zone("zen.spamhaus.org") is SPAMHAUS_ZEN


@pytest.mark.parametrize(("text", "want"), [
    ("Net 192.0.2.0/24 is UCEPROTECT-Level2 listed because 5 abusers are hosted by "
     "Example Hosting/AS64500 there. See: http://www.uceprotect.net/rblcheck.php",
     {"net": "192.0.2.0/24", "prefix": 24, "abusers": 5, "asn": 64500,
      "isp": "Example Hosting"}),
    ("Your ISP Example Hosting, DE/AS64500 is UCEPROTECT-Level3 listed because of a "
     "spamscore of 61. See: http://www.uceprotect.net/rblcheck.php",
     {"spamscore": 61, "asn": 64500, "isp": "Example Hosting, DE"}),
    ("Your ISP Example Hosting/AS 64501 is UCEPROTECT-Level3 listed for hosting a total of "
     "55146 abusers. See: ...", {"abusers": 55146, "asn": 64501, "isp": "Example Hosting"}),
    ("IP 192.0.2.1 is UCEPROTECT-Level 1 listed. See http://www.uceprotect.net/rblcheck.php"
     "?ipr=192.0.2.1", {}),
])
def test_parse_uceprotect_txt(text: str, want: dict[str, object]) -> None:
    assert parse_uceprotect_txt(text) == want


def _res(zone: str) -> FakeResolver:
    res = FakeResolver()
    healthy(res, zone)
    return res


def test_clean_ip_is_ok_and_listed_l2_parses_txt() -> None:
    res = _res(L2.zone)
    r = dnsbl.check_list(L2, [IP], res, SEV)[0]
    assert (r.id, r.target, r.status, r.details["listed"]) == ("uceprotect.l2", IP, "ok", False)
    res.add(rev(IP, L2.zone), "A", "127.0.0.2")
    res.add(rev(IP, L2.zone), "TXT", "Net 192.0.2.0/24 is UCEPROTECT-Level2 listed because "
            "7 abusers are hosted by Example Hosting/AS64500 there.")
    res.clear()
    r = dnsbl.check_list(L2, [IP], res, SEV)[0]
    assert r.status == "warning" and r.details["listed"] is True
    assert r.details["abusers"] == 7 and r.details["net"] == "192.0.2.0/24"
    assert "rblcheck.php?ipr=192.0.2.25" in " ".join(r.advice)
    assert any("Do not pay" in a for a in r.advice)


def test_severity_per_level_is_configurable() -> None:
    res = _res(L3.zone)
    res.add(rev(IP, L3.zone), "A", "127.0.0.2")
    assert dnsbl.check_list(L3, [IP], res, SEV)[0].status == "info"
    assert dnsbl.check_list(L3, [IP], res, {**SEV, "l3": "warning"})[0].status == "warning"
    res2 = _res(L1.zone)
    res2.add(rev(IP, L1.zone), "A", "127.0.0.2")
    assert dnsbl.check_list(L1, [IP], res2, SEV)[0].status == "critical"


def test_spamhaus_refusal_is_unknown_with_resolver_advice() -> None:
    res = FakeResolver()
    res.add(rev("127.0.0.2", SPAMHAUS_ZEN.zone), "A", "127.255.255.254")
    r = dnsbl.check_list(SPAMHAUS_ZEN, [IP], res, SEV)[0]
    assert r.status == "unknown" and r.details["listed"] is None
    assert "127.255.255.254" in r.summary and "public" in r.summary
    assert any("local recursive resolver" in a for a in r.advice)
    assert any("spamhaus_dqs_key" in a for a in r.advice)
    check = dnsbl.check_resolver(["127.0.0.1"], [r])
    assert check.status == "warning" and check.details["refused_by"] == ["zen.spamhaus.org"]


def test_spamhaus_refusal_for_the_ip_itself_is_unknown() -> None:
    res = _res(SPAMHAUS_ZEN.zone)
    res.add(rev(IP, SPAMHAUS_ZEN.zone), "A", "127.255.255.255")
    r = dnsbl.check_list(SPAMHAUS_ZEN, [IP], res, SEV)[0]
    assert r.status == "unknown" and "excessive" in r.summary


def test_public_resolver_is_flagged_even_without_refusals() -> None:
    # a known public resolver, named only as data: nothing is sent anywhere
    public = sorted(PUBLIC_RESOLVERS)[0]
    assert dnsbl.check_resolver([public], []).status == "warning"
    assert dnsbl.check_resolver(["127.0.0.1"], []).status == "ok"


def test_dead_list_that_lists_everything_is_unknown() -> None:
    bl = by_zone("bl.spamcop.net")
    assert bl is not None
    res = _res(bl.zone)
    res.add(rev("127.0.0.1", bl.zone), "A", "127.0.0.2")
    res.add(rev(IP, bl.zone), "A", "127.0.0.2")
    r = dnsbl.check_list(bl, [IP], res, SEV)[0]
    assert r.status == "unknown" and "127.0.0.1" in r.summary
    assert r.details["listed"] is None


def test_list_not_listing_its_test_point_is_unknown() -> None:
    bl = by_zone("psbl.surriel.com")
    assert bl is not None
    r = dnsbl.check_list(bl, [IP], FakeResolver(), SEV)[0]
    assert r.status == "unknown" and "127.0.0.2" in r.summary


@pytest.mark.parametrize("failure", [TIMEOUT, SERVFAIL])
def test_timeout_and_servfail_are_unknown_never_ok(failure: str) -> None:
    bl = by_zone("all.s5h.net")
    assert bl is not None
    res = FakeResolver({(rev("127.0.0.2", bl.zone), "A"): failure})
    r = dnsbl.check_list(bl, [IP], res, SEV)[0]
    assert r.status == "unknown"
    res2 = _res(bl.zone)
    res2.records[(rev(IP, bl.zone), "A")] = failure
    r2 = dnsbl.check_list(bl, [IP], res2, SEV)[0]
    assert r2.status == "unknown" and r2.details["listed"] is None


def test_answer_outside_127_8_is_unknown() -> None:
    bl = by_zone("bl.mailspike.net")
    assert bl is not None
    res = FakeResolver()
    res.add(rev("127.0.0.2", bl.zone), "A", "10.0.0.1")
    r = dnsbl.check_list(bl, [IP], res, SEV)[0]
    assert r.status == "unknown" and "outside 127.0.0.0/8" in r.summary
    res2 = _res(bl.zone)
    res2.add(rev(IP, bl.zone), "A", "10.0.0.1")
    assert dnsbl.check_list(bl, [IP], res2, SEV)[0].status == "unknown"


def test_ipv6_only_on_lists_that_support_it() -> None:
    v6 = "2001:db8::25"
    res = _res(SPAMHAUS_ZEN.zone)
    out = dnsbl.check_list(SPAMHAUS_ZEN, [IP, v6], res, SEV)
    assert [r.target for r in out] == [IP, v6]
    nibbles = ("5.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2."
               "zen.spamhaus.org")
    assert (nibbles, "A") in res.asked
    assert dnsbl.check_list(L1, [v6], _res(L1.zone), SEV) == []


def test_spamhaus_codes_have_meanings() -> None:
    res = _res(SPAMHAUS_ZEN.zone)
    res.add(rev(IP, SPAMHAUS_ZEN.zone), "A", "127.0.0.4", "127.0.0.10")
    r = dnsbl.check_list(SPAMHAUS_ZEN, [IP], res, SEV)[0]
    assert r.status == "critical"
    assert "XBL" in r.details["meanings"]["127.0.0.4"]
    assert "PBL" in r.details["meanings"]["127.0.0.10"]
