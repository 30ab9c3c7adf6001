"""The receiver's DMARC verdict (aligned SPF pass or aligned DKIM pass), both generations.

Runs after the DKIM and SPF checks and reads their results from ctx.memo; the
From domain's policy is discovered once per message for RFC 7489 and RFC 9989
receivers (postwarden.dmarc_discovery), and each generation judges alignment its
own way (Public Suffix List / DNS tree walk, the walk only when relaxed alignment
of two different names needs it).

When both generations agree: dmarc.fail (data: the published policy; p=reject is
critical, the most severe finding), dmarc.none (no usable DMARC record: the text
says why), dmarc.temperror (record or evidence could not be fetched: no verdict).
When they disagree (a policy at an intermediate label, psd=, np= for a
non-existent subdomain, pct= vs t=, several records at the From domain): one
dmarc.generations_differ naming both outcomes, with the severity of the stricter
one, which is what a receiver may do. When one generation cannot be evaluated
(a DNS failure on the tree walk), the other's fail still stands as dmarc.fail and
anything else is dmarc.temperror. dmarc.no_from and dmarc.multiple_from as before
(receivers reject or junk such mail).
"""

from __future__ import annotations

from dataclasses import dataclass

from postwarden.dmarc_discovery import Policy
from postwarden.findings import Finding, Severity
from postwarden.message import Message
from postwarden.milter.auth_results import (
    DKIM,
    FOREIGN_FIX,
    SPF,
    DkimSignature,
    SpfOutcome,
    aligned_9989,
    dmarc_for,
    from_domains,
    our_domains,
)
from postwarden.milter.pipeline import CheckContext
from postwarden.orgdomain import aligned

_SEVERITY = {"reject": Severity.CRITICAL, "quarantine": Severity.ERROR,
             "none": Severity.WARNING}
_AT_RECEIVER = {
    "reject": "this message will be rejected at the receiver",
    "quarantine": "this message will go to the receiver's spam folder",
    "none": "receivers apply no DMARC policy but count it against the domain's reputation",
}
_RANK = {"pass": 0, "none": 1, "temperror": 2, "fail": 3}
_POLICY_RANK = {"none": 0, "quarantine": 1, "reject": 2}


@dataclass(frozen=True)
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


def verdict(domain: str, policy: Policy, spf: SpfOutcome | None,
            sigs: list[DkimSignature], ctx: CheckContext | None = None) -> Outcome:
    """One generation's DMARC result for `domain` from the SPF and DKIM evidence."""
    if policy.status != "ok" or policy.record is None:
        return Outcome(policy, policy.status if policy.status == "temperror" else "none")
    rec = policy.record

    def align(ident: str, mode: str) -> bool | None:
        if policy.generation == "7489" or ctx is None:
            return aligned(ident, domain, mode)
        return aligned_9989(ctx, ident, domain, mode)

    passed: list[str] = []
    unknown = False
    # RFC 7489 3.1.2: for the null sender the SPF identity is the HELO name.
    if spf is not None and spf.result == "pass":
        a = align(spf.domain, rec.aspf)
        unknown |= a is None
        if a:
            passed.append(f"spf:{spf.domain}")
    for s in sigs:
        if not (s.counts or s.status == "temperror"):
            continue
        a = align(s.domain, rec.adkim)
        if a is None or (a and not s.counts):  # walk failed, or an aligned key unknown
            unknown = True
        elif a:
            passed.append(f"dkim:{s.domain}")
    if passed:
        return Outcome(policy, "pass", tuple(passed))
    if unknown or (spf is not None and spf.result == "temperror"):
        return Outcome(policy, "temperror", error="SPF, DKIM or the DNS tree walk could "
                       "not be completed in time")
    return Outcome(policy, "fail")


def _only(domain: str, spf: SpfOutcome | None, sigs: list[DkimSignature]) -> bool:
    """Is every authenticated identifier the From domain itself (as written)?"""
    return (spf is None or spf.domain == domain) and all(s.domain == domain for s in sigs)


def _fix(domain: str, ours: bool | None) -> str:
    """ours: the domain is one of ours (True), foreign (False), unknown (None)."""
    own = (f"sign it with a key of {domain} ([dkim] sign, or OpenDKIM before postwarden) "
           f"or send it with an envelope sender in {domain} whose SPF covers this host")
    foreign = FOREIGN_FIX
    if ours is None:
        return f"{own}; if {domain} is not yours, {foreign}"
    return own if ours else f"{domain} is not a domain of this host: {foreign}"


def _data(domain: str, o: Outcome) -> dict[str, object]:
    p, rec = o.policy, o.policy.record
    return {"domain": domain, "result": o.result, "policy": p.worst or p.policy,
            "requested": p.policy, "tag": p.tag, "p": rec.p if rec else "",
            "sp": rec.sp if rec else "", "pct": rec.pct if rec else 100,
            "record_at": p.found_at, "adkim": rec.adkim if rec else "r",
            "aspf": rec.aspf if rec else "r"}


