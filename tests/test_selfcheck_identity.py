"""rDNS and HELO: missing PTR is critical, FCrDNS, generic names, the HELO name."""

from __future__ import annotations

from postwarden.checks import rdns
from postwarden.findings import Finding
from selfcheck_fakes import TIMEOUT, FakeResolver

IP = "192.0.2.25"
PTR = "25.2.0.192.in-addr.arpa"


def _by_id(results: list[Finding]) -> dict[str, Finding]:
    return {r.id: r for r in results}


def test_good_ptr_forward_confirmed() -> None:
    res = FakeResolver({(PTR, "PTR"): ["mail.example.com"],
                        ("mail.example.com", "A"): [IP]})
    out = _by_id(rdns.check_ip(IP, res, "mail.example.com"))
    assert out["rdns.ptr"].status == "ok" and out["rdns.fcrdns"].status == "ok"
    assert out["rdns.ptr"].target == IP


def test_missing_ptr_is_critical_with_the_seed_wording() -> None:
    out = _by_id(rdns.check_ip(IP, FakeResolver(), "mail.example.com"))
    assert out["rdns.ptr"].status == "critical"
    assert "No Reverse-DNS (PTR)" in out["rdns.ptr"].summary
    assert out["rdns.fcrdns"].status == "critical"
    assert "mail.example.com" in out["rdns.ptr"].advice[0]


def test_ptr_not_forward_confirmed() -> None:
    res = FakeResolver({(PTR, "PTR"): ["mail.example.com"],
                        ("mail.example.com", "A"): ["192.0.2.99"]})
    out = _by_id(rdns.check_ip(IP, res))
    assert out["rdns.ptr"].status == "ok"
    assert out["rdns.fcrdns"].status == "critical"
    assert "mail.example.com. A 192.0.2.25" in out["rdns.fcrdns"].advice[0]


def test_generic_ptr_is_a_warning() -> None:
    for name in ("192-0-2-25.dynamic.example.net", "25.2.0.192.static.example.net",
                 "dhcp-pool7.example.net", "c0000219.example.net"):
        res = FakeResolver({(PTR, "PTR"): [name], (name, "A"): [IP]})
        out = _by_id(rdns.check_ip(IP, res))
        assert out["rdns.ptr"].status == "warning", name
        assert out["rdns.fcrdns"].status == "ok"
    assert rdns.generic_reasons("mail.example.com", IP) == []


def test_ptr_lookup_failure_is_unknown() -> None:
    out = _by_id(rdns.check_ip(IP, FakeResolver({(PTR, "PTR"): TIMEOUT})))
    assert out["rdns.ptr"].status == "unknown" and out["rdns.fcrdns"].status == "unknown"


def test_helo_not_fqdn_is_critical() -> None:
    for name in ("mail", "localhost.localdomain", "mail.local"):
        r = rdns.check_helo(name, [IP], {IP: ["mail.example.com"]}, FakeResolver())
        assert (r.id, r.target, r.status) == ("helo", name, "critical")
        assert "postconf -e 'smtp_helo_name = mail.example.com'" in r.advice[0]


def test_helo_must_resolve_to_the_ip_and_match_the_ptr() -> None:
    res = FakeResolver({("mail.example.com", "A"): [IP], ("other.example.com", "A"): [IP]})
    ok = rdns.check_helo("mail.example.com", [IP], {IP: ["mail.example.com"]}, res)
    assert ok.status == "ok"
    differs = rdns.check_helo("other.example.com", [IP], {IP: ["mail.example.com"]}, res)
    assert differs.status == "warning" and "differs from the PTR" in differs.summary
    nowhere = rdns.check_helo("nx.example.com", [IP], {IP: ["mail.example.com"]}, res)
    assert nowhere.status == "warning" and "does not resolve" in nowhere.summary
