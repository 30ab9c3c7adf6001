"""Organizational domain and alignment (RFC 7489 3.1, 3.2)."""

from __future__ import annotations

import pytest

from postwarden.orgdomain import aligned, org_domain


@pytest.mark.parametrize(("domain", "org"), [
    ("example.com", "example.com"),
    ("mail.example.com", "example.com"),
    ("a.b.c.example.com", "example.com"),
    ("Mail.Example.COM.", "example.com"),          # case and trailing dot
    ("www.example.co.uk", "example.co.uk"),        # multi-label public suffix
    ("example.co.uk", "example.co.uk"),
    ("co.uk", "co.uk"),                            # a public suffix is its own org domain
    ("com", "com"),
    ("shop.example.test", "example.test"),         # unknown TLD: the default "*" rule
    ("", ""),
])
def test_org_domain(domain: str, org: str) -> None:
    assert org_domain(domain) == org


@pytest.mark.parametrize(("ident", "from_domain", "mode", "expected"), [
    ("example.com", "example.com", "r", True),
    ("example.com", "example.com", "s", True),
    # RFC 7489 3.1.1: d=example.com, From news.example.com: relaxed pass, strict fail.
    ("example.com", "news.example.com", "r", True),
    ("example.com", "news.example.com", "s", False),
    ("news.example.com", "example.com", "r", True),
    ("a.example.com", "b.example.com", "r", True),
    ("a.example.com", "b.example.com", "s", False),
    ("example.net", "example.com", "r", False),
    ("example.co.uk", "other.co.uk", "r", False),  # siblings under a public suffix
    ("co.uk", "example.co.uk", "r", False),
    ("EXAMPLE.com.", "example.COM", "s", True),
    ("", "example.com", "r", False),
    ("example.com", "", "r", False),
    ("evil-example.com", "example.com", "r", False),
    ("example.com.evil.net", "example.com", "r", False),
])
def test_aligned(ident: str, from_domain: str, mode: str, expected: bool) -> None:
    assert aligned(ident, from_domain, mode) is expected


def test_unknown_mode_is_relaxed() -> None:
    assert aligned("example.com", "mail.example.com", "x") is True
