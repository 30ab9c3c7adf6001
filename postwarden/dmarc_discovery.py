"""DMARC policy discovery for one Author Domain, by both generations (one function).

`discover()` answers what an RFC 7489 receiver and what an RFC 9989 receiver apply
to mail From a domain; the milter and the self-check both call it. All DNS goes
through the one Resolver (its TTL cache makes repeated names free), bounded by the
caller's Budget. A DNS failure that the answer depends on is `temperror`, never
"no record".

RFC 7489 6.6.3, step by step: ask `_dmarc.<From domain>`; keep the v=DMARC1
records; only when none is left, ask `_dmarc.<organizational domain>` (PSL); more
than one record, or none, is no DMARC; a record without a valid `p=` or with an
invalid `sp=` is p=none when its `rua=` is valid, otherwise no DMARC. A record
found at the organizational domain applies its `sp=` (else `p=`). `pct` < 100
samples the failing mail; the rest gets the next lower policy.

RFC 9989 4.10: the record at the Author Domain, else a DNS tree walk towards the
root (at most eight names: a name of eight or more labels jumps to its 7-label
suffix) that stops at a `psd=n`/`psd=y` record; several records at one name are
discarded and the walk goes on. The Organizational Domain is the first `psd=n`
name, else the name one label below a `psd=y` record, else the record with the
fewest labels; the policy is the Organizational Domain's record, else the Public
Suffix Domain's. A subdomain gets `sp=`, or `np=` when it does not exist
(NXDOMAIN, RFC 8020: asked only when `_dmarc.<domain>` was NXDOMAIN and an `np=`
would change the answer). `t=y` lowers the policy one step.
"""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from postwarden.dmarc_record import (
    DmarcRecord,
    Generation,
    Reading,
    RecordError,
    is_dmarc,
    lower,
    parse,
)
from postwarden.dns import Answer as DnsAnswer
from postwarden.dns import Budget, Resolver
from postwarden.orgdomain import name, org_domain

Status = Literal["ok", "none", "temperror"]
MAX_WALK = 8  # RFC 9989 4.10: at most eight queries per tree walk
CACHE_SIZE = 4096


class Dns(Protocol):
    """What discovery needs of the Resolver (so a recording wrapper can stand in)."""

    def query(self, name: str, rdtype: str, budget: Budget | None = None) -> DnsAnswer: ...

    def txt(self, name: str, budget: Budget | None = None) -> DnsAnswer: ...


@dataclass(frozen=True)
class Answer:
    """The DMARC records at one `_dmarc.<domain>` name."""

    domain: str
    records: tuple[DmarcRecord, ...] = ()
    failed: bool = False
    nxdomain: bool = False  # the _dmarc name does not exist
    error: str = ""

    @property
    def one(self) -> DmarcRecord | None:
        """The record, when exactly one v=DMARC1 record is there (else discarded)."""
        return self.records[0] if len(self.records) == 1 else None

    def why_none(self) -> str:
        if len(self.records) > 1:
            return (f"{len(self.records)} DMARC records at _dmarc.{self.domain}: receivers "
                    "discard them all; keep one")
        return f"no DMARC record at _dmarc.{self.domain}"


def ask(resolver: Dns, domain: str, budget: Budget | None) -> Answer:
    """One `_dmarc` query (cached by the resolver), v=DMARC1 records parsed."""
    ans = resolver.txt(f"_dmarc.{domain}", budget)
    if ans.failed:
        return Answer(domain, failed=True, error=ans.error)
    recs = []
    for text in ans.records if ans.ok else ():
        if is_dmarc(text):
            try:
                recs.append(parse(text))
            except RecordError:  # pragma: no cover - is_dmarc said yes
                continue
    return Answer(domain, tuple(recs), nxdomain=ans.status == "nxdomain")