def _agreed(domain: str, o: Outcome, ours: set[str], gen: str = "both") -> Finding | None:
    p = o.policy
    if o.result == "temperror":
        return Finding("dmarc.temperror", Severity.WARNING,
                       f"DMARC verdict for {domain} unknown: {o.error or p.error}; check the "
                       "DNS resolver postwarden uses ([dns] nameservers)",
                       {**_data(domain, o), "error": o.error or p.error, "generation": gen})
    if o.result == "none":
        why = "; ".join(p.notes) or "no DMARC record"
        return Finding("dmarc.none", Severity.WARNING,
                       f"no usable DMARC record for the From domain {domain}, receivers "
                       f"apply no DMARC to it ({why}); publish one record \"v=DMARC1; p=none; "
                       f"rua=mailto:dmarc@{domain}\" at _dmarc.{domain}, then move to "
                       "p=quarantine once reports show your mail passes",
                       {"domain": domain, "notes": list(p.notes), "generation": gen})
    if o.result == "fail":
        org_ours = any(aligned(domain, d) for d in ours) if ours else None
        applied, said = p.worst, p.describe()
        how = f"p={applied}" + ("" if said == f"p={applied}" else f" (from {said})")
        return Finding("dmarc.fail", _SEVERITY[applied],
                       f"the From domain {domain} publishes {how} and this message passes "
                       "neither aligned SPF nor aligned DKIM; "
                       f"{_AT_RECEIVER[applied]}: {_fix(domain, org_ours)}",
                       {**_data(domain, o), "generation": gen})
    return None


def _differ(domain: str, a: Outcome, b: Outcome, ours: set[str]) -> Finding:
    strict = max((a, b), key=lambda o: o.rank)
    p = strict.policy
    severity = _SEVERITY[p.worst] if strict.result == "fail" else Severity.WARNING
    tail = ""
    if strict.result == "fail":
        org_ours = any(aligned(domain, d) for d in ours) if ours else None
        tail = (f"; under RFC {p.generation} {_AT_RECEIVER[p.worst]}: "
                f"{_fix(domain, org_ours)}")
    return Finding(
        "dmarc.generations_differ", severity,
        f"DMARC receivers disagree on the From domain {domain}: RFC 7489 {a.describe()}; "
        f"RFC 9989 {b.describe()}{tail}; publish one explicit record at _dmarc.{domain} "
        "so both read the same policy",
        {**_data(domain, strict), "generation": p.generation,
         "rfc7489": {"result": a.result, **a.policy.to_dict()},
         "rfc9989": {"result": b.result, **b.policy.to_dict()}})


def check_dmarc(msg: Message, ctx: CheckContext) -> list[Finding]:
    domains = from_domains(msg)
    if not domains:
        ctx.summary["dmarc"] = "none"
        return [Finding("dmarc.no_from", Severity.ERROR,
                        "the message has no From address; receivers reject or junk it: "
                        "make the sending program set a From header with one address", {})]
    out: list[Finding] = []
    if len(msg.from_addresses) > 1 or len(msg.header_all("From")) > 1:
        out.append(Finding(
            "dmarc.multiple_from", Severity.ERROR,
            f"the message has {len(msg.from_addresses)} From addresses; many receivers "
            "reject such mail (RFC 7489 6.6.1): use one From address and put the others "
            "in Reply-To", {"domains": domains}))
    spf: SpfOutcome | None = ctx.memo.get(SPF)
    sigs: list[DkimSignature] = ctx.memo.get(DKIM, [])
    ours = our_domains(ctx.services.config)
    worst: Outcome | None = None
    gen = "both"
    for domain in domains:
        look = dmarc_for(ctx, domain)
        a = verdict(domain, look.rfc7489, spf, sigs, ctx)
        # same policy read and only identities equal to the From domain: the tree walk
        # cannot change alignment, so RFC 9989's verdict is RFC 7489's
        same = look.agree and (a.result in ("none", "temperror") or _only(domain, spf, sigs))
        b = a if same else verdict(domain, look.rfc9989, spf, sigs, ctx)
        if b is a or a.key == b.key:
            f, strict = _agreed(domain, a, ours), a
        elif "temperror" in (a.result, b.result):
            # one generation could not be evaluated: a known fail still stands (it is
            # what those receivers do); anything else is unknown, never a pass
            known, unknown = (b, a) if a.result == "temperror" else (a, b)
            strict = known if known.result == "fail" else unknown
            f = _agreed(domain, strict, ours, strict.policy.generation)
        else:
            strict = max((a, b), key=lambda o: o.rank)
            f = _differ(domain, a, b, ours)
        if f is not None:
            out.append(f)
        if worst is None or strict.rank > worst.rank:
            worst = strict
            gen = "both" if b is a or a.key == b.key else strict.policy.generation
    assert worst is not None
    ctx.summary["dmarc"] = worst.result
    ctx.summary["dmarc_gen"] = gen
    return out


def dmarc_check(msg: Message, ctx: CheckContext) -> list[Finding]:
    """The pipeline entry point (after the DKIM and SPF checks)."""
    return check_dmarc(msg, ctx)
