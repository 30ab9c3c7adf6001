"""RFC 7208's test suite (OpenSPF 2014.04, shipped in pyspf's sdist) through postwarden.

Every case is evaluated by postwarden's own adapter (postwarden.spf.Query), its
DNS through a postwarden Resolver asking a real nameserver: Knot on loopback
serving the scenario's zonedata as a root zone (tests/spf_suite_zones.py),
behind harness.dns_dropper.DnsDropper, which leaves unanswered the questions
the suite says time out. Each case runs twice over:

- cached: one resolver (with its TTL cache) for a whole scenario, and every
  case evaluated twice, the second time with the answers already cached, which
  is how the milter runs;
- uncached: a resolver without cache, every query asked of the nameserver.

The suite file comes from `make test` (a Makefile step downloads the sdist of
the installed pyspf into .build/); it is never committed. Counts are printed
as `suite rfc7208 (cached|uncached): pass/total`.
"""

from __future__ import annotations

import importlib.util
import ipaddress
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.query
import dns.rdatatype
import pytest
import spf as pyspf
import yaml

import suites
from harness.dns_dropper import DnsDropper
from harness.knot import DnsServer
from postwarden.dns import Answer, Resolver
from postwarden.spf import Query
from spf_suite_zones import World, world

ROOT = Path(__file__).resolve().parents[1]
SUITE_DIR = ROOT / ".build" / "pyspf"
SUITE_FILE = SUITE_DIR / "rfc7208-tests.yml"
MISSING = (f"{SUITE_FILE} is missing: run `make test` (or `make {SUITE_FILE.relative_to(ROOT)}`),"
           " which downloads the sdist of the installed pyspf and extracts its test suite")
# How long the resolver waits: briefly for a question the suite says goes
# unanswered (the dropper drops it, so waiting longer would change nothing),
# long for every other one, so a loaded machine cannot turn a slow answer
# into a timeout the suite did not ask for.
SILENT_WAIT = 0.4
ANSWER_WAIT = 10.0
OLD_RESULTS = {"unknown": "permerror", "error": "temperror"}  # as testspf maps them

# Cases that cannot pass because of pyspf 2.0.14 (upstream behaviour named), as
# strict expected failures: one that starts passing fails the run, so this table
# is updated. Empty: every case passes through postwarden's adapter.
KNOWN_EXCEPTIONS: dict[str, str] = {}

# What DNS (Knot) cannot hold exactly of the zonedata, per scenario description.
INEXACT: dict[str, list[str]] = {
    "Initial processing": [
        "null.example.com SPF: TXT/SPF record of no strings served as one empty string",
        "null.example.com TXT: TXT/SPF record of no strings served as one empty string",
    ],
    "Selecting records": [
        "example7.com SPF: repeated record served once (an RRset is a set)",
        "example7.com TXT: repeated record served once (an RRset is a set)",
    ],
}


# postwarden's own cases in the suite's format (not part of the public count):
# what RFC 7208 says and the suite does not test, through the same real DNS.
OWN: dict[str, Any] = {
    "description": "postwarden: repeated void lookups, DNS errors inside ptr",
    "zonedata": {
        "void3.example.com": [{"TXT": "v=spf1 a:nx.example.com a:nx.example.com "
                                      "a:nx.example.com -all"}],
        "void2.example.com": [{"TXT": "v=spf1 a:nx.example.com a:nx.example.com -all"}],
        "ptr.example.com": [{"TXT": "v=spf1 ptr ip4:192.0.2.4 -all"}],
        "ptrname.example.com": [{"TXT": "v=spf1 ptr:example.com -all"}],
        "pmacro.example.com": [{"TXT": "v=spf1 exists:%{p}.ok.example.com -all"}],
        "4.2.0.192.in-addr.arpa": ["TIMEOUT"],
        "5.2.0.192.in-addr.arpa": [{"PTR": "broken.example.com"}, {"PTR": "good.example.com"}],
        "broken.example.com": ["TIMEOUT"],
        "good.example.com": [{"A": "192.0.2.5"}],
        "unknown.ok.example.com": [{"A": "127.0.0.2"}],
    },
    "tests": {
        "own-void-repeated": {"spec": "4.6.4", "host": "192.0.2.4", "helo": "h.example.com",
                              "mailfrom": "a@void3.example.com", "result": "permerror"},
        "own-void-twice": {"spec": "4.6.4", "host": "192.0.2.4", "helo": "h.example.com",
                           "mailfrom": "a@void2.example.com", "result": "fail"},
        "own-ptr-lookup-error": {"spec": "5.5", "host": "192.0.2.4", "helo": "h.example.com",
                                 "mailfrom": "a@ptr.example.com", "result": "pass"},
        "own-ptr-address-error": {"spec": "5.5", "host": "192.0.2.5", "helo": "h.example.com",
                                  "mailfrom": "a@ptrname.example.com", "result": "pass"},
        "own-p-macro-error": {"spec": "7.3", "host": "192.0.2.4", "helo": "h.example.com",
                              "mailfrom": "a@pmacro.example.com", "result": "pass"},
    },
}