@dataclass(frozen=True)
class Policy:
    """What one generation of receivers applies to mail From `domain`."""

    generation: Generation
    status: Status
    domain: str
    record: DmarcRecord | None = None
    reading: Reading | None = None
    found_at: str = ""  # whose _dmarc name held the record applied
    tag: str = ""  # p | sp | np: the tag whose policy applies
    policy: str = ""  # the requested policy ("" when status is not ok)
    worst: str = ""  # what a receiver may do to failing mail, at most
    least: str = ""  # ... and at least (pct= sampling, t=y)
    org_domain: str = ""  # "" when not determined
    notes: tuple[str, ...] = ()
    error: str = ""

    @property
    def inherited(self) -> bool:
        return bool(self.found_at) and self.found_at != self.domain

    @property
    def label(self) -> str:
        return f"RFC {self.generation}"

    def describe(self) -> str:
        """One phrase: what this generation applies and from where."""
        if self.status == "temperror":
            return f"unknown ({self.error})"
        if self.status == "none":
            return "no DMARC" + (f" ({self.notes[0]})" if self.notes else "")
        where = f" of {self.found_at}" if self.inherited else ""
        text = f"{self.tag}={self.policy}{where}"
        pct = self.record.pct if self.record else 100
        if self.generation == "7489" and pct == 0:
            text += f", pct=0: {self.worst} applied"
        elif self.generation == "7489" and pct < 100:
            text += (f", pct={pct}: {self.worst} for {pct}% of failing mail, "
                     f"{self.least} for the rest")
        elif self.worst != self.policy:
            text += f", t=y: {self.worst} applied"
        return text

    def to_dict(self) -> dict[str, Any]:
        return {"status": self.status, "found_at": self.found_at, "tag": self.tag,
                "policy": self.policy, "worst": self.worst, "least": self.least,
                "org_domain": self.org_domain, "notes": list(self.notes),
                "error": self.error, "record": self.record.raw if self.record else ""}


@dataclass(frozen=True)
class DmarcLookup:
    """Both generations' answers for one From domain."""

    domain: str  # A-label form; "" when the name is not a valid domain
    rfc7489: Policy
    rfc9989: Policy
    error: str = ""

    def of(self, gen: Generation) -> Policy:
        return self.rfc7489 if gen == "7489" else self.rfc9989

    @property
    def record(self) -> DmarcRecord | None:
        """The record an RFC 7489 receiver applies, else an RFC 9989 one's."""
        return self.rfc7489.record or self.rfc9989.record

    @property
    def agree(self) -> bool:
        a, b = self.rfc7489, self.rfc9989
        return (a.status, a.found_at, a.tag, a.policy, a.worst, a.least) == \
            (b.status, b.found_at, b.tag, b.policy, b.worst, b.least)


def _applied(gen: Generation, domain: str, rec: DmarcRecord, reading: Reading, at: str,
             exists: bool | None, org: str, notes: tuple[str, ...]) -> Policy:
    if at == domain:
        tag, policy = "p", reading.p
    elif gen == "9989" and reading.np and exists is False:
        tag, policy = "np", reading.np
    elif reading.sp:
        tag, policy = "sp", reading.sp
    else:
        tag, policy = "p", reading.p
    worst = least = policy
    if gen == "7489" and rec.pct < 100:
        least = lower(policy)
        if rec.pct == 0:
            worst = least
    if gen == "9989" and rec.t == "y":
        worst = least = lower(policy)
    extra = (reading.note,) if reading.note else ()
    return Policy(gen, "ok", domain, rec, reading, at, tag, policy, worst, least, org,
                  notes + extra)


def _use(gen: Generation, domain: str, rec: DmarcRecord, at: str, exists: bool | None,
         org: str, notes: tuple[str, ...] = ()) -> Policy:
    reading = rec.reading(gen)
    if not reading.usable:
        where = "the From domain's own" if at == domain else f"{at}'s"
        return Policy(gen, "none", domain, rec, reading, at, org_domain=org,
                      notes=(f"{where} record at _dmarc.{at} is unusable: {reading.note}",
                             *notes))
    return _applied(gen, domain, rec, reading, at, exists, org, notes)


