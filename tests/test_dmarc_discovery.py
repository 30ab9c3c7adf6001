"""DMARC policy discovery, RFC 7489 6.6.3 and the RFC 9989 tree walk (suite dmarc-discovery).

Every case runs through postwarden's one Resolver against Knot serving the zones
below (and the empty fixture TLD `test`). Our own table: each step of RFC 7489
6.6.3 and of RFC 9989 4.10/4.10.1/4.10.2, and the places where the two generations
part (several records at the From domain, a record without p=, a psd=n or psd=y
record on the way up, np= for a name that does not exist, pct= against t=, names
of more than eight labels). Unit cases with a dict-backed resolver cover DNS
failures at each step.
"""

from __future__ import annotations

import pytest

import suites
from auth_fakes import FakeResolver
from harness.knot import DnsServer
from postwarden.dmarc_discovery import (
    DmarcLookup,
    discover,
    org_domain_9989,
    walk_names,
)
from postwarden.dns import Resolver

SUITE = "dmarc-discovery"
RUA = "rua=mailto:d@walk.test"

WALK = f"""\
_dmarc TXT "v=DMARC1; p=reject; sp=quarantine; {RUA}"
sub A 192.0.2.1
_dmarc.two TXT "v=DMARC1; p=none"
_dmarc.two TXT "v=DMARC1; p=reject"
_dmarc.nop TXT "v=DMARC1; p=bogus"
_dmarc.noprua TXT "v=DMARC1; p=bogus; {RUA}"
_dmarc.norua TXT "v=DMARC1; {RUA}"
_dmarc.bare TXT "v=DMARC1"
_dmarc.badsp TXT "v=DMARC1; p=reject; sp=bogus"
_dmarc.badsprua TXT "v=DMARC1; p=reject; sp=bogus; {RUA}"
_dmarc.ws TXT "v = DMARC1 ; p = quarantine"
_dmarc.notag TXT "v=DMARC1; p=quarantine; garbage"
_dmarc.lower TXT "v=dmarc1; p=none"
_dmarc.spf TXT "v=spf1 -all"
_dmarc.spf TXT "google-site-verification=abc"
_dmarc.nonuri TXT "v=DMARC1; p=bogus; rua=d@walk.test"
_dmarc.pct0 TXT "v=DMARC1; p=reject; pct=0"
_dmarc.pct50 TXT "v=DMARC1; p=reject; pct=50"
_dmarc.testing TXT "v=DMARC1; p=reject; t=y"
_dmarc.dept TXT "v=DMARC1; p=none; psd=n"
x.dept A 192.0.2.1
_dmarc.mid TXT "v=DMARC1; p=none"
y.mid A 192.0.2.1
_dmarc.bank TXT "v=DMARC1; p=reject; psd=y"
_dmarc.giant.bank TXT "v=DMARC1; p=none"
mail.mega.bank A 192.0.2.1
_dmarc.e.f.g.h TXT "v=DMARC1; p=reject; psd=n"
_dmarc.c.d.e.f.g.h TXT "v=DMARC1; p=none; psd=n"
a.b.c.d.e.f.g.h A 192.0.2.1
"""
NPZ = """\
_dmarc TXT "v=DMARC1; p=none; sp=quarantine; np=reject"
real A 192.0.2.1
"""
MULTI = """\
_dmarc TXT "v=DMARC1; p=none"
_dmarc TXT "v=DMARC1; p=reject"
sub A 192.0.2.1
"""

# Author Domain -> (RFC 7489, RFC 9989); each (status, found_at, tag, worst, least)
# where status "none" / "temperror" leave the rest empty.
NONE = ("none", "", "", "", "")


def ok(at: str, tag: str, worst: str, least: str = "") -> tuple[str, str, str, str, str]:
    return ("ok", at, tag, worst, least or worst)


