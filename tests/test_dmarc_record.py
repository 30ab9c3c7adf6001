"""DMARC record parsing and discovery with organizational-domain fallback."""

from __future__ import annotations

import pytest

from auth_fakes import FakeResolver
from postwarden.dmarc_record import RecordError, lookup, parse


def test_parse_full_record() -> None:
    r = parse("v=DMARC1; p=reject; sp=quarantine; adkim=s; aspf=r; pct=50; "
              "rua=mailto:a@example.com,mailto:b@example.com")
    assert (r.p, r.sp, r.adkim, r.aspf, r.pct) == ("reject", "quarantine", "s", "r", 50)
    assert r.rua == ("mailto:a@example.com", "mailto:b@example.com")
    assert r.warnings == ()


def test_parse_defaults_and_whitespace() -> None:
    r = parse("v = DMARC1 ;p = None")
    assert (r.p, r.sp, r.adkim, r.aspf, r.pct) == ("none", "", "r", "r", 100)


@pytest.mark.parametrize("text", ["p=reject; v=DMARC1", "v=DMARC2; p=reject", "v=spf1 -all",
                                  "v=DMARC1; p=bogus", "v=DMARC1"])
def test_parse_rejects_unusable(text: str) -> None:
    with pytest.raises(RecordError):
        parse(text)


def test_bad_policy_with_rua_is_none() -> None:
    """RFC 7489 6.6.3: a record with a valid rua but bad p= is treated as p=none."""
    r = parse("v=DMARC1; p=bogus; rua=mailto:d@example.com")
    assert r.p == "none"
    assert r.warnings


@pytest.mark.parametrize(("tag", "attr", "default"), [
    ("adkim=x", "adkim", "r"), ("aspf=strict", "aspf", "r"), ("pct=200", "pct", 100),
    ("pct=abc", "pct", 100), ("sp=block", "sp", ""),
])
def test_bad_optional_tags_fall_back_to_defaults(tag: str, attr: str, default: object) -> None:
    r = parse(f"v=DMARC1; p=quarantine; {tag}")
    assert getattr(r, attr) == default
    assert r.p == "quarantine"
    assert len(r.warnings) == 1


def test_lookup_at_the_from_domain() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=none"]})
    found = lookup(res, "example.com")
    assert found.status == "ok"
    assert found.found_at == "example.com"
    assert not found.inherited
    assert found.policy == "reject"  # sp= is for subdomains only


def test_lookup_falls_back_to_the_organizational_domain_and_uses_sp() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject; sp=quarantine"]})
    found = lookup(res, "news.Example.com")
    assert found.status == "ok"
    assert found.found_at == "example.com"
    assert found.inherited
    assert found.policy == "quarantine"
    assert ("_dmarc.news.example.com", "TXT") in res.asked


def test_inherited_without_sp_uses_p() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"]})
    assert lookup(res, "a.b.example.com").policy == "reject"


def test_subdomain_record_wins_over_org_domain() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject"],
                        ("_dmarc.news.example.com", "TXT"): ["v=DMARC1; p=none"]})
    found = lookup(res, "news.example.com")
    assert (found.found_at, found.policy) == ("news.example.com", "none")


def test_non_dmarc_txt_is_ignored() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["google-site-verification=x",
                                                          "v=DMARC1; p=quarantine"]})
    assert lookup(res, "example.com").policy == "quarantine"


def test_two_records_mean_no_dmarc() -> None:
    res = FakeResolver({("_dmarc.example.com", "TXT"): ["v=DMARC1; p=reject",
                                                          "v=DMARC1; p=none"]})
    found = lookup(res, "example.com")
    assert found.status == "none"
    assert "2 DMARC records" in found.notes[0]


def test_no_record_anywhere() -> None:
    res = FakeResolver({("example.com", "A"): ["192.0.2.1"]})
    found = lookup(res, "mail.example.com")
    assert found.status == "none"
    assert found.policy == "none"
    assert {q for q, _ in res.asked} == {"_dmarc.mail.example.com", "_dmarc.example.com"}


def test_temperror_is_not_none() -> None:
    res = FakeResolver()
    res.failing.add("_dmarc.example.com")
    assert lookup(res, "example.com").status == "temperror"
    assert lookup(res, "www.example.com").status == "temperror"  # at the fallback


def test_org_domain_is_not_asked_twice() -> None:
    res = FakeResolver()
    lookup(res, "example.com")
    assert res.asked == [("_dmarc.example.com", "TXT")]