def discover_7489(resolver: Dns, domain: str, budget: Budget | None) -> Policy:
    """RFC 7489 6.6.3 steps 1-6 for one (normalised) From domain."""
    first = ask(resolver, domain, budget)
    if first.failed:
        return Policy("7489", "temperror", domain, error=first.error)
    org = org_domain(domain)
    if first.records:  # steps 2 and 5: a v=DMARC1 answer is final, usable or not
        rec = first.one
        if rec is None:
            why = first.why_none()
            if org != domain:
                why = why.replace(" all;", f" all and do not fall back to {org};")
            return Policy("7489", "none", domain, org_domain=org, notes=(why,))
        return _use("7489", domain, rec, domain, True, org)
    if org == domain:
        return Policy("7489", "none", domain, org_domain=org, notes=(first.why_none(),))
    second = ask(resolver, org, budget)  # step 3: only when the first set is empty
    if second.failed:
        return Policy("7489", "temperror", domain, org_domain=org, error=second.error)
    rec = second.one
    if rec is None:
        return Policy("7489", "none", domain, org_domain=org,
                      notes=(first.why_none(), second.why_none()))
    return _use("7489", domain, rec, org, None, org)


def walk_names(domain: str) -> list[str]:
    """The names a RFC 9989 tree walk asks, Author Domain first (4.10 steps 3-7)."""
    labels = domain.split(".")
    out = [domain]
    if len(labels) >= MAX_WALK:
        labels = labels[-(MAX_WALK - 1):]
        out.append(".".join(labels))
    while len(labels) > 1:
        labels = labels[1:]
        out.append(".".join(labels))
    return [n for i, n in enumerate(out) if n and n not in out[:i]]


@dataclass(frozen=True)
class Walk:
    """The answers of one tree walk, longest name first, up to the psd= stop."""

    start: str
    answers: tuple[Answer, ...]
    error: str = ""  # a name the result depends on did not answer

    @property
    def org_domain(self) -> str:
        """RFC 9989 4.10.2: psd=n name, else one below psd=y, else fewest labels."""
        found = [(a.domain, a.one) for a in self.answers if a.one is not None]
        for domain, rec in found:
            if rec.psd == "n":
                return domain
            if rec.psd == "y" and domain != self.start:
                return _one_below(self.start, domain)
        return found[-1][0] if found else self.start

    def psd_record(self) -> tuple[str, DmarcRecord] | None:
        for a in self.answers:
            if a.one is not None and a.one.psd == "y":
                return a.domain, a.one
        return None


def _one_below(start: str, parent: str) -> str:
    labels = start.split(".")
    return ".".join(labels[-(len(parent.split(".")) + 1):])


def tree_walk(resolver: Dns, domain: str, budget: Budget | None,
              first: Answer | None = None) -> Walk:
    answers: list[Answer] = []
    for n in walk_names(domain):
        a = first if (first is not None and n == domain) else ask(resolver, n, budget)
        if a.failed:
            return Walk(domain, tuple(answers), f"_dmarc.{n}: {a.error}")
        answers.append(a)
        if a.one is not None and a.one.psd in ("n", "y"):
            break  # 4.10 steps 2 and 6
    return Walk(domain, tuple(answers))


def org_domain_9989(resolver: Resolver, domain: str,
                    budget: Budget | None) -> tuple[str, str]:
    """(Organizational Domain by the DNS tree walk, "") or ("", why unknown)."""
    d = name(domain).ascii
    if not d:
        return "", f"{domain!r} is not a domain name"
    hit = _cached(resolver, "org:" + d, budget)
    if isinstance(hit, tuple):
        return str(hit[0]), str(hit[1])
    rec = _Recording(resolver)
    w = tree_walk(rec, d, budget)
    found = ("", w.error) if w.error else (w.org_domain, "")
    _remember(resolver, "org:" + d, tuple(rec.used), found)
    return found


def _exists(resolver: Dns, domain: str, first: Answer,
            budget: Budget | None) -> bool | None:
    """Does the From domain exist (RFC 8020)? None when the DNS did not say."""
    if not first.nxdomain:
        return True  # _dmarc.<domain> answered or is an empty non-terminal
    ans = resolver.query(domain, "A", budget)
    return None if ans.failed else ans.status != "nxdomain"