@dataclass(frozen=True)
class Case:
    scenario: int  # index into ALL
    description: str
    name: str
    data: dict[str, Any]


def _load() -> list[dict[str, Any]]:
    if not SUITE_FILE.exists():
        return []
    return [d for d in yaml.safe_load_all(SUITE_FILE.read_bytes()) if d]


def _cases(docs: list[dict[str, Any]], first: int = 0) -> list[Case]:
    return [Case(first + i, d.get("description", ""), name, t)
            for i, d in enumerate(docs) for name, t in d["tests"].items()]


SCENARIOS = _load()
ALL = [*SCENARIOS, OWN]
CASES = _cases(SCENARIOS)
OWN_CASES = _cases([OWN], len(SCENARIOS))
MODES = ("cached", "uncached")


def _params() -> list[Any]:
    if not CASES:
        return [pytest.param(None, None, id="suite-file-missing")]
    out = []
    for mode in MODES:
        for c in CASES:
            marks = []
            if c.name in KNOWN_EXCEPTIONS:
                marks.append(pytest.mark.xfail(reason=KNOWN_EXCEPTIONS[c.name], strict=True))
            out.append(pytest.param(mode, c, id=f"{mode}-{c.name}", marks=marks))
    return out


class SuiteResolver(Resolver):
    """postwarden's Resolver, its wait chosen per question as described at SILENT_WAIT."""

    def __init__(self, port: int, world: World, cache: bool) -> None:
        super().__init__(["127.0.0.1"], port, timeout=ANSWER_WAIT,
                         cache_size=10000 if cache else 0)
        self.world = world

    def _fetch(self, name: str, rdtype: str, lifetime: float) -> Answer:
        if self.world.silent(name, rdtype):
            lifetime = min(lifetime, SILENT_WAIT)
        return super()._fetch(name, rdtype, lifetime)


@dataclass
class SuiteDns:
    knot: DnsServer
    dropper: DnsDropper
    scenario: int = -1
    world: World = field(default_factory=World)
    cached: Resolver | None = None

    def use(self, scenario: int) -> None:
        """Serve `scenario`'s zonedata (and its silences) if it is not served already."""
        if scenario == self.scenario:
            return
        self.world = world(ALL[scenario]["zonedata"])
        self.knot.zone(".", self.world.zone)
        self.scenario = scenario
        self.cached = self.resolver(cache=True)

    def resolver(self, cache: bool) -> Resolver:
        return SuiteResolver(self.dropper.port, self.world, cache)


@pytest.fixture(scope="module")
def suite_dns() -> Iterator[SuiteDns]:
    assert SUITE_FILE.exists(), MISSING
    base = Path(tempfile.mkdtemp(prefix="postwarden-rfc7208-"))
    knot = DnsServer(base / "knot")
    knot.zone(".", "")
    knot.start()
    holder: list[SuiteDns] = []
    dropper = DnsDropper(knot.port, silence=lambda n, t: holder[0].world.silent(n, t))
    dropper.start()
    holder.append(SuiteDns(knot, dropper))
    try:
        yield holder[0]
    finally:
        dropper.stop()
        knot.stop()
        shutil.rmtree(base, ignore_errors=True)


def evaluate(resolver: Resolver, t: dict[str, Any]) -> tuple[str, str]:
    """The case as testspf runs it, through postwarden's adapter.

    The one case with `strict: 2` (pyspf's harsh linting mode) runs strict like
    every other: postwarden never lints, and the suite says implementations may
    ignore the parameter.
    """
    q = Query(t["host"], t["mailfrom"], t["helo"], resolver)
    q.set_default_explanation("DEFAULT")
    result, _code, explanation = q.check()
    return OLD_RESULTS.get(result, result), explanation


def disagreement(t: dict[str, Any], result: str, explanation: str) -> str:
    """Empty when the suite accepts (result, explanation); else what differs."""
    expected = t["result"] if isinstance(t["result"], list) else [t["result"]]
    if result not in expected:
        return f"result {result}, the suite expects {' or '.join(expected)}"
    if t.get("explanation") is not None and t["explanation"] != explanation:
        return f"explanation {explanation!r}, the suite expects {t['explanation']!r}"
    return ""


def run(suite_dns: SuiteDns, mode: str, case: Case) -> list[str]:
    """What the suite disagrees with, over every evaluation of the case in `mode`."""
    suite_dns.use(case.scenario)
    if mode == "cached":
        assert suite_dns.cached is not None
        runs = [evaluate(suite_dns.cached, case.data) for _ in range(2)]
    else:
        runs = [evaluate(suite_dns.resolver(cache=False), case.data)]
    return [p for p in (disagreement(case.data, r, e) for r, e in runs) if p]


