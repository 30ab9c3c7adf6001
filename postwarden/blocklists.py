"""Blocklist knowledge as data: zones, levels, return codes, refusals, test points.

One table used by the self-check (postwarden.checks.dnsbl) and by the milter. Code
that reads an answer never hard-codes a zone or a return code: it looks them up
here. Every IPv4 list must list 127.0.0.2 and must not list 127.0.0.1 (RFC 5782
5); a list that fails those test points is dead, wildcarded or behind a rewriting
resolver, and its answers are unknown.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace

UCEPROTECT_LOOKUP = "http://www.uceprotect.net/en/rblcheck.php?ipr={ip}"
NO_PAID_DELISTING = (
    "Do not pay for delisting (neither UCEPROTECT express delisting nor "
    "ips.whitelisted.org): fix the cause and wait."
)

# Resolvers that blocklists refuse or rate-limit (answers 127.255.255.254 or none).
PUBLIC_RESOLVERS = frozenset({
    "8.8.8.8", "8.8.4.4", "2001:4860:4860::8888", "2001:4860:4860::8844",
    "1.1.1.1", "1.0.0.1", "2606:4700:4700::1111", "2606:4700:4700::1001",
    "9.9.9.9", "149.112.112.112", "2620:fe::fe", "2620:fe::9",
    "208.67.222.222", "208.67.220.220", "94.140.14.14", "94.140.15.15",
    "76.76.2.0", "76.76.10.0", "185.228.168.9", "64.6.64.6", "64.6.65.6",
})


@dataclass(frozen=True)
class Blocklist:
    """One DNSBL zone and what its answers mean."""

    zone: str
    name: str
    check_id: str  # report id: uceprotect.l1 .. l3, or dnsbl.<zone>
    listed_status: str  # report status while listed: critical | warning | info
    impact: str  # one line: what a listing does to delivery
    delisting: str  # one line: what to do, never "pay"
    codes: dict[str, str] = field(default_factory=dict)  # 127.0.0.x -> meaning
    refusals: dict[str, str] = field(default_factory=dict)  # code -> why it is not an answer
    ipv6: bool = False
    level: str = ""  # UCEPROTECT level: l1 | l2 | l3
    lookup_url: str = ""  # with {ip}
    test_listed: str = "127.0.0.2"
    test_clean: str = "127.0.0.1"
    query_zone: str = ""  # zone actually queried (Spamhaus DQS); "" = zone

    @property
    def qzone(self) -> str:
        return self.query_zone or self.zone

    def meaning(self, code: str) -> str:
        """What one return code says; unknown codes of a listing are still a listing."""
        return self.codes.get(code, "listed")


_UCE_DELIST = (
    "UCEPROTECT L1 expires 7 days after the last spamtrap hit; every new hit extends it. "
    "Find and stop the source (web forms, compromised accounts), then wait. "
    + NO_PAID_DELISTING
)

UCEPROTECT: tuple[Blocklist, ...] = (
    Blocklist(
        zone="dnsbl-1.uceprotect.net", name="UCEPROTECT Level 1", check_id="uceprotect.l1",
        listed_status="critical", level="l1", lookup_url=UCEPROTECT_LOOKUP,
        impact="this IP sent to spamtraps: mail is rejected or junked by many receivers",
        delisting=_UCE_DELIST, codes={"127.0.0.2": "IP listed (spamtrap hits)"},
    ),
    Blocklist(
        zone="dnsbl-2.uceprotect.net", name="UCEPROTECT Level 2", check_id="uceprotect.l2",
        listed_status="warning", level="l2", lookup_url=UCEPROTECT_LOOKUP,
        impact="the allocation around this IP hosts L1-listed abusers; some receivers block it",
        delisting=(
            "L2 lists the provider's allocation (L1 impacts of neighbours over 7 days). "
            "Keep this IP clean (it must not be L1), ask the provider to act on its abusers, "
            "or move to a cleaner range. " + NO_PAID_DELISTING
        ),
        codes={"127.0.0.2": "allocation listed"},
    ),
    Blocklist(
        zone="dnsbl-3.uceprotect.net", name="UCEPROTECT Level 3", check_id="uceprotect.l3",
        listed_status="info", level="l3", lookup_url=UCEPROTECT_LOOKUP,
        impact="the whole ASN is listed; almost no receiver uses L3 to block",
        delisting=(
            "L3 is the ASN's spam score; nothing to do on this host. Watch for L2. "
            + NO_PAID_DELISTING
        ),
        codes={"127.0.0.2": "ASN listed"},
    ),
)

SPAMHAUS_REFUSALS = {
    "127.255.255.252": "typing error in the DNSBL name",
    "127.255.255.254": "query through a public/open resolver (refused)",
    "127.255.255.255": "excessive number of queries (refused)",
}

SPAMHAUS_ZEN = Blocklist(
    zone="zen.spamhaus.org", name="Spamhaus ZEN", check_id="dnsbl.zen.spamhaus.org",
    listed_status="critical", ipv6=True,
    impact="most large receivers reject mail from IPs on Spamhaus ZEN",
    delisting=(
        "Look the IP up at https://check.spamhaus.org/ , fix the cause it names, then "
        "request removal there (free)."
    ),
    codes={
        "127.0.0.2": "SBL: Spamhaus SBL data (spam source or operation)",
        "127.0.0.3": "SBL CSS: snowshoe / low-reputation sending",
        "127.0.0.4": "XBL: exploited host (CBL, botnet, open proxy)",
        "127.0.0.5": "XBL: exploited host",
        "127.0.0.6": "XBL: exploited host",
        "127.0.0.7": "XBL: exploited host",
        "127.0.0.9": "SBL DROP/EDROP: hijacked or rogue network",
        "127.0.0.10": "PBL: ISP says this range must not send mail directly",
        "127.0.0.11": "PBL: Spamhaus says this range must not send mail directly",
    },
    refusals=SPAMHAUS_REFUSALS,
)


def _generic(zone: str, name: str, impact: str, delisting: str, ipv6: bool = False,
             codes: dict[str, str] | None = None, status: str = "warning") -> Blocklist:
    return Blocklist(zone=zone, name=name, check_id=f"dnsbl.{zone}", listed_status=status,
                     impact=impact, delisting=delisting, ipv6=ipv6, codes=codes or {})


# The default live lists. Never SORBS (shut down June 2024); Mailspike only `bl.`.
DEFAULT_LISTS: tuple[Blocklist, ...] = (
    *UCEPROTECT,
    SPAMHAUS_ZEN,
    _generic("b.barracudacentral.org", "Barracuda Reputation Block List",
             "Barracuda appliances and many hosted filters reject listed IPs",
             "Request removal at https://www.barracudacentral.org/rbl/removal-request "
             "after fixing the cause (free).", status="critical"),
    _generic("bl.spamcop.net", "SpamCop", "some receivers reject; listings expire "
             "24 h after the last report", "Stop the spam; SpamCop delists automatically."),
    _generic("psbl.surriel.com", "Passive Spam Block List", "some receivers reject",
             "Remove the IP yourself at https://psbl.org/ after fixing the cause."),
    _generic("bl.mailspike.net", "Mailspike blocklist", "some receivers reject",
             "Fix the cause; Mailspike reputation recovers as clean mail is seen."),
    _generic("all.s5h.net", "s5h.net", "a few receivers reject",
             "Request removal at https://www.s5h.net/rbl after fixing the cause.",
             ipv6=True),
    _generic("all.spamrats.com", "SpamRATS", "some receivers reject",
             "Check and remove at https://www.spamrats.com/lookup.php (free); fix PTR first.",
             codes={"127.0.0.36": "RATS-Dyna: generic/dynamic rDNS",
                    "127.0.0.37": "RATS-NoPtr: no PTR record",
                    "127.0.0.38": "RATS-Spam: spam source",
                    "127.0.0.43": "RATS-Auth: authentication attacks"}),
    _generic("ix.dnsbl.manitu.net", "NiX Spam", "German receivers often reject",
             "Listings expire after 12 hours without new spam."),
    _generic("truncate.gbudb.net", "GBUdb Truncate", "some receivers reject",
             "Listings fade as clean mail is seen; fix the cause."),
    _generic("dnsbl.dronebl.org", "DroneBL", "some receivers reject (botnets, proxies)",
             "Request removal at https://dronebl.org/lookup after cleaning the host.",
             ipv6=True),
)


def lists_for(add: list[str] | tuple[str, ...] = (), remove: list[str] | tuple[str, ...] = (),
              spamhaus_dqs_key: str = "") -> list[Blocklist]:
    """The configured lists: defaults minus `remove`, plus generic entries for `add`."""
    drop = {z.lower().strip(".") for z in remove}
    out = [bl for bl in DEFAULT_LISTS if bl.zone not in drop]
    known = {bl.zone for bl in out}
    for z in add:
        zone = z.lower().strip(".")
        if zone not in known and zone not in drop:
            out.append(_generic(zone, zone, "receivers using this list reject",
                                "See the list operator's lookup page."))
            known.add(zone)
    if spamhaus_dqs_key:
        out = [replace(bl, query_zone=f"{spamhaus_dqs_key}.zen.dq.spamhaus.net")
               if bl.zone == SPAMHAUS_ZEN.zone else bl for bl in out]
    return out


def by_zone(zone: str) -> Blocklist | None:
    for bl in DEFAULT_LISTS:
        if bl.zone == zone:
            return bl
    return None


# --- UCEPROTECT TXT texts (matched loosely: the wording changes) -------------

_NET = re.compile(r"\bnet\s+(?P<net>[0-9a-f:.]+/\d+)", re.I)
_ABUSERS = re.compile(r"(?P<n>\d+)\s+abusers?\b", re.I)
_SCORE = re.compile(r"spam\s*score\s+of\s+(?P<n>\d+)", re.I)
_AS = re.compile(r"\bAS\s?(?P<asn>\d+)\b")
_ISP_L2 = re.compile(r"hosted\s+by\s+(?P<isp>.+?)\s*/\s*AS\s?\d+", re.I)
_ISP_L3 = re.compile(r"your\s+isp\s+(?P<isp>.+?)\s*/\s*AS\s?\d+", re.I)


def parse_uceprotect_txt(text: str) -> dict[str, str | int]:
    """Net, AS, ISP, abuser count and spam score from a UCEPROTECT TXT answer."""
    out: dict[str, str | int] = {}
    if m := _NET.search(text):
        out["net"] = m.group("net")
        out["prefix"] = int(m.group("net").rsplit("/", 1)[1])
    if m := _AS.search(text):
        out["asn"] = int(m.group("asn"))
    if m := (_ISP_L2.search(text) or _ISP_L3.search(text)):
        out["isp"] = m.group("isp").strip().rstrip(",")
    if m := _SCORE.search(text):
        out["spamscore"] = int(m.group("n"))
    if m := _ABUSERS.search(text):
        out["abusers"] = int(m.group("n"))
    return out
