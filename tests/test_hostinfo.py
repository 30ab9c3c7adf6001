"""Host detection: [host] first, then Postfix, interfaces, the HELO name's addresses."""

from __future__ import annotations

from auth_fakes import FakeResolver
from postwarden.config import HostConfig
from postwarden.hostinfo import detect

POSTCONF = {"smtp_helo_name": "$myhostname", "myhostname": "mail.example.com",
            "mydomain": "example.com"}


def test_configured_values_win_and_nothing_is_detected() -> None:
    host = HostConfig(ips=["192.0.2.25"], hostname="smtp.example.net", domains=["example.net"])
    facts = detect(host, POSTCONF, None, local_ips=lambda: ["8.8.4.4"])
    assert (facts.ips, facts.hostname, facts.domains) == (
        ("192.0.2.25",), "smtp.example.net", ("example.net",))
    assert facts.detected == ()


def test_postfix_names_and_interface_addresses() -> None:
    facts = detect(HostConfig(), POSTCONF, None, local_ips=lambda: ["9.9.9.10"])
    assert facts.hostname == "mail.example.com" and facts.domains == ("example.com",)
    assert facts.ips == ("9.9.9.10",)
    assert set(facts.detected) == {"ips", "hostname", "domains"}


def test_explicit_helo_name_beats_myhostname() -> None:
    facts = detect(HostConfig(), {**POSTCONF, "smtp_helo_name": "out.example.com"}, None,
                   local_ips=lambda: [])
    assert facts.hostname == "out.example.com"


def test_behind_nat_the_helo_names_public_addresses_are_used() -> None:
    resolver = FakeResolver({("mail.example.com", "A"): ["10.0.0.5", "9.9.9.11"],
                             ("mail.example.com", "AAAA"): ["2001:db8::1"]})
    facts = detect(HostConfig(), POSTCONF, resolver, local_ips=lambda: [])
    # private and documentation addresses are not what a receiver sees
    assert facts.ips == ("9.9.9.11",)
