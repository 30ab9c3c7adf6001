"""Fetch and parse a domain's DMARC record (RFC 7489 6.3, 6.6.3).

`lookup` asks `_dmarc.<From domain>`, then, when nothing is published there,
`_dmarc.<organizational domain>`, whose `sp=` (else `p=`) then applies. A DNS
failure is the state `temperror` (receivers defer or skip DMARC, they do not
treat it as "no record"); more than one DMARC record, or none, is `none`.
Shared by the milter and the self-check; DNS only through the Resolver.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import lru_cache
from typing import Literal

from postwarden.dns import Budget, Resolver
from postwarden.orgdomain import normalize, org_domain

Status = Literal["ok", "none", "temperror"]
POLICIES = ("none", "quarantine", "reject")


class RecordError(ValueError):
    """The TXT record is not a usable DMARC record; the text says why."""


@dataclass(frozen=True)
class DmarcRecord:
    p: str
    sp: str = ""  # "" = not given (the p= value applies to subdomains)
    adkim: str = "r"
    aspf: str = "r"
    pct: int = 100
    rua: tuple[str, ...] = ()
    raw: str = ""
    warnings: tuple[str, ...] = ()  # tags that were ignored, in words


@dataclass(frozen=True)
class DmarcLookup:
    """Where the record came from and what it says for one From domain."""

    status: Status
    domain: str  # the From domain asked about
    record: DmarcRecord | None = None
    found_at: str = ""  # the domain whose _dmarc name held the record
    error: str = ""
    notes: tuple[str, ...] = field(default=())  # e.g. "two DMARC records at _dmarc.x"

    @property
    def inherited(self) -> bool:
        """The record is the organizational domain's, not the From domain's own."""
        return bool(self.found_at) and self.found_at != self.domain

    @property
    def policy(self) -> str:
        """The policy a receiver applies to this From domain: `sp=` when inherited."""
        if self.record is None:
            return "none"
        if self.inherited and self.record.sp:
            return self.record.sp
        return self.record.p


@lru_cache(maxsize=1024)
def parse(text: str) -> DmarcRecord:
    """Parse one TXT string; RecordError if it is not a DMARC record at all.

    Unknown tags and bad optional values are ignored with a warning, as RFC 7489
    6.3 asks; a missing or bad `p=` is `none` when `rua=` is valid (6.6.3),
    otherwise the record is unusable.
    """
    parts = [p.strip() for p in text.split(";")]
    tags: dict[str, str] = {}
    for part in parts:
        if not part:
            continue
        name, eq, value = part.partition("=")
        if not eq:
            raise RecordError(f"tag {part!r} has no '='")
        tags.setdefault(name.strip().lower(), value.strip())
    first = parts[0].replace(" ", "").replace("\t", "") if parts else ""
    if first != "v=DMARC1":
        raise RecordError("does not start with v=DMARC1")
    warnings: list[str] = []
    rua = tuple(u.strip() for u in tags.get("rua", "").split(",") if u.strip())
    p = tags.get("p", "").lower()
    if p not in POLICIES:
        if rua:
            warnings.append(f"p={p or '(missing)'} is not valid; treated as p=none")
            p = "none"
        else:
            raise RecordError(f"p={p or '(missing)'} must be none, quarantine or reject")
    sp = tags.get("sp", "").lower()
    if sp and sp not in POLICIES:
        warnings.append(f"sp={sp} ignored")
        sp = ""
    adkim = tags.get("adkim", "r").lower()
    aspf = tags.get("aspf", "r").lower()
    if adkim not in ("r", "s"):
        warnings.append(f"adkim={adkim} ignored")
        adkim = "r"
    if aspf not in ("r", "s"):
        warnings.append(f"aspf={aspf} ignored")
        aspf = "r"
    pct = 100
    if "pct" in tags:
        try:
            pct = int(tags["pct"])
        except ValueError:
            pct = -1
        if not 0 <= pct <= 100:
            warnings.append(f"pct={tags['pct']} ignored")
            pct = 100
    return DmarcRecord(p, sp, adkim, aspf, pct, rua, text, tuple(warnings))


def _at(resolver: Resolver, domain: str, budget: Budget | None
        ) -> tuple[Status, DmarcRecord | None, str, tuple[str, ...]]:
    answer = resolver.txt(f"_dmarc.{domain}", budget)
    if answer.failed:
        return "temperror", None, answer.error, ()
    if not answer.ok:
        return "none", None, "", ()
    candidates = [r for r in answer.records if r.lstrip().lower().startswith("v=dmarc1")]
    if not candidates:
        return "none", None, "", ()
    if len(candidates) > 1:
        return "none", None, "", (f"{len(candidates)} DMARC records at _dmarc.{domain}: "
                                  "receivers ignore them all; keep one",)
    try:
        return "ok", parse(candidates[0]), "", ()
    except RecordError as e:
        return "none", None, "", (f"the record at _dmarc.{domain} is unusable: {e}",)


def lookup(resolver: Resolver, domain: str, budget: Budget | None = None) -> DmarcLookup:
    """The DMARC record that applies to `domain` (From domain), with fallback."""
    d = normalize(domain)
    if not d:
        return DmarcLookup("none", d, error="no domain")
    status, record, error, notes = _at(resolver, d, budget)
    if status == "temperror":
        return DmarcLookup("temperror", d, error=error)
    if record is not None:
        return DmarcLookup("ok", d, record, d, notes=notes)
    org = org_domain(d)
    if org == d:
        return DmarcLookup("none", d, notes=notes)
    ostatus, orecord, oerror, onotes = _at(resolver, org, budget)
    if ostatus == "temperror":
        return DmarcLookup("temperror", d, error=oerror, notes=notes)
    if orecord is not None:
        return DmarcLookup("ok", d, orecord, org, notes=notes + onotes)
    return DmarcLookup("none", d, notes=notes + onotes)
