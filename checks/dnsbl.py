"""Blocklist lookups: UCEPROTECT L1/L2/L3, Spamhaus ZEN and the other live lists.

Every list is health-checked each run with the RFC 5782 test points (127.0.0.2
listed, 127.0.0.1 not); a list failing them answers `unknown` for every IP.
Timeouts, SERVFAIL, refusal codes (Spamhaus 127.255.255.25x) and answers outside
127.0.0.0/8 are `unknown` with the reason: never `ok`. What a code means comes
from postwarden.blocklists, not from this module.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from postwarden.blocklists import (
    PUBLIC_RESOLVERS,
    SPAMHAUS_ZEN,
    Blocklist,
    parse_uceprotect_txt,
)
from postwarden.checks.report import CheckResult, Status
from postwarden.dns import Answer, Budget, Resolver, reverse_name
from postwarden.findings import Finding

State = Literal["listed", "clean", "unknown"]

LOCAL_RESOLVER_ADVICE = (
    "Run a local recursive resolver (unbound or knot-resolver on 127.0.0.1) and set "
    "[dns] nameservers = [\"127.0.0.1\"]: blocklists refuse public resolvers"
)


@dataclass(frozen=True)
class Lookup:
    """One blocklist answer, classified."""

    state: State
    codes: tuple[str, ...] = ()
    reason: str = ""
    refusal: str = ""  # the refusal code, when the list refused to answer


def classify(bl: Blocklist, answer: Answer) -> Lookup:
    """Answer -> listed / clean / unknown. temperror (timeout, SERVFAIL) is unknown."""
    if answer.status == "temperror":
        return Lookup("unknown", reason=f"no answer ({answer.error or 'temperror'})")
    if answer.status in ("nxdomain", "nodata"):
        return Lookup("clean")
    codes = tuple(sorted(answer.records))
    for code in codes:
        if code in bl.refusals:
            return Lookup("unknown", codes, f"refused: {code} = {bl.refusals[code]}", code)
    for code in codes:
        try:
            inside = ipaddress.ip_address(code) in ipaddress.ip_network("127.0.0.0/8")
        except ValueError:
            inside = False
        if not inside:
            return Lookup("unknown", codes,
                          f"answer {code} is outside 127.0.0.0/8: the resolver rewrites "
                          "answers (NXDOMAIN hijacking) or the list is broken")
    return Lookup("listed", codes)


@dataclass(frozen=True)
class Health:
    ok: bool
    reason: str = ""
    refusal: str = ""


def health(bl: Blocklist, resolver: Resolver, budget: Budget | None = None) -> Health:
    """RFC 5782 test points: 127.0.0.2 must be listed, 127.0.0.1 must not."""
    listed = classify(bl, resolver.query(reverse_name(bl.test_listed, bl.qzone), "A", budget))
    if listed.state == "unknown":
        return Health(False, f"test point {bl.test_listed}: {listed.reason}", listed.refusal)
    if listed.state == "clean":
        return Health(False, f"does not list the test point {bl.test_listed}: the list is "
                             "dead, renamed, or the resolver blocks it")
    clean = classify(bl, resolver.query(reverse_name(bl.test_clean, bl.qzone), "A", budget))
    if clean.state == "unknown":
        return Health(False, f"test point {bl.test_clean}: {clean.reason}", clean.refusal)
    if clean.state == "listed":
        return Health(False, f"lists the test point {bl.test_clean} "
                             f"({','.join(clean.codes)}): the list is dead or lists everything")
    return Health(True)


def _severity(bl: Blocklist, severities: Mapping[str, str]) -> Status:
    return severities.get(bl.level, bl.listed_status)  # type: ignore[return-value]


def check_ip(bl: Blocklist, ip: str, hc: Health, resolver: Resolver,
             severities: Mapping[str, str], budget: Budget | None = None) -> Finding:
    """One IP on one list."""
    details: dict[str, Any] = {"zone": bl.zone, "list": bl.name, "listed": None}
    if bl.level:
        details["level"] = bl.level
    if bl.lookup_url:
        details["lookup_url"] = bl.lookup_url.format(ip=ip)
    if not hc.ok:
        details["reason"] = hc.reason
        return CheckResult(bl.check_id, ip, "unknown",
                           f"{bl.name}: cannot tell ({hc.reason})",
                           _unknown_advice(bl, hc.refusal), details)
    look = classify(bl, resolver.query(reverse_name(ip, bl.qzone), "A", budget))
    details["codes"] = list(look.codes)
    if look.state == "unknown":
        details["reason"] = look.reason
        return CheckResult(bl.check_id, ip, "unknown", f"{bl.name}: cannot tell ({look.reason})",
                           _unknown_advice(bl, look.refusal), details)
    if look.state == "clean":
        details["listed"] = False
        return CheckResult(bl.check_id, ip, "ok", f"not listed on {bl.name}", (), details)
    details["listed"] = True
    details["meanings"] = {c: bl.meaning(c) for c in look.codes}
    txt = resolver.query(reverse_name(ip, bl.qzone), "TXT", budget)
    if txt.ok:
        details["txt"] = list(txt.records)
        if bl.level:
            for record in txt.records:
                details.update(parse_uceprotect_txt(record))
    summary = f"LISTED on {bl.name}: " + "; ".join(sorted(set(details["meanings"].values())))
    summary += _extra(details)
    advice = [f"Impact: {bl.impact}", bl.delisting]
    if bl.lookup_url:
        advice.insert(0, f"Look it up: {bl.lookup_url.format(ip=ip)}")
    return CheckResult(bl.check_id, ip, _severity(bl, severities), summary, tuple(advice),
                       details)


def _extra(details: Mapping[str, Any]) -> str:
    parts = []
    if "net" in details:
        parts.append(f"net {details['net']}")
    if "asn" in details:
        isp = f"{details['isp']} " if "isp" in details else ""
        parts.append(f"{isp}AS{details['asn']}")
    if "abusers" in details:
        parts.append(f"{details['abusers']} abusers")
    if "spamscore" in details:
        parts.append(f"spam score {details['spamscore']}")
    return f" ({', '.join(parts)})" if parts else ""


def _unknown_advice(bl: Blocklist, refusal: str) -> tuple[str, ...]:
    if refusal:
        advice = [LOCAL_RESOLVER_ADVICE]
        if bl.zone == SPAMHAUS_ZEN.zone:
            advice.append("Or get a free Spamhaus DQS key and set "
                          "[selfcheck] spamhaus_dqs_key")
        return tuple(advice)
    return (f"Check that the resolver answers for {bl.qzone} "
            f"(dig 2.0.0.127.{bl.qzone} A); or drop the list: "
            f"[selfcheck] lists_remove = [\"{bl.zone}\"]",)


def check_list(bl: Blocklist, ips: list[str], resolver: Resolver,
               severities: Mapping[str, str], budget: Budget | None = None
               ) -> list[Finding]:
    """Health-check one list, then look up every IP it supports."""
    wanted = [ip for ip in ips if ipaddress.ip_address(ip).version == 4 or bl.ipv6]
    if not wanted:
        return []
    hc = health(bl, resolver, budget)
    return [check_ip(bl, ip, hc, resolver, severities, budget) for ip in wanted]


def check_resolver(nameservers: list[str], results: list[Finding]) -> Finding:
    """Public resolvers get refused by Spamhaus and others: say so, with the fix."""
    public = [n for n in nameservers if n in PUBLIC_RESOLVERS]
    refused = sorted({str(r.details.get("zone")) for r in results
                      if "refused" in str(r.details.get("reason", ""))})
    target = ",".join(nameservers)
    details: dict[str, Any] = {"nameservers": nameservers, "public": public,
                               "refused_by": refused}
    if public or refused:
        why = []
        if public:
            why.append(f"public resolver in use ({', '.join(public)})")
        if refused:
            why.append(f"refused by {', '.join(refused)}")
        return CheckResult("resolver.public", target, "warning",
                           "blocklist answers unreliable: " + "; ".join(why),
                           (LOCAL_RESOLVER_ADVICE,), details)
    return CheckResult("resolver.public", target, "ok",
                       "resolver is not a known public resolver and no list refused it",
                       (), details)