def discover_9989(resolver: Dns, domain: str, budget: Budget | None) -> Policy:
    """RFC 9989 4.10.1 for one (normalised) Author Domain."""
    first = ask(resolver, domain, budget)
    if first.failed:
        return Policy("9989", "temperror", domain, error=first.error)
    own = first.one
    if own is not None:
        org = domain if own.psd in ("n", "y") else ""
        return _use("9989", domain, own, domain, True, org)
    walk = tree_walk(resolver, domain, budget, first)
    notes = (first.why_none(),)
    if walk.error:
        return Policy("9989", "temperror", domain, error=walk.error, notes=notes)
    org = walk.org_domain
    at_org = next((a.one for a in walk.answers if a.domain == org and a.one), None)
    chosen = (org, at_org) if at_org is not None else walk.psd_record()
    if chosen is None:
        return Policy("9989", "none", domain, org_domain=org,
                      notes=(*notes, "no DMARC record on the way to the root"))
    at, rec = chosen
    exists: bool | None = True
    if rec.reading("9989").np and rec.reading("9989").np != (
            rec.reading("9989").sp or rec.reading("9989").p):
        exists = _exists(resolver, domain, first, budget)
        if exists is None:
            return Policy("9989", "temperror", domain, org_domain=org, notes=notes,
                          error=f"could not tell whether {domain} exists (np= of {at})")
    return _use("9989", domain, rec, at, exists, org, notes)


def discover(resolver: Resolver, domain: str, budget: Budget | None = None) -> DmarcLookup:
    """The DMARC policy both generations apply to mail From `domain`."""
    n = name(domain)
    if not n.ok:
        note = f"the From domain is not a valid domain name ({n.error}): no DMARC"
        return DmarcLookup("", Policy("7489", "none", "", notes=(note,)),
                           Policy("9989", "none", "", notes=(note,)), error=n.error)
    d = n.ascii
    hit = _cached(resolver, d, budget)
    if isinstance(hit, DmarcLookup):
        return hit
    rec = _Recording(resolver)
    look = DmarcLookup(d, discover_7489(rec, d, budget), discover_9989(rec, d, budget))
    _remember(resolver, d, tuple(rec.used), look)
    return look


# --- the derived answer, kept while every DNS answer it came from is the resolver's ----
# The Resolver's TTL cache hands out the same Answer object until it expires, so a
# lookup is reused exactly as long as all its answers are fresh: the hot path asks
# the resolver once (a cache hit) instead of parsing and walking again.

Deps = tuple[tuple[str, str, DnsAnswer], ...]


class _Recording:
    def __init__(self, resolver: Dns) -> None:
        self.resolver = resolver
        self.used: list[tuple[str, str, DnsAnswer]] = []
        self._seen: dict[tuple[str, str], DnsAnswer] = {}

    def query(self, name: str, rdtype: str, budget: Budget | None = None) -> DnsAnswer:
        key = (name, rdtype)
        if key not in self._seen:  # both generations read one answer per name
            self._seen[key] = self.resolver.query(name, rdtype, budget)
            self.used.append((name, rdtype, self._seen[key]))
        return self._seen[key]

    def txt(self, name: str, budget: Budget | None = None) -> DnsAnswer:
        return self.query(name, "TXT", budget)


_lock = threading.Lock()
Derived = Any  # a DmarcLookup, or an (org domain, error) pair under "org:<domain>"
_cache: weakref.WeakKeyDictionary[Any, OrderedDict[str, tuple[Deps, Derived]]] = \
    weakref.WeakKeyDictionary()


def _cached(resolver: Resolver, domain: str, budget: Budget | None) -> Derived:
    with _lock:
        per = _cache.get(resolver)
        entry = per.get(domain) if per is not None else None
    if entry is None:
        return None
    deps, look = entry
    for qname, rdtype, ans in deps:
        if resolver.query(qname, rdtype, budget) is not ans:
            return None
    return look


def _remember(resolver: Resolver, domain: str, deps: Deps, look: Derived) -> None:
    if any(ans.failed for _, _, ans in deps):
        return  # a failure is never kept: the resolver does not cache it either
    with _lock:
        per = _cache.setdefault(resolver, OrderedDict())
        per[domain] = (deps, look)
        per.move_to_end(domain)
        while len(per) > CACHE_SIZE:
            per.popitem(last=False)
