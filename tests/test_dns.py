"""The one resolver against a real nameserver (Knot on loopback)."""

from __future__ import annotations

import socket

import pytest

from harness.knot import DnsServer
from postwarden.dns import Budget, Resolver, reverse_name


@pytest.fixture
def resolver(dns_server: DnsServer) -> Resolver:
    dns_server.zone("resolver.test", 'a A 192.0.2.1\nt TXT "v=spf1 " "-all"\nm MX 10 a\n')
    return Resolver(["127.0.0.1"], dns_server.port, timeout=1.0)


@pytest.mark.e2e
def test_answers_are_states_and_cached(resolver: Resolver) -> None:
    a = resolver.query("a.resolver.test", "A")
    assert a.status == "ok" and a.records == ("192.0.2.1",) and a.ttl == 60
    assert resolver.txt("t.resolver.test").records == ("v=spf1 -all",)
    assert resolver.query("nope.resolver.test", "A").status == "nxdomain"
    assert resolver.query("a.resolver.test", "TXT").status == "nodata"
    assert resolver.query("m.resolver.test", "MX").records == ("10 a.resolver.test",)
    n = resolver.queries
    for _ in range(3):
        resolver.query("a.resolver.test", "A")
        resolver.query("nope.resolver.test", "A")
    assert resolver.queries == n  # positive and negative answers come from the cache


@pytest.mark.e2e
def test_refused_zone_is_temperror(resolver: Resolver) -> None:
    ans = resolver.query("outside.example", "A")  # not served: Knot answers REFUSED
    assert ans.status == "temperror" and "REFUSED" in ans.error


def test_no_server_is_temperror_within_the_timeout() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))  # bound but never answers
        port = s.getsockname()[1]
        r = Resolver(["127.0.0.1"], port, timeout=0.3)
        ans = r.query("a.example.com", "A")
    assert ans.status == "temperror" and "timeout" in ans.error


def test_spent_budget_fails_at_once_without_asking() -> None:
    r = Resolver(["127.0.0.1"], 9, timeout=5)
    now = [0.0]
    budget = Budget(1.0, clock=lambda: now[0])
    now[0] = 2.0
    ans = r.query("a.example.com", "A", budget)
    assert ans.status == "temperror" and "budget" in ans.error and r.queries == 0


def test_reverse_names() -> None:
    assert reverse_name("192.0.2.1", "zen.example") == "1.2.0.192.zen.example"
    assert reverse_name("2001:db8::1", "bl.example").startswith("1.0.0.0.0.0.0.0")
    assert reverse_name("2001:db8::1", "bl.example").endswith("8.b.d.0.1.0.0.2.bl.example")
