"""DNS trouble at the resolver: slow, SERVFAIL, truncated answers, no server at all."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.bad_dns import BadDns, closed_port
from postwarden.dns import Budget, Resolver

_SPF = "v=spf1 " + " ".join(f"ip4:192.0.2.{i}" for i in range(1, 40)) + " -all"
# Over 512 bytes in all (so UDP truncation is plausible), in 200-byte TXT strings.
LONG_TXT = [" ".join(f'"{_SPF[i:i + 200]}"' for i in range(0, len(_SPF), 200))]


@pytest.fixture
def bad() -> Iterator[BadDns]:
    server = BadDns({("example.com", "TXT"): LONG_TXT, ("example.com", "A"): ["192.0.2.1"]})
    server.start()
    yield server
    server.stop()


def test_truncated_udp_answer_is_completed_over_tcp(bad: BadDns) -> None:
    bad.mode = "truncate"
    ans = Resolver(["127.0.0.1"], bad.port, timeout=2).txt("example.com")
    assert ans.status == "ok" and "ip4:192.0.2.39" in ans.records[0]
    assert bad.tcp_queries == 1


def test_servfail_is_temperror_and_not_cached(bad: BadDns) -> None:
    bad.mode = "servfail"
    r = Resolver(["127.0.0.1"], bad.port, timeout=1)
    ans = r.query("example.com", "A")
    assert ans.status == "temperror" and "SERVFAIL" in ans.error
    bad.mode = "ok"
    assert r.query("example.com", "A").records == ("192.0.2.1",)  # recovered at once


def test_slow_server_is_cut_off_by_the_timeout(bad: BadDns) -> None:
    bad.mode, bad.delay = "slow", 3.0
    r = Resolver(["127.0.0.1"], bad.port, timeout=0.5)
    ans = r.query("example.com", "A")
    # the answer comes after 3 s: a resolver that waited for it would say ok
    assert ans.status == "temperror" and ans.error == "timeout after 0.5s"
    assert bad.udp_queries == 1  # given up, not asked again


def test_budget_caps_several_slow_lookups(bad: BadDns) -> None:
    bad.mode, bad.delay = "slow", 3.0
    r = Resolver(["127.0.0.1"], bad.port, timeout=1.0)
    budget = Budget(1.2)
    results = [r.query(f"n{i}.example.com", "A", budget) for i in range(5)]
    assert all(a.status == "temperror" for a in results)
    # the first lookup waits its 1 s, the second at most the 0.2 s left; the rest are
    # not sent at all (not 5 x timeout)
    spent = "DNS budget for this message spent"
    assert [a.error for a in results[2:]] == [spent] * 3
    assert bad.udp_queries == 5 - sum(a.error == spent for a in results)


def test_no_server_at_all() -> None:
    r = Resolver(["127.0.0.1"], closed_port(), timeout=0.3)
    assert r.query("example.com", "A").status == "temperror"