CASES: list[tuple[str, str, tuple[str, ...], tuple[str, ...]]] = [
    # step 1: the From domain's own record, p= applies
    ("own record", "walk.test", ok("walk.test", "p", "reject"), ok("walk.test", "p", "reject")),
    # step 3: nothing at the From domain: the organizational domain's sp=
    ("inherited sp", "sub.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("walk.test", "sp", "quarantine")),
    ("name that does not exist", "nowhere.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("walk.test", "sp", "quarantine")),
    # step 5: several v=DMARC1 records: no DMARC (7489, no fallback); 9989 walks on
    ("two records", "two.walk.test", NONE, ok("walk.test", "sp", "quarantine")),
    # step 6: no valid p and no valid rua: no DMARC, never the parent's policy
    ("invalid p", "nop.walk.test", NONE, NONE),
    ("invalid p, valid rua", "noprua.walk.test", ok("noprua.walk.test", "p", "none"),
     ok("noprua.walk.test", "p", "none")),
    ("no p, valid rua", "norua.walk.test", ok("norua.walk.test", "p", "none"),
     ok("norua.walk.test", "p", "none")),
    ("no p, no rua", "bare.walk.test", NONE, ok("bare.walk.test", "p", "none")),
    ("invalid sp", "badsp.walk.test", NONE, NONE),
    ("invalid sp, valid rua", "badsprua.walk.test", ok("badsprua.walk.test", "p", "none"),
     ok("badsprua.walk.test", "p", "none")),
    ("non-URI rua", "nonuri.walk.test", NONE, NONE),
    # grammar: white space around =, a part without =
    ("white space", "ws.walk.test", ok("ws.walk.test", "p", "quarantine"),
     ok("ws.walk.test", "p", "quarantine")),
    ("part without =", "notag.walk.test", ok("notag.walk.test", "p", "quarantine"),
     ok("notag.walk.test", "p", "quarantine")),
    # step 2: records that are not v=DMARC1 are discarded, so the parent is asked
    ("v=dmarc1 is not DMARC1", "lower.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("walk.test", "sp", "quarantine")),
    ("other TXT only", "spf.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("walk.test", "sp", "quarantine")),
    # pct= (7489) against t= (9989)
    ("pct=0", "pct0.walk.test", ok("pct0.walk.test", "p", "quarantine"),
     ok("pct0.walk.test", "p", "reject")),
    ("pct=50", "pct50.walk.test", ok("pct50.walk.test", "p", "reject", "quarantine"),
     ok("pct50.walk.test", "p", "reject")),
    ("t=y", "testing.walk.test", ok("testing.walk.test", "p", "reject"),
     ok("testing.walk.test", "p", "quarantine")),
    # RFC 9989 4.10.2: psd=n at an intermediate label is an Organizational Domain
    ("psd=n below the org domain", "x.dept.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("dept.walk.test", "p", "none")),
    # an intermediate record without psd= is not the policy (fewest labels wins)
    ("intermediate record", "y.mid.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("walk.test", "sp", "quarantine")),
    # psd=y: the org domain is one label below it; with no record there, the PSD's policy
    ("psd=y, no org record", "mail.mega.bank.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("bank.walk.test", "p", "reject")),
    ("psd=y, own record", "giant.bank.walk.test", ok("giant.bank.walk.test", "p", "none"),
     ok("giant.bank.walk.test", "p", "none")),
    # more than eight labels: the walk jumps to the 7-label suffix; the 8-label
    # c.d.e.f.g.h.walk.test record is never asked
    ("ten labels", "a.b.c.d.e.f.g.h.walk.test", ok("walk.test", "sp", "quarantine"),
     ok("e.f.g.h.walk.test", "p", "reject")),
    # np=: a subdomain that does not exist (NXDOMAIN) gets np= under RFC 9989
    ("np for a missing name", "ghost.npz.test", ok("npz.test", "sp", "quarantine"),
     ok("npz.test", "np", "reject")),
    ("np, name exists", "real.npz.test", ok("npz.test", "sp", "quarantine"),
     ok("npz.test", "sp", "quarantine")),
    # several records at the organizational domain
    ("two records at the org domain", "sub.multi.test", NONE, NONE),
    # IDN From domain: asked by its A-label
    ("no record anywhere", "xn--fa-hia.nowhere.test", NONE, NONE),
    # a DNS failure is temperror, never "no record"
    ("refused zone", "mail.outside.example", ("temperror", "", "", "", ""),
     ("temperror", "", "", "", "")),
]


def _summary(look: DmarcLookup, gen: str) -> tuple[str, ...]:
    p = look.of(gen)  # type: ignore[arg-type]
    if p.status != "ok":
        return (p.status, "", "", "", "")
    return (p.status, p.found_at, p.tag, p.worst, p.least)


@pytest.fixture(scope="module")
def resolver(dns_server: DnsServer) -> Resolver:
    dns_server.zone("walk.test", WALK)
    dns_server.zone("npz.test", NPZ)
    dns_server.zone("multi.test", MULTI)
    return Resolver(["127.0.0.1"], dns_server.port, timeout=1.0)


@pytest.mark.e2e
@pytest.mark.parametrize(("case", "domain", "old", "new"), CASES)
def test_discovery(resolver: Resolver, case: str, domain: str, old: tuple[str, ...],
                   new: tuple[str, ...]) -> None:
    look = discover(resolver, domain)
    got = (_summary(look, "7489"), _summary(look, "9989"))
    suites.record(SUITE, f"{case} ({domain})", got == (old, new))
    assert got == (old, new), (look.rfc7489, look.rfc9989)
    assert look.agree == (old == new)


@pytest.mark.e2e
@pytest.mark.parametrize(("domain", "org"), [
    ("walk.test", "walk.test"), ("sub.walk.test", "walk.test"),
    ("x.dept.walk.test", "dept.walk.test"),        # psd=n
    ("y.mid.walk.test", "walk.test"),              # fewest labels
    ("mail.mega.bank.walk.test", "mega.bank.walk.test"),  # one below psd=y
    ("giant.bank.walk.test", "giant.bank.walk.test"),
    ("a.b.c.d.e.f.g.h.walk.test", "e.f.g.h.walk.test"),
    ("nothing.nowhere.test", "nothing.nowhere.test"),  # no record: the name itself
])
def test_organizational_domain_by_tree_walk(resolver: Resolver, domain: str, org: str) -> None:
    got = org_domain_9989(resolver, domain, None)
    suites.record(SUITE, f"org domain of {domain}", got == (org, ""))
    assert got == (org, "")


@pytest.mark.e2e
def test_reasons_are_said(resolver: Resolver) -> None:
    two = discover(resolver, "two.walk.test").rfc7489
    assert "2 DMARC records at _dmarc.two.walk.test" in two.notes[0]
    assert "do not fall back to walk.test" in two.notes[0]
    nop = discover(resolver, "nop.walk.test")
    assert "p=bogus" in nop.rfc7489.notes[0] and "unusable" in nop.rfc7489.notes[0]


@pytest.mark.parametrize(("domain", "names"), [
    ("example.com", ["example.com", "com"]),
    ("a.mail.example.com", ["a.mail.example.com", "mail.example.com", "example.com", "com"]),
    ("a.b.c.d.e.f.g.h.i.j.mail.example.com",  # RFC 9989 4.10's own example
     ["a.b.c.d.e.f.g.h.i.j.mail.example.com", "g.h.i.j.mail.example.com",
      "h.i.j.mail.example.com", "i.j.mail.example.com", "j.mail.example.com",
      "mail.example.com", "example.com", "com"]),
    ("a.b.c.d.e.f.g.example", ["a.b.c.d.e.f.g.example", "b.c.d.e.f.g.example",
                               "c.d.e.f.g.example", "d.e.f.g.example", "e.f.g.example",
                               "f.g.example", "g.example", "example"]),
    ("com", ["com"]),
])
def test_walk_names(domain: str, names: list[str]) -> None:
    got = walk_names(domain)
    suites.record(SUITE, f"walk names of {domain}", got == names and len(got) <= 8)
    assert got == names and len(got) <= 8


# --- DNS failures at each step (dict-backed resolver) -------------------------------

def _fake(records: dict[str, list[str]], failing: set[str]) -> FakeResolver:
    res = FakeResolver({(f"_dmarc.{d}", "TXT"): v for d, v in records.items()})
    res.failing |= failing
    return res


@pytest.mark.parametrize(("case", "records", "failing", "old", "new"), [
    ("From domain times out", {}, {"_dmarc.example.com"}, "temperror", "temperror"),
    ("org domain times out", {}, {"_dmarc.example.com"}, "temperror", "temperror"),
    ("TLD times out during the walk", {"example.com": ["v=DMARC1; p=reject"]},
     {"_dmarc.com"}, "ok", "temperror"),
    ("walk stops at psd=n before the failing name",
     {"example.com": ["v=DMARC1; p=reject; psd=n"]}, {"_dmarc.com"}, "ok", "ok"),
    ("existence test times out", {"example.com": ["v=DMARC1; p=none; np=reject"]},
     {"ghost.example.com"}, "ok", "temperror"),
])
def test_dns_failures(case: str, records: dict[str, list[str]], failing: set[str],
                      old: str, new: str) -> None:
    domain = "example.com" if case == "From domain times out" else "ghost.example.com"
    look = discover(_fake(records, failing), domain)
    got = (look.rfc7489.status, look.rfc9989.status)
    suites.record(SUITE, f"dns failure: {case}", got == (old, new))
    assert got == (old, new), (look.rfc7489, look.rfc9989)


def test_common_case_asks_one_name_per_generation() -> None:
    """A From domain with its own record: both generations read one cached answer."""
    res = _fake({"example.com": ["v=DMARC1; p=reject"]}, set())
    look = discover(res, "example.com")
    assert look.agree and res.asked == [("_dmarc.example.com", "TXT")]


def test_existence_is_asked_only_when_np_matters() -> None:
    res = _fake({"example.com": ["v=DMARC1; p=none; sp=reject; np=reject"]}, set())
    discover(res, "ghost.example.com")
    assert ("ghost.example.com", "A") not in res.asked  # np = sp: no need to ask
    res = _fake({"example.com": ["v=DMARC1; p=none; np=reject"]}, set())
    assert discover(res, "ghost.example.com").rfc9989.tag == "np"
    assert ("ghost.example.com", "A") in res.asked


def test_invalid_from_domain_is_a_state() -> None:
    look = discover(FakeResolver(), "☃.example")
    assert look.domain == "" and look.rfc7489.status == "none" and look.error


def test_discovery_is_reused_only_while_the_answers_are_fresh() -> None:
    res = _fake({"example.com": ["v=DMARC1; p=reject"]}, set())
    first = discover(res, "mail.example.com")
    assert discover(res, "mail.example.com") is first  # answers still in the TTL cache
    n = res.queries
    res.clear()  # the resolver's answers expired
    res.records[("_dmarc.example.com", "TXT")] = ["v=DMARC1; p=none"]
    again = discover(res, "mail.example.com")
    assert again is not first and res.queries > n
    assert again.rfc7489.policy == "none"


def test_failures_are_not_reused() -> None:
    res = _fake({}, {"_dmarc.example.com"})
    assert discover(res, "example.com").rfc7489.status == "temperror"
    res.failing.clear()
    res.records[("_dmarc.example.com", "TXT")] = ["v=DMARC1; p=reject"]
    assert discover(res, "example.com").rfc7489.status == "ok"