@pytest.mark.parametrize(("mode", "case"), _params())
def test_rfc7208(suite_dns: SuiteDns, mode: str | None, case: Case | None) -> None:
    assert case is not None and mode is not None, MISSING
    problems = run(suite_dns, mode, case)
    suites.record(f"rfc7208 ({mode})", case.name, not problems)
    assert not problems, (f"{case.name} ({case.description}, RFC 7208 {case.data['spec']}): "
                          f"{problems[0]}")


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("case", OWN_CASES, ids=[c.name for c in OWN_CASES])
def test_own_cases(suite_dns: SuiteDns, mode: str, case: Case) -> None:
    problems = run(suite_dns, mode, case)
    assert not problems, f"{case.name} (RFC 7208 {case.data['spec']}): {problems[0]}"


def test_suite_size() -> None:
    """The suite release this was written against has 16 scenarios and 203 cases."""
    assert CASES, MISSING
    assert (len(SCENARIOS), len(CASES)) == (16, 203)
    assert len({c.name for c in CASES}) == len(CASES)


# --- the zone says what the suite's own driver says --------------------------

def _reference_driver() -> Any:
    """pyspf's test/testspf.py from the same sdist: the suite's meaning of zonedata."""
    saved = pyspf.DNSLookup
    spec = importlib.util.spec_from_file_location("testspf", SUITE_DIR / "testspf.py")
    assert spec is not None and spec.loader is not None, MISSING
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    finally:
        pyspf.DNSLookup = saved  # it installs its fake DNS in pyspf; ours never uses it
    return module


QTYPES = ("A", "AAAA", "MX", "PTR", "TXT", "SPF", "CNAME")


def _norm(rtype: str, value: Any) -> Any:
    if rtype == "AAAA":
        raw = value if isinstance(value, bytes) else ipaddress.IPv6Address(value).packed
        return str(ipaddress.IPv6Address(raw))
    if rtype == "MX":
        pref, host = value
        return int(pref), str(host).lower().rstrip(".")
    if rtype in ("PTR", "CNAME"):
        return str(value).lower().rstrip(".")
    if rtype in ("TXT", "SPF"):
        return b"".join(value)  # SPF joins the strings (RFC 7208 3.3)
    return str(value)


def _expected(driver: Any, zone: dict[str, Any], name: str, qtype: str) -> str | set[Any]:
    driver.zonedata = zone
    try:
        found = list(driver.DNSLookup(name, qtype) or [])
    except pyspf.TempError:
        return "timeout"
    # the driver yields every record of the name; DNS answers the type asked (or a CNAME)
    return {(t, _norm(t, v)) for (owner, t), v in found
            if owner.lower() == name and t in (qtype, "CNAME")}


def _served(suite_dns: SuiteDns, name: str, qtype: str) -> str | set[Any]:
    qname = dns.name.Name([lb.encode("utf-8") for lb in name.split(".")] + [b""])
    q = dns.message.make_query(qname, dns.rdatatype.from_text(qtype))
    port = suite_dns.dropper.port
    wait = 0.2 if suite_dns.world.silent(name, qtype) else ANSWER_WAIT
    try:
        r = dns.query.udp(q, "127.0.0.1", port=port, timeout=wait)
    except dns.exception.Timeout:
        return "timeout"
    if r.flags & dns.flags.TC:
        r = dns.query.tcp(q, "127.0.0.1", port=port, timeout=ANSWER_WAIT)
    out: set[Any] = set()
    for rrset in r.answer:
        if rrset.name != qname:
            continue
        t = dns.rdatatype.to_text(rrset.rdtype)
        for rd in rrset:
            if t in ("TXT", "SPF"):
                out.add((t, b"".join(rd.strings)))  # type: ignore[attr-defined]
            elif t == "MX":
                out.add((t, _norm(t, (rd.preference, rd.exchange.to_text()))))  # type: ignore[attr-defined]
            elif t in ("PTR", "CNAME"):
                out.add((t, _norm(t, rd.target.to_text())))  # type: ignore[attr-defined]
            else:
                out.add((t, _norm(t, rd.address)))  # type: ignore[attr-defined]
    return out


@pytest.mark.parametrize("scenario", range(len(ALL)) if SCENARIOS else [None])
def test_served_zone_matches_the_suites_driver(suite_dns: SuiteDns, scenario: int | None) -> None:
    """Every name x type of the zonedata: Knot (through the dropper) answers what
    pyspf's own suite driver answers, except what INEXACT lists."""
    assert scenario is not None, MISSING
    driver = _reference_driver()
    doc = ALL[scenario]
    zone = driver.loadZone(doc)
    suite_dns.use(scenario)
    differ = []
    for name in sorted(zone):
        if name.rstrip(".") != name or not all(0 < len(lb) < 64 for lb in name.split(".")):
            continue
        for qtype in QTYPES:
            want = _expected(driver, zone, name, qtype)
            got = _served(suite_dns, name, qtype)
            if want != got:
                differ.append(f"{name} {qtype}: driver {want}, served {got}")
    explained = INEXACT.get(doc["description"], [])
    assert sorted(suite_dns.world.inexact) == sorted(explained)
    names = {e.split(" ", 1)[0] for e in explained}
    unexplained = [d for d in differ if d.split(" ", 1)[0] not in names]
    assert not unexplained, "\n".join(unexplained)
