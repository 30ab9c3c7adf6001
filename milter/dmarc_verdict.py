"""The one DMARC verdict: aligned SPF pass or aligned DKIM pass, both generations.

`judge(ev)` is the receiver's DMARC result for a message's evidence; the DMARC
check turns it into findings, the summary line prints it, the signer and the SPF
check ask `dkim_passes` (the same alignment rule, one From domain). Each
generation judges alignment its own way: RFC 7489 by the Public Suffix List, RFC
9989 by the DNS tree walk, which is walked only when relaxed alignment of two
different names needs it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from postwarden.dmarc_discovery import Policy
from postwarden.milter.auth_results import DkimSignature, SpfOutcome
from postwarden.orgdomain import aligned

if TYPE_CHECKING:
    from postwarden.milter.evidence import Evidence

_RANK = {"pass": 0, "none": 1, "temperror": 2, "fail": 3}
_POLICY_RANK = {"none": 0, "quarantine": 1, "reject": 2}

Align = Callable[[str, str], "bool | None"]  # (identifier, mode) -> aligned, None unknown


@dataclass(frozen=True, slots=True)
class Outcome:
    """One generation's verdict for one From domain."""

    policy: Policy
    result: str  # pass | fail | none (no DMARC) | temperror
    passed: tuple[str, ...] = ()
    error: str = ""

    @property
    def key(self) -> tuple[str, ...]:
        if self.result == "fail":
            return (self.result, self.policy.worst, self.policy.least)
        return (self.result,)

    @property
    def rank(self) -> tuple[int, int, int]:
        p = self.policy
        if self.result != "fail":
            return (_RANK[self.result], 0, 0)
        return (_RANK["fail"], _POLICY_RANK[p.worst], _POLICY_RANK[p.least])

    def describe(self) -> str:
        p = self.policy
        if self.result == "fail":
            return f"fails {p.describe()}"
        if self.result == "pass":
            return f"passes ({', '.join(self.passed)}) {p.describe()}"
        if self.result == "temperror":
            return f"unknown ({self.error or p.error})"
        return p.describe()


@dataclass(frozen=True, slots=True)
class DomainVerdict:
    """Both generations for one From domain, and what a receiver may do.

    kind: `agree`; `one_unknown` (one generation could not be evaluated: a known
    fail stands, anything else is unknown, never a pass); `differ`.
    """

    domain: str
    rfc7489: Outcome
    rfc9989: Outcome
    strict: Outcome
    kind: str


@dataclass(frozen=True, slots=True)
class DmarcVerdict:
    """The message's DMARC result: the worst domain's, and which generation says it."""

    domains: tuple[DomainVerdict, ...]
    result: str  # pass | fail | none | temperror ("none" without a From domain)
    generation: str  # both | 7489 | 9989

    def of(self, domain: str) -> DomainVerdict | None:
        return next((d for d in self.domains if d.domain == domain), None)


def aligned_passes(spf: SpfOutcome | None, sigs: tuple[DkimSignature, ...] | list[DkimSignature],
                   align: Align, adkim: str, aspf: str) -> tuple[list[str], bool]:
    """The identifiers that give an aligned pass (`spf:d`, `dkim:d`), and whether one
    that might have is unknown (a DNS walk failed, an aligned key not fetched)."""
    passed: list[str] = []
    unknown = False
    # RFC 7489 3.1.2: for the null sender the SPF identity is the HELO name.
    if spf is not None and spf.result == "pass":
        a = align(spf.domain, aspf)
        unknown |= a is None
        if a:
            passed.append(f"spf:{spf.domain}")
    for s in sigs:
        if not (s.counts or s.status == "temperror"):
            continue
        a = align(s.domain, adkim)
        if a is None or (a and not s.counts):  # walk failed, or an aligned key unknown
            unknown = True
        elif a:
            passed.append(f"dkim:{s.domain}")
    return passed, unknown


def dkim_passes(ev: Evidence, domain: str) -> bool:
    """Is there an aligned DKIM pass for `domain` (its adkim, relaxed without a record)?"""
    mode = ev.alignment_mode(domain, "adkim")
    return any(s.counts and aligned(s.domain, domain, mode) for s in ev.dkim())


def verdict(ev: Evidence, domain: str, policy: Policy) -> Outcome:
    """One generation's DMARC result for `domain` from the SPF and DKIM evidence."""
    if policy.status != "ok" or policy.record is None:
        return Outcome(policy, policy.status if policy.status == "temperror" else "none")
    rec = policy.record

    def align(ident: str, mode: str) -> bool | None:
        if policy.generation == "7489":
            return aligned(ident, domain, mode)
        return ev.aligned_9989(ident, domain, mode)

    spf = ev.spf()
    passed, unknown = aligned_passes(spf, ev.dkim(), align, rec.adkim, rec.aspf)
    if passed:
        return Outcome(policy, "pass", tuple(passed))
    if unknown or (spf is not None and spf.result == "temperror"):
        return Outcome(policy, "temperror", error="SPF, DKIM or the DNS tree walk could "
                       "not be completed in time")
    return Outcome(policy, "fail")


def _only(domain: str, spf: SpfOutcome | None, sigs: tuple[DkimSignature, ...]) -> bool:
    """Is every authenticated identifier the From domain itself (as written)?"""
    return (spf is None or spf.domain == domain) and all(s.domain == domain for s in sigs)


def judge_domain(ev: Evidence, domain: str) -> DomainVerdict:
    look = ev.dmarc_policy(domain)
    a = verdict(ev, domain, look.rfc7489)
    # same policy read and only identities equal to the From domain: the tree walk
    # cannot change alignment, so RFC 9989's verdict is RFC 7489's
    same = look.agree and (a.result in ("none", "temperror")
                           or _only(domain, ev.spf(), ev.dkim()))
    b = a if same else verdict(ev, domain, look.rfc9989)
    if b is a or a.key == b.key:
        return DomainVerdict(domain, a, b, a, "agree")
    if "temperror" in (a.result, b.result):
        known, unknown = (b, a) if a.result == "temperror" else (a, b)
        strict = known if known.result == "fail" else unknown
        return DomainVerdict(domain, a, b, strict, "one_unknown")
    return DomainVerdict(domain, a, b, max((a, b), key=lambda o: o.rank), "differ")


def judge(ev: Evidence) -> DmarcVerdict:
    """The receiver's DMARC verdict for every From domain of the message."""
    domains = tuple(judge_domain(ev, d) for d in ev.from_domains())
    if not domains:
        return DmarcVerdict((), "none", "both")
    worst = max(domains, key=lambda d: d.strict.rank)  # the first of equal ranks
    gen = "both" if worst.kind == "agree" else worst.strict.policy.generation
    return DmarcVerdict(domains, worst.strict.result, gen)
